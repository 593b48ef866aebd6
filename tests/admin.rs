//! The admin port against the real binary: `/metrics` parsed by the Python
//! `prometheus_client` parser before and after known traffic, `/ready`
//! following a broker that stops and returns, and HTTP publish with curl
//! and Python's own HTTP client, every error status included.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use serde_json::Value;
use testkit::client::{cmd_bytes, mget_records, ok, Client};
use testkit::daemon::{broker_list, daemon_config, Daemon};
use testkit::database::TestDb;
use testkit::kafka::OwnBroker;
use testkit::process::Guard;
use testkit::services::{free_port, unique, venv_python, TempDir};
use testkit::topics::{create_topic, create_topic_on, read_topic};

/// A databus child with its admin port, its own database, topic and group.
struct Admin {
    daemon: Daemon,
    url: String,
    topic: String,
    group: String,
    db: TestDb,
    /// The config file (SIGHUP re-reads it) and its directory.
    config: std::path::PathBuf,
    _dir: TempDir,
}

const SECRET: &str = "app_secret1";

impl Admin {
    /// `brokers` as TOML list items; `extra` top-level keys.
    fn start(name: &str, partitions: i32, brokers: &str, extra: &str) -> Admin {
        let db = TestDb::new(name);
        let topic = unique(&format!("t_{name}"));
        let group = unique(&format!("g_{name}"));
        db.add_app(1, "app_key1", SECRET, "cluster1");
        db.add_grant(1, &group, 3, &topic);
        // Another group of the same app that may only subscribe.
        db.add_grant(1, &format!("{group}_sub"), 1, &topic);
        let first = brokers.split(',').next().unwrap().trim().trim_matches('"');
        create_topic_on(first, &topic, partitions);
        let (port, admin_port) = (free_port(), free_port());
        let config = daemon_config(
            port,
            &db.url(),
            brokers,
            &format!("admin_addr = \"127.0.0.1:{admin_port}\"\nhealth_interval_ms = 300\n{extra}"),
        ) + "[subscriber]\nwait_timeout_ms = 1000\n";
        let dir = TempDir::new(name);
        let path = dir.write("databus.toml", &config);
        let daemon = Daemon::start(&["--conf", path.to_str().unwrap()], port);
        Admin {
            daemon,
            url: format!("http://127.0.0.1:{admin_port}"),
            topic,
            group,
            db,
            config: path,
            _dir: dir,
        }
    }

    fn auth(&self, role: &str, extra: &str) -> String {
        format!("app_key1:{SECRET}@{}/topic={}&role={role}{extra}", self.group, self.topic)
    }

    fn login(&self, role: &str, extra: &str) -> Client {
        let mut c = Client::connect(self.daemon.addr);
        assert_eq!(c.call(&["AUTH", &self.auth(role, extra)]), ok());
        c
    }

    fn pub_path(&self) -> String {
        format!("/databus/pub?topic={}&group={}", self.topic, self.group)
    }
}

/// Every sample of `/metrics`, as the Python Prometheus parser reads it:
/// `name{label="value",...}` (labels sorted) to value.
fn scrape(python: &std::path::Path, url: &str) -> BTreeMap<String, f64> {
    const SCRIPT: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
out = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let out = Command::new(python).args(["-c", SCRIPT, url]).output().unwrap();
    assert!(out.status.success(), "scrape failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of one sample, 0 when it is absent.
fn sample(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// `curl` with `args`, the body on stdin; (status, body).
fn curl(url: &str, args: &[&str], body: Option<&[u8]>) -> (u16, String) {
    let mut child = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .args(if body.is_some() { &["--data-binary", "@-"][..] } else { &[][..] })
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl (scripts/services.sh test-tools installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(body) = body {
        stdin.write_all(body).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "curl {args:?} {url}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

fn http_publish(a: &Admin, user: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = curl(
        &format!("{}{path}", a.url),
        &["-u", user, "-H", "Content-Type: application/json"],
        Some(body.as_bytes()),
    );
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}

/// MGET until `n` records came (each batch committed per partition unless
/// `commit` is false); returns them and the MGETs and commits it took.
fn consume(c: &mut Client, n: usize, commit: bool) -> (Vec<Value>, usize, usize) {
    let (mut got, mut mgets, mut commits) = (Vec::new(), 0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} records after 60 s", got.len());
        let batch = mget_records(c.call(&["MGET"]));
        mgets += 1;
        let mut last: BTreeMap<i64, i64> = BTreeMap::new();
        for m in batch {
            last.insert(m["partition"].as_i64().unwrap(), m["offset"].as_i64().unwrap());
            got.push(m);
        }
        if commit {
            for (p, o) in last {
                assert_eq!(c.call(&["SET", &p.to_string(), &o.to_string()]), ok());
                commits += 1;
            }
        }
    }
    (got, mgets, commits)
}

#[test]
fn metrics_move_by_exactly_the_traffic_sent() {
    let python = venv_python();
    let a = Admin::start("admin_metrics", 2, &broker_list(), "");
    let (g, t) = (a.group.clone(), a.topic.clone());
    let gt = format!("group=\"{g}\",topic=\"{t}\"");
    let agt = format!("app=\"app_key1\",{gt}");
    let before = scrape(&python, &a.url);

    // Publish: 5 SETs and 1 HSET, one SET with too few arguments, one unknown command.
    let mut publisher = a.login("pub", "");
    let values: Vec<String> = (0..6).map(|i| format!("value-{i}-{}", "x".repeat(i))).collect();
    for (i, v) in values.iter().enumerate().take(5) {
        assert_eq!(publisher.call(&["SET", &format!("k{i}"), v]), ok());
    }
    assert_eq!(publisher.call(&["HSET", "k5", r#"{"m":"1"}"#, &values[5]]), ok());
    assert!(matches!(publisher.call(&["SET", "only-key"]), Frame::Error(_)));
    assert!(matches!(publisher.call(&["FLUSHALL"]), Frame::Error(_)));
    // Three records over HTTP.
    let http_values = ["\"h0\"", "{\"n\":1}", "[1,2,3]"];
    let body = format!(
        "{{\"records\":[{}]}}",
        http_values.iter().map(|v| format!("{{\"key\":\"h\",\"value\":{v}}}")).collect::<Vec<_>>().join(",")
    );
    let (status, reply) = http_publish(&a, &format!("app_key1:{SECRET}"), &a.pub_path(), &body);
    assert_eq!(status, 200, "{reply}");
    // Refused AUTHs: a wrong secret, and a topic the group does not have.
    let mut stranger = Client::connect(a.daemon.addr);
    let wrong = a.auth("pub", "").replace(SECRET, "wrong-secret");
    assert!(matches!(stranger.call(&["AUTH", &wrong]), Frame::Error(e) if e.starts_with("WRONGPASS")));
    let mut other = Client::connect(a.daemon.addr);
    let no_topic = a.auth("pub", "").replace(&format!("topic={t}"), "topic=not_granted");
    assert!(matches!(other.call(&["AUTH", &no_topic]), Frame::Error(e) if e.starts_with("NOPERM")));
    let mut unknown = Client::connect(a.daemon.addr);
    let unknown_key = a.auth("pub", "").replace("app_key1", "no_such_app");
    assert!(matches!(unknown.call(&["AUTH", &unknown_key]), Frame::Error(e) if e.starts_with("WRONGPASS")));

    // Consume and commit everything.
    let mut subscriber = a.login("sub", "&offset=old");
    let (records, mgets, commits) = consume(&mut subscriber, 9, true);
    assert_eq!(records.len(), 9);
    let during = scrape(&python, &a.url);

    let published_bytes: usize = values.iter().map(String::len).sum::<usize>()
        + ["h0", "{\"n\":1}", "[1,2,3]"].iter().map(|v| v.len()).sum::<usize>();
    let delta = |key: &str| sample(&during, key) - sample(&before, key);
    let expect = [
        (format!("databus_published_records_total{{{agt}}}"), 9.0),
        (format!("databus_published_bytes_total{{{agt}}}"), published_bytes as f64),
        (format!("databus_delivered_records_total{{{agt}}}"), 9.0),
        (format!("databus_delivered_bytes_total{{{agt}}}"), published_bytes as f64),
        (format!("databus_commits_total{{group=\"{g}\",result=\"ok\",topic=\"{t}\"}}"), commits as f64),
        (format!("databus_commits_total{{group=\"{g}\",result=\"error\",topic=\"{t}\"}}"), 0.0),
        ("databus_commands_total{command=\"set\",result=\"ok\"}".into(), (5 + commits) as f64),
        ("databus_commands_total{command=\"hset\",result=\"ok\"}".into(), 1.0),
        ("databus_commands_total{command=\"set\",result=\"ERR\"}".into(), 1.0),
        ("databus_commands_total{command=\"other\",result=\"ERR\"}".into(), 1.0),
        ("databus_commands_total{command=\"auth\",result=\"ok\"}".into(), 2.0),
        ("databus_commands_total{command=\"auth\",result=\"WRONGPASS\"}".into(), 2.0),
        ("databus_commands_total{command=\"auth\",result=\"NOPERM\"}".into(), 1.0),
        ("databus_commands_total{command=\"mget\",result=\"ok\"}".into(), mgets as f64),
        ("databus_commands_total{command=\"http_publish\",result=\"ok\"}".into(), 1.0),
        // A known app's refusals name it; a stranger's key never becomes a label.
        ("databus_connections_refused_total{app=\"app_key1\",reason=\"WRONGPASS\"}".into(), 1.0),
        ("databus_connections_refused_total{app=\"app_key1\",reason=\"NOPERM\"}".into(), 1.0),
        ("databus_connections_refused_total{app=\"\",reason=\"WRONGPASS\"}".into(), 1.0),
        ("databus_publish_duration_seconds_count{}".into(), 9.0),
        ("databus_mget_wait_seconds_count{}".into(), mgets as f64),
    ];
    for (key, want) in &expect {
        assert_eq!(delta(key), *want, "{key}: before {:?}, after {:?}", before.get(key), during.get(key));
    }
    // Gauges: what is open now.
    assert_eq!(sample(&during, "databus_connections{app=\"app_key1\",role=\"pub\"}"), 1.0);
    assert_eq!(sample(&during, "databus_connections{app=\"app_key1\",role=\"sub\"}"), 1.0);
    assert_eq!(sample(&during, &format!("databus_group_members{{{gt}}}")), 1.0);
    assert_eq!(sample(&during, "databus_auth_grants{}"), 2.0);
    assert_eq!(sample(&during, "databus_auth_refresh_failures_total{}"), 0.0);
    assert_eq!(sample(&during, "databus_producer_queue_depth{cluster=\"cluster1\"}"), 0.0);
    assert_eq!(sample(&during, "databus_produce_errors_total{cause=\"timeout\",cluster=\"cluster1\"}"), 0.0);
    // databus's own producer counts its requests: each of the six depth-1
    // SETs went alone, the HTTP batch's three records (one key, so one
    // partition) in one to three requests; librdkafka's exports none.
    let own = |name: &str| delta(&format!("databus_produce_{name}_total{{cluster=\"cluster1\"}}"));
    let own_engine = std::env::var("DATABUS_TEST_PRODUCER_ENGINE").map_or(true, |e| e == "databus");
    if own_engine {
        let (requests, batches, records) = (own("requests"), own("batches"), own("request_records"));
        assert!((7.0..=9.0).contains(&requests), "{requests} produce requests for 6 SETs and 3 HTTP records");
        assert_eq!(batches, requests, "one partition per request");
        assert_eq!(records, 9.0 + own("retries"), "records in requests");
        assert_eq!(own("epoch_bumps"), 0.0);
    } else {
        assert!(!during.keys().any(|k| k.starts_with("databus_produce_requests_total")));
    }
    // The broker state comes from the probe client's librdkafka statistics,
    // emitted once a second: scrape until they are in.
    let up = |m: &BTreeMap<String, f64>| {
        m.iter()
            .any(|(k, v)| k.starts_with("databus_kafka_broker_up{") && k.contains("cluster1") && *v == 1.0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut latest = during.clone();
    while !up(&latest) {
        assert!(Instant::now() < deadline, "no broker of cluster1 is UP after 30 s: {latest:?}");
        thread::sleep(Duration::from_millis(200));
        latest = scrape(&python, &a.url);
    }
    assert!(
        !during
            .keys()
            .any(|k| k.contains("not_granted") || k.contains("wrong-secret") || k.contains("no_such_app")),
        "a refused client's input became a label"
    );

    // Lag: 4 more records, handed out but not committed. The statistics come
    // with the consumer's polls, so keep polling until they report.
    for i in 0..4 {
        assert_eq!(publisher.call(&["SET", &format!("late{i}"), "v"]), ok());
    }
    let (late, _, _) = consume(&mut subscriber, 4, false);
    assert_eq!(late.len(), 4);
    let lag_key = format!("databus_consumer_lag{{group=\"{g}\",partition=");
    let deadline = Instant::now() + Duration::from_secs(60);
    let lags = loop {
        let now = scrape(&python, &a.url);
        let lags: Vec<f64> = now.iter().filter(|(k, _)| k.starts_with(&lag_key)).map(|(_, v)| *v).collect();
        if lags.len() == 2 && lags.iter().sum::<f64>() == 4.0 {
            break lags;
        }
        assert!(Instant::now() < deadline, "consumer lag never reached 4: {lags:?}");
        let _ = subscriber.call(&["MGET"]);
    };
    assert_eq!(lags.len(), 2, "one series per partition held");

    // Closing the connections takes their gauges back.
    drop((publisher, subscriber, stranger, other, unknown));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = scrape(&python, &a.url);
        let open: f64 =
            after.iter().filter(|(k, _)| k.starts_with("databus_connections{")).map(|(_, v)| v).sum();
        let lag_series = after.keys().filter(|k| k.starts_with(&lag_key)).count();
        if open == 0.0 && lag_series == 0 && sample(&after, &format!("databus_group_members{{{gt}}}")) == 0.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "gauges not back to 0 after the clients left: {after:?}");
        thread::sleep(Duration::from_millis(100));
    }
    let log = a.daemon.log();
    assert!(!log.contains(SECRET) && !log.contains("wrong-secret"), "a secret reached the log:\n{log}");
}

/// Polls `/ready` until it answers `want`; returns its JSON body.
fn ready_becomes(a: &Admin, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = curl(&format!("{}/ready", a.url), &[], None);
        if status == want {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(Instant::now() < deadline, "/ready stayed {status} ({body}), waiting for {want}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ready_follows_the_broker() {
    let mut broker = OwnBroker::start();
    let a = Admin::start("admin_ready", 1, &format!("\"{}\"", broker.addr()), "");
    let body = ready_becomes(&a, 200);
    assert_eq!(body["ready"], true);
    assert_eq!(body["clusters"], serde_json::json!(["cluster1"]));
    assert_eq!(curl(&format!("{}/health", a.url), &[], None), (200, "ok\n".into()));

    broker.stop();
    let body = ready_becomes(&a, 503);
    assert_eq!(body["ready"], false);
    let missing = body["missing"].as_array().unwrap();
    assert!(missing.iter().any(|m| m.as_str().unwrap().starts_with("cluster 'cluster1'")), "{body}");
    // Alive, though not ready.
    assert_eq!(curl(&format!("{}/health", a.url), &[], None).0, 200);

    broker.restart();
    let body = ready_becomes(&a, 200);
    assert_eq!(body["missing"], serde_json::json!([]));
}

#[test]
fn http_publish_with_curl_and_python() {
    let python = venv_python();
    let a = Admin::start("admin_http", 2, &broker_list(), "max_value_size = 100\nadmin_max_body = 2048\n");
    let user = format!("app_key1:{SECRET}");

    // curl: two records, one with metadata; color from the query.
    let body = r#"{"records":[{"key":"k1","value":{"a":[1,2]},"metadata":{"trace":"t1"}},{"key":"k2","value":"plain","headers":{"schema":"v2","trace-id":"abc"}}]}"#;
    let (status, reply) = http_publish(&a, &user, &format!("{}&color=red", a.pub_path()), body);
    assert_eq!(status, 200, "{reply}");
    let offsets = reply["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 2);
    assert!(offsets.iter().all(|o| o["error_code"] == 0 && o["offset"].as_i64().unwrap() >= 0), "{reply}");

    // Python's own HTTP client, Basic auth by urllib.
    let script = r#"
import base64, json, sys, urllib.request, urllib.error
url, user = sys.argv[1], sys.argv[2]
def post(credentials, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    req.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
status, reply = post(user, {"records": [{"key": "k3", "value": 42}]})
assert status == 200, (status, reply)
denied, _ = post(user.split(":")[0] + ":nope", {"records": [{"key": "k4", "value": 1}]})
print(json.dumps({"offsets": reply["offsets"], "denied": denied}))
"#;
    let out = Command::new(&python)
        .args(["-c", script, &format!("{}{}", a.url, a.pub_path()), &user])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let py: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(py["denied"], 401);
    let py_offset = &py["offsets"][0];
    assert_eq!(py_offset["error_code"], 0);

    // What reached Kafka: exactly those three records, where the replies said.
    let records = read_topic(&a.topic, 3);
    assert_eq!(records.len(), 3, "{records:?}");
    let find =
        |key: &str| records.iter().find(|r| r.key == key.as_bytes()).unwrap_or_else(|| panic!("{key}"));
    let (k1, k2, k3) = (find("k1"), find("k2"), find("k3"));
    assert_eq!(k1.value, br#"{"a":[1,2]}"#);
    assert_eq!(
        k1.headers,
        vec![("color".to_string(), b"red".to_vec()), ("metadata".to_string(), br#"{"trace":"t1"}"#.to_vec())]
    );
    assert_eq!(k2.value, b"plain");
    assert_eq!(
        k2.headers,
        vec![
            ("color".to_string(), b"red".to_vec()),
            ("schema".to_string(), b"v2".to_vec()),
            ("trace-id".to_string(), b"abc".to_vec())
        ]
    );
    assert_eq!(k3.value, b"42");
    assert_eq!(k3.headers, vec![("color".to_string(), Vec::new())]);
    for (record, reply) in [(k1, &offsets[0]), (k2, &offsets[1]), (k3, py_offset)] {
        assert_eq!(
            (record.partition as i64, record.offset),
            (reply["partition"].as_i64().unwrap(), reply["offset"].as_i64().unwrap())
        );
    }

    // Every refusal, with nothing produced.
    let one = r#"{"records":[{"key":"x","value":"y"}]}"#;
    let url = |path: &str| format!("{}{path}", a.url);
    let cases: Vec<(&str, (u16, String), &str)> = vec![
        ("no credentials", curl(&url(&a.pub_path()), &["-X", "POST"], Some(one.as_bytes())), "401"),
        (
            "wrong secret",
            curl(&url(&a.pub_path()), &["-u", "app_key1:nope"], Some(one.as_bytes())),
            "invalid app key or secret",
        ),
        (
            "topic not granted",
            curl(
                &url(&format!("/databus/pub?topic=other&group={}", a.group)),
                &["-u", &user],
                Some(one.as_bytes()),
            ),
            "topic 'other' is not granted",
        ),
        (
            "role not allowed",
            curl(
                &url(&format!("/databus/pub?topic={}&group={}_sub", a.topic, a.group)),
                &["-u", &user],
                Some(one.as_bytes()),
            ),
            "role 'pub' is not allowed",
        ),
        (
            "no group",
            curl(&url(&format!("/databus/pub?topic={}", a.topic)), &["-u", &user], Some(one.as_bytes())),
            "topic and group",
        ),
        ("malformed body", curl(&url(&a.pub_path()), &["-u", &user], Some(b"{\"records\":[")), "malformed"),
        (
            "wrong shape",
            curl(&url(&a.pub_path()), &["-u", &user], Some(br#"{"records":[{"value":1}]}"#)),
            "missing field `key`",
        ),
        (
            "databus's own header",
            curl(
                &url(&a.pub_path()),
                &["-u", &user],
                Some(br#"{"records":[{"key":"x","value":1,"headers":{"color":"blue"}}]}"#),
            ),
            "header 'color' is databus's own",
        ),
        (
            "value over max_value_size",
            curl(
                &url(&a.pub_path()),
                &["-u", &user],
                Some(format!(r#"{{"records":[{{"key":"x","value":"{}"}}]}}"#, "v".repeat(101)).as_bytes()),
            ),
            "over the limit of 100",
        ),
        (
            "body over admin_max_body",
            curl(
                &url(&a.pub_path()),
                &["-u", &user],
                Some(format!(r#"{{"records":[{{"key":"x","value":"{}"}}]}}"#, "v".repeat(4000)).as_bytes()),
            ),
            "over 2048 bytes",
        ),
        ("GET on publish", curl(&url(&a.pub_path()), &["-u", &user], None), "method not allowed"),
        ("unknown path", curl(&url("/nothing"), &[], None), "not found"),
    ];
    let statuses: Vec<(&str, u16)> = cases.iter().map(|(name, (status, _), _)| (*name, *status)).collect();
    assert_eq!(
        statuses,
        vec![
            ("no credentials", 401),
            ("wrong secret", 401),
            ("topic not granted", 403),
            ("role not allowed", 403),
            ("no group", 400),
            ("malformed body", 400),
            ("wrong shape", 400),
            ("databus's own header", 400),
            ("value over max_value_size", 413),
            ("body over admin_max_body", 413),
            ("GET on publish", 405),
            ("unknown path", 404),
        ]
    );
    for (name, (_, body), says) in &cases {
        if *says != "401" {
            assert!(body.contains(says), "{name}: {body}");
        }
        assert!(!body.contains(SECRET), "{name}: the reply holds the secret");
    }
    // Nothing more reached the topic.
    assert_eq!(read_topic(&a.topic, 3).len(), 3);
    let log = a.daemon.log();
    assert!(!log.contains(SECRET) && !log.contains("nope"), "a secret reached the log:\n{log}");
}

/// Queue mode's numbers move by exactly what the consumers did: entries
/// delivered, claimed, dead-lettered (once the dead-letter topic has them)
/// and acknowledged, the pending entries, no commit failures.
#[test]
fn queue_metrics_count_each_event() {
    let python = venv_python();
    let a = Admin::start("admin_queue", 1, &broker_list(), "[queue]\nmax_deliveries = 2\n");
    create_topic(&format!("{}.dlq", a.topic), 1);
    let gt = format!("group=\"{}\",topic=\"{}\"", a.group, a.topic);
    let mut publisher = a.login("pub", "");
    let ids: Vec<String> = (0..4)
        .map(|i| match publisher.call(&["XADD", &a.topic, "*", "n", &i.to_string()]) {
            Frame::Bulk(id) => String::from_utf8(id).unwrap(),
            other => panic!("XADD: {other:?}"),
        })
        .collect();
    let mut c = a.login("sub", "&offset=old");
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 4 {
        assert!(Instant::now() < deadline, "only {read} of 4 entries");
        let reply = c.call(&[
            "XREADGROUP",
            "GROUP",
            &a.group,
            "c",
            "COUNT",
            "10",
            "BLOCK",
            "1000",
            "STREAMS",
            &a.topic,
            ">",
        ]);
        if let Frame::Array(streams) = reply {
            if let Some(Frame::Array(stream)) = streams.first() {
                if let Some(Frame::Array(entries)) = stream.get(1) {
                    read += entries.len();
                }
            }
        }
    }
    assert_eq!(c.call(&["XACK", &a.topic, &a.group, &ids[0], &ids[1]]), Frame::Integer(2));
    // Delivered twice now (the read, the claim): the next claim of it
    // dead-letters it instead, and claims the fourth.
    let claimed = c.call(&["XCLAIM", &a.topic, &a.group, "c2", "0", &ids[2], "JUSTID"]);
    assert_eq!(claimed, Frame::Array(vec![Frame::Bulk(ids[2].clone().into_bytes())]));
    let claimed = c.call(&["XCLAIM", &a.topic, &a.group, "c2", "0", &ids[2]]);
    assert!(matches!(&claimed, Frame::Array(e) if e.len() == 1), "{claimed:?}");
    let auto = c.call(&["XAUTOCLAIM", &a.topic, &a.group, "c3", "0", "0-0", "COUNT", "10"]);
    let Frame::Array(auto) = auto else { panic!("XAUTOCLAIM: {auto:?}") };
    assert_eq!(auto[2], Frame::Array(vec![Frame::Bulk(ids[2].clone().into_bytes())]), "dead-lettered");
    let want = [
        (format!("databus_queue_entries_total{{event=\"delivered\",{gt}}}"), 4.0),
        (format!("databus_queue_entries_total{{event=\"acknowledged\",{gt}}}"), 2.0),
        (format!("databus_queue_entries_total{{event=\"claimed\",{gt}}}"), 3.0),
        (format!("databus_queue_entries_total{{event=\"dead_lettered\",{gt}}}"), 1.0),
        (format!("databus_queue_entries_total{{event=\"redelivered\",{gt}}}"), 0.0),
        (format!("databus_queue_pending{{{gt}}}"), 1.0),
        (format!("databus_queue_commit_failures_total{{{gt}}}"), 0.0),
    ];
    // The group's thread hands its numbers over every 100 ms; the dead
    // letter counts once the broker has it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(&python, &a.url);
        let got: Vec<(String, f64)> = want.iter().map(|(k, _)| (k.clone(), sample(&m, k))).collect();
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "queue metrics {got:?}, want {want:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// The Grafana dashboard and the Prometheus alert rules of `packaging/`
/// against a real Prometheus (Debian's package) scraping a databus under
/// publish, consume, commit, queue and failing load: `promtool` accepts the
/// rules, Prometheus loads every one of them, and every expression returns
/// data — the dashboard's as written, an alert's measured side (each clause
/// of `and`/`or`, its comparison taken off), so a renamed metric or label
/// fails here rather than on an operator's screen.
#[test]
fn the_dashboard_and_alert_rules_read_real_series() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/prometheus/databus-rules.yml");
    let dashboard = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/grafana/databus-dashboard.json");
    let promtool = Command::new("promtool").args(["check", "rules", rules]).output().unwrap_or_else(|e| {
        panic!("promtool: {e} (scripts/services.sh test-tools installs Debian's prometheus package)")
    });
    assert!(promtool.status.success(), "{}", String::from_utf8_lossy(&promtool.stdout));

    // The publisher's 20 SETs run past its app's rate (throttle series).
    let extra = "refresh_interval_ms = 300\n[clusters.dead]\nbrokers = [\"127.0.0.1:1\"]\n\
                 [limits.apps.\"app_key1\"]\npublish_records_per_s = 10\n";
    let a = Admin::start("prom", 2, &broker_list(), extra);
    // An app on a cluster nobody answers for: its SET fails (produce errors).
    let dead_group = format!("{}_dead", a.group);
    a.db.add_app(2, "app_key2", SECRET, "dead");
    a.db.add_grant(2, &dead_group, 2, &a.topic);

    // Publish, consume and commit, read as a queue, fail a login and a SET.
    let mut publisher = a.login("pub", "");
    for i in 0..20 {
        assert_eq!(publisher.call(&["SET", &format!("k{i}"), "v"]), ok());
    }
    let mut subscriber = a.login("sub", "&offset=old");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    let mut got = 0;
    while got < 20 {
        assert!(Instant::now() < deadline, "{got} of 20 messages");
        if let Frame::Array(items) = subscriber.call(&["MGET"]) {
            for item in items {
                let Frame::Bulk(raw) = item else { panic!("{item:?}") };
                let m: Value = serde_json::from_slice(&raw).unwrap();
                last = Some((m["partition"].to_string(), m["offset"].to_string()));
                got += 1;
            }
        }
    }
    let (partition, offset) = last.unwrap();
    assert_eq!(subscriber.call(&["SET", &partition, &offset]), ok());
    let mut queue = Client::connect(a.daemon.addr);
    let queue_group = format!("{}_sub", a.group);
    let queue_auth = format!("app_key1:{SECRET}@{queue_group}/topic={}&role=sub&offset=old", a.topic);
    assert_eq!(queue.call(&["AUTH", &queue_auth]), ok());
    let read =
        ["XREADGROUP", "GROUP", &queue_group, "c1", "COUNT", "5", "BLOCK", "10000", "STREAMS", &a.topic, ">"];
    // [[stream, [[id, fields], ...]]]: the first entry's ID.
    let first_id = loop {
        assert!(Instant::now() < deadline, "no queue entry");
        if let Frame::Array(streams) = queue.call(&read) {
            let Frame::Array(stream) = &streams[0] else { panic!("{streams:?}") };
            let Frame::Array(entries) = &stream[1] else { panic!("{stream:?}") };
            let Frame::Array(entry) = &entries[0] else { panic!("{entries:?}") };
            let Frame::Bulk(id) = &entry[0] else { panic!("{entry:?}") };
            break String::from_utf8(id.clone()).unwrap();
        }
    };
    assert_eq!(queue.call(&["XACK", &a.topic, &queue_group, &first_id]), Frame::Integer(1));
    let mut stranger = Client::connect(a.daemon.addr);
    let _ = stranger.call(&["AUTH", &format!("app_key1:nope@{}/topic={}&role=pub", a.group, a.topic)]);
    let dead_auth = format!("app_key2:{SECRET}@{dead_group}/topic={}&role=pub", a.topic);
    let mut dead = loop {
        let mut c = Client::connect(a.daemon.addr);
        if c.call(&["AUTH", &dead_auth]) == ok() {
            break c;
        }
        assert!(Instant::now() < deadline, "the dead cluster's app never arrived");
        thread::sleep(Duration::from_millis(100));
    };
    assert!(matches!(dead.call(&["SET", "k", "v"]), Frame::Error(e) if e.starts_with("TRYAGAIN")));

    // A real Prometheus, scraping every second and evaluating the rules.
    let dir = TempDir::new("prometheus");
    let admin = a.url.trim_start_matches("http://");
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [\"{rules}\"]\n\
         scrape_configs:\n  - job_name: databus\n    static_configs: [{{targets: [\"{admin}\"]}}]\n"
    );
    let config = dir.write("prometheus.yml", &config);
    let port = free_port();
    let _prometheus = Guard::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", config.with_file_name("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "prometheus (scripts/services.sh test-tools installs it)",
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = |expr: &str| -> Vec<Value> {
        let out = Command::new("curl")
            .args(["-sS", "-G", "--data-urlencode", &format!("query={expr}"), &format!("{api}/query")])
            .output()
            .unwrap();
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        reply["data"]["result"].as_array().cloned().unwrap_or_default()
    };
    // Enough scrapes for every rate and delta to have two samples. The
    // subscriber keeps polling meanwhile: its lag comes with its polls.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_least = |expr: &str, n: f64| {
        query(expr).first().is_some_and(|r| r["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= n)
    };
    while !(at_least("count_over_time(up{job=\"databus\"}[1m])", 5.0)
        && at_least("count(count_over_time(databus_consumer_lag[1m]) >= 3)", 1.0))
    {
        assert!(Instant::now() < deadline, "Prometheus never scraped databus's lag three times");
        assert_eq!(subscriber.call(&["MGET", "BLOCK", "300"]), Frame::Array(Vec::new()));
    }

    let (_, loaded) = curl(&format!("{api}/rules"), &[], None);
    let loaded: Value = serde_json::from_str(&loaded).unwrap();
    let loaded: Vec<&Value> = loaded["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 10, "{loaded:?}");
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "{loaded:?}");

    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exprs.len(), 26);
    // The own producer's panels have no data when librdkafka's produces.
    if std::env::var("DATABUS_TEST_PRODUCER_ENGINE").is_ok_and(|e| e != "databus") {
        exprs.retain(|e| {
            !e.contains("databus_produce_requests_total") && !e.contains("databus_produce_retries_total")
        });
        assert_eq!(exprs.len(), 24);
    }
    for rule in &loaded {
        exprs.extend(measured_sides(rule["query"].as_str().unwrap()));
    }
    let empty: Vec<&String> = exprs.iter().filter(|e| query(e).is_empty()).collect();
    assert!(empty.is_empty(), "no data for {empty:#?}");
}

/// An alert expression's measured sides: each clause of a top-level `and`
/// or `or`, with a trailing comparison to a number taken off.
fn measured_sides(expr: &str) -> Vec<String> {
    let mut clauses = Vec::new();
    let (mut depth, mut start) = (0, 0);
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ if depth == 0 => {
                for op in [" and ", " or "] {
                    if expr[i..].starts_with(op) {
                        clauses.push(expr[start..i].to_owned());
                        start = i + op.len();
                        i = start - 1;
                        break;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    clauses.push(expr[start..].to_owned());
    clauses
        .iter()
        .map(|c| {
            let c = c.trim();
            let cut = ["==", "!=", ">=", "<=", ">", "<"]
                .iter()
                .filter_map(|op| c.rfind(op).filter(|&at| c[at + op.len()..].trim().parse::<f64>().is_ok()))
                .max();
            cut.map_or(c, |at| c[..at].trim()).to_owned()
        })
        .collect()
}

#[test]
fn an_alert_is_measured_without_its_comparison() {
    assert_eq!(measured_sides("up{job=\"databus\"} == 0"), ["up{job=\"databus\"}"]);
    assert_eq!(
        measured_sides("sum by (a) (x) > 1000 and sum by (a) (delta(x[10m])) > 0"),
        ["sum by (a) (x)", "sum by (a) (delta(x[10m]))"]
    );
    assert_eq!(measured_sides("a > 300 or increase(b[10m]) > 0"), ["a", "increase(b[10m])"]);
}

/// Per-app limits: a publisher over its app's rate is slowed, not refused,
/// and the time it was held shows per app in `/metrics`; an AUTH over the
/// app's connection limit gets `TRYAGAIN`; connections whose waits would
/// stack past `limits.max_delay_ms` get `TRYAGAIN` naming the limit; SIGHUP
/// brings new limits.
#[test]
fn an_app_over_its_limits_is_slowed_then_refused() {
    let limits = "[limits]\nconnections = 3\nmax_delay_ms = 100\n\
                  [limits.apps.\"app_key1\"]\npublish_records_per_s = 20\n";
    let a = Admin::start("limits", 2, &broker_list(), limits);
    let mut publisher = a.login("pub", "");
    // A second of the rate goes at once; the 20 after it wait ~50 ms each
    // (less whatever their own round trips took).
    for i in 0..40 {
        assert_eq!(publisher.call(&["SET", &format!("k{i}"), "v"]), ok(), "SET {i}");
    }
    let (_, text) = curl(&format!("{}/metrics", a.url), &[], None);
    let held = text
        .lines()
        .find(|l| l.starts_with("databus_throttle_seconds_total{app=\"app_key1\"}"))
        .map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap());
    assert!(held > 0.0, "never held:\n{text}");

    // Three connections of app_key1 are its limit: a fourth AUTH is refused and closed.
    let mut publishers = [publisher, a.login("pub", ""), a.login("pub", "")];
    let mut fourth = Client::connect(a.daemon.addr);
    let refusal =
        "TRYAGAIN app 'app_key1' is at its limit of 3 connections on this databus (limits.connections)";
    assert_eq!(fourth.call(&["AUTH", &a.auth("pub", "")]), Frame::Error(refusal.into()));
    assert!(fourth.is_closed());

    // One connection is only ever held one SET at a time; three at once
    // stack their waits past the longest hold, and some SETs are refused.
    let replies: Vec<Frame> = thread::scope(|s| {
        let bursts: Vec<_> = publishers
            .iter_mut()
            .map(|c| {
                s.spawn(move || {
                    let burst: Vec<u8> = (0..10).flat_map(|_| cmd_bytes(&[b"SET", b"burst", b"v"])).collect();
                    c.send_raw(&burst);
                    (0..10).map(|_| c.read().expect("a reply")).collect::<Vec<Frame>>()
                })
            })
            .collect();
        bursts.into_iter().flat_map(|b| b.join().unwrap()).collect()
    });
    let refused: Vec<&Frame> = replies.iter().filter(|r| **r != ok()).collect();
    assert!(!refused.is_empty() && refused.len() < 30, "{replies:?}");
    for r in &refused {
        let Frame::Error(e) = r else { panic!("{r:?}") };
        assert!(e.starts_with("TRYAGAIN app 'app_key1' publishes over its limit of 20 records/s"), "{e}");
    }
    let (_, text) = curl(&format!("{}/metrics", a.url), &[], None);
    assert!(
        text.contains("databus_limit_refusals_total{app=\"app_key1\",limit=\"publish_records_per_s\"}"),
        "{text}"
    );

    // SIGHUP: new limits for the next AUTH.
    let text = std::fs::read_to_string(&a.config).unwrap().replace("connections = 3", "connections = 4");
    std::fs::write(&a.config, text).unwrap();
    a.daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Client::connect(a.daemon.addr);
        if c.call(&["AUTH", &a.auth("pub", "")]) == ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the new connection limit never came");
        thread::sleep(Duration::from_millis(100));
    }
}
