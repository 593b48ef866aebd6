//! `XINFO GROUPS <topic>`, `XINFO CONSUMERS <topic> <group>`, `XINFO STREAM
//! <topic>`: the fields clients read, a map in RESP3 and a flat array in
//! RESP2, as Redis answers. The stream's length is the topic's records
//! still kept (high minus low watermark, summed over partitions).

use std::time::Instant;

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
        let q = queue_reader::reader(session)?;
        q.reader.check(key, group.unwrap_or(q.reader.group.as_bytes()), None)?;
        let (attached, client) = (&q.reader.attached, q.client);
        let pair = |k: &str, v: Frame| (bulk(k), v);
        let nil = || queue_reader::nil(client);
        let reply = match self {
            Xinfo::Groups { .. } => {
                let info = attached.group_info();
                Frame::Array(vec![client.map(vec![
                    pair("name", bulk(&q.reader.group)),
                    pair("consumers", Frame::Integer(info.consumers as i64)),
                    pair("pending", Frame::Integer(info.pending as i64)),
                    pair("last-delivered-id", bulk(info.last_delivered.to_string())),
                    pair("entries-read", Frame::Integer(info.entries_read as i64)),
                    pair("lag", info.lag.map_or_else(nil, Frame::Integer)),
                ])])
            }
            Xinfo::Consumers { .. } => {
                let now = Instant::now();
                let ms =
                    |since: Instant| Frame::Integer(now.saturating_duration_since(since).as_millis() as i64);
                let consumers = attached.consumers().into_iter().map(|c| {
                    client.map(vec![
                        pair("name", bulk(&*c.name)),
                        pair("pending", Frame::Integer(c.pending as i64)),
                        pair("idle", ms(c.seen)),
                        pair("inactive", c.active.map_or(Frame::Integer(-1), ms)),
                    ])
                });
                Frame::Array(consumers.collect())
            }
            Xinfo::Stream { .. } => {
                let stream = attached
                    .stream_info()
                    .map_err(|cause| CommandError::Kafka { what: "read the topic's offsets", cause })?;
                client.map(vec![
                    pair("length", Frame::Integer(stream.length)),
                    pair("radix-tree-keys", Frame::Integer(0)),
                    pair("radix-tree-nodes", Frame::Integer(0)),
                    pair("last-generated-id", bulk(stream.last_generated.to_string())),
                    pair("max-deleted-entry-id", bulk("0-0")),
                    pair("entries-added", Frame::Integer(stream.entries_added)),
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
