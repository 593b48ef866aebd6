//! `databus-bench`: measures a release build of databus against direct
//! librdkafka clients on the same broker, with the same producer settings, in
//! one run: publish throughput and latency, consume throughput, databus CPU
//! per message and RSS per connection. `make bench` (scripts/bench.sh) runs
//! it; it prints a markdown table and writes `bench/results.{md,json}`
//! (`bench/results-quick.*` with `BENCH_QUICK=1`).
//!
//! The bench sets up its own MySQL database (`databus_bench`, reset each run),
//! its own fresh topics, a generated config, and starts databus as a child
//! process on a free port (killed when the bench ends). Every knob is an
//! environment variable; see `Opts::from_env` and BENCHMARKS.md.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use databus::proto::MessagePb;
use databus::resp::{parse_reply, Frame, Limits};
use mysql::prelude::Queryable;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The app every grant of the bench belongs to, and the cluster name the
/// generated config gives the broker.
const APP_KEY: &str = "bench_key";
const APP_SECRET: &str = "bench_secret";
const CLUSTER: &str = "bench";
/// Defaults of databus's producer that the direct producer copies.
const PRODUCE_TIMEOUT_MS: u64 = 10_000;
const PARTITIONER: &str = "murmur2_random";
/// A group's first join on tansu takes about half the session timeout.
const SESSION_TIMEOUT_MS: u64 = 6_000;
/// Only empty MGETs wait this long; it bounds the idle-subscriber phase.
const SUB_WAIT_TIMEOUT_MS: u64 = 3_000;
const IO_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("databus-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Settings

/// Everything the environment can change.
struct Opts {
    quick: bool,
    label: String,
    brokers: String,
    mysql_url: String,
    database: String,
    databus_bin: PathBuf,
    out_dir: PathBuf,
    run_dir: PathBuf,
    /// Messages per publish case at pipeline depth ≥ 16, and at depth 1.
    messages: usize,
    messages_depth1: usize,
    depths: Vec<usize>,
    conns: Vec<usize>,
    latency_samples: usize,
    consume_messages: usize,
    idle_publishers: usize,
    idle_subscribers: usize,
    partitions: i32,
    replication: i32,
    value_size: usize,
    linger_ms: u64,
    max_in_flight: u64,
    /// Extra librdkafka properties for databus's cluster and the direct clients.
    kafka_properties: Vec<(String, String)>,
    /// `subscriber.batch_size`; databus's default when unset.
    sub_batch: Option<usize>,
    /// Top-level TOML lines added to the generated config (tuning experiments).
    config_top: String,
    broker_pid: Option<u32>,
    clk_tck: f64,
    phases: Phases,
    /// Runs of each publish case; the median is reported.
    repeat: usize,
    /// Fewest pipelines each publish case at depth > 1 sends per connection.
    bursts: usize,
}

/// Which parts run (`BENCH_PHASES=publish,latency,consume,memory`, default all).
struct Phases {
    publish: bool,
    latency: bool,
    consume: bool,
    memory: bool,
}

impl Phases {
    fn from_env() -> Res<Phases> {
        let Some(list) = env_str("BENCH_PHASES") else {
            return Ok(Phases { publish: true, latency: true, consume: true, memory: true });
        };
        let mut p = Phases { publish: false, latency: false, consume: false, memory: false };
        for name in list.split(',').map(str::trim) {
            match name {
                "publish" => p.publish = true,
                "latency" => p.latency = true,
                "consume" => p.consume = true,
                "memory" => p.memory = true,
                _ => return Err(format!("BENCH_PHASES: unknown phase '{name}'").into()),
            }
        }
        Ok(p)
    }
}

fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Res<T> {
    match env_str(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a valid number").into()),
    }
}

fn env_list(name: &str, default: &[usize]) -> Res<Vec<usize>> {
    match env_str(name) {
        None => Ok(default.to_vec()),
        Some(v) => v
            .split(',')
            .map(|s| s.trim().parse().map_err(|_| format!("{name}={v:?}: '{s}' is not a number").into()))
            .collect(),
    }
}

impl Opts {
    fn from_env() -> Res<Opts> {
        let quick = env_str("BENCH_QUICK").is_some_and(|v| v != "0");
        let pick = |full: usize, fast: usize| if quick { fast } else { full };
        let kafka_properties = env_str("BENCH_KAFKA_PROPERTIES")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| format!("BENCH_KAFKA_PROPERTIES: '{kv}' is not key=value").into())
            })
            .collect::<Res<Vec<_>>>()?;
        let clk_tck = env_num("BENCH_CLK_TCK", 0.0)?;
        let clk_tck = if clk_tck > 0.0 { clk_tck } else { getconf_clk_tck() };
        Ok(Opts {
            quick,
            label: env_str("BENCH_LABEL").unwrap_or_default(),
            brokers: env_str("DATABUS_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".into()),
            mysql_url: env_str("DATABUS_MYSQL_URL")
                .unwrap_or_else(|| "mysql://databus:databus@127.0.0.1:3306".into())
                .trim_end_matches('/')
                .to_owned(),
            database: env_str("BENCH_DATABASE").unwrap_or_else(|| "databus_bench".into()),
            databus_bin: env_str("BENCH_DATABUS_BIN")
                .unwrap_or_else(|| "target/release/databus".into())
                .into(),
            out_dir: env_str("BENCH_OUT_DIR").unwrap_or_else(|| "bench".into()).into(),
            run_dir: env_str("BENCH_RUN_DIR").unwrap_or_else(|| ".run/bench".into()).into(),
            messages: env_num("BENCH_MESSAGES", pick(50_000, 10_000))?,
            messages_depth1: env_num("BENCH_MESSAGES_DEPTH1", pick(5_000, 1_000))?,
            depths: env_list("BENCH_DEPTHS", &[1, 16, 128])?,
            conns: env_list("BENCH_CONNS", &[1, 8])?,
            latency_samples: env_num("BENCH_LATENCY_SAMPLES", pick(5_000, 500))?,
            consume_messages: env_num("BENCH_CONSUME_MESSAGES", pick(100_000, 10_000))?,
            idle_publishers: env_num("BENCH_IDLE_PUBLISHERS", pick(1_000, 200))?,
            idle_subscribers: env_num("BENCH_IDLE_SUBSCRIBERS", pick(50, 10))?,
            partitions: env_num("BENCH_PARTITIONS", 3)?,
            replication: env_num("BENCH_REPLICATION", 1)?,
            value_size: env_num("BENCH_VALUE_SIZE", 100)?,
            linger_ms: env_num("BENCH_LINGER_MS", 0)?,
            max_in_flight: env_num("BENCH_MAX_IN_FLIGHT", 1)?,
            kafka_properties,
            sub_batch: env_str("BENCH_SUB_BATCH")
                .map(|v| v.parse().map_err(|_| format!("BENCH_SUB_BATCH={v:?} is not a number")))
                .transpose()?,
            config_top: env_str("BENCH_CONFIG_TOP").unwrap_or_default(),
            broker_pid: env_str("BENCH_BROKER_PID").and_then(|v| v.trim().parse().ok()),
            clk_tck,
            phases: Phases::from_env()?,
            repeat: env_num("BENCH_REPEAT", pick(3, 1))?.max(1),
            bursts: env_num("BENCH_BURSTS", pick(400, 40))?,
        })
    }

    /// Properties every direct client shares with databus's cluster config.
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("reconnect.backoff.max.ms", "1000");
        c.set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &self.kafka_properties {
            c.set(k, v);
        }
        c
    }
}

fn getconf_clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------
// /proc readings

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str, clk_tck: f64) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]: utime (14) and stime (15) are [11], [12].
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck)
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS").unwrap_or(0)
}

fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads").unwrap_or(0)
}

/// CPU of databus, of this load generator and (when known) of the broker.
#[derive(Clone, Copy, Default)]
struct CpuSnap {
    databus: f64,
    bench: f64,
    broker: Option<f64>,
    /// Busy time of every CPU of the machine.
    machine: f64,
}

/// CPU used between two snapshots, in µs per message.
#[derive(Clone, Copy, Default)]
struct CpuPerMsg {
    databus: f64,
    bench: f64,
    broker: Option<f64>,
    /// Everything else on the machine (other processes, interrupts): shows
    /// when something disturbed the measurement.
    others: f64,
}

struct Cpu {
    databus_pid: Option<u32>,
    broker_pid: Option<u32>,
    clk_tck: f64,
}

impl Cpu {
    fn snap(&self) -> CpuSnap {
        let of = |pid: Option<u32>| pid.and_then(|p| cpu_seconds(&p.to_string(), self.clk_tck));
        CpuSnap {
            databus: of(self.databus_pid).unwrap_or(0.0),
            bench: cpu_seconds("self", self.clk_tck).unwrap_or(0.0),
            broker: of(self.broker_pid),
            machine: machine_busy_seconds(self.clk_tck),
        }
    }

    fn per_msg(before: CpuSnap, after: CpuSnap, messages: usize) -> CpuPerMsg {
        let us = |s: f64| s * 1e6 / messages.max(1) as f64;
        let databus = us(after.databus - before.databus);
        let bench = us(after.bench - before.bench);
        let broker = after.broker.zip(before.broker).map(|(a, b)| us(a - b));
        let machine = us(after.machine - before.machine);
        let others = (machine - databus - bench - broker.unwrap_or(0.0)).max(0.0);
        CpuPerMsg { databus, bench, broker, others }
    }
}

fn cpu_json(c: &CpuPerMsg) -> Value {
    json!({
        "databus_us_per_msg": round(c.databus, 2),
        "bench_us_per_msg": round(c.bench, 2),
        "broker_us_per_msg": c.broker.map(|b| round(b, 2)),
        "others_us_per_msg": round(c.others, 2),
    })
}

/// Busy time of all CPUs from the first line of /proc/stat (user, nice,
/// system, irq, softirq, steal), in seconds.
fn machine_busy_seconds(clk_tck: f64) -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy / clk_tck
}

// ---------------------------------------------------------------------------
// Services: the database, topics, the databus process

/// Blocks on a future on this thread; the admin client's futures are
/// resolved by librdkafka's own threads.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

/// The topics and consumer groups of this run, deleted when it ends (unless
/// `BENCH_KEEP_TOPICS=1`): an in-memory broker such as tansu slows down as
/// records and groups pile up.
struct Topics {
    admin: AdminClient<DefaultClientContext>,
    names: Vec<String>,
    groups: Vec<String>,
    keep: bool,
}

impl Topics {
    fn create(opts: &Opts, names: Vec<String>, groups: Vec<String>) -> Res<Topics> {
        let admin: AdminClient<DefaultClientContext> = opts.client_config().create()?;
        let keep = env_str("BENCH_KEEP_TOPICS").is_some_and(|v| v != "0");
        let topics = Topics { admin, names, groups, keep };
        create_topics(opts, &topics.admin, &topics.names)?;
        Ok(topics)
    }

    /// Deletes the groups, best effort; a group whose member has not left
    /// yet stays (the broker expires it).
    fn delete_groups(&mut self) {
        let groups = std::mem::take(&mut self.groups);
        if self.keep || groups.is_empty() {
            return;
        }
        let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let failed = match block_on(self.admin.delete_groups(&refs, &options)) {
            Ok(results) => results.iter().filter(|r| r.is_err()).count(),
            Err(_) => groups.len(),
        };
        if failed > 0 {
            eprintln!("databus-bench: {failed} of {} consumer groups were not deleted", groups.len());
        }
    }

    /// Deletes some topics now, best effort.
    fn delete(&mut self, names: &[String]) {
        self.names.retain(|n| !names.contains(n));
        if self.keep || names.is_empty() {
            return;
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        match block_on(self.admin.delete_topics(&refs, &options)) {
            Ok(results) => {
                for r in results {
                    if let Err((t, e)) = r {
                        eprintln!("databus-bench: deleting topic {t}: {e}");
                    }
                }
            }
            Err(e) => eprintln!("databus-bench: deleting topics: {e}"),
        }
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        let rest = std::mem::take(&mut self.names);
        self.delete(&rest);
        self.delete_groups();
    }
}

fn create_topics(opts: &Opts, admin: &AdminClient<DefaultClientContext>, topics: &[String]) -> Res<()> {
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, opts.partitions, TopicReplication::Fixed(opts.replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics(&new, &options))
        .map_err(|e| format!("Kafka at {} unreachable: {e}", opts.brokers))?;
    for r in results {
        r.map_err(|(t, e)| format!("create topic {t}: {e}"))?;
    }
    let probe: BaseConsumer = opts.client_config().create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for topic in topics {
        loop {
            let ready = probe.fetch_metadata(Some(topic), Duration::from_secs(5)).is_ok_and(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.error().is_none() && t.partitions().len() == opts.partitions as usize)
            });
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("topic {topic} did not appear on {}", opts.brokers).into());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Recreates the bench database with one app and the given grants
/// (group, operation, topic).
fn reset_database(opts: &Opts, grants: &[(String, u8, String)]) -> Res<()> {
    let server = mysql::Opts::from_url(&opts.mysql_url)?;
    let mut conn = mysql::Conn::new(server)
        .map_err(|e| format!("MySQL at {} unreachable: {e}", redact(&opts.mysql_url)))?;
    let db = &opts.database;
    conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))?;
    conn.query_drop(format!("CREATE DATABASE `{db}`"))?;
    conn.query_drop(format!("USE `{db}`"))?;
    conn.query_drop(
        "CREATE TABLE app_tb (id INT AUTO_INCREMENT PRIMARY KEY, app_key VARCHAR(45) NOT NULL,
           app_secret VARCHAR(64) NOT NULL, cluster VARCHAR(45) NOT NULL,
           created_at BIGINT NULL, deleted_at BIGINT NULL, updated_at BIGINT NULL)",
    )?;
    conn.query_drop(
        "CREATE TABLE auth_tb (id INT AUTO_INCREMENT PRIMARY KEY, app_id INT NOT NULL,
           group_name VARCHAR(45) NULL, operation TINYINT DEFAULT 0, topic VARCHAR(45) NOT NULL,
           created_at BIGINT NULL, deleted_at BIGINT NULL, updated_at BIGINT NULL)",
    )?;
    conn.exec_drop(
        "INSERT INTO app_tb (id, app_key, app_secret, cluster) VALUES (1, ?, ?, ?)",
        (APP_KEY, APP_SECRET, CLUSTER),
    )?;
    conn.exec_batch(
        "INSERT INTO auth_tb (app_id, group_name, operation, topic) VALUES (1, ?, ?, ?)",
        grants.iter().map(|(g, op, t)| (g, op, t)),
    )?;
    Ok(())
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..s + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A databus child process; killed when dropped.
struct Databus {
    child: Child,
    addr: SocketAddr,
    pid_file: PathBuf,
}

impl Databus {
    fn config(opts: &Opts, port: u16) -> String {
        let brokers: Vec<String> = opts.brokers.split(',').map(|b| toml_str(b.trim())).collect();
        let mut c = String::new();
        let _ = writeln!(c, "# Generated by databus-bench; see BENCHMARKS.md.");
        let _ = writeln!(c, "addr = \"127.0.0.1:{port}\"\nauth = \"mysql\"");
        let _ = writeln!(c, "log_level = \"warn\"\nmax_clients = 5000");
        let _ = writeln!(c, "{}", opts.config_top);
        let _ =
            writeln!(c, "[producer]\nlinger_ms = {}\nmax_in_flight = {}", opts.linger_ms, opts.max_in_flight);
        let _ = writeln!(c, "[subscriber]\nsession_timeout_ms = {SESSION_TIMEOUT_MS}");
        let _ = writeln!(c, "wait_timeout_ms = {SUB_WAIT_TIMEOUT_MS}");
        if let Some(b) = opts.sub_batch {
            let _ = writeln!(c, "batch_size = {b}");
        }
        let _ = writeln!(c, "[clusters.{CLUSTER}]\nbrokers = [{}]", brokers.join(", "));
        if !opts.kafka_properties.is_empty() {
            let props: Vec<String> = opts
                .kafka_properties
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
                .collect();
            let _ = writeln!(c, "properties = {{ {} }}", props.join(", "));
        }
        let url = format!("{}/{}", opts.mysql_url, opts.database);
        let _ = writeln!(c, "[mysql]\nurl = {}", toml_str(&url));
        c
    }

    fn start(opts: &Opts, name: &str) -> Res<Databus> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        fs::create_dir_all(&opts.run_dir)?;
        let conf = opts.run_dir.join(format!("{name}.toml"));
        fs::write(&conf, Databus::config(opts, port))?;
        let log_path = opts.run_dir.join(format!("{name}.log"));
        let log = fs::File::create(&log_path)?;
        let child = Command::new(&opts.databus_bin)
            .arg("--conf")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", opts.databus_bin.display()))?;
        // scripts/bench.sh kills whatever this names if the bench dies first.
        let pid_file = opts.run_dir.join("databus.pid");
        fs::write(&pid_file, child.id().to_string())?;
        let mut databus = Databus { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), pid_file };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = databus.child.try_wait()? {
                let tail = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("databus exited at start-up ({status}):\n{tail}").into());
            }
            if let Ok(mut c) = RespConn::connect(databus.addr) {
                if c.call(&[b"PING"])? == Frame::Simple("PONG".into()) {
                    return Ok(databus);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("databus did not answer on {} within 30 s", databus.addr).into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Databus {
    /// SIGTERM first, so its consumers leave their groups; SIGKILL if it
    /// has not exited within 10 s.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let termed = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while termed && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.pid_file);
    }
}

// ---------------------------------------------------------------------------
// A lean RESP client

struct RespConn {
    stream: TcpStream,
    input: Vec<u8>,
    start: usize,
    output: Vec<u8>,
    chunk: Box<[u8]>,
}

const REPLY_LIMITS: Limits = Limits {
    max_bulk_len: 64 << 20,
    max_array_len: 1 << 20,
    max_inline_len: 1 << 20,
    max_request_len: usize::MAX,
};

impl RespConn {
    fn connect(addr: SocketAddr) -> Res<RespConn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(RespConn {
            stream,
            input: Vec::new(),
            start: 0,
            output: Vec::new(),
            chunk: vec![0; 64 * 1024].into_boxed_slice(),
        })
    }

    /// Queues one command; [`RespConn::send`] writes the queue in one go.
    fn push(&mut self, args: &[&[u8]]) {
        let out = &mut self.output;
        let _ = write!(out, "*{}\r\n", args.len());
        for a in args {
            let _ = write!(out, "${}\r\n", a.len());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn send(&mut self) -> Res<()> {
        self.stream.write_all(&self.output)?;
        self.output.clear();
        Ok(())
    }

    fn fill(&mut self) -> Res<()> {
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        let n = self.stream.read(&mut self.chunk)?;
        if n == 0 {
            return Err("databus closed the connection".into());
        }
        self.input.extend_from_slice(&self.chunk[..n]);
        Ok(())
    }

    fn read(&mut self) -> Res<Frame> {
        loop {
            if let Some((frame, used)) = parse_reply(&self.input[self.start..], &REPLY_LIMITS)? {
                self.start += used;
                return Ok(frame);
            }
            self.fill()?;
        }
    }

    /// Reads one reply that should be `+OK`; the common case allocates nothing.
    fn read_ok(&mut self) -> Res<Result<(), String>> {
        loop {
            let rest = &self.input[self.start..];
            if rest.starts_with(b"+OK\r\n") {
                self.start += 5;
                return Ok(Ok(()));
            }
            if rest.len() >= 5 || rest.first().is_some_and(|&b| b != b'+') {
                return Ok(match self.read()? {
                    Frame::Simple(s) if s == "OK" => Ok(()),
                    other => Err(format!("{other:?}")),
                });
            }
            self.fill()?;
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> Res<Frame> {
        self.push(args);
        self.send()?;
        self.read()
    }

    fn auth(addr: SocketAddr, auth: &str) -> Res<RespConn> {
        let mut c = RespConn::connect(addr)?;
        match c.call(&[b"AUTH", auth.as_bytes()])? {
            Frame::Simple(s) if s == "OK" => Ok(c),
            other => Err(format!("AUTH {auth:?}: {other:?}").into()),
        }
    }
}

fn auth_string(group: &str, topic: &str, role: &str, extra: &str) -> String {
    format!("{APP_KEY}:{APP_SECRET}@{group}/topic={topic}&role={role}{extra}")
}

// ---------------------------------------------------------------------------
// Records

fn key_of(n: usize) -> Vec<u8> {
    format!("k{n}").into_bytes()
}

/// A JSON object of exactly `size` bytes (when `size` allows one), so the
/// JSON MGET embeds it and a consumer could parse it.
fn value_of(n: usize, size: usize) -> Vec<u8> {
    let mut v = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
    if v.len() + 2 > size {
        let mut digits = n.to_string().into_bytes();
        digits.resize(size, b'0');
        return digits;
    }
    v.resize(size - 2, b'x');
    v.extend_from_slice(b"\"}");
    v
}

/// The headers databus puts on a record of an uncolored publisher.
fn color_header() -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header { key: "color", value: Some(&b""[..]) })
}

// ---------------------------------------------------------------------------
// The direct producer: databus's settings, delivery reports counted per waiter

#[derive(Default)]
struct Waiter {
    /// (acknowledged, failed, first error)
    state: Mutex<(usize, usize, Option<String>)>,
    done: Condvar,
}

impl Waiter {
    /// Waits until `total` records were reported since this waiter was made.
    fn wait_for(&self, total: usize) -> Res<(usize, Option<String>)> {
        let deadline = Instant::now() + Duration::from_millis(PRODUCE_TIMEOUT_MS + 5_000);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.0 + s.1 < total {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("direct producer: {} of {total} reports", s.0 + s.1).into());
            }
            s = self.done.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        Ok((s.1, s.2.clone()))
    }
}

struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Arc<Waiter>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiter: Arc<Waiter>) {
        let mut s = waiter.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => s.0 += 1,
            Err((e, _)) => {
                s.1 += 1;
                s.2.get_or_insert_with(|| e.to_string());
            }
        }
        drop(s);
        waiter.done.notify_all();
    }
}

type Direct = ThreadedProducer<Reports>;

fn direct_producer(opts: &Opts) -> Res<Direct> {
    Ok(opts
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", PARTITIONER)
        .set("message.timeout.ms", PRODUCE_TIMEOUT_MS.to_string())
        .set("linger.ms", opts.linger_ms.to_string())
        .set("max.in.flight.requests.per.connection", opts.max_in_flight.to_string())
        .create_with_context(Reports)?)
}

/// Enqueues one record, waiting while librdkafka's queue is full.
fn direct_send(p: &Direct, topic: &str, key: &[u8], value: &[u8], waiter: &Arc<Waiter>) -> Res<()> {
    let mut record =
        BaseRecord::with_opaque_to(topic, waiter.clone()).key(key).payload(value).headers(color_header());
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(format!("direct produce: {e}").into()),
        }
    }
}

// ---------------------------------------------------------------------------
// Publish throughput

struct PubRun {
    /// Of the median repeat.
    seconds: f64,
    errors: usize,
    first_error: Option<String>,
    /// Mean over the repeats.
    cpu: CpuPerMsg,
    /// Messages/s of every repeat.
    rates: Vec<f64>,
}

impl PubRun {
    fn rate(&self, messages: usize) -> f64 {
        messages as f64 / self.seconds
    }

    /// The median run by time, with CPU averaged and errors summed.
    fn combine(mut runs: Vec<PubRun>) -> PubRun {
        runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
        let n = runs.len().max(1) as f64;
        let mean = |f: &dyn Fn(&CpuPerMsg) -> f64| runs.iter().map(|r| f(&r.cpu)).sum::<f64>() / n;
        let cpu = CpuPerMsg {
            databus: mean(&|c| c.databus),
            bench: mean(&|c| c.bench),
            broker: runs.iter().all(|r| r.cpu.broker.is_some()).then(|| mean(&|c| c.broker.unwrap_or(0.0))),
            others: mean(&|c| c.others),
        };
        let rates = runs.iter().flat_map(|r| r.rates.clone()).collect();
        let errors = runs.iter().map(|r| r.errors).sum();
        let first_error = runs.iter().find_map(|r| r.first_error.clone());
        let seconds = runs[runs.len() / 2].seconds;
        PubRun { seconds, errors, first_error, cpu, rates }
    }
}

/// Splits `messages` over `conns` workers; worker `i` gets numbers
/// `first..first+count`.
fn shares(messages: usize, conns: usize) -> Vec<(usize, usize)> {
    let per = messages / conns;
    let extra = messages % conns;
    let mut first = 0;
    (0..conns)
        .map(|i| {
            let count = per + usize::from(i < extra);
            let share = (first, count);
            first += count;
            share
        })
        .collect()
}

/// Runs `conns` workers, each doing `work(first, count)` after a common start;
/// times from the start to the last worker's end.
fn timed_workers<W, S>(conns: usize, messages: usize, cpu: &Cpu, setup: S) -> Res<PubRun>
where
    S: Fn(usize) -> Res<W> + Sync,
    W: FnOnce(usize, usize) -> Res<(usize, Option<String>)>,
{
    let ready = Barrier::new(conns + 1);
    let go = Barrier::new(conns + 1);
    let (ready, go, setup) = (&ready, &go, &setup);
    thread::scope(|s| {
        let handles: Vec<_> = shares(messages, conns)
            .into_iter()
            .enumerate()
            .map(|(i, (first, count))| {
                s.spawn(move || {
                    let job = setup(i);
                    ready.wait();
                    go.wait();
                    job?(first, count)
                })
            })
            .collect();
        ready.wait();
        let before = cpu.snap();
        let started = Instant::now();
        go.wait();
        let mut errors = 0;
        let mut first_error = None;
        let mut failure = None;
        for h in handles {
            match h.join().map_err(|_| "a worker panicked")? {
                Ok((e, first)) => {
                    errors += e;
                    first_error = first_error.or(first);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let after = cpu.snap();
        if let Some(e) = failure {
            return Err(e);
        }
        let cpu = Cpu::per_msg(before, after, messages);
        Ok(PubRun { seconds, errors, first_error, cpu, rates: vec![messages as f64 / seconds] })
    })
}

fn publish_databus(
    addr: SocketAddr,
    auth: &str,
    messages: usize,
    conns: usize,
    depth: usize,
    value_size: usize,
    cpu: &Cpu,
) -> Res<PubRun> {
    let setup = |_: usize| -> Res<_> {
        let conn = RespConn::auth(addr, auth);
        Ok(move |first: usize, count: usize| -> Res<(usize, Option<String>)> {
            let mut c = conn?;
            let (mut errors, mut first_error) = (0, None);
            let mut n = first;
            let end = first + count;
            while n < end {
                let batch = depth.min(end - n);
                for i in n..n + batch {
                    c.push(&[b"SET", &key_of(i), &value_of(i, value_size)]);
                }
                c.send()?;
                for _ in 0..batch {
                    if let Err(e) = c.read_ok()? {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                n += batch;
            }
            Ok((errors, first_error))
        })
    };
    timed_workers(conns, messages, cpu, setup)
}

fn publish_direct(
    producer: &Direct,
    topic: &str,
    messages: usize,
    conns: usize,
    depth: usize,
    value_size: usize,
    cpu: &Cpu,
) -> Res<PubRun> {
    let setup = |_: usize| -> Res<_> {
        Ok(move |first: usize, count: usize| -> Res<(usize, Option<String>)> {
            let waiter = Arc::new(Waiter::default());
            let mut n = first;
            let end = first + count;
            while n < end {
                let batch = depth.min(end - n);
                for i in n..n + batch {
                    direct_send(producer, topic, &key_of(i), &value_of(i, value_size), &waiter)?;
                }
                n += batch;
                waiter.wait_for(n - first)?;
            }
            waiter.wait_for(count)
        })
    };
    timed_workers(conns, messages, cpu, setup)
}

// ---------------------------------------------------------------------------
// Latency

#[derive(Clone, Copy)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    mean: f64,
    max: f64,
}

/// Nearest-rank percentiles of durations, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort();
    let n = samples.len().max(1);
    let at = |q: f64| {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        samples.get(rank - 1).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / n as f64;
    let max = samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3);
    Percentiles { p50: at(0.50), p99: at(0.99), p999: at(0.999), mean, max }
}

fn pct_json(p: &Percentiles) -> Value {
    json!({"p50_ms": round(p.p50, 3), "p99_ms": round(p.p99, 3), "p999_ms": round(p.p999, 3), "mean_ms": round(p.mean, 3), "max_ms": round(p.max, 3)})
}

/// Alternates one non-pipelined SET and one direct produce-and-wait, so
/// drift in the broker or the machine hits both alike.
fn latency(
    addr: SocketAddr,
    auth: &str,
    producer: &Direct,
    topic: &str,
    samples: usize,
    value_size: usize,
) -> Res<(Vec<Duration>, Vec<Duration>)> {
    let mut conn = RespConn::auth(addr, auth)?;
    let waiter = Arc::new(Waiter::default());
    let mut acked = 0;
    let mut via_databus = Vec::with_capacity(samples);
    let mut direct = Vec::with_capacity(samples);
    let warmup = 100;
    for n in 0..samples + warmup {
        let (k, v) = (key_of(n), value_of(n, value_size));
        let t = Instant::now();
        conn.push(&[b"SET", &k, &v]);
        conn.send()?;
        conn.read_ok()?.map_err(|e| format!("SET failed: {e}"))?;
        let d = t.elapsed();
        let t = Instant::now();
        direct_send(producer, topic, &k, &v, &waiter)?;
        acked += 1;
        let (failed, err) = waiter.wait_for(acked)?;
        if failed > 0 {
            return Err(format!("direct produce failed: {err:?}").into());
        }
        let e = t.elapsed();
        if n >= warmup {
            via_databus.push(d);
            direct.push(e);
        }
    }
    Ok((via_databus, direct))
}

// ---------------------------------------------------------------------------
// Consume

struct ConsumeRun {
    /// Messages read in total, and those inside the timed window.
    received: usize,
    timed: usize,
    seconds: f64,
    cpu: CpuPerMsg,
    /// databus's RSS once the drain is done, its subscriber still connected.
    databus_rss_kib: Option<u64>,
    mgets: Option<MgetStats>,
}

/// The timed MGETs of a drain: how many, how many returned fewer messages
/// than the largest batch (a tick or wait ended them), how long they took.
struct MgetStats {
    calls: usize,
    short: usize,
    time: Percentiles,
}

impl ConsumeRun {
    fn rate(&self) -> f64 {
        self.timed as f64 / self.seconds.max(1e-9)
    }
}

fn prefill(opts: &Opts, producer: &Direct, topic: &str, messages: usize) -> Res<()> {
    let waiter = Arc::new(Waiter::default());
    for i in 0..messages {
        direct_send(producer, topic, &key_of(i), &value_of(i, opts.value_size), &waiter)?;
    }
    producer.flush(Duration::from_secs(60))?;
    let (failed, err) = waiter.wait_for(messages)?;
    if failed > 0 {
        return Err(format!("pre-filling {topic}: {failed} records failed: {err:?}").into());
    }
    Ok(())
}

/// A consumer assigned every partition from the beginning, no group join;
/// timed from its first record to the last.
fn consume_direct(opts: &Opts, topic: &str, messages: usize, cpu: &Cpu) -> Res<ConsumeRun> {
    let consumer: BaseConsumer = opts
        .client_config()
        .set("group.id", format!("bench-direct-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut received = 0;
    let mut bytes = 0usize;
    let mut started = None;
    while received < messages {
        if Instant::now() > deadline {
            return Err(format!("direct consumer: {received} of {messages} in 300 s").into());
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        bytes += m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len);
        received += 1;
        if started.is_none() {
            started = Some((Instant::now(), cpu.snap()));
        }
    }
    let (t0, c0) = started.ok_or("no message")?;
    let seconds = t0.elapsed().as_secs_f64();
    let timed = received - 1;
    std::hint::black_box(bytes);
    Ok(ConsumeRun {
        received,
        timed,
        seconds,
        cpu: Cpu::per_msg(c0, cpu.snap(), timed),
        databus_rss_kib: None,
        mgets: None,
    })
}

/// MGETs until `messages` arrived; timed from the first non-empty reply.
fn consume_databus(addr: SocketAddr, auth: &str, pb: bool, messages: usize, cpu: &Cpu) -> Res<ConsumeRun> {
    let mut conn = RespConn::auth(addr, auth)?;
    let cmd: &[&[u8]] = if pb { &[b"MGET", b"pb"] } else { &[b"MGET", b"json"] };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut received = 0;
    let mut started: Option<(Instant, CpuSnap, usize)> = None;
    // Durations of the timed MGETs, and how many of them came back short.
    let mut calls = Vec::new();
    let mut short = 0;
    let mut full = 0;
    while received < messages {
        if Instant::now() > deadline {
            return Err(format!("MGET: {received} of {messages} in 300 s").into());
        }
        let t = Instant::now();
        let Frame::Array(items) = conn.call(cmd)? else {
            return Err("MGET did not return an array".into());
        };
        if started.is_some() {
            calls.push(t.elapsed());
            full = full.max(items.len());
            if items.len() < full {
                short += 1;
            }
        }
        let Some(Frame::Bulk(first)) = items.first() else {
            continue;
        };
        // Check one element per batch, so a broken encoding cannot pass.
        if pb {
            MessagePb::decode(first.as_slice()).map_err(|e| format!("MGET pb element: {e}"))?;
        } else {
            serde_json::from_slice::<Value>(first).map_err(|e| format!("MGET json element: {e}"))?;
        }
        received += items.len();
        if started.is_none() {
            started = Some((Instant::now(), cpu.snap(), items.len()));
        }
    }
    let (t0, c0, first_batch) = started.ok_or("no message")?;
    let seconds = t0.elapsed().as_secs_f64();
    let timed = received - first_batch;
    let cpu_used = Cpu::per_msg(c0, cpu.snap(), timed);
    let databus_rss_kib = cpu.databus_pid.map(rss_kib);
    drop(conn);
    let mgets = Some(MgetStats { calls: calls.len(), short, time: percentiles(&mut calls) });
    Ok(ConsumeRun { received, timed, seconds, cpu: cpu_used, databus_rss_kib, mgets })
}

// ---------------------------------------------------------------------------
// Memory

struct RssRun {
    connections: usize,
    before_kib: u64,
    after_kib: u64,
    threads_before: u64,
    threads_after: u64,
    /// After one SET on each publisher (publishers only).
    after_set_kib: Option<u64>,
}

impl RssRun {
    fn per_conn_kib(&self, after: u64) -> f64 {
        (after as f64 - self.before_kib as f64) / self.connections.max(1) as f64
    }

    fn to_json(&self) -> Value {
        json!({
            "connections": self.connections,
            "rss_before_kib": self.before_kib,
            "rss_after_kib": self.after_kib,
            "per_connection_kib": round(self.per_conn_kib(self.after_kib), 1),
            "rss_after_one_set_kib": self.after_set_kib,
            "per_connection_after_one_set_kib": self.after_set_kib.map(|a| round(self.per_conn_kib(a), 1)),
            "threads_before": self.threads_before,
            "threads_after": self.threads_after,
        })
    }
}

const SETTLE: Duration = Duration::from_millis(1500);

/// Idle publishers on a fresh databus whose producer already exists.
fn rss_publishers(opts: &Opts, topic: &str, count: usize) -> Res<RssRun> {
    let databus = Databus::start(opts, "databus-rss-pub")?;
    let pid = databus.pid();
    let auth = auth_string("bench_pub", topic, "pub", "");
    {
        let mut warm = RespConn::auth(databus.addr, &auth)?;
        warm.push(&[b"SET", b"warm", b"up"]);
        warm.send()?;
        warm.read_ok()?.map_err(|e| format!("warm-up SET: {e}"))?;
    }
    thread::sleep(SETTLE);
    let (before_kib, threads_before) = (rss_kib(pid), threads(pid));
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        let mut c = RespConn::connect(databus.addr)?;
        c.push(&[b"AUTH", auth.as_bytes()]);
        c.send()?;
        conns.push(c);
    }
    for c in &mut conns {
        c.read_ok()?.map_err(|e| format!("AUTH: {e}"))?;
    }
    thread::sleep(SETTLE);
    let (after_kib, threads_after) = (rss_kib(pid), threads(pid));
    for (i, c) in conns.iter_mut().enumerate() {
        c.push(&[b"SET", &key_of(i), &value_of(i, opts.value_size)]);
        c.send()?;
    }
    for c in &mut conns {
        c.read_ok()?.map_err(|e| format!("SET: {e}"))?;
    }
    thread::sleep(SETTLE);
    let after_set_kib = rss_kib(pid);
    drop(conns);
    Ok(RssRun {
        connections: count,
        before_kib,
        after_kib,
        threads_before,
        threads_after,
        after_set_kib: Some(after_set_kib),
    })
}

/// Subscribers on a fresh databus, each in a group of its own on a small
/// pre-filled topic, measured once each has joined and returned a batch.
fn rss_subscribers(opts: &Opts, groups: &[String], topic: &str) -> Res<RssRun> {
    let databus = Databus::start(opts, "databus-rss-sub")?;
    let pid = databus.pid();
    thread::sleep(SETTLE);
    let (before_kib, threads_before) = (rss_kib(pid), threads(pid));
    let mut conns = Vec::with_capacity(groups.len());
    for g in groups {
        conns.push(RespConn::auth(databus.addr, &auth_string(g, topic, "sub", "&offset=old"))?);
    }
    // Joins on tansu take about half the session timeout; MGET until each
    // subscriber has its first batch.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending: Vec<usize> = (0..conns.len()).collect();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("{} subscribers got no message in 120 s", pending.len()).into());
        }
        for &i in &pending {
            conns[i].push(&[b"MGET"]);
            conns[i].send()?;
        }
        let mut still = Vec::new();
        for &i in &pending {
            match conns[i].read()? {
                Frame::Array(items) if !items.is_empty() => {}
                Frame::Array(_) => still.push(i),
                other => return Err(format!("MGET: {other:?}").into()),
            }
        }
        pending = still;
    }
    thread::sleep(SETTLE);
    let (after_kib, threads_after) = (rss_kib(pid), threads(pid));
    drop(conns);
    Ok(RssRun {
        connections: groups.len(),
        before_kib,
        after_kib,
        threads_before,
        threads_after,
        after_set_kib: None,
    })
}

// ---------------------------------------------------------------------------
// The run

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

fn fmt_rate(x: f64) -> String {
    if x >= 1000.0 {
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else {
        format!("{x:.1}")
    }
}

fn fmt_opt(x: Option<f64>, places: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.places$}"))
}

struct Machine {
    cpus: usize,
    cpu_model: String,
    mem_total: String,
    kernel: String,
}

fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let mem_kib = status_like("/proc/meminfo", "MemTotal").unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    Machine {
        cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        mem_total: format!("{:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0),
        kernel,
    }
}

fn status_like(path: &str, field: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

struct PubCase {
    conns: usize,
    depth: usize,
    messages: usize,
    databus: PubRun,
    direct: PubRun,
}

impl PubCase {
    fn ratio(&self) -> f64 {
        self.databus.rate(self.messages) / self.direct.rate(self.messages)
    }
}

fn run() -> Res<()> {
    let opts = Opts::from_env()?;
    let started = Instant::now();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // Topic and group names are VARCHAR(45) in auth_tb.
    let run_id = format!("{:x}", now % 0x100_0000);
    let t = |name: &str| format!("bench_{run_id}_{name}");
    let m = machine();
    eprintln!(
        "databus-bench: run {run_id}{} on {} CPUs ({}), broker {}",
        if opts.quick { " (quick)" } else { "" },
        m.cpus,
        m.cpu_model,
        opts.brokers
    );

    // Topics and grants, all made before databus starts.
    let mut cases = Vec::new();
    if opts.phases.publish {
        for &c in &opts.conns {
            for &d in &opts.depths {
                cases.push((c, d));
            }
        }
    }
    let case_topic = |via: &str, c: usize, d: usize| t(&format!("{via}_c{c}_d{d}"));
    let mut topics = Vec::new();
    for &(c, d) in &cases {
        topics.push(case_topic("db", c, d));
        topics.push(case_topic("direct", c, d));
    }
    let (warm_topic, lat_topic, cons_topic, idle_topic) = (t("warm"), t("latency"), t("consume"), t("idle"));
    topics.extend([warm_topic.clone(), lat_topic.clone(), cons_topic.clone(), idle_topic.clone()]);
    let (json_group, pb_group) = (format!("bench_{run_id}_json"), format!("bench_{run_id}_pb"));
    let idle_groups: Vec<String> =
        (0..opts.idle_subscribers).map(|i| format!("bench_{run_id}_idle{i}")).collect();
    let mut grants: Vec<(String, u8, String)> =
        topics.iter().map(|topic| ("bench_pub".to_owned(), 2, topic.clone())).collect();
    grants.push((json_group.clone(), 1, cons_topic.clone()));
    grants.push((pb_group.clone(), 1, cons_topic.clone()));
    grants.extend(idle_groups.iter().map(|g| (g.clone(), 1, idle_topic.clone())));
    eprintln!("databus-bench: creating {} topics and database {}", topics.len(), opts.database);
    let mut groups = vec![json_group.clone(), pb_group.clone()];
    groups.extend(idle_groups.iter().cloned());
    let mut created = Topics::create(&opts, topics, groups)?;
    reset_database(&opts, &grants)?;

    let databus = Databus::start(&opts, "databus")?;
    let cpu = Cpu { databus_pid: Some(databus.pid()), broker_pid: opts.broker_pid, clk_tck: opts.clk_tck };
    let producer = direct_producer(&opts)?;
    let pub_auth = |topic: &str| auth_string("bench_pub", topic, "pub", "");

    // Warm-up: both producers get their idempotent producer id and metadata.
    eprintln!("databus-bench: warm-up");
    publish_databus(databus.addr, &pub_auth(&warm_topic), 2_000, 1, 100, opts.value_size, &cpu)?;
    publish_direct(&producer, &warm_topic, 2_000, 1, 100, opts.value_size, &cpu)?;

    // 1. Publish throughput, databus then direct for each case.
    let mut pub_cases = Vec::new();
    for &(conns, depth) in &cases {
        // Deep, wide cases are fast: give each at least `bursts` full
        // pipelines so that a run lasts long enough to be stable.
        let messages =
            if depth == 1 { opts.messages_depth1 } else { opts.messages.max(conns * depth * opts.bursts) };
        let (db_topic, direct_topic) = (case_topic("db", conns, depth), case_topic("direct", conns, depth));
        // Untimed: both producers learn the new topic's partitions and leaders.
        publish_databus(databus.addr, &pub_auth(&db_topic), 200, 1, 50, opts.value_size, &cpu)?;
        publish_direct(&producer, &direct_topic, 200, 1, 50, opts.value_size, &cpu)?;
        let (mut via, mut direct) = (Vec::new(), Vec::new());
        for _ in 0..opts.repeat {
            let auth = pub_auth(&db_topic);
            via.push(publish_databus(databus.addr, &auth, messages, conns, depth, opts.value_size, &cpu)?);
            direct.push(publish_direct(
                &producer,
                &direct_topic,
                messages,
                conns,
                depth,
                opts.value_size,
                &cpu,
            )?);
        }
        // The broker keeps every record in memory; start each case afresh.
        created.delete(&[db_topic, direct_topic]);
        let case = PubCase {
            conns,
            depth,
            messages,
            databus: PubRun::combine(via),
            direct: PubRun::combine(direct),
        };
        eprintln!(
            "databus-bench: publish conns={conns} depth={depth}: databus {:.0}/s, direct {:.0}/s, \
             ratio {:.2}, databus CPU {:.1} µs/msg",
            case.databus.rate(messages),
            case.direct.rate(messages),
            case.ratio(),
            case.databus.cpu.databus
        );
        pub_cases.push(case);
    }

    // 2. Latency of one non-pipelined SET against one produce-and-wait.
    let mut lat = None;
    if opts.phases.latency {
        eprintln!("databus-bench: latency, {} samples each", opts.latency_samples);
        let (mut via, mut direct) = latency(
            databus.addr,
            &pub_auth(&lat_topic),
            &producer,
            &lat_topic,
            opts.latency_samples,
            opts.value_size,
        )?;
        lat = Some((percentiles(&mut via), percentiles(&mut direct)));
    }

    // 3. Consume throughput over one pre-filled topic.
    let mut consume = None;
    if opts.phases.consume {
        eprintln!("databus-bench: pre-filling {cons_topic} with {} records", opts.consume_messages);
        prefill(&opts, &producer, &cons_topic, opts.consume_messages)?;
        eprintln!("databus-bench: consume, direct");
        let direct = consume_direct(&opts, &cons_topic, opts.consume_messages, &cpu)?;
        let sub = |group: &str| auth_string(group, &cons_topic, "sub", "&offset=old");
        eprintln!("databus-bench: consume, MGET json");
        let json = consume_databus(databus.addr, &sub(&json_group), false, opts.consume_messages, &cpu)?;
        eprintln!("databus-bench: consume, MGET pb");
        let pb = consume_databus(databus.addr, &sub(&pb_group), true, opts.consume_messages, &cpu)?;
        consume = Some([("direct BaseConsumer", direct), ("MGET json", json), ("MGET pb", pb)]);
        created.delete(std::slice::from_ref(&cons_topic));
    }
    if opts.phases.memory {
        // A few batches per partition for the subscribers of the memory phase.
        let fill = 3 * 100 * opts.partitions.max(1) as usize;
        prefill(&opts, &producer, &idle_topic, fill)?;
    }
    let log_lines = fs::read_to_string(opts.run_dir.join("databus.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    drop(producer);
    drop(databus);

    // 4/5. Memory, each on a fresh databus.
    let mut memory = None;
    if opts.phases.memory {
        eprintln!("databus-bench: RSS with {} idle publishers", opts.idle_publishers);
        let publishers = rss_publishers(&opts, &lat_topic, opts.idle_publishers)?;
        eprintln!("databus-bench: RSS with {} subscribers", idle_groups.len());
        let subscribers = rss_subscribers(&opts, &idle_groups, &idle_topic)?;
        memory = Some((publishers, subscribers));
    }

    let elapsed = started.elapsed().as_secs_f64();
    let report = Report {
        opts: &opts,
        machine: &m,
        run_id: &run_id,
        elapsed,
        pub_cases: &pub_cases,
        lat,
        consume: consume.as_ref(),
        memory: memory.as_ref(),
        log_lines,
    };
    let md = report.markdown();
    let js = report.json();
    // A smoke run never replaces the recorded full results.
    let stem = if opts.quick { "results-quick" } else { "results" };
    fs::create_dir_all(&opts.out_dir)?;
    fs::write(opts.out_dir.join(format!("{stem}.md")), &md)?;
    fs::write(opts.out_dir.join(format!("{stem}.json")), serde_json::to_string_pretty(&js)? + "\n")?;
    println!("{md}");
    eprintln!(
        "databus-bench: wrote {0}/{stem}.md and {0}/{stem}.json in {elapsed:.0} s",
        opts.out_dir.display()
    );
    Ok(())
}

type ConsumeRuns = [(&'static str, ConsumeRun); 3];

struct Report<'a> {
    opts: &'a Opts,
    machine: &'a Machine,
    run_id: &'a str,
    elapsed: f64,
    pub_cases: &'a [PubCase],
    /// (databus SET, direct produce)
    lat: Option<(Percentiles, Percentiles)>,
    /// direct, json, pb
    consume: Option<&'a ConsumeRuns>,
    /// (idle publishers, subscribers)
    memory: Option<&'a (RssRun, RssRun)>,
    log_lines: usize,
}

struct Target {
    name: &'static str,
    goal: &'static str,
    value: String,
    met: bool,
}

impl Report<'_> {
    fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let deep: Vec<&PubCase> = self.pub_cases.iter().filter(|c| c.depth >= 16).collect();
        if !deep.is_empty() {
            let worst = deep.iter().map(|c| c.ratio()).fold(f64::INFINITY, f64::min);
            t.push(Target {
                name: "publish throughput databus/direct, depth ≥ 16 (worst case)",
                goal: "≥ 0.90",
                value: format!("{worst:.3}"),
                met: worst >= 0.9,
            });
        }
        if let Some((db, direct)) = &self.lat {
            let added = db.p50 - direct.p50;
            t.push(Target {
                name: "added single-SET latency, p50",
                goal: "≤ 0.30 ms",
                value: format!("{added:.3} ms"),
                met: added <= 0.3,
            });
        }
        if let Some([(_, direct), (_, json), (_, pb)]) = self.consume {
            for (name, r) in
                [("consume throughput MGET json / direct", json), ("consume throughput MGET pb / direct", pb)]
            {
                let ratio = r.rate() / direct.rate();
                t.push(Target { name, goal: "≥ 0.90", value: format!("{ratio:.3}"), met: ratio >= 0.9 });
            }
        }
        let d16: Vec<&PubCase> = self.pub_cases.iter().filter(|c| c.depth == 16).collect();
        if !d16.is_empty() {
            let worst = d16.iter().map(|c| c.databus.cpu.databus).fold(0.0, f64::max);
            t.push(Target {
                name: "databus CPU per published message, depth 16 (worst case)",
                goal: "≤ 10 µs",
                value: format!("{worst:.1} µs"),
                met: worst <= 10.0,
            });
        }
        if let Some((publishers, _)) = self.memory {
            let per = publishers.per_conn_kib(publishers.after_kib);
            t.push(Target {
                name: "RSS per idle publisher connection",
                goal: "≤ 100 KiB",
                value: format!("{per:.1} KiB"),
                met: per <= 100.0,
            });
        }
        t
    }

    fn markdown(&self) -> String {
        let o = self.opts;
        let m = self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## databus bench{}{}\n",
            if o.quick { " (quick mode)" } else { "" },
            if o.label.is_empty() { String::new() } else { format!(" — {}", o.label) }
        );
        let _ = writeln!(
            s,
            "Run `{}` at {} (commit {}) on {} × {}, {} RAM, Linux {}; broker {}; {} partitions per topic; \
             {}-byte JSON values; `linger.ms` {}, {} in flight, `acks=all`, idempotent, `{PARTITIONER}` on both sides; \
             subscriber batch size {}{}; took {:.0} s. Load generator, databus and broker share the machine.\n",
            self.run_id,
            env_str("BENCH_DATE").unwrap_or_else(|| "unknown time".into()),
            env_str("BENCH_GIT_COMMIT").unwrap_or_else(|| "unknown".into()),
            m.cpus,
            m.cpu_model,
            m.mem_total,
            m.kernel,
            o.brokers,
            o.partitions,
            o.value_size,
            o.linger_ms,
            o.max_in_flight,
            o.sub_batch.map_or("100 (default)".into(), |b| b.to_string()),
            if o.config_top.is_empty() { String::new() } else { format!("; extra config `{}`", o.config_top) },
            self.elapsed
        );
        if !self.pub_cases.is_empty() {
            self.publish_table(&mut s);
        }
        if let Some((db, direct)) = &self.lat {
            let _ = writeln!(
                s,
                "### Publish latency, one record at a time ({} samples each, ms)\n",
                o.latency_samples
            );
            let _ = writeln!(s, "| | p50 | p99 | p99.9 | mean |\n|---|---:|---:|---:|---:|");
            for (name, p) in [("databus `SET`", db), ("direct produce-and-wait", direct)] {
                let _ =
                    writeln!(s, "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |", p.p50, p.p99, p.p999, p.mean);
            }
            let _ = writeln!(
                s,
                "| difference | {:+.3} | {:+.3} | {:+.3} | {:+.3} |\n",
                db.p50 - direct.p50,
                db.p99 - direct.p99,
                db.p999 - direct.p999,
                db.mean - direct.mean
            );
        }
        if let Some(runs) = self.consume {
            let direct_rate = runs[0].1.rate();
            let _ = writeln!(s, "### Consume throughput, draining one pre-filled topic\n");
            let _ = writeln!(
                s,
                "| reader | messages | messages/s | ratio | databus CPU µs/msg | client CPU µs/msg | \
                 broker CPU µs/msg | databus RSS at end | MGETs (short) | MGET p50 / p99 / max ms |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (name, r) in runs {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {} |",
                    r.received,
                    fmt_rate(r.rate()),
                    r.rate() / direct_rate,
                    r.cpu.databus,
                    r.cpu.bench,
                    fmt_opt(r.cpu.broker, 1),
                    r.databus_rss_kib.map_or("–".into(), |k| format!("{k} KiB")),
                    r.mgets.as_ref().map_or("–".into(), |m| format!("{} ({})", m.calls, m.short)),
                    r.mgets.as_ref().map_or("–".into(), |m| format!(
                        "{:.2} / {:.2} / {:.0}",
                        m.time.p50, m.time.p99, m.time.max
                    )),
                );
            }
            s.push('\n');
        }
        if let Some((p, q)) = self.memory {
            let _ = writeln!(s, "### databus memory (a fresh process for each row group)\n");
            let _ = writeln!(
                s,
                "| connections | RSS before | RSS after | per connection | threads before → after |\n\
                 |---|---:|---:|---:|---:|"
            );
            let _ = writeln!(
                s,
                "| {} idle publishers (after AUTH) | {} KiB | {} KiB | {:.1} KiB | {} → {} |",
                p.connections,
                p.before_kib,
                p.after_kib,
                p.per_conn_kib(p.after_kib),
                p.threads_before,
                p.threads_after
            );
            if let Some(a) = p.after_set_kib {
                let _ = writeln!(
                    s,
                    "| the same, after one `SET` each | {} KiB | {} KiB | {:.1} KiB | |",
                    p.before_kib,
                    a,
                    p.per_conn_kib(a)
                );
            }
            let _ = writeln!(
                s,
                "| {} subscribers (joined, first `MGET` served) | {} KiB | {} KiB | {:.1} KiB | {} → {} |\n",
                q.connections,
                q.before_kib,
                q.after_kib,
                q.per_conn_kib(q.after_kib),
                q.threads_before,
                q.threads_after
            );
        }
        let _ = writeln!(s, "### Targets\n\n| target | goal | measured | met |\n|---|---|---:|---|");
        for t in self.targets() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.name,
                t.goal,
                t.value,
                if t.met { "yes" } else { "**no**" }
            );
        }
        if self.log_lines > 0 {
            let _ = writeln!(
                s,
                "\ndatabus logged {} lines at `warn` or above during the run (see {}/databus.log).",
                self.log_lines,
                o.run_dir.display()
            );
        }
        s
    }

    fn publish_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "### Publish throughput (messages/s, median of {} runs; CPU is the mean)\n",
            self.opts.repeat
        );
        let _ = writeln!(
            s,
            "| conns | depth | messages | databus | direct | ratio | databus CPU µs/msg | \
             load generator CPU µs/msg (databus run: RESP client / direct run: librdkafka producer) | \
             broker CPU µs/msg (databus run / direct run) | other processes µs/msg (databus run / direct run) |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in self.pub_cases {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.1} / {:.1} | {} / {} | {:.1} / {:.1} |",
                c.conns,
                c.depth,
                c.messages,
                fmt_rate(c.databus.rate(c.messages)),
                fmt_rate(c.direct.rate(c.messages)),
                c.ratio(),
                c.databus.cpu.databus,
                c.databus.cpu.bench,
                c.direct.cpu.bench,
                fmt_opt(c.databus.cpu.broker, 1),
                fmt_opt(c.direct.cpu.broker, 1),
                c.databus.cpu.others,
                c.direct.cpu.others,
            );
        }
        let errors: usize = self.pub_cases.iter().map(|c| c.databus.errors + c.direct.errors).sum();
        if errors > 0 {
            let first = self
                .pub_cases
                .iter()
                .find_map(|c| c.databus.first_error.clone().or(c.direct.first_error.clone()));
            let _ = writeln!(s, "\n**{errors} publish errors**, first: {first:?}");
        }
        s.push('\n');
    }

    fn json(&self) -> Value {
        let o = self.opts;
        let m = self.machine;
        let publish: Vec<Value> = self
            .pub_cases
            .iter()
            .map(|c| {
                json!({
                    "conns": c.conns,
                    "depth": c.depth,
                    "messages": c.messages,
                    "databus_msgs_per_s": round(c.databus.rate(c.messages), 1),
                    "direct_msgs_per_s": round(c.direct.rate(c.messages), 1),
                    "ratio": round(c.ratio(), 3),
                    "databus_rates_per_repeat": c.databus.rates.iter().map(|r| round(*r, 1)).collect::<Vec<_>>(),
                    "direct_rates_per_repeat": c.direct.rates.iter().map(|r| round(*r, 1)).collect::<Vec<_>>(),
                    "databus_seconds": round(c.databus.seconds, 3),
                    "direct_seconds": round(c.direct.seconds, 3),
                    "databus_errors": c.databus.errors,
                    "direct_errors": c.direct.errors,
                    "cpu_databus_run": cpu_json(&c.databus.cpu),
                    "cpu_direct_run": cpu_json(&c.direct.cpu),
                })
            })
            .collect();
        let consume = self.consume.map(|runs| {
            let direct_rate = runs[0].1.rate();
            runs.iter()
                .map(|(name, r)| {
                    let v = json!({
                        "received": r.received,
                        "timed_messages": r.timed,
                        "seconds": round(r.seconds, 3),
                        "msgs_per_s": round(r.rate(), 1),
                        "ratio": round(r.rate() / direct_rate, 3),
                        "cpu": cpu_json(&r.cpu),
                        "databus_rss_kib": r.databus_rss_kib,
                        "mget_calls": r.mgets.as_ref().map(|m| m.calls),
                        "mget_short_batches": r.mgets.as_ref().map(|m| m.short),
                        "mget_time": r.mgets.as_ref().map(|m| pct_json(&m.time)),
                    });
                    (name.to_string(), v)
                })
                .collect::<BTreeMap<String, Value>>()
        });
        let latency = self.lat.map(|(db, direct)| {
            json!({
                "samples": o.latency_samples,
                "databus_set": pct_json(&db),
                "direct_produce": pct_json(&direct),
                "added_p50_ms": round(db.p50 - direct.p50, 3),
                "added_p99_ms": round(db.p99 - direct.p99, 3),
                "added_p999_ms": round(db.p999 - direct.p999, 3),
            })
        });
        let memory =
            self.memory.map(|(p, q)| json!({"idle_publishers": p.to_json(), "subscribers": q.to_json()}));
        let targets: Vec<Value> = self
            .targets()
            .iter()
            .map(|t| json!({"target": t.name, "goal": t.goal, "measured": t.value, "met": t.met}))
            .collect();
        json!({
            "run_id": self.run_id,
            "date": env_str("BENCH_DATE"),
            "git_commit": env_str("BENCH_GIT_COMMIT"),
            "label": o.label,
            "quick": o.quick,
            "elapsed_s": round(self.elapsed, 1),
            "machine": {"cpus": m.cpus, "cpu_model": m.cpu_model, "memory": m.mem_total, "kernel": m.kernel},
            "settings": {
                "brokers": o.brokers,
                "partitions": o.partitions,
                "publish_repeats": o.repeat,
                "replication": o.replication,
                "value_size": o.value_size,
                "linger_ms": o.linger_ms,
                "max_in_flight": o.max_in_flight,
                "acks": "all",
                "enable_idempotence": true,
                "partitioner": PARTITIONER,
                "subscriber_batch_size": o.sub_batch,
                "session_timeout_ms": SESSION_TIMEOUT_MS,
                "config_top": o.config_top,
                "kafka_properties": o.kafka_properties.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                "broker_cpu_measured": o.broker_pid.is_some(),
            },
            "publish": publish,
            "latency": latency,
            "consume": consume,
            "memory": memory,
            "targets": targets,
            "databus_log_lines": self.log_lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_requested_size_and_are_json() {
        for n in [0, 7, 123_456_789] {
            let v = value_of(n, 100);
            assert_eq!(v.len(), 100);
            serde_json::from_slice::<Value>(&v).unwrap();
        }
        assert_eq!(value_of(42, 4), b"4200");
    }

    #[test]
    fn shares_cover_every_message_once() {
        let s = shares(10, 3);
        assert_eq!(s, vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(shares(5, 8).iter().map(|s| s.1).sum::<usize>(), 5);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut d: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let p = percentiles(&mut d);
        assert_eq!((p.p50, p.p99, p.p999), (500.0, 990.0, 999.0));
    }

    #[test]
    fn proc_stat_of_self_parses() {
        assert!(cpu_seconds("self", 100.0).is_some());
        assert!(rss_kib(std::process::id()) > 0);
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("mysql://u:pw@h:3306"), "mysql://u:***@h:3306");
        assert_eq!(redact("mysql://h:3306"), "mysql://h:3306");
    }
}
