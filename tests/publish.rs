//! The publish path end to end: SET/HSET through databus, read back with an
//! independent consumer.

use std::collections::{HashMap, HashSet};

use databus::proto::Header;
use databus::resp::Frame;
use prost::Message;
use testkit::client::{cmd_bytes, err, ok, Client};
use testkit::kafka::OwnBroker;
use testkit::server::{Fixture, OnOwnBroker};
use testkit::topics::{read_topic, read_topic_on, Record};

fn publisher(f: &Fixture, color: &str) -> Client {
    let extra = if color.is_empty() { String::new() } else { format!("&color={color}") };
    f.login("pub", &extra)
}

fn header<'a>(r: &'a Record, name: &str) -> Option<&'a [u8]> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
}

#[test]
fn set_and_hset_reach_kafka_exactly() {
    let f = Fixture::new("setget", 3, "");
    let mut plain = publisher(&f, "");
    let mut red = publisher(&f, "red");
    let binary: Vec<u8> = (0..=255u8).collect();
    plain.send(&[b"SET", b"k-plain", &binary]);
    assert_eq!(plain.read(), Some(ok()));
    assert_eq!(red.call(&["set", "k-red", "\"xx\""]), ok());
    assert_eq!(red.call(&["HSET", "k-json", r#"{"trace":"t1","tenant":"a"}"#, "v-json"]), ok());
    let pb = Header { metadata: HashMap::from([("trace".into(), "t2".into())]) }.encode_to_vec();
    red.send(&[b"hset", b"k-pb", &pb, b"v-pb"]);
    assert_eq!(red.read(), Some(ok()));

    let records = read_topic(&f.topic, 4);
    assert_eq!(records.len(), 4, "{records:?}");
    let by_key: HashMap<&[u8], &Record> = records.iter().map(|r| (r.key.as_slice(), r)).collect();

    let r = by_key[&b"k-plain"[..]];
    assert_eq!(r.value, binary);
    assert_eq!(r.headers, vec![("color".to_string(), Vec::new())]);

    let r = by_key[&b"k-red"[..]];
    assert_eq!(r.value, b"\"xx\"");
    assert_eq!(r.headers, vec![("color".to_string(), b"red".to_vec())]);

    let r = by_key[&b"k-json"[..]];
    assert_eq!(r.value, b"v-json");
    assert_eq!(header(r, "color"), Some(&b"red"[..]));
    assert_eq!(header(r, "metadata"), Some(&br#"{"trace":"t1","tenant":"a"}"#[..]));

    let r = by_key[&b"k-pb"[..]];
    assert_eq!(r.value, b"v-pb");
    assert_eq!(header(r, "metadata"), Some(pb.as_slice()));
}

#[test]
fn same_key_same_partition_in_order() {
    let f = Fixture::new("order", 4, "");
    let mut c = publisher(&f, "");
    for i in 0..200 {
        let key = format!("key-{}", i % 20);
        assert_eq!(c.call(&["SET", &key, &format!("{i}")]), ok());
    }
    let records = read_topic(&f.topic, 200);
    assert_eq!(records.len(), 200);
    let mut partition_of: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut seen: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
    // Records come sorted by (partition, offset): per key, that is production order.
    for r in &records {
        let p = *partition_of.entry(r.key.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "key {:?} in two partitions", String::from_utf8_lossy(&r.key));
        seen.entry(r.key.clone())
            .or_default()
            .push(String::from_utf8(r.value.clone()).unwrap().parse().unwrap());
    }
    assert_eq!(seen.len(), 20);
    for (key, values) in seen {
        let k: u32 = String::from_utf8(key).unwrap().trim_start_matches("key-").parse().unwrap();
        let want: Vec<u32> = (0..10).map(|n| k + 20 * n).collect();
        assert_eq!(values, want);
    }
    // 20 keys over 4 partitions with murmur2: more than one partition used.
    assert!(partition_of.values().collect::<HashSet<_>>().len() > 1);
}

#[test]
fn pipelined_sets_answered_in_order_without_duplicates() {
    let f = Fixture::new("pipeline", 3, "");
    let mut c = publisher(&f, "");
    let mut burst = Vec::new();
    for i in 0..1000 {
        burst.extend(cmd_bytes(&[b"SET", format!("k{}", i % 7).as_bytes(), format!("v{i}").as_bytes()]));
    }
    burst.extend(cmd_bytes(&[b"PING", b"end"]));
    c.send_raw(&burst);
    for i in 0..1000 {
        assert_eq!(c.read(), Some(ok()), "reply {i}");
    }
    assert_eq!(c.read(), Some(Frame::Bulk(b"end".to_vec())));
    let records = read_topic(&f.topic, 1000);
    assert_eq!(records.len(), 1000);
    let values: HashSet<Vec<u8>> = records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(values.len(), 1000, "duplicate records");
    for i in 0..1000 {
        assert!(values.contains(format!("v{i}").as_bytes()));
    }
}

/// A client that waits for its replies has each SET's reply written by
/// databus's delivery thread. When it sends a SET and then, before the
/// reply, a PING, the PING must still be answered after the SET. The broker
/// is frozen (SIGSTOP) from before the SET until after the PING, so the
/// SET's reply is surely still out when the PING comes; a connection that
/// has pipelined keeps the usual path, so each of 5 connections does it
/// once. Every reply comes once and in order, and the records are in Kafka
/// in the order sent.
#[test]
fn a_request_sent_ahead_of_a_handed_over_reply_is_answered_after_it() {
    let broker = OwnBroker::start();
    let f = OnOwnBroker::start("handoff", &broker.addr(), 1, 2, "");
    let pause = std::time::Duration::from_millis(30);
    let mut sent = Vec::new();
    for conn in 0..5 {
        let mut c = f.server.connect();
        assert_eq!(c.call(&["AUTH", &f.auth("pub")]), ok());
        let first = format!("c{conn}-first");
        assert_eq!(c.call(&["SET", "k", &first]), ok());
        broker.signal("STOP");
        let second = format!("c{conn}-second");
        c.send(&[b"SET", b"k", second.as_bytes()]);
        std::thread::sleep(pause);
        c.send(&[b"PING", format!("p{conn}").as_bytes()]);
        std::thread::sleep(pause);
        broker.signal("CONT");
        assert_eq!(c.read(), Some(ok()), "connection {conn}: the SET's reply first");
        assert_eq!(
            c.read(),
            Some(Frame::Bulk(format!("p{conn}").into_bytes())),
            "connection {conn}: then PING's"
        );
        sent.extend([first.into_bytes(), second.into_bytes()]);
    }
    let values: Vec<Vec<u8>> =
        read_topic_on(&broker.addr(), &f.topic, sent.len()).into_iter().map(|r| r.value).collect();
    assert_eq!(values, sent, "the records in the order sent, each once");
}

/// A client that sends a SET and closes at once: the record is still
/// produced (the reply has nowhere to go), and databus goes on serving.
#[test]
fn a_set_whose_client_leaves_at_once_is_still_produced() {
    let f = Fixture::new("leaver", 1, "");
    for i in 0..20 {
        let mut c = publisher(&f, "");
        c.send(&[b"SET", b"k", format!("v{i}").as_bytes()]);
        drop(c);
    }
    let mut last = publisher(&f, "");
    assert_eq!(last.call(&["SET", "k", "v20"]), ok());
    let values: HashSet<Vec<u8>> = read_topic(&f.topic, 21).into_iter().map(|r| r.value).collect();
    assert_eq!(values.len(), 21);
}

#[test]
fn oversized_value_is_refused_and_connection_survives() {
    let f = Fixture::new("bigvalue", 1, "max_value_size = 1000");
    let mut c = publisher(&f, "");
    let big = vec![b'x'; 1001];
    c.send(&[b"SET", b"k", &big]);
    assert_eq!(c.read(), Some(err("ERR value is 1001 bytes, over the limit of 1000")));
    let exact = vec![b'y'; 1000];
    c.send(&[b"SET", b"k", &exact]);
    assert_eq!(c.read(), Some(ok()));
    let records = read_topic(&f.topic, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, exact);
}

#[test]
fn unknown_and_misused_commands_keep_the_connection() {
    let f = Fixture::new("unknown", 1, "");
    let mut c = publisher(&f, "");
    assert_eq!(c.call(&["FLUSHALL"]), err("ERR unknown command 'FLUSHALL'"));
    assert_eq!(c.call(&["MGET"]), err("ERR command 'MGET' not allowed for role pub"));
    assert_eq!(c.call(&["SET", "only-key"]), err("ERR wrong number of arguments for 'set' command"));
    assert_eq!(
        c.call(&["HSET", "k", "not-metadata", "v"]),
        err("ERR metadata must be a JSON object of string values or a protobuf infra.databus.Header")
    );
    assert_eq!(c.call(&["SET", "k", "v"]), ok());
    assert_eq!(read_topic(&f.topic, 1).len(), 1);
}

#[test]
fn malformed_resp_closes_only_that_connection() {
    let f = Fixture::new("malformed", 1, "");
    let mut other = publisher(&f, "");
    let mut bad = publisher(&f, "");
    bad.send_raw(b"*2\r\n$3\r\nSET\r\n:12\r\n");
    assert_eq!(bad.read(), Some(err("ERR Protocol error: expected '$', got ':'")));
    assert!(bad.is_closed());
    let mut huge = f.server.connect();
    huge.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$99999999999\r\n");
    let Some(Frame::Error(text)) = huge.read() else { panic!("no error reply") };
    assert!(text.starts_with("ERR Protocol error: "), "{text}");
    assert!(huge.is_closed());
    assert_eq!(other.call(&["SET", "k", "v"]), ok());
    assert_eq!(f.server.connect().call(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn inline_commands_work() {
    let f = Fixture::new("inline", 1, "");
    let mut c = f.server.connect();
    c.send_raw(format!("AUTH {}\r\n", f.auth_string("pub", "")).as_bytes());
    assert_eq!(c.read(), Some(ok()));
    c.send_raw(b"set x \"xx yy\"\r\nPING\r\n");
    assert_eq!(c.read(), Some(ok()));
    assert_eq!(c.read(), Some(Frame::Simple("PONG".into())));
    let records = read_topic(&f.topic, 1);
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].key.as_slice(), records[0].value.as_slice()), (&b"x"[..], &b"xx yy"[..]));
}

#[test]
fn max_clients_refuses_the_extra_connection() {
    let f = Fixture::new("maxclients", 1, "max_clients = 2");
    let mut first = publisher(&f, "");
    let _second = f.server.connect();
    let mut third = f.server.connect();
    assert_eq!(third.read(), Some(err("TRYAGAIN max number of clients reached")));
    assert!(third.is_closed());
    assert_eq!(first.call(&["SET", "k", "v"]), ok());
    assert_eq!(read_topic(&f.topic, 1).len(), 1);
}

#[test]
fn broker_down_gives_errors_and_recovery_follows() {
    let mut broker = OwnBroker::start();
    let f = OnOwnBroker::start("brokerdown", &broker.addr(), 1, 2, "[producer]\ntimeout_ms = 3000\n");
    let (server, auth) = (&f.server, f.auth("pub"));
    let mut c = server.connect();
    assert_eq!(c.call(&["AUTH", &auth]), ok());
    assert_eq!(c.call(&["SET", "k", "before"]), ok());

    broker.stop();
    let reply = c.call(&["SET", "k", "during"]);
    let Frame::Error(text) = reply else { panic!("SET acknowledged with the broker down: {reply:?}") };
    assert!(text.starts_with("TRYAGAIN publish failed: "), "{text}");
    // The server itself is fine.
    assert_eq!(server.connect().call(&["PING"]), Frame::Simple("PONG".into()));

    broker.restart();
    // Reconnecting takes the client a moment; each try is a new connection.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut c = server.connect();
        assert_eq!(c.call(&["AUTH", &auth]), ok());
        match c.call(&["SET", "k", "after"]) {
            reply if reply == ok() => break,
            reply => assert!(std::time::Instant::now() < deadline, "no recovery: {reply:?}"),
        }
    }
    // The broker kept what it acknowledged before it went down.
    let values: Vec<Vec<u8>> =
        read_topic_on(&broker.addr(), &f.topic, 2).into_iter().map(|r| r.value).collect();
    assert_eq!(values.first(), Some(&b"before".to_vec()), "{values:?}");
    assert!(values.contains(&b"after".to_vec()), "{values:?}");
}

#[test]
fn idle_publisher_is_closed() {
    let f = Fixture::new("pubidle", 1, "idle_timeout_ms = 400");
    let mut idle = publisher(&f, "");
    let mut busy = publisher(&f, "");
    for _ in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(busy.call(&["PING"]), Frame::Simple("PONG".into()));
    }
    // 800 ms silent: closed without a reply; the busy one lives on.
    assert!(idle.is_closed());
    assert_eq!(busy.call(&["SET", "k", "v"]), ok());
}
