//! databus in front of a secured Apache Kafka: publish, consume and commit
//! with a real login over every mechanism databus speaks (SSL with and
//! without a client certificate, SASL_PLAINTEXT and SASL_SSL with
//! SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN), and the clear, bounded errors of
//! credentials the broker refuses and of broker certificates that must not
//! be trusted. The broker has its own secured listener and a throwaway PKI
//! (`testkit::secure`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use rdkafka::Offset;
use serde_json::Value;
use testkit::client::{ok, Client};
use testkit::daemon::{daemon_config, Daemon};
use testkit::database::TestDb;
use testkit::secure::{Pki, SecureBroker, Security, SASL_PASSWORD, SASL_USER};
use testkit::server::{test_config, TestServer};
use testkit::services::{free_port, unique, TempDir};
use testkit::topics::{committed_with, read_topic_with};

/// A server whose app 1 lives on cluster `secure` (`cluster` is its TOML
/// sections), granted pub+sub on `topic`.
struct Setup {
    server: TestServer,
    group: String,
    topic: String,
    _db: TestDb,
}

impl Setup {
    fn new(name: &str, topic: &str, cluster: &str) -> Setup {
        let db = TestDb::new(name);
        let group = unique(&format!("g_{name}"));
        db.add_app(1, "key1", "secret1", "secure");
        db.add_grant(1, &group, 3, topic);
        let server = TestServer::start(&test_config(&db, "", cluster));
        Setup { server, group, topic: topic.to_owned(), _db: db }
    }

    fn login(&self, role: &str, extra: &str) -> (Client, Frame) {
        let mut c = self.server.connect();
        let auth = format!("key1:secret1@{}/topic={}&role={role}{extra}", self.group, self.topic);
        let reply = c.call(&["AUTH", &auth]);
        (c, reply)
    }
}

/// Publishes `n` records, consumes them all through MGET and commits each
/// partition's last offset; returns the committed positions.
fn round_trip(s: &Setup, n: usize) -> BTreeMap<i32, i64> {
    let (mut publisher, reply) = s.login("pub", "");
    assert_eq!(reply, ok());
    for i in 0..n {
        assert_eq!(publisher.call(&["SET", &format!("k{i}"), &format!("v{i}")]), ok(), "SET {i}");
    }
    let (mut subscriber, reply) = s.login("sub", "&offset=old");
    assert_eq!(reply, ok());
    let mut seen = Vec::new();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < n {
        assert!(Instant::now() < deadline, "consumed {} of {n}", seen.len());
        let Frame::Array(items) = subscriber.call(&["MGET"]) else { panic!("MGET is not an array") };
        for item in items {
            let Frame::Bulk(json) = item else { panic!("not a bulk") };
            let m: Value = serde_json::from_slice(&json).unwrap();
            seen.push(m["value"].as_str().unwrap().to_owned());
            let (p, o) = (m["partition"].as_i64().unwrap() as i32, m["offset"].as_i64().unwrap());
            last.insert(p, o);
        }
    }
    seen.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
    for (p, o) in &last {
        assert_eq!(subscriber.call(&["SET", &p.to_string(), &o.to_string()]), ok(), "commit {p} {o}");
    }
    last
}

fn assert_committed(properties: &[(&str, &str)], s: &Setup, partitions: i32, last: &BTreeMap<i32, i64>) {
    let committed = committed_with(properties, &s.group, &s.topic, partitions);
    for (p, o) in last {
        assert_eq!(committed[p], Offset::Offset(o + 1), "partition {p}");
    }
}

/// A real login over `security`: 20 records published, consumed and
/// committed through databus, then read and their commits checked by an
/// independent client with the same credentials.
fn round_trip_over(name: &str, security: Security) {
    let pki = Pki::new(name);
    let topic = unique(&format!("t_{name}"));
    let broker = SecureBroker::start(&pki, &[(&topic, 2)], security);
    let s = Setup::new(name, &topic, &broker.cluster_toml("secure", &pki, "ca.pem", SASL_PASSWORD));
    let last = round_trip(&s, 20);
    let reader = broker.reader(&pki);
    let props: Vec<(&str, &str)> = reader.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(read_topic_with(&props, &topic, 20).len(), 20);
    assert_committed(&props, &s, 2, &last);
}

#[test]
fn publish_consume_and_commit_over_ssl() {
    round_trip_over("ssl", Security::Ssl { client_auth: false });
}

#[test]
fn publish_consume_and_commit_over_ssl_with_a_client_certificate() {
    round_trip_over("mtls", Security::Ssl { client_auth: true });
}

#[test]
fn publish_consume_and_commit_over_sasl_plaintext_with_scram_sha_512() {
    round_trip_over("scram512", Security::SaslPlaintext("SCRAM-SHA-512"));
}

#[test]
fn publish_consume_and_commit_over_sasl_ssl_with_scram_sha_256() {
    round_trip_over("scram256", Security::SaslSsl("SCRAM-SHA-256"));
}

#[test]
fn publish_consume_and_commit_over_sasl_ssl_with_plain() {
    round_trip_over("plain", Security::SaslSsl("PLAIN"));
}

/// databus on cluster `secure` (`cluster`, its TOML) that the broker
/// refuses: SET and a subscriber's AUTH answer TRYAGAIN with the cluster
/// named and the broker's `reason` (or one of its `|`-separated
/// alternatives) as soon as the broker refused, not at the
/// produce timeout (a minute here, so a timeout would say so); neither
/// reply shows `secret`; the server keeps serving.
fn check_refused(name: &str, topic: &str, cluster: &str, reason: &str, secret: Option<&str>) {
    let s = Setup::new(name, topic, &format!("{cluster}[producer]\ntimeout_ms = 60000\n"));
    let (mut publisher, reply) = s.login("pub", "");
    assert_eq!(reply, ok());
    let mut replies = Vec::new();
    // The first SET waits for the refusal; the next is answered from it.
    for _ in 0..2 {
        let started = Instant::now();
        let Frame::Error(text) = publisher.call(&["SET", "k", "v"]) else { panic!("SET succeeded") };
        eprintln!("SET: {text} (after {:?})", started.elapsed());
        assert!(text.starts_with("TRYAGAIN publish failed: cluster 'secure' refused databus: "), "{text}");
        replies.push(text);
    }
    let started = Instant::now();
    let (_, reply) = s.login("sub", "");
    let Frame::Error(text) = reply else { panic!("AUTH as sub succeeded") };
    eprintln!("AUTH sub: {text} (after {:?})", started.elapsed());
    assert!(text.starts_with("TRYAGAIN auth failed: cluster 'secure' refused databus: "), "{text}");
    replies.push(text);
    for text in &replies {
        assert!(reason.split('|').any(|r| text.contains(r)), "{text:?} does not say {reason:?}");
        if let Some(secret) = secret {
            assert!(!text.contains(secret), "{text}");
        }
    }
    assert_eq!(s.server.connect().call(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn a_wrong_sasl_password_is_a_clear_error() {
    let pki = Pki::new("saslbad");
    let topic = unique("t_saslbad");
    let broker = SecureBroker::sasl_tls(&pki, &[(&topic, 1)]);
    let cluster = broker.cluster_toml("secure", &pki, "ca.pem", "wrong-pw-5c2");
    check_refused("saslbad", &topic, &cluster, "SASL authentication error", Some("wrong-pw-5c2"));
}

#[test]
fn an_unknown_sasl_user_is_a_clear_error() {
    let pki = Pki::new("sasluser");
    let topic = unique("t_sasluser");
    let broker = SecureBroker::sasl_tls(&pki, &[(&topic, 1)]);
    let cluster = broker
        .cluster_toml("secure", &pki, "ca.pem", SASL_PASSWORD)
        .replace(&format!("username = \"{SASL_USER}\""), "username = \"nobody\"");
    check_refused("sasluser", &topic, &cluster, "SASL authentication error", Some(SASL_PASSWORD));
}

#[test]
fn an_untrusted_broker_certificate_is_a_clear_error() {
    let pki = Pki::new("untrusted");
    let topic = unique("t_untrusted");
    let broker = SecureBroker::tls(&pki, &[(&topic, 1)]);
    let cluster = broker.cluster_toml("secure", &pki, "rogue-ca.pem", "");
    check_refused("untrusted", &topic, &cluster, "certificate verify failed", None);
}

#[test]
fn a_broker_certificate_for_another_host_is_a_clear_error() {
    let pki = Pki::new("wronghost");
    let topic = unique("t_wronghost");
    let security = Security::Ssl { client_auth: false };
    let broker = SecureBroker::start_with_cert(&pki, &[(&topic, 1)], security, "wrong-host-server");
    let cluster = broker.cluster_toml("secure", &pki, "ca.pem", "");
    check_refused("wronghost", &topic, &cluster, "certificate verify failed", None);
}

/// The cluster's own ACLs, with Kafka's authorizer on: without READ on the
/// topic, or on the group, a subscriber's AUTH answers NOPERM naming it;
/// without WRITE on the topic, SET answers NOPERM naming it. Each ACL
/// granted while databus runs makes the next try pass, with no restart.
#[test]
fn the_clusters_acls_answer_noperm_until_granted() {
    let pki = Pki::new("acls");
    let (topic, other) = (unique("t_acls"), unique("t_acls_other"));
    let broker = SecureBroker::with_acls(&pki, &[(&topic, 1), (&other, 1)]);
    // Some topic databus may write, so that its idempotent producer gets an id.
    broker.allow("Write", &["--topic", &other]);
    let s = Setup::new("acls", &topic, &broker.cluster_toml("secure", &pki, "ca.pem", SASL_PASSWORD));

    let denied = |what: &str| {
        let (_, reply) = s.login("sub", "&offset=old");
        let Frame::Error(text) = reply else { panic!("AUTH as sub succeeded") };
        eprintln!("AUTH sub: {text}");
        let want = format!("NOPERM auth failed: the cluster's ACLs do not let databus read {what}");
        assert!(text.starts_with(&want), "{text}");
    };
    denied(&format!("topic '{topic}'"));
    broker.allow("Read", &["--topic", &topic]);
    denied(&format!("group '{}'", s.group));
    broker.allow("Read", &["--group", &s.group]);
    let mut subscriber = eventually_subscriber(&s);

    let (mut publisher, reply) = s.login("pub", "");
    assert_eq!(reply, ok());
    let Frame::Error(text) = publisher.call(&["SET", "k", "v"]) else { panic!("SET succeeded") };
    eprintln!("SET: {text}");
    let want =
        format!("NOPERM publish failed: the cluster's ACLs do not let databus write to topic '{topic}'");
    assert!(text.starts_with(&want), "{text}");
    broker.allow("Write", &["--topic", &topic]);
    eventually(|| publisher.call(&["SET", "k", "v"]), "SET after WRITE was granted");

    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        match subscriber.call(&["MGET"]) {
            Frame::Array(items) => {
                if let Some(Frame::Bulk(json)) = items.into_iter().next() {
                    break serde_json::from_slice::<Value>(&json).unwrap();
                }
            }
            other => panic!("MGET answered {other:?}"),
        }
        assert!(Instant::now() < deadline, "no record after READ was granted");
    };
    let (p, o) = (record["partition"].to_string(), record["offset"].to_string());
    assert_eq!(subscriber.call(&["SET", &p, &o]), ok(), "commit");
}

/// Calls `f` until it answers `+OK` (a minute at most), every 200 ms.
fn eventually(mut f: impl FnMut() -> Frame, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            r if r == ok() => return,
            r => assert!(Instant::now() < deadline, "{what}: still {r:?} after 60 s"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A subscriber's AUTH, tried until it passes (a minute at most).
fn eventually_subscriber(s: &Setup) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (c, reply) = s.login("sub", "&offset=old");
        if reply == ok() {
            return c;
        }
        assert!(Instant::now() < deadline, "AUTH as sub: still {reply:?} after 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A refusal lasts only as long as the broker refuses: once the broker
/// takes databus's password (set there after the fact), SETs are
/// acknowledged again with no restart, and none of the refused ones was
/// written.
#[test]
fn publishing_resumes_once_the_broker_accepts_the_login() {
    const PASSWORD: &str = "later-pw-31c";
    let pki = Pki::new("saslback");
    let topic = unique("t_saslback");
    let broker = SecureBroker::sasl_tls(&pki, &[(&topic, 1)]);
    let s = Setup::new("saslback", &topic, &broker.cluster_toml("secure", &pki, "ca.pem", PASSWORD));
    let (mut publisher, reply) = s.login("pub", "");
    assert_eq!(reply, ok());
    let Frame::Error(text) = publisher.call(&["SET", "k", "refused"]) else { panic!("SET succeeded") };
    assert!(text.starts_with("TRYAGAIN publish failed: cluster 'secure' refused databus: "), "{text}");

    broker.set_scram_password(PASSWORD);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 1;
    loop {
        match publisher.call(&["SET", "k", "accepted"]) {
            r if r == ok() => break,
            Frame::Error(e) if e.starts_with("TRYAGAIN") => refused += 1,
            other => panic!("SET answered {other:?}"),
        }
        assert!(Instant::now() < deadline, "still refused 60 s after the broker took the password");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{refused} SETs refused before the first was acknowledged");
    let reader = broker.reader_as(&pki, PASSWORD);
    let props: Vec<(&str, &str)> = reader.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let values: Vec<Vec<u8>> = read_topic_with(&props, &topic, 1).into_iter().map(|r| r.value).collect();
    assert_eq!(values, vec![b"accepted".to_vec()], "only the acknowledged SET is in Kafka");
}

/// Rotation: the cluster's SASL password changed in Kafka and in
/// `databus.toml`, then SIGHUP, while a client keeps publishing. New
/// subscribers join with the new password; after a broker restart (every
/// client logs in anew, and only the new password passes) SETs are
/// acknowledged again with no databus restart; every acknowledged record is
/// in Kafka exactly once.
#[test]
fn a_rotated_sasl_password_is_taken_on_sighup() {
    const NEW: &str = "rotated-pw-8a2c";
    let pki = Pki::new("rotate");
    let topic = unique("t_rotate");
    let mut broker = SecureBroker::sasl_tls(&pki, &[(&topic, 2)]);
    let sections = |password: &str| {
        broker.cluster_toml("cluster1", &pki, "ca.pem", password) + "[producer]\ntimeout_ms = 30000\n"
    };
    let b = Binary::start("rotate", &topic, 3, &sections(SASL_PASSWORD));
    let d = &b.daemon;

    // One client publishing one SET at a time throughout; `fresh` once one
    // is acknowledged after the broker's restart (`restarted`).
    let stop = Arc::new(AtomicBool::new(false));
    let fresh = Arc::new(AtomicBool::new(false));
    let restarted: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let publisher = {
        let (stop, auth, addr) = (stop.clone(), b.auth("pub"), d.addr);
        let (fresh, restarted) = (fresh.clone(), restarted.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            assert_eq!(c.call(&["AUTH", &auth]), ok());
            let (mut acked, mut failed) = (Vec::new(), 0);
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let v = format!("v{i}");
                match c.call(&["SET", &v, &v]) {
                    r if r == ok() => {
                        let at = Instant::now();
                        if restarted.lock().unwrap().is_some_and(|t| at > t) {
                            fresh.store(true, Ordering::SeqCst);
                        }
                        acked.push((v, at));
                    }
                    Frame::Error(e) if e.starts_with("TRYAGAIN") => failed += 1,
                    other => panic!("SET answered {other:?}"),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (acked, failed)
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    broker.set_scram_password(NEW);
    b.rewrite(&sections(NEW));
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log().contains("clusters re-read") {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.log().contains("changed: [\"cluster1\"]"), "{}", d.log());
    // A new subscriber logs in with the new password (the old one is refused now).
    let mut subscriber = Client::connect(d.addr);
    assert_eq!(subscriber.call(&["AUTH", &format!("{}&offset=old", b.auth("sub"))]), ok());

    broker.restart();
    let restarted_at = Instant::now();
    *restarted.lock().unwrap() = Some(restarted_at);
    // A SET in flight across the restart may wait for librdkafka to
    // reconnect and log in again: publish until one made after the restart
    // is acknowledged, or past the produce timeout (30 s).
    let deadline = restarted_at + Duration::from_secs(40);
    while !fresh.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (acked, failed) = publisher.join().unwrap();
    let after = acked.iter().filter(|(_, at)| *at > restarted_at).count();
    eprintln!("{} acknowledged ({after} after the broker restart), {failed} refused", acked.len());
    assert!(after > 0, "no SET acknowledged after the restart: the new password is not in use");

    // Every acknowledged record is there once: through the subscriber, and in the topic.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < acked.len() {
        assert!(Instant::now() < deadline, "consumed {} of {}", seen.len(), acked.len());
        let Frame::Array(items) = subscriber.call(&["MGET"]) else { panic!("MGET is not an array") };
        for item in items {
            let Frame::Bulk(json) = item else { panic!("not a bulk") };
            let m: Value = serde_json::from_slice(&json).unwrap();
            seen.push(m["value"].as_str().unwrap().to_owned());
        }
    }
    let reader = broker.reader_as(&pki, NEW);
    let props: Vec<(&str, &str)> = reader.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let records = read_topic_with(&props, &topic, acked.len());
    for (v, _) in &acked {
        let n = records.iter().filter(|r| r.value == v.as_bytes()).count();
        assert_eq!(n, 1, "acknowledged {v} is in Kafka {n} times");
    }
}

/// The binary in front of a broker that keeps refusing its login, while a
/// client keeps publishing: every SET is refused; the failure is logged
/// once and then summarised (with the broker's reason) every few seconds,
/// not once per retry; the password is in no log line.
#[test]
fn a_refusal_that_persists_is_logged_once_then_summarised_without_the_password() {
    const PASSWORD: &str = "wrong-pw-9d1e";
    let pki = Pki::new("refusallog");
    let topic = unique("t_refusallog");
    let broker = SecureBroker::sasl_tls(&pki, &[(&topic, 1)]);
    let b =
        Binary::start("refusallog", &topic, 2, &broker.cluster_toml("cluster1", &pki, "ca.pem", PASSWORD));
    let d = &b.daemon;
    let mut c = Client::connect(d.addr);
    assert_eq!(c.call(&["AUTH", &b.auth("pub")]), ok());

    // Two summary periods and more of refusals (librdkafka retries the
    // login about once a second).
    let (mut refused, until) = (0, Instant::now() + SUMMARY_PERIOD * 2 + Duration::from_secs(2));
    while Instant::now() < until {
        let reply = c.call(&["SET", "k", "v"]);
        let Frame::Error(text) = reply else { panic!("SET succeeded") };
        assert!(text.starts_with("TRYAGAIN publish failed: cluster 'cluster1' refused databus: "), "{text}");
        refused += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = d.log();
    assert!(!log.contains(PASSWORD), "the password is in the log:\n{log}");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("SASL authentication error")).collect();
    eprintln!("{refused} SETs refused; {} log lines about it:\n{}", lines.len(), lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("more like it in the last")), "no summary line");
    // Per distinct message (librdkafka's log line, its error event, and
    // "all brokers down" with the reason): the first, then at most one
    // summary per period.
    assert!(lines.len() <= 3 * 4, "{} lines about one refusal", lines.len());
}

/// The databus binary with app 1 on `cluster1`, granted `operation` on a
/// topic in a group of its own; its config is the test's database and
/// `sections` (the TOML of `cluster1`, and any other).
struct Binary {
    daemon: Daemon,
    group: String,
    topic: String,
    port: u16,
    dir: TempDir,
    db: TestDb,
}

impl Binary {
    fn start(name: &str, topic: &str, operation: u8, sections: &str) -> Binary {
        let db = TestDb::new(name);
        let group = unique(&format!("g_{name}"));
        db.add_app(1, "key1", "secret1", "cluster1");
        db.add_grant(1, &group, operation, topic);
        let (dir, port) = (TempDir::new(name), free_port());
        let path = write_config(&dir, port, &db, sections);
        let daemon = Daemon::start(&["--conf", path.to_str().unwrap()], port);
        Binary { daemon, group, topic: topic.to_owned(), port, dir, db }
    }

    /// Writes the config anew with `sections`, for a SIGHUP to re-read.
    fn rewrite(&self, sections: &str) {
        write_config(&self.dir, self.port, &self.db, sections);
    }

    fn auth(&self, role: &str) -> String {
        format!("key1:secret1@{}/topic={}&role={role}", self.group, self.topic)
    }
}

/// `databus.toml` in `dir`: listening on `port`, grants from `db`, and
/// `sections`; its path.
fn write_config(dir: &TempDir, port: u16, db: &TestDb, sections: &str) -> std::path::PathBuf {
    dir.write("databus.toml", &daemon_config(port, &db.url(), "", sections))
}

/// databus's `SUMMARY_EVERY`: how often a repeating failure is logged.
const SUMMARY_PERIOD: Duration = Duration::from_secs(5);

#[test]
fn a_client_certificate_the_broker_does_not_trust_is_a_clear_error() {
    let pki = Pki::new("rogueclient");
    let topic = unique("t_rogueclient");
    let broker = SecureBroker::start(&pki, &[(&topic, 1)], Security::Ssl { client_auth: true });
    let cluster = broker
        .cluster_toml("secure", &pki, "ca.pem", "")
        .replace(&pki.path_str("client.pem"), &pki.path_str("rogue-client.pem"))
        .replace(&pki.path_str("client.key"), &pki.path_str("rogue-client.key"));
    // The broker's alert: bad_certificate to OpenSSL (librdkafka), and
    // certificate_unknown to rustls (databus's own producer) over TLS 1.3.
    check_refused("rogueclient", &topic, &cluster, "alert bad certificate|alert certificate unknown", None);
}
