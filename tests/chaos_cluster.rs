//! The long faults of a three-broker Apache Kafka cluster (replication 3,
//! `min.insync.replicas=2`, acks=all, idempotent producer), which only
//! `make chaos` runs (Cargo.toml: `test = false`; `make test` runs the fast
//! subset in `tests/chaos.rs`, the leader SIGKILL among it): a partition
//! leader frozen past the request timeout, a rolling restart of all three
//! brokers under publish and consume load, and two brokers down (below the
//! minimum ISR). Beside databus's publishers a bare librdkafka producer
//! writes to the same topic through the same fault, so each row shows the
//! stall the cluster itself imposes next to databus's. Counts are asserted
//! (nothing acknowledged lost or duplicated, no `+OK` below the minimum
//! ISR); the stalls are reported, not asserted (RELIABILITY.md).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use serde_json::Value;
use support::chaos::*;
use support::*;

/// databus's produce timeout here, and the bare producer's message timeout.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a scenario waits, once the fault is over, for both databus and
/// the bare producer to be acknowledged again.
const RECOVERY: Duration = Duration::from_secs(120);

/// A cluster, a 3-partition topic granted pub and sub, databus on it with
/// `overrides`, and a bare producer's load beside databus's `conns`
/// publishers (depth 1).
struct Setup {
    cluster: KafkaCluster,
    f: OnOwnBroker,
}

impl Setup {
    fn start(name: &str, overrides: &str) -> Setup {
        let cluster = KafkaCluster::start();
        let f = OnOwnBroker::start(name, &cluster.brokers(), 3, 3, overrides);
        cluster.await_in_sync(&f.topic);
        Setup { cluster, f }
    }

    fn loads(&self, conns: usize) -> (Load, BareLoad) {
        let databus =
            Load::start(self.f.server.addr, &self.f.auth("pub"), conns, 1, Duration::from_secs(120));
        let bare = BareLoad::start(&self.cluster.brokers(), &self.f.topic, conns, TIMEOUT);
        (databus, bare)
    }

    /// The topic's records, split into databus's and the bare producer's.
    fn records(&self) -> (Vec<Record>, Vec<Record>) {
        read_topic_available(&self.cluster.brokers(), &self.f.topic)
            .into_iter()
            .partition(|r| !r.value.starts_with(b"bare"))
    }
}

/// The row of one scenario, from both loads' outcomes and the topic.
fn row(
    scenario: &'static str,
    s: &Setup,
    databus: &Outcome,
    bare: &Outcome,
    fault: &str,
) -> (Row, Tally, Tally) {
    let (ours, theirs) = s.records();
    let t = tally(&databus.acked, &ours);
    let b = tally(&bare.acked, &theirs);
    let row = Row {
        scenario,
        acknowledged: Some(t.acknowledged),
        in_kafka: Some(t.in_kafka),
        lost: Some(t.lost),
        duplicated: Some(t.duplicated),
        unacknowledged: Some(t.unacknowledged),
        out_of_order: Some(t.out_of_order),
        note: format!(
            "{fault}; longest stall databus {} ms, bare librdkafka {} ms; {} SETs got errors, the bare \
             producer {} ({} acknowledged, {} lost, {} duplicated)",
            databus.longest_stall().as_millis(),
            bare.longest_stall().as_millis(),
            databus.failed.len(),
            bare.failed.len(),
            b.acknowledged,
            b.lost,
            b.duplicated,
        ),
        ..Row::default()
    };
    (row, t, b)
}

/// Scenario 9: the leader of partition 0 frozen (SIGSTOP) for 35 s, past
/// librdkafka's 30 s request timeout, under publish load, then thawed
/// (SIGCONT). The cluster fences it after `broker.session.timeout.ms` (9 s)
/// and elects new leaders; requests stuck at the frozen broker time out.
#[test]
fn frozen_leader_in_a_three_broker_cluster_loses_nothing() {
    let _serial = serial();
    let mut s = Setup::start("chaos_frozen_leader", "[producer]\ntimeout_ms = 30000\n");
    let leader = s.cluster.leader(&s.f.topic, 0);
    let (databus, bare) = s.loads(6);
    thread::sleep(Duration::from_secs(3));
    s.cluster.node(leader).signal("STOP");
    let frozen_at = Instant::now();
    thread::sleep(Duration::from_secs(35));
    s.cluster.node(leader).signal("CONT");
    await_both_acknowledge(&databus, &bare, RECOVERY);
    thread::sleep(Duration::from_secs(2));
    let (databus, bare) = (databus.finish(), bare.finish());
    let (mut row, t, b) = row(
        "9. partition leader frozen (SIGSTOP 35 s) in a three-broker cluster, 6 publishers",
        &s,
        &databus,
        &bare,
        &format!("broker {leader} frozen 35 s"),
    );
    row.recover_ms = databus.first_ok_after(frozen_at).map(|r| r.duration_since(frozen_at).as_millis());
    row.record();
    t.assert_clean("acknowledged");
    b.assert_clean("the bare producer's");
    assert!(databus.first_ok_after(frozen_at).is_some(), "no SET acknowledged after the freeze");
    for (_, e) in &databus.failed {
        assert!(e.starts_with("TRYAGAIN publish failed: "), "{e}");
    }
}

/// What one subscriber connection handed out, in order: (partition, offset, value).
type Session = Vec<(i64, i64, String)>;

/// Subscribers of one group through databus: each pulls (MGET) and commits
/// what it got, reconnecting when its connection fails, until stopped; each
/// connection's deliveries are one session. `seen` holds every value
/// delivered so far.
struct Consumers {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashSet<String>>>,
    threads: Vec<thread::JoinHandle<Vec<Session>>>,
}

impl Consumers {
    fn start(addr: SocketAddr, auth: &str, n: usize) -> Consumers {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
        let threads = (0..n)
            .map(|_| {
                let (stop, seen, auth) = (stop.clone(), seen.clone(), auth.to_owned());
                thread::spawn(move || {
                    let mut sessions = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let mut c = Client::connect(addr);
                        if c.call(&["AUTH", &auth]) != ok() {
                            thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                        let mut session = Session::new();
                        while !stop.load(Ordering::SeqCst) {
                            let Frame::Array(batch) = c.call(&["MGET"]) else { break };
                            let mut last = BTreeMap::new();
                            for item in batch {
                                let Frame::Bulk(raw) = item else { panic!("MGET element {item:?}") };
                                let m: Value = serde_json::from_slice(&raw).unwrap();
                                let (p, o) =
                                    (m["partition"].as_i64().unwrap(), m["offset"].as_i64().unwrap());
                                let value = m["value"].as_str().unwrap().to_owned();
                                seen.lock().unwrap().insert(value.clone());
                                session.push((p, o, value));
                                last.insert(p, o);
                            }
                            let committed = last
                                .iter()
                                .all(|(p, o)| c.call(&["SET", &p.to_string(), &o.to_string()]) == ok());
                            if !committed {
                                break;
                            }
                        }
                        sessions.push(session);
                    }
                    sessions
                })
            })
            .collect();
        Consumers { stop, seen, threads }
    }

    /// Waits (bounded) until every one of `values` was delivered; how many were not.
    fn await_all(&self, values: &[String], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let missing = {
                let seen = self.seen.lock().unwrap();
                values.iter().filter(|v| !seen.contains(*v)).count()
            };
            if missing == 0 || Instant::now() > deadline {
                return missing;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn finish(self) -> Vec<Session> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads.into_iter().flat_map(|t| t.join().expect("subscriber thread")).collect()
    }
}

/// Scenario 10: every broker restarted in turn (SIGTERM, a controlled
/// shutdown; back; all replicas in sync again before the next) while 6
/// connections publish and 2 subscribers of one group consume and commit.
/// Nothing acknowledged is lost or duplicated in the log; every acknowledged
/// record reaches a subscriber; within a session no partition goes back.
#[test]
fn rolling_restart_under_publish_and_consume_loses_nothing() {
    let _serial = serial();
    let mut s = Setup::start("chaos_rolling", "[producer]\ntimeout_ms = 30000\n");
    let consumers = Consumers::start(s.f.server.addr, &format!("{}&offset=old", s.f.auth("sub")), 2);
    let (databus, bare) = s.loads(6);
    thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    for id in 1..=3 {
        s.cluster.node(id).terminate();
        s.cluster.restart(id);
        s.cluster.await_in_sync(&s.f.topic);
    }
    let rolled = started.elapsed();
    await_both_acknowledge(&databus, &bare, RECOVERY);
    thread::sleep(Duration::from_secs(2));
    let (databus, bare) = (databus.finish(), bare.finish());
    let unseen = consumers.await_all(&databus.acked, Duration::from_secs(60));
    let sessions = consumers.finish();
    let deliveries: usize = sessions.iter().map(Vec::len).sum();
    let distinct: HashSet<&str> = sessions.iter().flatten().map(|(_, _, v)| v.as_str()).collect();
    let (mut row, t, b) = row(
        "10. rolling restart (SIGTERM) of all three brokers, 6 publishers and 2 subscribers",
        &s,
        &databus,
        &bare,
        &format!(
            "three restarts took {} s; {} subscriber sessions, {unseen} acknowledged records never delivered",
            rolled.as_secs(),
            sessions.len()
        ),
    );
    row.redelivered = Some(deliveries - distinct.len());
    row.record();
    t.assert_clean("acknowledged");
    b.assert_clean("the bare producer's");
    assert_eq!(unseen, 0, "acknowledged records no subscriber got");
    assert_monotonic(&sessions);
}

/// Within one session a partition's offsets only go up (MGET never hands
/// out a record twice on one connection, nor goes back).
fn assert_monotonic(sessions: &[Session]) {
    for (i, session) in sessions.iter().enumerate() {
        let mut last: HashMap<i64, i64> = HashMap::new();
        for &(p, o, _) in session {
            if let Some(&before) = last.get(&p) {
                assert!(o > before, "session {i}: partition {p} went from offset {before} to {o}");
            }
            last.insert(p, o);
        }
    }
}

/// Scenario 11: two of the three brokers SIGKILLed for 15 s (below
/// `min.insync.replicas=2`) under publish load: no SET is acknowledged while
/// they are down; each SET answers a `TRYAGAIN publish failed: ...` that
/// names its partition and why it cannot be acknowledged (its leader or its
/// in-sync replicas on the brokers that are down: two of three combined
/// nodes down leave the controllers without a quorum, so the ISR never
/// shrinks); SETs are acknowledged again once they are back.
#[test]
fn below_min_isr_no_set_is_acknowledged_and_publishing_resumes() {
    let _serial = serial();
    let mut s = Setup::start("chaos_min_isr", "[producer]\ntimeout_ms = 5000\n");
    let keep = s.cluster.leader(&s.f.topic, 0);
    let down: Vec<i32> = (1..=3).filter(|&id| id != keep).collect();
    let (databus, bare) = s.loads(6);
    thread::sleep(Duration::from_secs(3));
    for &id in &down {
        s.cluster.node(id).kill();
    }
    let killed_at = Instant::now();
    thread::sleep(Duration::from_secs(15));
    for &id in &down {
        s.cluster.restart(id);
    }
    let back_at = Instant::now();
    s.cluster.await_in_sync(&s.f.topic);
    await_both_acknowledge(&databus, &bare, RECOVERY);
    thread::sleep(Duration::from_secs(2));
    let (databus, bare) = (databus.finish(), bare.finish());
    // A record replicated just before the kill may still be acknowledged
    // just after it.
    let grace = killed_at + Duration::from_secs(1);
    let acked_while_down = databus.acked_at.iter().filter(|&&at| at > grace && at < back_at).count();
    let bare_while_down = bare.acked_at.iter().filter(|&&at| at > grace && at < back_at).count();
    let causes: HashSet<String> = databus.failed.iter().map(|(_, e)| e.clone()).collect();
    let (mut row, t, b) = row(
        "11. two of three brokers down (below min.insync.replicas) 15 s, 6 publishers",
        &s,
        &databus,
        &bare,
        &format!(
            "brokers {down:?} SIGKILLed; acknowledged while down: databus {acked_while_down}, bare \
             {bare_while_down}"
        ),
    );
    row.recover_ms = databus.first_ok_after(back_at).map(|r| r.duration_since(back_at).as_millis());
    row.record();
    eprintln!("errors while below the minimum ISR: {causes:#?}");
    assert_eq!(acked_while_down, 0, "SETs acknowledged below the minimum ISR");
    assert!(!databus.failed.is_empty(), "no SET failed below the minimum ISR");
    let named = |e: &str| {
        let brokers = down.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ");
        e.contains(&format!("of topic '{}': ", s.f.topic))
            && (e.contains(&format!("its in-sync replicas on brokers {brokers} are unreachable"))
                || down.iter().any(|b| e.contains(&format!("its leader, broker {b}, is unreachable"))))
    };
    // Answered while the brokers were down (those answered after they came
    // back, while the cluster recovers, may say less).
    let while_down: Vec<&str> = databus
        .failed
        .iter()
        .zip(&databus.failed_at)
        .filter(|(_, &at)| at < back_at)
        .map(|((_, e), _)| e.as_str())
        .collect();
    eprintln!("{} of {} errors answered while the brokers were down", while_down.len(), databus.failed.len());
    for e in &causes {
        assert!(e.starts_with("TRYAGAIN publish failed: "), "{e}");
    }
    for e in &while_down {
        assert!(named(e), "does not name the cause: {e}");
    }
    t.assert_clean("acknowledged");
    b.assert_clean("the bare producer's");
    assert!(databus.first_ok_after(back_at).is_some(), "no SET acknowledged after the brokers returned");
}
