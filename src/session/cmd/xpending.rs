//! `XPENDING <topic> <group>`: the summary (count, lowest and highest ID,
//! entries per consumer); `XPENDING <topic> <group> [IDLE ms] <start> <end>
//! <count> [consumer]`: each pending entry with its consumer, idle time and
//! delivery count.

use std::time::{Duration, Instant};

use crate::queue::EntryId;
use crate::resp::Frame;
use crate::session::cmd::bulk;
use crate::session::queue::{self, consumer_name, parse_count, parse_ms};
use crate::session::{CommandError, Reply, Session};

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    apply(session, args).into()
}

fn apply(session: &mut Session, args: &[Vec<u8>]) -> Result<Frame, CommandError> {
    let [_, key, group, rest @ ..] = args else { return Err(CommandError::WrongArgs("xpending")) };
    let (min_idle, rest) = match rest {
        [word, ms, rest @ ..] if word.eq_ignore_ascii_case(b"idle") => {
            (Some(Duration::from_millis(parse_ms(ms)?)), rest)
        }
        _ => (None, rest),
    };
    let range = match rest {
        [] if min_idle.is_none() => None,
        [start, end, count, consumer @ ..] if consumer.len() <= 1 => {
            let bound = |raw: &[u8], start| EntryId::parse_bound(raw, start).ok_or(CommandError::BadStreamId);
            Some((bound(start, true)?, bound(end, false)?, parse_count(count)?, consumer.first()))
        }
        _ => return Err(CommandError::Syntax),
    };
    let nil = queue::nil(&session.client);
    let reader = queue::reader(session)?;
    reader.check(key, group, None)?;
    let book = reader.attached.group.shared.book();
    let Some((start, end, count, consumer)) = range else {
        let (count, bounds, per) = book.summary();
        let Some((low, high)) = bounds else {
            return Ok(Frame::Array(vec![Frame::Integer(0), nil.clone(), nil.clone(), nil]));
        };
        let per = per.into_iter().map(|(c, n)| Frame::Array(vec![bulk(&*c), bulk(n.to_string())])).collect();
        return Ok(Frame::Array(vec![
            Frame::Integer(count as i64),
            bulk(low.to_string()),
            bulk(high.to_string()),
            Frame::Array(per),
        ]));
    };
    let consumer = consumer.map(|c| consumer_name(c));
    let now = Instant::now();
    let rows = book.pending_range(start, end, count, consumer.as_deref(), min_idle);
    Ok(Frame::Array(
        rows.into_iter()
            .map(|(id, p)| {
                Frame::Array(vec![
                    bulk(id.to_string()),
                    bulk(&*p.consumer),
                    Frame::Integer(now.saturating_duration_since(p.delivered).as_millis() as i64),
                    Frame::Integer(p.deliveries as i64),
                ])
            })
            .collect(),
    ))
}
