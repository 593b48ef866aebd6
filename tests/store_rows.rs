//! Auth store rows that cannot be read — NULL where a value belongs, text
//! that is not UTF-8, a wrong type, a missing redis_orm field — are skipped
//! with one warning each that names the table (or hash) and the row, never a
//! secret; the readable rows serve, and a fixed row is picked up by the next
//! refresh. Run through the real binary, whose log is the thing checked.

use std::time::{Duration, Instant};

use testkit::client::{err, ok, Client};
use testkit::daemon::{broker_list, daemon_config, Daemon};
use testkit::database::TestDb;
use testkit::services::{free_port, unique, TempDir};
use testkit::stores::{store_test_config, GrantStore, RedisDb};

/// Refreshes run every 300 ms; this lets several pass.
const SEVERAL_REFRESHES: Duration = Duration::from_millis(1500);

/// Starts the binary on `config` (which must use `port`).
fn start(dir: &TempDir, config: &str, port: u16) -> Daemon {
    let path = dir.write("databus.toml", config);
    Daemon::start(&["--conf", path.to_str().unwrap()], port)
}

fn auth(d: &Daemon, key_secret: &str, group: &str, topic: &str) -> databus::resp::Frame {
    Client::connect(d.addr).call(&["AUTH", &format!("{key_secret}@{group}/topic={topic}&role=pub")])
}

/// Each expected warning is logged exactly once however many refreshes
/// pass, and no line of the log shows a secret.
fn check_log(d: &Daemon, warnings: &[String], secrets: &[&str]) {
    std::thread::sleep(SEVERAL_REFRESHES);
    let log = d.log();
    for w in warnings {
        let n = log.lines().filter(|l| l.contains(" WARN ") && l.contains(w.as_str())).count();
        assert_eq!(n, 1, "warning {w:?} logged {n} times; log:\n{log}");
    }
    let skipped = log.lines().filter(|l| l.contains("skipped")).count();
    assert_eq!(skipped, warnings.len(), "other rows skipped too; log:\n{log}");
    for line in log.lines() {
        for s in secrets {
            assert!(!line.contains(s), "secret {s:?} in log line: {line}");
        }
    }
}

/// Waits (bounded) until AUTH gives `want`.
fn auth_until(d: &Daemon, key_secret: &str, group: &str, topic: &str, want: &databus::resp::Frame) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = auth(d, key_secret, group, topic);
        if &got == want {
            return;
        }
        assert!(Instant::now() < deadline, "AUTH to {group}: still {got:?}; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mysql_rows_that_cannot_be_read_are_skipped() {
    let db = TestDb::new("badrows");
    let t = unique("t_badrows");
    // The Go databus's schema lets `cluster` be NULL; the others are what a
    // hand-made schema might hold.
    db.exec("ALTER TABLE app_tb MODIFY cluster VARCHAR(45) NULL");
    db.exec("ALTER TABLE auth_tb MODIFY topic VARBINARY(45) NOT NULL");
    db.exec("ALTER TABLE auth_tb MODIFY operation VARCHAR(10) NULL");
    db.exec("INSERT INTO app_tb (id, app_key, app_secret, cluster) VALUES (1, 'key1', 'secret-one-111', 'cluster1')");
    db.exec(
        "INSERT INTO app_tb (id, app_key, app_secret, cluster) VALUES (2, 'key2', 'secret-null-222', NULL)",
    );
    db.exec(&format!(
        "INSERT INTO auth_tb (id, app_id, group_name, operation, topic) VALUES \
         (1, 1, 'g_good', '3', '{t}'), (2, 2, 'g_null', '3', '{t}'), \
         (3, 1, 'g_bin', '3', X'FF00'), (4, 1, 'g_op', 'rw', '{t}')"
    ));
    let dir = TempDir::new("badrows");
    let port = free_port();
    let config = daemon_config(port, &db.url(), &broker_list(), "refresh_interval_ms = 300");
    // Before, the NULL panicked startup (exit 101) with the secret's first bytes.
    let d = start(&dir, &config, port);
    assert_eq!(auth(&d, "key1:secret-one-111", "g_good", &t), ok());
    let warnings = [
        "auth_tb row 2 (app_tb row 2): app_tb.cluster is NULL",
        "auth_tb row 3 (app_tb row 1): auth_tb.topic cannot be read as UTF-8 text",
        "auth_tb row 4 (app_tb row 1): auth_tb.operation is not an integer",
    ]
    .map(String::from);
    check_log(&d, &warnings, &["secret-one-111", "secret-null-222", "secret-nul", "secret-o"]);
    assert_eq!(
        auth(&d, "key1:secret-one-111", "g_op", &t),
        err("NOPERM auth failed: group 'g_op' is not granted to app 'key1'")
    );

    // Mended rows serve after the next refresh.
    db.exec("UPDATE app_tb SET cluster = 'cluster1' WHERE id = 2");
    db.exec("UPDATE auth_tb SET operation = '2' WHERE id = 4");
    auth_until(&d, "key2:secret-null-222", "g_null", &t, &ok());
    auth_until(&d, "key1:secret-one-111", "g_op", &t, &ok());
}

#[test]
fn redis_rows_that_cannot_be_read_are_skipped() {
    let mut store = RedisDb::claim();
    let t = unique("t_rbadrows");
    store.add_app(1, "key1", "secret-one-111", "cluster1");
    store.add_app(2, "key2", "secret-two-222", "cluster1");
    store.hdel("tb:apptb", "2_Cluster");
    store.add_grant(1, 1, "g_good", 3, &t);
    store.add_grant(2, 2, "g_nocluster", 3, &t);
    store.add_grant(3, 1, "g_bin", 3, &t);
    store.hset_bytes("tb:authtb", "3_Topic", b"\xff\xfe");
    store.add_grant(4, 1, "g_op", 3, &t);
    store.hset("tb:authtb", "4_Operation".into(), "rw");
    store.zadd("ix:authtb_group", b"g_half", 5.5);
    store.add_grant(6, 1, "g_noappid", 3, &t);
    store.hdel("tb:authtb", "6_AppId");

    let dir = TempDir::new("rbadrows");
    let port = free_port();
    let config =
        store.config_with(&store_test_config("")).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let d = start(&dir, &config, port);
    assert_eq!(auth(&d, "key1:secret-one-111", "g_good", &t), ok());
    let warnings = [
        "tb:authtb row 2: tb:apptb has no field 2_Cluster",
        "tb:authtb row 3: tb:authtb field 3_Topic is not UTF-8",
        "tb:authtb row 4: 4_Operation is not an integer",
        "ix:authtb_group member 'g_half': score 5.5 is not a row id",
        "tb:authtb row 6: tb:authtb has no field 6_AppId",
    ]
    .map(String::from);
    check_log(&d, &warnings, &["secret-one-111", "secret-two-222"]);

    store.set_cluster(2, "cluster1");
    auth_until(&d, "key2:secret-two-222", "g_nocluster", &t, &ok());
}

#[test]
fn file_entries_that_cannot_be_read_are_skipped() {
    let t = unique("t_fbadrows");
    let dir = TempDir::new("fbadrows");
    let port = free_port();
    let base = store_test_config("").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let rows = |broken_cluster: &str| {
        format!(
            "auth = \"file\"\n{base}\n\
             [[apps]]\nid = 1\nkey = \"key1\"\nsecret = \"secret-one-111\"\ncluster = \"cluster1\"\n\
             [[apps]]\nid = 2\nkey = \"key2\"\nsecret = \"secret-two-222\"\n{broken_cluster}\n\
             [[apps]]\nid = 3\nkey = \"key3\"\nsecret = 987654321\ncluster = \"cluster1\"\n\
             [[grants]]\napp_id = 1\ngroup = \"g_good\"\noperation = 3\ntopic = \"{t}\"\n\
             [[grants]]\napp_id = 2\ngroup = \"g_nocluster\"\noperation = 3\ntopic = \"{t}\"\n\
             [[grants]]\napp_id = 1\ngroup = \"g_op\"\noperation = \"rw\"\ntopic = \"{t}\"\n"
        )
    };
    let d = start(&dir, &rows(""), port);
    assert_eq!(auth(&d, "key1:secret-one-111", "g_good", &t), ok());
    let warnings = [
        "[[apps]] entry 2: `cluster` is missing",
        "[[apps]] entry 3: `secret` is not a string",
        "[[grants]] entry 2: no readable [[apps]] entry has id 2",
        "[[grants]] entry 3: `operation` is not an integer",
    ]
    .map(String::from);
    check_log(&d, &warnings, &["secret-one-111", "secret-two-222", "987654321"]);

    dir.write("databus.toml", &rows("cluster = \"cluster1\""));
    auth_until(&d, "key2:secret-two-222", "g_nocluster", &t, &ok());
}
