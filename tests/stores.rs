//! The auth stores (MySQL, Redis in the redis_orm layout, the config file)
//! and grant changes applied while the server runs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use databus::resp::Frame;
use testkit::client::{err, ok, Client};
use testkit::database::TestDb;
use testkit::kafka::OwnBroker;
use testkit::process::Guard;
use testkit::services::{free_port, unique, TempDir};
use testkit::stores::{
    add_matrix_rows, auth_eventually, check_auth_matrix, store_test_config, FileGrants, GrantStore, RedisDb,
};
use testkit::topics::{create_topic, create_topic_on, read_topic, read_topic_on};

#[test]
fn auth_matrix_against_the_redis_store() {
    let mut store = RedisDb::claim();
    let (g, t) = (unique("g_rmatrix"), unique("t_rmatrix"));
    add_matrix_rows(&mut store, &g, &t);
    let server = store.start(&store_test_config(""));
    check_auth_matrix(&server, &g, &t);
}

#[test]
fn auth_matrix_against_the_file_store() {
    let mut store = FileGrants::new();
    let (g, t) = (unique("g_fmatrix"), unique("t_fmatrix"));
    add_matrix_rows(&mut store, &g, &t);
    let server = store.start(&store_test_config(""));
    check_auth_matrix(&server, &g, &t);
}

#[test]
fn redis_rows_written_by_hand_work_and_new_rows_arrive_with_a_refresh() {
    let mut store = RedisDb::claim();
    let (g, t) = (unique("g_hand"), unique("t_hand"));
    create_topic(&t, 1);
    store.add_app(1, "app_key1", "app_secret1", "cluster1");
    store.add_grant(1, 1, &g, 3, &t);
    let server = store.start(&store_test_config(""));
    let mut c = server.connect();
    assert_eq!(c.call(&["AUTH", &format!("app_key1:app_secret1@{g}/topic={t}&role=pub")]), ok());
    assert_eq!(c.call(&["SET", "k", "v"]), ok());
    assert_eq!(read_topic(&t, 1)[0].value, b"v");

    let later = unique("g_hand_later");
    let auth = format!("app_key1:app_secret1@{later}/topic={t}&role=sub");
    assert_eq!(
        server.connect().call(&["AUTH", &auth]),
        err(&format!("NOPERM auth failed: group '{later}' is not granted to app 'app_key1'"))
    );
    store.add_grant(7, 1, &later, 1, &t);
    auth_eventually(&server, &auth, &ok());
}

/// Secret change, pub revoked, app moved to another cluster: new AUTHs follow
/// at once (after a refresh); open connections of the group are closed with
/// a clear error — a subscriber only after its current MGET.
fn live_changes(store: &mut dyn GrantStore) {
    let mut broker2 = OwnBroker::start();
    let (g, t) = (unique("g_live"), unique("t_live"));
    create_topic(&t, 1);
    create_topic_on(&broker2.addr(), &t, 1);
    store.add_app(1, "key1", "old-secret", "cluster1");
    store.add_grant(1, 1, &g, 3, &t);
    let extra = format!("[clusters.cluster2]\nbrokers = [\"{}\"]\n", broker2.addr());
    let server = store.start(&store_test_config(&extra));
    let old_pub = format!("key1:old-secret@{g}/topic={t}&role=pub");
    let new_pub = format!("key1:new-secret@{g}/topic={t}&role=pub");

    let mut publisher = server.connect();
    assert_eq!(publisher.call(&["AUTH", &old_pub]), ok());
    assert_eq!(publisher.call(&["SET", "k", "before"]), ok());
    let mut subscriber = server.connect();
    assert_eq!(subscriber.call(&["AUTH", &format!("key1:old-secret@{g}/topic={t}&role=sub")]), ok());
    subscriber.send(&[b"MGET"]);

    // 1. The secret changes.
    store.set_secret(1, "new-secret");
    assert_eq!(publisher.read(), Some(err("ERR grant changed: authenticate again")));
    assert!(publisher.is_closed());
    let Some(Frame::Array(_)) = subscriber.read() else { panic!("the MGET in flight was not answered") };
    assert_eq!(subscriber.read(), Some(err("ERR grant changed: authenticate again")));
    assert!(subscriber.is_closed());
    let mut c = server.connect();
    assert_eq!(c.call(&["AUTH", &old_pub]), err("WRONGPASS auth failed: invalid app key or secret"));
    let mut publisher = server.connect();
    assert_eq!(publisher.call(&["AUTH", &new_pub]), ok());
    assert_eq!(publisher.call(&["SET", "k", "after-secret"]), ok());

    // 2. Publishing is revoked.
    store.set_operation(1, 1);
    assert_eq!(publisher.read(), Some(err("ERR grant changed: authenticate again")));
    auth_eventually(
        &server,
        &new_pub,
        &err(&format!("NOPERM auth failed: role 'pub' is not allowed for group '{g}'")),
    );

    // 3. Publishing is back, and the app moves to cluster2.
    store.set_operation(1, 2);
    auth_eventually(&server, &new_pub, &ok());
    store.set_cluster(1, "cluster2");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    // SETs that went to cluster1 before the refresh landed.
    let mut on_cluster1 = 0;
    loop {
        // Until the refresh lands, SETs still go to cluster1; each try is a new connection.
        let mut c = server.connect();
        assert_eq!(c.call(&["AUTH", &new_pub]), ok());
        n += 1;
        let reply = c.call(&["SET", "k", &format!("moved-{n}")]);
        // The refresh may land between this connection's AUTH and its SET:
        // then the connection is told so, and nothing was published.
        if reply == err("ERR grant changed: authenticate again") {
            assert!(Instant::now() < deadline, "nothing reached cluster2");
            continue;
        }
        assert_eq!(reply, ok());
        let on_two = read_topic_on(&broker2.addr(), &t, 0);
        if !on_two.is_empty() {
            assert_eq!(on_two.len(), 1);
            assert_eq!(on_two[0].value, format!("moved-{n}").into_bytes());
            break;
        }
        on_cluster1 += 1;
        assert!(Instant::now() < deadline, "nothing reached cluster2");
    }
    let on_one: Vec<Vec<u8>> = read_topic(&t, 2 + on_cluster1).into_iter().map(|r| r.value).collect();
    assert!(!on_one.contains(&format!("moved-{n}").into_bytes()));
    broker2.stop();
}

#[test]
fn live_changes_with_the_mysql_store() {
    live_changes(&mut TestDb::new("live"));
}

#[test]
fn live_changes_with_the_redis_store() {
    live_changes(&mut RedisDb::claim());
}

#[test]
fn live_changes_with_the_file_store() {
    live_changes(&mut FileGrants::new());
}

/// A redis-server of the test's own, to stop and start.
struct OwnRedis {
    port: u16,
    process: Option<Guard>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = free_port();
        let mut r = OwnRedis { port, process: None };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Guard::spawn(
            Command::new("redis-server")
                .args([
                    "--port",
                    &self.port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null()),
            "redis-server (scripts/services.sh up installs it)",
        );
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        self.process = None;
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The store goes away during a run: grants already loaded keep working,
/// the failure is logged once, and rows written after it is back arrive.
#[test]
fn store_outage_keeps_the_last_good_grants() {
    let mut redis = OwnRedis::start();
    let addr = format!("127.0.0.1:{}", redis.port);
    let mut store = RedisDb::claim_on(&addr);
    let (g, t) = (unique("g_outage"), unique("t_outage"));
    create_topic(&t, 1);
    store.add_app(1, "key1", "secret1", "cluster1");
    store.add_grant(1, 1, &g, 2, &t);

    let port = free_port();
    let config = store_test_config("").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let dir = TempDir::new("outage");
    let path = dir.write("databus.toml", &store.config_with(&config));
    let mut databus = Command::new(env!("CARGO_BIN_EXE_databus"))
        .args(["--conf", path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (log, stderr) = (log.clone(), databus.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        })
    };
    let server_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(server_addr).is_err() {
        assert!(Instant::now() < deadline, "databus did not start: {:?}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let auth = format!("key1:secret1@{g}/topic={t}&role=pub");
    assert_eq!(Client::connect(server_addr).call(&["AUTH", &auth]), ok());

    redis.stop();
    // Several refreshes (every 300 ms) fail while it is down.
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = Client::connect(server_addr);
    assert_eq!(c.call(&["AUTH", &auth]), ok(), "loaded grants must keep working");
    assert_eq!(c.call(&["SET", "k", "during-outage"]), ok());

    redis.restart();
    // The restarted Redis is empty: write the rows again, plus a new group.
    store.reconnect();
    store.add_app(1, "key1", "secret1", "cluster1");
    store.add_grant(1, 1, &g, 2, &t);
    let later = unique("g_outage_later");
    store.add_grant(2, 1, &later, 2, &t);
    let later_auth = format!("key1:secret1@{later}/topic={t}&role=pub");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = Client::connect(server_addr).call(&["AUTH", &later_auth]);
        if reply == ok() {
            break;
        }
        assert!(Instant::now() < deadline, "new row not picked up: {reply:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let _ = Command::new("kill").args(["-TERM", &databus.id().to_string()]).status();
    assert!(databus.wait().unwrap().success());
    reader.join().unwrap();
    let log = log.lock().unwrap();
    let failures = log.iter().filter(|l| l.contains("auth: refresh failed")).count();
    assert_eq!(failures, 1, "the outage must be logged once: {log:#?}");
    assert!(log.iter().any(|l| l.contains("reachable again")), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("secret1")), "a secret reached the log");
}
