//! The compiled `databus` binary as an operator runs it: command-line forms,
//! startup failures on a bad config or an unreachable store, and a graceful
//! SIGTERM that answers the SETs in flight, flushes and exits 0.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use testkit::client::{cmd_bytes, ok, Client};
use testkit::daemon::{broker_list, daemon_config, databus_bin, Daemon, BOUND};
use testkit::database::TestDb;
use testkit::kafka::{group_version, NodeOptions, OwnBroker};
use testkit::services::{free_port, unique, TempDir};
use testkit::topics::{create_topic, create_topic_on, read_topic, read_topic_on};

/// Runs the binary to completion, killing it if it takes longer than `BOUND`.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let bin = databus_bin();
    let child = Command::new(&bin)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out: Output = match rx.recv_timeout(BOUND) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // Still running: kill this child (by its own pid) and fail.
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("databus {args:?} still running after {BOUND:?}");
        }
    };
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pong() -> Frame {
    Frame::Simple("PONG".into())
}

#[test]
fn help_and_version() {
    let (status, stdout, stderr) = run_to_exit(&["--help"]);
    assert!(status.success(), "--help: {status}; stderr: {stderr}");
    assert!(stdout.contains("Usage: databus"), "--help printed: {stdout}");
    assert!(stdout.contains("--conf"), "--help printed: {stdout}");

    let (status, stdout, stderr) = run_to_exit(&["-h"]);
    assert!(status.success(), "-h: {status}; stderr: {stderr}");
    assert!(stdout.contains("--conf"), "-h printed: {stdout}");

    let (status, stdout, stderr) = run_to_exit(&["-V"]);
    assert!(status.success(), "-V: {status}; stderr: {stderr}");
    assert_eq!(stdout.trim_end(), "databus 0.1.0");

    let (status, _, stderr) = run_to_exit(&["--bogus"]);
    assert!(!status.success(), "--bogus exited 0");
    assert!(stderr.contains("bogus"), "--bogus: {stderr}");
}

#[test]
fn every_conf_form_starts_the_server_and_sigterm_exits_zero() {
    let db = TestDb::new("binforms");
    let dir = TempDir::new("forms");
    // The seed's single-dash forms, the short option and the long option.
    let forms: [(&str, bool); 5] =
        [("-conf=", true), ("-conf", false), ("-c", false), ("--conf", false), ("--conf=", true)];
    for (i, (flag, joined)) in forms.into_iter().enumerate() {
        let port = free_port();
        let path =
            dir.write(&format!("databus{i}.toml"), &daemon_config(port, &db.url(), &broker_list(), ""));
        let p = path.to_str().unwrap();
        let joined_arg = format!("{flag}{p}");
        let args: Vec<&str> = if joined { vec![&joined_arg] } else { vec![flag, p] };
        let mut d = Daemon::start(&args, port);
        // A connection left open (and idle) must not hold up the shutdown.
        let mut idle = Client::connect(d.addr);
        assert_eq!(idle.call(&["PING"]), pong(), "{args:?}");
        d.signal("TERM");
        let status = d.wait_exit();
        assert!(idle.is_closed(), "{args:?}: idle connection left open");
        assert_eq!(status.code(), Some(0), "{args:?}: {status}; stderr:\n{}", d.log());
        let log = d.log();
        assert!(log.contains("databus listening on"), "{args:?}: log:\n{log}");
        assert!(log.contains("databus stopped"), "{args:?}: log:\n{log}");
    }
}

/// SIGTERM while a SET's reply is handed to the delivery thread and the
/// broker (frozen) has not answered yet: databus waits for the verdict,
/// answers `+OK`, closes the connection and exits 0, with the record in
/// Kafka.
#[test]
fn sigterm_still_answers_a_handed_over_reply() {
    let broker = OwnBroker::start();
    let db = TestDb::new("binhandoff");
    let topic = unique("t_binhandoff");
    let group = unique("g_binhandoff");
    db.add_app(1, "key1", "secret1", "cluster1");
    db.add_grant(1, &group, 2, &topic);
    create_topic_on(&broker.addr(), &topic, 1);
    let dir = TempDir::new("handoff");
    let port = free_port();
    let path = dir.write("databus.toml", &daemon_config(port, &db.url(), &broker.addr(), ""));
    let mut d = Daemon::start(&["--conf", path.to_str().unwrap()], port);
    let mut c = Client::connect(d.addr);
    assert_eq!(c.call(&["AUTH", &format!("key1:secret1@{group}/topic={topic}&role=pub")]), ok());
    assert_eq!(c.call(&["SET", "k", "before"]), ok());

    broker.signal("STOP");
    c.send(&[b"SET", b"k", b"during"]);
    thread::sleep(Duration::from_millis(50));
    d.signal("TERM");
    // Past the connection's 100 ms look at a handed-over reply.
    thread::sleep(Duration::from_millis(300));
    broker.signal("CONT");
    assert_eq!(c.read(), Some(ok()), "the SET in flight at SIGTERM is answered");
    assert_eq!(c.read(), None, "then the connection closes");
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}; stderr:\n{}", d.log());
    let values: Vec<Vec<u8>> =
        read_topic_on(&broker.addr(), &topic, 2).into_iter().map(|r| r.value).collect();
    assert_eq!(values, [b"before".to_vec(), b"during".to_vec()]);
}

/// The single non-empty stderr line of a failed start.
fn single_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{stderr}");
    lines[0]
}

#[test]
fn empty_broker_list_stops_startup_naming_file_and_key() {
    let db = TestDb::new("binbrokers");
    let dir = TempDir::new("brokers");
    let port = free_port();
    let path = dir.write("databus.toml", &daemon_config(port, &db.url(), "", ""));
    let p = path.to_str().unwrap();
    let (status, _, stderr) = run_to_exit(&["--conf", p]);
    assert!(!status.success(), "exited 0 with brokers = []");
    let line = single_line(&stderr);
    assert!(line.contains(p), "{line}");
    assert!(line.contains("clusters.cluster1.brokers"), "{line}");
    assert!(line.contains("must list at least one broker"), "{line}");
    assert_eq!(
        line,
        format!("databus: config {p}: key `clusters.cluster1.brokers`: must list at least one broker")
    );
    // Nothing was started.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn missing_config_file_is_named() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("no-such-databus.toml");
    let p = path.to_str().unwrap();
    let (status, _, stderr) = run_to_exit(&["-c", p]);
    assert!(!status.success(), "exited 0 with a missing config");
    let line = single_line(&stderr);
    assert!(line.contains(p), "{line}");
}

#[test]
fn unreachable_mysql_stops_startup() {
    let dir = TempDir::new("nomysql");
    let port = free_port();
    // A distinctive password: the message names the store but never shows it.
    let url = "mysql://someone:pw-zz9-secret@127.0.0.1:1/databus_db";
    let path = dir.write("databus.toml", &daemon_config(port, url, &broker_list(), ""));
    let started = Instant::now();
    let (status, _, stderr) = run_to_exit(&["-conf", path.to_str().unwrap()]);
    assert!(!status.success(), "exited 0 with MySQL unreachable");
    assert!(stderr.contains("auth store unreachable"), "{stderr}");
    assert!(!stderr.contains("pw-zz9-secret"), "password shown: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?} to give up", started.elapsed());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn sigterm_answers_sets_in_flight_flushes_and_exits_zero() {
    const SECRET: &str = "s3cret-xyz-123";
    const WRONG_SECRET: &str = "wr0ng-s3cret-456";
    const N: usize = 200;
    let db = TestDb::new("binterm");
    let topic = unique("t_binterm");
    let group = unique("g_binterm");
    db.add_app(1, "key1", SECRET, "cluster1");
    db.add_grant(1, &group, 2, &topic);
    create_topic(&topic, 3);
    let dir = TempDir::new("term");
    let port = free_port();
    // debug logging, so more of the code gets a chance to leak the secret.
    let path =
        dir.write("databus.toml", &daemon_config(port, &db.url(), &broker_list(), "log_level = \"debug\""));
    let mut d = Daemon::start(&["--conf", path.to_str().unwrap()], port);

    // A refused AUTH must not log the wrong secret either.
    let mut bad = Client::connect(d.addr);
    let Frame::Error(text) =
        bad.call(&["AUTH", &format!("key1:{WRONG_SECRET}@{group}/topic={topic}&role=pub")])
    else {
        panic!("wrong secret accepted")
    };
    assert!(text.starts_with("WRONGPASS auth failed"), "{text}");
    assert!(bad.is_closed());

    let mut c = Client::connect(d.addr);
    let auth = format!("key1:{SECRET}@{group}/topic={topic}&role=pub");
    assert_eq!(c.call(&["AUTH", &auth]), ok());
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend(cmd_bytes(&[b"SET", format!("k{}", i % 11).as_bytes(), format!("v{i}").as_bytes()]));
    }
    c.send_raw(&burst);
    // The first reply proves the burst is being served; the rest is in
    // flight when the signal arrives.
    let first = c.read();
    assert_eq!(first, Some(ok()), "first SET of the burst");
    d.signal("TERM");

    // Replies come in request order, so reply i answers SET i. Every reply
    // must be +OK or an error; Client::read panics on anything unparsable.
    let mut acked = vec!["v0".to_string()];
    let mut errors = Vec::new();
    let mut i = 1;
    while let Some(reply) = c.read() {
        assert!(i < N, "reply {i} for only {N} requests: {reply:?}");
        match reply {
            Frame::Simple(s) if s == "OK" => acked.push(format!("v{i}")),
            Frame::Error(e) => errors.push((i, e)),
            other => panic!("reply {i} to SET is neither +OK nor an error: {other:?}"),
        }
        i += 1;
    }
    let status = d.wait_exit();
    let log = d.log();
    assert_eq!(status.code(), Some(0), "exit status {status}; stderr:\n{log}");
    eprintln!(
        "{} of {N} SETs acknowledged, {} errors {:?}, before the connection closed",
        acked.len(),
        errors.len(),
        errors.iter().take(3).collect::<Vec<_>>()
    );

    // Shut down: nobody listens any more.
    assert!(
        TcpStream::connect_timeout(&d.addr, Duration::from_secs(2)).is_err(),
        "{} still accepts connections after exit",
        d.addr
    );

    // Every acknowledged value reached Kafka.
    assert!(!acked.is_empty(), "no SET acknowledged");
    let records = read_topic(&topic, acked.len());
    let in_kafka: HashSet<Vec<u8>> = records.iter().map(|r| r.value.clone()).collect();
    let lost: Vec<&String> = acked.iter().filter(|v| !in_kafka.contains(v.as_bytes())).collect();
    assert!(lost.is_empty(), "acknowledged but not in Kafka: {lost:?}");
    assert_eq!(in_kafka.len(), records.len(), "duplicate records in {topic}");

    // The log was captured (so the next check means something) and never
    // shows a secret.
    assert!(log.contains("databus listening on"), "log:\n{log}");
    assert!(log.contains("auth ok"), "log:\n{log}");
    for line in log.lines() {
        assert!(!line.contains(SECRET), "secret in log line: {line}");
        assert!(!line.contains(WRONG_SECRET), "refused secret in log line: {line}");
    }
}

#[test]
fn sigint_with_a_publisher_still_sending_exits_promptly() {
    let db = TestDb::new("binbusy");
    let topic = unique("t_binbusy");
    let group = unique("g_binbusy");
    db.add_app(1, "key1", "secret1", "cluster1");
    db.add_grant(1, &group, 2, &topic);
    create_topic(&topic, 3);
    let dir = TempDir::new("busy");
    let port = free_port();
    let path = dir.write("databus.toml", &daemon_config(port, &db.url(), &broker_list(), ""));
    let mut d = Daemon::start(&["--conf", path.to_str().unwrap()], port);
    let (addr, auth) = (d.addr, format!("key1:secret1@{group}/topic={topic}&role=pub"));
    // One SET at a time until the server closes the connection; returns the
    // acknowledged values.
    let publisher = thread::spawn(move || {
        let mut c = Client::connect(addr);
        assert_eq!(c.call(&["AUTH", &auth]), ok());
        let deadline = Instant::now() + BOUND;
        let mut acked = Vec::new();
        for i in 0.. {
            assert!(Instant::now() < deadline, "connection still served {BOUND:?} later");
            let value = format!("v{i}");
            if c.stream.write_all(&cmd_bytes(&[b"SET", b"k", value.as_bytes()])).is_err() {
                break;
            }
            match c.read() {
                Some(Frame::Simple(s)) if s == "OK" => acked.push(value),
                Some(Frame::Error(_)) => {}
                Some(other) => panic!("reply to SET is neither +OK nor an error: {other:?}"),
                None => break,
            }
        }
        acked
    });
    // Let it publish for a while, then Ctrl-C.
    thread::sleep(Duration::from_millis(500));
    d.signal("INT");
    let status = d.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status {status}; stderr:\n{}", d.log());
    let acked = publisher.join().unwrap();
    assert!(!acked.is_empty(), "nothing acknowledged before the signal");
    let records = read_topic(&topic, acked.len());
    let in_kafka: HashSet<Vec<u8>> = records.iter().map(|r| r.value.clone()).collect();
    let lost: Vec<&String> = acked.iter().filter(|v| !in_kafka.contains(v.as_bytes())).collect();
    assert!(lost.is_empty(), "acknowledged but not in Kafka: {lost:?}");
}

// ---------------------------------------------------------------------------
// databus check

/// `databus check -c PATH`, its exit status and report (stdout). Its stderr
/// is the one line `databus: check failed` or nothing.
fn check(config: &std::path::Path) -> (bool, String) {
    let (status, stdout, stderr) = run_to_exit(&["check", "-c", config.to_str().unwrap()]);
    let expected_stderr = if status.success() { "" } else { "databus: check failed\n" };
    assert_eq!(stderr, expected_stderr, "report:\n{stdout}");
    (status.success(), stdout)
}

/// A good setup: the config loads, the store holds one app and two grants,
/// the cluster answers and both granted topics exist. Exit 0, and the
/// report says so line by line; no secret printed.
#[test]
fn check_reports_a_good_setup_and_exits_zero() {
    let db = TestDb::new("checkok");
    let (topic, other) = (unique("t_checkok"), unique("t_checkok2"));
    db.add_app(1, "key1", "app-secret-zz7", "cluster1");
    db.add_grant(1, "g1", 3, &topic);
    db.add_grant(1, "g2", 1, &other);
    create_topic(&topic, 1);
    create_topic(&other, 2);
    let dir = TempDir::new("checkok");
    let port = free_port();
    let path = dir.write("databus.toml", &daemon_config(port, &db.url(), &broker_list(), ""));
    let (ok, report) = check(&path);
    assert!(ok, "check failed on a good setup:\n{report}");
    for line in [
        format!("config {}: valid; clients on 127.0.0.1:{port}", path.display()),
        format!("auth store mysql {}: 1 apps, 2 grants, 0 rows skipped", mask(&db.url())),
        "grants: 2 topics on 1 clusters checked".to_string(),
        "databus check: ok".to_string(),
    ] {
        assert!(report.lines().any(|l| l == line), "no line {line:?} in:\n{report}");
    }
    assert!(report
        .lines()
        .any(|l| l.starts_with("cluster 'cluster1' (") && l.contains(": answers, 1 brokers")));
    assert!(!report.contains("app-secret-zz7"), "{report}");
}

/// The MySQL URL as databus shows it: the password masked.
fn mask(url: &str) -> String {
    databus::auth::mask_password(url)
}

/// Everything wrong at once is reported, each on its own line, and the exit
/// status is 1: a grant whose topic does not exist, an app on a cluster the
/// config does not name, a row the store cannot read, and a cluster that does
/// not answer (with a SASL password that must not be printed).
#[test]
fn check_names_every_problem_and_exits_one() {
    let db = TestDb::new("checkbad");
    let topic = unique("t_checkbad");
    let missing = unique("t_checkmissing");
    db.add_app(1, "key1", "secret1", "cluster1");
    db.add_app(2, "key2", "secret2", "elsewhere");
    db.add_grant(1, "g1", 3, &topic);
    db.add_grant(1, "g1", 3, &missing);
    db.add_grant(2, "g2", 3, &topic);
    db.exec("ALTER TABLE auth_tb MODIFY operation VARCHAR(10) NULL");
    db.exec(&format!("INSERT INTO auth_tb (id, app_id, group_name, operation, topic) VALUES (99, 1, 'g1', 'rw', '{topic}')"));
    create_topic(&topic, 1);
    let dead = free_port();
    let extra = format!(
        "[clusters.down]\nbrokers = [\"127.0.0.1:{dead}\"]\n[clusters.down.sasl]\n\
         mechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"kafka-pw-zz8\"\n"
    );
    let dir = TempDir::new("checkbad");
    let path = dir.write("databus.toml", &daemon_config(free_port(), &db.url(), &broker_list(), &extra));
    let (ok, report) = check(&path);
    assert!(!ok, "check passed:\n{report}");
    let problems: Vec<&str> = report.lines().filter(|l| l.contains("PROBLEM:")).collect();
    let expect = [
        format!("grant of group 'g1' (app id 1) to topic '{missing}': no such topic on cluster 'cluster1'"),
        format!("grant of group 'g2' (app id 2) to topic '{topic}': cluster 'elsewhere' is not configured"),
        format!("cluster 'down' (127.0.0.1:{dead}): "),
    ];
    for want in &expect {
        assert!(problems.iter().any(|p| p.contains(want.as_str())), "no problem {want:?} in:\n{report}");
    }
    assert_eq!(problems.len(), expect.len(), "{report}");
    assert!(report.contains(": 2 apps, 3 grants, 1 rows skipped"), "{report}");
    assert!(
        report.lines().any(|l| l.trim_start().starts_with("skipped auth_tb") && l.contains("99")),
        "{report}"
    );
    assert!(report.ends_with("databus check: FAILED (3 problems)\n"), "{report}");
    for secret in ["kafka-pw-zz8", "secret1", "secret2"] {
        assert!(!report.contains(secret), "{secret} printed:\n{report}");
    }
}

/// A config that does not load, and a store that cannot be read: exit 1,
/// with the key or the store named and no password shown.
#[test]
fn check_of_a_bad_config_or_an_unreachable_store() {
    let dir = TempDir::new("checkconf");
    let path = dir.write(
        "typo.toml",
        &daemon_config(free_port(), "mysql://x@127.0.0.1/db", &broker_list(), "max_clientz = 5"),
    );
    let (ok, report) = check(&path);
    assert!(!ok);
    assert!(report.contains("max_clientz"), "{report}");
    assert!(report.ends_with("databus check: FAILED (the config does not load)\n"), "{report}");

    let url = "mysql://someone:pw-zz9-secret@127.0.0.1:1/databus_db";
    let path = dir.write("nostore.toml", &daemon_config(free_port(), url, &broker_list(), ""));
    let (ok, report) = check(&path);
    assert!(!ok);
    assert!(
        report.contains("PROBLEM: auth store: mysql mysql://someone:***@127.0.0.1:1/databus_db"),
        "{report}"
    );
    assert!(!report.contains("pw-zz9-secret"), "{report}");
}

// ---------------------------------------------------------------------------
// A cluster without KIP-848's consumer group protocol

/// A cluster set to `group_protocol = "consumer"` whose brokers do not serve
/// it (a Kafka 4 formatted at `group.version` 0, which serves it no more than
/// Kafka 3.9 does): `databus check` names it; MGET, a commit and XREADGROUP
/// answer the cause and the fix at once; the log says it once however many
/// connections meet it.
#[test]
fn a_cluster_without_the_consumer_protocol_is_named() {
    let options =
        NodeOptions { format_args: vec!["--feature".into(), "group.version=0".into()], ..Default::default() };
    let broker = OwnBroker::start_with(&options);
    assert_eq!(group_version(&broker.addr()), 0, "Kafka's own tool says the broker serves KIP-848");
    let db = TestDb::new("nokip848");
    let (topic, group) = (unique("t_nokip848"), unique("g_nokip848"));
    db.add_app(1, "key1", "secret1", "cluster1");
    db.add_grant(1, &group, 3, &topic);
    // Each connection below joins the group, and one dropped leaves it only
    // when databus has seen it close: room for all three at once.
    create_topic_on(&broker.addr(), &topic, 3);
    let dir = TempDir::new("nokip848");
    let port = free_port();
    let extra = "[clusters.cluster1]\ngroup_protocol = \"consumer\"\n";
    let path = dir.write("databus.toml", &daemon_config(port, &db.url(), &broker.addr(), extra));
    let refusal = "cluster 'cluster1' does not support group_protocol = \"consumer\" \
                   (KIP-848, Apache Kafka 4.0+): set group_protocol = \"classic\"";

    let (passed, report) = check(&path);
    assert!(!passed, "check passed:\n{report}");
    let problems: Vec<&str> = report.lines().filter(|l| l.contains("PROBLEM:")).collect();
    assert_eq!(problems, [format!("  PROBLEM: {refusal}")], "{report}");

    let d = Daemon::start(&["--conf", path.to_str().unwrap()], port);
    let auth = format!("key1:secret1@{group}/topic={topic}&role=sub");
    let err = Frame::Error(format!("ERR {refusal}"));
    for _ in 0..2 {
        let mut c = Client::connect(d.addr);
        assert_eq!(c.call(&["AUTH", &auth]), ok());
        assert_eq!(c.call(&["MGET"]), err);
        assert_eq!(c.call(&["SET", "0", "0"]), err);
        assert_eq!(c.call(&["PING"]), pong());
    }
    let mut q = Client::connect(d.addr);
    assert_eq!(q.call(&["AUTH", &auth]), ok());
    assert_eq!(q.call(&["XREADGROUP", "GROUP", &group, "c1", "STREAMS", &topic, ">"]), err);
    let log = d.log();
    let said: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ") && l.contains(refusal)).collect();
    assert_eq!(said.len(), 1, "log:\n{log}");
}

/// Under a low open-file limit databus raises its soft limit to the hard
/// one and lowers `max_clients` to what the hard one holds, saying so, as
/// Redis lowers `maxclients`; past that, a client gets the usual refusal.
#[test]
fn max_clients_fits_the_open_file_limit() {
    let db = TestDb::new("nofile");
    let dir = TempDir::new("nofile");
    let port = free_port();
    let path = dir.write("databus.toml", &daemon_config(port, &db.url(), &broker_list(), ""));
    // 128 kept for databus itself, 2 per client: 36 clients in 200 files.
    let d = Daemon::start_limited(&["--conf", path.to_str().unwrap()], port, 150, 200);
    // The start's probe (a connection closed at once) holds a place until
    // databus sees it closed: a client refused meanwhile tries again.
    let _open: Vec<Client> =
        (0..36).map(|_| Client::connect_accepted(d.addr, Duration::from_secs(2))).collect();
    let mut extra = Client::connect(d.addr);
    assert_eq!(extra.read(), Some(Frame::Error("TRYAGAIN max number of clients reached".into())));
    let log = d.log();
    assert!(log.contains("open-file limit raised from 150 to 200"), "log:\n{log}");
    assert!(
        log.contains("the open-file limit (200) holds 36 clients: max_clients lowered from 10000 to 36"),
        "log:\n{log}"
    );
    let soft = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let line = soft.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    assert_eq!(line.split_whitespace().nth(3), Some("200"), "{line}");
}
