//! Real Redis clients against databus: the README's walkthrough through the
//! `redis-cli` binary, the example client (`example_cli`, built and run as a
//! process), a session the way clients of the original Go service drive it,
//! and redis-py from a venv (`scripts/pyvenv.sh`). Test servers use the default
//! 1.5 s MGET wait and a 6 s session timeout; a new group member's first MGETs may
//! come back empty while it joins, so every consumer loops with a bound.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use rdkafka::Offset;
use serde_json::Value;
use testkit::client::{
    assert_once_and_in_order, cmd_bytes, expected_commits, mget_records, ok, Client, PY_CONSUME,
};
use testkit::process::Guard;
use testkit::redis_cli::{unquote_cli, RedisCli};
use testkit::server::Fixture;
use testkit::services::{venv_python, TempDir};
use testkit::topics::{committed, read_topic, Record};

/// Longest any client loop here may take to see what it waits for.
const BOUND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// redis-cli

/// The README's Quick start, typed into redis-cli: publish with AUTH, PING,
/// SET and HSET; consume with AUTH and MGET; commit with SET. Then a
/// one-shot `redis-cli -a <AUTH string> set …` (docs/clients.md, "redis-cli").
#[test]
fn readme_walkthrough_with_redis_cli() {
    let f = Fixture::new("cli", 3, "");

    let mut publisher = RedisCli::start(f.server.addr, &[]);
    assert_eq!(publisher.line(&format!("auth {}", f.auth("pub"))), "OK");
    assert_eq!(publisher.line("ping"), "PONG");
    assert_eq!(publisher.line(r#"set x "xx""#), "OK");
    assert_eq!(publisher.line(r#"hset x '{"trace":"abc"}' "xx""#), "OK");
    // Before AUTH and for the wrong role, errors come back and the session goes on.
    assert_eq!(publisher.line("mget"), "(error) ERR command 'mget' not allowed for role pub");
    assert_eq!(publisher.line("ping"), "PONG");
    publisher.finish();

    let records = read_topic(&f.topic, 2);
    assert_eq!(records.len(), 2, "{records:?}");
    let partition = records[0].partition;
    for r in &records {
        assert_eq!((r.key.as_slice(), r.value.as_slice()), (&b"x"[..], &b"xx"[..]));
        assert_eq!(r.partition, partition, "the same key goes to the same partition");
    }
    let metadata = |r: &Record| r.headers.iter().find(|(k, _)| k == "metadata").map(|(_, v)| v.clone());
    assert_eq!(metadata(&records[0]), None);
    assert_eq!(metadata(&records[1]).as_deref(), Some(&br#"{"trace":"abc"}"#[..]));

    let mut subscriber = RedisCli::start(f.server.addr, &[]);
    assert_eq!(subscriber.line(&format!("auth {}", f.auth("sub"))), "OK");
    let deadline = Instant::now() + BOUND;
    let mut got: Vec<Value> = Vec::new();
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "only {} of 2 messages after {BOUND:?}", got.len());
        let reply = subscriber.lines("mget");
        if reply == ["(empty array)"] {
            continue;
        }
        for (i, line) in reply.iter().enumerate() {
            let (number, quoted) = line.split_once(") ").unwrap_or_else(|| panic!("MGET line {line:?}"));
            assert_eq!(number.trim(), (i + 1).to_string(), "{reply:?}");
            got.push(serde_json::from_slice(&unquote_cli(quoted)).unwrap());
        }
    }
    assert_eq!(got.len(), 2, "{got:?}");
    for (m, r) in got.iter().zip(&records) {
        assert_eq!(m["key"], "x");
        assert_eq!(m["value"], "xx");
        assert_eq!(m["topic"], f.topic.as_str());
        assert_eq!(m["partition"], r.partition);
        assert_eq!(m["offset"], r.offset);
        let ts = m["timestamp"].as_i64().unwrap();
        assert!((1_600_000_000..4_000_000_000).contains(&ts), "timestamp {ts} not in seconds");
    }
    assert_eq!(got[0]["metadata"], serde_json::json!({}));
    assert_eq!(got[1]["metadata"], serde_json::json!({"trace": "abc"}));

    let last = records[1].offset;
    assert_eq!(subscriber.line(&format!("set {partition} {last}")), "OK");
    subscriber.finish();
    assert_eq!(committed(&f.group, &f.topic, 3)[&partition], Offset::Offset(last + 1));

    // One-shot, with the AUTH string as the password (`-a`).
    let out = Command::new("redis-cli")
        .args(["-p", &f.port().to_string(), "--no-auth-warning", "-a", &f.auth("pub"), "set", "y", "yy"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
    let records = read_topic(&f.topic, 3);
    assert_eq!((records.len(), records.iter().filter(|r| r.key == b"y" && r.value == b"yy").count()), (3, 1));
}

// ---------------------------------------------------------------------------
// example_cli

/// Builds example_cli (a workspace member, so not a `CARGO_BIN_EXE_` of this
/// package) and returns the path of its binary.
fn example_cli_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let out = Command::new(cargo)
        .args(["build", "-p", "example_cli", "--message-format=json-render-diagnostics"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build -p example_cli");
    assert!(out.status.success(), "cargo build -p example_cli failed");
    let path = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "example_cli")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo build did not report the example_cli executable");
    *built = Some(path.clone());
    path
}

/// The example's config.toml for a fixture: its credentials, `port`, and
/// timeouts that fit the test server's 1.5 s MGET wait.
fn example_config(f: &Fixture, port: u16) -> String {
    let section = |role: &str, extra: &str| {
        format!(
            "[{role}]\naddr = \"127.0.0.1:{port}\"\nkey = \"app_key1\"\nsecret = \"app_secret1\"\n\
             group = \"{}\"\ntopic = \"{}\"\nconnect_timeout_ms = 2000\nread_timeout_ms = 10000\n{extra}",
            f.group, f.topic
        )
    };
    format!(
        "backoff_ms = 100\nmax_backoff_ms = 500\n{}{}",
        section("publisher", "message_key = \"example\"\n"),
        section("subscriber", "offset = \"old\"\n")
    )
}

/// A running example_cli. Its stdout lines arrive on a channel; its stderr
/// is kept for failure messages. Killed on drop.
struct Example {
    process: Guard,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Example {
    fn start(dir: &Path, args: &[&str]) -> Example {
        let mut child = Command::new(example_cli_binary())
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting example_cli");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Example { process: Guard::from(child), lines, stdout: Vec::new(), stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line that starts with `prefix`.
    fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "example_cli printed no `{prefix}` line ({e:?}); stdout: {:?}\nstderr:\n{}",
                    self.stdout,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits for the exit; the remaining stdout lines are collected.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.process.try_wait() {
                // The reader thread ends at EOF; take what it has left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.stdout.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "example_cli still running after {within:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `value=` of an example_cli line (it is always the last field).
fn value_of(line: &str) -> Value {
    let (_, raw) = line.split_once(" value=").unwrap_or_else(|| panic!("no value in {line:?}"));
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("value of {line:?}: {e}"))
}

/// `name=` field of an example_cli `message` line.
fn field(line: &str, name: &str) -> i64 {
    let prefix = format!("{name}=");
    let raw = line.split(' ').find_map(|w| w.strip_prefix(prefix.as_str()));
    raw.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// Polls until the group's commit for `partition` is `next` (commits are
/// acknowledged before example_cli reads on, but it prints first).
fn wait_committed(f: &Fixture, partition: i32, next: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = committed(&f.group, &f.topic, f.partitions);
        if now[&partition] == Offset::Offset(next) {
            return;
        }
        assert!(Instant::now() < deadline, "partition {partition} committed {now:?}, expected {next}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// The example client, run from a directory holding its config.toml: the
/// message it publishes is the one it prints, its commit is visible to an
/// independent consumer of the group, it reconnects to a restarted databus
/// and goes on where it committed, and it stops after --max-messages.
#[test]
fn example_client_publishes_consumes_commits_and_reconnects() {
    let f = Fixture::new("example", 3, "");
    let port = f.port();
    let dir = TempDir::new("example");
    std::fs::write(dir.0.join("config.toml"), example_config(&f, port)).unwrap();

    let mut example = Example::start(&dir.0, &["--max-messages", "2"]);
    let published = example.wait_for("published ");
    let first = example.wait_for("message ");
    assert_eq!(
        published,
        format!("published topic={} key=\"example\" value={}", f.topic, value_of(&published))
    );
    assert_eq!(value_of(&first), value_of(&published), "printed another message than it published");
    assert_eq!(value_of(&first)["from"], "example_cli");
    assert!(first.starts_with(&format!("message topic={} partition=", f.topic)), "{first}");
    assert!(first.contains(" key=\"example\" "), "{first}");
    let records = read_topic(&f.topic, 1);
    assert_eq!(records.len(), 1);
    let (p1, o1) = (field(&first, "partition") as i32, field(&first, "offset"));
    assert_eq!((records[0].partition, records[0].offset), (p1, o1));
    assert_eq!(serde_json::from_slice::<Value>(&records[0].value).unwrap(), value_of(&first));
    let ts = field(&first, "timestamp");
    assert!((1_600_000_000..4_000_000_000).contains(&ts), "timestamp {ts} not in seconds");
    wait_committed(&f, p1, o1 + 1);

    // databus restarts; the example reconnects and gets only the new message.
    let f = f.restart_on_same_port();
    let mut publisher = f.server.connect();
    assert_eq!(publisher.call(&["AUTH", &f.auth("pub")]), ok());
    assert_eq!(publisher.call(&["SET", "after", r#"{"n":2}"#]), ok());
    let second = example.wait_for("message ");
    assert_eq!(value_of(&second), serde_json::json!({"n": 2}));
    assert!(second.contains(" key=\"after\" "), "{second}");
    let status = example.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "example_cli exited with {status}; stderr:\n{}", example.stderr());
    let printed: Vec<&String> = example.stdout.iter().filter(|l| l.starts_with("message ")).collect();
    assert_eq!(printed.len(), 2, "printed {:?}", example.stdout);
    assert!(example.stderr().contains("retrying in"), "no reconnect reported:\n{}", example.stderr());
    wait_committed(&f, field(&second, "partition") as i32, field(&second, "offset") + 1);
}

/// Ctrl-C or SIGTERM while example_cli waits in MGET ends it at once with
/// status 0 and one line saying so, never a retry message for the read the
/// signal interrupted; `-conf=<path>` (the original client's form) finds the
/// config.
#[test]
fn example_client_exits_cleanly_on_ctrl_c_and_sigterm() {
    let f = Fixture::new("example_int", 1, "");
    let dir = TempDir::new("example_int");
    let conf = dir.0.join("elsewhere.toml");
    std::fs::write(&conf, example_config(&f, f.port())).unwrap();
    for signal in ["INT", "TERM"] {
        let mut example = Example::start(Path::new("/"), &[&format!("-conf={}", conf.display())]);
        example.wait_for("published ");
        let line = example.wait_for("message ");
        wait_committed(&f, 0, field(&line, "offset") + 1);
        // Now it is blocked in MGET (the test server waits 1.5 s).
        let pid = example.process.pid().to_string();
        let kill = Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("running kill");
        assert!(kill.success());
        let status = example.wait_exit(Duration::from_secs(5));
        let stderr = example.stderr();
        assert!(status.success(), "example_cli exited with {status} on SIG{signal}; stderr:\n{stderr}");
        let after = stderr.rsplit("committed partition").next().unwrap_or_default();
        assert!(after.contains("stopped by signal"), "SIG{signal}: {stderr}");
        assert!(!after.contains("retrying") && !after.contains("Interrupted"), "SIG{signal}: {stderr}");
    }
}

// ---------------------------------------------------------------------------
// The original Go service's clients

/// Reads one reply, which must be an array of bulk strings (an MGET).
fn mget_reply(c: &mut Client) -> Vec<Value> {
    mget_records(c.read().expect("server closed the connection"))
}

/// Connects the way go-redis does with the AUTH string as its password:
/// `HELLO 3 AUTH default <password>` first (v9); when that gets an error
/// reply it falls back to `AUTH <password>` (what all versions before v9
/// send); then `CLIENT SETINFO`, which databus answers like Redis.
fn go_redis_connect(f: &Fixture, password: &str) -> Client {
    let mut c = f.server.connect();
    if let Frame::Error(_) = c.call(&["hello", "3", "auth", "default", password]) {
        assert_eq!(c.call(&["auth", password]), ok());
    }
    c.send(&[b"client", b"setinfo", b"LIB-NAME", b"go-redis(,go1.22.1)"]);
    c.send(&[b"client", b"setinfo", b"LIB-VER", b"9.7.0"]);
    for _ in 0..2 {
        assert_eq!(c.read(), Some(ok()));
    }
    c
}

/// One pull of the Go client: `SET <partition> <offset>` for what it has
/// processed, then `MGET ""`, pipelined.
fn go_pull(c: &mut Client, processed: &BTreeMap<i64, i64>) -> Vec<Value> {
    let mut burst = Vec::new();
    for (p, o) in processed {
        burst.extend(cmd_bytes(&[b"set", p.to_string().as_bytes(), o.to_string().as_bytes()]));
    }
    burst.extend(cmd_bytes(&[b"mget", b""]));
    c.send_raw(&burst);
    for (p, o) in processed {
        assert_eq!(c.read(), Some(ok()), "commit of partition {p} offset {o}");
    }
    mget_reply(c)
}

/// Pulls until `values` all arrived; each exactly once.
fn go_consume(c: &mut Client, processed: &mut BTreeMap<i64, i64>, values: &BTreeSet<String>) -> Vec<Value> {
    let deadline = Instant::now() + BOUND;
    let mut got = Vec::new();
    while got.len() < values.len() {
        assert!(Instant::now() < deadline, "only {} of {} messages after {BOUND:?}", got.len(), values.len());
        for m in go_pull(c, processed) {
            processed.insert(m["partition"].as_i64().unwrap(), m["offset"].as_i64().unwrap());
            got.push(m);
        }
    }
    assert_once_and_in_order(&got);
    let seen: BTreeSet<String> = got.iter().map(|m| m["value"].as_str().unwrap().to_string()).collect();
    assert_eq!(&seen, values);
    assert_eq!(got.len(), values.len(), "duplicates");
    got
}

/// A session as the original service's Go clients drive it: the AUTH string
/// as the connection password, `SET p o` before each pull, `MGET ""`. Every
/// message arrives once, the commits are the group's, and a new session
/// resumes after them.
#[test]
fn go_client_session() {
    let f = Fixture::new("go", 3, "");
    let mut publisher = go_redis_connect(&f, &f.auth("pub"));
    let publish = |publisher: &mut Client, from: usize, to: usize| -> BTreeSet<String> {
        (from..to)
            .map(|i| {
                let value = format!("m{i}");
                assert_eq!(publisher.call(&["set", &format!("k{}", i % 7), &value]), ok());
                value
            })
            .collect()
    };
    let first = publish(&mut publisher, 0, 30);

    let mut processed = BTreeMap::new();
    let mut session = go_redis_connect(&f, &f.auth("sub"));
    let got = go_consume(&mut session, &mut processed, &first);
    // Another batch while the session runs.
    let more = publish(&mut publisher, 30, 45);
    let got_more = go_consume(&mut session, &mut processed, &more);
    // The last pull commits what was processed; it finds nothing new.
    assert_eq!(go_pull(&mut session, &processed), Vec::<Value>::new());
    drop(session);
    let all: Vec<Value> = got.into_iter().chain(got_more).collect();
    assert_once_and_in_order(&all);
    assert_eq!(committed(&f.group, &f.topic, 3), expected_commits(&all, 3));

    // A new session of the group starts after the commits.
    let last = publish(&mut publisher, 45, 50);
    let mut session = go_redis_connect(&f, &f.auth("sub"));
    let mut processed = BTreeMap::new();
    go_consume(&mut session, &mut processed, &last);
}

// ---------------------------------------------------------------------------
// redis-py

/// Publishes, consumes and commits with redis-py: the publisher with its
/// defaults (RESP3, so it opens with `HELLO 3 AUTH default <password>`), the
/// subscriber with `protocol=2` (plain `AUTH`).
const REDIS_PY_SESSION: &str = r#"
import json, os, sys, time
import redis

port = int(os.environ["DATABUS_PORT"])
n = int(os.environ["MESSAGES"])

pub = redis.Redis(host="127.0.0.1", port=port, password=os.environ["PUB_AUTH"], socket_timeout=15)
assert pub.ping() is True
for i in range(n):
    assert pub.set(f"k{i % 4}", json.dumps({"n": i})) is True
pub.close()

# A wrong secret: WRONGPASS, which redis-py raises as AuthenticationError.
bad = redis.Redis(host="127.0.0.1", port=port, password=os.environ["BAD_AUTH"])
try:
    bad.ping()
    sys.exit("AUTH with a wrong secret succeeded")
except redis.exceptions.AuthenticationError as e:
    assert "invalid app key or secret" in str(e), str(e)

# One connection is one member of the group: commit on the one that pulled.
sub = redis.Redis(host="127.0.0.1", port=port, password=os.environ["SUB_AUTH"],
                  protocol=2, socket_timeout=15, single_connection_client=True)
got = consume(n, lambda: sub.mget(""), sub.set)
sub.close()
print(json.dumps(got))
"#;

#[test]
fn redis_py_publish_consume_commit() {
    let python = venv_python();
    let f = Fixture::new("py", 3, "");
    let n = 40;
    let bad = f.auth("sub").replace("app_secret1", "wrong");
    let out = Command::new(&python)
        .args(["-c", &format!("{PY_CONSUME}{REDIS_PY_SESSION}")])
        .env("DATABUS_PORT", f.port().to_string())
        .env("MESSAGES", n.to_string())
        .env("PUB_AUTH", f.auth("pub"))
        .env("SUB_AUTH", f.auth("sub"))
        .env("BAD_AUTH", bad)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "redis-py session failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got.len(), n);
    assert_once_and_in_order(&got);
    let numbers: BTreeSet<i64> = got.iter().map(|m| m["value"]["n"].as_i64().unwrap()).collect();
    assert_eq!(numbers, (0..n as i64).collect());
    let records = read_topic(&f.topic, n);
    assert_eq!(records.len(), n);
    for m in &got {
        let r = records
            .iter()
            .find(|r| i64::from(r.partition) == m["partition"].as_i64().unwrap() && r.offset == m["offset"])
            .unwrap();
        assert_eq!(m["key"], String::from_utf8(r.key.clone()).unwrap());
        assert_eq!(m["value"], serde_json::from_slice::<Value>(&r.value).unwrap());
    }
    assert_eq!(committed(&f.group, &f.topic, 3), expected_commits(&got, 3));
}
