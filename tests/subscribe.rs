//! The subscribe path end to end: MGET (JSON and protobuf), commits, group
//! membership across connections, color. Test servers use the default 1.5 s MGET
//! wait (see `test_config`). A new member gets its partitions only once the
//! group's rebalance completes, so its first MGET may come back empty: the
//! helpers below poll until a count.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use databus::proto::MessagePb;
use databus::resp::Frame;
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Offset;
use serde_json::Value;
use testkit::client::{err, ok, Client};
use testkit::database::TestDb;
use testkit::kafka::group_version;
use testkit::server::{test_config, Fixture, TestServer};
use testkit::services::{brokers, unique};
use testkit::topics::{committed, create_topic, read_topic};

trait SubscribeFixture {
    fn publish(&self, color: &str, messages: &[(String, String)]);
    fn subscriber(&self, extra: &str) -> Client;
}

impl SubscribeFixture for Fixture {
    fn publish(&self, color: &str, messages: &[(String, String)]) {
        let extra = if color.is_empty() { String::new() } else { format!("&color={color}") };
        let mut c = self.login("pub", &extra);
        for (k, v) in messages {
            assert_eq!(c.call(&["SET", k, v]), ok());
        }
    }

    fn subscriber(&self, extra: &str) -> Client {
        self.login("sub", &format!("&offset=old{extra}"))
    }
}

fn numbered(prefix: &str, n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("k{}", i % 5), format!("{prefix}{i}"))).collect()
}

fn mget(c: &mut Client, format: &str) -> Vec<Vec<u8>> {
    let reply = if format.is_empty() { c.call(&["MGET"]) } else { c.call(&["MGET", format]) };
    match reply {
        Frame::Array(items) => items
            .into_iter()
            .map(|f| match f {
                Frame::Bulk(b) => b,
                other => panic!("MGET element {other:?}"),
            })
            .collect(),
        other => panic!("MGET reply {other:?}"),
    }
}

/// MGET (JSON) until `n` messages arrived; panics after 60 s.
fn drain_json(c: &mut Client, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} messages after 60 s: {out:?}", out.len());
        for raw in mget(c, "") {
            out.push(serde_json::from_slice(&raw).unwrap());
        }
    }
    out
}

fn values(messages: &[Value]) -> Vec<String> {
    messages.iter().map(|m| m["value"].as_str().unwrap().to_string()).collect()
}

#[test]
fn consume_json_and_protobuf_exactly() {
    let f = Fixture::new("consume", 3, "");
    let sent = numbered("v", 30);
    f.publish("", &sent);
    let mut hset = f.login("pub", "");
    assert_eq!(hset.call(&["HSET", "km", r#"{"trace":"abc"}"#, r#"{"n":1}"#]), ok());
    let truth = read_topic(&f.topic, 31);

    let mut c = f.subscriber("");
    let got = drain_json(&mut c, 31);
    assert_eq!(got.len(), 31);
    // Per partition, offsets come in order; every field matches the record.
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for m in &got {
        let (p, o) = (m["partition"].as_i64().unwrap(), m["offset"].as_i64().unwrap());
        assert!(last.insert(p, o).is_none_or(|prev| prev < o), "partition {p} out of order");
        let r = truth.iter().find(|r| r.partition as i64 == p && r.offset == o).unwrap();
        assert_eq!(m["key"], String::from_utf8(r.key.clone()).unwrap());
        assert_eq!(m["topic"], f.topic.as_str());
        let ts = m["timestamp"].as_i64().unwrap();
        assert!((1_600_000_000..4_000_000_000).contains(&ts), "timestamp {ts} not in seconds");
        if r.key == b"km" {
            assert_eq!(m["value"], serde_json::json!({"n": 1}));
            assert_eq!(m["metadata"], serde_json::json!({"trace": "abc"}));
        } else {
            assert_eq!(m["value"], String::from_utf8(r.value.clone()).unwrap());
            assert_eq!(m["metadata"], serde_json::json!({}));
        }
    }
    let got_values: BTreeSet<String> = got.iter().map(|m| m["value"].to_string()).collect();
    assert_eq!(got_values.len(), 31, "duplicates");

    // The same records through `MGET pb`, in a second group.
    let db2 = &f.db;
    let group2 = unique("g_consume_pb");
    db2.add_grant(1, &group2, 1, &f.topic);
    // The grant was added after startup: it works from the next refresh (500 ms).
    let auth = format!("app_key1:app_secret1@{group2}/topic={}&role=sub&offset=old", f.topic);
    let refresh_deadline = Instant::now() + Duration::from_secs(10);
    let mut pb = loop {
        let mut c = f.server.connect();
        match c.call(&["AUTH", &auth]) {
            reply if reply == ok() => break c,
            reply => assert!(Instant::now() < refresh_deadline, "{reply:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut decoded = Vec::new();
    while decoded.len() < 31 {
        assert!(Instant::now() < deadline);
        for raw in mget(&mut pb, "pb") {
            decoded.push(MessagePb::decode(raw.as_slice()).unwrap());
        }
    }
    assert_eq!(decoded.len(), 31);
    for m in &decoded {
        let r = truth.iter().find(|r| r.partition == m.partition && r.offset == m.offset).unwrap();
        assert_eq!(m.key.as_bytes(), r.key.as_slice());
        assert_eq!(m.value, r.value);
        assert_eq!(m.topic, f.topic);
        if r.key == b"km" {
            assert_eq!(m.metadata.get("trace").map(String::as_str), Some("abc"));
        }
    }
}

#[test]
fn foreign_records_of_any_bytes_are_delivered() {
    let f = Fixture::new("foreign", 1, "");
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let values: [&[u8]; 4] = [b"plain text", b"\x00\x01\xff binary", b"[1,2]", b""];
    for v in values {
        producer.send(BaseRecord::<[u8], [u8]>::to(&f.topic).key(&b"k"[..]).payload(v)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut c = f.subscriber("");
    let got = drain_json(&mut c, 4);
    assert_eq!(got[0]["value"], "plain text");
    assert_eq!(got[1]["value"], "AAH/IGJpbmFyeQ==");
    assert_eq!(got[1]["value_encoding"], "base64");
    assert_eq!(got[2]["value"], serde_json::json!([1, 2]));
    assert_eq!(got[3]["value"], "");
    assert!(got[0].get("value_encoding").is_none());
}

/// Headers set by another producer, and XADD's extra fields, reach MGET
/// in JSON (UTF-8 as text, other bytes as base64, named in
/// `headers_encoding`) and in protobuf; databus's own `color` and
/// `metadata` stay where they were.
#[test]
fn headers_of_other_producers_and_xadd_fields_reach_mget() {
    let f = Fixture::new("headers", 1, "");
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "trace-id", value: Some("4bf92f35") })
        .insert(Header { key: "schema", value: Some(&b"\x00\xff\x01"[..]) })
        .insert(Header { key: "trace-id", value: Some("last") });
    producer
        .send(BaseRecord::<[u8], [u8]>::to(&f.topic).key(&b"k1"[..]).payload(&b"v1"[..]).headers(headers))
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut publisher = f.login("pub", "");
    let id = publisher.call(&["XADD", &f.topic, "*", "key", "k2", "value", "v2", "origin", "billing"]);
    assert!(matches!(id, Frame::Bulk(_)), "{id:?}");
    assert_eq!(publisher.call(&["SET", "k3", "v3"]), ok());

    let mut c = f.subscriber("");
    let got = drain_json(&mut c, 3);
    assert_eq!(got[0]["headers"], serde_json::json!({"schema": "AP8B", "trace-id": "last"}));
    assert_eq!(got[0]["headers_encoding"], serde_json::json!({"schema": "base64"}));
    assert_eq!(got[1]["headers"], serde_json::json!({"origin": "billing"}));
    assert!(got[1].get("headers_encoding").is_none());
    assert_eq!(got[2]["headers"], serde_json::json!({}), "color is databus's own: {}", got[2]);

    let group2 = unique("g_headers_pb");
    f.db.add_grant(1, &group2, 1, &f.topic);
    let auth = format!("app_key1:app_secret1@{group2}/topic={}&role=sub&offset=old", f.topic);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pb = loop {
        let mut c = f.server.connect();
        if c.call(&["AUTH", &auth]) == ok() {
            break c;
        }
        assert!(Instant::now() < deadline, "the new grant never arrived");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut decoded = Vec::new();
    while decoded.len() < 3 {
        assert!(Instant::now() < deadline, "{decoded:?}");
        for raw in mget(&mut pb, "pb") {
            decoded.push(MessagePb::decode(raw.as_slice()).unwrap());
        }
    }
    let expected = [("schema", &b"\x00\xff\x01"[..]), ("trace-id", b"last")];
    assert_eq!(decoded[0].headers, expected.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect());
    assert_eq!(decoded[1].headers.get("origin").map(Vec::as_slice), Some(&b"billing"[..]));
    assert!(decoded[2].headers.is_empty());
}

#[test]
fn commit_then_reconnect_resumes_after_the_commit() {
    resume_after_the_commit(Fixture::new("resume", 1, ""));
}

/// The same under KIP-848's consumer group protocol (`group_protocol =
/// "consumer"` on the cluster): joining, committing, leaving and joining
/// again through the broker-driven protocol.
/// Under KIP-848's protocol where the cluster serves it (Kafka 4.0+ at
/// `group.version` 1, as Kafka's own tool reports); elsewhere (Kafka 3.9)
/// every subscriber command is refused with the cause and the fix.
#[test]
fn commit_then_reconnect_resumes_under_the_consumer_protocol() {
    let consumer = "[clusters.cluster1]\ngroup_protocol = \"consumer\"\n";
    if group_version(&brokers()) >= 1 {
        resume_after_the_commit(Fixture::new("resume848", 1, consumer));
    } else {
        // Two partitions: room for the second connection's member.
        the_consumer_protocol_is_refused(&Fixture::new("refuse848", 2, consumer));
    }
}

/// A cluster that does not serve the consumer protocol: MGET, a commit and
/// a queue-mode read each answer why, at once, and the connection stays.
fn the_consumer_protocol_is_refused(f: &Fixture) {
    f.publish("", &numbered("m", 1));
    let refusal = Frame::Error(
        "ERR cluster 'cluster1' does not support group_protocol = \"consumer\" \
         (KIP-848, Apache Kafka 4.0+): set group_protocol = \"classic\""
            .into(),
    );
    let mut c = f.subscriber("");
    assert_eq!(c.call(&["MGET"]), refusal);
    assert_eq!(c.call(&["SET", "0", "0"]), refusal);
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
    let mut q = f.subscriber("");
    let read = ["XREADGROUP", "GROUP", &f.group, "c1", "BLOCK", "1000", "STREAMS", &f.topic, ">"];
    assert_eq!(q.call(&read), refusal);
}

fn resume_after_the_commit(f: Fixture) {
    f.publish("", &numbered("m", 10));
    let mut c = f.subscriber("");
    let first = drain_json(&mut c, 10);
    assert_eq!(values(&first), (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(c.call(&["SET", "0", "4"]), ok());
    assert_eq!(committed(&f.group, &f.topic, 1)[&0], Offset::Offset(5));
    assert_eq!(c.call(&["QUIT"]), ok());
    assert!(c.is_closed());

    // 5..9 were handed out but not committed: they come again, and only they.
    let mut c = f.subscriber("");
    let again = drain_json(&mut c, 5);
    assert_eq!(values(&again), (5..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(mget(&mut c, ""), Vec::<Vec<u8>>::new());
    assert_eq!(c.call(&["SET", "0", "9"]), ok());
    assert_eq!(committed(&f.group, &f.topic, 1)[&0], Offset::Offset(10));
}

#[test]
fn group_members_share_partitions_and_take_over() {
    let f = Fixture::new("share", 4, "");
    let mut a = f.subscriber("");
    let mut b = f.subscriber("");
    // Let both join before anything is published, so no message is handed
    // to a member that then loses the partition.
    for _ in 0..3 {
        assert!(mget(&mut a, "").is_empty());
        assert!(mget(&mut b, "").is_empty());
    }
    let first: Vec<(String, String)> = (0..40).map(|i| (format!("key{i}"), format!("x{i}"))).collect();
    f.publish("", &first);

    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    while got_a.len() + got_b.len() < 40 {
        assert!(Instant::now() < deadline, "{} + {} of 40", got_a.len(), got_b.len());
        got_a.extend(mget(&mut a, "").iter().map(|r| serde_json::from_slice::<Value>(r).unwrap()));
        got_b.extend(mget(&mut b, "").iter().map(|r| serde_json::from_slice::<Value>(r).unwrap()));
    }
    let parts = |v: &[Value]| v.iter().map(|m| m["partition"].as_i64().unwrap()).collect::<BTreeSet<_>>();
    let (pa, pb) = (parts(&got_a), parts(&got_b));
    assert!(pa.is_disjoint(&pb), "both members read partitions {:?}", pa.intersection(&pb));
    assert!(!pa.is_empty() && !pb.is_empty(), "one member got everything: {pa:?} {pb:?}");
    let all: Vec<String> = values(&got_a).into_iter().chain(values(&got_b)).collect();
    let unique_values: HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique_values.len()), (40, 40));

    // B commits what it processed and leaves; A takes over B's partitions.
    let mut last_of: BTreeMap<i64, i64> = BTreeMap::new();
    for m in &got_b {
        last_of.insert(m["partition"].as_i64().unwrap(), m["offset"].as_i64().unwrap());
    }
    for (p, o) in &last_of {
        assert_eq!(b.call(&["SET", &p.to_string(), &o.to_string()]), ok());
    }
    drop(b);
    let rest: Vec<(String, String)> = (0..20).map(|i| (format!("key{i}"), format!("y{i}"))).collect();
    f.publish("", &rest);
    let later = drain_json(&mut a, 20);
    let mut later_values = values(&later);
    later_values.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("y{i}")).collect();
    want.sort();
    assert_eq!(later_values, want, "A must get exactly the rest: B's work was committed");
    assert!(parts(&later).iter().any(|p| pb.contains(p)), "A never read B's partitions");
}

#[test]
fn a_member_beyond_the_partition_count_is_refused() {
    let f = Fixture::new("full", 2, "");
    // Classic subscribers: they have read (a connection that has not may
    // yet turn to queue mode, which has no such limit; see tests/queue.rs).
    let mut a = f.subscriber("");
    let mut b = f.subscriber("");
    mget(&mut a, "");
    mget(&mut b, "");
    let mut c = f.server.connect();
    let auth = f.auth_string("sub", "");
    let want = format!(
        "TRYAGAIN auth failed: group '{}' already has 2 members for the 2 partitions of topic '{}'; another would get no partition",
        f.group, f.topic
    );
    assert_eq!(c.call(&["AUTH", &auth]), err(&want));
    assert!(c.is_closed());
    // A colored subscriber is a group of its own and still fits.
    let _red = f.subscriber("&color=red");
}

#[test]
fn each_color_sees_only_its_messages() {
    let f = Fixture::new("color", 2, "");
    let mut plain = f.subscriber("");
    let mut red = f.subscriber("&color=red");
    f.publish("red", &numbered("red", 5));
    f.publish("", &numbered("plain", 5));
    f.publish("blue", &numbered("blue", 5));
    let mut got_red = values(&drain_json(&mut red, 5));
    let mut got_plain = values(&drain_json(&mut plain, 5));
    got_red.sort();
    got_plain.sort();
    assert_eq!(got_red, (0..5).map(|i| format!("red{i}")).collect::<Vec<_>>());
    assert_eq!(got_plain, (0..5).map(|i| format!("plain{i}")).collect::<Vec<_>>());
    // Nothing else arrives later either.
    assert!(mget(&mut red, "").is_empty());
    assert!(mget(&mut plain, "").is_empty());
}

#[test]
fn empty_topic_returns_an_empty_array_after_the_wait() {
    let f = Fixture::new("empty", 1, "");
    let mut c = f.subscriber("");
    c.send(&[b"MGET"]);
    assert_eq!(c.read(), Some(Frame::Array(vec![])));
    c.send(&[b"MGET", b"pb"]);
    assert_eq!(c.read(), Some(Frame::Array(vec![])));
}

/// How long an empty MGET waits: the 1.5 s default (below Jedis's 2 s read
/// timeout), AUTH's `wait=`, or the call's `BLOCK ms`, which wins. (Lower
/// bounds only: an empty answer must not come before the wait is over. That
/// the default answers in time for clients' read timeouts is shown by the
/// clients themselves, in compat.rs.)
#[test]
fn an_empty_mget_waits_as_long_as_asked() {
    let f = Fixture::new("waits", 2, "");
    let timed = |c: &mut Client, args: &[&str]| {
        let started = Instant::now();
        assert_eq!(c.call(args), Frame::Array(vec![]), "{args:?}");
        started.elapsed()
    };
    let mut c = f.subscriber("");
    let waited = timed(&mut c, &["MGET"]);
    assert!(waited >= Duration::from_millis(1500), "the default wait ended after {waited:?}");
    let waited = timed(&mut c, &["MGET", "pb", "BLOCK", "3500"]);
    assert!(waited >= Duration::from_millis(3500), "BLOCK 3500 ended after {waited:?}");

    let mut long = f.subscriber("&wait=4000");
    let waited = timed(&mut long, &["MGET", ""]);
    assert!(waited >= Duration::from_secs(4), "wait=4000 ended after {waited:?}");
    let waited = timed(&mut long, &["MGET", "json", "block", "100"]);
    assert!(waited < Duration::from_secs(4), "BLOCK 100 on a wait=4000 connection took {waited:?}");

    // Out of range: an error, and the connection goes on.
    let range = "ERR BLOCK takes milliseconds from 1 to 600000";
    assert_eq!(long.call(&["MGET", "BLOCK", "0"]), err(range));
    assert_eq!(long.call(&["MGET", "json", "BLOCK", "600001"]), err(range));
    assert_eq!(long.call(&["PING"]), Frame::Simple("PONG".into()));
    let mut bad = f.server.connect();
    assert_eq!(
        bad.call(&["AUTH", &f.auth_string("sub", "&wait=0")]),
        err("ERR invalid auth string: wait must be milliseconds from 1 to 600000, got '0' \
             (expected key:secret@group/topic=T&role=pub|sub)")
    );
}

#[test]
fn bad_commits_are_refused_and_nothing_is_committed() {
    let f = Fixture::new("badcommit", 1, "");
    f.publish("", &numbered("m", 3));
    let mut c = f.subscriber("");
    drain_json(&mut c, 3);
    assert_eq!(c.call(&["SET", "a", "b"]), err("ERR partition must be a non-negative integer"));
    assert_eq!(c.call(&["SET", "0", "x"]), err("ERR offset must be a non-negative integer"));
    assert_eq!(c.call(&["SET", "1", "-5"]), err("ERR offset must be a non-negative integer"));
    assert_eq!(c.call(&["SET", "-1", "0"]), err("ERR partition must be a non-negative integer"));
    assert_eq!(c.call(&["SET", "7", "0"]), err("ERR partition 7 is not assigned to this connection"));
    assert_eq!(
        c.call(&["MGET", "xml"]),
        err("ERR MGET takes pb or json, then optionally BLOCK <milliseconds>")
    );
    assert_eq!(c.call(&["HSET", "a", "b", "c"]), err("ERR command 'HSET' not allowed for role sub"));
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(committed(&f.group, &f.topic, 1)[&0], Offset::Invalid);
    assert_eq!(c.call(&["SET", "0", "2"]), ok());
    assert_eq!(committed(&f.group, &f.topic, 1)[&0], Offset::Offset(3));
}

#[test]
fn idle_subscriber_is_closed_and_leaves_the_group() {
    let db = TestDb::new("subidle");
    let topic = unique("t_subidle");
    let group = unique("g_subidle");
    db.add_app(1, "key1", "secret1", "cluster1");
    db.add_grant(1, &group, 3, &topic);
    create_topic(&topic, 1);
    let config = test_config(&db, "", "[subscriber]\nidle_timeout_ms = 500\n");
    let server = TestServer::start(&config);
    let auth = format!("key1:secret1@{group}/topic={topic}&role=sub");
    let mut c = server.connect();
    assert_eq!(c.call(&["AUTH", &auth]), ok());
    assert!(c.is_closed(), "a silent subscriber must be closed");
    // Its membership is gone: the one-partition group takes a new member.
    let mut again = server.connect();
    assert_eq!(again.call(&["AUTH", &auth]), ok());
}

/// A subscriber whose client hangs up in the middle of an MGET wait leaves
/// its group at once, not when the wait would have ended: the group's one
/// partition is free for the next member long before the 60 s wait is over.
#[test]
fn a_subscriber_that_hangs_up_mid_wait_leaves_its_group_at_once() {
    let f = Fixture::new("hangup", 1, "[subscriber]\nwait_timeout_ms = 60000\n");
    let mut first = f.login("sub", "");
    first.send(&[b"MGET"]);
    std::thread::sleep(Duration::from_millis(500));
    drop(first);
    let hung_up = Instant::now();
    // One partition: the group is full until the first member has left.
    loop {
        let mut next = f.server.connect();
        match next.call(&["AUTH", &f.auth_string("sub", "")]) {
            r if r == ok() => break,
            Frame::Error(e) if e.starts_with("TRYAGAIN") && e.contains("already has 1 members") => {}
            other => panic!("AUTH answered {other:?}"),
        }
        assert!(
            hung_up.elapsed() < Duration::from_secs(30),
            "the member whose client hung up still holds the group after 30 s (its MGET waits 60 s)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("the next member joined {:?} after the hang-up", hung_up.elapsed());
}
