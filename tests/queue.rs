//! Queue mode end to end with the `redis` crate's own stream methods
//! (`xadd_map`, `xread_options` with a group, `xack`, `xpending`,
//! `xclaim`, `xautoclaim`), default options (RESP2): per-message
//! acknowledgement, claims after a consumer leaves, redelivery after the
//! visibility timeout and dead letters, more consumers than partitions, a
//! restart and two databus instances on one group. Each test has its own
//! topic, group and database; the Kafka side is checked with an independent
//! reader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamPendingReply, StreamReadOptions, StreamReadReply,
};
use redis::{Commands, Connection, Value};
use testkit::daemon::{daemon_config, Daemon};
use testkit::server::{test_config, Fixture, TestServer};
use testkit::services::{brokers, free_port, script_output, venv_python, TempDir};
use testkit::topics::{committed, create_topic, read_topic};

fn connect(server: &TestServer, auth: &str) -> Connection {
    connect_addr(server.addr, auth)
}

fn connect_addr(addr: std::net::SocketAddr, auth: &str) -> Connection {
    let mut con =
        redis::Client::open(format!("redis://127.0.0.1:{}/", addr.port())).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("AUTH").arg(auth).query(&mut con).unwrap();
    con
}

fn publisher(f: &Fixture) -> Connection {
    connect(&f.server, &f.auth("pub"))
}

fn consumer(f: &Fixture) -> Connection {
    connect(&f.server, &f.auth("sub"))
}

/// Publishes `n` entries `{n: i}` with XADD (no key: spread over the
/// partitions); returns their IDs.
fn xadd(con: &mut Connection, topic: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| con.xadd(topic, "*", &[("n", i.to_string())]).unwrap()).collect()
}

/// One `XREADGROUP ... >` read: the entries' IDs and `n` fields.
fn read(con: &mut Connection, f: &Fixture, name: &str, count: usize) -> Vec<(String, String)> {
    let opts = StreamReadOptions::default().group(&f.group, name).count(count).block(1000);
    let reply: Option<StreamReadReply> = con.xread_options(&[&f.topic], &[">"], &opts).unwrap();
    let Some(reply) = reply else { return Vec::new() };
    reply
        .keys
        .into_iter()
        .flat_map(|k| {
            assert_eq!(k.key, f.topic);
            k.ids
        })
        .map(|e| {
            let n = e.get::<String>("n").unwrap_or_default();
            (e.id, n)
        })
        .collect()
}

/// Reads until `n` entries came (60 s at most).
fn read_n(con: &mut Connection, f: &Fixture, name: &str, n: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "{name}: only {} of {n} entries after 60 s", got.len());
        got.extend(read(con, f, name, n - got.len()));
    }
    got
}

fn ids(entries: &[(String, String)]) -> BTreeSet<String> {
    entries.iter().map(|(id, _)| id.clone()).collect()
}

fn error_of<T: std::fmt::Debug>(r: redis::RedisResult<T>) -> String {
    let e = r.expect_err("an error reply");
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or_default())
}

#[test]
fn stream_methods_of_the_redis_crate() {
    let f = Fixture::new("queue_methods", 3, "");
    let mut p = publisher(&f);
    // Fields round-trip: `key` and `value` are the record's, the rest headers.
    let id: String = p.xadd(&f.topic, "*", &[("key", "k1"), ("value", "v1"), ("trace", "abc")]).unwrap();
    let (partition, offset) = id.split_once('-').unwrap();
    assert!(partition.parse::<i32>().unwrap() < 3 && offset.parse::<i64>().is_ok(), "{id}");
    let _: () = redis::cmd("SET").arg("k2").arg("v2").query(&mut p).unwrap();
    let in_kafka = read_topic(&f.topic, 2);
    let first = in_kafka.iter().find(|r| r.key == b"k1").expect("the XADD record");
    assert_eq!(first.value, b"v1");
    assert!(first.headers.contains(&("trace".into(), b"abc".to_vec())), "{:?}", first.headers);
    assert_eq!(format!("{}-{}", first.partition, first.offset), id);

    let mut c = consumer(&f);
    let () = c.xgroup_create(&f.topic, &f.group, "0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut entries = Vec::new();
    while entries.len() < 2 {
        assert!(Instant::now() < deadline, "entries: {entries:?}");
        let opts = StreamReadOptions::default().group(&f.group, "alice").count(10).block(1000);
        let reply: Option<StreamReadReply> = c.xread_options(&[&f.topic], &[">"], &opts).unwrap();
        entries.extend(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids));
    }
    let by_key: BTreeMap<String, &redis::streams::StreamId> =
        entries.iter().map(|e| (e.get::<String>("key").unwrap(), e)).collect();
    let e1 = by_key["k1"];
    assert_eq!(e1.id, id);
    assert_eq!(e1.get::<String>("value").as_deref(), Some("v1"));
    assert_eq!(e1.get::<String>("trace").as_deref(), Some("abc"));
    assert_eq!(by_key["k2"].get::<String>("value").as_deref(), Some("v2"), "a SET record is an entry too");

    let pending: StreamPendingReply = c.xpending(&f.topic, &f.group).unwrap();
    assert_eq!(pending.count(), 2);
    let acked: i64 = c.xack(&f.topic, &f.group, &[&id]).unwrap();
    assert_eq!(acked, 1);
    let again: i64 = c.xack(&f.topic, &f.group, &[&id, "9-9"]).unwrap();
    assert_eq!(again, 0, "neither pending: counted, not an error");
    let other: i64 = c.xack(&f.topic, "another_group", &[&id]).unwrap();
    assert_eq!(other, 0);
    // alice's own pending entries, by ID.
    let opts = StreamReadOptions::default().group(&f.group, "alice");
    let own: StreamReadReply = c.xread_options(&[&f.topic], &["0"], &opts).unwrap();
    let own: Vec<String> = own.keys.into_iter().flat_map(|k| k.ids).map(|e| e.id).collect();
    assert_eq!(own, vec![by_key["k2"].id.clone()]);
    let count: redis::streams::StreamPendingCountReply =
        c.xpending_count(&f.topic, &f.group, "-", "+", 10).unwrap();
    assert_eq!(count.ids.len(), 1);
    // Read once with `>`, once as history: delivered twice, as Redis counts.
    assert_eq!((count.ids[0].consumer.as_str(), count.ids[0].times_delivered), ("alice", 2));
    let info: redis::streams::StreamInfoGroupsReply = c.xinfo_groups(&f.topic).unwrap();
    assert_eq!((info.groups[0].name.as_str(), info.groups[0].pending), (f.group.as_str(), 1));
    let consumers: redis::streams::StreamInfoConsumersReply = c.xinfo_consumers(&f.topic, &f.group).unwrap();
    assert_eq!((consumers.consumers[0].name.as_str(), consumers.consumers[0].pending), ("alice", 1));
    let stream: redis::streams::StreamInfoStreamReply = c.xinfo_stream(&f.topic).unwrap();
    assert_eq!((stream.length, stream.groups), (2, 1));

    // Bad input: Redis's answers, and the connection stays.
    let opts = StreamReadOptions::default().group("another_group", "alice");
    let wrong_group: redis::RedisResult<StreamReadReply> = c.xread_options(&[&f.topic], &[">"], &opts);
    assert!(error_of(wrong_group).starts_with("NOGROUP"));
    let opts = StreamReadOptions::default().group(&f.group, "alice");
    let wrong_stream: redis::RedisResult<StreamReadReply> = c.xread_options(&["other_topic"], &[">"], &opts);
    assert!(error_of(wrong_stream).starts_with("NOGROUP"));
    let bad_id: redis::RedisResult<i64> = c.xack(&f.topic, &f.group, &["not-an-id"]);
    assert_eq!(error_of(bad_id), "ERR Invalid stream ID specified as stream command argument");
    let other_create: redis::RedisResult<()> = c.xgroup_create(&f.topic, "another_group", "$");
    assert!(error_of(other_create).starts_with("NOPERM"));
    let mget: redis::RedisResult<Value> = redis::cmd("MGET").query(&mut c);
    assert!(error_of(mget).contains("queue consumer"));
    let commit: redis::RedisResult<Value> = redis::cmd("SET").arg("0").arg("0").query(&mut c);
    assert!(error_of(commit).contains("queue consumer"));
    let trim: redis::RedisResult<String> =
        p.xadd_maxlen(&f.topic, redis::streams::StreamMaxlen::Approx(10), "*", &[("a", "b")]);
    assert!(error_of(trim).contains("does not trim"));
    let explicit: redis::RedisResult<String> = p.xadd(&f.topic, "1-1", &[("a", "b")]);
    assert!(error_of(explicit).contains("XADD takes * only"));
    let other_stream: redis::RedisResult<String> = p.xadd("other_topic", "*", &[("a", "b")]);
    assert!(error_of(other_stream).starts_with("NOPERM"));
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");

    // Another consumer's entry: acknowledged and counted, as Redis counts it.
    let mut bob = consumer(&f);
    let theirs: i64 = bob.xack(&f.topic, &f.group, &[&by_key["k2"].id]).unwrap();
    assert_eq!(theirs, 1);
    let pending: StreamPendingReply = bob.xpending(&f.topic, &f.group).unwrap();
    assert_eq!(pending.count(), 0);

    // A connection that used MGET stays classic.
    let mut classic = connect(&f.server, &f.auth_string("sub", "&color=blue"));
    let _: Value = redis::cmd("MGET").query(&mut classic).unwrap();
    let opts = StreamReadOptions::default().group(&f.group, "bob");
    let refused: redis::RedisResult<StreamReadReply> = classic.xread_options(&[&f.topic], &[">"], &opts);
    assert!(error_of(refused).contains("consumes with MGET"));
}

#[test]
fn a_consumers_unacknowledged_entries_are_claimed_after_it_leaves() {
    let f = Fixture::new("queue_claim", 2, "");
    let published = xadd(&mut publisher(&f), &f.topic, 100);
    let mut a = consumer(&f);
    let got = read_n(&mut a, &f, "a", 100);
    assert_eq!(ids(&got), published.iter().cloned().collect(), "every entry once");
    let (acked, left): (Vec<_>, Vec<_>) = got.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let acked: Vec<String> = acked.into_iter().map(|(_, (id, _))| id.clone()).collect();
    let left: BTreeSet<String> = left.into_iter().map(|(_, (id, _))| id.clone()).collect();
    let n: i64 = a.xack(&f.topic, &f.group, &acked).unwrap();
    assert_eq!(n, 50);
    drop(a);
    let mut b = consumer(&f);
    let reply: StreamAutoClaimReply = b
        .xautoclaim_options(&f.topic, &f.group, "b", 0, "0-0", StreamAutoClaimOptions::default().count(1000))
        .unwrap();
    let claimed: BTreeSet<String> = reply.claimed.iter().map(|e| e.id.clone()).collect();
    assert_eq!(claimed, left, "exactly the unacknowledged half");
    // XCLAIM by ID moves them on again, delivery count raised.
    let first = left.iter().next().unwrap().clone();
    let moved: redis::streams::StreamClaimReply = b.xclaim(&f.topic, &f.group, "c", 0, &[&first]).unwrap();
    assert_eq!(moved.ids.len(), 1);
    let count: redis::streams::StreamPendingCountReply =
        b.xpending_consumer_count(&f.topic, &f.group, &first, &first, 1, "c").unwrap();
    assert_eq!(count.ids[0].times_delivered, 3);
    let n: i64 = b.xack(&f.topic, &f.group, &left.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(n, 50);
    assert!(read(&mut b, &f, "b", 10).is_empty(), "nothing left");
}

#[test]
fn the_visibility_timeout_redelivers_and_a_poisoned_entry_is_dead_lettered() {
    let sections = "[queue]\nvisibility_timeout_ms = 1000\nmax_deliveries = 2\n";
    let f = Fixture::new("queue_dlq", 1, sections);
    let dlq = format!("{}.dlq", f.topic);
    create_topic(&dlq, 1);
    let published = xadd(&mut publisher(&f), &f.topic, 1);
    let mut a = consumer(&f);
    let first = read_n(&mut a, &f, "a", 1);
    assert_eq!(first[0].0, published[0]);
    // Not acknowledged: after the timeout another consumer gets it.
    let mut b = consumer(&f);
    let again = read_n(&mut b, &f, "b", 1);
    assert_eq!(again[0].0, published[0]);
    let count: redis::streams::StreamPendingCountReply =
        b.xpending_count(&f.topic, &f.group, "-", "+", 10).unwrap();
    assert_eq!((count.ids[0].consumer.as_str(), count.ids[0].times_delivered), ("b", 2));
    // A third delivery would pass max_deliveries: it goes to the dead-letter topic.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(read(&mut b, &f, "b", 10).is_empty(), "handed out a third time");
        let pending: StreamPendingReply = b.xpending(&f.topic, &f.group).unwrap();
        if pending.count() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still pending after 30 s");
    }
    let dead = read_topic(&dlq, 1);
    assert_eq!(dead.len(), 1);
    assert!(dead[0].headers.contains(&("n".into(), b"0".to_vec())), "{:?}", dead[0].headers);
    assert!(dead[0].headers.contains(&("databus-dead-letter-topic".into(), f.topic.as_bytes().to_vec())));
    let (partition, offset) = published[0].split_once('-').unwrap();
    assert!(dead[0]
        .headers
        .contains(&("databus-dead-letter-partition".into(), partition.as_bytes().to_vec())));
    assert!(dead[0].headers.contains(&("databus-dead-letter-offset".into(), offset.as_bytes().to_vec())));
    // Acknowledged once stored there: committed past it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while committed(&f.group, &f.topic, 1).get(&0)
        != Some(&rdkafka::Offset::Offset(offset.parse::<i64>().unwrap() + 1))
    {
        assert!(Instant::now() < deadline, "the dead letter was not committed past");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn eight_consumers_on_two_partitions_all_get_work() {
    let f = Fixture::new("queue_eight", 2, "");
    let published = xadd(&mut publisher(&f), &f.topic, 200);
    let mut consumers: Vec<Connection> = (0..8).map(|_| consumer(&f)).collect();
    let mut got: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.values().map(Vec::len).sum::<usize>() < 200 {
        assert!(
            Instant::now() < deadline,
            "only {:?} after 60 s",
            got.values().map(Vec::len).collect::<Vec<_>>()
        );
        for (i, c) in consumers.iter_mut().enumerate() {
            let entries = read(c, &f, &format!("c{i}"), 5);
            let ack: Vec<&String> = entries.iter().map(|(id, _)| id).collect();
            if !ack.is_empty() {
                let n: i64 = c.xack(&f.topic, &f.group, &ack).unwrap();
                assert_eq!(n as usize, ack.len());
            }
            got.entry(i).or_default().extend(entries);
        }
    }
    assert_eq!(got.len(), 8);
    assert!(
        got.values().all(|e| !e.is_empty()),
        "every consumer got work: {:?}",
        got.values().map(Vec::len).collect::<Vec<_>>()
    );
    let all: Vec<String> = got.values().flatten().map(|(id, _)| id.clone()).collect();
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "no entry twice");
    assert_eq!(unique, published.into_iter().collect());
}

#[test]
fn a_restart_hands_out_only_unacknowledged_entries() {
    let f = Fixture::new("queue_restart", 2, "");
    let published = xadd(&mut publisher(&f), &f.topic, 40);
    let mut a = consumer(&f);
    let got = read_n(&mut a, &f, "a", 40);
    // Every third acknowledged: gaps below acknowledged entries in both partitions.
    let acked: Vec<String> = got.iter().step_by(3).map(|(id, _)| id.clone()).collect();
    let n: i64 = a.xack(&f.topic, &f.group, &acked).unwrap();
    assert_eq!(n as usize, acked.len());
    drop(a);
    // The same database and group on a new server: what the old one committed.
    let f = f.restart();
    let mut b = consumer(&f);
    let want: BTreeSet<String> = published.iter().filter(|id| !acked.contains(id)).cloned().collect();
    let again = read_n(&mut b, &f, "b", want.len());
    assert_eq!(ids(&again), want, "only the unacknowledged entries come again");
    assert!(read(&mut b, &f, "b", 10).is_empty(), "and nothing else");
}

#[test]
fn two_databus_instances_serve_one_group() {
    two_instances("queue_two", "");
}

/// Under KIP-848's protocol a rebalance revokes only what moves.
#[test]
fn two_databus_instances_serve_one_group_under_the_consumer_protocol() {
    two_instances("queue_two848", "[clusters.cluster1]\ngroup_protocol = \"consumer\"\n");
}

fn two_instances(name: &str, sections: &str) {
    let f = Fixture::new(name, 4, sections);
    let published = xadd(&mut publisher(&f), &f.topic, 200);
    let other = TestServer::start(&test_config(&f.db, "", sections));
    let mut here = consumer(&f);
    let mut there = connect(&other, &f.auth_string("sub", "&offset=old"));
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while acked.len() < 200 {
        assert!(Instant::now() < deadline, "only {} of 200 acknowledged after 90 s", acked.len());
        for (name, c) in [("here", &mut here), ("there", &mut there)] {
            let entries = read(c, &f, name, 20);
            let ids: Vec<&String> = entries.iter().map(|(id, _)| id).collect();
            if ids.is_empty() {
                continue;
            }
            // One by one: an entry of a partition that moved meanwhile is
            // not acknowledged here (counted 0); its new owner hands it out again.
            for id in ids {
                let n: i64 = c.xack(&f.topic, &f.group, &[id]).unwrap();
                if n == 1 {
                    acked.push(id.clone());
                }
            }
        }
    }
    let unique: BTreeSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "no entry acknowledged twice");
    assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<_>>(), published.into_iter().collect());
}

// ---------------------------------------------------------------------------
// redis-py and node-redis, each with its default options, through their own
// stream methods: the same session, whose outcome the test checks.

/// What a client's session printed: the IDs XADD answered, those the first
/// consumer read, whether every entry's fields came back as added, the
/// ones it acknowledged, those the second consumer claimed with XAUTOCLAIM
/// (and acknowledged), and what was pending at the end.
#[derive(serde::Deserialize, Debug)]
struct StreamSession {
    published: Vec<String>,
    read: Vec<String>,
    fields_ok: bool,
    acked: Vec<String>,
    claimed: Vec<String>,
    pending_after: i64,
}

/// Runs a client's session script against `f`'s server, topic and group.
fn session_output(f: &Fixture, mut command: std::process::Command) -> std::process::Output {
    command
        .env("PORT", f.server.addr.port().to_string())
        .env("TOPIC", &f.topic)
        .env("GROUP", &f.group)
        .env("PUB_AUTH", f.auth_string("pub", ""))
        .env("SUB_AUTH", f.auth_string("sub", "&offset=old"))
        .output()
        .unwrap()
}

fn check_stream_session(f: &Fixture, what: &str, out: std::process::Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let s: StreamSession = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{what} printed no session ({e}): {}", String::from_utf8_lossy(&out.stdout))
    });
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(s.published.len(), 20);
    assert_eq!(set(&s.read), set(&s.published), "{what}: every entry read once");
    assert_eq!(s.read.len(), 20, "{what}: no entry twice");
    assert!(s.fields_ok, "{what}: fields did not round-trip");
    assert_eq!(s.acked.len(), 10);
    let left: BTreeSet<String> = set(&s.published).difference(&set(&s.acked)).cloned().collect();
    assert_eq!(set(&s.claimed), left, "{what}: XAUTOCLAIM took exactly the unacknowledged entries");
    assert_eq!(s.pending_after, 0);
    // Everything acknowledged: the group's commits reach the end of each partition.
    let records = read_topic(&f.topic, 20);
    let mut ends: BTreeMap<i32, rdkafka::Offset> = BTreeMap::new();
    for r in &records {
        ends.insert(r.partition, rdkafka::Offset::Offset(r.offset + 1));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let committed: BTreeMap<i32, rdkafka::Offset> = committed(&f.group, &f.topic, f.partitions)
            .into_iter()
            .filter(|(p, _)| ends.contains_key(p))
            .collect();
        if committed == ends {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: committed {committed:?}, want {ends:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// redis-py with its defaults: RESP3 (redis-py 8 opens with `HELLO 3 AUTH`),
/// the AUTH string as the password.
const REDIS_PY_STREAMS: &str = r#"
import json, os, time
import redis

port, topic, group = int(os.environ["PORT"]), os.environ["TOPIC"], os.environ["GROUP"]
def client(auth):
    return redis.Redis(host="127.0.0.1", port=port, password=auth)

pub = client(os.environ["PUB_AUTH"])
published = [pub.xadd(topic, {"key": f"k{i % 5}", "value": f"v{i}", "n": str(i)}).decode() for i in range(20)]
pub.close()

a = client(os.environ["SUB_AUTH"])
assert a.xgroup_create(topic, group, id="0") is True
entries, deadline = [], time.time() + 60
while len(entries) < 20:
    assert time.time() < deadline, f"only {len(entries)} entries"
    # databus answers a RESP3 map; redis-py 8 hands it over as it does
    # Redis's: [[stream, [(id, fields), ...]]], or [] for nil.
    for name, items in a.xreadgroup(group, "a", {topic: ">"}, count=10, block=1000) or []:
        assert name.decode() == topic
        entries.extend(items)
fields_ok = all(f[b"value"] == f"v{int(f[b'n'])}".encode() and f[b"key"] == f"k{int(f[b'n']) % 5}".encode() for _, f in entries)
acked = [i.decode() for i, f in entries if int(f[b"n"]) % 2 == 0]
assert a.xack(topic, group, *acked) == len(acked)
assert a.xpending(topic, group)["pending"] == 10
a.close()

b = client(os.environ["SUB_AUTH"])
reply = b.xautoclaim(topic, group, "b", 0, "0-0", count=100)
claimed = [i.decode() for i, _ in reply[1]]
assert b.xack(topic, group, *claimed) == len(claimed)
pending_after = b.xpending(topic, group)["pending"]
b.close()
print(json.dumps({"published": published, "read": [i.decode() for i, _ in entries], "fields_ok": fields_ok,
                  "acked": acked, "claimed": claimed, "pending_after": pending_after}))
"#;

#[test]
fn redis_py_stream_methods_with_defaults() {
    let f = Fixture::new("queue_py", 3, "");
    let mut python = std::process::Command::new(venv_python());
    python.args(["-c", REDIS_PY_STREAMS]);
    check_stream_session(&f, "redis-py", session_output(&f, python));
}

/// node-redis with its defaults: RESP3 (`HELLO 3 AUTH ...`), so replies are
/// maps where Redis 7 answers maps.
const NODE_REDIS_STREAMS: &str = r#"
const { createClient } = require('redis');
const { PORT, TOPIC, GROUP, PUB_AUTH, SUB_AUTH } = process.env;
(async () => {
  const connect = async (password) => {
    const c = createClient({ socket: { host: '127.0.0.1', port: Number(PORT) }, password });
    c.on('error', (e) => { console.error('client error', e); process.exit(1); });
    await c.connect();
    return c;
  };
  const pub = await connect(PUB_AUTH);
  const published = [];
  for (let i = 0; i < 20; i++) {
    published.push(await pub.xAdd(TOPIC, '*', { key: `k${i % 5}`, value: `v${i}`, n: String(i) }));
  }
  await pub.close();
  const a = await connect(SUB_AUTH);
  const created = await a.xGroupCreate(TOPIC, GROUP, '0');
  if (created !== 'OK') throw new Error(`XGROUP CREATE: ${created}`);
  const entries = [];
  const deadline = Date.now() + 60000;
  while (entries.length < 20) {
    if (Date.now() > deadline) throw new Error(`only ${entries.length} entries`);
    const reply = await a.xReadGroup(GROUP, 'a', { key: TOPIC, id: '>' }, { COUNT: 10, BLOCK: 1000 });
    for (const stream of reply ?? []) {
      if (stream.name !== TOPIC) throw new Error(`stream ${stream.name}`);
      entries.push(...stream.messages);
    }
  }
  const fieldsOk = entries.every((e) => e.message.value === `v${e.message.n}` && e.message.key === `k${Number(e.message.n) % 5}`);
  const acked = entries.filter((e) => Number(e.message.n) % 2 === 0).map((e) => e.id);
  if ((await a.xAck(TOPIC, GROUP, acked)) !== acked.length) throw new Error('XACK count');
  const pending = await a.xPending(TOPIC, GROUP);
  if (pending.pending !== 10) throw new Error(`XPENDING ${JSON.stringify(pending)}`);
  await a.close();
  const b = await connect(SUB_AUTH);
  const claim = await b.xAutoClaim(TOPIC, GROUP, 'b', 0, '0-0', { COUNT: 100 });
  const claimed = claim.messages.filter((m) => m).map((m) => m.id);
  if ((await b.xAck(TOPIC, GROUP, claimed)) !== claimed.length) throw new Error('XACK of the claimed');
  const after = await b.xPending(TOPIC, GROUP);
  await b.close();
  console.log(JSON.stringify({ published, read: entries.map((e) => e.id), fields_ok: fieldsOk, acked, claimed, pending_after: after.pending }));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[test]
fn node_redis_stream_methods_with_defaults() {
    let modules = script_output("nodeenv.sh", &[], "it needs node, npm and the npm registry");
    let f = Fixture::new("queue_node", 3, "");
    let mut node = std::process::Command::new("node");
    node.args(["-e", NODE_REDIS_STREAMS]).env("NODE_PATH", &modules);
    check_stream_session(&f, "node-redis", session_output(&f, node));
}

#[test]
fn at_the_pending_cap_reads_get_nothing_new_until_acknowledgements() {
    let f = Fixture::new("queue_cap", 1, "[queue]\nmax_pending = 5\n");
    xadd(&mut publisher(&f), &f.topic, 10);
    let mut c = consumer(&f);
    let first = read_n(&mut c, &f, "a", 5);
    assert_eq!(first.len(), 5);
    assert!(read(&mut c, &f, "b", 10).is_empty(), "the cap holds new entries back");
    let n: i64 = c.xack(&f.topic, &f.group, &[&first[0].0, &first[1].0]).unwrap();
    assert_eq!(n, 2);
    let more = read_n(&mut c, &f, "b", 2);
    assert!(ids(&more).is_disjoint(&ids(&first)));
    assert!(read(&mut c, &f, "b", 10).is_empty(), "five pending again");
}

/// The group's committed offset and metadata per partition, as Kafka has them.
fn committed_state(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, (i64, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), (o, e.metadata().to_owned()))),
            _ => None,
        })
        .collect()
}

/// What databus commits once `acked` of `entries` are acknowledged: per
/// partition the lowest unacknowledged offset, and the acknowledged runs
/// above it as `a` or `a-b`, comma-separated.
fn expected_state(entries: &[String], acked: &[String]) -> BTreeMap<i32, (i64, String)> {
    let place = |id: &String| {
        let (p, o) = id.split_once('-').unwrap();
        (p.parse::<i32>().unwrap(), o.parse::<i64>().unwrap())
    };
    let acked: BTreeSet<(i32, i64)> = acked.iter().map(place).collect();
    let mut per: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in entries.iter().map(place) {
        per.entry(p).or_default().push(o);
    }
    per.into_iter()
        .map(|(p, mut offsets)| {
            offsets.sort();
            let end = offsets.last().unwrap() + 1;
            let point = offsets.iter().copied().find(|o| !acked.contains(&(p, *o))).unwrap_or(end);
            let mut runs: Vec<(i64, i64)> = Vec::new();
            for o in offsets.into_iter().filter(|o| *o > point && acked.contains(&(p, *o))) {
                match runs.last_mut() {
                    Some((_, hi)) if *hi + 1 == o => *hi = o,
                    _ => runs.push((o, o)),
                }
            }
            let text: Vec<String> = runs
                .iter()
                .map(|&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
                .collect();
            (p, (point, text.join(",")))
        })
        .collect()
}

#[test]
fn a_killed_databus_hands_out_only_unacknowledged_entries_once_its_commit_is_in() {
    let short_session = "[subscriber]\nsession_timeout_ms = 6000\n";
    let f = Fixture::new("queue_kill", 2, short_session);
    let published = xadd(&mut publisher(&f), &f.topic, 40);
    // The binary, killed with SIGKILL: no shutdown commit, no leaving the
    // group (the broker drops its member after the session timeout, the
    // shortest the broker allows).
    let port = free_port();
    let dir = TempDir::new("queue_kill");
    let config = daemon_config(port, &f.db.url(), &brokers(), short_session);
    let path = dir.write("databus.toml", &config);
    let mut daemon = Daemon::start(&["--conf", path.to_str().unwrap()], port);
    let mut a = connect_addr(daemon.addr, &f.auth_string("sub", "&offset=old"));
    let got = read_n(&mut a, &f, "a", 40);
    let acked: Vec<String> = got.iter().step_by(3).map(|(id, _)| id.clone()).collect();
    let n: i64 = a.xack(&f.topic, &f.group, &acked).unwrap();
    assert_eq!(n as usize, acked.len());
    // Its periodic commit (every 100 ms) carries the acknowledgements: the
    // point below the first gap and the ranges above it.
    let want = expected_state(&published, &acked);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed_state(&f.group, &f.topic, 2) != want {
        assert!(
            Instant::now() < deadline,
            "committed {:?}, want {want:?}",
            committed_state(&f.group, &f.topic, 2)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.signal("KILL");
    daemon.wait_exit();
    drop(a);
    let mut b = consumer(&f);
    let left: BTreeSet<String> = published.iter().filter(|id| !acked.contains(id)).cloned().collect();
    let again = read_n(&mut b, &f, "b", left.len());
    assert_eq!(ids(&again), left, "only the unacknowledged entries come again");
    assert!(read(&mut b, &f, "b", 10).is_empty(), "and nothing else");
}

/// One `XGROUP` call's reply, `OK` or the error.
fn xgroup(con: &mut Connection, args: &[&str]) -> String {
    match redis::cmd("XGROUP").arg(args).query::<String>(con) {
        Ok(ok) => ok,
        Err(e) => error_of::<String>(Err(e)),
    }
}

/// `XINFO GROUPS`'s `lag` of the connection's group.
fn lag(con: &mut Connection, topic: &str) -> Option<i64> {
    let info: Vec<std::collections::HashMap<String, Value>> =
        redis::cmd("XINFO").arg("GROUPS").arg(topic).query(con).unwrap();
    match &info[0]["lag"] {
        Value::Int(n) => Some(*n),
        Value::Nil => None,
        other => panic!("lag {other:?}"),
    }
}

#[test]
fn group_creation_and_setid_mean_what_they_mean_in_redis() {
    // The member leaves as soon as its last consumer does, so the group
    // is idle for SETID.
    let f = Fixture::new("queue_create", 2, "[queue]\nlinger_ms = 0\n");
    let backlog = xadd(&mut publisher(&f), &f.topic, 6);
    // AUTH's default is offset=new; `XGROUP CREATE ... 0` overrides it.
    let mut a = connect(&f.server, &f.auth_string("sub", ""));
    assert_eq!(
        xgroup(&mut a, &["CREATE", &f.topic, &f.group, "1-5"]),
        "ERR databus starts a group at 0 (the earliest entry of every partition) or $ (past the latest)"
    );
    assert_eq!(xgroup(&mut a, &["CREATE", &f.topic, &f.group, "0", "MKSTREAM"]), "OK");
    let got = read_n(&mut a, &f, "a", 6);
    assert_eq!(ids(&got), backlog.iter().cloned().collect(), "the backlog, from the earliest entry");
    assert_eq!(lag(&mut a, &f.topic), Some(0));
    let more = xadd(&mut publisher(&f), &f.topic, 2);
    assert_eq!(lag(&mut a, &f.topic), Some(2), "two entries not handed out yet");
    // The group exists now (its member is up here): Redis's answer.
    let mut b = connect(&f.server, &f.auth_string("sub", ""));
    assert_eq!(
        xgroup(&mut b, &["CREATE", &f.topic, &f.group, "$"]),
        "BUSYGROUP Consumer Group name already exists"
    );
    let reading = xgroup(&mut b, &["SETID", &f.topic, &f.group, "0"]);
    assert!(reading.starts_with("ERR consumers are reading group"), "{reading}");
    let other = xgroup(&mut b, &["CREATE", &f.topic, "another_group", "0"]);
    assert!(other.starts_with("NOPERM"), "{other}");
    let got = read_n(&mut a, &f, "a", 2);
    assert_eq!(ids(&got), more.iter().cloned().collect());
    let all: Vec<String> = backlog.iter().chain(&more).cloned().collect();
    let n: i64 = a.xack(&f.topic, &f.group, &all).unwrap();
    assert_eq!(n, 8);
    drop(a);
    drop(b);

    // Once the member has left, the group has commits: CREATE is refused,
    // and SETID 0 moves it back to the earliest entry.
    let mut c = connect(&f.server, &f.auth_string("sub", "&offset=old"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = xgroup(&mut c, &["SETID", &f.topic, &f.group, "0"]);
        if reply == "OK" {
            break;
        }
        assert!(reply.starts_with("ERR consumers are reading"), "{reply}");
        assert!(Instant::now() < deadline, "the group still has members after 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        xgroup(&mut c, &["CREATE", &f.topic, &f.group, "0"]),
        "BUSYGROUP Consumer Group name already exists"
    );
    let again = read_n(&mut c, &f, "c", 8);
    assert_eq!(ids(&again), all.iter().cloned().collect(), "SETID 0: everything again");
    drop(c);

    // `$` overrides offset=old: a group made at the end gets only what
    // comes after.
    let g = Fixture::new("queue_create_latest", 2, "");
    xadd(&mut publisher(&g), &g.topic, 3);
    let mut d = connect(&g.server, &g.auth_string("sub", "&offset=old"));
    assert_eq!(xgroup(&mut d, &["CREATE", &g.topic, &g.group, "$"]), "OK");
    let after = xadd(&mut publisher(&g), &g.topic, 2);
    let got = read_n(&mut d, &g, "d", 2);
    assert_eq!(ids(&got), after.iter().cloned().collect());
    assert!(read(&mut d, &g, "d", 10).is_empty(), "nothing from before the group was made");
}

#[test]
fn a_queue_consumer_never_joins_kafka_on_its_own() {
    let f = Fixture::new("queue_no_join", 2, "");
    let published = xadd(&mut publisher(&f), &f.topic, 4);
    let mut a = consumer(&f);
    let first = read_n(&mut a, &f, "a", 2);
    // Another consumer connects: until it reads, and after, the group's
    // only Kafka member is the shared one (a member of its own at AUTH
    // would have made the group rebalance).
    let mut b = consumer(&f);
    let members = || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let admin: BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
        let list = admin.fetch_group_list(Some(&f.group), Duration::from_secs(10)).unwrap();
        list.groups().iter().map(|g| g.members().len()).sum::<usize>()
    };
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(members(), 1, "a subscriber that has not read yet joined the group");
    // Its first read finds the shared member up: the rest, at once.
    let opts = StreamReadOptions::default().group(&f.group, "b").count(10).block(1000);
    let reply: Option<StreamReadReply> = b.xread_options(&[&f.topic], &[">"], &opts).unwrap();
    let rest: BTreeSet<String> =
        reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).map(|e| e.id).collect();
    let want: BTreeSet<String> = published.iter().filter(|id| !ids(&first).contains(*id)).cloned().collect();
    assert_eq!(rest, want, "the entries left, within the read's BLOCK");
    assert_eq!(members(), 1);
}
