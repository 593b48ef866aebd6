//! The compatibility matrix: each test is one mainstream Redis client
//! library, taken from its registry and used with its default options, that
//! publishes, consumes and commits through databus — redis-py (RESP2, RESP3,
//! AUTH as password, AUTH after connect, a single connection, a pipeline),
//! the `redis` crate (URL password, explicit AUTH), ioredis and node-redis
//! from npm, go-redis and redigo from the Go module proxy, Jedis and Lettuce
//! from Maven Central (programs in `tests/clients/`, built by
//! `scripts/clientenv.sh`), hiredis from Debian (a small C program built
//! here), and redis-benchmark. (redis-cli, interactive and `-a`, is in `clients.rs`.)
//! Then what a stranger can learn: nothing about grants from the commands
//! answered before AUTH, and nothing from how long a refused AUTH takes.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use databus::resp::Frame;
use serde_json::Value;
use testkit::client::{
    assert_once_and_in_order, consume_with_redis_crate, err, expected_commits, ok, PY_CONSUME,
};
use testkit::server::Fixture;
use testkit::services::{brokers, script_output, venv_python, TempDir};
use testkit::topics::{committed, read_topic};

const PARTITIONS: i32 = 3;

/// One client's session, checked: exactly the values `v0..v{n}`, each
/// message once and in offset order per partition, the group's commits right
/// after each partition's last message, and `n` records in Kafka.
fn check_session(f: &Fixture, got: &[Value], n: usize) {
    let mut values: Vec<String> = got.iter().map(|m| m["value"].as_str().unwrap().to_owned()).collect();
    values.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(values, want);
    assert_once_and_in_order(got);
    assert_eq!(committed(&f.group, &f.topic, PARTITIONS), expected_commits(got, PARTITIONS));
    assert_eq!(read_topic(&f.topic, n).len(), n);
}

/// The JSON array a client script printed on stdout.
fn session_output(what: &str, out: Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

// ---------------------------------------------------------------------------
// redis-py

/// Publishes `N` values and consumes and commits them, in the way `MODE`
/// names; prints the messages as a JSON array.
const REDIS_PY: &str = r#"
import json, os, sys, time
import redis

port, n, mode = int(os.environ["PORT"]), int(os.environ["N"]), os.environ["MODE"]

def client(auth, **kw):
    kw.update(host="127.0.0.1", port=port, socket_timeout=15)
    if mode == "single-connection":
        kw["single_connection_client"] = True
    if mode == "auth-after-connect":
        # The application sends AUTH itself: redis-py opens with HELLO 3 and
        # CLIENT SETINFO, which databus answers before AUTH.
        c = redis.Redis(**kw)
        assert c.execute_command("AUTH", auth) is True
        return c
    if mode in ("resp2", "resp3"):
        kw["protocol"] = int(mode[-1])
    return redis.Redis(password=auth, **kw)

pub = client(os.environ["PUB_AUTH"])
if mode == "pipeline":
    # transaction=False: databus has no MULTI/EXEC.
    p = pub.pipeline(transaction=False)
    for i in range(n):
        p.set(f"k{i}", f"v{i}")
    assert p.execute() == [True] * n
else:
    for i in range(n):
        assert pub.set(f"k{i}", f"v{i}") is True
pub.close()

sub = client(os.environ["SUB_AUTH"])
got = consume(n, lambda: sub.execute_command("MGET"), sub.set)
sub.close()
print(json.dumps(got))
"#;

fn redis_py(name: &str, mode: &str) {
    let f = Fixture::new(name, PARTITIONS, "");
    let n = 20;
    let out = Command::new(venv_python())
        .args(["-c", &format!("{PY_CONSUME}{REDIS_PY}")])
        .env("PORT", f.server.addr.port().to_string())
        .env("N", n.to_string())
        .env("MODE", mode)
        .env("PUB_AUTH", f.auth("pub"))
        .env("SUB_AUTH", f.auth("sub"))
        .output()
        .unwrap();
    let got = session_output(&format!("redis-py ({mode})"), out);
    check_session(&f, &got, n);
}

#[test]
fn redis_py_resp2_auth_as_password() {
    redis_py("pyresp2", "resp2");
}

#[test]
fn redis_py_resp3_auth_as_password() {
    redis_py("pyresp3", "resp3");
}

#[test]
fn redis_py_defaults_with_auth_sent_after_connect() {
    redis_py("pyafter", "auth-after-connect");
}

#[test]
fn redis_py_single_connection_client() {
    redis_py("pysingle", "single-connection");
}

#[test]
fn redis_py_pipeline_of_sets() {
    redis_py("pypipe", "pipeline");
}

// ---------------------------------------------------------------------------
// the redis crate

/// Percent-encodes everything but unreserved characters, for a URL password.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn redis_crate(f: &Fixture, role: &str, in_url: bool) -> redis::Connection {
    let port = f.server.addr.port();
    let url = if in_url {
        format!("redis://:{}@127.0.0.1:{port}/", percent_encode(&f.auth(role)))
    } else {
        format!("redis://127.0.0.1:{port}/")
    };
    let mut con =
        redis::Client::open(url).unwrap().get_connection_with_timeout(Duration::from_secs(10)).unwrap();
    con.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    if !in_url {
        let () = redis::cmd("AUTH").arg(f.auth(role)).query(&mut con).unwrap();
    }
    con
}

fn redis_crate_session(name: &str, in_url: bool) {
    let f = Fixture::new(name, PARTITIONS, "");
    let n = 20;
    let mut publisher = redis_crate(&f, "pub", in_url);
    for i in 0..n {
        let () = redis::cmd("SET").arg(format!("k{i}")).arg(format!("v{i}")).query(&mut publisher).unwrap();
    }
    let mut subscriber = redis_crate(&f, "sub", in_url);
    let got = consume_with_redis_crate(&mut subscriber, n, PARTITIONS);
    check_session(&f, &got, n);
    // The code comes through as redis-rs's error kind.
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{}/", f.server.addr.port()))
        .unwrap()
        .get_connection()
        .unwrap();
    let e = redis::cmd("AUTH")
        .arg(f.auth("pub").replace("app_secret1", "nope"))
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(e.code(), Some("WRONGPASS"), "{e}");
}

#[test]
fn redis_crate_with_the_auth_string_in_the_url() {
    redis_crate_session("rsurl", true);
}

#[test]
fn redis_crate_with_explicit_auth() {
    redis_crate_session("rsauth", false);
}

// ---------------------------------------------------------------------------
// ioredis and node-redis (npm)

/// The node_modules directory of `scripts/nodeenv.sh` (which installs the
/// pinned versions if needed).
fn node_modules() -> PathBuf {
    PathBuf::from(script_output("nodeenv.sh", &[], "it needs node, npm and the npm registry"))
}

/// The consuming half, the same for both libraries: `mget()` and `set()`
/// are each library's own call.
const NODE_CONSUME: &str = r#"
async function consume(mget, set, n) {
  const got = [];
  const deadline = Date.now() + 60000;
  while (got.length < n) {
    if (Date.now() > deadline) throw new Error(`only ${got.length} of ${n} messages after 60 s`);
    const last = {};
    for (const raw of await mget()) {
      const m = JSON.parse(raw);
      got.push(m);
      last[m.partition] = Math.max(last[m.partition] ?? -1, m.offset);
    }
    for (const [p, o] of Object.entries(last)) {
      const r = await set(String(p), String(o));
      if (r !== 'OK') throw new Error(`commit ${p} ${o}: ${r}`);
    }
  }
  return got;
}
"#;

/// ioredis with its defaults: the AUTH string as the password (it sends
/// `AUTH <password>`, then its ready check, `INFO`); the SETs fired together,
/// so they go out as one pipeline.
const IOREDIS: &str = r#"
const Redis = require('ioredis');
const { PORT, N, PUB_AUTH, SUB_AUTH } = process.env;
(async () => {
  const n = Number(N);
  const pub = new Redis({ host: '127.0.0.1', port: Number(PORT), password: PUB_AUTH });
  const replies = await Promise.all([...Array(n).keys()].map((i) => pub.set(`k${i}`, `v${i}`)));
  if (!replies.every((r) => r === 'OK')) throw new Error(`SET replies ${replies}`);
  await pub.quit();
  const sub = new Redis({ host: '127.0.0.1', port: Number(PORT), password: SUB_AUTH });
  const got = await consume(() => sub.call('MGET'), (p, o) => sub.set(p, o), n);
  await sub.quit();
  console.log(JSON.stringify(got));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// node-redis with its defaults: RESP3, so it opens with
/// `HELLO 3 AUTH default <password>` and `CLIENT SETINFO`; commands issued
/// in the same tick are pipelined.
const NODE_REDIS: &str = r#"
const { createClient } = require('redis');
const { PORT, N, PUB_AUTH, SUB_AUTH } = process.env;
(async () => {
  const n = Number(N);
  const connect = async (password) => {
    const c = createClient({ socket: { host: '127.0.0.1', port: Number(PORT) }, password });
    c.on('error', (e) => { console.error('client error', e); process.exit(1); });
    await c.connect();
    return c;
  };
  const pub = await connect(PUB_AUTH);
  const replies = await Promise.all([...Array(n).keys()].map((i) => pub.set(`k${i}`, `v${i}`)));
  if (!replies.every((r) => r === 'OK')) throw new Error(`SET replies ${replies}`);
  await pub.close();
  const sub = await connect(SUB_AUTH);
  const got = await consume(() => sub.sendCommand(['MGET']), (p, o) => sub.set(p, o), n);
  await sub.close();
  console.log(JSON.stringify(got));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

fn node_session(name: &str, script: &str) {
    let modules = node_modules();
    let f = Fixture::new(name, PARTITIONS, "");
    let n = 20;
    let out = Command::new("node")
        .args(["-e", &format!("{NODE_CONSUME}\n{script}")])
        .env("NODE_PATH", &modules)
        .env("PORT", f.server.addr.port().to_string())
        .env("N", n.to_string())
        .env("PUB_AUTH", f.auth("pub"))
        .env("SUB_AUTH", f.auth("sub"))
        .output()
        .unwrap();
    let got = session_output(name, out);
    check_session(&f, &got, n);
}

#[test]
fn ioredis_with_defaults() {
    node_session("ioredis", IOREDIS);
}

#[test]
fn node_redis_with_defaults() {
    node_session("noderedis", NODE_REDIS);
}

// ---------------------------------------------------------------------------
// go-redis and redigo (Go), Jedis and Lettuce (Java)

/// What `scripts/clientenv.sh <kind>` prints once it has built the programs
/// of `tests/clients/<kind>` (pinned versions from the Go module proxy or
/// Maven Central): the Go binary, or the Java classpath.
fn client_program(kind: &str) -> String {
    script_output("clientenv.sh", &[kind], "Go 1.26+ or Java 17 with Maven, and their registries")
}

/// One client program's session against a server with the default MGET wait
/// (1.5 s): a wrong secret must fail with WRONGPASS; three MGETs on the idle
/// topic must each be an empty list (Jedis reads with a 2 s timeout, go-redis
/// with 5 s, 3 s before v9.22); then it publishes `v0..v{n}` and consumes and
/// commits them on the same connection (see `tests/clients/`).
fn program_session(name: &str, mut program: Command) {
    let f = Fixture::new(name, PARTITIONS, "");
    let n = 25;
    let out = program
        .env("PORT", f.server.addr.port().to_string())
        .env("N", n.to_string())
        .env("PUB_AUTH", f.auth("pub"))
        .env("SUB_AUTH", f.auth("sub"))
        .env("BAD_AUTH", f.auth("sub").replace("app_secret1", "wrong"))
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    let got = session_output(name, out);
    check_session(&f, &got, n);
}

fn go_session(name: &str, client: &str) {
    let mut program = Command::new(client_program("go"));
    program.arg(client);
    program_session(name, program);
}

fn java_session(name: &str, client: &str) {
    let mut program = Command::new("java");
    program.args(["-cp", &client_program("java"), "ClientSession", client]);
    program_session(name, program);
}

/// go-redis v9 with its defaults: RESP3, so `HELLO 3 AUTH default <dsn>`,
/// then `CLIENT MAINT_NOTIFICATIONS` (refused as unknown, which it ignores)
/// and `CLIENT SETINFO`; a pool, of which the subscriber takes one `Conn`.
#[test]
fn go_redis_with_defaults() {
    go_session("goredis", "go-redis");
}

/// redigo with its defaults: `redis.DialPassword`, so `AUTH <dsn>`; no read
/// timeout.
#[test]
fn redigo_with_defaults() {
    go_session("redigo", "redigo");
}

/// Jedis with its defaults: `AUTH <dsn>`, `CLIENT SETINFO`, RESP2, a 2 s
/// socket timeout, which an idle MGET must beat.
#[test]
fn jedis_with_defaults() {
    java_session("jedis", "jedis");
}

/// Lettuce with its defaults: RESP3 (`HELLO 3 AUTH default <dsn>`),
/// `CLIENT SETINFO`, `CLIENT MAINT_NOTIFICATIONS`; a 60 s command timeout.
#[test]
fn lettuce_with_defaults() {
    java_session("lettuce", "lettuce");
}

// ---------------------------------------------------------------------------
// hiredis (C)

/// A C client on hiredis: AUTH, a pipeline of SETs, then MGET and commits
/// until every message came; prints the messages as a JSON array.
const HIREDIS_PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <hiredis/hiredis.h>

static void fail(const char *what, redisContext *c, redisReply *r) {
    fprintf(stderr, "%s: %s\n", what, r && r->str ? r->str : c->errstr);
    exit(1);
}

static redisContext *login(int port, const char *auth) {
    redisContext *c = redisConnect("127.0.0.1", port);
    if (!c || c->err) { fprintf(stderr, "connect: %s\n", c ? c->errstr : "no memory"); exit(1); }
    struct timeval tv = { 15, 0 };
    redisSetTimeout(c, tv);
    redisReply *r = redisCommand(c, "AUTH %s", auth);
    if (!r || r->type != REDIS_REPLY_STATUS || strcmp(r->str, "OK") != 0) fail("AUTH", c, r);
    freeReplyObject(r);
    return c;
}

static long long field(const char *json, size_t len, const char *name) {
    char key[32];
    snprintf(key, sizeof key, "\"%s\":", name);
    char *copy = strndup(json, len);
    char *at = strstr(copy, key);
    long long v = at ? strtoll(at + strlen(key), NULL, 10) : -1;
    free(copy);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: port n pub-auth sub-auth\n"); return 2; }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    redisContext *pub = login(port, argv[3]);
    for (int i = 0; i < n; i++) redisAppendCommand(pub, "SET k%d v%d", i, i);
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(pub, (void **)&r) != REDIS_OK || r->type != REDIS_REPLY_STATUS) fail("SET", pub, r);
        freeReplyObject(r);
    }
    redisFree(pub);

    redisContext *sub = login(port, argv[4]);
    int got = 0;
    time_t deadline = time(NULL) + 60;
    printf("[");
    while (got < n) {
        if (time(NULL) > deadline) { fprintf(stderr, "only %d of %d messages\n", got, n); return 1; }
        redisReply *r = redisCommand(sub, "MGET");
        if (!r || r->type != REDIS_REPLY_ARRAY) fail("MGET", sub, r);
        long long last[16];
        for (int p = 0; p < 16; p++) last[p] = -1;
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i];
            printf("%s%.*s", got ? "," : "", (int)e->len, e->str);
            got++;
            long long p = field(e->str, e->len, "partition"), o = field(e->str, e->len, "offset");
            if (p >= 0 && p < 16 && o > last[p]) last[p] = o;
        }
        freeReplyObject(r);
        for (int p = 0; p < 16; p++) {
            if (last[p] < 0) continue;
            redisReply *c = redisCommand(sub, "SET %d %lld", p, last[p]);
            if (!c || c->type != REDIS_REPLY_STATUS) fail("commit", sub, c);
            freeReplyObject(c);
        }
    }
    printf("]\n");
    redisFree(sub);
    return 0;
}
"#;

#[test]
fn hiredis_from_c() {
    let dir = TempDir::new("hiredis");
    let source = dir.write("client.c", HIREDIS_PROGRAM);
    let binary = dir.0.join("client");
    let built = Command::new("cc").arg(&source).args(["-o"]).arg(&binary).arg("-lhiredis").output().unwrap();
    assert!(
        built.status.success(),
        "building the hiredis client (libhiredis-dev; `scripts/services.sh test-tools` installs it):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let f = Fixture::new("hiredis", PARTITIONS, "");
    let n = 20;
    let out = Command::new(&binary)
        .args([f.server.addr.port().to_string(), n.to_string(), f.auth("pub"), f.auth("sub")])
        .output()
        .unwrap();
    let got = session_output("the hiredis client", out);
    check_session(&f, &got, n);
}

// ---------------------------------------------------------------------------
// redis-benchmark

/// redis-benchmark publishes (it has no way to consume): with `-a` it sends
/// AUTH on each of its connections, after asking `CONFIG GET` like it does
/// of any server.
#[test]
fn redis_benchmark_publishes() {
    let f = Fixture::new("benchmark", PARTITIONS, "");
    let n = 2000;
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &f.server.addr.port().to_string(), "-a", &f.auth("pub")])
        .args(["-t", "set", "-n", &n.to_string(), "-r", "1000", "-c", "10", "-P", "4", "-q"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "redis-benchmark: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("SET: "), "redis-benchmark printed: {stdout}");
    assert_eq!(read_topic(&f.topic, n).len(), n);
}

// ---------------------------------------------------------------------------
// what a stranger can learn

#[test]
fn commands_before_auth_reveal_no_grant() {
    let f = Fixture::new("reveal", PARTITIONS, "");
    let mut c = f.server.connect();
    let mut seen = Vec::new();
    for request in [
        &["HELLO", "3"][..],
        &["CLIENT", "SETINFO", "LIB-NAME", "probe"],
        &["CLIENT", "INFO"],
        &["CLIENT", "ID"],
        &["INFO"],
        &["INFO", "everything"],
        &["COMMAND"],
        &["COMMAND", "DOCS"],
        &["CONFIG", "GET", "*"],
        &["SELECT", "0"],
        &["ECHO", "x"],
    ] {
        let reply = c.call(request);
        assert!(!matches!(reply, Frame::Error(_)), "{request:?}: {reply:?}");
        reply.encode(&mut seen);
    }
    let seen = String::from_utf8_lossy(&seen);
    let brokers = brokers();
    for secret in
        [f.group.as_str(), f.topic.as_str(), "app_key1", "app_secret1", "cluster1", brokers.as_str()]
    {
        assert!(!seen.contains(secret), "a reply before AUTH shows {secret}");
    }
    for data in [&["SET", "k", "v"][..], &["HSET", "k", "{}", "v"], &["MGET"]] {
        assert_eq!(c.call(data), err("NOAUTH Authentication required."), "{data:?}");
    }
    assert_eq!(c.call(&["AUTH", &f.auth("pub")]), ok());
}

#[test]
fn auth_timing_does_not_tell_a_known_key_from_an_unknown_one() {
    let f = Fixture::new("timing", PARTITIONS, "");
    let known = format!("app_key1:not-the-secret@{}/topic={}&role=pub", f.group, f.topic);
    let unknown = format!("no_such_key:not-the-secret@{}/topic={}&role=pub", f.group, f.topic);
    let (mut t_known, mut t_unknown) = (Vec::new(), Vec::new());
    // Interleaved, so drift on the machine touches both alike.
    for i in 0..300 {
        let order = if i % 2 == 0 {
            [(&known, true), (&unknown, false)]
        } else {
            [(&unknown, false), (&known, true)]
        };
        for (auth, is_known) in order {
            let mut c = f.server.connect();
            assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
            let started = Instant::now();
            let reply = c.call(&["AUTH", auth]);
            let took = started.elapsed();
            assert_eq!(reply, err("WRONGPASS auth failed: invalid app key or secret"));
            if is_known {
                t_known.push(took)
            } else {
                t_unknown.push(took)
            }
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (k, u) = (median(&mut t_known), median(&mut t_unknown));
    let ratio = k.max(u).as_secs_f64() / k.min(u).as_secs_f64();
    eprintln!("median refused AUTH: known key {k:?}, unknown key {u:?}, ratio {ratio:.2}");
    assert!(ratio < 2.0, "a known key is told apart by time: {k:?} vs {u:?}");
}
