//! `XCLAIM <topic> <group> <consumer> <min-idle-ms> <id> [id ...] [IDLE ms]
//! [TIME unix-ms] [RETRYCOUNT n] [FORCE] [JUSTID] [LASTID id]`: pending
//! entries idle that long become `consumer`'s. An entry that would pass
//! `queue.max_deliveries` goes to the dead-letter topic instead and is left
//! out, as Redis leaves out deleted entries. `FORCE` cannot make an entry
//! pending that is not (databus holds only what it handed out); `LASTID`
//! is accepted and has nothing to set.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::queue::{ClaimOptions, EntryId};
use crate::resp::Frame;
use crate::session::queue_reader::{self, entries_frame, ids_frame};
use crate::session::{CommandError, Reply, Session};

use super::parse::{count, millis, stream_id, Args};

/// How XCLAIM and XAUTOCLAIM begin: the stream, the group, the consumer
/// the entries are to go to, and how long they must have been idle.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Claimant<'a> {
    pub key: &'a [u8],
    pub group: &'a [u8],
    pub consumer: String,
    pub min_idle: Duration,
}

impl<'a> Claimant<'a> {
    pub(crate) fn parse(args: &mut Args<'a>) -> Result<Claimant<'a>, CommandError> {
        let (key, group, consumer) = (args.next_bytes()?, args.next_bytes()?, args.next_string()?);
        let min_idle = Duration::from_millis(millis(args.next_bytes()?)?);
        Ok(Claimant { key, group, consumer, min_idle })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Xclaim<'a> {
    claimant: Claimant<'a>,
    ids: Vec<EntryId>,
    /// `IDLE` or `TIME`, the last one given.
    delivered: Option<Delivered>,
    /// `RETRYCOUNT`.
    deliveries: Option<u64>,
    just_id: bool,
}

/// When the claimed entries count as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivered {
    /// `IDLE ms`: that long ago.
    IdleFor(Duration),
    /// `TIME unix-ms`.
    At(u64),
}

impl Delivered {
    fn instant(self, now: Instant) -> Instant {
        let ago = match self {
            Delivered::IdleFor(idle) => idle,
            Delivered::At(unix_ms) => {
                let unix_now =
                    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
                Duration::from_millis(unix_now.saturating_sub(unix_ms))
            }
        };
        now.checked_sub(ago).unwrap_or(now)
    }
}

impl<'a> Xclaim<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Xclaim<'a>, CommandError> {
        let mut args = Args::new("xclaim", args);
        let claimant = Claimant::parse(&mut args)?;
        // The IDs, then the options.
        let mut ids = Vec::new();
        while let Some(id) = args.peek().and_then(|raw| stream_id(raw).ok()) {
            args.next_optional();
            ids.push(id);
        }
        let mut x = Xclaim { claimant, ids, delivered: None, deliveries: None, just_id: false };
        x.options(&mut args).map_err(|e| match e {
            // Not an option: to Redis, what should have been the first ID.
            CommandError::Syntax if x.ids.is_empty() => CommandError::BadStreamId,
            e => e,
        })?;
        if x.ids.is_empty() {
            return Err(args.wrong_arity());
        }
        Ok(x)
    }

    fn options(&mut self, args: &mut Args<'a>) -> Result<(), CommandError> {
        while let Some(option) = args.next_word() {
            match option.as_slice() {
                b"idle" => {
                    let idle = Duration::from_millis(millis(args.option_value()?)?);
                    self.delivered = Some(Delivered::IdleFor(idle));
                }
                b"time" => self.delivered = Some(Delivered::At(millis(args.option_value()?)?)),
                b"retrycount" => self.deliveries = Some(count(args.option_value()?)? as u64),
                b"lastid" => _ = stream_id(args.option_value()?)?,
                b"force" => {}
                b"justid" => self.just_id = true,
                _ => return Err(CommandError::Syntax),
            }
        }
        Ok(())
    }

    pub(crate) fn apply(self, session: &mut Session) -> Result<Frame, CommandError> {
        let now = Instant::now();
        let options = ClaimOptions {
            just_id: self.just_id,
            delivered: self.delivered.map(|d| d.instant(now)),
            deliveries: self.deliveries,
        };
        let q = queue_reader::reader(session)?;
        let Claimant { key, group, consumer, min_idle } = &self.claimant;
        q.reader.check(key, group, None)?;
        let claimed = q.reader.attached.claim(consumer, *min_idle, &self.ids, options, now);
        Ok(match self.just_id {
            true => ids_frame(claimed.iter().map(|e| e.id)),
            false => entries_frame(&claimed),
        })
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Xclaim::parse(args).and_then(|x| x.apply(session)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::request;

    #[test]
    fn ids_then_options() {
        let x = Xclaim::parse(request(&["XCLAIM", "t", "g", "bob", "100", "0-1", "2"])).unwrap();
        let claimant =
            Claimant { key: b"t", group: b"g", consumer: "bob".into(), min_idle: Duration::from_millis(100) };
        assert_eq!((x.claimant, x.ids.as_slice()), (claimant, &[EntryId::of(0, 1), EntryId::of(2, 0)][..]));
        assert_eq!((x.delivered, x.deliveries, x.just_id), (None, None, false));
        let x = Xclaim::parse(request(&[
            "xclaim",
            "t",
            "g",
            "c",
            "0",
            "1-1",
            "IDLE",
            "5",
            "time",
            "99",
            "RETRYCOUNT",
            "3",
            "FORCE",
            "justid",
            "LASTID",
            "1-1",
        ]))
        .unwrap();
        assert_eq!((x.delivered, x.deliveries, x.just_id), (Some(Delivered::At(99)), Some(3), true));
        let x = Xclaim::parse(request(&["XCLAIM", "t", "g", "c", "0", "1-1", "TIME", "99", "IDLE", "5"]))
            .unwrap();
        assert_eq!(x.delivered, Some(Delivered::IdleFor(Duration::from_millis(5))), "the last one counts");
    }

    #[test]
    fn bad_shapes() {
        let err = |a: &[&str]| Xclaim::parse(request(a)).err();
        assert_eq!(err(&["XCLAIM", "t", "g", "c"]), Some(CommandError::WrongArgs("xclaim")));
        assert_eq!(err(&["XCLAIM", "t", "g", "c", "x", "0-1"]), Some(CommandError::BadTimeout));
        // Options but no ID.
        assert_eq!(err(&["XCLAIM", "t", "g", "c", "0", "JUSTID"]), Some(CommandError::WrongArgs("xclaim")));
        assert_eq!(err(&["XCLAIM", "t", "g", "c", "0", "bogus"]), Some(CommandError::BadStreamId));
        assert_eq!(err(&["XCLAIM", "t", "g", "c", "0", "IDLE"]), Some(CommandError::BadStreamId));
        // After an ID, a word that is no option.
        assert_eq!(err(&["XCLAIM", "t", "g", "c", "0", "0-1", "bogus"]), Some(CommandError::Syntax));
        assert_eq!(err(&["XCLAIM", "t", "g", "c", "0", "0-1", "IDLE"]), Some(CommandError::Syntax));
        assert_eq!(err(&["XCLAIM", "t", "g", "c", "0", "0-1", "IDLE", "x"]), Some(CommandError::BadTimeout));
        assert_eq!(
            err(&["XCLAIM", "t", "g", "c", "0", "0-1", "RETRYCOUNT", "-1"]),
            Some(CommandError::NotAnInteger)
        );
        assert_eq!(
            err(&["XCLAIM", "t", "g", "c", "0", "0-1", "LASTID", "x"]),
            Some(CommandError::BadStreamId)
        );
        // An ID after the options is no ID.
        assert_eq!(err(&["XCLAIM", "t", "g", "c", "0", "0-1", "JUSTID", "0-2"]), Some(CommandError::Syntax));
    }

    #[test]
    fn idle_and_time_set_the_delivery_time() {
        let now = Instant::now();
        let idle = Delivered::IdleFor(Duration::from_millis(10)).instant(now);
        assert_eq!(now.duration_since(idle), Duration::from_millis(10));
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let at = Delivered::At(unix_now - 5_000).instant(now);
        assert!(now.duration_since(at) >= Duration::from_millis(5_000));
        assert_eq!(Delivered::At(u64::MAX).instant(now), now, "in the future: now");
    }
}
