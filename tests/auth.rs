//! AUTH against the MySQL store, the pre-AUTH rules and the auth timeout.

use std::time::Duration;

use databus::resp::Frame;
use testkit::client::{err, ok};
use testkit::database::TestDb;
use testkit::server::Fixture;
use testkit::stores::{add_matrix_rows, check_auth_matrix};
use testkit::topics::{create_topic, read_topic};

/// The rows of `check_auth_matrix` (app `key1`), plus a deleted app and a
/// deleted grant; the topic is never created.
fn rows(db: &mut TestDb, group: &str, topic: &str) {
    add_matrix_rows(db, group, topic);
    // Deleted rows do not exist.
    db.add_app(3, "key3", "secret3", "cluster1");
    db.exec("UPDATE app_tb SET deleted_at = 1700000000 WHERE id = 3");
    db.add_grant(3, &format!("{group}_deletedapp"), 3, topic);
    db.add_grant(1, &format!("{group}_deletedgrant"), 3, topic);
    db.exec(&format!("UPDATE auth_tb SET deleted_at = 1 WHERE group_name = '{group}_deletedgrant'"));
}

#[test]
fn auth_success_and_every_failure() {
    let f = Fixture::with_rows("auth", "key1:secret1", "", rows);
    check_auth_matrix(&f.server, &f.group, &f.topic);
    let (t, g) = (&f.topic, &f.group);
    for deleted in ["deletedapp", "deletedgrant"] {
        let mut c = f.server.connect();
        let key = if deleted == "deletedapp" { "key3:secret3" } else { "key1:secret1" };
        let reply = c.call(&["AUTH", &format!("{key}@{g}_{deleted}/topic={t}&role=pub")]);
        // A deleted app is unknown; app 1 proves its secret, so it learns
        // that the group (its deleted grant) is not its own.
        let want = if deleted == "deletedapp" {
            "WRONGPASS auth failed: invalid app key or secret".to_string()
        } else {
            format!("NOPERM auth failed: group '{g}_{deleted}' is not granted to app 'key1'")
        };
        assert_eq!(reply, err(&want));
        assert!(c.is_closed());
    }
}

#[test]
fn before_auth_only_auth_ping_and_quit() {
    let f = Fixture::with_rows("auth", "key1:secret1", "", rows);
    let mut c = f.server.connect();
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(c.call(&["SET", "k", "v"]), err("NOAUTH Authentication required."));
    assert_eq!(c.call(&["MGET"]), err("NOAUTH Authentication required."));
    assert_eq!(c.call(&["FLUSHALL"]), err("NOAUTH Authentication required."));
    // Still open, and AUTH still works after refusals.
    assert_eq!(c.call(&["auth", &f.auth_string("pub", "")]), ok());
    assert_eq!(c.call(&["ping"]), Frame::Simple("PONG".into()));
    assert_eq!(c.call(&["QUIT"]), ok());
    assert!(c.is_closed());
    assert!(read_topic_is_empty(&f.topic));
}

fn read_topic_is_empty(topic: &str) -> bool {
    // The topic was never created; nothing may have been produced to it.
    create_topic(topic, 1);
    read_topic(topic, 0).is_empty()
}

#[test]
fn silent_connection_is_closed_after_auth_timeout() {
    let f = Fixture::with_rows("auth", "key1:secret1", "auth_timeout_ms = 300", rows);
    let mut c = f.server.connect();
    c.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(c.read(), Some(err("ERR authentication timeout")));
    assert!(c.is_closed());
    // PING does not reset the clock: only AUTH does.
    let mut c = f.server.connect();
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(c.read(), Some(err("ERR authentication timeout")));
    // An authenticated connection is not subject to it.
    let mut c = f.server.connect();
    assert_eq!(c.call(&["AUTH", &f.auth_string("pub", "")]), ok());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn auth_works_through_a_real_redis_client() {
    let f = Fixture::with_rows("auth", "key1:secret1", "", rows);
    let url = format!("redis://{}/", f.server.addr);
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let reply: String = redis::cmd("AUTH").arg(f.auth_string("pub", "")).query(&mut conn).unwrap();
    assert_eq!(reply, "OK");
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
}
