//! Hostile clients against the real binary: floods before AUTH, requests
//! over the post-AUTH caps, half-sent requests held open, binary garbage, a
//! client that never reads its replies, and more connections than
//! `max_clients`. Each must get a clear error or a close; a bystander
//! publisher keeps working throughout, and every record it was told `+OK`
//! about is in Kafka. Memory is read from /proc and compared before and
//! after with a generous margin; nothing here asserts a time.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use testkit::client::{cmd_bytes, err, ok, Client};
use testkit::daemon::{broker_list, daemon_config, rss_kib, Daemon, BOUND};
use testkit::database::TestDb;
use testkit::services::{free_port, unique, TempDir};
use testkit::topics::{create_topic, read_topic};

/// A databus binary of the test's own, with one app granted pub and sub on a
/// fresh topic.
struct Target {
    daemon: Daemon,
    topic: String,
    group: String,
    _db: TestDb,
    _dir: TempDir,
}

impl Target {
    /// `extra` holds top-level keys.
    fn start(name: &str, extra: &str) -> Target {
        let db = TestDb::new(name);
        let topic = unique(&format!("t_{name}"));
        let group = unique(&format!("g_{name}"));
        db.add_app(1, "key1", "secret1", "cluster1");
        db.add_grant(1, &group, 3, &topic);
        create_topic(&topic, 2);
        let dir = TempDir::new(name);
        let port = free_port();
        let config =
            daemon_config(port, &db.url(), &broker_list(), extra) + "[subscriber]\nwait_timeout_ms = 1000\n";
        let path = dir.write("databus.toml", &config);
        let daemon = Daemon::start(&["--conf", path.to_str().unwrap()], port);
        Target { daemon, topic, group, _db: db, _dir: dir }
    }

    fn connect(&self) -> Client {
        Client::connect(self.daemon.addr)
    }

    fn login(&self, role: &str) -> Client {
        let mut c = self.connect();
        let auth = format!("key1:secret1@{}/topic={}&role={role}", self.group, self.topic);
        assert_eq!(c.call(&["AUTH", &auth]), ok(), "AUTH as {role}");
        c
    }

    /// Publishes `n` values tagged `tag` one at a time; each must be `+OK`.
    fn publish(&self, c: &mut Client, tag: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let value = format!("{tag}-{i}");
                assert_eq!(c.call(&["SET", &format!("k{i}"), &value]), ok(), "SET {value}");
                value
            })
            .collect()
    }

    /// Every acknowledged value is in Kafka exactly once.
    fn assert_in_kafka(&self, acked: &[String]) {
        let records = read_topic(&self.topic, acked.len());
        let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
        let unique: HashSet<&[u8]> = values.iter().copied().collect();
        assert_eq!(unique.len(), values.len(), "duplicates in {}", self.topic);
        for v in acked {
            assert!(unique.contains(v.as_bytes()), "{v} was acknowledged but is not in Kafka");
        }
    }

    fn assert_running(&mut self) {
        assert!(self.daemon.try_wait().is_none(), "databus died; log:\n{}", self.daemon.log());
    }
}

/// One bulk string's header and data, as a request builder would write them.
fn bulk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends `request` (which the server reads whole before it can refuse it, so
/// the close is a FIN and the reply arrives) and expects `reply`, then a close.
fn refused(t: &Target, request: &[u8], reply: &str) {
    let mut c = t.connect();
    c.send_raw(request);
    assert_eq!(c.read(), Some(err(reply)), "reply to {} bytes", request.len());
    assert!(c.is_closed(), "still open after {reply}");
}

#[test]
fn pre_auth_requests_are_held_to_redis_unauthenticated_bounds() {
    let mut t = Target::start("hpreauth", "");
    let mut bystander = t.login("pub");
    let mut acked = t.publish(&mut bystander, "before", 5);

    refused(&t, b"*1024\r\n", "ERR Protocol error: too many arguments: 1024 over the limit of 10");
    refused(&t, b"*2\r\n$4194304\r\n", "ERR Protocol error: bulk length 4194304 over the limit of 16384");
    // Ten arguments, each well under 16 KiB, that add up to more.
    let mut ten = b"*10\r\n".to_vec();
    for _ in 0..8 {
        ten.extend(bulk(&[b'a'; 2000]));
    }
    ten.extend_from_slice(b"$2000\r\n");
    refused(&t, &ten, "ERR Protocol error: request longer than 16384 bytes");
    refused(&t, &[b'a'; 16_400], "ERR Protocol error: inline request longer than 16384 bytes");
    // Within the bounds, a request still gets NOAUTH and the connection stays.
    let mut c = t.connect();
    let mut fits = b"*10\r\n".to_vec();
    for _ in 0..10 {
        fits.extend(bulk(&[b'b'; 1500]));
    }
    c.send_raw(&fits);
    assert_eq!(c.read(), Some(err("NOAUTH Authentication required.")));
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));

    acked.extend(t.publish(&mut bystander, "after", 5));
    t.assert_running();
    t.assert_in_kafka(&acked);
}

/// The attack of the issue: unauthenticated connections sending `*1024` and
/// 4 MiB bulks as fast as they can, reconnecting when closed, plus floods
/// that stay within the bounds (many small requests whose replies are never
/// read, and 16 KiB requests). RSS must stay bounded.
#[test]
fn pre_auth_flood_keeps_memory_bounded() {
    let mut t = Target::start("hflood", "auth_timeout_ms = 2000");
    let mut bystander = t.login("pub");
    let mut acked = t.publish(&mut bystander, "before", 5);
    let pid = t.daemon.pid();
    let rss_before = rss_kib(pid);

    let addr = t.daemon.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut big = b"*1024\r\n$4194304\r\n".to_vec();
    big.resize(1 << 20, b'x');
    let mut small = Vec::new();
    for _ in 0..4096 {
        small.extend_from_slice(b"x\n");
    }
    let mut wide = b"*10\r\n".to_vec();
    for _ in 0..10 {
        wide.extend(bulk(&[b'w'; 1600]));
    }
    let payloads = [big.clone(), big.clone(), big.clone(), big, small.clone(), small, wide.clone(), wide];
    let flooders: Vec<_> = payloads
        .into_iter()
        .map(|payload| {
            let (stop, sent) = (stop.clone(), sent.clone());
            thread::spawn(move || {
                // Bounded: 4 s of flooding, at most 4 GiB per thread.
                let deadline = Instant::now() + Duration::from_secs(4);
                let mut connections = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok(mut s) = TcpStream::connect(addr) else { continue };
                    connections += 1;
                    s.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
                    while Instant::now() < deadline && sent.load(Ordering::Relaxed) < 32 << 30 {
                        match s.write(&payload) {
                            Ok(n) => {
                                sent.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Err(_) => break,
                        }
                    }
                }
                connections
            })
        })
        .collect();
    let mut rss_max = rss_before;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(5) {
        rss_max = rss_max.max(rss_kib(pid));
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let connections: usize = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    let sent_mib = sent.load(Ordering::Relaxed) >> 20;
    eprintln!(
        "flood: {connections} connections, {sent_mib} MiB accepted by the socket, RSS {rss_before} KiB before, {rss_max} KiB at most"
    );
    assert!(connections >= 8, "the flood never connected");
    // Before the bound, four such connections took RSS to 3.9 GB.
    assert!(
        rss_max < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_max} KiB under the flood"
    );

    acked.extend(t.publish(&mut bystander, "after", 5));
    t.assert_running();
    t.assert_in_kafka(&acked);
}

#[test]
fn half_sent_requests_held_open_do_not_starve_others() {
    let mut t = Target::start("hhalf", "auth_timeout_ms = 3000");
    const HELD: usize = 500;
    let held: Vec<Client> = (0..HELD)
        .map(|i| {
            let mut c = t.connect();
            // Each stops in a different place of a request.
            let request = b"*2\r\n$4\r\nAUTH\r\n$40\r\nkey1:secret1@group";
            c.send_raw(&request[..1 + i % (request.len() - 1)]);
            c
        })
        .collect();
    let mut bystander = t.login("pub");
    let acked = t.publish(&mut bystander, "during", 20);
    // Each held connection is closed at its auth timeout, with the reason.
    for (i, mut c) in held.into_iter().enumerate() {
        assert_eq!(c.read(), Some(err("ERR authentication timeout")), "held connection {i}");
        assert!(c.is_closed(), "held connection {i}");
    }
    t.assert_running();
    t.assert_in_kafka(&acked);
}

#[test]
fn requests_over_the_post_auth_caps_are_dropped_or_close_the_connection() {
    // max_request_len defaults to max_value_size + 64 KiB: 66536 here; a
    // publisher's request up to max_discard_len is read, dropped and
    // answered with an error, and the connection stays.
    let mut t = Target::start("hcaps", "max_value_size = 1000\nmax_discard_len = 200000");
    let mut bystander = t.login("pub");
    let mut acked = t.publish(&mut bystander, "before", 3);

    // Just over max_value_size is the command's own error; the connection stays.
    let mut c = t.login("pub");
    let over = "v".repeat(1001);
    assert_eq!(c.call(&["SET", "k", &over]), err("ERR value is 1001 bytes, over the limit of 1000"));
    acked.extend(t.publish(&mut c, "same-connection", 2));
    // Over max_request_len: the value is dropped as it streams in, with the
    // same error; also when each argument is within the bound and only the
    // whole is over it. Then the connection goes on.
    for key_len in [1, 40_000] {
        let mut request = b"*3\r\n".to_vec();
        request.extend(bulk(b"SET"));
        request.extend(bulk(&vec![b'k'; key_len]));
        request.extend(bulk(&[b'v'; 70_000]));
        c.send_raw(&request);
        assert_eq!(c.read(), Some(err("ERR value is 70000 bytes, over the limit of 1000")), "key {key_len}");
        acked.extend(t.publish(&mut c, &format!("after-{key_len}"), 1));
    }
    // A key (not the value) too long: the request is dropped, the connection stays.
    c.send_raw(&[&b"*3\r\n"[..], &bulk(b"SET"), &bulk(&[b'k'; 70_000]), &bulk(b"v")].concat());
    assert_eq!(c.read(), Some(err("ERR request longer than 66536 bytes; it was dropped")));
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
    // Pipelined behind and ahead of an oversized one, replies stay in order.
    let mut burst = cmd_bytes(&[b"SET", b"k1", b"in-burst-0"]);
    burst.extend(cmd_bytes(&[b"SET", b"k2", &[b'v'; 100_000]]));
    burst.extend(cmd_bytes(&[b"SET", b"k3", b"in-burst-1"]));
    c.send_raw(&burst);
    assert_eq!(c.read(), Some(ok()));
    assert_eq!(c.read(), Some(err("ERR value is 100000 bytes, over the limit of 1000")));
    assert_eq!(c.read(), Some(ok()));
    acked.extend(["in-burst-0".to_string(), "in-burst-1".to_string()]);
    // Past max_discard_len, known from the header: a protocol error and a close.
    c.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$300000\r\n");
    assert_eq!(c.read(), Some(err("ERR Protocol error: bulk length 300000 over the limit of 66536")));
    assert!(c.is_closed());
    // Past it only in all, found while dropping: one reply, the protocol
    // error, and a close.
    let mut c = t.login("pub");
    c.send_raw(&[&b"*3\r\n"[..], &bulk(b"SET"), &bulk(&[b'k'; 150_000]), b"$150000\r\n"].concat());
    assert_eq!(c.read(), Some(err("ERR Protocol error: request longer than 200000 bytes")));
    assert!(c.is_closed());

    // A subscriber sends a few hundred bytes at most.
    let mut sub = t.login("sub");
    sub.send_raw(b"*2\r\n$4\r\nMGET\r\n$600\r\n");
    assert_eq!(sub.read(), Some(err("ERR Protocol error: bulk length 600 over the limit of 512")));
    assert!(sub.is_closed());
    let mut sub = t.login("sub");
    let reply = sub.call(&["MGET", "json"]);
    assert!(matches!(reply, Frame::Array(_)), "MGET after a refused subscriber: {reply:?}");

    acked.extend(t.publish(&mut bystander, "after", 3));
    t.assert_running();
    t.assert_in_kafka(&acked);
}

/// The defaults, as redis-py meets them: a 1.1 MB value against the default
/// `max_value_size` (1,000,000) gets the size error and the connection stays
/// usable (before, it was a protocol error and a close, and redis-py retried
/// on a fresh connection). Values up to `max_discard_len` (64 MiB) are read
/// and dropped as they stream in, never buffered: sending 60 MB of them does
/// not grow databus's memory by more than a few MiB. Beyond it, a close.
#[test]
fn an_oversized_value_is_dropped_as_it_streams_in() {
    let mut t = Target::start("hstream", "");
    let mut c = t.login("pub");
    let mut acked = t.publish(&mut c, "before", 1);
    let big = "x".repeat(1_100_000);
    assert_eq!(c.call(&["SET", "k", &big]), err("ERR value is 1100000 bytes, over the limit of 1000000"));
    acked.extend(t.publish(&mut c, "after-1.1MB", 1));

    let pid = t.daemon.pid();
    let rss_before = rss_kib(pid);
    let chunk = vec![b'y'; 1 << 20];
    for round in 0..3 {
        let len = 20 << 20;
        c.send_raw(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n").as_bytes());
        for _ in 0..20 {
            c.send_raw(&chunk);
        }
        c.send_raw(b"\r\n");
        let want = format!("ERR value is {len} bytes, over the limit of 1000000");
        assert_eq!(c.read(), Some(err(&want)), "round {round}");
    }
    let grown = rss_kib(pid).saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "60 MB of dropped values grew databus by {grown} KiB");
    acked.extend(t.publish(&mut c, "after-60MB", 1));

    c.send_raw(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", 65 << 20).as_bytes());
    let reply = c.read();
    assert_eq!(
        reply,
        Some(err(&format!("ERR Protocol error: bulk length {} over the limit of 1065536", 65 << 20)))
    );
    assert!(c.is_closed());
    t.assert_running();
    t.assert_in_kafka(&acked);
}

#[test]
fn binary_garbage_gets_errors_or_a_close() {
    let mut t = Target::start("hgarbage", "auth_timeout_ms = 2000");
    let mut bystander = t.login("pub");
    let mut acked = t.publish(&mut bystander, "before", 3);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..24 {
        let mut garbage: Vec<u8> = (0..4096).map(|_| next() as u8).collect();
        if round % 3 == 0 {
            garbage[0] = b'*';
        }
        let mut c = t.connect();
        c.send_raw(&garbage);
        // Replies until the server closes (protocol error, or the auth
        // timeout): every one of them an error.
        while let Some(reply) = c.read() {
            let Frame::Error(text) = &reply else { panic!("round {round}: garbage got {reply:?}") };
            assert!(text.starts_with("ERR ") || text.starts_with("NOAUTH "), "round {round}: {text}");
        }
    }
    acked.extend(t.publish(&mut bystander, "after", 3));
    t.assert_running();
    t.assert_in_kafka(&acked);
}

#[test]
fn a_client_that_never_reads_is_dropped_after_the_write_timeout() {
    // A publisher's write timeout is its idle timeout.
    let mut t = Target::start("hnoread", "idle_timeout_ms = 2000");
    // Fresh bystanders for each phase: they too go idle after 2 s.
    let mut acked = t.publish(&mut t.login("pub"), "before", 3);

    let mut greedy = t.login("pub");
    let ping = cmd_bytes(&[b"PING", &[b'p'; 64 * 1024]]);
    greedy.stream.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut sent = 0;
    // Bounded: 64 MiB of PINGs at most; the socket stops taking them long before.
    while sent < 1024 {
        if greedy.stream.write_all(&ping).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent < 1024, "the server kept reading while its replies were not read");
    // Others are served while that connection's writer is blocked.
    acked.extend(t.publish(&mut t.login("pub"), "during", 5));

    // Once the timeout passes, the connection is gone: reading drains what
    // was sent before, then finds the close.
    let deadline = Instant::now() + BOUND;
    while !t.daemon.log().contains("replies not read within the write timeout") {
        assert!(Instant::now() < deadline, "never dropped; log:\n{}", t.daemon.log());
        thread::sleep(Duration::from_millis(100));
    }
    greedy.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut pongs = 0;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match greedy.stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => pongs += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the dropped connection: {e}"),
        }
    }
    assert!(pongs < sent * ping.len(), "every reply arrived, so nothing was dropped");

    acked.extend(t.publish(&mut t.login("pub"), "after", 3));
    t.assert_running();
    t.assert_in_kafka(&acked);
}

#[test]
fn connections_past_max_clients_are_refused_and_others_keep_working() {
    let mut t = Target::start("hmaxclients", "max_clients = 20");
    let mut bystander = t.login("pub");
    let mut acked = t.publish(&mut bystander, "before", 3);
    let mut open: Vec<Client> = (0..19).map(|_| Client::connect_accepted(t.daemon.addr, BOUND)).collect();
    for i in 0..200 {
        let mut c = t.connect();
        assert_eq!(c.read(), Some(err("TRYAGAIN max number of clients reached")), "connection {i}");
        assert!(c.is_closed(), "connection {i}");
    }
    acked.extend(t.publish(&mut bystander, "during", 5));
    // A slot freed is a slot taken.
    drop(open.pop());
    Client::connect_accepted(t.daemon.addr, BOUND);
    t.assert_running();
    t.assert_in_kafka(&acked);
}

/// Thousands of clients reconnecting after a restart arrive at once: the
/// listen backlog (4096 by default, std's `bind` gives 128) queues them all,
/// and every one gets an answer.
#[test]
fn two_thousand_clients_connecting_at_once_all_get_answers() {
    let mut t = Target::start("hcrowd", "");
    let port = t.daemon.addr.port();
    let ss = std::process::Command::new("ss").args(["-ltn"]).output().expect("running ss");
    let listing = String::from_utf8_lossy(&ss.stdout);
    let line = listing
        .lines()
        .find(|l| l.contains(&format!(":{port} ")))
        .unwrap_or_else(|| panic!("port {port} not in ss -ltn:\n{listing}"));
    // For a listening socket, ss's Send-Q column is the backlog.
    let backlog: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    let somaxconn: u32 =
        std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    assert_eq!(backlog, somaxconn.min(4096), "listen backlog");

    const THREADS: usize = 8;
    const EACH: usize = 250;
    let addr = t.daemon.addr;
    let ready = Arc::new(std::sync::Barrier::new(THREADS));
    let crowd: Vec<_> = (0..THREADS)
        .map(|_| {
            let ready = ready.clone();
            thread::spawn(move || {
                ready.wait();
                // All connect first, then all ask: they are open at once.
                let mut open: Vec<TcpStream> = (0..EACH)
                    .map(|i| {
                        TcpStream::connect_timeout(&addr, Duration::from_secs(20))
                            .unwrap_or_else(|e| panic!("connection {i}: {e}"))
                    })
                    .collect();
                let mut answered = 0;
                for s in &mut open {
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    s.write_all(b"PING\r\n").unwrap();
                    let mut reply = [0u8; 7];
                    s.read_exact(&mut reply).unwrap();
                    assert_eq!(&reply, b"+PONG\r\n");
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let answered: usize = crowd.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(answered, THREADS * EACH);
    t.assert_running();
}
