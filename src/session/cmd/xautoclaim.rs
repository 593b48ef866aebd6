//! `XAUTOCLAIM <topic> <group> <consumer> <min-idle-ms> <start> [COUNT n]
//! [JUSTID]`: pending entries idle that long, from `start` on, become
//! `consumer`'s. Redis 7's reply: the ID to continue from (`0-0` when the
//! list is done), the entries (or IDs), and the IDs that went to the
//! dead-letter topic instead (past `queue.max_deliveries`).

use crate::queue::{AutoClaimed, ClaimOptions, EntryId};
use crate::resp::Frame;
use crate::session::cmd::bulk;
use crate::session::queue_reader::{self, entries_frame, ids_frame};
use crate::session::{CommandError, Reply, Session};

use super::parse::{count, stream_bound, Args};
use super::xclaim::Claimant;

/// Redis's default COUNT, and its ceiling.
const DEFAULT_COUNT: usize = 100;
const MAX_COUNT: usize = usize::MAX / 10 - 1;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Xautoclaim<'a> {
    claimant: Claimant<'a>,
    start: EntryId,
    count: usize,
    just_id: bool,
}

impl<'a> Xautoclaim<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Xautoclaim<'a>, CommandError> {
        let mut args = Args::new("xautoclaim", args);
        let claimant = Claimant::parse(&mut args)?;
        let start = stream_bound(args.next_bytes()?, true)?;
        let mut x = Xautoclaim { claimant, start, count: DEFAULT_COUNT, just_id: false };
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
        let Claimant { key, group, consumer, min_idle } = &self.claimant;
        q.reader.check(key, group, None)?;
        let AutoClaimed { next, handed } =
            q.reader.attached.auto_claim(consumer, *min_idle, self.start, self.count, options);
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
    use std::time::Duration;

    #[test]
    fn from_a_start_with_options() {
        let x = Xautoclaim::parse(request(&["XAUTOCLAIM", "t", "g", "c", "50", "(0-1"])).unwrap();
        let claimant =
            Claimant { key: b"t", group: b"g", consumer: "c".into(), min_idle: Duration::from_millis(50) };
        assert_eq!((x.claimant, x.start), (claimant, EntryId::of(0, 2)));
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
