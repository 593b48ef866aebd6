//! `XPENDING <topic> <group>`: the summary (count, lowest and highest ID,
//! entries per consumer); `XPENDING <topic> <group> [IDLE ms] <start> <end>
//! <count> [consumer]`: each pending entry with its consumer, idle time and
//! delivery count.

use std::time::{Duration, Instant};

use crate::queue::PendingRange;
use crate::resp::Frame;
use crate::session::cmd::bulk;
use crate::session::queue_reader;
use crate::session::{CommandError, Reply, Session};

use super::parse::{count, millis, stream_bound, Args};

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Xpending<'a> {
    key: &'a [u8],
    group: &'a [u8],
    /// `None`: the summary.
    range: Option<PendingRange>,
}

impl<'a> Xpending<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Xpending<'a>, CommandError> {
        let mut args = Args::new("xpending", args);
        let (key, group) = (args.next_bytes()?, args.next_bytes()?);
        // `IDLE` with its value, or the start of a range of one word.
        let min_idle = match args.remaining() >= 2 && args.next_is("idle") {
            true => Some(Duration::from_millis(millis(args.next_bytes()?)?)),
            false => None,
        };
        let range = match args.remaining() {
            0 if min_idle.is_none() => None,
            3 | 4 => Some(PendingRange {
                start: stream_bound(args.next_bytes()?, true)?,
                end: stream_bound(args.next_bytes()?, false)?,
                count: count(args.next_bytes()?)?,
                consumer: match args.is_empty() {
                    true => None,
                    false => Some(args.next_string()?),
                },
                min_idle,
            }),
            _ => return Err(CommandError::Syntax),
        };
        Ok(Xpending { key, group, range })
    }

    pub(crate) fn apply(self, session: &mut Session) -> Result<Frame, CommandError> {
        let q = queue_reader::reader(session)?;
        q.reader.check(self.key, self.group, None)?;
        let Some(range) = self.range else {
            let summary = q.reader.attached.pending_summary();
            let Some(bounds) = summary.bounds else {
                let nil = queue_reader::nil(q.client);
                return Ok(Frame::Array(vec![Frame::Integer(0), nil.clone(), nil.clone(), nil]));
            };
            let per = summary
                .per_consumer
                .into_iter()
                .map(|c| Frame::Array(vec![bulk(&*c.consumer), bulk(c.pending.to_string())]));
            return Ok(Frame::Array(vec![
                Frame::Integer(summary.count as i64),
                bulk(bounds.lowest.to_string()),
                bulk(bounds.highest.to_string()),
                Frame::Array(per.collect()),
            ]));
        };
        let now = Instant::now();
        let rows = q.reader.attached.pending(&range).into_iter().map(|p| {
            Frame::Array(vec![
                bulk(p.entry.id.to_string()),
                bulk(&*p.consumer),
                Frame::Integer(now.saturating_duration_since(p.delivered).as_millis() as i64),
                Frame::Integer(p.deliveries as i64),
            ])
        });
        Ok(Frame::Array(rows.collect()))
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Xpending::parse(args).and_then(|x| x.apply(session)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::EntryId;
    use crate::session::cmd::request;

    #[test]
    fn the_summary_or_a_range() {
        let parse = |a: &[&str]| Xpending::parse(request(a));
        assert_eq!(parse(&["XPENDING", "t", "g"]), Ok(Xpending { key: b"t", group: b"g", range: None }));
        let range = |a: &[&str]| parse(a).map(|x| x.range.expect("a range"));
        assert_eq!(
            range(&["XPENDING", "t", "g", "-", "+", "10"]),
            Ok(PendingRange {
                start: EntryId::MIN,
                end: EntryId::MAX,
                count: 10,
                consumer: None,
                min_idle: None
            })
        );
        assert_eq!(
            range(&["xpending", "t", "g", "idle", "50", "(0-1", "2", "3", "alice"]),
            Ok(PendingRange {
                start: EntryId::of(0, 2),
                end: EntryId { ms: 2, seq: u64::MAX },
                count: 3,
                consumer: Some("alice".into()),
                min_idle: Some(Duration::from_millis(50)),
            })
        );
        let err = |a: &[&str]| parse(a).err();
        assert_eq!(err(&["XPENDING", "t"]), Some(CommandError::WrongArgs("xpending")));
        assert_eq!(err(&["XPENDING", "t", "g", "IDLE"]), Some(CommandError::Syntax));
        assert_eq!(err(&["XPENDING", "t", "g", "IDLE", "5"]), Some(CommandError::Syntax));
        assert_eq!(err(&["XPENDING", "t", "g", "-", "+"]), Some(CommandError::Syntax));
        assert_eq!(err(&["XPENDING", "t", "g", "-", "+", "1", "c", "d"]), Some(CommandError::Syntax));
        assert_eq!(err(&["XPENDING", "t", "g", "IDLE", "x", "-", "+", "1"]), Some(CommandError::BadTimeout));
        assert_eq!(err(&["XPENDING", "t", "g", "x", "+", "1"]), Some(CommandError::BadStreamId));
        assert_eq!(err(&["XPENDING", "t", "g", "-", "+", "-1"]), Some(CommandError::NotAnInteger));
    }
}
