//! `XAUTOCLAIM <topic> <group> <consumer> <min-idle-ms> <start> [COUNT n]
//! [JUSTID]`: pending entries idle that long, from `start` on, become
//! `consumer`'s. Redis 7's reply: the ID to continue from (`0-0` when the
//! list is done), the entries (or IDs), and the IDs that went to the
//! dead-letter topic instead (past `queue.max_deliveries`).

use std::time::Duration;

use crate::queue::{AutoClaimed, ClaimOptions, EntryId};
use crate::resp::Frame;
use crate::session::cmd::bulk;
use crate::session::queue_reader::{self, entries_frame, ids_frame};
use crate::session::{CommandError, Reply, Session};

use super::parse::{count, millis, stream_bound, Args};

/// Redis's default COUNT, and its ceiling.
const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = usize::MAX / 10 - 1;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Xautoclaim<'a> {
    key: &'a [u8],
    group: &'a [u8],
    consumer: String,
    min_idle: Duration,
    start: EntryId,
    count: usize,
    just_id: bool,
}

impl<'a> Xautoclaim<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Xautoclaim<'a>, CommandError> {
        let mut args = Args::new("xautoclaim", args);
        let (key, group, consumer) = (args.next_bytes()?, args.next_bytes()?, args.next_string()?);
        let min_idle = Duration::from_millis(millis(args.next_bytes()?)?);
        let start = stream_bound(args.next_bytes()?, true)?;
        let mut x =
            Xautoclaim { key, group, consumer, min_idle, start, count: DEFAULT_COUNT, just_id: false };
        while let Some(option) = args.next_word() {
            match option.as_slice() {
                b"count" => {
                    x.count = count(args.option_value()?)?;
                    if x.count == 0 || x.count > MAX_COUNT {
                        return Err(CommandError::Unsupported("COUNT must be > 0"));
                    }
                }
                b"justid" => x.just_id = true,
                _ => return Err(CommandError::Syntax),
            }
        }
        Ok(x)
    }

    pub(crate) fn apply(self, session: &mut Session) -> Result<Frame, CommandError> {
        let options = ClaimOptions { just_id: self.just_id, ..ClaimOptions::default() };
        let q = queue_reader::reader(session)?;
        q.reader.check(self.key, self.group, None)?;
        let AutoClaimed { next, handed } =
            q.reader.attached.auto_claim(&self.consumer, self.min_idle, self.start, self.count, options);
        let claimed = match self.just_id {
            true => ids_frame(handed.entries.iter().map(|e| e.id)),
            false => entries_frame(&handed.entries),
        };
        let dead = ids_frame(handed.dead.iter().map(|e| e.id));
        Ok(Frame::Array(vec![bulk(next.to_string()), claimed, dead]))
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Xautoclaim::parse(args).and_then(|x| x.apply(session)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::request;

    #[test]
    fn from_a_start_with_options() {
        let x = Xautoclaim::parse(request(&["XAUTOCLAIM", "t", "g", "c", "50", "(0-1"])).unwrap();
        assert_eq!((x.key, x.group, x.consumer.as_str()), (&b"t"[..], &b"g"[..], "c"));
        assert_eq!((x.min_idle, x.start), (Duration::from_millis(50), EntryId::of(0, 2)));
        assert_eq!((x.count, x.just_id), (DEFAULT_COUNT, false));
        let x = Xautoclaim::parse(request(&["xautoclaim", "t", "g", "c", "0", "-", "JUSTID", "count", "7"]))
            .unwrap();
        assert_eq!((x.start, x.count, x.just_id), (EntryId::MIN, 7, true));
        let err = |a: &[&str]| Xautoclaim::parse(request(a)).err();
        assert_eq!(err(&["XAUTOCLAIM", "t", "g", "c", "0"]), Some(CommandError::WrongArgs("xautoclaim")));
        assert_eq!(err(&["XAUTOCLAIM", "t", "g", "c", "x", "0"]), Some(CommandError::BadTimeout));
        assert_eq!(err(&["XAUTOCLAIM", "t", "g", "c", "0", "x"]), Some(CommandError::BadStreamId));
        assert_eq!(err(&["XAUTOCLAIM", "t", "g", "c", "0", "0", "COUNT"]), Some(CommandError::Syntax));
        assert_eq!(
            err(&["XAUTOCLAIM", "t", "g", "c", "0", "0", "COUNT", "x"]),
            Some(CommandError::NotAnInteger)
        );
        assert_eq!(
            err(&["XAUTOCLAIM", "t", "g", "c", "0", "0", "COUNT", "0"]),
            Some(CommandError::Unsupported("COUNT must be > 0"))
        );
        assert_eq!(err(&["XAUTOCLAIM", "t", "g", "c", "0", "0", "bogus"]), Some(CommandError::Syntax));
    }
}
