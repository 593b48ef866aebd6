//! Queue mode end to end with the `redis` crate's own stream methods
//! (`xadd_map`, `xread_options` with a group, `xack`, `xpending`,
//! `xclaim`, `xautoclaim`), default options (RESP2): per-message
//! acknowledgement, claims after a consumer leaves, redelivery after the
//! visibility timeout and dead letters, more consumers than partitions, a
//! restart and two databus instances on one group. Each test has its own
//! topic, group and database; the Kafka side is checked with an independent
//! reader.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamPendingReply, StreamReadOptions, StreamReadReply,
};
use redis::{Commands, Connection, Value};
use support::*;

fn connect(server: &TestServer, auth: &str) -> Connection {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", server.addr.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("AUTH").arg(auth).query(&mut con).unwrap();
    con
}

fn publisher(f: &Fixture) -> Connection {
    connect(&f.server, &f.auth_string("pub", ""))
}

fn consumer(f: &Fixture) -> Connection {
    connect(&f.server, &f.auth_string("sub", "&offset=old"))
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
    assert_eq!((count.ids[0].consumer.as_str(), count.ids[0].times_delivered), ("alice", 1));
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
    let Fixture { db, server, topic, group, partitions } = f;
    drop(server);
    let server = TestServer::start(&test_config(&db, "", ""));
    let f = Fixture { db, server, topic, group, partitions };
    let mut b = consumer(&f);
    let want: BTreeSet<String> = published.iter().filter(|id| !acked.contains(id)).cloned().collect();
    let again = read_n(&mut b, &f, "b", want.len());
    assert_eq!(ids(&again), want, "only the unacknowledged entries come again");
    assert!(read(&mut b, &f, "b", 10).is_empty(), "and nothing else");
}

#[test]
fn two_databus_instances_serve_one_group() {
    let f = Fixture::new("queue_two", 4, "");
    let published = xadd(&mut publisher(&f), &f.topic, 200);
    let other = TestServer::start(&test_config(&f.db, "", ""));
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
