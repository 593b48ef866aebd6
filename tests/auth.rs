//! AUTH against the MySQL store, the pre-AUTH rules and the auth timeout.

mod support;

use std::time::Duration;

use databus::resp::Frame;
use support::*;

struct Fixture {
    _db: TestDb,
    server: TestServer,
    topic: String,
    group: String,
}

/// One app (`key1`/`secret1`) with group `<g>` publishing and subscribing on
/// the topic, a publish-only group, and an app on an unconfigured cluster.
fn fixture(extra: &str) -> Fixture {
    let db = TestDb::new("auth");
    let topic = unique("t_auth");
    let group = unique("g_auth");
    db.add_app(1, "key1", "secret1", "cluster1");
    db.add_app(2, "key2", "secret2", "nowhere");
    db.add_grant(1, &group, 3, &topic);
    db.add_grant(1, &format!("{group}_pubonly"), 2, &topic);
    db.add_grant(2, &format!("{group}_lost"), 3, &topic);
    // Deleted rows do not exist.
    db.add_app(3, "key3", "secret3", "cluster1");
    db.exec("UPDATE app_tb SET deleted_at = 1700000000 WHERE id = 3");
    db.add_grant(3, &format!("{group}_deletedapp"), 3, &topic);
    db.add_grant(1, &format!("{group}_deletedgrant"), 3, &topic);
    db.exec(&format!(
        "UPDATE auth_tb SET deleted_at = 1 WHERE group_name = '{group}_deletedgrant'"
    ));
    let server = TestServer::start(&test_config(&db, extra, ""));
    Fixture {
        _db: db,
        server,
        topic,
        group,
    }
}

#[test]
fn auth_success_and_every_failure() {
    let f = fixture("");
    let (t, g) = (&f.topic, &f.group);
    let mut c = f.server.connect();
    assert_eq!(
        c.call(&["AUTH", &format!("key1:secret1@{g}/topic={t}&role=pub")]),
        ok()
    );
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));

    let cases = [
        ("key1-secret1", "ERR invalid auth string: missing '@' between credentials and group (expected key:secret@group/topic=T&role=pub|sub)".to_string()),
        (&format!("key1:secret1@{g}/topic={t}&role=owner") as &str, "ERR invalid auth string: role must be pub or sub, got 'owner' (expected key:secret@group/topic=T&role=pub|sub)".to_string()),
        (&format!("key1:secret1@nosuchgroup/topic={t}&role=pub"), "ERR auth failed: unknown group 'nosuchgroup'".to_string()),
        (&format!("key1:secret1@{g}/topic=other&role=pub"), format!("ERR auth failed: topic 'other' is not granted to group '{g}'")),
        (&format!("keyX:secret1@{g}/topic={t}&role=pub"), format!("ERR auth failed: wrong app key for group '{g}'")),
        (&format!("key1:s3cr3t-guess@{g}/topic={t}&role=pub"), "ERR auth failed: wrong secret for app key 'key1'".to_string()),
        (&format!("key1:secret1@{g}_pubonly/topic={t}&role=sub"), format!("ERR auth failed: role 'sub' is not allowed for group '{g}_pubonly'")),
        (&format!("key2:secret2@{g}_lost/topic={t}&role=pub"), "ERR auth failed: cluster 'nowhere' of app 'key2' is not configured".to_string()),
        (&format!("key3:secret3@{g}_deletedapp/topic={t}&role=pub"), format!("ERR auth failed: unknown group '{g}_deletedapp'")),
        (&format!("key1:secret1@{g}_deletedgrant/topic={t}&role=pub"), format!("ERR auth failed: unknown group '{g}_deletedgrant'")),
    ];
    for (auth, want) in cases {
        let mut c = f.server.connect();
        let reply = c.call(&["AUTH", auth]);
        assert_eq!(reply, err(&want), "AUTH {auth}");
        for secret in ["secret1", "secret2", "secret3", "s3cr3t-guess"] {
            assert!(!want.contains(secret), "reply to {auth} echoes the secret");
        }
        assert!(c.is_closed(), "connection stays open after failed AUTH {auth}");
    }
}

#[test]
fn before_auth_only_auth_ping_and_quit() {
    let f = fixture("");
    let mut c = f.server.connect();
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
    assert_eq!(c.call(&["SET", "k", "v"]), err("NOAUTH Authentication required."));
    assert_eq!(c.call(&["MGET"]), err("NOAUTH Authentication required."));
    assert_eq!(c.call(&["FLUSHALL"]), err("NOAUTH Authentication required."));
    // Still open, and AUTH still works after refusals.
    let auth = format!("key1:secret1@{}/topic={}&role=pub", f.group, f.topic);
    assert_eq!(c.call(&["auth", &auth]), ok());
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
    let f = fixture("auth_timeout_ms = 300");
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
    assert_eq!(
        c.call(&[
            "AUTH",
            &format!("key1:secret1@{}/topic={}&role=pub", f.group, f.topic)
        ]),
        ok()
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
}

#[test]
fn auth_works_through_a_real_redis_client() {
    let f = fixture("");
    let url = format!("redis://{}/", f.server.addr);
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    let auth = format!("key1:secret1@{}/topic={}&role=pub", f.group, f.topic);
    let reply: String = redis::cmd("AUTH").arg(&auth).query(&mut conn).unwrap();
    assert_eq!(reply, "OK");
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
}
