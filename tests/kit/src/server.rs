//! A databus server of a test's own, in process, and the common fixture.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// The common test setup: a database of the test's own, a fresh topic and
/// group, and a server on them. Every test that needs no more (and no
/// broker of its own) starts from it.
pub struct Fixture {
    pub db: TestDb,
    pub server: TestServer,
    pub topic: String,
    pub group: String,
    /// The topic's; 0 when the fixture created no topic.
    pub partitions: i32,
    /// `key:secret` of the app that the AUTH strings name.
    app: &'static str,
    /// What the server's config adds to the test config.
    extra: String,
}

impl Fixture {
    /// App `app_key1`/`app_secret1` on `cluster1`, its group granted pub and
    /// sub on a fresh topic of `partitions`; `extra` (a TOML fragment) is
    /// merged into the server's test config.
    pub fn new(name: &str, partitions: i32, extra: &str) -> Fixture {
        Fixture::start(name, "app_key1:app_secret1", partitions, extra, |db, group, topic| {
            db.add_app(1, "app_key1", "app_secret1", "cluster1");
            db.add_grant(1, group, 3, topic);
        })
    }

    /// The test's own rows instead: `rows` writes them, given the fixture's
    /// group and topic, before the server starts; no topic is created.
    /// `app` (`key:secret`) is the app of [`Fixture::auth_string`].
    pub fn with_rows(
        name: &str,
        app: &'static str,
        extra: &str,
        rows: impl FnOnce(&mut TestDb, &str, &str),
    ) -> Fixture {
        Fixture::start(name, app, 0, extra, rows)
    }

    fn start(
        name: &str,
        app: &'static str,
        partitions: i32,
        extra: &str,
        rows: impl FnOnce(&mut TestDb, &str, &str),
    ) -> Fixture {
        let mut db = TestDb::new(name);
        let topic = unique(&format!("t_{name}"));
        let group = unique(&format!("g_{name}"));
        rows(&mut db, &group, &topic);
        if partitions > 0 {
            create_topic(&topic, partitions);
        }
        let server = TestServer::start(&test_config(&db, extra, ""));
        Fixture { db, server, topic, group, partitions, app, extra: extra.to_owned() }
    }

    /// Stops the server, then starts another of the same config on the same
    /// database, topic and group, on a port of its own.
    pub fn restart(self) -> Fixture {
        self.restart_on(0)
    }

    /// [`Fixture::restart`] on the port the old server listened on, as a
    /// restarted databus is where its clients reconnect.
    pub fn restart_on_same_port(self) -> Fixture {
        let port = self.server.addr.port();
        self.restart_on(port)
    }

    /// Tries for 10 s, until the old server's port is free again.
    fn restart_on(self, port: u16) -> Fixture {
        let Fixture { db, server, topic, group, partitions, app, extra } = self;
        drop(server);
        let config = test_config(&db, &extra, &format!("addr = \"127.0.0.1:{port}\"\n"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let server = loop {
            match std::panic::catch_unwind(|| TestServer::start(&config)) {
                Ok(server) => break server,
                Err(_) => assert!(Instant::now() < deadline, "databus could not listen on {port} again"),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Fixture { db, server, topic, group, partitions, app, extra }
    }

    /// The AUTH string for `role` as a client of the README writes it: a
    /// subscriber starts from the oldest record.
    pub fn auth(&self, role: &str) -> String {
        self.auth_string(role, if role == "sub" { "&offset=old" } else { "" })
    }

    /// The AUTH string for `role`, with `extra` parameters (`&color=red`…).
    pub fn auth_string(&self, role: &str, extra: &str) -> String {
        format!("{}@{}/topic={}&role={role}{extra}", self.app, self.group, self.topic)
    }

    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }

    /// A connection authenticated as `role`.
    pub fn login(&self, role: &str, extra: &str) -> Client {
        let mut c = self.server.connect();
        assert_eq!(c.call(&["AUTH", &self.auth_string(role, extra)]), ok());
        c
    }
}
