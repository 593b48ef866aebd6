//! The three auth stores behind one test interface, so the same scenario
//! runs against MySQL, Redis (redis_orm layout, written with plain Redis
//! commands as the workbench would) and the config file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use redis::Commands;

use crate::client::{err, ok, Client};
use crate::config::Config;
use crate::database::TestDb;
use crate::server::TestServer;
use crate::services::{brokers, redis_addr, unique, HOW_TO_START};

/// Rows of a store, editable while a server runs on it.
pub trait GrantStore {
    /// The `auth = ...` line and the store's section of databus.toml.
    fn auth_config(&self) -> (String, String);

    /// A whole config: the store around `config` (which has no store).
    fn config_with(&self, config: &str) -> String {
        let (auth, section) = self.auth_config();
        format!("{auth}\n{config}\n{section}")
    }
    fn add_app(&mut self, id: i64, key: &str, secret: &str, cluster: &str);
    fn add_grant(&mut self, id: i64, app_id: i64, group: &str, operation: u8, topic: &str);
    fn set_secret(&mut self, app_id: i64, secret: &str);
    fn set_cluster(&mut self, app_id: i64, cluster: &str);
    fn set_operation(&mut self, grant_id: i64, operation: u8);
    /// Starts a server on this store; `config` is everything but the store.
    fn start(&mut self, config: &str) -> TestServer {
        TestServer::start(&self.config_with(config))
    }
}

impl GrantStore for TestDb {
    fn auth_config(&self) -> (String, String) {
        ("auth = \"mysql\"".into(), format!("[mysql]\nurl = \"{}\"\n", self.url()))
    }
    fn add_app(&mut self, id: i64, key: &str, secret: &str, cluster: &str) {
        TestDb::add_app(self, id, key, secret, cluster)
    }
    fn add_grant(&mut self, id: i64, app_id: i64, group: &str, operation: u8, topic: &str) {
        self.exec(&format!(
            "INSERT INTO auth_tb (id, app_id, group_name, operation, topic) VALUES ({id}, {app_id}, '{group}', {operation}, '{topic}')"
        ));
    }
    fn set_secret(&mut self, app_id: i64, secret: &str) {
        self.exec(&format!("UPDATE app_tb SET app_secret = '{secret}' WHERE id = {app_id}"));
    }
    fn set_cluster(&mut self, app_id: i64, cluster: &str) {
        self.exec(&format!("UPDATE app_tb SET cluster = '{cluster}' WHERE id = {app_id}"));
    }
    fn set_operation(&mut self, grant_id: i64, operation: u8) {
        self.exec(&format!("UPDATE auth_tb SET operation = {operation} WHERE id = {grant_id}"));
    }
}

/// A Redis database (index 1..=15) claimed for one test with a lock key, so
/// parallel tests and runs never share one; flushed on claim and release.
pub struct RedisDb {
    pub addr: String,
    pub db: i64,
    conn: redis::Connection,
}

const LOCK: &str = "databus:test-lock";

impl RedisDb {
    /// A database of the test Redis.
    pub fn claim() -> RedisDb {
        Self::claim_on(&redis_addr())
    }

    /// A database of the Redis at `addr`.
    pub fn claim_on(addr: &str) -> RedisDb {
        let owner = unique("lock");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for db in 1..=15 {
                let url = format!("redis://{addr}/{db}");
                let mut conn = redis::Client::open(url)
                    .and_then(|c| c.get_connection())
                    .unwrap_or_else(|e| panic!("Redis at {addr} unreachable ({e}); {HOW_TO_START}"));
                let claimed: bool = redis::cmd("SET")
                    .arg(LOCK)
                    .arg(&owner)
                    .arg("NX")
                    .arg("EX")
                    .arg(600)
                    .query::<Option<String>>(&mut conn)
                    .unwrap()
                    .is_some();
                if claimed {
                    let keys: Vec<String> = conn.keys("*").unwrap();
                    for k in keys.iter().filter(|k| *k != LOCK) {
                        let _: () = conn.del(k).unwrap();
                    }
                    return RedisDb { addr: addr.to_owned(), db, conn };
                }
            }
            assert!(Instant::now() < deadline, "no free Redis database on {addr}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn hset(&mut self, table: &str, field: String, value: impl ToString) {
        let _: () = self.conn.hset(table, field, value.to_string()).unwrap();
    }

    /// Any bytes, UTF-8 or not, as another writer might leave them.
    pub fn hset_bytes(&mut self, table: &str, field: &str, value: &[u8]) {
        let _: () = self.conn.hset(table, field, value).unwrap();
    }

    pub fn hdel(&mut self, table: &str, field: &str) {
        let _: () = self.conn.hdel(table, field).unwrap();
    }

    pub fn zadd(&mut self, key: &str, member: &[u8], score: f64) {
        let _: () = self.conn.zadd(key, member, score).unwrap();
    }

    /// Puts back rows after the Redis server lost them (it keeps nothing on disk).
    pub fn reconnect(&mut self) {
        let url = format!("redis://{}/{}", self.addr, self.db);
        self.conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: () =
            redis::cmd("SET").arg(LOCK).arg("reclaimed").arg("EX").arg(600).query(&mut self.conn).unwrap();
    }
}

impl Drop for RedisDb {
    fn drop(&mut self) {
        if let Ok(keys) = self.conn.keys::<_, Vec<String>>("*") {
            for k in keys.iter().filter(|k| *k != LOCK) {
                let _: Result<(), _> = self.conn.del(k);
            }
        }
        let _: Result<(), _> = self.conn.del(LOCK);
    }
}

impl GrantStore for RedisDb {
    fn auth_config(&self) -> (String, String) {
        ("auth = \"redis\"".into(), format!("[redis]\naddr = \"{}\"\ndb = {}\n", self.addr, self.db))
    }
    fn add_app(&mut self, id: i64, key: &str, secret: &str, cluster: &str) {
        self.hset("tb:apptb", format!("{id}_Id"), id);
        self.hset("tb:apptb", format!("{id}_AppKey"), key);
        self.hset("tb:apptb", format!("{id}_AppSecret"), secret);
        self.hset("tb:apptb", format!("{id}_Cluster"), cluster);
        self.hset("tb:apptb", format!("{id}_CreatedAt"), 1_700_000_000);
        self.hset("tb:apptb", format!("{id}_UpdatedAt"), 1_700_000_000);
    }
    fn add_grant(&mut self, id: i64, app_id: i64, group: &str, operation: u8, topic: &str) {
        self.hset("tb:authtb", format!("{id}_Id"), id);
        self.hset("tb:authtb", format!("{id}_AppId"), app_id);
        self.hset("tb:authtb", format!("{id}_Group"), group);
        self.hset("tb:authtb", format!("{id}_Operation"), operation);
        self.hset("tb:authtb", format!("{id}_Topic"), topic);
        self.hset("tb:authtb", format!("{id}_CreatedAt"), 1_700_000_000);
        let _: () = self.conn.zadd("ix:authtb_group", group, id).unwrap();
    }
    fn set_secret(&mut self, app_id: i64, secret: &str) {
        self.hset("tb:apptb", format!("{app_id}_AppSecret"), secret);
    }
    fn set_cluster(&mut self, app_id: i64, cluster: &str) {
        self.hset("tb:apptb", format!("{app_id}_Cluster"), cluster);
    }
    fn set_operation(&mut self, grant_id: i64, operation: u8) {
        self.hset("tb:authtb", format!("{grant_id}_Operation"), operation);
    }
}

/// Apps and grants written into the server's own config file.
pub struct FileGrants {
    pub path: PathBuf,
    base: String,
    apps: BTreeMap<i64, (String, String, String)>,
    grants: BTreeMap<i64, (i64, String, u8, String)>,
}

impl FileGrants {
    pub fn new() -> FileGrants {
        let path = std::env::temp_dir().join(format!("{}.toml", unique("databus_file_store")));
        FileGrants { path, base: String::new(), apps: BTreeMap::new(), grants: BTreeMap::new() }
    }

    /// Rewrites the whole file, as an operator editing it would; the new
    /// file replaces the old in one rename so the server never reads half.
    fn write(&self) {
        let mut text = self.config_with(&self.base);
        for (id, (key, secret, cluster)) in &self.apps {
            text += &format!(
                "[[apps]]\nid = {id}\nkey = \"{key}\"\nsecret = \"{secret}\"\ncluster = \"{cluster}\"\n"
            );
        }
        for (app_id, group, operation, topic) in self.grants.values() {
            text += &format!(
                "[[grants]]\napp_id = {app_id}\ngroup = \"{group}\"\noperation = {operation}\ntopic = \"{topic}\"\n"
            );
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

impl Default for FileGrants {
    fn default() -> FileGrants {
        FileGrants::new()
    }
}

impl Drop for FileGrants {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl GrantStore for FileGrants {
    fn auth_config(&self) -> (String, String) {
        ("auth = \"file\"".into(), String::new())
    }
    fn add_app(&mut self, id: i64, key: &str, secret: &str, cluster: &str) {
        self.apps.insert(id, (key.into(), secret.into(), cluster.into()));
        self.write();
    }
    fn add_grant(&mut self, id: i64, app_id: i64, group: &str, operation: u8, topic: &str) {
        self.grants.insert(id, (app_id, group.into(), operation, topic.into()));
        self.write();
    }
    fn set_secret(&mut self, app_id: i64, secret: &str) {
        self.apps.get_mut(&app_id).unwrap().1 = secret.into();
        self.write();
    }
    fn set_cluster(&mut self, app_id: i64, cluster: &str) {
        self.apps.get_mut(&app_id).unwrap().2 = cluster.into();
        self.write();
    }
    fn set_operation(&mut self, grant_id: i64, operation: u8) {
        self.grants.get_mut(&grant_id).unwrap().2 = operation;
        self.write();
    }
    fn start(&mut self, config: &str) -> TestServer {
        self.base = config.to_owned();
        self.write();
        TestServer::start_file(&self.path)
    }
}

/// Server settings for store tests, without the store: a fast refresh, and
/// `cluster1` on the test broker plus any `extra_clusters`.
pub fn store_test_config(extra_clusters: &str) -> String {
    Config::new("127.0.0.1:0")
        .set("refresh_interval_ms", 300)
        .set("producer.timeout_ms", 5000)
        .set("subscriber.session_timeout_ms", 6000)
        .cluster("cluster1", &[brokers()])
        .merge(extra_clusters)
        .to_toml()
}

/// The rows `check_auth_matrix` expects: app 1 (`key1`/`secret1`) on
/// cluster1 with `<group>` (pub+sub) and `<group>_pubonly`; app 2 on a
/// cluster databus does not know, with `<group>_lost`.
pub fn add_matrix_rows(store: &mut dyn GrantStore, group: &str, topic: &str) {
    store.add_app(1, "key1", "secret1", "cluster1");
    store.add_app(2, "key2", "secret2", "nowhere");
    store.add_grant(1, 1, group, 3, topic);
    store.add_grant(2, 1, &format!("{group}_pubonly"), 2, topic);
    store.add_grant(3, 2, &format!("{group}_lost"), 3, topic);
}

/// AUTH succeeds with the right string, and each kind of failure gets its
/// own error, never echoes a secret, and closes the connection.
pub fn check_auth_matrix(server: &TestServer, g: &str, t: &str) {
    let mut c = server.connect();
    assert_eq!(c.call(&["AUTH", &format!("key1:secret1@{g}/topic={t}&role=pub")]), ok());
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
    let shape = "(expected key:secret@group/topic=T&role=pub|sub)";
    let cases = [
        (
            "key1-secret1".to_string(),
            format!("ERR invalid auth string: missing '@' between credentials and group {shape}"),
        ),
        (
            format!("key1:secret1@{g}/topic={t}&role=owner"),
            format!("ERR invalid auth string: role must be pub or sub, got 'owner' {shape}"),
        ),
        (
            format!("key1:secret1@nosuchgroup/topic={t}&role=pub"),
            "NOPERM auth failed: group 'nosuchgroup' is not granted to app 'key1'".into(),
        ),
        (
            format!("key1:secret1@{g}/topic=other&role=pub"),
            format!("NOPERM auth failed: topic 'other' is not granted to group '{g}'"),
        ),
        (
            format!("keyX:secret1@{g}/topic={t}&role=pub"),
            "WRONGPASS auth failed: invalid app key or secret".into(),
        ),
        (
            format!("key1:s3cr3t-guess@{g}/topic={t}&role=pub"),
            "WRONGPASS auth failed: invalid app key or secret".into(),
        ),
        // A stranger learns nothing: unknown group, another app's group,
        // a known key, all the same while the secret is wrong.
        (
            "keyX:nope@nosuchgroup/topic=x&role=sub".to_string(),
            "WRONGPASS auth failed: invalid app key or secret".into(),
        ),
        (
            format!("key2:nope@{g}/topic={t}&role=pub"),
            "WRONGPASS auth failed: invalid app key or secret".into(),
        ),
        // A proven app cannot tell another app's group from no group.
        (
            format!("key2:secret2@{g}/topic={t}&role=pub"),
            format!("NOPERM auth failed: group '{g}' is not granted to app 'key2'"),
        ),
        (
            format!("key1:secret1@{g}_pubonly/topic={t}&role=sub"),
            format!("NOPERM auth failed: role 'sub' is not allowed for group '{g}_pubonly'"),
        ),
        (
            format!("key2:secret2@{g}_lost/topic={t}&role=pub"),
            "ERR auth failed: cluster 'nowhere' of app 'key2' is not configured".into(),
        ),
    ];
    for (auth, want) in cases {
        let mut c = server.connect();
        let reply = c.call(&["AUTH", &auth]);
        // The server's own words, checked before they are compared, so that
        // a leak shows as a leak.
        let Frame::Error(text) = &reply else { panic!("AUTH {auth}: not an error: {reply:?}") };
        for secret in ["secret1", "secret2", "s3cr3t-guess"] {
            assert!(!text.contains(secret), "reply {text:?} to AUTH {auth} shows a secret");
        }
        assert_eq!(reply, err(&want), "AUTH {auth}");
        assert!(c.is_closed(), "connection stays open after failed AUTH {auth}");
    }
}

/// AUTHs until the reply is `want` (a refresh must pass first); returns the
/// connection. Panics after 10 s.
pub fn auth_eventually(server: &TestServer, auth: &str, want: &Frame) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = server.connect();
        let reply = c.call(&["AUTH", auth]);
        if &reply == want {
            return c;
        }
        assert!(Instant::now() < deadline, "AUTH {auth}: still {reply:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
