//! `XREADGROUP GROUP <group> <consumer> [COUNT n] [BLOCK ms] [NOACK]
//! STREAMS <topic> <id>`: with `>`, new entries (or entries past the
//! visibility timeout) for `consumer`, now pending for it; with an ID, its
//! own pending entries after that ID. The first one makes a subscriber
//! connection a queue consumer.

use std::time::Duration;

use crate::auth::MAX_WAIT_MS;
use crate::queue::EntryId;
use crate::resp::Frame;
use crate::session::queue_reader::{self, streams_frame};
use crate::session::{CommandError, Reply, Session};

use super::parse::{self, millis, stream_id, Args};

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Xreadgroup<'a> {
    group: &'a [u8],
    consumer: String,
    count: Option<usize>,
    block: Option<Duration>,
    no_ack: bool,
    stream: &'a [u8],
    /// `None`: `>`.
    after: Option<EntryId>,
}

impl<'a> Xreadgroup<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Xreadgroup<'a>, CommandError> {
        let mut args = Args::new("xreadgroup", args);
        let (word, group, consumer) = (args.next_bytes()?, args.next_bytes()?, args.next_string()?);
        if !word.eq_ignore_ascii_case(b"group") {
            return Err(CommandError::Syntax);
        }
        let (mut count, mut block, mut no_ack) = (None, None, false);
        let streams = loop {
            let Some(option) = args.next_word() else { return Err(CommandError::Syntax) };
            match option.as_slice() {
                b"count" => count = Some(parse::count(args.option_value()?)?).filter(|&n| n > 0),
                b"block" => {
                    let ms = millis(args.option_value()?)?;
                    // BLOCK 0 waits "forever": as long as any wait may.
                    block =
                        Some(Duration::from_millis(if ms == 0 { MAX_WAIT_MS } else { ms.min(MAX_WAIT_MS) }));
                }
                b"noack" => no_ack = true,
                b"streams" => break args.rest(),
                _ => return Err(CommandError::Syntax),
            }
        };
        if streams.is_empty() || streams.len() % 2 != 0 {
            return Err(CommandError::Unsupported(
                "Unbalanced 'xreadgroup' list of streams: for each stream key an ID or '>' must be specified.",
            ));
        }
        if streams.len() > 2 {
            // Only the granted topic can be read; the first other key is named.
            return Err(CommandError::NoGroup {
                key: crate::session::error::shown_name(&streams[1]),
                group: crate::session::error::shown_name(group),
                command: Some("XREADGROUP"),
            });
        }
        let after = match streams[1].as_slice() {
            b">" => None,
            id => Some(stream_id(id)?),
        };
        Ok(Xreadgroup { group, consumer, count, block, no_ack, stream: &streams[0], after })
    }

    pub(crate) fn apply(self, session: &mut Session) -> Result<Frame, CommandError> {
        let q = queue_reader::reader(session)?;
        q.reader.check(self.stream, self.group, Some("XREADGROUP"))?;
        let count = self.count.unwrap_or(DEFAULT_COUNT);
        let entries = match self.after {
            None => q.reader.attached.read_new(&self.consumer, count, self.no_ack, q.wait(self.block)),
            Some(after) => q.reader.attached.read_pending(&self.consumer, after, count),
        };
        Ok(streams_frame(q.client, &q.reader.topic, &entries, self.after.is_none()))
    }
}

/// Entries one read hands out when it names no COUNT (Redis: all there
/// are; here, bounded as an MGET batch is).
const DEFAULT_COUNT: usize = 100;

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Xreadgroup::parse(args).and_then(|x| x.apply(session)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn arguments() {
        let a = args(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "5",
            "BLOCK",
            "0",
            "NOACK",
            "STREAMS",
            "t",
            ">",
        ]);
        let x = Xreadgroup::parse(&a).unwrap();
        assert_eq!((x.group, x.consumer.as_str(), x.count), (&b"g"[..], "c", Some(5)));
        assert_eq!(
            (x.block, x.no_ack, x.stream, x.after),
            (Some(Duration::from_millis(MAX_WAIT_MS)), true, &b"t"[..], None)
        );
        let a = args(&["xreadgroup", "group", "g", "c", "streams", "t", "0"]);
        assert_eq!(Xreadgroup::parse(&a).unwrap().after, Some(EntryId::MIN));
        let err = |parts: &[&str]| Xreadgroup::parse(&args(parts)).err();
        assert_eq!(
            err(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "t", "x-y"]),
            Some(CommandError::BadStreamId)
        );
        assert_eq!(err(&["XREADGROUP", "GROUP", "g", "c", "t", ">"]), Some(CommandError::Syntax));
        assert_eq!(
            err(&["XREADGROUP", "GROUP", "g", "c", "BLOCK", "x", "STREAMS", "t", ">"]),
            Some(CommandError::BadTimeout)
        );
        assert!(matches!(
            err(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "t"]),
            Some(CommandError::Unsupported(_))
        ));
        assert!(matches!(
            err(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "t", "u", ">", ">"]),
            Some(CommandError::NoGroup { .. })
        ));
        assert_eq!(err(&["XREADGROUP", "GROUP", "g"]), Some(CommandError::WrongArgs("xreadgroup")));
        assert_eq!(err(&["XREADGROUP", "GRUPPE", "g", "c", "STREAMS", "t", ">"]), Some(CommandError::Syntax));
        assert_eq!(err(&["XREADGROUP", "GROUP", "g", "c", "COUNT"]), Some(CommandError::Syntax));
        assert_eq!(
            err(&["XREADGROUP", "GROUP", "g", "c", "COUNT", "x", "STREAMS", "t", ">"]),
            Some(CommandError::NotAnInteger)
        );
        assert_eq!(
            err(&["XREADGROUP", "GROUP", "g", "c", "bogus", "STREAMS", "t", ">"]),
            Some(CommandError::Syntax)
        );
        let a =
            args(&["XREADGROUP", "GROUP", "g", "c", "count", "0", "block", "700000", "streams", "t", "1-2"]);
        let x = Xreadgroup::parse(&a).unwrap();
        assert_eq!((x.count, x.block, x.no_ack), (None, Some(Duration::from_millis(MAX_WAIT_MS)), false));
        assert_eq!(x.after, Some(EntryId::of(1, 2)));
    }
}
