//! What the fault suites (`tests/chaos.rs`, the fast subset `make test`
//! runs, and `tests/chaos_cluster.rs`, which only `make chaos` runs) share:
//! one scenario at a time, the result row `make chaos` prints, publisher
//! load through databus, a bare librdkafka producer beside it under the same
//! fault, the tally of what was acknowledged against what is in Kafka, a
//! TCP relay to take a store away, and a reader of databus's `/metrics`.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::client::{cmd_bytes, ok, Client};
use crate::services::{free_port, repo_root};
use crate::topics::Record;

/// One scenario at a time, also under plain `cargo test`: faults and load
/// of one must not leak into another's counts or bounds.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One scenario's outcome, appended as a JSON line to `CHAOS_RESULTS`
/// (default `target/chaos-results.jsonl`).
#[derive(Debug, Default, serde::Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub acknowledged: Option<usize>,
    pub in_kafka: Option<usize>,
    pub lost: Option<usize>,
    pub duplicated: Option<usize>,
    pub redelivered: Option<usize>,
    /// In the log though never acknowledged (allowed).
    pub unacknowledged: Option<usize>,
    /// Records of a key in the log out of the order they were sent (must be 0).
    pub out_of_order: Option<usize>,
    pub recover_ms: Option<u128>,
    pub note: String,
}

/// A publishing scenario's counts, from its tally; the scenario fills in
/// the rest.
impl From<&Tally> for Row {
    fn from(t: &Tally) -> Row {
        Row {
            acknowledged: Some(t.acknowledged),
            in_kafka: Some(t.in_kafka),
            lost: Some(t.lost),
            duplicated: Some(t.duplicated),
            unacknowledged: Some(t.unacknowledged),
            out_of_order: Some(t.out_of_order),
            ..Row::default()
        }
    }
}

impl Row {
    pub fn record(&self) {
        let path = std::env::var("CHAOS_RESULTS")
            .unwrap_or_else(|_| format!("{}/target/chaos-results.jsonl", repo_root().display()));
        let mut line = serde_json::to_string(self).unwrap();
        line.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
        eprintln!("chaos: {line}");
    }
}

/// What a set of publisher connections saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Values (each record's key and value are the same unique string) that got `+OK`.
    pub acked: Vec<String>,
    /// Values that got an error reply, with the reply.
    pub failed: Vec<(String, String)>,
    /// When each of `failed` got its error, in the same order.
    pub failed_at: Vec<Instant>,
    /// When the load started and when it was stopped: the longest stall
    /// counts from the one and up to the other too.
    started: Option<Instant>,
    ended: Option<Instant>,
    /// When each of `acked` got its `+OK`, in the same order.
    pub acked_at: Vec<Instant>,
    /// Replies that came later than the bound after their request was sent.
    pub slow: usize,
}

/// `conns` publisher connections, each sending `depth` SETs at a time and
/// reading their replies, until stopped or until the server closes them.
pub struct Load {
    started: Instant,
    acks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Outcome>>,
}

impl Outcome {
    /// The first `+OK` after `at`.
    pub fn first_ok_after(&self, at: Instant) -> Option<Instant> {
        self.acked_at.iter().filter(|t| **t > at).min().copied()
    }

    /// Stops a load's threads and adds up what they saw.
    fn gather(started: Instant, stop: &AtomicBool, threads: Vec<thread::JoinHandle<Outcome>>) -> Outcome {
        stop.store(true, Ordering::SeqCst);
        let mut all = Outcome { started: Some(started), ended: Some(Instant::now()), ..Outcome::default() };
        for t in threads {
            let o = t.join().expect("load thread");
            all.acked.extend(o.acked);
            all.failed.extend(o.failed);
            all.failed_at.extend(o.failed_at);
            all.acked_at.extend(o.acked_at);
            all.slow += o.slow;
        }
        all
    }

    /// The longest time without any `+OK`, over all connections.
    pub fn longest_stall(&self) -> Duration {
        let mut at = self.acked_at.clone();
        at.extend(self.started.iter().chain(&self.ended));
        at.sort();
        at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }
}

impl Load {
    pub fn start(addr: SocketAddr, auth: &str, conns: usize, depth: usize, slow_after: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let threads = (0..conns)
            .map(|k| {
                let (stop, auth, acks) = (stop.clone(), auth.to_owned(), acks.clone());
                thread::spawn(move || {
                    let mut out = Outcome::default();
                    let mut c = Client::connect(addr);
                    c.stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    assert_eq!(c.call(&["AUTH", &auth]), ok());
                    let mut seq = 0;
                    'load: while !stop.load(Ordering::SeqCst) {
                        let batch: Vec<String> = (0..depth)
                            .map(|_| {
                                seq += 1;
                                format!("c{k}-{seq}")
                            })
                            .collect();
                        // Eight keys per connection, so order per key is checked.
                        let wire: Vec<u8> = batch
                            .iter()
                            .flat_map(|v| cmd_bytes(&[b"SET", key_of(v).as_bytes(), v.as_bytes()]))
                            .collect();
                        let sent = Instant::now();
                        if c.stream.write_all(&wire).is_err() {
                            break;
                        }
                        for v in batch {
                            let reply = c.read();
                            if sent.elapsed() > slow_after {
                                out.slow += 1;
                            }
                            match reply {
                                Some(r) if r == ok() => {
                                    acks.fetch_add(1, Ordering::SeqCst);
                                    out.acked.push(v);
                                    out.acked_at.push(Instant::now());
                                }
                                Some(Frame::Error(e)) => {
                                    out.failed.push((v, e));
                                    out.failed_at.push(Instant::now());
                                }
                                Some(other) => panic!("SET answered {other:?}"),
                                None => break 'load,
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        Load { started: Instant::now(), acks, stop, threads }
    }

    /// Records acknowledged so far.
    pub fn acks(&self) -> usize {
        self.acks.load(Ordering::SeqCst)
    }

    pub fn finish(self) -> Outcome {
        Outcome::gather(self.started, &self.stop, self.threads)
    }
}

/// The key of a load's value `<prefix>-<seq>`: one of eight per prefix
/// (connection or thread), `<prefix>/<seq % 8>`.
fn key_of(value: &str) -> String {
    format!("{}/{}", prefix_of(value), seq_of(value) % 8)
}

fn prefix_of(value: &str) -> &str {
    value.rsplit_once('-').map_or(value, |(p, _)| p)
}

fn seq_of(value: &str) -> u64 {
    value.rsplit_once('-').and_then(|(_, n)| n.parse().ok()).unwrap_or(0)
}

/// Compares what was acknowledged with what is in the topic: lost
/// (acknowledged, not in the log: must be 0), duplicated (in the log twice:
/// must be 0 with idempotence), present but never acknowledged (allowed:
/// the reply was an error or never came), and out of order (two records of
/// one key, sent in one order by one connection, in the other order in the
/// log: must be 0).
pub struct Tally {
    pub acknowledged: usize,
    pub in_kafka: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unacknowledged: usize,
    pub out_of_order: usize,
}

impl Tally {
    /// Nothing acknowledged lost, nothing duplicated, nothing out of order.
    pub fn assert_clean(&self, whose: &str) {
        assert_eq!(
            (self.lost, self.duplicated, self.out_of_order),
            (0, 0, 0),
            "{whose} records lost, duplicated or out of order"
        );
    }
}

pub fn tally(acked: &[String], records: &[Record]) -> Tally {
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    for r in records {
        *seen.entry(r.value.as_slice()).or_default() += 1;
    }
    let lost = acked.iter().filter(|v| !seen.contains_key(v.as_bytes())).count();
    let duplicated = acked.iter().filter(|v| seen.get(v.as_bytes()).is_some_and(|n| *n > 1)).count();
    let acked_set: std::collections::HashSet<&[u8]> = acked.iter().map(|v| v.as_bytes()).collect();
    let unacknowledged = seen.keys().filter(|v| !acked_set.contains(*v)).count();
    // Records of one key are in one partition; `records` is in log order.
    let mut last: HashMap<&[u8], u64> = HashMap::new();
    let mut out_of_order = 0;
    for r in records {
        let seq = seq_of(std::str::from_utf8(&r.value).unwrap_or_default());
        let before = last.insert(r.key.as_slice(), seq);
        if before.is_some_and(|b| b >= seq) {
            out_of_order += 1;
        }
    }
    Tally {
        acknowledged: acked.len(),
        in_kafka: records.len(),
        lost,
        duplicated,
        unacknowledged,
        out_of_order,
    }
}

/// A bare librdkafka producer beside databus under the same fault: acks=all,
/// idempotence and the partitioner as databus (so that the same keys wait
/// on the same partition: with librdkafka's default `consistent_random` the
/// frozen leader's partition held other keys, and the stalls differed by 2x
/// for that alone), librdkafka's defaults otherwise, the same message timeout; `threads` threads each produce one record and wait for
/// its delivery report before the next (as a client at depth 1 waits for
/// `+OK`). Values are `bare{k}-{seq}`.
pub struct BareLoad {
    started: Instant,
    acks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Outcome>>,
    _producer: Arc<ThreadedProducer<Reports>>,
}

/// Hands each delivery report to the thread waiting for it.
struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<SyncSender<Result<(), String>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, to: Self::DeliveryOpaque) {
        let _ = to.send(result.as_ref().map(|_| ()).map_err(|(e, _): &(KafkaError, _)| e.to_string()));
    }
}

impl BareLoad {
    pub fn start(brokers: &str, topic: &str, threads: usize, timeout: Duration) -> BareLoad {
        let producer: ThreadedProducer<Reports> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .create_with_context(Reports)
            .expect("a bare producer");
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let threads = (0..threads)
            .map(|k| {
                let (stop, producer, topic, acks) =
                    (stop.clone(), producer.clone(), topic.to_owned(), acks.clone());
                thread::spawn(move || {
                    let mut out = Outcome::default();
                    let mut seq = 0;
                    while !stop.load(Ordering::SeqCst) {
                        seq += 1;
                        let value = format!("bare{k}-{seq}");
                        let key = key_of(&value);
                        let (tx, rx) = sync_channel(1);
                        let record =
                            BaseRecord::with_opaque_to(&topic, Box::new(tx)).key(&key).payload(&value);
                        if let Err((e, _)) = producer.send(record) {
                            out.failed.push((value, e.to_string()));
                            out.failed_at.push(Instant::now());
                            thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                        match rx.recv() {
                            Ok(Ok(())) => {
                                acks.fetch_add(1, Ordering::SeqCst);
                                out.acked.push(value);
                                out.acked_at.push(Instant::now());
                            }
                            Ok(Err(e)) => {
                                out.failed.push((value, e));
                                out.failed_at.push(Instant::now());
                            }
                            Err(_) => break,
                        }
                    }
                    out
                })
            })
            .collect();
        BareLoad { started: Instant::now(), acks, stop, threads, _producer: producer }
    }

    /// Records acknowledged so far.
    pub fn acks(&self) -> usize {
        self.acks.load(Ordering::SeqCst)
    }

    pub fn finish(self) -> Outcome {
        Outcome::gather(self.started, &self.stop, self.threads)
    }
}

/// Waits (bounded by `within`) until both loads have acknowledged a record
/// after this call: the cluster serves again, through databus and beside it.
pub fn await_both_acknowledge(databus: &Load, bare: &BareLoad, within: Duration) {
    let (ours, theirs) = (databus.acks(), bare.acks());
    let deadline = Instant::now() + within;
    while (databus.acks() == ours || bare.acks() == theirs) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP relay in front of a store, so the test can take the store away
/// (connections refused, open ones cut) and give it back on the same port
/// without stopping the shared server.
pub struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<TcpStream>>>,
    accept: Option<thread::JoinHandle<()>>,
    target: String,
}

impl Relay {
    pub fn start(target: &str) -> Relay {
        let mut r = Relay {
            port: free_port(),
            up: Arc::new(AtomicBool::new(false)),
            open: Arc::default(),
            accept: None,
            target: target.to_owned(),
        };
        r.restore();
        r
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Refuses new connections and cuts the open ones.
    pub fn cut(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            h.join().unwrap();
        }
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Accepts connections again, on the same port.
    pub fn restore(&mut self) {
        let listener = std::net::TcpListener::bind(self.addr()).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, open, target) = (self.up.clone(), self.open.clone(), self.target.clone());
        self.accept = Some(thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(&target) else { continue };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                open.lock().unwrap().extend([client, server]);
            }
        }));
    }
}

/// The value of an unlabeled sample in the admin port's `/metrics`.
pub fn metric(admin: &str, name: &str) -> f64 {
    let text = std::process::Command::new("curl")
        .args(["-sS", &format!("http://{admin}/metrics")])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}
