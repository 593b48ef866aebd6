//! The producer against a fake cluster (`fake/`): every record
//! acknowledged once, written once, in order per key, whatever the broker
//! does in between.

use std::collections::HashMap;
use std::sync::mpsc;

use super::fake::{FakeCluster, UnknownProducerAnswer};
use super::*;

/// A context that counts and says plainly what failed.
#[derive(Default)]
struct Plain;

impl Context for Plain {
    fn acknowledged(&self, _: &str, _: i32) {}

    fn failed(&self, failure: Failure) -> PublishError {
        match failure {
            Failure::Timeout { topic, partition } => PublishError::Timeout {
                cluster: topic,
                ms: 0,
                partition: partition.map(|p| p.to_string()),
                cause: None,
            },
            Failure::Rejected { message, .. } => {
                PublishError::Rejected(super::super::producer::Refusal(message))
            }
            Failure::Refused(reason) => PublishError::Refused { cluster: String::new(), reason },
        }
    }

    fn broker_error(&self, _: &str) {}
}

fn config(cluster: &FakeCluster, max_in_flight: usize) -> Config {
    Config {
        cluster: "fake".into(),
        brokers: cluster.bootstrap(),
        security: Default::default(),
        timeout: Duration::from_secs(5),
        linger: Duration::ZERO,
        max_in_flight,
        adapt_in_flight: false,
        partitioner: Partitioner::Murmur2Random,
        compression: Compression::None,
        batch_bytes: 1_000_000,
        max_records: 100_000,
        stats: Arc::default(),
    }
}

type Verdict = Result<Delivered, PublishError>;

/// Sends `value` with `key` to `topic`; the verdict comes on the receiver.
fn send(producer: &Producer, topic: &str, key: &str, value: &str) -> mpsc::Receiver<Verdict> {
    send_more(producer, topic, key, value, false)
}

/// [`send`], saying whether more records follow at once.
fn send_more(
    producer: &Producer,
    topic: &str,
    key: &str,
    value: &str,
    more: bool,
) -> mpsc::Receiver<Verdict> {
    let (tx, rx) = mpsc::channel();
    let mut headers = std::iter::once(("color", &b"red"[..]));
    let record =
        Outgoing { topic, key: Some(key.as_bytes()), value: value.as_bytes(), headers: &mut headers, more };
    producer.send(record, Reporter::to(tx)).expect("queued");
    rx
}

fn verdict(rx: &mpsc::Receiver<Verdict>) -> Verdict {
    rx.recv_timeout(Duration::from_secs(20)).expect("a verdict within 20 s")
}

/// `clients` depth-1 publishers, each sending `each` records with its own
/// key and waiting for each verdict; `meanwhile` runs once a third of the
/// records are settled, while the rest are still to come. Returns the
/// verdicts per key.
fn publish(
    producer: &Producer,
    topic: &str,
    clients: usize,
    each: usize,
    meanwhile: impl FnOnce(),
) -> HashMap<String, Vec<Verdict>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let settled = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for c in 0..clients {
            let (tx, settled) = (tx.clone(), &settled);
            s.spawn(move || {
                let key = format!("key-{c}");
                let verdicts: Vec<Verdict> = (0..each)
                    .map(|i| {
                        let v = verdict(&send(producer, topic, &key, &format!("{key}/{i}")));
                        settled.fetch_add(1, Ordering::Relaxed);
                        v
                    })
                    .collect();
                tx.send((key, verdicts)).unwrap();
            });
        }
        drop(tx);
        while settled.load(Ordering::Relaxed) < clients * each / 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        meanwhile();
        rx.iter().collect()
    })
}

/// Every record of every key written exactly once, in order, at the
/// offsets its verdict gave.
fn assert_written_once_in_order(
    cluster: &FakeCluster,
    topic: &str,
    partitions: i32,
    verdicts: &HashMap<String, Vec<Verdict>>,
) {
    let mut written: HashMap<String, Vec<(String, i32, i64)>> = HashMap::new();
    for p in 0..partitions {
        for r in cluster.records(topic, p) {
            let key = String::from_utf8(r.key.unwrap()).unwrap();
            let value = String::from_utf8(r.value.unwrap()).unwrap();
            assert_eq!(r.headers, [("color".to_string(), b"red".to_vec())]);
            written.entry(key).or_default().push((value, p, r.offset));
        }
    }
    for (key, verdicts) in verdicts {
        let mine = written.remove(key).unwrap_or_default();
        let values: Vec<&str> = mine.iter().map(|(v, _, _)| v.as_str()).collect();
        let expected: Vec<String> = (0..verdicts.len()).map(|i| format!("{key}/{i}")).collect();
        assert_eq!(values, expected, "{key}: each record once, in order");
        for ((_, p, offset), verdict) in mine.iter().zip(verdicts) {
            let d = verdict.as_ref().unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!((d.partition, d.offset), (*p, *offset), "{key}: acknowledged where it was written");
        }
    }
    assert!(written.is_empty(), "records nobody sent: {:?}", written.keys());
}

#[test]
fn one_request_per_broker_carries_every_partition_with_records() {
    let cluster = FakeCluster::start(1, &[("t", 12)]);
    // Slow answers let records of many partitions gather behind the first request.
    cluster.delay_responses(0, Duration::from_millis(30));
    let producer = Producer::start(config(&cluster, 1), Arc::new(Plain)).unwrap();
    let verdicts = publish(&producer, "t", 48, 5, || {});
    assert_written_once_in_order(&cluster, "t", 12, &verdicts);
    let widest = cluster.partitions_per_request().into_iter().max().unwrap();
    assert!(widest >= 8, "a request carried up to {widest} partitions of 12");
    assert!(
        cluster.produce_requests(0) < 48 * 5 / 4,
        "{} requests for 240 records",
        cluster.produce_requests(0)
    );
}

#[test]
fn a_pipeline_held_until_its_release_goes_in_one_request() {
    let cluster = FakeCluster::start(1, &[("t", 12)]);
    let config = config(&cluster, 5);
    let stats = config.stats.clone();
    let producer = Producer::start(config, Arc::new(Plain)).unwrap();
    // The metadata and the connection first.
    verdict(&send(&producer, "t", "first", "0")).unwrap();
    let before = cluster.produce_requests(0);
    let pipeline: Vec<_> =
        (0..16).map(|i| send_more(&producer, "t", &format!("key-{i}"), &i.to_string(), true)).collect();
    producer.release();
    for rx in &pipeline {
        verdict(rx).unwrap();
    }
    // One request for all sixteen, not one for the first and another for
    // those gathered after it.
    assert_eq!(cluster.produce_requests(0) - before, 1);
    assert!(cluster.partitions_per_request().into_iter().max().unwrap() >= 8);
    let [requests, batches, records, retries, bumps] = stats.read();
    assert_eq!((requests, records, retries, bumps), (2, 17, 0, 0));
    assert!(batches >= 9, "{batches} batches: the first record's, then one per partition of the sixteen");

    // A pipeline whose last record has nothing after it needs no release.
    let pipeline: Vec<_> =
        (0..16).map(|i| send_more(&producer, "t", &format!("key-{i}"), &i.to_string(), i < 15)).collect();
    for rx in &pipeline {
        verdict(rx).unwrap();
    }
    assert_eq!(cluster.produce_requests(0) - before, 2);

    // Held records whose release never comes (a client gone mid-pipeline)
    // still go: the sender looks every 100 ms.
    let held = send_more(&producer, "t", "orphan", "x", true);
    verdict(&held).unwrap();
}

#[test]
fn records_spread_over_brokers_go_to_each_partitions_leader() {
    let cluster = FakeCluster::start(3, &[("t", 6)]);
    let producer = Producer::start(config(&cluster, 5), Arc::new(Plain)).unwrap();
    let verdicts = publish(&producer, "t", 30, 10, || {});
    assert_written_once_in_order(&cluster, "t", 6, &verdicts);
    for node in 0..3 {
        assert!(cluster.produce_requests(node) > 0, "broker {node} led partitions and got none");
    }
}

#[test]
fn a_lost_response_is_sent_again_and_written_once() {
    let cluster = FakeCluster::start(1, &[("t", 4)]);
    let config = config(&cluster, 5);
    let stats = config.stats.clone();
    let producer = Producer::start(config, Arc::new(Plain)).unwrap();
    let verdicts = publish(&producer, "t", 20, 20, || cluster.write_but_drop_response(0, 3));
    assert_written_once_in_order(&cluster, "t", 4, &verdicts);
    let [requests, _, records, retries, _] = stats.read();
    assert!(retries >= 1, "{retries} batches counted as sent again");
    // Written, though a request on a connection that broke may not have reached the broker.
    assert!(requests as usize >= cluster.produce_requests(0), "{requests} requests written");
    assert!(records >= 400 + retries, "{records} records in requests for 400 and {retries} retried batches");
}

#[test]
fn a_leader_change_with_requests_in_flight_keeps_each_partitions_order() {
    let cluster = FakeCluster::start(2, &[("t", 4)]);
    cluster.delay_responses(0, Duration::from_millis(20));
    let producer = Producer::start(config(&cluster, 5), Arc::new(Plain)).unwrap();
    let verdicts = publish(&producer, "t", 24, 20, || {
        cluster.move_leader("t", 0, 1);
        cluster.move_leader("t", 2, 1);
    });
    assert_written_once_in_order(&cluster, "t", 4, &verdicts);
}

#[test]
fn a_partition_refused_for_a_while_waits_while_the_others_go_on() {
    let cluster = FakeCluster::start(1, &[("t", 3)]);
    let producer = Producer::start(config(&cluster, 5), Arc::new(Plain)).unwrap();
    // NOT_ENOUGH_REPLICAS, retriable.
    let verdicts = publish(&producer, "t", 15, 20, || {
        for p in 0..3 {
            cluster.fail_next("t", p, 19, 4);
        }
    });
    assert_written_once_in_order(&cluster, "t", 3, &verdicts);
}

#[test]
fn a_batch_refused_for_good_fails_alone_and_the_next_take_its_sequences() {
    let cluster = FakeCluster::start(1, &[("t", 1)]);
    let producer = Producer::start(config(&cluster, 5), Arc::new(Plain)).unwrap();
    assert!(verdict(&send(&producer, "t", "k", "first")).is_ok());
    // MESSAGE_TOO_LARGE: not retriable.
    cluster.fail_next("t", 0, 10, 1);
    let refused = verdict(&send(&producer, "t", "k", "refused"));
    assert!(
        matches!(refused, Err(PublishError::Rejected(ref m)) if m.0.contains("MessageTooLarge")),
        "{refused:?}"
    );
    let later: Vec<_> = (0..5).map(|i| send(&producer, "t", "k", &format!("later{i}"))).collect();
    for rx in &later {
        assert!(verdict(rx).is_ok());
    }
    let written: Vec<(String, i32)> = cluster
        .records("t", 0)
        .into_iter()
        .map(|r| (String::from_utf8(r.value.unwrap()).unwrap(), r.sequence))
        .collect();
    let expected: Vec<(String, i32)> = std::iter::once("first".to_string())
        .chain((0..5).map(|i| format!("later{i}")))
        .enumerate()
        .map(|(i, v)| (v, i as i32))
        .collect();
    assert_eq!(written, expected, "no gap where the refused batch was");
}

#[test]
fn lost_producer_state_bumps_the_epoch_and_nothing_is_lost() {
    let cluster = FakeCluster::start(1, &[("t", 2)]);
    cluster.on_unknown_producer(UnknownProducerAnswer::UnknownProducerId);
    let config = config(&cluster, 5);
    let stats = config.stats.clone();
    let producer = Producer::start(config, Arc::new(Plain)).unwrap();
    let verdicts = publish(&producer, "t", 10, 20, || {
        cluster.forget_producers("t", 0);
        cluster.forget_producers("t", 1);
    });
    assert_written_once_in_order(&cluster, "t", 2, &verdicts);
    let epochs: Vec<i16> = cluster.records("t", 0).iter().map(|r| r.epoch).collect();
    assert!(epochs.last() > epochs.first(), "the epoch was bumped: {epochs:?}");
    let bumps = stats.read()[4];
    assert!(bumps >= 1 && bumps as i16 >= epochs.last().unwrap() - epochs.first().unwrap(), "{bumps} bumps");
}

#[test]
fn a_broker_that_stays_down_times_records_out_and_one_that_returns_gets_them() {
    let cluster = FakeCluster::start(1, &[("t", 1)]);
    let mut config = config(&cluster, 5);
    config.timeout = Duration::from_millis(1500);
    let producer = Producer::start(config, Arc::new(Plain)).unwrap();
    assert!(verdict(&send(&producer, "t", "k", "before")).is_ok());
    cluster.stop_node(0);
    let lost = verdict(&send(&producer, "t", "k", "while down"));
    assert!(matches!(lost, Err(PublishError::Timeout { .. })), "{lost:?}");
    cluster.start_node(0);
    let back = send(&producer, "t", "k", "after");
    assert!(verdict(&back).is_ok());
    let values: Vec<String> =
        cluster.records("t", 0).into_iter().map(|r| String::from_utf8(r.value.unwrap()).unwrap()).collect();
    assert_eq!(values, ["before", "after"]);
}

#[test]
fn records_for_a_topic_that_does_not_exist_time_out() {
    let cluster = FakeCluster::start(1, &[("t", 1)]);
    let mut config = config(&cluster, 5);
    config.timeout = Duration::from_millis(800);
    let producer = Producer::start(config, Arc::new(Plain)).unwrap();
    let lost = verdict(&send(&producer, "nope", "k", "v"));
    assert!(matches!(lost, Err(PublishError::Timeout { partition: None, .. })), "{lost:?}");
    assert!(producer.flush(Duration::from_secs(1)), "nothing held after the timeout");
}

#[test]
fn a_request_unanswered_past_the_timeout_is_not_written_twice() {
    let cluster = FakeCluster::start(1, &[("t", 1)]);
    let mut config = config(&cluster, 5);
    config.timeout = Duration::from_millis(1000);
    let producer = Producer::start(config, Arc::new(Plain)).unwrap();
    assert!(verdict(&send(&producer, "t", "k", "first")).is_ok());
    // Longer than the timeout and its grace second: the connection is given
    // up with the request in flight, whose outcome is then unknown.
    cluster.delay_responses(0, Duration::from_millis(2500));
    let slow = verdict(&send(&producer, "t", "k", "slow"));
    assert!(matches!(slow, Err(PublishError::Timeout { .. })), "{slow:?}");
    cluster.delay_responses(0, Duration::ZERO);
    let after = send(&producer, "t", "k", "after");
    assert!(verdict(&after).is_ok());
    let values: Vec<String> =
        cluster.records("t", 0).into_iter().map(|r| String::from_utf8(r.value.unwrap()).unwrap()).collect();
    // "slow" may have been written (its answer was lost), but once at most,
    // and before "after".
    assert!(values == ["first", "after"] || values == ["first", "slow", "after"], "written: {values:?}");
}

#[test]
fn a_new_topics_partitions_not_led_yet_are_tried_again_until_they_are() {
    // A topic just created: the metadata names the leader before the
    // broker has made itself leader, so it answers NOT_LEADER_OR_FOLLOWER
    // for a while.
    let cluster = FakeCluster::start(1, &[("t", 8)]);
    for partition in 0..8 {
        cluster.fail_next("t", partition, 6, 200);
    }
    let producer = Producer::start(config(&cluster, 5), Arc::new(Plain)).unwrap();
    let verdicts = publish(&producer, "t", 10, 5, || {});
    assert_written_once_in_order(&cluster, "t", 8, &verdicts);
}

#[test]
fn many_partitions_each_refused_a_different_number_of_times_all_get_through() {
    // The bench's warm-up on a fresh 64-partition topic behind a relay once
    // timed out after one NOT_LEADER_OR_FOLLOWER: every partition refused
    // 1 to 7 times, answers a little late, requests carrying many
    // partitions in different states of retry at once.
    let cluster = FakeCluster::start(1, &[("t", 64)]);
    cluster.delay_responses(0, Duration::from_millis(1));
    for partition in 0..64 {
        cluster.fail_next("t", partition, 6, 1 + partition as usize % 7);
    }
    let producer = Producer::start(config(&cluster, 5), Arc::new(Plain)).unwrap();
    let verdicts = publish(&producer, "t", 10, 40, || {});
    assert_written_once_in_order(&cluster, "t", 64, &verdicts);
}

#[test]
fn requests_in_flight_follow_how_much_of_the_round_trip_is_wire() {
    let cluster = FakeCluster::start(1, &[("t", 1)]);
    let adapting = Config { adapt_in_flight: true, ..config(&cluster, 5) };
    let us = Duration::from_micros;
    let mut link = Link::new("b:9092".into());
    assert_eq!(link.in_flight_limit(&adapting), 5, "nothing measured yet");
    // Beside the broker: the quickest round trip 100 µs, the usual 300.
    link.answered(us(100), 1);
    for _ in 0..50 {
        link.answered(us(300), 1);
    }
    assert_eq!(link.in_flight_limit(&adapting), 1);
    // Through a network: the quickest 700 µs, the usual 900 (the wire
    // fits 3 times in the broker's 200) or 1,200 (once in 500).
    let mut far = Link::new("b:9092".into());
    far.answered(us(700), 1);
    for _ in 0..50 {
        far.answered(us(900), 1);
    }
    assert_eq!(far.in_flight_limit(&adapting), 4);
    assert_eq!(far.in_flight_limit(&Config { adapt_in_flight: true, ..config(&cluster, 2) }), 2);
    for _ in 0..50 {
        far.answered(us(1200), 1);
    }
    assert_eq!(far.in_flight_limit(&adapting), 2);
    // A queue at the broker longer than the wire: one at a time.
    for _ in 0..50 {
        far.answered(us(2000), 1);
    }
    assert_eq!(far.in_flight_limit(&adapting), 1);
    // Not adapting: always max_in_flight.
    assert_eq!(far.in_flight_limit(&config(&cluster, 5)), 5);
}

#[test]
fn with_one_request_at_a_time_the_next_waits_for_the_clients_just_answered() {
    let cluster = FakeCluster::start(1, &[("t", 1)]);
    let adapting = Config { adapt_in_flight: true, ..config(&cluster, 5) };
    let us = Duration::from_micros;
    // Beside the broker (one request at a time): the last answer settled
    // 20 records, and none has come since.
    let mut link = Link::new("b:9092".into());
    link.answered(us(100), 1);
    for _ in 0..50 {
        link.answered(us(300), 20);
    }
    assert_eq!(link.in_flight_limit(&adapting), 1);
    let pace = link.pace(&adapting);
    assert!(pace > us(200) && pace <= us(300), "waits up to a round trip: {pace:?}");
    // The sender sleeps on it: the 19 records after the answer do not
    // wake it, the 20th does, and then it sends at once.
    link.paced = true;
    link.since_answer = 19;
    assert!(!link.wants_wake(&adapting));
    assert!(!link.pace(&adapting).is_zero());
    link.since_answer = 20;
    assert!(link.wants_wake(&adapting));
    assert!(link.pace(&adapting).is_zero());
    // Fewer came, but a round trip has passed since the answer: it goes.
    link.since_answer = 3;
    link.answered_at = Instant::now() - us(300);
    assert!(link.pace(&adapting).is_zero());
    // A lone client: its next record is all the answer freed.
    link.answered(us(300), 1);
    assert!(!link.pace(&adapting).is_zero());
    link.since_answer = 1;
    assert!(link.pace(&adapting).is_zero());
    // Through a network (more than one request in flight) and when not
    // adapting, nothing waits with nothing in flight.
    let mut far = Link::new("b:9092".into());
    far.answered(us(700), 1);
    for _ in 0..50 {
        far.answered(us(900), 20);
    }
    assert!(far.in_flight_limit(&adapting) > 1);
    assert!(far.pace(&adapting).is_zero());
    link.answered(us(300), 20);
    assert!(link.pace(&config(&cluster, 5)).is_zero());
}
