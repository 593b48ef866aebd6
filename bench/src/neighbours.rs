//! The noisy neighbour: app B publishes at depth 1 (one connection, one
//! SET at a time), first alone, then while app A floods the same databus
//! as `redis-benchmark -c 50 -P 64 -d 1000` would (50 connections, 64 SETs
//! of 1,000 bytes in flight each, sent again as soon as they are answered,
//! errors and all): once with A unlimited, once with A at a limit
//! (`[limits.apps."<A>"]`, applied by SIGHUP). B's latency percentiles in
//! each say whether one app's flood starves another's; issue 37's target is
//! B's p99 with A at its limit within 2 × B's p99 alone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::phases::{key_of, percentiles, round, value_of, Percentiles};
use crate::resp::{auth_string, RespConn};
use crate::setup::Databus;
use crate::{Res, APP_SECRET};

/// App A, the flood, as the bench database holds it.
pub(crate) const NOISY_KEY: &str = "noisy_key";
/// A's group.
pub(crate) const NOISY_GROUP: &str = "noisy_pub";
/// B's group (app 1, the bench's own).
pub(crate) const QUIET_GROUP: &str = "bench_pub";

const FLOOD_CONNS: usize = 50;
const FLOOD_DEPTH: usize = 64;
const FLOOD_VALUE: usize = 1000;
/// A's limit in the last round.
const A_RECORDS_PER_S: u64 = 2_000;
const A_BYTES_PER_S: u64 = 2_000_000;

/// One round: B's SETs and what A got done meanwhile.
struct Round {
    name: &'static str,
    b: Percentiles,
    b_rate: f64,
    a_ok: usize,
    a_refused: usize,
    seconds: f64,
}

/// The three rounds on `databus`; `a_topic` and `b_topic` exist and are granted.
pub(crate) fn run(
    databus: &Databus,
    reload: impl Fn(&str) -> Res<()>,
    a_topic: &str,
    b_topic: &str,
    samples: usize,
) -> Res<Value> {
    let b_auth = auth_string(QUIET_GROUP, b_topic, "pub", "");
    let a_auth = format!("{NOISY_KEY}:{APP_SECRET}@{NOISY_GROUP}/topic={a_topic}&role=pub");
    // Untimed: both apps learn their topics' partitions and leaders.
    quiet(databus.addr, &b_auth, 200)?;
    quiet(databus.addr, &a_auth, 200)?;
    let mut rounds = Vec::new();
    let alone = Instant::now();
    let (b, rate) = quiet(databus.addr, &b_auth, samples)?;
    rounds.push(Round {
        name: "B alone",
        b,
        b_rate: rate,
        a_ok: 0,
        a_refused: 0,
        seconds: alone.elapsed().as_secs_f64(),
    });
    rounds.push(beside_flood("B while A floods, A unlimited", databus.addr, &a_auth, &b_auth, samples)?);
    reload(&format!(
        "[limits.apps.\"{NOISY_KEY}\"]\npublish_records_per_s = {A_RECORDS_PER_S}\npublish_bytes_per_s = {A_BYTES_PER_S}\n"
    ))?;
    rounds.push(beside_flood("B while A floods, A at its limit", databus.addr, &a_auth, &b_auth, samples)?);
    for r in &rounds {
        eprintln!(
            "databus-bench: neighbours, {}: B p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.0} SET/s; A {} OK, {} refused in {:.1} s",
            r.name, r.b.p50, r.b.p99, r.b.max, r.b_rate, r.a_ok, r.a_refused, r.seconds
        );
    }
    let alone_p99 = rounds[0].b.p99;
    Ok(json!({
        "flood": {"connections": FLOOD_CONNS, "depth": FLOOD_DEPTH, "value_bytes": FLOOD_VALUE},
        "a_limit": {"publish_records_per_s": A_RECORDS_PER_S, "publish_bytes_per_s": A_BYTES_PER_S},
        "b_samples": samples,
        "rounds": rounds.iter().map(|r| json!({
            "round": r.name,
            "b_p50_ms": round(r.b.p50, 3),
            "b_p99_ms": round(r.b.p99, 3),
            "b_max_ms": round(r.b.max, 3),
            "b_set_per_s": round(r.b_rate, 0),
            "b_p99_vs_alone": round(r.b.p99 / alone_p99.max(1e-9), 2),
            "a_ok": r.a_ok,
            "a_refused": r.a_refused,
            "a_ok_per_s": round(r.a_ok as f64 / r.seconds.max(1e-9), 0),
        })).collect::<Vec<_>>(),
    }))
}

/// The Markdown table of [`run`]'s result.
pub(crate) fn markdown(v: &Value) -> String {
    let mut md = String::from(
        "\n## Noisy neighbour\n\n| round | B p50 ms | B p99 ms | B max ms | B SET/s | B p99 / alone | A OK/s | A refused |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in v["rounds"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["round"].as_str().unwrap_or_default(),
            r["b_p50_ms"],
            r["b_p99_ms"],
            r["b_max_ms"],
            r["b_set_per_s"],
            r["b_p99_vs_alone"],
            r["a_ok_per_s"],
            r["a_refused"]
        ));
    }
    md
}

/// `samples` SETs of B, one at a time: their latencies and rate.
fn quiet(addr: SocketAddr, auth: &str, samples: usize) -> Res<(Percentiles, f64)> {
    let mut conn = RespConn::auth(addr, auth)?;
    let mut times = Vec::with_capacity(samples);
    let started = Instant::now();
    for n in 0..samples {
        let (k, v) = (key_of(n), value_of(n, 100));
        let t = Instant::now();
        conn.push(&[b"SET", &k, &v]);
        conn.send()?;
        conn.read_ok()?.map_err(|e| format!("B's SET failed: {e}"))?;
        times.push(t.elapsed());
    }
    let rate = samples as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok((percentiles(&mut times), rate))
}

/// B's SETs while A's flood runs; the flood stops when B is done.
fn beside_flood(
    name: &'static str,
    addr: SocketAddr,
    a_auth: &str,
    b_auth: &str,
    samples: usize,
) -> Res<Round> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut flood = Vec::new();
    for c in 0..FLOOD_CONNS {
        let (stop, ok, refused, auth) = (stop.clone(), ok.clone(), refused.clone(), a_auth.to_owned());
        flood.push(thread::spawn(move || -> Res<()> {
            let mut conn = RespConn::auth(addr, &auth)?;
            let value = vec![b'a'; FLOOD_VALUE];
            let mut n = c * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..FLOOD_DEPTH {
                    conn.push(&[b"SET", &key_of(n), &value]);
                    n += 1;
                }
                conn.send()?;
                for _ in 0..FLOOD_DEPTH {
                    match conn.read_ok()? {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
            Ok(())
        }));
    }
    // Let the flood reach its pace before B measures.
    thread::sleep(Duration::from_secs(2));
    let (ok0, refused0) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    let started = Instant::now();
    let (b, b_rate) = quiet(addr, b_auth, samples)?;
    let seconds = started.elapsed().as_secs_f64();
    let (a_ok, a_refused) = (ok.load(Ordering::Relaxed) - ok0, refused.load(Ordering::Relaxed) - refused0);
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.join().map_err(|_| "a flood thread panicked")??;
    }
    Ok(Round { name, b, b_rate, a_ok, a_refused, seconds })
}
