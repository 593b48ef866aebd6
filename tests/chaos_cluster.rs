//! The long faults of a three-broker Apache Kafka cluster (replication 3,
//! `min.insync.replicas=2`, acks=all, idempotent producer), which only
//! `make chaos` runs (Cargo.toml: `test = false`; `make test` runs the fast
//! subset in `tests/chaos.rs`, the leader SIGKILL among it): a partition
//! leader frozen past the request timeout, a rolling restart of all three
//! brokers under publish and consume load, two brokers down (below the
//! minimum ISR), and queue mode's consumers on two databus processes
//! through a databus SIGKILL, a SIGKILL of the group's coordinator and a
//! graceful restart. Beside databus's publishers a bare librdkafka producer
//! writes to the same topic through the same fault, so each row shows the
//! stall the cluster itself imposes next to databus's. databus's counts are
//! asserted (nothing acknowledged lost or duplicated, no `+OK` below the
//! minimum ISR; in queue mode, every acknowledged entry handed out, every
//! entry handed out again after its XACK in an allowed class); the stalls
//! and the bare producer's counts are reported, not asserted: it is the
//! reference for what the cluster imposes, and librdkafka's idempotent
//! producer once wrote a duplicate through the rolling restart
//! (RELIABILITY.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use serde_json::Value;
use testkit::chaos::{await_both_acknowledge, serial, tally, BareLoad, Load, Outcome, Row, Tally};
use testkit::client::{ok, Client};
use testkit::daemon::{daemon_config, Daemon};
use testkit::database::TestDb;
use testkit::kafka::{kafka_tool, KafkaCluster};
use testkit::server::OnOwnBroker;
use testkit::services::{free_port, unique, TempDir};
use testkit::topics::{create_topic_on, read_topic_available, Record};

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
fn row(scenario: &'static str, s: &Setup, databus: &Outcome, bare: &Outcome, fault: &str) -> (Row, Tally) {
    let (ours, theirs) = s.records();
    let t = tally(&databus.acked, &ours);
    let b = tally(&bare.acked, &theirs);
    let row = Row {
        scenario,
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
        ..Row::from(&t)
    };
    (row, t)
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
    let (mut row, t) = row(
        "9. partition leader frozen (SIGSTOP 35 s) in a three-broker cluster, 6 publishers",
        &s,
        &databus,
        &bare,
        &format!("broker {leader} frozen 35 s"),
    );
    row.recover_ms = databus.first_ok_after(frozen_at).map(|r| r.duration_since(frozen_at).as_millis());
    row.record();
    t.assert_clean("acknowledged");
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
    let (mut row, t) = row(
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
    let (mut row, t) = row(
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
    assert!(databus.first_ok_after(back_at).is_some(), "no SET acknowledged after the brokers returned");
}

// ---------------------------------------------------------------------------
// Scenario 14: queue mode (SPEC §8) on two databus processes through a
// databus SIGKILL, a SIGKILL of the group's coordinator, and a graceful
// restart.

/// One databus process of the scenario: slot `A` or `B` and its start
/// (`A1` until the SIGKILL, `A2` after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Process {
    slot: char,
    start: usize,
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.slot, self.start)
    }
}

/// Where a slot listens (the same port across its restarts) and which
/// start of it runs now: a connection is labelled once its AUTH succeeded.
struct Slot {
    name: char,
    port: u16,
    start: std::sync::atomic::AtomicUsize,
}

impl Slot {
    fn now(&self) -> Process {
        Process { slot: self.name, start: self.start.load(Ordering::SeqCst) }
    }
}

/// An entry handed out by `XREADGROUP ... >`: its value, whether it is
/// poison (never acknowledged), by which process, when the read was sent
/// and when its reply came.
#[derive(Debug, Clone)]
struct Delivery {
    value: String,
    id: String,
    poison: bool,
    by: Process,
    sent: Instant,
    at: Instant,
}

/// An `XACK` that returned 1: by which process, when its reply came, and
/// when the read that handed the entry out was sent.
#[derive(Debug, Clone)]
struct Ack {
    value: String,
    by: Process,
    read_sent: Instant,
    at: Instant,
}

/// What the queue consumers saw, shared by their threads.
#[derive(Default)]
struct QueueLog {
    deliveries: Vec<Delivery>,
    acks: Vec<Ack>,
    /// Errors that made a consumer reconnect, by text (for the report).
    errors: BTreeMap<String, usize>,
}

/// A connection of the `redis` crate, authenticated, or `None` if the
/// process is down.
fn stream_connection(port: u16, auth: &str) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    con.set_write_timeout(Some(Duration::from_secs(15))).ok()?;
    redis::cmd("AUTH").arg(auth).query::<()>(&mut con).ok()?;
    Some(con)
}

/// Queue consumers, `per_slot` on each slot, each with a name of its own
/// that survives its reconnects: `XREADGROUP ... COUNT 10 BLOCK 500 ... >`,
/// then `XACK` of every entry but the poison ones, one by one (an entry
/// whose partition moved meanwhile counts 0). A consumer whose connection
/// fails reconnects (every 200 ms while its process is down) until stopped.
struct QueueConsumers {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<QueueLog>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl QueueConsumers {
    fn start(slots: &[Arc<Slot>], per_slot: usize, auth: &str, topic: &str, group: &str) -> QueueConsumers {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<QueueLog>> = Arc::default();
        let mut threads = Vec::new();
        for slot in slots {
            for k in 0..per_slot {
                let (stop, log, slot) = (stop.clone(), log.clone(), slot.clone());
                let (auth, topic, group) = (auth.to_owned(), topic.to_owned(), group.to_owned());
                let name = format!("{}{k}", slot.name.to_ascii_lowercase());
                threads.push(thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let Some(mut con) = stream_connection(slot.port, &auth) else {
                            thread::sleep(Duration::from_millis(200));
                            continue;
                        };
                        let by = slot.now();
                        if let Err(e) = consume(&mut con, by, &name, &topic, &group, &stop, &log) {
                            let text = e.to_string();
                            *log.lock().unwrap().errors.entry(text).or_default() += 1;
                            thread::sleep(Duration::from_millis(200));
                        }
                    }
                }));
            }
        }
        QueueConsumers { stop, log, threads }
    }

    /// When `by` first handed out an entry, waiting (bounded) for it.
    fn await_first_delivery(&self, by: Process, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some(d) = self.log.lock().unwrap().deliveries.iter().find(|d| d.by == by) {
                return d.at;
            }
            assert!(Instant::now() < deadline, "{by} handed out no entry within {within:?}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) until every one of `values` was handed out; how many were not.
    fn await_delivered(&self, values: &[&str], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let missing = {
                let log = self.log.lock().unwrap();
                let seen: HashSet<&str> = log.deliveries.iter().map(|d| d.value.as_str()).collect();
                values.iter().filter(|v| !seen.contains(*v)).count()
            };
            if missing == 0 || Instant::now() > deadline {
                return missing;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn finish(self) -> QueueLog {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("queue consumer thread");
        }
        Arc::try_unwrap(self.log).ok().expect("consumers stopped").into_inner().unwrap()
    }
}

/// One connection's reads and acknowledgements, until stopped or an error.
fn consume(
    con: &mut redis::Connection,
    by: Process,
    name: &str,
    topic: &str,
    group: &str,
    stop: &AtomicBool,
    log: &Mutex<QueueLog>,
) -> redis::RedisResult<()> {
    use redis::streams::{StreamReadOptions, StreamReadReply};
    use redis::Commands;
    while !stop.load(Ordering::SeqCst) {
        let opts = StreamReadOptions::default().group(group, name).count(10).block(500);
        let sent = Instant::now();
        let reply: Option<StreamReadReply> = con.xread_options(&[topic], &[">"], &opts)?;
        let at = Instant::now();
        let entries: Vec<Delivery> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|e| Delivery {
                value: e.get::<String>("value").unwrap_or_default(),
                poison: e.get::<String>("poison").is_some(),
                id: e.id,
                by,
                sent,
                at,
            })
            .collect();
        log.lock().unwrap().deliveries.extend(entries.iter().cloned());
        for e in entries.iter().filter(|e| !e.poison) {
            let n: i64 = con.xack(topic, group, &[&e.id])?;
            if n == 1 {
                let ack = Ack { value: e.value.clone(), by, read_sent: sent, at: Instant::now() };
                log.lock().unwrap().acks.push(ack);
            }
        }
    }
    Ok(())
}

/// An entry whose `XADD` answered an ID.
struct Published {
    value: String,
    poison: bool,
}

/// Most entries scenario 14 publishes, one every `PACE`; every
/// `POISON_EVERY`-th is poison.
const MAX_ENTRIES: usize = 4000;
const PACE: Duration = Duration::from_millis(25);
const POISON_EVERY: usize = 97;

/// One publisher: `XADD <topic> * value q-<n>` (and `poison 1` on every
/// `POISON_EVERY`-th) every `PACE`, up to `MAX_ENTRIES` or until stopped,
/// none while paused, through slot A or, while A is down, B. An XADD that
/// got an error is not acknowledged; the next one has a new value.
fn publish_entries(
    slots: Vec<Arc<Slot>>,
    auth: String,
    topic: String,
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<Published>> {
    use redis::Commands;
    thread::spawn(move || {
        let mut acked = Vec::new();
        let mut con: Option<redis::Connection> = None;
        let mut target = 0;
        for n in 1..=MAX_ENTRIES {
            while pause.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(50));
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if con.is_none() {
                con = stream_connection(slots[target].port, &auth);
            }
            let Some(c) = con.as_mut() else {
                target = (target + 1) % slots.len();
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            let value = format!("q-{n}");
            let poison = n % POISON_EVERY == 0;
            let mut fields = vec![("value", value.clone())];
            if poison {
                fields.push(("poison", "1".to_owned()));
            }
            let reply: redis::RedisResult<String> = c.xadd(&topic, "*", &fields);
            match reply {
                Ok(_) => acked.push(Published { value, poison }),
                Err(_) => {
                    con = None;
                    target = (target + 1) % slots.len();
                }
            }
            thread::sleep(PACE);
        }
        acked
    })
}

/// The broker id that coordinates `group`, from Kafka's own
/// `ConsumerGroupCommand --describe --state` (its `COORDINATOR (ID)` column).
fn group_coordinator(brokers: &str, group: &str) -> i32 {
    let out = kafka_tool(
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        &["--bootstrap-server", brokers, "--describe", "--group", group, "--state"],
    );
    out.lines()
        .find(|l| l.trim_start().starts_with(group))
        .and_then(|l| {
            let open = l.find('(')?;
            let close = open + l[open..].find(')')?;
            l[open + 1..close].parse().ok()
        })
        .unwrap_or_else(|| panic!("no coordinator of {group} in:\n{out}"))
}

/// Why an entry was handed out again after an `XACK` of it returned 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Redelivery {
    /// Acknowledged on the SIGKILLed process in its last 2 s: its periodic
    /// commit (every 100 ms) had not carried it yet.
    KillNine,
    /// Acknowledged on a process while a rebalance took partitions from it.
    Rebalance,
    /// Acknowledged while the group's coordinator was down (commits fail),
    /// or in the second before it went (the 100 ms commit that would carry
    /// it was due or unanswered when the broker died), handed out again
    /// before the group settled.
    Coordinator,
    /// Acknowledged after the visibility timeout had already handed the
    /// entry to another consumer of the same process (Redis's semantics:
    /// the first XACK counts).
    Visibility,
    /// Acknowledged on the gracefully stopped process, handed out again
    /// after its stop: SPEC §8 says never.
    Graceful,
    Unclassified,
}

/// The fault windows a redelivery is classified by.
struct Windows {
    /// The SIGKILLed process and when.
    killed: (Process, Instant),
    /// (the process partitions were taken from, from, to).
    rebalances: Vec<(Process, Instant, Instant)>,
    /// From the broker's SIGKILL until it is back, in sync, and the group settled.
    coordinator: (Instant, Instant),
    /// The gracefully stopped process and when it got SIGTERM.
    stopped: (Process, Instant),
    visibility: Duration,
}

impl Windows {
    fn classify(&self, ack: &Ack, again: &Delivery) -> Redelivery {
        let within = |at: Instant, from: Instant, to: Instant| at >= from && at <= to;
        let (killed, kill_at) = self.killed;
        let (stopped, term_at) = self.stopped;
        let (down_at, settled_at) = self.coordinator;
        if ack.by == killed && within(ack.at, kill_at - Duration::from_secs(2), kill_at) {
            Redelivery::KillNine
        } else if ack.by == stopped && again.at > term_at {
            Redelivery::Graceful
        } else if within(ack.at, down_at - Duration::from_secs(1), settled_at)
            && within(again.at, down_at, settled_at)
        {
            Redelivery::Coordinator
        } else if self.rebalances.iter().any(|&(from, t0, t1)| ack.by == from && within(ack.at, t0, t1)) {
            Redelivery::Rebalance
        } else if again.by == ack.by && again.sent < ack.at && ack.at - ack.read_sent >= self.visibility {
            Redelivery::Visibility
        } else {
            Redelivery::Unclassified
        }
    }
}

/// Every delivery that came after an `XACK` of its entry returned 1, with
/// the latest such acknowledgement before it.
fn redeliveries(log: &QueueLog) -> Vec<(&Ack, &Delivery)> {
    let mut acks: HashMap<&str, Vec<&Ack>> = HashMap::new();
    for a in &log.acks {
        acks.entry(a.value.as_str()).or_default().push(a);
    }
    log.deliveries
        .iter()
        .filter_map(|d| {
            let before = acks.get(d.value.as_str())?.iter().filter(|a| a.at < d.at).max_by_key(|a| a.at)?;
            Some((*before, d))
        })
        .collect()
}

/// Scenario 14: queue consumers (3 on each of two databus processes, A and
/// B, one group, 6 partitions, `max_deliveries = 3`, visibility timeout
/// 2 s) under a steady XADD load through: A SIGKILLed and restarted; the
/// broker that coordinates the group (and leads partitions of the topic)
/// SIGKILLed for 15 s (publishing paused from 2 s into it until B's
/// restart); B stopped with SIGTERM and started again. Every
/// acknowledged XADD entry is handed out (the poison ones, never
/// acknowledged, are in the dead-letter topic instead); every entry handed
/// out again after its XACK returned 1 is in a class SPEC §8 allows (kill -9
/// within the commit interval, a rebalance, the coordinator's outage), none
/// after the graceful stop.
#[test]
fn queue_consumers_through_databus_and_coordinator_kills_and_a_graceful_restart() {
    let _serial = serial();
    let mut cluster = KafkaCluster::start();
    let brokers = cluster.brokers();
    let db = TestDb::new("chaos_queue");
    let topic = unique("t_chaos_queue");
    let group = unique("g_chaos_queue");
    let dlq = format!("{topic}.dlq");
    db.add_app(1, "key1", "secret1", "cluster1");
    db.add_grant(1, &group, 3, &topic);
    create_topic_on(&brokers, &topic, 6);
    create_topic_on(&brokers, &dlq, 3);
    cluster.await_in_sync(&topic);
    let visibility = Duration::from_secs(2);
    let extra = format!(
        "[producer]\ntimeout_ms = 30000\n[subscriber]\nsession_timeout_ms = 6000\n\
         [queue]\nvisibility_timeout_ms = {}\nmax_deliveries = 3\n",
        visibility.as_millis()
    );
    let dir = TempDir::new("chaos_queue");
    let slots: Vec<Arc<Slot>> = ['A', 'B']
        .into_iter()
        .map(|name| Arc::new(Slot { name, port: free_port(), start: 1.into() }))
        .collect();
    let start = |slot: &Slot| {
        let config = daemon_config(slot.port, &db.url(), &brokers, &extra);
        let path = dir.write(&format!("databus-{}.toml", slot.name), &config);
        Daemon::start(&["--conf", path.to_str().unwrap()], slot.port)
    };
    let (mut a, mut b) = (start(&slots[0]), start(&slots[1]));
    let mut logs: Vec<(Process, String)> = Vec::new();
    let auth = |role: &str| format!("key1:secret1@{group}/topic={topic}&role={role}&offset=old");

    let t0 = Instant::now();
    let consumers = QueueConsumers::start(&slots, 3, &auth("sub"), &topic, &group);
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let pause_publishing = Arc::new(AtomicBool::new(false));
    let publisher = publish_entries(
        slots.clone(),
        auth("pub"),
        topic.clone(),
        stop_publishing.clone(),
        pause_publishing.clone(),
    );
    let (a1, b1) = (slots[0].now(), slots[1].now());
    consumers.await_first_delivery(a1, Duration::from_secs(60));
    consumers.await_first_delivery(b1, Duration::from_secs(60));
    let coordinator = group_coordinator(&brokers, &group);
    let led: Vec<i32> = (0..6).filter(|&p| cluster.leader(&topic, p) == coordinator).collect();
    thread::sleep(Duration::from_secs(3));

    // 1. A SIGKILLed (no final commit, no leaving the group), back 2 s later.
    let kill_at = Instant::now();
    a.signal("KILL");
    a.wait_exit();
    logs.push((a1, a.log()));
    thread::sleep(Duration::from_secs(2));
    slots[0].start.store(2, Ordering::SeqCst);
    let a2 = slots[0].now();
    a = start(&slots[0]);
    let a2_serves = consumers.await_first_delivery(a2, Duration::from_secs(60));
    let a_settled = a2_serves + Duration::from_secs(3);
    thread::sleep(Duration::from_secs(3));

    // 2. The coordinator SIGKILLed for 15 s. The commits of what is
    // acknowledged meanwhile fail (the members' sessions time out before
    // another broker coordinates). The publisher pauses 2 s into the outage
    // until B2 serves: with no new acknowledgement a failed commit stays a
    // partition's last before the graceful stop, which must retry it
    // (SPEC §8), not leave it to be superseded by the next one.
    let down_at = Instant::now();
    cluster.node(coordinator).kill();
    thread::sleep(Duration::from_secs(2));
    pause_publishing.store(true, Ordering::SeqCst);
    thread::sleep(Duration::from_secs(13));
    cluster.restart(coordinator);
    cluster.await_in_sync(&topic);
    let broker_back = Instant::now();
    let coordinator_settled = broker_back + Duration::from_secs(5);
    thread::sleep(Duration::from_secs(5));

    // 3. B stopped gracefully (SIGTERM: commit everything, leave), started again.
    let term_at = Instant::now();
    b.signal("TERM");
    let status = b.wait_exit();
    let b_exited = Instant::now();
    logs.push((b1, b.log()));
    thread::sleep(Duration::from_secs(1));
    slots[1].start.store(2, Ordering::SeqCst);
    let b2 = slots[1].now();
    let b_restart = Instant::now();
    b = start(&slots[1]);
    pause_publishing.store(false, Ordering::SeqCst);
    let b2_serves = consumers.await_first_delivery(b2, Duration::from_secs(60));
    thread::sleep(Duration::from_secs(5));
    stop_publishing.store(true, Ordering::SeqCst);
    let published = publisher.join().expect("publisher thread");
    let load_s = t0.elapsed().as_secs();

    // Drain: every acknowledged entry handed out at least once, every
    // poison one in the dead-letter topic (3 deliveries, 2 s apart).
    let work: Vec<&str> = published.iter().filter(|p| !p.poison).map(|p| p.value.as_str()).collect();
    let poison: Vec<&str> = published.iter().filter(|p| p.poison).map(|p| p.value.as_str()).collect();
    let undelivered = consumers.await_delivered(&work, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead_missing: Vec<&str> = loop {
        let dead: HashSet<Vec<u8>> = read_topic_available(&brokers, &dlq)
            .into_iter()
            .filter(|r| r.headers.contains(&("databus-dead-letter-topic".into(), topic.as_bytes().to_vec())))
            .map(|r| r.value)
            .collect();
        let missing: Vec<&str> = poison.iter().copied().filter(|v| !dead.contains(v.as_bytes())).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        thread::sleep(Duration::from_secs(2));
    };
    // Late redeliveries have their chance to show.
    thread::sleep(Duration::from_secs(3));
    let log = consumers.finish();
    logs.push((a2, a.log()));
    logs.push((b2, b.log()));
    let in_kafka = read_topic_available(&brokers, &topic);
    let acked_values: Vec<String> = published.iter().map(|p| p.value.clone()).collect();
    let t = tally(&acked_values, &in_kafka);

    let windows = Windows {
        killed: (a1, kill_at),
        rebalances: vec![
            // A's partitions went to B when A1's session expired, then
            // partly back when A2 joined.
            (b1, kill_at, a_settled),
            // B1 left: A took B's partitions (an eager rebalance revokes all).
            (a2, term_at - Duration::from_secs(3), b_exited + Duration::from_secs(3)),
            // B2 joined: partitions moved from A.
            (a2, b_restart - Duration::from_secs(1), b2_serves + Duration::from_secs(3)),
        ],
        coordinator: (down_at, coordinator_settled),
        stopped: (b1, term_at),
        visibility,
    };
    let again = redeliveries(&log);
    let mut classes: BTreeMap<Redelivery, Vec<(&Ack, &Delivery)>> = BTreeMap::new();
    for (ack, d) in &again {
        classes.entry(windows.classify(ack, d)).or_default().push((ack, d));
    }
    let count = |c: Redelivery| classes.get(&c).map_or(0, Vec::len);
    let commit_failures: Vec<String> = logs
        .iter()
        .map(|(p, text)| {
            let (ours, librdkafka) =
                (text.matches("commit failed").count(), text.matches("COMMITFAIL").count());
            format!("{p} {ours} (librdkafka {librdkafka})")
        })
        .collect();
    let at = |i: Instant| format!("{:.1}s", i.saturating_duration_since(t0).as_secs_f64());
    eprintln!(
        "timeline: A killed {}, A2 serves {}, broker {coordinator} killed {}, back {}, B TERM {}, B exited {} \
         ({status}), B2 serves {}; load {load_s} s",
        at(kill_at),
        at(a2_serves),
        at(down_at),
        at(broker_back),
        at(term_at),
        at(b_exited),
        at(b2_serves)
    );
    eprintln!("consumer errors: {:#?}", log.errors);
    for (p, text) in &logs {
        let notable: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("commit"))
            .collect();
        eprintln!("{p}: {} log lines, {} notable; the last of them:", text.lines().count(), notable.len());
        for l in &notable[notable.len().saturating_sub(10)..] {
            eprintln!("  {l}");
        }
    }
    for (class, list) in &classes {
        eprintln!("{class:?}: {}", list.len());
        for (ack, d) in list.iter().take(10) {
            eprintln!(
                "  {} ({}): acknowledged on {} at {}, handed out again on {} at {}",
                d.value,
                d.id,
                ack.by,
                at(ack.at),
                d.by,
                at(d.at)
            );
        }
    }
    let mut row = Row {
        scenario:
            "14. queue consumers on two databus processes: databus SIGKILL, coordinator SIGKILL, graceful \
                   restart",
        acknowledged: Some(published.len()),
        in_kafka: Some(in_kafka.len()),
        lost: Some(undelivered + dead_missing.len()),
        duplicated: Some(t.duplicated),
        redelivered: Some(again.len()),
        note: format!(
            "3 XREADGROUP consumers per process; {} poison entries ({} not in {topic}.dlq), {undelivered} \
             acknowledged entries never handed out; broker {coordinator} (the coordinator, leading \
             partitions {led:?}) down 15 s, publishing paused from 2 s into it until B restarted; handed out again after XACK returned 1: kill -9 {}, rebalance \
             {}, coordinator {}, visibility timeout {}, after the graceful stop {}, unclassified {}; \
             commit failures logged: {}",
            poison.len(),
            dead_missing.len(),
            count(Redelivery::KillNine),
            count(Redelivery::Rebalance),
            count(Redelivery::Coordinator),
            count(Redelivery::Visibility),
            count(Redelivery::Graceful),
            count(Redelivery::Unclassified),
            commit_failures.join(", "),
        ),
        ..Row::default()
    };
    row.recover_ms = Some(a2_serves.duration_since(kill_at).as_millis());
    row.record();
    assert!(status.success(), "B's graceful stop exited with {status}");
    assert_eq!(t.lost, 0, "acknowledged XADD entries not in Kafka");
    assert_eq!(undelivered, 0, "acknowledged XADD entries never handed out");
    assert!(dead_missing.is_empty(), "poison entries not in {dlq}: {dead_missing:?}");
    assert_eq!(
        count(Redelivery::Graceful),
        0,
        "entries acknowledged on B handed out again after its graceful stop"
    );
    assert_eq!(
        count(Redelivery::Unclassified),
        0,
        "entries handed out again after XACK, in no allowed class"
    );
}
