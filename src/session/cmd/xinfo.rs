//! `XINFO GROUPS <topic>`, `XINFO CONSUMERS <topic> <group>`, `XINFO STREAM
//! <topic>`: the fields clients read, a map in RESP3 and a flat array in
//! RESP2, as Redis answers. The stream's length is the topic's records
//! still kept (high minus low watermark, summed over partitions).

use std::time::Instant;

use crate::queue::EntryId;
use crate::resp::Frame;
use crate::session::cmd::bulk;
use crate::session::error::shown_name;
use crate::session::queue_reader;
use crate::session::{CommandError, Reply, Session};

use super::parse::Args;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Xinfo<'a> {
    Groups {
        key: &'a [u8],
    },
    Consumers {
        key: &'a [u8],
        group: &'a [u8],
    },
    /// Redis's `FULL` and its `COUNT` are ignored: the plain form's answer.
    Stream {
        key: &'a [u8],
    },
}

impl<'a> Xinfo<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Xinfo<'a>, CommandError> {
        let mut args = Args::new("xinfo", args);
        let sub = args.next_bytes()?;
        match sub.to_ascii_lowercase().as_slice() {
            b"groups" => {
                let key = args.next_bytes()?;
                args.finish()?;
                Ok(Xinfo::Groups { key })
            }
            b"consumers" => {
                let (key, group) = (args.next_bytes()?, args.next_bytes()?);
                args.finish()?;
                Ok(Xinfo::Consumers { key, group })
            }
            b"stream" => {
                let key = args.next_bytes()?;
                args.rest();
                Ok(Xinfo::Stream { key })
            }
            _ => Err(CommandError::UnknownSubcommand { command: "xinfo", sub: shown_name(sub) }),
        }
    }

    pub(crate) fn apply(self, session: &mut Session) -> Result<Frame, CommandError> {
        let (key, group) = match self {
            Xinfo::Groups { key } | Xinfo::Stream { key } => (key, None),
            Xinfo::Consumers { key, group } => (key, Some(group)),
        };
        let reader = queue_reader::reader(session)?;
        reader.check(key, group.unwrap_or(reader.group.as_bytes()), None)?;
        let qgroup = reader.attached.group.clone();
        let group_name = reader.group.clone();
        let client = &session.client;
        let now = Instant::now();
        let pair = |k: &str, v: Frame| (bulk(k), v);
        let nil = || queue_reader::nil(client);
        let reply = match self {
            Xinfo::Groups { .. } => {
                // Asked of the brokers before the book's lock is taken.
                let lag = qgroup.lag();
                let book = qgroup.shared.book();
                let last = book.last_delivered.unwrap_or(EntryId::MIN);
                let info = client.map(vec![
                    pair("name", bulk(&group_name)),
                    pair("consumers", Frame::Integer(book.consumers().len() as i64)),
                    pair("pending", Frame::Integer(book.pending_len() as i64)),
                    pair("last-delivered-id", bulk(last.to_string())),
                    pair("entries-read", Frame::Integer(book.entries_read as i64)),
                    pair("lag", lag.map_or_else(nil, Frame::Integer)),
                ]);
                Frame::Array(vec![info])
            }
            Xinfo::Consumers { .. } => {
                let book = qgroup.shared.book();
                let ms =
                    |since: Instant| Frame::Integer(now.saturating_duration_since(since).as_millis() as i64);
                Frame::Array(
                    book.consumers()
                        .into_iter()
                        .map(|(name, pending, seen)| {
                            client.map(vec![
                                pair("name", bulk(&*name)),
                                pair("pending", Frame::Integer(pending as i64)),
                                pair("idle", ms(seen.seen)),
                                pair("inactive", seen.active.map_or(Frame::Integer(-1), ms)),
                            ])
                        })
                        .collect(),
                )
            }
            Xinfo::Stream { .. } => {
                let marks = qgroup
                    .watermarks()
                    .map_err(|cause| CommandError::Kafka { what: "read the topic's offsets", cause })?;
                let length: i64 = marks.iter().map(|(_, lo, hi)| hi - lo).sum();
                let added: i64 = marks.iter().map(|(_, _, hi)| hi).sum();
                let last = marks
                    .iter()
                    .filter(|(_, _, hi)| *hi > 0)
                    .map(|(p, _, hi)| EntryId::of(*p, hi - 1))
                    .max()
                    .unwrap_or(EntryId::MIN);
                client.map(vec![
                    pair("length", Frame::Integer(length)),
                    pair("radix-tree-keys", Frame::Integer(0)),
                    pair("radix-tree-nodes", Frame::Integer(0)),
                    pair("last-generated-id", bulk(last.to_string())),
                    pair("max-deleted-entry-id", bulk("0-0")),
                    pair("entries-added", Frame::Integer(added)),
                    pair("recorded-first-entry-id", bulk("0-0")),
                    pair("groups", Frame::Integer(1)),
                    pair("first-entry", nil()),
                    pair("last-entry", nil()),
                ])
            }
        };
        Ok(reply)
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Xinfo::parse(args).and_then(|x| x.apply(session)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::request;

    #[test]
    fn subcommands() {
        let parse = |a: &[&str]| Xinfo::parse(request(a));
        assert_eq!(parse(&["XINFO", "GROUPS", "t"]), Ok(Xinfo::Groups { key: b"t" }));
        assert_eq!(parse(&["xinfo", "consumers", "t", "g"]), Ok(Xinfo::Consumers { key: b"t", group: b"g" }));
        assert_eq!(parse(&["XINFO", "STREAM", "t"]), Ok(Xinfo::Stream { key: b"t" }));
        assert_eq!(parse(&["XINFO", "STREAM", "t", "FULL", "COUNT", "5"]), Ok(Xinfo::Stream { key: b"t" }));
        assert_eq!(parse(&["XINFO", "GROUPS"]), Err(CommandError::WrongArgs("xinfo")));
        assert_eq!(parse(&["XINFO", "GROUPS", "t", "x"]), Err(CommandError::WrongArgs("xinfo")));
        assert_eq!(parse(&["XINFO", "CONSUMERS", "t"]), Err(CommandError::WrongArgs("xinfo")));
        assert_eq!(parse(&["XINFO", "CONSUMERS", "t", "g", "x"]), Err(CommandError::WrongArgs("xinfo")));
        assert_eq!(
            parse(&["XINFO", "HELP"]),
            Err(CommandError::UnknownSubcommand { command: "xinfo", sub: "HELP".into() })
        );
    }
}
