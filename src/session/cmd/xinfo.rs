//! `XINFO GROUPS <topic>`, `XINFO CONSUMERS <topic> <group>`, `XINFO STREAM
//! <topic>`: the fields clients read, a map in RESP3 and a flat array in
//! RESP2, as Redis answers. The stream's length is the topic's records
//! still kept (high minus low watermark, summed over partitions).

use std::time::Instant;

use crate::queue::EntryId;
use crate::resp::Frame;
use crate::session::cmd::bulk;
use crate::session::queue;
use crate::session::{CommandError, Reply, Session};

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    apply(session, args).into()
}

fn apply(session: &mut Session, args: &[Vec<u8>]) -> Result<Frame, CommandError> {
    let Some(sub) = args.get(1) else { return Err(CommandError::WrongArgs("xinfo")) };
    let sub = sub.to_ascii_lowercase();
    let (key, group) = match (sub.as_slice(), &args[2..]) {
        (b"groups" | b"stream", [key, ..]) => (key, None),
        (b"consumers", [key, group]) => (key, Some(group)),
        (b"groups" | b"stream" | b"consumers", _) => return Err(CommandError::WrongArgs("xinfo")),
        _ => {
            return Err(CommandError::UnknownSubcommand {
                command: "xinfo",
                sub: crate::session::error::shown_name(&args[1]),
            })
        }
    };
    let reader = queue::reader(session)?;
    reader.check(key, group.map_or(reader.group.as_bytes(), |g| g.as_slice()), None)?;
    let qgroup = reader.attached.group.clone();
    let group_name = reader.group.clone();
    let client = &session.client;
    let now = Instant::now();
    let pair = |k: &str, v: Frame| (bulk(k), v);
    let nil = || queue::nil(client);
    let reply = match sub.as_slice() {
        b"groups" => {
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
        b"consumers" => {
            let book = qgroup.shared.book();
            let ms = |since: Instant| Frame::Integer(now.saturating_duration_since(since).as_millis() as i64);
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
        _ => {
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
