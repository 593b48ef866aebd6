//! Faults with numbers (`make chaos`; `make test` runs them too): real load
//! through real faults, each scenario asserting counts — acknowledged, in
//! Kafka, lost, duplicated, redelivered — never a speed. Each appends its
//! row to the results file that `make chaos` prints (RELIABILITY.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Offset;
use testkit::chaos::{await_both_acknowledge, metric, serial, tally, BareLoad, Load, Relay, Row};
use testkit::client::{cmd_bytes, mget_records, ok, Client};
use testkit::config::Config;
use testkit::daemon::{broker_list, daemon_config, Daemon};
use testkit::database::TestDb;
use testkit::kafka::{KafkaCluster, OwnBroker};
use testkit::server::{test_config, OnOwnBroker, TestServer};
use testkit::services::{brokers, free_port, mysql_url, unique, TempDir};
use testkit::stores::{GrantStore, RedisDb};
use testkit::topics::{
    committed, committed_with, create_topic, create_topic_on, read_topic, read_topic_available,
    read_topic_on, Record,
};

/// Scenario 7: a subscriber can tell "no new records" (an empty array) from
/// "Kafka is unreachable" (TRYAGAIN) and its connection survives the outage.
#[test]
fn mget_tells_an_unreachable_cluster_from_an_empty_topic() {
    let _serial = serial();
    let mut broker = OwnBroker::start();
    let f = OnOwnBroker::start("chaos_mget", &broker.addr(), 1, 3, "[subscriber]\nwait_timeout_ms = 1000\n");
    let mut sub = f.server.connect();
    assert_eq!(sub.call(&["AUTH", &f.auth("sub")]), ok());
    assert_eq!(sub.call(&["MGET"]), Frame::Array(Vec::new()), "an empty topic answers an empty array");

    broker.stop();
    let down_at = Instant::now();
    // The first wait may end before librdkafka notices; after that every
    // MGET must say why it has nothing, for the whole outage: librdkafka
    // reports a repeating connection failure once every 30 s at most, so
    // the outage lasts longer than that.
    let (mut empty, mut errors) = (0, 0);
    while down_at.elapsed() < Duration::from_secs(40) {
        match sub.call(&["MGET"]) {
            Frame::Array(a) if a.is_empty() => empty += 1,
            Frame::Error(e) => {
                assert!(e.starts_with("TRYAGAIN cluster 'own' is unreachable: "), "{e}");
                errors += 1;
            }
            other => panic!("records with the broker down: {other:?}"),
        }
    }
    assert!(errors >= 10, "only {errors} MGETs said the cluster is unreachable in 40 s ({empty} empty)");
    assert!(empty <= 1, "{empty} empty answers with the broker down 40 s ({errors} TRYAGAIN)");
    assert_eq!(sub.call(&["PING"]), Frame::Simple("PONG".into()), "the connection survives");

    broker.restart();
    let back_at = Instant::now();
    let deadline = back_at + Duration::from_secs(60);
    loop {
        match sub.call(&["MGET"]) {
            Frame::Array(_) => break,
            Frame::Error(e) if e.starts_with("TRYAGAIN") => {}
            other => panic!("unexpected reply after the broker returned: {other:?}"),
        }
        assert!(Instant::now() < deadline, "MGET still failing 60 s after the broker returned");
    }
    Row {
        scenario: "7. MGET while the cluster is unreachable",
        recover_ms: Some(back_at.elapsed().as_millis()),
        note: format!(
            "down {} ms: {errors} MGETs answered TRYAGAIN, {empty} empty before the first error",
            back_at.duration_since(down_at).as_millis()
        ),
        ..Row::default()
    }
    .record();
}

/// Scenario 2: the broker frozen (SIGSTOP) for twice the produce timeout,
/// then thawed: SETs fail with `publish failed` once their timeout passes,
/// none waits longer, and publishing recovers without a databus restart.
#[test]
fn frozen_broker_fails_sets_in_time_and_recovers() {
    let _serial = serial();
    let broker = OwnBroker::start();
    let timeout = Duration::from_millis(2000);
    let f = OnOwnBroker::start("chaos_frozen", &broker.addr(), 3, 2, "[producer]\ntimeout_ms = 2000\n");
    // A reply may take the produce timeout plus the second Delivery::wait
    // allows for a lost report, plus scheduling slack: never more.
    let bound = timeout + Duration::from_millis(1500);
    let load = Load::start(f.server.addr, &f.auth("pub"), 4, 1, bound);
    thread::sleep(Duration::from_millis(1500));

    broker.signal("STOP");
    thread::sleep(timeout * 2);
    broker.signal("CONT");
    let thawed = Instant::now();
    thread::sleep(Duration::from_secs(3));
    let out = load.finish();
    let recovered = out.first_ok_after(thawed);

    let records = read_topic_on(&broker.addr(), &f.topic, out.acked.len());
    let t = tally(&out.acked, &records);
    Row {
        scenario: "2. broker frozen (SIGSTOP 2 x producer.timeout_ms, then SIGCONT)",
        recover_ms: recovered.map(|r| r.duration_since(thawed).as_millis()),
        note: format!("{} SETs got errors, {} replies later than {:?}", out.failed.len(), out.slow, bound),
        ..Row::from(&t)
    }
    .record();
    assert!(!out.failed.is_empty(), "no SET failed while the broker was frozen");
    for (_, e) in &out.failed {
        assert!(e.starts_with("TRYAGAIN publish failed: "), "{e}");
    }
    assert_eq!(out.slow, 0, "replies waited longer than {bound:?}");
    t.assert_clean("acknowledged");
    assert!(recovered.is_some(), "no SET acknowledged after the broker was thawed");
}

/// Scenario 4: SIGTERM while publishers pipeline and subscribers wait in
/// MGET: exit 0 within the bound (twice `producer.timeout_ms` plus a
/// second), every acknowledged SET in Kafka once, every acknowledged commit
/// kept by Kafka.
#[test]
fn sigterm_under_load_keeps_every_acknowledgement() {
    let _serial = serial();
    let db = TestDb::new("chaos_term");
    let (topic, idle_topic) = (unique("t_chaos_term"), unique("t_chaos_term_idle"));
    let (group, sub_group) = (unique("g_chaos_term"), unique("g_chaos_term_sub"));
    db.add_app(1, "app_key1", "app_secret1", "cluster1");
    db.add_grant(1, &group, 2, &topic);
    db.add_grant(1, &sub_group, 3, &idle_topic);
    create_topic(&topic, 3);
    create_topic(&idle_topic, 2);
    let port = free_port();
    let config =
        daemon_config(port, &db.url(), &broker_list(), "") + "[subscriber]\nwait_timeout_ms = 20000\n";
    let dir = TempDir::new("chaos_term");
    let path = dir.write("databus.toml", &config);
    let mut daemon = Daemon::start(&["--conf", path.to_str().unwrap()], port);

    // Subscribers: consume and commit 20 records, then block in MGET.
    let sub_auth = format!("app_key1:app_secret1@{sub_group}/topic={idle_topic}&role=sub&offset=old");
    let mut filler = Client::connect(daemon.addr);
    assert_eq!(
        filler.call(&["AUTH", &format!("app_key1:app_secret1@{sub_group}/topic={idle_topic}&role=pub")]),
        ok()
    );
    for i in 0..20 {
        assert_eq!(filler.call(&["SET", &format!("k{i}"), "v"]), ok());
    }
    let mut subs: Vec<Client> = (0..2).map(|_| Client::connect(daemon.addr)).collect();
    let mut acked_commits: BTreeMap<i32, i64> = BTreeMap::new();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for s in subs.iter_mut() {
        assert_eq!(s.call(&["AUTH", &sub_auth]), ok());
    }
    while got < 20 {
        assert!(Instant::now() < deadline, "only {got} of 20 records consumed");
        for s in subs.iter_mut() {
            s.stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let Frame::Array(batch) = s.call(&["MGET"]) else { panic!("MGET") };
            let mut last: BTreeMap<i32, i64> = BTreeMap::new();
            for m in batch {
                let Frame::Bulk(b) = m else { panic!() };
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                last.insert(v["partition"].as_i64().unwrap() as i32, v["offset"].as_i64().unwrap());
                got += 1;
            }
            for (p, o) in last {
                assert_eq!(s.call(&["SET", &p.to_string(), &o.to_string()]), ok());
                acked_commits.insert(p, o + 1);
            }
        }
    }
    // Now both wait in MGET (20 s) while the publishers pipeline.
    for s in subs.iter_mut() {
        s.send(&[b"MGET"]);
    }
    let auth = format!("app_key1:app_secret1@{group}/topic={topic}&role=pub");
    let load = Load::start(daemon.addr, &auth, 4, 16, Duration::from_secs(30));
    thread::sleep(Duration::from_millis(2000));

    let termed = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    let took = termed.elapsed();
    let out = load.finish();
    let bound = Duration::from_millis(2 * 5000 + 1000);
    for s in subs.iter_mut() {
        // The waiting MGET is answered (early, empty), then the connection closes.
        assert_eq!(s.read(), Some(Frame::Array(Vec::new())));
        assert!(s.is_closed());
    }

    let records = read_topic(&topic, out.acked.len());
    let t = tally(&out.acked, &records);
    let committed = committed(&sub_group, &idle_topic, 2);
    let commits_kept = acked_commits.iter().filter(|(p, o)| committed[p] == Offset::Offset(**o)).count();
    Row {
        scenario: "4. databus SIGTERM with pipelined SETs and waiting MGETs",
        recover_ms: None,
        note: format!(
            "exit code {} after {} ms; {} SETs refused; {commits_kept}/{} acknowledged commits kept",
            status.code().map_or("none".into(), |c| c.to_string()),
            took.as_millis(),
            out.failed.len(),
            acked_commits.len()
        ),
        ..Row::from(&t)
    }
    .record();
    assert!(status.success(), "exit status {status}; log:\n{}", daemon.log());
    assert!(took <= bound, "exit took {took:?}, over {bound:?}");
    assert!(t.acknowledged > 0);
    t.assert_clean("acknowledged");
    assert_eq!(commits_kept, acked_commits.len(), "committed {committed:?}, acknowledged {acked_commits:?}");
}

/// Scenario 6 for one store: the store unreachable across several refresh
/// intervals; open connections keep working, new AUTHs are served from the
/// last good grants, and a change made after it returns is picked up.
fn store_outage(store: &mut dyn GrantStore, real: &str, name: &'static str) {
    let topic = unique("t_chaos_store");
    let group = unique("g_chaos_store");
    create_topic(&topic, 1);
    store.add_app(1, "key1", "secret1", "cluster1");
    store.add_grant(1, 1, &group, 2, &topic);
    let mut relay = Relay::start(real);
    let admin = format!("127.0.0.1:{}", free_port());
    let config = Config::new("127.0.0.1:0")
        .set("refresh_interval_ms", 300)
        .set("admin_addr", admin.as_str())
        .cluster("cluster1", &[brokers()])
        .to_toml();
    // Through the relay; the mysql crate would otherwise switch to the
    // server's unix socket, which the relay cannot cut.
    let config: String = store
        .config_with(&config)
        .replace(real, &relay.addr())
        .lines()
        .map(|l| match l.strip_prefix("url = \"mysql://") {
            Some(rest) => format!("url = \"mysql://{}?prefer_socket=false\"\n", rest.trim_end_matches('"')),
            None => format!("{l}\n"),
        })
        .collect();
    let server = TestServer::start(&config);
    let auth = format!("key1:secret1@{group}/topic={topic}&role=pub");
    let mut open = server.connect();
    assert_eq!(open.call(&["AUTH", &auth]), ok());
    assert_eq!(open.call(&["SET", "k", "before"]), ok());

    relay.cut();
    let cut_at = Instant::now();
    let failures_before = metric(&admin, "databus_auth_refresh_failures_total");
    // At least two refresh intervals fail while it is away.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&admin, "databus_auth_refresh_failures_total") < failures_before + 2.0 {
        assert!(Instant::now() < deadline, "refreshes did not fail with the store away");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(open.call(&["SET", "k", "during"]), ok(), "an open connection keeps working");
    let mut fresh = server.connect();
    assert_eq!(fresh.call(&["AUTH", &auth]), ok(), "a new AUTH is served from the last good grants");
    assert_eq!(fresh.call(&["SET", "k", "during-new"]), ok());
    let outage = cut_at.elapsed();

    relay.restore();
    let back_at = Instant::now();
    let later = unique("g_chaos_store_later");
    store.add_grant(2, 1, &later, 2, &topic);
    let later_auth = format!("key1:secret1@{later}/topic={topic}&role=pub");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = server.connect().call(&["AUTH", &later_auth]);
        if reply == ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the grant added after the store returned was not picked up: {reply:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let recovered = back_at.elapsed();
    let values: Vec<Vec<u8>> = read_topic(&topic, 3).into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec![b"before".to_vec(), b"during".to_vec(), b"during-new".to_vec()]);
    Row {
        scenario: name,
        acknowledged: Some(3),
        in_kafka: Some(values.len()),
        lost: Some(0),
        duplicated: Some(0),
        recover_ms: Some(recovered.as_millis()),
        note: format!(
            "store away {} ms ({} failed refreshes); open and new connections served throughout",
            outage.as_millis(),
            metric(&admin, "databus_auth_refresh_failures_total") - failures_before
        ),
        ..Row::default()
    }
    .record();
}

#[test]
fn mysql_store_outage_keeps_the_last_good_grants() {
    let _serial = serial();
    let mut db = TestDb::new("chaos_mysql");
    let real = mysql_url().rsplit('@').next().unwrap().trim_end_matches('/').to_owned();
    store_outage(&mut db, &real, "6a. auth store outage: MySQL");
}

#[test]
fn redis_store_outage_keeps_the_last_good_grants() {
    let _serial = serial();
    let mut db = RedisDb::claim();
    let real = db.addr.clone();
    store_outage(&mut db, &real, "6b. auth store outage: Redis");
}

/// What one subscriber connection saw: records handed out, in order, and
/// the commits it sent and got `+OK` for (next offset per partition).
#[derive(Debug, Default, Clone)]
struct Consumed {
    delivered: Vec<(i32, i64)>,
    sent: BTreeMap<i32, i64>,
    acked: BTreeMap<i32, i64>,
    /// AUTHs answered TRYAGAIN before one passed.
    refused: usize,
    /// Commits refused because a rebalance had moved the partition.
    moved: usize,
    /// Records handed out and not yet covered by a commit attempt, per
    /// partition.
    pending: BTreeMap<i32, Vec<i64>>,
    /// Records whose commit was refused because their partition had moved:
    /// this membership held them uncommitted when it lost them.
    lost_uncommitted: HashSet<(i32, i64)>,
    /// What happened when, for a failure message: MGET batches (partition,
    /// first and last offset) and commits.
    events: Vec<(Instant, String)>,
    /// When an MGET handed out records of a partition.
    served: Vec<(Instant, i32)>,
}

/// The longest time any partition went without records handed out, over
/// all sessions, between `from` and `to` (while records kept coming, this
/// is how long a rebalance left it unserved).
fn longest_unserved(sessions: &[Consumed], partitions: i32, from: Instant, to: Instant) -> Duration {
    (0..partitions)
        .map(|p| {
            let mut at: Vec<Instant> =
                sessions.iter().flat_map(|s| &s.served).filter(|(_, q)| *q == p).map(|(t, _)| *t).collect();
            at.retain(|t| *t >= from && *t <= to);
            at.push(from);
            at.push(to);
            at.sort();
            at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
        })
        .max()
        .unwrap_or_default()
}

impl Consumed {
    /// Whether this membership handed out record `o` of partition `p` and
    /// did not commit it before losing the partition or leaving.
    fn held_uncommitted(&self, p: i32, o: i64) -> bool {
        self.lost_uncommitted.contains(&(p, o)) || self.pending.get(&p).is_some_and(|os| os.contains(&o))
    }
}

/// MGET, committing after every `commit_every`-th batch, until `stop`,
/// until `enough`, or until the server goes away; then, with `quit`, a
/// clean `QUIT` (else the connection is dropped, as a killed client's is).
fn subscribe(
    addr: SocketAddr,
    auth: &str,
    commit_every: usize,
    stop: &AtomicBool,
    enough: &dyn Fn(&Consumed) -> bool,
) -> Consumed {
    subscribe_then(addr, auth, commit_every, stop, enough, false)
}

fn subscribe_then(
    addr: SocketAddr,
    auth: &str,
    commit_every: usize,
    stop: &AtomicBool,
    enough: &dyn Fn(&Consumed) -> bool,
    quit: bool,
) -> Consumed {
    let mut out = Consumed::default();
    let mut batches = 0;
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    // A full group (members that left may still be counted by the broker
    // for a session timeout) answers TRYAGAIN: retry, as clients do.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut c = loop {
        // Nothing listens while a restarted databus comes back: retry.
        let Some(mut c) = Client::try_connect(addr) else {
            assert!(Instant::now() < deadline, "databus at {addr} did not come back within 60 s");
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        c.stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        c.send(&[b"AUTH", auth.as_bytes()]);
        match c.read() {
            Some(r) if r == ok() => break c,
            Some(Frame::Error(e)) if e.starts_with("TRYAGAIN") && Instant::now() < deadline => {
                out.refused += 1;
                thread::sleep(Duration::from_millis(200));
            }
            // Closed by a databus that is stopping: connect again.
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            other => panic!("AUTH answered {other:?}"),
        }
    };
    while !stop.load(Ordering::SeqCst) && !enough(&out) {
        if c.stream.write_all(&cmd_bytes(&[b"MGET"])).is_err() {
            break;
        }
        let Some(reply) = c.read() else { break };
        batches += 1;
        let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        for v in mget_records(reply) {
            let (p, o) = (v["partition"].as_i64().unwrap() as i32, v["offset"].as_i64().unwrap());
            out.delivered.push((p, o));
            out.pending.entry(p).or_default().push(o);
            last.insert(p, o);
            ranges.entry(p).or_insert((o, o)).1 = o;
        }
        if !ranges.is_empty() {
            let now = Instant::now();
            out.served.extend(ranges.keys().map(|&p| (now, p)));
            out.events.push((now, format!("MGET {ranges:?}")));
        }
        thread::sleep(Duration::from_millis(20));
        if batches % commit_every != 0 {
            continue;
        }
        for (p, o) in std::mem::take(&mut last) {
            out.sent.insert(p, o + 1);
            let set = cmd_bytes(&[b"SET", p.to_string().as_bytes(), o.to_string().as_bytes()]);
            if c.stream.write_all(&set).is_err() {
                return out;
            }
            let reply = c.read();
            out.events.push((Instant::now(), format!("SET {p} {o}: {reply:?}")));
            let handed = out.pending.remove(&p).unwrap_or_default();
            match reply {
                Some(r) if r == ok() => {
                    out.acked.insert(p, o + 1);
                }
                // A rebalance moved the partition since the MGET: its records
                // stay uncommitted and go to the new owner, as documented.
                Some(Frame::Error(e)) if e.starts_with(&format!("ERR partition {p} is not assigned")) => {
                    out.moved += 1;
                    out.lost_uncommitted.extend(handed.into_iter().map(|o| (p, o)));
                }
                Some(other) => panic!("commit answered {other:?}"),
                // No answer (databus went away): the commit may or may not
                // have been made, so its records count as uncommitted.
                None => {
                    out.lost_uncommitted.extend(handed.into_iter().map(|o| (p, o)));
                    return out;
                }
            }
        }
    }
    if quit {
        let _ = c.stream.write_all(&cmd_bytes(&[b"QUIT"]));
        let _ = c.read();
    }
    out
}

/// Scenario 3: databus SIGKILLed while two groups consume and commit (every
/// third batch, so some records are handed out and not committed); after
/// a restart each group resumes right after its last acknowledged commit
/// (or the one in flight at the kill), every record not committed comes
/// again, and none is skipped.
#[test]
fn databus_sigkill_resumes_each_group_after_its_last_commit() {
    let _serial = serial();
    const RECORDS: usize = 600;
    let db = TestDb::new("chaos_kill");
    let topic = unique("t_chaos_kill");
    let groups = [unique("g_chaos_kill_a"), unique("g_chaos_kill_b")];
    db.add_app(1, "app_key1", "app_secret1", "cluster1");
    for g in &groups {
        db.add_grant(1, g, 3, &topic);
    }
    create_topic(&topic, 2);
    let port = free_port();
    // The killed databus's members never leave: the coordinator hands their
    // partitions on only once their session times out (6 s, Kafka's least).
    let config = daemon_config(port, &db.url(), &broker_list(), "")
        + "[subscriber]\nsession_timeout_ms = 6000\nwait_timeout_ms = 1000\nbatch_size = 20\n";
    let dir = TempDir::new("chaos_kill");
    let path = dir.write("databus.toml", &config);
    let args = ["--conf", path.to_str().unwrap()];
    let mut daemon = Daemon::start(&args, port);
    let mut publisher = Client::connect(daemon.addr);
    assert_eq!(
        publisher.call(&["AUTH", &format!("app_key1:app_secret1@{}/topic={topic}&role=pub", groups[0])]),
        ok()
    );
    for i in 0..RECORDS {
        assert_eq!(publisher.call(&["SET", &format!("k{i}"), &format!("v{i}")]), ok());
    }
    let all: Vec<(i32, i64)> = read_topic(&topic, RECORDS).iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(all.len(), RECORDS);
    let auth = |g: &str| format!("app_key1:app_secret1@{g}/topic={topic}&role=sub&offset=old");

    // Before the kill: each group consumes a while, committing every batch.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new([std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicUsize::new(0)]);
    let before: Vec<thread::JoinHandle<Consumed>> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let (auth, stop, progress, addr) = (auth(g), stop.clone(), progress.clone(), daemon.addr);
            thread::spawn(move || {
                subscribe(addr, &auth, 3, &stop, &|c| {
                    progress[i].store(c.acked.len().min(1) * c.delivered.len(), Ordering::SeqCst);
                    false
                })
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.iter().any(|p| p.load(Ordering::SeqCst) < 130) {
        assert!(Instant::now() < deadline, "the groups did not get going");
        thread::sleep(Duration::from_millis(10));
    }
    daemon.signal("KILL");
    let killed_at = Instant::now();
    daemon.wait_exit();
    let before: Vec<Consumed> = before.into_iter().map(|t| t.join().unwrap()).collect();

    let daemon = Daemon::start(&args, port);
    let mut redelivered = 0;
    let mut recover_ms = 0;
    for (i, g) in groups.iter().enumerate() {
        let b = &before[i];
        let seen_before: HashSet<(i32, i64)> = b.delivered.iter().copied().collect();
        let everything = |c: &Consumed| {
            let now: HashSet<(i32, i64)> = c.delivered.iter().copied().collect();
            all.iter().all(|r| seen_before.contains(r) || now.contains(r))
        };
        let deadline = AtomicBool::new(false);
        let watchdog = {
            let started = Instant::now();
            move || started.elapsed() > Duration::from_secs(90)
        };
        let after = subscribe(daemon.addr, &auth(g), 1, &deadline, &|c| everything(c) || watchdog());
        assert!(everything(&after), "group {g}: records never came after the restart");
        recover_ms = recover_ms.max(killed_at.elapsed().as_millis());

        for p in 0..2 {
            let first_after = after.delivered.iter().find(|(q, _)| *q == p).map(|(_, o)| *o);
            let acked = b.acked.get(&p).copied().unwrap_or(0);
            let sent = b.sent.get(&p).copied().unwrap_or(0);
            let end = all.iter().filter(|(q, _)| *q == p).count() as i64;
            let Some(first) = first_after else {
                // Everything of this partition was committed before the kill.
                assert!(
                    acked == end || sent == end,
                    "group {g} partition {p}: nothing after the restart, committed {acked} of {end}"
                );
                continue;
            };
            assert!(
                first == acked || first == sent,
                "group {g} partition {p}: resumed at {first}, last acknowledged commit {acked}, last sent {sent}"
            );
            // Contiguous from there: nothing skipped.
            let offsets: Vec<i64> =
                after.delivered.iter().filter(|(q, _)| *q == p).map(|(_, o)| *o).collect();
            assert_eq!(
                offsets,
                (first..end).collect::<Vec<_>>(),
                "group {g} partition {p}: a gap or a repeat"
            );
            let handed_before =
                b.delivered.iter().filter(|(q, _)| *q == p).map(|(_, o)| o + 1).max().unwrap_or(0);
            redelivered += (handed_before - first).max(0) as usize;
            assert_eq!(
                offsets.iter().filter(|o| seen_before.contains(&(p, **o))).count() as i64,
                (handed_before - first).max(0),
                "group {g} partition {p}: redelivered records other than the uncommitted ones"
            );
        }
        let committed = committed(g, &topic, 2);
        for p in 0..2 {
            let end = all.iter().filter(|(q, _)| *q == p).count() as i64;
            assert_eq!(committed[&p], Offset::Offset(end), "group {g} partition {p}: final commit");
        }
    }
    let handed: usize = before.iter().map(|b| b.delivered.len()).sum();
    Row {
        scenario: "3. databus SIGKILL while two groups consume and commit",
        acknowledged: Some(RECORDS),
        in_kafka: Some(RECORDS),
        lost: Some(0),
        duplicated: Some(0),
        redelivered: Some(redelivered),
        recover_ms: Some(recover_ms),
        note: format!(
            "{handed} records handed out before the kill; every group resumed at its last commit, none skipped"
        ),
        ..Row::default()
    }
    .record();
}

/// Scenario 1: the broker SIGKILLed and restarted (its storage kept) while 8
/// connections publish pipelined: every `+OK` record is in Kafka exactly
/// once, and publishing recovers with no databus restart.
#[test]
fn broker_sigkill_loses_and_duplicates_no_acknowledged_record() {
    let _serial = serial();
    let mut broker = OwnBroker::start();
    let f = OnOwnBroker::start("chaos_broker_kill", &broker.addr(), 3, 2, "");
    let load = Load::start(f.server.addr, &f.auth("pub"), 8, 16, Duration::from_secs(60));
    thread::sleep(Duration::from_secs(2));

    broker.stop();
    let killed_at = Instant::now();
    thread::sleep(Duration::from_secs(2));
    broker.restart();
    let back_at = Instant::now();
    thread::sleep(Duration::from_secs(4));
    let out = load.finish();
    let recovered = out.first_ok_after(back_at);

    let records = read_topic_available(&broker.addr(), &f.topic);
    let t = tally(&out.acked, &records);
    if t.lost > 0 {
        // When were the missing ones acknowledged: before the kill (the
        // broker said it had them), or after its return?
        let present: HashSet<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
        let missing: Vec<(&String, i128)> = out
            .acked
            .iter()
            .zip(&out.acked_at)
            .filter(|(v, _)| !present.contains(v.as_bytes()))
            .map(|(v, at)| {
                let ms = |t: Instant| t.duration_since(killed_at.min(t)).as_millis() as i128;
                (
                    v,
                    if *at >= killed_at {
                        ms(*at)
                    } else {
                        -(killed_at.duration_since(*at).as_millis() as i128)
                    },
                )
            })
            .collect();
        eprintln!(
            "lost {} acknowledged records (value, ms acknowledged after the kill): {:?}; back at +{} ms",
            missing.len(),
            &missing[..missing.len().min(10)],
            back_at.duration_since(killed_at).as_millis()
        );
    }
    Row {
        scenario: "1. broker SIGKILL and restart under 8 pipelining publishers",
        recover_ms: recovered.map(|r| r.duration_since(back_at).as_millis()),
        note: format!("{} SETs got errors (may or may not be in Kafka)", out.failed.len()),
        ..Row::from(&t)
    }
    .record();
    assert!(recovered.is_some(), "no SET acknowledged after the broker returned");
    t.assert_clean("acknowledged");
}

/// Scenario 8: in a three-broker cluster (replication 3,
/// `min.insync.replicas=2`), the leader of partition 0 SIGKILLed under
/// publish load and restarted 10 s later: every `+OK` record is in Kafka
/// exactly once, and publishing goes on (the stall is the time the cluster
/// takes to elect a new leader).
#[test]
fn leader_sigkill_in_a_three_broker_cluster_loses_nothing() {
    let _serial = serial();
    let mut cluster = KafkaCluster::start();
    // Long enough that no SET times out while the cluster elects a leader.
    let f = OnOwnBroker::start("chaos_leader", &cluster.brokers(), 3, 2, "[producer]\ntimeout_ms = 30000\n");
    let leader = cluster.leader(&f.topic, 0);
    let load = Load::start(f.server.addr, &f.auth("pub"), 6, 1, Duration::from_secs(60));
    // Beside it, a bare librdkafka producer on the same topic and fault.
    let bare = BareLoad::start(&cluster.brokers(), &f.topic, 6, Duration::from_secs(30));
    thread::sleep(Duration::from_secs(3));

    cluster.node(leader).kill();
    let killed_at = Instant::now();
    thread::sleep(Duration::from_secs(10));
    cluster.restart(leader);
    await_both_acknowledge(&load, &bare, Duration::from_secs(60));
    thread::sleep(Duration::from_secs(2));
    let (out, bare) = (load.finish(), bare.finish());
    let (records, bare_records): (Vec<Record>, Vec<Record>) =
        read_topic_available(&cluster.brokers(), &f.topic)
            .into_iter()
            .partition(|r| !r.value.starts_with(b"bare"));
    let t = tally(&out.acked, &records);
    let b = tally(&bare.acked, &bare_records);
    let stall = out.longest_stall();
    Row {
        scenario: "8. partition leader SIGKILL in a three-broker cluster under 6 publishers",
        recover_ms: out.first_ok_after(killed_at).map(|r| r.duration_since(killed_at).as_millis()),
        note: format!(
            "broker {leader} down 10 s; {} SETs got errors; longest stall databus {} ms, bare librdkafka {} ms \
             ({} acknowledged, {} lost, {} duplicated)",
            out.failed.len(),
            stall.as_millis(),
            bare.longest_stall().as_millis(),
            b.acknowledged,
            b.lost,
            b.duplicated
        ),
        ..Row::from(&t)
    }
    .record();
    t.assert_clean("acknowledged");
    b.assert_clean("the bare producer's");
    assert!(out.first_ok_after(killed_at).is_some(), "no SET acknowledged after the kill");
}

/// Scenario 5: subscribers of one group join and leave every few seconds
/// while records flow, each committing what it processed: nothing lost, and
/// a record comes twice only if it was uncommitted when its holder left.
/// Under the classic group protocol (eager rebalances)...
#[test]
fn rebalance_storm_loses_nothing() {
    storm("5. rebalance storm: 3 members joining and leaving every 5-8 s", "chaos_storm", "");
}

/// ...and under KIP-848's consumer protocol (`group_protocol = "consumer"`),
/// where the broker moves only the partitions a member takes or frees.
#[test]
fn rebalance_storm_under_the_consumer_protocol_loses_nothing() {
    storm(
        "5b. rebalance storm, group_protocol = consumer (KIP-848)",
        "chaos_storm848",
        "[clusters.cluster1]\ngroup_protocol = \"consumer\"\n",
    );
}

/// Scenario 12, a consumer bounce: the storm's members leave by `QUIT` or
/// by dropping the connection (as a killed client's is closed), in turn,
/// while databus itself is stopped cleanly and started again on the same
/// port twice; records are produced directly to Kafka meanwhile. Nothing is
/// lost, nothing committed comes again (a record comes twice only if its
/// holder had not committed it), and the final commits cover the topic.
#[test]
fn consumer_bounce_with_databus_restarts_repeats_nothing_committed() {
    storm_with(
        "12. consumer bounce: members QUIT or drop, databus restarted twice",
        "chaos_bounce",
        "",
        true,
    );
}

/// The same bounce under KIP-848's consumer protocol.
#[test]
fn consumer_bounce_under_the_consumer_protocol_repeats_nothing_committed() {
    storm_with(
        "12b. consumer bounce, group_protocol = consumer (KIP-848)",
        "chaos_bounce848",
        "[clusters.cluster1]\ngroup_protocol = \"consumer\"\n",
        true,
    );
}

fn storm(scenario: &'static str, name: &str, cluster: &str) {
    storm_with(scenario, name, cluster, false)
}

fn storm_with(scenario: &'static str, name: &str, cluster: &str, bounce: bool) {
    let _serial = serial();
    const RECORDS: usize = 1500;
    let db = TestDb::new(name);
    let topic = unique(&format!("t_{name}"));
    let group = unique(&format!("g_{name}"));
    db.add_app(1, "app_key1", "app_secret1", "cluster1");
    db.add_grant(1, &group, 3, &topic);
    create_topic(&topic, 4);
    let sections = format!("[subscriber]\nwait_timeout_ms = 500\nbatch_size = 10\n{cluster}");
    // A fixed port, so that a restarted server is where its clients reconnect.
    let config =
        test_config(&db, "", &sections).replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()));
    let mut server = Some(TestServer::start(&config));
    let addr = server.as_ref().unwrap().addr;
    let sub_auth = format!("app_key1:app_secret1@{group}/topic={topic}&role=sub&offset=old");

    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (publishing, auth) =
            (publishing.clone(), format!("app_key1:app_secret1@{group}/topic={topic}&role=pub"));
        let topic = topic.clone();
        thread::spawn(move || {
            if bounce {
                // Straight to Kafka: databus comes and goes.
                let producer: ThreadedProducer<DefaultProducerContext> =
                    ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
                for i in 0..RECORDS {
                    let (k, v) = (format!("k{i}"), format!("v{i}"));
                    producer.send(BaseRecord::to(&topic).key(&k).payload(&v)).map_err(|(e, _)| e).unwrap();
                    thread::sleep(Duration::from_millis(15));
                }
                producer.flush(Duration::from_secs(30)).unwrap();
            } else {
                let mut c = Client::connect(addr);
                assert_eq!(c.call(&["AUTH", &auth]), ok());
                for i in 0..RECORDS {
                    assert_eq!(c.call(&["SET", &format!("k{i}"), &format!("v{i}")]), ok());
                    thread::sleep(Duration::from_millis(15));
                }
            }
            publishing.store(false, Ordering::SeqCst);
        })
    };
    // Three members, each staying 5-8 s, then leaving for a second.
    let storm_started = Instant::now();
    let storm: Vec<thread::JoinHandle<Vec<Consumed>>> = (0..3u64)
        .map(|k| {
            let (publishing, auth) = (publishing.clone(), sub_auth.clone());
            thread::spawn(move || {
                let mut sessions = Vec::new();
                let mut round = 0u64;
                while publishing.load(Ordering::SeqCst) {
                    let stay = Duration::from_millis(5000 + ((k * 1100 + round * 900) % 3000));
                    let joined = Instant::now();
                    let never = AtomicBool::new(false);
                    let quit = bounce && round % 2 == 1;
                    sessions.push(subscribe_then(addr, &auth, 1, &never, &|_| joined.elapsed() > stay, quit));
                    round += 1;
                    thread::sleep(Duration::from_millis(1000));
                }
                sessions
            })
        })
        .collect();
    let mut restarts = 0;
    if bounce {
        for _ in 0..2 {
            thread::sleep(Duration::from_secs(6));
            // A clean stop: commits in flight are answered, then every
            // connection closes; its members' uncommitted records go back.
            drop(server.take());
            server = Some(TestServer::start(&config));
            restarts += 1;
        }
    }
    publisher.join().unwrap();
    let published_at = Instant::now();
    let mut sessions: Vec<Consumed> = storm.into_iter().flat_map(|t| t.join().unwrap()).collect();
    // After the first members' join, while records keep coming.
    let unserved = longest_unserved(&sessions, 4, storm_started + Duration::from_secs(3), published_at);
    let members = sessions.len();
    let refused: usize = sessions.iter().map(|s| s.refused).sum();

    // One last member drains the rest.
    let all: Vec<(i32, i64)> = read_topic(&topic, RECORDS).iter().map(|r| (r.partition, r.offset)).collect();
    let seen: HashSet<(i32, i64)> = sessions.iter().flat_map(|s| s.delivered.iter().copied()).collect();
    let started = Instant::now();
    let never = AtomicBool::new(false);
    let last = subscribe(addr, &sub_auth, 1, &never, &|c| {
        let now: HashSet<&(i32, i64)> = c.delivered.iter().collect();
        started.elapsed() > Duration::from_secs(90) || all.iter().all(|r| seen.contains(r) || now.contains(r))
    });
    eprintln!(
        "storm: delivered per membership {:?}, then {} to the last member",
        sessions.iter().map(|s| s.delivered.len()).collect::<Vec<_>>(),
        last.delivered.len()
    );
    sessions.push(last);

    // Within one connection a partition's offsets only go up: MGET never
    // hands out a record twice there, nor goes back.
    for (i, s) in sessions.iter().enumerate() {
        let mut last: HashMap<i32, i64> = HashMap::new();
        for &(p, o) in &s.delivered {
            let before = last.insert(p, o);
            assert!(
                before.is_none_or(|b| o > b),
                "membership {i}: partition {p} went from {before:?} to {o}"
            );
        }
    }
    let mut count: HashMap<(i32, i64), usize> = HashMap::new();
    for s in &sessions {
        for r in &s.delivered {
            *count.entry(*r).or_default() += 1;
        }
    }
    let lost = all.iter().filter(|r| !count.contains_key(r)).count();
    let duplicated: Vec<(i32, i64)> = count.iter().filter(|(_, n)| **n > 1).map(|(r, _)| *r).collect();
    // A record came again only after a member held it without committing it:
    // its commit was refused (the partition had moved) or never sent (the
    // member left first).
    for (p, o) in &duplicated {
        let uncommitted_holder = sessions.iter().any(|s| s.held_uncommitted(*p, *o));
        if !uncommitted_holder {
            let t0 = sessions.iter().flat_map(|s| s.events.first()).map(|e| e.0).min().unwrap();
            for (i, s) in sessions.iter().enumerate().filter(|(_, s)| s.delivered.contains(&(*p, *o))) {
                eprintln!("membership {i}:");
                for (at, e) in &s.events {
                    eprintln!("  +{} ms {e}", at.duration_since(t0).as_millis());
                }
            }
            panic!("record {p}/{o} came twice though every holder committed it");
        }
    }
    let committed = committed(&group, &topic, 4);
    Row {
        scenario,
        acknowledged: Some(RECORDS),
        in_kafka: Some(all.len()),
        lost: Some(lost),
        duplicated: Some(0),
        redelivered: Some(duplicated.len()),
        recover_ms: None,
        note: format!(
            "{members} memberships ({refused} AUTHs answered TRYAGAIN, group full, and retried; \
             {restarts} databus restarts); longest a partition went unserved {} ms; \
             every redelivered record was uncommitted when its holder left",
            unserved.as_millis()
        ),
        ..Row::default()
    }
    .record();
    assert_eq!(all.len(), RECORDS);
    assert_eq!(lost, 0, "records never delivered");
    for p in 0..4 {
        let end = all.iter().filter(|(q, _)| *q == p).count() as i64;
        assert_eq!(committed[&p], Offset::Offset(end), "partition {p}: final commit");
    }
}

/// Scenario 13: queue mode's acknowledgements kept through an outage of the
/// group's coordinator (the only broker). On stream `acks`, a consumer
/// reads 30 entries and, with the broker down, XACKs them all (each reply
/// 1). The outage outlasts the session timeout (6 s), which is how long
/// librdkafka holds a commit for a coordinator: the commit fails. Nothing
/// else changes that group's state afterwards, so only a commit sent again
/// once the broker is back can bring Kafka's committed offsets to the end. On stream `dead`, with
/// the broker down, an XAUTOCLAIM dead-letters 10 entries
/// (`max_deliveries = 1`) and answers within a client's 2 s read timeout
/// though the dead-letter topic cannot take them yet. After a graceful
/// stop (SIGTERM) Kafka has both groups committed to their ends, the
/// dead-letter topic has the 10, and a restarted databus hands nothing out
/// again.
#[test]
fn queue_acknowledgements_survive_a_coordinator_outage_and_a_graceful_restart() {
    let _serial = serial();
    let mut broker = OwnBroker::start();
    let addr = broker.addr();
    let db = TestDb::new("chaos_queue_commit");
    db.add_app(1, "key1", "secret1", "cluster1");
    let streams: Vec<(String, String)> = ["acks", "dead"]
        .iter()
        .map(|s| (unique(&format!("t_chaos_queue_{s}")), unique(&format!("g_chaos_queue_{s}"))))
        .collect();
    for (topic, group) in &streams {
        db.add_grant(1, group, 3, topic);
        create_topic_on(&addr, topic, 2);
    }
    let dlq = format!("{}.dlq", streams[1].0);
    create_topic_on(&addr, &dlq, 1);
    // Dead letters wait for the broker's return (the default 30 s would do;
    // the test config's 5 s would not).
    let extra =
        "[queue]\nmax_deliveries = 1\n[producer]\ntimeout_ms = 60000\n[subscriber]\nsession_timeout_ms = 6000\n";
    let start = || {
        let port = free_port();
        let config = daemon_config(port, &db.url(), &addr, extra);
        let dir = TempDir::new("chaos_queue_commit");
        let path = dir.write("databus.toml", &config);
        (Daemon::start(&["--conf", path.to_str().unwrap()], port), dir)
    };
    let (mut daemon, _dir) = start();
    let connect = |at: SocketAddr, (topic, group): &(String, String), role: &str| {
        let url = format!("redis://127.0.0.1:{}/", at.port());
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        // Jedis's default: no queue command may hold a reply longer.
        con.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let auth = format!("key1:secret1@{group}/topic={topic}&role={role}&offset=old");
        let () = redis::cmd("AUTH").arg(auth).query(&mut con).unwrap();
        con
    };
    let read = |con: &mut redis::Connection, (topic, group): &(String, String), n: usize| {
        let mut got: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < n {
            assert!(Instant::now() < deadline, "only {} of {n} entries", got.len());
            let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
                .arg(&["GROUP", group, "c", "COUNT", "100", "BLOCK", "1000", "STREAMS", topic, ">"])
                .query(con)
                .unwrap();
            got.extend(reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).map(|e| e.id));
        }
        got
    };
    // Per stream, one past its last offset per partition: where its group
    // is committed once every entry is done with.
    // (A partition that got no entry has no commit.)
    let mut ends: Vec<BTreeMap<i32, Offset>> = Vec::new();
    let mut consumers = Vec::new();
    let mut consumed = 0;
    for (stream, n) in streams.iter().zip([30, 10]) {
        let mut publisher = connect(daemon.addr, stream, "pub");
        let mut end: BTreeMap<i32, Offset> = (0..2).map(|p| (p, Offset::Invalid)).collect();
        for i in 0..n {
            let id: String =
                redis::cmd("XADD").arg(&stream.0).arg("*").arg("n").arg(i).query(&mut publisher).unwrap();
            let (p, o) = id.split_once('-').unwrap();
            end.insert(p.parse::<i32>().unwrap(), Offset::Offset(o.parse::<i64>().unwrap() + 1));
        }
        ends.push(end);
        let mut c = connect(daemon.addr, stream, "sub");
        consumed += read(&mut c, stream, n).len();
        consumers.push(c);
    }

    broker.stop();
    let down_at = Instant::now();
    let (topic, group) = &streams[0];
    let acked = read_pending(&mut consumers[0], topic, group);
    assert_eq!(acked.len(), 30);
    for id in &acked {
        let n: i64 = redis::cmd("XACK").arg(topic).arg(group).arg(id).query(&mut consumers[0]).unwrap();
        assert_eq!(n, 1, "XACK {id} with the coordinator down");
    }
    // Claimed a second time, each passes max_deliveries: dead-lettered, in
    // the background (the reply lists them as its third element).
    let (topic, group) = &streams[1];
    let reply: (String, Vec<redis::Value>, Vec<String>) = redis::cmd("XAUTOCLAIM")
        .arg(&[topic, group, "c", "0", "0-0", "COUNT", "100"])
        .query(&mut consumers[1])
        .unwrap_or_else(|e| panic!("XAUTOCLAIM with the broker down: {e}"));
    assert_eq!(reply.2.len(), 10, "every unacknowledged entry dead-lettered: {reply:?}");
    thread::sleep(Duration::from_secs(3));
    broker.restart();
    let back_at = Instant::now();

    // The dead-letter topic takes the 10 once the broker is back.
    let letters = read_topic_on(&addr, &dlq, 10);
    assert_eq!(letters.len(), 10);
    // The commit that could not go goes again: Kafka has both groups done.
    let committed =
        |i: usize| committed_with(&[("bootstrap.servers", &addr)], &streams[i].1, &streams[i].0, 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(0) != ends[0] || committed(1) != ends[1] {
        assert!(
            Instant::now() < deadline,
            "committed {:?} and {:?}, want {ends:?}",
            committed(0),
            committed(1)
        );
        thread::sleep(Duration::from_millis(200));
    }
    let recovered = back_at.elapsed();
    drop(consumers);
    daemon.signal("TERM");
    daemon.wait_exit();
    assert_eq!(
        (committed(0), committed(1)),
        (ends[0].clone(), ends[1].clone()),
        "the stop's commit keeps it"
    );
    let log = daemon.log();
    assert!(log.contains("commit failed, trying again"), "the outage failed a commit:\n{log}");
    assert!(log.contains("committed at a stop"), "the stop's commit is logged:\n{log}");

    // After a restart: a marker entry on each stream, then everything the
    // group hands out until the marker: nothing but it.
    let (daemon, _dir2) = start();
    let mut redelivered = 0;
    for stream in &streams {
        let mut publisher = connect(daemon.addr, stream, "pub");
        let marker: String =
            redis::cmd("XADD").arg(&stream.0).arg("*").arg("marker").arg(1).query(&mut publisher).unwrap();
        let mut again = connect(daemon.addr, stream, "sub");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "the marker {marker} did not come in 60 s");
            let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
                .arg(&["GROUP", &stream.1, "c2", "COUNT", "100", "BLOCK", "1000", "STREAMS", &stream.0, ">"])
                .query(&mut again)
                .unwrap();
            let ids: Vec<String> =
                reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).map(|e| e.id).collect();
            redelivered += ids.iter().filter(|id| **id != marker).count();
            if ids.contains(&marker) {
                break;
            }
        }
    }
    Row {
        scenario: "13. queue XACKs and dead letters while the group's coordinator is down, then a graceful restart",
        acknowledged: Some(acked.len()),
        // Every XADD entry was handed out before the outage.
        lost: Some(40 - consumed),
        redelivered: Some(redelivered),
        recover_ms: Some(recovered.as_millis()),
        note: format!(
            "10 dead-lettered while down, {} in the dead-letter topic; broker down {} ms; recovered = until both groups' commits were in",
            letters.len(),
            back_at.duration_since(down_at).as_millis()
        ),
        ..Row::default()
    }
    .record();
    assert_eq!(redelivered, 0, "entries handed out again after a graceful restart");
}

/// The consumer `c`'s pending entries of `topic`, by XPENDING.
fn read_pending(con: &mut redis::Connection, topic: &str, group: &str) -> Vec<String> {
    let reply: redis::streams::StreamPendingCountReply =
        redis::cmd("XPENDING").arg(&[topic, group, "-", "+", "100", "c"]).query(con).unwrap();
    reply.ids.into_iter().map(|p| p.id).collect()
}
