//! A raw RESP client for exact replies, pipelining and malformed input,
//! and the checks of what a consumer got.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use databus::resp::{parse_reply, Frame, Limits};
use rdkafka::Offset;
use serde_json::Value;

/// A raw RESP client, for exact replies, pipelining and malformed input.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A request as RESP, encoded by databus's own `Frame`.
pub fn cmd_bytes(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Array(args.iter().map(|a| Frame::Bulk(a.to_vec())).collect()).encode(&mut out);
    out
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|| panic!("nothing listens on {addr}"))
    }

    /// A connection, or `None` when nothing listens (a server restarting).
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Some(Client { stream, buf: Vec::new() })
    }

    /// A connection the server kept, for tests that fill `max_clients`: a
    /// place stays taken until databus has seen its last holder close
    /// (`Daemon::start`'s probe, a client just dropped), so a refused client
    /// tries again, 50 ms apart, for at most `within`.
    pub fn connect_accepted(addr: SocketAddr, within: Duration) -> Client {
        let deadline = Instant::now() + within;
        loop {
            let mut c = Client::connect(addr);
            // A refused client may find the connection gone before it writes.
            let _ = c.stream.write_all(&cmd_bytes(&[b"PING"]));
            let reply = c.read();
            if reply == Some(Frame::Simple("PONG".into())) {
                return c;
            }
            assert!(Instant::now() < deadline, "{addr} refused a client for {within:?}: {reply:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&cmd_bytes(args));
    }

    /// The next reply, or `None` when the server closed the connection.
    pub fn read(&mut self) -> Option<Frame> {
        let limits = Limits {
            max_bulk_len: 64 << 20,
            max_array_len: 1 << 20,
            max_inline_len: 1 << 20,
            max_request_len: usize::MAX,
            max_discard_len: 0,
        };
        loop {
            if let Some((frame, used)) = parse_reply(&self.buf, &limits).unwrap() {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading reply: {e}"),
            }
        }
    }

    pub fn call(&mut self, args: &[&str]) -> Frame {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&args);
        self.read().expect("server closed the connection")
    }

    /// Whether the server has closed the connection (after any pending replies).
    pub fn is_closed(&mut self) -> bool {
        self.read().is_none()
    }
}

pub fn ok() -> Frame {
    Frame::Simple("OK".into())
}

pub fn err(text: &str) -> Frame {
    Frame::Error(text.into())
}

/// What the group must have committed after processing `messages` (JSON
/// MGET elements): per partition, the last offset + 1.
pub fn expected_commits(messages: &[Value], partitions: i32) -> BTreeMap<i32, Offset> {
    let mut out: BTreeMap<i32, Offset> = (0..partitions).map(|p| (p, Offset::Invalid)).collect();
    for m in messages {
        let p = m["partition"].as_i64().unwrap() as i32;
        let next = m["offset"].as_i64().unwrap() + 1;
        let slot = out.get_mut(&p).unwrap();
        if !matches!(*slot, Offset::Offset(o) if o >= next) {
            *slot = Offset::Offset(next);
        }
    }
    out
}

/// Asserts that `messages` hold no (partition, offset) twice and come in
/// offset order per partition.
pub fn assert_once_and_in_order(messages: &[Value]) {
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for m in messages {
        let (p, o) = (m["partition"].as_i64().unwrap(), m["offset"].as_i64().unwrap());
        if let Some(prev) = last.insert(p, o) {
            assert!(prev < o, "partition {p}: offset {o} after {prev} (duplicate or out of order)");
        }
    }
}

/// What every redis-py session shares, prepended to its script: `consume`
/// pulls with `mget()` and commits each partition's last offset with
/// `commit(partition, offset)` until `n` messages came; it returns them.
pub const PY_CONSUME: &str = r#"
import json, sys, time

def consume(n, mget, commit):
    got, deadline = [], time.time() + 60
    while len(got) < n:
        if time.time() > deadline:
            sys.exit(f"only {len(got)} of {n} messages after 60 s")
        last = {}
        for raw in mget():
            m = json.loads(raw)
            got.append(m)
            last[m["partition"]] = max(last.get(m["partition"], -1), m["offset"])
        for partition, offset in sorted(last.items()):
            assert commit(partition, offset) is True
    return got
"#;

/// The records of one MGET reply in JSON: panics on anything but an array
/// of bulk strings, each one JSON record.
pub fn mget_records(reply: Frame) -> Vec<Value> {
    match reply {
        Frame::Array(items) => items
            .into_iter()
            .map(|f| match f {
                Frame::Bulk(b) => serde_json::from_slice(&b).unwrap(),
                other => panic!("MGET element {other:?}"),
            })
            .collect(),
        other => panic!("MGET reply {other:?}"),
    }
}

/// The `redis` crate's side of the same loop: MGET until `n` messages came,
/// committing each partition's last offset of every batch.
pub fn consume_with_redis_crate(con: &mut redis::Connection, n: usize, partitions: i32) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} messages after 60 s", got.len());
        let batch: Vec<Vec<u8>> = redis::cmd("MGET").query(con).unwrap();
        let batch: Vec<Value> = batch.iter().map(|m| serde_json::from_slice(m).unwrap()).collect();
        for p in 0..partitions {
            let last =
                batch.iter().filter(|m| m["partition"] == p).map(|m| m["offset"].as_i64().unwrap()).max();
            if let Some(o) = last {
                let () = redis::cmd("SET").arg(p).arg(o).query(con).unwrap();
            }
        }
        got.extend(batch);
    }
    got
}
