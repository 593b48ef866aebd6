//! `XAUTOCLAIM <topic> <group> <consumer> <min-idle-ms> <start> [COUNT n]
//! [JUSTID]`: pending entries idle that long, from `start` on, become
//! `consumer`'s. Redis 7's reply: the ID to continue from (`0-0` when the
//! list is done), the entries (or IDs), and the IDs that went to the
//! dead-letter topic instead (past `queue.max_deliveries`).

use std::time::{Duration, Instant};

use crate::queue::ClaimOptions;
use crate::resp::Frame;
use crate::session::cmd::bulk;
use crate::session::queue::{self, consumer_name, entries_frame, ids_frame, parse_count, parse_ms};
use crate::session::{CommandError, Reply, Session};

/// Redis's default COUNT, and its ceiling.
const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = usize::MAX / 10 - 1;

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    apply(session, args).into()
}

fn apply(session: &mut Session, args: &[Vec<u8>]) -> Result<Frame, CommandError> {
    let [_, key, group, consumer, min_idle, start, rest @ ..] = args else {
        return Err(CommandError::WrongArgs("xautoclaim"));
    };
    let min_idle = Duration::from_millis(parse_ms(min_idle)?);
    let start = crate::queue::EntryId::parse_bound(start, true).ok_or(CommandError::BadStreamId)?;
    let (mut count, mut options) = (DEFAULT_COUNT, ClaimOptions::default());
    let mut at = 0;
    while let Some(arg) = rest.get(at) {
        match (arg.to_ascii_lowercase().as_slice(), rest.get(at + 1)) {
            (b"count", Some(n)) => {
                count = parse_count(n)?;
                if count == 0 || count > MAX_COUNT {
                    return Err(CommandError::Unsupported("COUNT must be > 0"));
                }
                at += 2;
            }
            (b"justid", _) => {
                options.just_id = true;
                at += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    let consumer = consumer_name(consumer);
    let reader = queue::reader(session)?;
    reader.check(key, group, None)?;
    let group = reader.attached.group.clone();
    let (next, handed) =
        group.shared.book().auto_claim(&consumer, min_idle, start, count, options, Instant::now());
    let claimed = match options.just_id {
        true => ids_frame(handed.entries.iter().map(|e| e.id)),
        false => entries_frame(&handed.entries),
    };
    let dead = ids_frame(handed.dead.iter().map(|e| e.id));
    if !handed.dead.is_empty() {
        group.dead_letter(handed.dead);
    }
    Ok(Frame::Array(vec![bulk(next.to_string()), claimed, dead]))
}
