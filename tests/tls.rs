//! The TLS listener for clients, driven by real clients — redis-cli
//! `--tls`, redis-py `ssl=True` and the `redis` crate (`rediss://`) — which
//! publish, consume and commit through it; and the connections it turns away
//! cleanly without disturbing others: plain text on the TLS port, a client
//! that does not trust the server, a client certificate from the wrong CA or
//! none when one is required, and a handshake that stalls. Certificates are
//! rotated by a reload (SIGHUP) without a restart.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use rdkafka::Offset;
use serde_json::Value;
use testkit::client::{consume_with_redis_crate, PY_CONSUME};
use testkit::redis_cli::{unquote_cli, RedisCli};
use testkit::secure::Pki;
use testkit::server::Fixture;
use testkit::services::venv_python;
use testkit::topics::{committed, read_topic};

/// The common fixture, its server with a TLS listener; `client_ca`
/// requires client certificates from the test CA.
struct Setup {
    f: Fixture,
    pki: Pki,
}

impl Setup {
    fn new(name: &str, client_ca: bool) -> Setup {
        let pki = Pki::new(name);
        // The files the server reads, so a test can rotate them.
        std::fs::copy(pki.path("server.pem"), pki.path("live.pem")).unwrap();
        std::fs::copy(pki.path("server.key"), pki.path("live.key")).unwrap();
        let mut extra = format!(
            "tls_addr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nauth_timeout_ms = 1500\n",
            pki.path_str("live.pem"),
            pki.path_str("live.key")
        );
        if client_ca {
            extra += &format!("tls_ca = \"{}\"\n", pki.path_str("ca.pem"));
        }
        Setup { f: Fixture::new(name, 2, &extra), pki }
    }

    fn tls_addr(&self) -> SocketAddr {
        self.f.server.tls_addr.expect("a TLS listener")
    }

    fn auth(&self, role: &str) -> String {
        self.f.auth_string(role, "&offset=old")
    }

    /// The plain port still serves, whatever happened on the TLS one.
    fn assert_plain_serves(&self) {
        let mut c = self.f.server.connect();
        assert_eq!(c.call(&["PING"]), Frame::Simple("PONG".into()));
    }
}

/// Checks what a client consumed: `n` messages `v0..` and the group's
/// commits right after each partition's last one.
fn check_consumed(s: &Setup, messages: &[Value], n: usize) {
    let mut values: Vec<String> = messages.iter().map(|m| m["value"].as_str().unwrap().to_owned()).collect();
    values.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(values, want);
    let committed = committed(&s.f.group, &s.f.topic, 2);
    for p in 0..2 {
        let last =
            messages.iter().filter(|m| m["partition"] == p).map(|m| m["offset"].as_i64().unwrap()).max();
        if let Some(last) = last {
            assert_eq!(committed[&p], Offset::Offset(last + 1), "partition {p}");
        }
    }
    assert_eq!(read_topic(&s.f.topic, n).len(), n);
}

#[test]
fn redis_cli_over_tls() {
    let s = Setup::new("tlscli", false);
    let ca = s.pki.path_str("ca.pem");
    let tls = ["--tls", "--cacert", ca.as_str()];
    let mut publisher = RedisCli::start(s.tls_addr(), &tls);
    assert_eq!(publisher.line(&format!("auth {}", s.auth("pub"))), "OK");
    for i in 0..3 {
        assert_eq!(publisher.line(&format!("set k{i} v{i}")), "OK");
    }
    publisher.finish();
    let mut subscriber = RedisCli::start(s.tls_addr(), &tls);
    assert_eq!(subscriber.line(&format!("auth {}", s.auth("sub"))), "OK");
    // MGET until all three came (the first may come before the group's
    // rebalance has assigned the partitions).
    let mut messages: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while messages.len() < 3 {
        assert!(Instant::now() < deadline, "MGET over TLS never returned the messages");
        for line in subscriber.lines("mget") {
            // `1) "{...}"`, one line per message; `(empty array)` when none.
            if let Some((_, quoted)) = line.split_once(") ") {
                messages.push(serde_json::from_slice(&unquote_cli(quoted)).unwrap());
            }
        }
    }
    for p in 0..2 {
        if let Some(o) =
            messages.iter().filter(|m| m["partition"] == p).map(|m| m["offset"].as_i64().unwrap()).max()
        {
            assert_eq!(subscriber.line(&format!("set {p} {o}")), "OK");
        }
    }
    subscriber.finish();
    check_consumed(&s, &messages, 3);
}

const REDIS_PY_TLS: &str = r#"
import json, os, time
import redis

kw = dict(host="127.0.0.1", port=int(os.environ["PORT"]), ssl=True, ssl_ca_certs=os.environ["CA"], socket_timeout=15)
pub = redis.Redis(password=os.environ["PUB_AUTH"], **kw)
for i in range(int(os.environ["N"])):
    assert pub.set(f"k{i}", f"v{i}") is True
pub.close()
sub = redis.Redis(password=os.environ["SUB_AUTH"], protocol=2, single_connection_client=True, **kw)
got = consume(int(os.environ["N"]), lambda: sub.mget(""), sub.set)
sub.close()
print(json.dumps(got))
"#;

#[test]
fn redis_py_over_tls() {
    let s = Setup::new("tlspy", false);
    let out = Command::new(venv_python())
        .args(["-c", &format!("{PY_CONSUME}{REDIS_PY_TLS}")])
        .env("PORT", s.tls_addr().port().to_string())
        .env("CA", s.pki.path("ca.pem"))
        .env("PUB_AUTH", s.auth("pub"))
        .env("SUB_AUTH", s.auth("sub"))
        .env("N", "10")
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-py over TLS: {}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    check_consumed(&s, &got, 10);
}

/// The `redis` crate's TLS client, with the test CA as its only root.
fn rediss(s: &Setup, auth: &str) -> redis::Connection {
    let password: String = auth
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let url = format!("rediss://:{password}@127.0.0.1:{}/", s.tls_addr().port());
    let root = std::fs::read(s.pki.path("ca.pem")).unwrap();
    let client = redis::Client::build_with_tls(
        url,
        redis::TlsCertificates { client_tls: None, root_cert: Some(root) },
    )
    .unwrap();
    let conn = client.get_connection_with_timeout(Duration::from_secs(10)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    conn
}

#[test]
fn the_redis_crate_over_tls() {
    let s = Setup::new("tlsrs", false);
    let mut publisher = rediss(&s, &s.auth("pub"));
    for i in 0..10 {
        let () = redis::cmd("SET").arg(format!("k{i}")).arg(format!("v{i}")).query(&mut publisher).unwrap();
    }
    let mut subscriber = rediss(&s, &s.auth("sub"));
    let got = consume_with_redis_crate(&mut subscriber, 10, 2);
    check_consumed(&s, &got, 10);
}

/// Reads until the server closes; true when it did within `bound`.
fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    stream.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + bound;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// A client that trusts `ca` and, if given, presents `cert`/`key`:
/// whether it can complete a handshake and get PONG.
fn tls_ping(s: &Setup, ca: &str, client: Option<&str>) -> Result<(), String> {
    let mut args = vec!["--tls".to_owned(), "--cacert".to_owned(), s.pki.path_str(ca)];
    if let Some(name) = client {
        args.extend(["--cert".into(), s.pki.path_str(&format!("{name}.pem"))]);
        args.extend(["--key".into(), s.pki.path_str(&format!("{name}.key"))]);
    }
    let out = Command::new("redis-cli")
        .args(&args)
        .args(["-h", "127.0.0.1", "-p", &s.tls_addr().port().to_string(), "PING"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if stdout.trim() == "PONG" {
        Ok(())
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn plain_text_untrusted_and_stalled_clients_are_closed_cleanly() {
    let s = Setup::new("tlsbad", false);
    // Plain RESP on the TLS port.
    let mut plain = TcpStream::connect(s.tls_addr()).unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    assert!(closed_within(&mut plain, Duration::from_secs(10)), "plain text on the TLS port left open");
    // A client that trusts another CA gives up; the server goes on.
    let err = tls_ping(&s, "rogue-ca.pem", None).unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // A handshake that never starts is closed at the auth timeout (1.5 s).
    let mut stalled = TcpStream::connect(s.tls_addr()).unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut stalled, Duration::from_secs(10)), "stalled handshake left open");
    eprintln!("stalled handshake closed after {:?}", started.elapsed());
    // Others are served all along, on both ports.
    tls_ping(&s, "ca.pem", None).unwrap();
    s.assert_plain_serves();
}

#[test]
fn client_certificates_are_required_when_tls_ca_is_set() {
    let s = Setup::new("tlsmtls", true);
    tls_ping(&s, "ca.pem", Some("client")).unwrap();
    assert!(tls_ping(&s, "ca.pem", None).is_err(), "no client certificate, still served");
    assert!(
        tls_ping(&s, "ca.pem", Some("rogue-client")).is_err(),
        "a rogue client certificate, still served"
    );
    tls_ping(&s, "ca.pem", Some("client")).unwrap();
    s.assert_plain_serves();
}

#[test]
fn certificates_are_rotated_by_a_reload() {
    let s = Setup::new("tlsrotate", false);
    tls_ping(&s, "ca.pem", None).unwrap();
    // A connection opened before the rotation stays up.
    let mut before = rediss(&s, &s.auth("pub"));
    std::fs::copy(s.pki.path("rogue-server.pem"), s.pki.path("live.pem")).unwrap();
    std::fs::copy(s.pki.path("rogue-server.key"), s.pki.path("live.key")).unwrap();
    // Until the reload, the old certificate is served.
    tls_ping(&s, "ca.pem", None).unwrap();
    s.f.server.reload();
    tls_ping(&s, "rogue-ca.pem", None).unwrap();
    assert!(tls_ping(&s, "ca.pem", None).is_err(), "the old certificate is still served after the reload");
    let () = redis::cmd("SET").arg("k").arg("v").query(&mut before).unwrap();
    // A broken file is refused and the current certificate stays.
    std::fs::write(s.pki.path("live.key"), "not a key").unwrap();
    s.f.server.reload();
    tls_ping(&s, "rogue-ca.pem", None).unwrap();
}
