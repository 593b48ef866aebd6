//! Shared fixtures of the integration tests: the real services' addresses,
//! a database, a topic and a server of each test's own, a raw RESP client,
//! and an independent Kafka reader to check what reached the broker.
//!
//! Addresses come from the environment (`DATABUS_BROKERS`,
//! `DATABUS_MYSQL_URL`, `DATABUS_REDIS_ADDR`) as set by `make test`; the
//! defaults match what `scripts/services.sh up` starts. Brokers of a test's
//! own (`kafka`) are Apache Kafka too, started by `scripts/kafka.sh`. A
//! missing service fails the test with how to start it — never a skip.

#![allow(dead_code)]

pub mod chaos;
pub mod config;
pub mod daemon;
pub mod kafka;
pub mod process;
pub mod redis_cli;
pub mod secure;
pub mod stores;

#[allow(unused_imports)]
pub use config::Config;
#[allow(unused_imports)]
pub use daemon::{broker_list, daemon_config, rss_kib, Daemon, BIN, BOUND};
#[allow(unused_imports)]
pub use kafka::{KafkaCluster, NodeOptions, OwnBroker};
#[allow(unused_imports)]
pub use process::Guard;
#[allow(unused_imports)]
pub use redis_cli::{unquote_cli, RedisCli};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use databus::config::Settings;
use databus::resp::{parse_reply, Frame, Limits};
use databus::server::{self, Running};
use mysql::prelude::Queryable;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const HOW_TO_START: &str = "start the services with `scripts/services.sh up` (or run `make test`)";

pub fn brokers() -> String {
    std::env::var("DATABUS_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Server URL of MySQL, without a database.
pub fn mysql_url() -> String {
    std::env::var("DATABUS_MYSQL_URL").unwrap_or_else(|_| "mysql://databus:databus@127.0.0.1:3306".into())
}

pub fn redis_addr() -> String {
    std::env::var("DATABUS_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A directory of the test's own under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(&format!("databus_{test}")));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` to `name` inside the directory.
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A database of the seed's schema, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pool: mysql::Pool,
}

impl TestDb {
    pub fn new(test: &str) -> TestDb {
        let name = unique(&format!("databus_test_{test}"));
        let server = mysql::Opts::from_url(&mysql_url()).expect("DATABUS_MYSQL_URL");
        let mut conn = mysql::Conn::new(server.clone())
            .unwrap_or_else(|e| panic!("MySQL at {} unreachable ({e}); {HOW_TO_START}", mysql_url()));
        conn.query_drop(format!("CREATE DATABASE `{name}`")).unwrap();
        let pool =
            mysql::Pool::new(mysql::OptsBuilder::from_opts(server).db_name(Some(name.clone()))).unwrap();
        let db = TestDb { name, pool };
        db.exec(
            "CREATE TABLE app_tb (id INT AUTO_INCREMENT PRIMARY KEY, app_key VARCHAR(45) NOT NULL,
               app_secret VARCHAR(64) NOT NULL, cluster VARCHAR(45) NOT NULL,
               created_at BIGINT NULL, deleted_at BIGINT NULL, updated_at BIGINT NULL)",
        );
        db.exec(
            "CREATE TABLE auth_tb (id INT AUTO_INCREMENT PRIMARY KEY, app_id INT NOT NULL,
               group_name VARCHAR(45) NULL, operation TINYINT DEFAULT 0, topic VARCHAR(45) NOT NULL,
               created_at BIGINT NULL, deleted_at BIGINT NULL, updated_at BIGINT NULL)",
        );
        db
    }

    pub fn url(&self) -> String {
        format!("{}/{}", mysql_url().trim_end_matches('/'), self.name)
    }

    pub fn exec(&self, sql: &str) {
        self.pool.get_conn().unwrap().query_drop(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn add_app(&self, id: i64, key: &str, secret: &str, cluster: &str) {
        self.exec(&format!(
            "INSERT INTO app_tb (id, app_key, app_secret, cluster) VALUES ({id}, '{key}', '{secret}', '{cluster}')"
        ));
    }

    pub fn add_grant(&self, app_id: i64, group: &str, operation: u8, topic: &str) {
        self.exec(&format!(
            "INSERT INTO auth_tb (app_id, group_name, operation, topic) VALUES ({app_id}, '{group}', {operation}, '{topic}')"
        ));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = self.pool.get_conn() {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}

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

/// A databus server of the test's own, on a free port.
pub struct TestServer {
    running: Option<Running>,
    pub addr: SocketAddr,
    /// The TLS listener, when the config has one.
    pub tls_addr: Option<SocketAddr>,
}

/// The config of a test server: its own database, `cluster1` on the test
/// broker, short refresh and producer timeouts (the MGET wait is the
/// product's default, 1.5 s); `extra` top-level keys are prepended, and
/// `extra_sections` appended.
pub fn test_config(db: &TestDb, extra: &str, extra_sections: &str) -> String {
    Config::new("127.0.0.1:0")
        .mysql(&db.url())
        .set("refresh_interval_ms", 500)
        .set("producer.timeout_ms", 5000)
        .cluster("cluster1", &[brokers()])
        .merge(extra)
        .merge(extra_sections)
        .to_toml()
}

/// A test on a broker of its own (or a cluster: a comma-separated list):
/// app `key1` on cluster `own`, a fresh topic and group granted
/// `operation`, and a server on them with `overrides` (a TOML fragment)
/// merged into the test config.
pub struct OnOwnBroker {
    pub server: TestServer,
    pub topic: String,
    pub group: String,
    _db: TestDb,
}

impl OnOwnBroker {
    pub fn start(name: &str, broker: &str, partitions: i32, operation: u8, overrides: &str) -> OnOwnBroker {
        let db = TestDb::new(name);
        let topic = unique(&format!("t_{name}"));
        let group = unique(&format!("g_{name}"));
        db.add_app(1, "key1", "secret1", "own");
        db.add_grant(1, &group, operation, &topic);
        create_topic_on(broker, &topic, partitions);
        let list: Vec<String> = broker.split(',').map(str::to_owned).collect();
        let sections = Config::default().cluster("own", &list).merge(overrides).to_toml();
        let server = TestServer::start(&test_config(&db, "", &sections));
        OnOwnBroker { server, topic, group, _db: db }
    }

    pub fn auth(&self, role: &str) -> String {
        format!("key1:secret1@{}/topic={}&role={role}", self.group, self.topic)
    }
}

impl TestServer {
    pub fn start(config: &str) -> TestServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let settings = Settings::from_toml(Path::new("test.toml"), config).unwrap();
        let running = server::start(settings).unwrap();
        let (addr, tls_addr) = (running.local_addr(), running.tls_addr());
        TestServer { running: Some(running), addr, tls_addr }
    }

    /// What SIGHUP does: re-read the auth store and the TLS files.
    pub fn reload(&self) {
        self.running.as_ref().unwrap().reload();
    }

    /// Starts from a config file, as the file store needs a real path.
    pub fn start_file(path: &Path) -> TestServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let running = server::start(Settings::load(path).unwrap()).unwrap();
        let (addr, tls_addr) = (running.local_addr(), running.tls_addr());
        TestServer { running: Some(running), addr, tls_addr }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// The common test setup: a database with app `app_key1`/`app_secret1` on
/// `cluster1` and one group granted pub and sub on a fresh topic, and a
/// server on it (`extra` = top-level config keys).
pub struct Fixture {
    pub db: TestDb,
    pub server: TestServer,
    pub topic: String,
    pub group: String,
    pub partitions: i32,
}

impl Fixture {
    pub fn new(name: &str, partitions: i32, extra: &str) -> Fixture {
        let db = TestDb::new(name);
        let topic = unique(&format!("t_{name}"));
        let group = unique(&format!("g_{name}"));
        db.add_app(1, "app_key1", "app_secret1", "cluster1");
        db.add_grant(1, &group, 3, &topic);
        create_topic(&topic, partitions);
        let server = TestServer::start(&test_config(&db, extra, ""));
        Fixture { db, server, topic, group, partitions }
    }

    /// The AUTH string for `role`, with `extra` parameters (`&color=red`…).
    pub fn auth_string(&self, role: &str, extra: &str) -> String {
        format!("app_key1:app_secret1@{}/topic={}&role={role}{extra}", self.group, self.topic)
    }

    /// A connection authenticated as `role`.
    pub fn login(&self, role: &str, extra: &str) -> Client {
        let mut c = self.server.connect();
        assert_eq!(c.call(&["AUTH", &self.auth_string(role, extra)]), ok());
        c
    }
}

/// A raw RESP client, for exact replies, pipelining and malformed input.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A request as RESP, encoded by databus's own `Frame`.
pub fn cmd_bytes(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Array(args.iter().map(|a| Frame::Bulk(a.to_vec())).collect()).encode(&mut out);
    out
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|| panic!("nothing listens on {addr}"))
    }

    /// A connection, or `None` when nothing listens (a server restarting).
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Some(Client { stream, buf: Vec::new() })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&cmd_bytes(args));
    }

    /// The next reply, or `None` when the server closed the connection.
    pub fn read(&mut self) -> Option<Frame> {
        let limits = Limits {
            max_bulk_len: 64 << 20,
            max_array_len: 1 << 20,
            max_inline_len: 1 << 20,
            max_request_len: usize::MAX,
            max_discard_len: 0,
        };
        loop {
            if let Some((frame, used)) = parse_reply(&self.buf, &limits).unwrap() {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading reply: {e}"),
            }
        }
    }

    pub fn call(&mut self, args: &[&str]) -> Frame {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&args);
        self.read().expect("server closed the connection")
    }

    /// Whether the server has closed the connection (after any pending replies).
    pub fn is_closed(&mut self) -> bool {
        self.read().is_none()
    }
}

pub fn ok() -> Frame {
    Frame::Simple("OK".into())
}

pub fn err(text: &str) -> Frame {
    Frame::Error(text.into())
}

/// What one of the project's installer scripts (`scripts/<name>`, which
/// installs or builds what a test needs if missing) prints on stdout,
/// trimmed; `needs` says what it needs when it fails.
pub fn script_output(name: &str, args: &[&str], needs: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name);
    let out: Output = Command::new(&script)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed ({needs}):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The venv's python, from `scripts/pyvenv.sh` (which creates it if needed).
pub fn venv_python() -> PathBuf {
    PathBuf::from(script_output("pyvenv.sh", &[], "it needs python3 with venv and PyPI access"))
}

/// What the group must have committed after processing `messages` (JSON
/// MGET elements): per partition, the last offset + 1.
pub fn expected_commits(messages: &[Value], partitions: i32) -> BTreeMap<i32, Offset> {
    let mut out: BTreeMap<i32, Offset> = (0..partitions).map(|p| (p, Offset::Invalid)).collect();
    for m in messages {
        let p = m["partition"].as_i64().unwrap() as i32;
        let next = m["offset"].as_i64().unwrap() + 1;
        let slot = out.get_mut(&p).unwrap();
        if !matches!(*slot, Offset::Offset(o) if o >= next) {
            *slot = Offset::Offset(next);
        }
    }
    out
}

/// Asserts that `messages` hold no (partition, offset) twice and come in
/// offset order per partition.
pub fn assert_once_and_in_order(messages: &[Value]) {
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    for m in messages {
        let (p, o) = (m["partition"].as_i64().unwrap(), m["offset"].as_i64().unwrap());
        if let Some(prev) = last.insert(p, o) {
            assert!(prev < o, "partition {p}: offset {o} after {prev} (duplicate or out of order)");
        }
    }
}

/// What every redis-py session shares, prepended to its script: `consume`
/// pulls with `mget()` and commits each partition's last offset with
/// `commit(partition, offset)` until `n` messages came; it returns them.
pub const PY_CONSUME: &str = r#"
import json, sys, time

def consume(n, mget, commit):
    got, deadline = [], time.time() + 60
    while len(got) < n:
        if time.time() > deadline:
            sys.exit(f"only {len(got)} of {n} messages after 60 s")
        last = {}
        for raw in mget():
            m = json.loads(raw)
            got.append(m)
            last[m["partition"]] = max(last.get(m["partition"], -1), m["offset"])
        for partition, offset in sorted(last.items()):
            assert commit(partition, offset) is True
    return got
"#;

/// The records of one MGET reply in JSON: panics on anything but an array
/// of bulk strings, each one JSON record.
pub fn mget_records(reply: Frame) -> Vec<Value> {
    match reply {
        Frame::Array(items) => items
            .into_iter()
            .map(|f| match f {
                Frame::Bulk(b) => serde_json::from_slice(&b).unwrap(),
                other => panic!("MGET element {other:?}"),
            })
            .collect(),
        other => panic!("MGET reply {other:?}"),
    }
}

/// The `redis` crate's side of the same loop: MGET until `n` messages came,
/// committing each partition's last offset of every batch.
pub fn consume_with_redis_crate(con: &mut redis::Connection, n: usize, partitions: i32) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} messages after 60 s", got.len());
        let batch: Vec<Vec<u8>> = redis::cmd("MGET").query(con).unwrap();
        let batch: Vec<Value> = batch.iter().map(|m| serde_json::from_slice(m).unwrap()).collect();
        for p in 0..partitions {
            let last =
                batch.iter().filter(|m| m["partition"] == p).map(|m| m["offset"].as_i64().unwrap()).max();
            if let Some(o) = last {
                let () = redis::cmd("SET").arg(p).arg(o).query(con).unwrap();
            }
        }
        got.extend(batch);
    }
    got
}
