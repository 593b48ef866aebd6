//! The grid: `redis-benchmark -t set` against databus and, when
//! `BENCH_GO_DATABUS` names one, the Go databus, beside a bare librdkafka
//! producer used the same way (c threads, P records in flight each, waiting
//! for each batch's delivery reports), at every (clients c, pipeline P) of
//! the grid, on a 3- and a 12-partition topic, all in one run on one broker.
//! Each cell reports requests/s, p50/p99 and the CPU per SET of every
//! process (server, load generator, broker) and the server's context
//! switches per SET.
//!
//! The Go databus reads its grants from MySQL once a minute, so the grid's
//! topics and grants are fixed and persistent: database `databus_grid`
//! (tables `auth_tb`/`app_tb` and the views `auth`/`app` the Go code
//! queries) grants the seed's sample app (`app_key1`, cluster `cluster1`)
//! the topics `bench_grid_p<N>`, each in group `group_bench_grid_p<N>`
//! (the Go databus keeps one grant per group), which keep records for
//! ten minutes only. The bench creates them if absent and never deletes
//! them, so a Go databus started once keeps working across runs.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_executor::block_on;
use mysql::prelude::Queryable;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::{json, Value};

use crate::options::Opts;
use crate::phases::{
    direct_send, key_of, percentiles, round, timed_workers, value_of, Direct, Percentiles, Waiter,
};
use crate::procfs::{
    children_cpu, context_switches, cpu_of, cpu_of_all, machine_busy, pid_listening, thread_context_switches,
    Cpu,
};
use crate::setup::create_tables;
use crate::Res;

/// Where the Go databus finds its grants.
pub(crate) const GRID_DATABASE: &str = "databus_grid";
/// The seed's sample app and cluster (`scripts/sample.sql`).
const SEED_KEY: &str = "app_key1";
const SEED_SECRET: &str = "app_secret1";
const SEED_CLUSTER: &str = "cluster1";

pub(crate) fn grid_topic(partitions: i32) -> String {
    format!("bench_grid_p{partitions}")
}

/// The group of the seed's app on a grid topic: the Go databus keeps one
/// grant per group name, so each topic has a group of its own.
fn seed_group(topic: &str) -> String {
    format!("group_{topic}")
}

/// The auth string of the seed's app on a grid topic (the Go databus's;
/// databus's own grid grant is the bench app's).
fn seed_auth(topic: &str) -> String {
    format!("{SEED_KEY}:{SEED_SECRET}@{}/topic={topic}&role=pub", seed_group(topic))
}

/// A Redis-protocol front of the broker: databus or the Go databus.
pub(crate) struct Front {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    /// Whose CPU and context switches are the server's.
    pub(crate) pid: Option<u32>,
    /// AUTH string for a topic.
    pub(crate) auth: Box<dyn Fn(&str) -> String>,
    /// The syscall its Kafka client sends requests with, if only those use
    /// it (the Go databus writes to clients and brokers alike).
    pub(crate) sends: Option<&'static str>,
}

impl Front {
    pub(crate) fn go_databus(opts: &Opts) -> Res<Option<Front>> {
        let Some(addr) = &opts.go_databus else {
            return Ok(None);
        };
        let addr: SocketAddr =
            addr.parse().map_err(|_| format!("BENCH_GO_DATABUS={addr:?} is not an ip:port"))?;
        let pid = opts.go_databus_pid.or_else(|| pid_listening(addr.port()));
        if pid.is_none() {
            eprintln!(
                "databus-bench: the Go databus's pid is unknown (set BENCH_GO_DATABUS_PID): no CPU for it"
            );
        }
        Ok(Some(Front { name: GO, addr, pid, auth: Box::new(seed_auth), sends: None }))
    }
}

/// One peer's result in one cell.
#[derive(Clone)]
pub(crate) struct Shot {
    pub(crate) requests: usize,
    pub(crate) rps: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) errors: usize,
    /// µs per SET: the server (for the bare producer: the whole client
    /// process), the load generator, the broker.
    pub(crate) server_us: Option<f64>,
    pub(crate) loadgen_us: Option<f64>,
    pub(crate) broker_us: Option<f64>,
    pub(crate) others_us: f64,
    pub(crate) ctx_switches: Option<f64>,
    /// `sendmsg` calls per SET of the server process: librdkafka sends each
    /// request with one, so this is Kafka requests per SET (perf's syscall
    /// tracepoint; `None` without perf).
    pub(crate) requests_per_set: Option<f64>,
}

/// Counts a process's calls of some syscalls while it lives (`perf stat` on
/// the syscall tracepoints, which cost the traced process next to nothing).
struct SendCount(Option<std::process::Child>);

/// How librdkafka sends a request, and how the JVM does (a gathering
/// write; its plain `write`s wake its selector).
pub(crate) const LIBRDKAFKA_SENDS: &str = "syscalls:sys_enter_sendmsg";
const JVM_SENDS: &str = "syscalls:sys_enter_writev";

impl SendCount {
    fn start(pid: Option<u32>, events: &str) -> SendCount {
        let Some(pid) = pid else { return SendCount(None) };
        let child = Command::new("perf")
            .args(["stat", "-x", ",", "-e", events, "-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok();
        // perf attaches in a few ms; a run is seconds long.
        std::thread::sleep(Duration::from_millis(100));
        SendCount(child)
    }

    fn stop(self, sets: usize) -> Option<f64> {
        let child = self.0?;
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let out = child.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let counts: Vec<f64> = text
            .lines()
            .filter(|l| l.contains("sys_enter_"))
            .filter_map(|l| l.split(',').next()?.trim().parse().ok())
            .collect();
        (!counts.is_empty()).then(|| counts.iter().sum::<f64>() / sets as f64)
    }
}

pub(crate) struct Cell {
    pub(crate) partitions: i32,
    pub(crate) clients: usize,
    pub(crate) pipeline: usize,
    pub(crate) round: usize,
    /// (peer name, result)
    pub(crate) shots: Vec<(&'static str, Shot)>,
}

impl Cell {
    pub(crate) fn shot(&self, name: &str) -> Option<&Shot> {
        self.shots.iter().find(|(n, _)| *n == name).map(|(_, s)| s)
    }
}

/// databus as shipped: its own producer (`producer.engine = "databus"`).
pub(crate) const DATABUS: &str = "databus";
/// databus on librdkafka's producer (`producer.engine = "librdkafka"`).
pub(crate) const DATABUS_RDKAFKA: &str = "databus librdkafka";
pub(crate) const GO: &str = "Go databus";
pub(crate) const BARE: &str = "bare librdkafka";
pub(crate) const JAVA: &str = "Java producer";

/// Requests per cell: enough for a few seconds at the rates each cell
/// reaches on a 2-core machine, times `BENCH_GRID_SCALE`.
fn requests(opts: &Opts, clients: usize, pipeline: usize) -> usize {
    let base = if pipeline == 1 {
        10_000 * clients.div_ceil(5)
    } else {
        (40_000 * clients.div_ceil(5)).min(300_000)
    };
    ((base as f64 * opts.grid_scale) as usize).max(clients * pipeline * 10)
}

/// Creates the grid database (tables, views, the seed's grant on every grid
/// topic) unless present.
pub(crate) fn prepare_database(opts: &Opts, topics: &[String]) -> Res<()> {
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(&opts.mysql_url)?)?;
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{GRID_DATABASE}`"))?;
    conn.query_drop(format!("USE `{GRID_DATABASE}`"))?;
    create_tables(&mut conn)?;
    // The Go databus's query: `FROM auth LEFT JOIN app ON auth.app_id=app.id`.
    conn.query_drop("CREATE OR REPLACE VIEW auth AS SELECT * FROM auth_tb")?;
    conn.query_drop("CREATE OR REPLACE VIEW app AS SELECT * FROM app_tb")?;
    conn.exec_drop(
        "INSERT IGNORE INTO app_tb (id, app_key, app_secret, cluster) VALUES (1, ?, ?, ?)",
        (SEED_KEY, SEED_SECRET, SEED_CLUSTER),
    )?;
    for topic in topics {
        let group = seed_group(topic);
        let have: Option<i64> = conn.exec_first(
            "SELECT id FROM auth_tb WHERE app_id = 1 AND topic = ? AND group_name = ?",
            (topic, &group),
        )?;
        if have.is_none() {
            conn.exec_drop(
                "INSERT INTO auth_tb (app_id, group_name, operation, topic) VALUES (1, ?, 3, ?)",
                (&group, topic),
            )?;
        }
    }
    Ok(())
}

/// Creates a grid topic unless present (records kept ten minutes, so runs
/// do not fill the broker's disk); errs if it has another partition count.
pub(crate) fn prepare_topic(opts: &Opts, topic: &str, partitions: i32) -> Res<()> {
    let admin: AdminClient<DefaultClientContext> = opts.client_config().create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(opts.replication))
        .set("retention.ms", "600000")
        .set("segment.ms", "120000");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in block_on(admin.create_topics([&new], &options))? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(format!("create topic {t}: {e}").into()),
        }
    }
    let probe: BaseConsumer = opts.client_config().create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let md = probe.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        if let Some(t) = md.topics().iter().find(|t| t.error().is_none() && !t.partitions().is_empty()) {
            let have = t.partitions().len() as i32;
            if have != partitions {
                return Err(
                    format!("topic {topic} has {have} partitions, not {partitions}: delete it").into()
                );
            }
            if t.partitions().iter().all(|p| p.leader() >= 0) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("topic {topic} did not appear on {}", opts.brokers).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPU seconds and context switches around one timed run.
struct Usage {
    server: Option<f64>,
    children: f64,
    me: f64,
    broker: Option<f64>,
    machine: f64,
    switches: u64,
}

impl Usage {
    fn now(opts: &Opts, server: Option<u32>) -> Usage {
        let t = opts.clk_tck;
        Usage {
            server: server.and_then(|p| cpu_of(Some(p), t)),
            children: children_cpu(t),
            me: cpu_of(None, t).unwrap_or(0.0),
            broker: cpu_of_all(&opts.broker_pids, t),
            machine: machine_busy(t),
            switches: server.map_or_else(|| context_switches(None), |p| context_switches(Some(p))),
        }
    }
}

/// `redis-benchmark -t set` against a front: (requests/s, p50, p99, errors).
fn redis_benchmark(
    opts: &Opts,
    front: &Front,
    topic: &str,
    clients: usize,
    pipeline: usize,
    n: usize,
) -> Res<Shot> {
    let sends = match front.sends {
        Some(events) => SendCount::start(front.pid, events),
        None => SendCount(None),
    };
    let before = Usage::now(opts, front.pid);
    let out = Command::new("redis-benchmark")
        .args(["-h", &front.addr.ip().to_string(), "-p", &front.addr.port().to_string()])
        .args(["-a", &(front.auth)(topic), "-t", "set", "-r", "100000", "--csv"])
        .args(["-d", &opts.value_size.to_string(), "-n", &n.to_string()])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-benchmark: {e} (apt-get install redis-tools)"))?;
    let after = Usage::now(opts, front.pid);
    let requests_per_set = sends.stop(n);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // "SET","rps","avg","min","p50","p95","p99","max"
    let line = stdout.lines().rfind(|l| l.starts_with("\"SET\"")).ok_or_else(|| {
        format!("redis-benchmark against {} c={clients} P={pipeline} printed no result: {stderr}", front.name)
    })?;
    let f: Vec<f64> = line.split(',').skip(1).filter_map(|v| v.trim_matches('"').parse().ok()).collect();
    if f.len() < 7 {
        return Err(format!("redis-benchmark: cannot read {line:?}").into());
    }
    let errors = stderr.lines().filter(|l| l.contains("Error from server")).count();
    if errors > 0 {
        eprintln!(
            "databus-bench: {} c={clients} P={pipeline}: {errors} error replies, first: {}",
            front.name,
            stderr.lines().find(|l| l.contains("Error from server")).unwrap_or_default()
        );
    }
    let us = |s: f64| s * 1e6 / n as f64;
    let server = after.server.zip(before.server).map(|(a, b)| us(a - b));
    let loadgen = us(after.children - before.children);
    let broker = after.broker.zip(before.broker).map(|(a, b)| us(a - b));
    let machine = us(after.machine - before.machine);
    let me = us(after.me - before.me);
    Ok(Shot {
        requests: n,
        rps: f[0],
        p50: f[3],
        p99: f[5],
        errors,
        server_us: server,
        loadgen_us: Some(loadgen),
        broker_us: broker,
        others_us: (machine - server.unwrap_or(0.0) - loadgen - broker.unwrap_or(0.0) - me).max(0.0),
        ctx_switches: front.pid.map(|_| after.switches.saturating_sub(before.switches) as f64 / n as f64),
        requests_per_set,
    })
}

/// The bare producer used the way redis-benchmark uses a front: `clients`
/// threads, each enqueuing `pipeline` records and waiting for their
/// reports. Latency as redis-benchmark counts it: every request of a
/// pipeline gets the time from the pipeline's write to its first reply, so
/// here every record of a batch the time from its first send to the
/// batch's first report.
fn bare(opts: &Opts, producer: &Direct, topic: &str, clients: usize, pipeline: usize, n: usize) -> Res<Shot> {
    let cpu = Cpu { databus_pid: None, broker_pids: opts.broker_pids.clone(), clk_tck: opts.clk_tck };
    let latencies = Mutex::new(Vec::with_capacity(n));
    let value_size = opts.value_size;
    // The live threads now (librdkafka's; the workers start after this)
    // and, as each worker ends, its own.
    let switches = context_switches(None);
    let worker_switches = std::sync::atomic::AtomicU64::new(0);
    let sends = SendCount::start(Some(std::process::id()), LIBRDKAFKA_SENDS);
    let setup = |_: usize| -> Res<_> {
        let (latencies, worker_switches) = (&latencies, &worker_switches);
        Ok(move |first: usize, count: usize| -> Res<(usize, Option<String>)> {
            let waiter = Arc::new(Waiter::timed());
            let mut mine = Vec::with_capacity(count);
            let (mut n, end) = (first, first + count);
            while n < end {
                let batch = pipeline.min(end - n);
                let started = Instant::now();
                for i in n..n + batch {
                    direct_send(producer, topic, &key_of(i % 100_000), &value_of(i, value_size), &waiter)?;
                }
                n += batch;
                waiter.wait_for(n - first)?;
                // As redis-benchmark counts a pipeline: every request of it
                // at the time of its first reply.
                let first_report = waiter.take_times().into_iter().min().unwrap_or(started);
                mine.extend(std::iter::repeat_n(first_report - started, batch));
            }
            latencies.lock().unwrap_or_else(|e| e.into_inner()).append(&mut mine);
            let done = waiter.wait_for(count);
            worker_switches.fetch_add(thread_context_switches(), std::sync::atomic::Ordering::Relaxed);
            done
        })
    };
    let run = timed_workers(clients, n, &cpu, setup)?;
    let switches = context_switches(None).saturating_sub(switches) + worker_switches.into_inner();
    let requests_per_set = sends.stop(n);
    let mut lat: Vec<Duration> = latencies.into_inner().unwrap_or_else(|e| e.into_inner());
    let p: Percentiles = percentiles(&mut lat);
    Ok(Shot {
        requests: n,
        rps: n as f64 / run.seconds,
        p50: p.p50,
        p99: p.p99,
        errors: run.errors,
        server_us: Some(run.cpu.bench),
        loadgen_us: None,
        broker_us: run.cpu.broker,
        others_us: run.cpu.others,
        ctx_switches: Some(switches as f64 / n as f64),
        requests_per_set,
    })
}

/// Kafka's Java producer used the same way (`bench/java/GridProducer.java`,
/// which scripts/bench.sh compiles): a JVM per shot, timed from the line
/// that starts it (after its warm-up) to its result.
fn java(opts: &Opts, classpath: &str, topic: &str, clients: usize, pipeline: usize, n: usize) -> Res<Shot> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = Command::new(&opts.java)
        .args(["-Xmx512m", "-cp", classpath, "GridProducer", &opts.brokers, topic])
        .args([clients, pipeline, n, opts.value_size].map(|v| v.to_string()))
        .args([opts.linger_ms.to_string(), opts.max_in_flight.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", opts.java))?;
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut next = || -> Res<String> { Ok(lines.next().ok_or("GridProducer exited early")??) };
    if next()? != "ready" {
        return Err("GridProducer did not warm up".into());
    }
    let sends = SendCount::start(Some(pid), JVM_SENDS);
    let before = Usage::now(opts, Some(pid));
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    writeln!(stdin, "go")?;
    let result = next()?;
    // Its workers wait for this line before they exit, so that their
    // context switches are still in /proc.
    let after = Usage::now(opts, Some(pid));
    let requests_per_set = sends.stop(n);
    writeln!(stdin, "exit")?;
    drop(stdin);
    let _ = child.wait();
    // result <rps> <p50> <p99> <errors> <cpu s>
    let f: Vec<f64> = result.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    if !result.starts_with("result ") || f.len() != 5 {
        return Err(format!("GridProducer: cannot read {result:?}").into());
    }
    let us = |s: f64| s * 1e6 / n as f64;
    let broker = after.broker.zip(before.broker).map(|(a, b)| us(a - b));
    let server = us(f[4]);
    let me = us(after.me - before.me);
    Ok(Shot {
        requests: n,
        rps: f[0],
        p50: f[1],
        p99: f[2],
        errors: f[3] as usize,
        server_us: Some(server),
        loadgen_us: None,
        broker_us: broker,
        others_us: (us(after.machine - before.machine) - server - broker.unwrap_or(0.0) - me).max(0.0),
        ctx_switches: Some(after.switches.saturating_sub(before.switches) as f64 / n as f64),
        requests_per_set,
    })
}

/// Every cell of the grid on one topic, the peers in turn within each cell.
pub(crate) fn run(opts: &Opts, fronts: &[Front], producer: &Direct, partitions: i32) -> Res<Vec<Cell>> {
    let topic = grid_topic(partitions);
    // Untimed: every peer learns the topic's partitions and leaders.
    for f in fronts {
        redis_benchmark(opts, f, &topic, 10, 1, 2_000)?;
    }
    bare(opts, producer, &topic, 10, 1, 2_000)?;
    let mut cells = Vec::new();
    for round in 1..=opts.grid_rounds {
        for &clients in &opts.grid_clients {
            for &pipeline in &opts.grid_pipelines {
                let n = requests(opts, clients, pipeline);
                // The peers take turns going first, round after round: the
                // broker's CPU (its garbage collection, what the previous
                // peer left it to do) falls on whoever runs, and the first
                // of a cell follows the Java producer's JVM of the last.
                let mut order: Vec<Option<&Front>> = fronts.iter().map(Some).collect();
                order.push(None);
                let java_cp = opts.java_classpath.as_ref();
                let turns = order.len() + usize::from(java_cp.is_some());
                let first = (round - 1) % turns;
                let mut shots = Vec::new();
                for k in (0..turns).map(|i| (first + i) % turns) {
                    let shot = match order.get(k) {
                        Some(Some(f)) => (f.name, redis_benchmark(opts, f, &topic, clients, pipeline, n)?),
                        Some(None) => (BARE, bare(opts, producer, &topic, clients, pipeline, n)?),
                        None => (
                            JAVA,
                            java(opts, java_cp.expect("counted in turns"), &topic, clients, pipeline, n)?,
                        ),
                    };
                    shots.push((k, shot));
                }
                shots.sort_by_key(|(k, _)| *k);
                let shots: Vec<_> = shots.into_iter().map(|(_, shot)| shot).collect();
                let line: Vec<String> = shots
                    .iter()
                    .map(|(name, s)| format!("{name} {:.0}/s p99 {:.2} ms", s.rps, s.p99))
                    .collect();
                eprintln!("databus-bench: grid {partitions}p c={clients} P={pipeline}: {}", line.join(", "));
                cells.push(Cell { partitions, clients, pipeline, round, shots });
            }
        }
    }
    Ok(cells)
}

// ---------------------------------------------------------------------------
// The report

fn opt(x: Option<f64>, places: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.places$}"))
}

fn ratio(a: Option<&Shot>, b: Option<&Shot>) -> Option<f64> {
    Some(a?.rps / b?.rps)
}

/// The median (by requests/s) of the rounds of one cell and peer.
fn median<'a>(cells: &'a [Cell], partitions: i32, c: usize, p: usize, peer: &str) -> Option<&'a Shot> {
    let mut shots: Vec<&Shot> = cells
        .iter()
        .filter(|x| x.partitions == partitions && x.clients == c && x.pipeline == p)
        .filter_map(|x| x.shot(peer))
        .collect();
    shots.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    shots.get(shots.len() / 2).copied()
}

pub(crate) struct Grid<'a> {
    pub(crate) opts: &'a Opts,
    pub(crate) cells: &'a [Cell],
}

struct GridTarget {
    partitions: i32,
    clients: usize,
    pipeline: usize,
    name: String,
    value: f64,
    met: bool,
}

impl Grid<'_> {
    /// The peers measured, in the order of the tables.
    fn peers(&self) -> Vec<&'static str> {
        [DATABUS, DATABUS_RDKAFKA, GO, BARE, JAVA]
            .into_iter()
            .filter(|p| self.cells.iter().any(|c| c.shot(p).is_some()))
            .collect()
    }

    fn keys(&self) -> Vec<(i32, usize, usize)> {
        let mut k = Vec::new();
        for &parts in &self.opts.grid_partitions {
            for &c in &self.opts.grid_clients {
                for &p in &self.opts.grid_pipelines {
                    k.push((parts, c, p));
                }
            }
        }
        k
    }

    fn targets(&self) -> Vec<GridTarget> {
        let mut t = Vec::new();
        for (parts, c, p) in self.keys() {
            let m = |peer| median(self.cells, parts, c, p, peer);
            let mut push = |name: &str, value: Option<f64>, met: &dyn Fn(f64) -> bool| {
                if let Some(v) = value {
                    let name = name.to_owned();
                    t.push(GridTarget {
                        partitions: parts,
                        clients: c,
                        pipeline: p,
                        name,
                        value: v,
                        met: met(v),
                    });
                }
            };
            push("databus / Go databus ≥ 1.5", ratio(m(DATABUS), m(GO)), &|v| v >= 1.5);
            push("databus / bare librdkafka ≥ 0.9", ratio(m(DATABUS), m(BARE)), &|v| v >= 0.9);
            if p == 16 && c == 50 {
                push("databus p99 < 5 ms", m(DATABUS).map(|s| s.p99), &|v| v < 5.0);
            }
            if p == 16 && c == 100 {
                push("databus p99 < 10 ms", m(DATABUS).map(|s| s.p99), &|v| v < 10.0);
            }
        }
        t
    }

    pub(crate) fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let peers = self.peers();
        let o = self.opts;
        let _ = writeln!(
            s,
            "### The grid: `redis-benchmark -t set -r 100000 -d {}` against each front; the bare producers \
             used the same way\n",
            o.value_size
        );
        let _ = writeln!(
            s,
            "Median of {} round(s) per cell, the peers in turn within each cell; producers with `acks=all`, \
             idempotence, `linger.ms` {}, {} in flight (the Go databus: sarama's defaults). \
             p99 as redis-benchmark counts it (a pipeline's write to its first reply, for each of its \
             requests; the bare producers: a batch's first send to its first acknowledgement). \
             CPU in µs per SET: the server process (for a bare producer: its whole process) / the broker. \
             Then per SET: the load generator's CPU (redis-benchmark), the server's context switches (all \
             its threads) and its Kafka requests (`sendmsg` calls of librdkafka, `writev` of the JVM; \
             counted by perf's syscall tracepoints).\n",
            o.grid_rounds, o.linger_ms, o.max_in_flight
        );
        for &parts in &o.grid_partitions {
            let _ = writeln!(s, "#### {parts} partitions (topic `{}`)\n", grid_topic(parts));
            let mut head = String::from("| c | P |");
            let mut rule = String::from("|---:|---:|");
            for p in &peers {
                let _ = write!(head, " {p} rps | p99 ms | CPU µs/SET |");
                rule.push_str("---:|---:|---:|");
            }
            for p in peers.iter().filter(|p| **p != DATABUS) {
                let _ = write!(head, " databus / {p} |");
                rule.push_str("---:|");
            }
            let _ = writeln!(s, "{head}\n{rule}");
            for &c in &o.grid_clients {
                for &p in &o.grid_pipelines {
                    let m = |peer| median(self.cells, parts, c, p, peer);
                    let _ = write!(s, "| {c} | {p} |");
                    for peer in &peers {
                        match m(peer) {
                            Some(x) => {
                                let _ = write!(
                                    s,
                                    " {:.0} | {:.2} | {} / {} |",
                                    x.rps,
                                    x.p99,
                                    opt(x.server_us, 1),
                                    opt(x.broker_us, 1)
                                );
                            }
                            None => s.push_str(" – | – | – |"),
                        }
                    }
                    for peer in peers.iter().filter(|p| **p != DATABUS) {
                        let _ = write!(s, " {} |", opt(ratio(m(DATABUS), m(peer)), 2));
                    }
                    s.push('\n');
                }
            }
            let _ = writeln!(s, "\nPer SET, {parts} partitions: load generator CPU µs / server context switches / Kafka requests\n");
            let mut head = String::from("| c | P |");
            let mut rule = String::from("|---:|---:|");
            for p in &peers {
                let _ = write!(head, " {p} |");
                rule.push_str("---:|");
            }
            let _ = writeln!(s, "{head}\n{rule}");
            for &c in &o.grid_clients {
                for &p in &o.grid_pipelines {
                    let _ = write!(s, "| {c} | {p} |");
                    for peer in &peers {
                        let x = median(self.cells, parts, c, p, peer);
                        let _ = write!(
                            s,
                            " {} / {} / {} |",
                            opt(x.and_then(|x| x.loadgen_us), 1),
                            opt(x.and_then(|x| x.ctx_switches), 2),
                            opt(x.and_then(|x| x.requests_per_set), 3)
                        );
                    }
                    s.push('\n');
                }
            }
            s.push('\n');
        }
        let errors: usize = self.cells.iter().flat_map(|c| c.shots.iter()).map(|(_, s)| s.errors).sum();
        if errors > 0 {
            let _ = writeln!(s, "**{errors} error replies or failed records in the grid.**\n");
        }
        let targets = self.targets();
        let met = targets.iter().filter(|t| t.met).count();
        let _ = writeln!(s, "#### Grid targets: {met} of {} met\n", targets.len());
        let _ =
            writeln!(s, "| partitions | c | P | target | measured | met |\n|---:|---:|---:|---|---:|---|");
        for t in &targets {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2} | {} |",
                t.partitions,
                t.clients,
                t.pipeline,
                t.name,
                t.value,
                if t.met { "yes" } else { "**no**" }
            );
        }
        s
    }

    pub(crate) fn json(&self) -> Value {
        let shot = |s: &Shot| {
            json!({
                "requests": s.requests, "rps": round(s.rps, 1), "p50_ms": s.p50, "p99_ms": round(s.p99, 3),
                "errors": s.errors,
                "server_cpu_us_per_set": s.server_us.map(|v| round(v, 2)),
                "loadgen_cpu_us_per_set": s.loadgen_us.map(|v| round(v, 2)),
                "broker_cpu_us_per_set": s.broker_us.map(|v| round(v, 2)),
                "others_cpu_us_per_set": round(s.others_us, 2),
                "context_switches_per_set": s.ctx_switches.map(|v| round(v, 3)),
                "kafka_requests_per_set": s.requests_per_set.map(|v| round(v, 4)),
            })
        };
        let cells: Vec<Value> = self
            .cells
            .iter()
            .map(|c| {
                let shots: serde_json::Map<String, Value> =
                    c.shots.iter().map(|(n, s)| (n.to_string(), shot(s))).collect();
                json!({"partitions": c.partitions, "clients": c.clients, "pipeline": c.pipeline,
                       "round": c.round, "peers": shots})
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .iter()
            .map(|t| {
                json!({"partitions": t.partitions, "clients": t.clients, "pipeline": t.pipeline,
                            "target": t.name, "measured": round(t.value, 3), "met": t.met})
            })
            .collect();
        json!({"cells": cells, "targets": targets})
    }

    /// A chart of the grid: per partition count, requests/s and p99 of each
    /// peer at every cell, log scales, as an SVG image.
    pub(crate) fn svg(&self, title: &str) -> String {
        use std::fmt::Write as _;
        let colors = [(DATABUS, "#1f77b4"), (GO, "#2ca02c"), (BARE, "#ff7f0e"), (JAVA, "#9467bd")];
        let peers: Vec<(&str, &str)> = colors.into_iter().filter(|(p, _)| self.peers().contains(p)).collect();
        let cells: Vec<(usize, usize)> = self
            .opts
            .grid_clients
            .iter()
            .flat_map(|&c| self.opts.grid_pipelines.iter().map(move |&p| (c, p)))
            .collect();
        let (pw, ph, left, top) = (560.0, 220.0, 70.0, 50.0);
        let panels = self.opts.grid_partitions.len();
        let (w, h) = (left + 2.0 * pw + 40.0, top + panels as f64 * (ph + 70.0) + 40.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(s, r#"<text x="{left}" y="20" font-size="14" font-weight="bold">{title}</text>"#);
        for (i, (name, color)) in peers.iter().enumerate() {
            let x = left + i as f64 * 150.0;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="30" width="12" height="12" fill="{color}"/><text x="{}" y="40">{name}</text>"#,
                x + 16.0
            );
        }
        for (row, &parts) in self.opts.grid_partitions.iter().enumerate() {
            let y0 = top + row as f64 * (ph + 70.0) + 20.0;
            for (col, (label, lo, hi)) in
                [("requests/s", 1e3, 1e6), ("p99 ms", 0.1, 100.0)].into_iter().enumerate()
            {
                let x0 = left + col as f64 * (pw + 20.0);
                let plot_w = pw - 50.0;
                let _ = writeln!(
                    s,
                    r#"<text x="{x0}" y="{}" font-weight="bold">{parts} partitions: {label} (log scale)</text>"#,
                    y0 - 6.0
                );
                let _ = writeln!(
                    s,
                    r##"<rect x="{x0}" y="{y0}" width="{plot_w}" height="{ph}" fill="none" stroke="#999"/>"##
                );
                let ys = |v: f64| {
                    y0 + ph - (v.max(lo).min(hi).log10() - lo.log10()) / (hi.log10() - lo.log10()) * ph
                };
                let mut v = lo;
                while v <= hi * 1.0001 {
                    let y = ys(v);
                    let _ = writeln!(
                        s,
                        r##"<line x1="{x0}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                        x0 + plot_w,
                        x0 - 4.0,
                        y + 4.0,
                        if v >= 1e3 { format!("{}k", v / 1e3) } else { format!("{v}") }
                    );
                    v *= 10.0;
                }
                let slot = plot_w / cells.len() as f64;
                let bar = (slot - 8.0) / peers.len() as f64;
                for (j, &(c, p)) in cells.iter().enumerate() {
                    let sx = x0 + j as f64 * slot + 4.0;
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{}" text-anchor="middle">c{c} P{p}</text>"#,
                        sx + slot / 2.0 - 4.0,
                        y0 + ph + 14.0
                    );
                    for (k, (peer, color)) in peers.iter().enumerate() {
                        let Some(shot) = median(self.cells, parts, c, p, peer) else { continue };
                        let v = if col == 0 { shot.rps } else { shot.p99 };
                        let y = ys(v);
                        let _ = writeln!(
                            s,
                            r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{peer} c={c} P={p}: {v:.2}</title></rect>"#,
                            sx + k as f64 * bar,
                            bar - 1.0,
                            y0 + ph - y
                        );
                    }
                }
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_grant_is_the_go_databus_auth() {
        assert_eq!(
            seed_auth("bench_grid_p3"),
            "app_key1:app_secret1@group_bench_grid_p3/topic=bench_grid_p3&role=pub"
        );
    }
}
