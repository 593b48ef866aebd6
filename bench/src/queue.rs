//! Queue mode in the bench: draining the consume phase's records with
//! `XREADGROUP` + `XACK` (a group of its own, the same records MGET reads),
//! and the memory and threads of many idle queue consumers of one group,
//! beside the classic subscribers of the memory phase.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;

use crate::options::Opts;
use crate::phases::{ConsumeRun, Drain, RssRun};
use crate::procfs::{rss_kib, threads, Cpu};
use crate::resp::{auth_string, RespConn};
use crate::setup::Databus;
use crate::Res;

/// Entries each read asks for: an MGET's default batch.
const COUNT: &[u8] = b"100";

/// The IDs of an `XREADGROUP` reply (RESP2: `[[stream, [[id, fields]...]]]`, or nil).
fn entry_ids(reply: Frame) -> Res<Vec<Vec<u8>>> {
    let streams = match reply {
        Frame::Null => return Ok(Vec::new()),
        Frame::Array(streams) => streams,
        other => return Err(format!("XREADGROUP: {other:?}").into()),
    };
    let mut ids = Vec::new();
    for stream in streams {
        let Frame::Array(mut pair) = stream else { return Err("XREADGROUP: stream not an array".into()) };
        let Some(Frame::Array(entries)) = pair.pop() else { return Err("XREADGROUP: no entries".into()) };
        for e in entries {
            match e {
                Frame::Array(mut parts) if parts.len() == 2 => {
                    let (Some(Frame::Array(fields)), Some(Frame::Bulk(id))) = (parts.pop(), parts.pop())
                    else {
                        return Err("XREADGROUP: malformed entry".into());
                    };
                    if fields.is_empty() {
                        return Err("XREADGROUP: an entry without fields".into());
                    }
                    ids.push(id);
                }
                other => return Err(format!("XREADGROUP entry: {other:?}").into()),
            }
        }
    }
    Ok(ids)
}

/// `XREADGROUP` and an `XACK` of what it returned, until `messages`
/// entries came; timed from the first non-empty reply, as MGET is.
pub(crate) fn consume_queue(
    addr: SocketAddr,
    auth: &str,
    group: &str,
    topic: &str,
    messages: usize,
    cpu: &Cpu,
) -> Res<ConsumeRun> {
    let mut conn = RespConn::auth(addr, auth)?;
    let read: [&[u8]; 11] = [
        b"XREADGROUP",
        b"GROUP",
        group.as_bytes(),
        b"bench",
        b"COUNT",
        COUNT,
        b"BLOCK",
        b"1000",
        b"STREAMS",
        topic.as_bytes(),
        b">",
    ];
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut drain = Drain::default();
    while drain.received < messages {
        if Instant::now() > deadline {
            return Err(format!("XREADGROUP: {} of {messages} in 300 s", drain.received).into());
        }
        let t = Instant::now();
        let ids = entry_ids(conn.call(&read)?)?;
        if ids.is_empty() {
            continue;
        }
        let mut ack: Vec<&[u8]> = vec![b"XACK", topic.as_bytes(), group.as_bytes()];
        ack.extend(ids.iter().map(Vec::as_slice));
        match conn.call(&ack)? {
            Frame::Integer(n) if n as usize == ids.len() => {}
            other => return Err(format!("XACK of {} entries: {other:?}", ids.len()).into()),
        }
        // A read and its XACK are one call.
        drain.call(t, ids.len(), cpu);
    }
    let run = drain.finish(cpu);
    drop(conn);
    run
}

/// `count` queue consumers of one group on a fresh databus, each
/// authenticated and past its first `XREADGROUP` (the first one's read
/// waits until the group's member has its partitions and an entry).
pub(crate) fn rss_queue(opts: &Opts, group: &str, topic: &str, count: usize) -> Res<RssRun> {
    let databus = Databus::start(opts, "databus-rss-queue")?;
    let pid = databus.pid();
    thread::sleep(SETTLE);
    let (before_kib, threads_before) = (rss_kib(pid), threads(pid));
    let auth = auth_string(group, topic, "sub", "&offset=old");
    let read = |name: &[u8]| -> Vec<Vec<u8>> {
        [
            &b"XREADGROUP"[..],
            b"GROUP",
            group.as_bytes(),
            name,
            b"COUNT",
            b"1",
            b"STREAMS",
            topic.as_bytes(),
            b">",
        ]
        .iter()
        .map(|a| a.to_vec())
        .collect()
    };
    let mut conns = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..count {
        let mut c = RespConn::auth(databus.addr, &auth)?;
        let name = format!("c{i}");
        let args = read(name.as_bytes());
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        loop {
            let got = entry_ids(c.call(&args)?)?;
            if i > 0 || !got.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err("the first queue consumer got no entry in 120 s".into());
            }
            thread::sleep(Duration::from_millis(100));
        }
        conns.push(c);
    }
    thread::sleep(SETTLE);
    let (after_kib, threads_after) = (rss_kib(pid), threads(pid));
    drop(conns);
    Ok(RssRun {
        connections: count,
        before_kib,
        after_kib,
        threads_before,
        threads_after,
        after_set_kib: None,
    })
}

const SETTLE: Duration = Duration::from_millis(1500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_a_reply() {
        let bulk = |s: &str| Frame::Bulk(s.as_bytes().to_vec());
        let entry = |id: &str| Frame::Array(vec![bulk(id), Frame::Array(vec![bulk("value"), bulk("v")])]);
        let reply =
            Frame::Array(vec![Frame::Array(vec![bulk("t"), Frame::Array(vec![entry("0-1"), entry("2-5")])])]);
        assert_eq!(entry_ids(reply).unwrap(), vec![b"0-1".to_vec(), b"2-5".to_vec()]);
        assert!(entry_ids(Frame::Null).unwrap().is_empty());
        assert!(entry_ids(Frame::Error("ERR x".into())).is_err());
    }
}
