//! A databus server of a test's own, in process, and the common fixture.

use std::net::SocketAddr;
use std::path::Path;

use databus::config::Settings;
use databus::server::{self, Running};

use crate::client::{ok, Client};
use crate::config::Config;
use crate::database::TestDb;
use crate::services::{brokers, unique};
use crate::topics::{create_topic, create_topic_on};

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
    pub(crate) fn start_file(path: &Path) -> TestServer {
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
