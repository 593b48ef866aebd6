//! Topics of a test's own, and an independent Kafka reader of what reached
//! the broker and what a group committed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::services::{brokers, unique, HOW_TO_START};

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap()
}

/// Creates a topic with the cluster's default replication (1 on one node,
/// 3 on the three-broker cluster) and waits until its metadata shows every
/// partition.
pub fn create_topic_on(brokers: &str, topic: &str, partitions: i32) {
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures_executor::block_on(admin(brokers).create_topics([&new], &opts))
        .unwrap_or_else(|e| panic!("Kafka at {brokers} unreachable ({e}); {HOW_TO_START}"));
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
        if let Ok(md) = md {
            if md.topics().iter().any(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} did not appear on {brokers}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn create_topic(topic: &str, partitions: i32) {
    create_topic_on(&brokers(), topic, partitions)
}

/// A record as an independent consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads `topic` from the beginning without joining a consumer group, up to
/// the high watermarks it has once it holds at least `expected` records
/// (waiting up to 60 s for them): everything in it then, so that an extra
/// (duplicate) record shows up too. Sorted by (partition, offset).
pub fn read_topic_on(brokers: &str, topic: &str, expected: usize) -> Vec<Record> {
    read_topic_with(&[("bootstrap.servers", brokers)], topic, expected)
}

/// [`read_topic_on`] with any client properties (TLS, SASL), which must
/// include `bootstrap.servers`.
pub fn read_topic_with(properties: &[(&str, &str)], topic: &str, expected: usize) -> Vec<Record> {
    read_topic_within(properties, topic, Some(expected))
}

/// Everything `topic` holds now, however many: for tests that count what
/// is missing.
pub fn read_topic_available(brokers: &str, topic: &str) -> Vec<Record> {
    read_topic_within(&[("bootstrap.servers", brokers)], topic, None)
}

fn read_topic_within(properties: &[(&str, &str)], topic: &str, expected: Option<usize>) -> Vec<Record> {
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer =
        config.set("group.id", unique("reader")).set("enable.auto.commit", "false").create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    // (low, high) per partition, once they cover `expected`.
    let marks: BTreeMap<i32, (i64, i64)> = loop {
        let marks: Result<BTreeMap<_, _>, _> = partitions
            .iter()
            .map(|&p| consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).map(|m| (p, m)))
            .collect();
        if let Ok(marks) = marks {
            let held: i64 = marks.values().map(|(low, high)| high - low).sum();
            if expected.is_none_or(|n| held >= n as i64) {
                break marks;
            }
            assert!(Instant::now() < deadline, "{topic} holds {held} of {expected:?} records after 60 s");
        } else {
            assert!(Instant::now() < deadline, "{topic}: no watermarks after 60 s ({marks:?})");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut tpl = TopicPartitionList::new();
    for (&p, &(low, _)) in &marks {
        tpl.add_partition_offset(topic, p, Offset::Offset(low)).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut next: BTreeMap<i32, i64> = marks.iter().map(|(&p, &(low, _))| (p, low)).collect();
    let mut out = Vec::new();
    while marks.iter().any(|(p, &(_, high))| next[p] < high) {
        assert!(Instant::now() < deadline, "reading {topic} up to {marks:?}: at {next:?} after 60 s");
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        // A transient error (a leader moving after a fault) is retried until the deadline.
        let m = match msg {
            Ok(m) => m,
            Err(e) => {
                eprintln!("reading {topic}: {e}; polling on");
                continue;
            }
        };
        next.insert(m.partition(), m.offset() + 1);
        if m.offset() >= marks[&m.partition()].1 {
            continue;
        }
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
            .unwrap_or_default();
        out.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

pub fn read_topic(topic: &str, expected: usize) -> Vec<Record> {
    read_topic_on(&brokers(), topic, expected)
}

/// The group's committed offsets, read by an independent Kafka consumer.
pub fn committed(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Offset> {
    committed_with(&[("bootstrap.servers", &brokers())], group, topic, partitions)
}

/// [`committed`] with any client properties, `bootstrap.servers` included.
pub fn committed_with(
    properties: &[(&str, &str)],
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Offset> {
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| (e.partition(), e.offset())).collect()
}
