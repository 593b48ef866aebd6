//! The measurements: publish throughput, latency, consume throughput and
//! memory, and the direct librdkafka producer that databus is compared with.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use databus::proto::MessagePb;
use databus::resp::Frame;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::options::Opts;
use crate::procfs::{rss_kib, threads, Cpu, CpuPerMsg, CpuSnap};
use crate::resp::{auth_string, RespConn};
use crate::setup::Databus;
use crate::{Res, PARTITIONER, PRODUCE_TIMEOUT_MS};

/// `x` rounded to `places` decimals, for the reports.
pub(crate) fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

// ---------------------------------------------------------------------------
// Records

pub(crate) fn key_of(n: usize) -> Vec<u8> {
    format!("k{n}").into_bytes()
}

/// A JSON object of exactly `size` bytes (when `size` allows one), so the
/// JSON MGET embeds it and a consumer could parse it.
pub(crate) fn value_of(n: usize, size: usize) -> Vec<u8> {
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
pub(crate) struct Waiter {
    state: Mutex<Tally>,
    done: Condvar,
}

#[derive(Default)]
struct Tally {
    acknowledged: usize,
    failed: usize,
    first_error: Option<String>,
    /// When each report came, if asked for ([`Waiter::timed`]).
    times: Option<Vec<Instant>>,
}

impl Waiter {
    /// A waiter that also notes when each report came.
    pub(crate) fn timed() -> Waiter {
        let w = Waiter::default();
        w.lock().times = Some(Vec::new());
        w
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `total` records were reported since this waiter was made;
    /// returns (failed, first error).
    pub(crate) fn wait_for(&self, total: usize) -> Res<(usize, Option<String>)> {
        let deadline = Instant::now() + Duration::from_millis(PRODUCE_TIMEOUT_MS + 5_000);
        let mut s = self.lock();
        while s.acknowledged + s.failed < total {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(
                    format!("direct producer: {} of {total} reports", s.acknowledged + s.failed).into()
                );
            }
            s = self.done.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        Ok((s.failed, s.first_error.clone()))
    }

    /// The times of the reports noted so far (a timed waiter), cleared.
    pub(crate) fn take_times(&self) -> Vec<Instant> {
        self.lock().times.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

pub(crate) struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Arc<Waiter>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiter: Arc<Waiter>) {
        let mut s = waiter.lock();
        match result {
            Ok(_) => s.acknowledged += 1,
            Err((e, _)) => {
                s.failed += 1;
                s.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        if let Some(times) = s.times.as_mut() {
            times.push(Instant::now());
        }
        drop(s);
        waiter.done.notify_all();
    }
}

pub(crate) type Direct = ThreadedProducer<Reports>;

pub(crate) fn direct_producer(opts: &Opts) -> Res<Direct> {
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
pub(crate) fn direct_send(
    p: &Direct,
    topic: &str,
    key: &[u8],
    value: &[u8],
    waiter: &Arc<Waiter>,
) -> Res<()> {
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

pub(crate) struct PubRun {
    /// Of the median repeat.
    pub(crate) seconds: f64,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
    /// Mean over the repeats.
    pub(crate) cpu: CpuPerMsg,
    /// Messages/s of every repeat.
    pub(crate) rates: Vec<f64>,
}

impl PubRun {
    pub(crate) fn rate(&self, messages: usize) -> f64 {
        messages as f64 / self.seconds
    }

    /// The median run by time, with CPU averaged and errors summed.
    pub(crate) fn combine(mut runs: Vec<PubRun>) -> PubRun {
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
pub(crate) fn timed_workers<W, S>(conns: usize, messages: usize, cpu: &Cpu, setup: S) -> Res<PubRun>
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

pub(crate) fn publish_databus(
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

pub(crate) fn publish_direct(
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

pub(crate) struct PubCase {
    pub(crate) conns: usize,
    pub(crate) depth: usize,
    pub(crate) messages: usize,
    pub(crate) databus: PubRun,
    pub(crate) direct: PubRun,
}

impl PubCase {
    pub(crate) fn ratio(&self) -> f64 {
        self.databus.rate(self.messages) / self.direct.rate(self.messages)
    }
}

// ---------------------------------------------------------------------------
// Latency

#[derive(Clone, Copy)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) mean: f64,
    pub(crate) max: f64,
}

/// Nearest-rank percentiles of durations, in milliseconds.
pub(crate) fn percentiles(samples: &mut [Duration]) -> Percentiles {
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

/// Alternates one non-pipelined SET and one direct produce-and-wait, so
/// drift in the broker or the machine hits both alike.
pub(crate) fn latency(
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

pub(crate) struct ConsumeRun {
    /// Messages read in total, and those inside the timed window.
    pub(crate) received: usize,
    pub(crate) timed: usize,
    pub(crate) seconds: f64,
    pub(crate) cpu: CpuPerMsg,
    /// databus's RSS once the drain is done, its subscriber still connected.
    pub(crate) databus_rss_kib: Option<u64>,
    pub(crate) mgets: Option<MgetStats>,
}

/// The timed MGETs of a drain: how many, how many returned fewer messages
/// than the largest batch (a tick or wait ended them), how long they took.
pub(crate) struct MgetStats {
    pub(crate) calls: usize,
    pub(crate) short: usize,
    pub(crate) time: Percentiles,
}

impl ConsumeRun {
    pub(crate) fn rate(&self) -> f64 {
        self.timed as f64 / self.seconds.max(1e-9)
    }
}

pub(crate) fn prefill(opts: &Opts, producer: &Direct, topic: &str, messages: usize) -> Res<()> {
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
pub(crate) fn consume_direct(opts: &Opts, topic: &str, messages: usize, cpu: &Cpu) -> Res<ConsumeRun> {
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
pub(crate) fn consume_databus(
    addr: SocketAddr,
    auth: &str,
    pb: bool,
    messages: usize,
    cpu: &Cpu,
) -> Res<ConsumeRun> {
    let mut conn = RespConn::auth(addr, auth)?;
    let cmd: &[&[u8]] = if pb { &[b"MGET", b"pb"] } else { &[b"MGET", b"json"] };
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut drain = Drain::default();
    while drain.received < messages {
        if Instant::now() > deadline {
            return Err(format!("MGET: {} of {messages} in 300 s", drain.received).into());
        }
        let t = Instant::now();
        let Frame::Array(items) = conn.call(cmd)? else {
            return Err("MGET did not return an array".into());
        };
        if let Some(Frame::Bulk(first)) = items.first() {
            // Check one element per batch, so a broken encoding cannot pass.
            if pb {
                MessagePb::decode(first.as_slice()).map_err(|e| format!("MGET pb element: {e}"))?;
            } else {
                serde_json::from_slice::<Value>(first).map_err(|e| format!("MGET json element: {e}"))?;
            }
        }
        drain.call(t, items.len(), cpu);
    }
    let run = drain.finish(cpu);
    drop(conn);
    run
}

/// The clock of a drain through databus: timed from the first non-empty
/// reply; each later call's duration, and whether it returned fewer than
/// the largest batch.
#[derive(Default)]
pub(crate) struct Drain {
    pub(crate) received: usize,
    started: Option<(Instant, CpuSnap, usize)>,
    calls: Vec<Duration>,
    short: usize,
    full: usize,
}

impl Drain {
    /// A call begun at `t` returned `n` messages.
    pub(crate) fn call(&mut self, t: Instant, n: usize, cpu: &Cpu) {
        if self.started.is_some() {
            self.calls.push(t.elapsed());
            self.full = self.full.max(n);
            if n < self.full {
                self.short += 1;
            }
        }
        if n == 0 {
            return;
        }
        self.received += n;
        if self.started.is_none() {
            self.started = Some((Instant::now(), cpu.snap(), n));
        }
    }

    /// The run, with databus's RSS now (its reader still connected).
    pub(crate) fn finish(mut self, cpu: &Cpu) -> Res<ConsumeRun> {
        let (t0, c0, first_batch) = self.started.ok_or("no message")?;
        let seconds = t0.elapsed().as_secs_f64();
        let timed = self.received - first_batch;
        let cpu_used = Cpu::per_msg(c0, cpu.snap(), timed);
        let databus_rss_kib = cpu.databus_pid.map(rss_kib);
        let mgets = Some(MgetStats {
            calls: self.calls.len(),
            short: self.short,
            time: percentiles(&mut self.calls),
        });
        Ok(ConsumeRun { received: self.received, timed, seconds, cpu: cpu_used, databus_rss_kib, mgets })
    }
}

// ---------------------------------------------------------------------------
// Memory

pub(crate) struct RssRun {
    pub(crate) connections: usize,
    pub(crate) before_kib: u64,
    pub(crate) after_kib: u64,
    pub(crate) threads_before: u64,
    pub(crate) threads_after: u64,
    /// After one SET on each publisher (publishers only).
    pub(crate) after_set_kib: Option<u64>,
}

impl RssRun {
    pub(crate) fn per_conn_kib(&self, after: u64) -> f64 {
        (after as f64 - self.before_kib as f64) / self.connections.max(1) as f64
    }

    pub(crate) fn to_json(&self) -> Value {
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
pub(crate) fn rss_publishers(opts: &Opts, topic: &str, count: usize) -> Res<RssRun> {
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
pub(crate) fn rss_subscribers(opts: &Opts, groups: &[String], topic: &str) -> Res<RssRun> {
    let databus = Databus::start(opts, "databus-rss-sub")?;
    let pid = databus.pid();
    thread::sleep(SETTLE);
    let (before_kib, threads_before) = (rss_kib(pid), threads(pid));
    let mut conns = Vec::with_capacity(groups.len());
    for g in groups {
        conns.push(RespConn::auth(databus.addr, &auth_string(g, topic, "sub", "&offset=old"))?);
    }
    // MGET until each subscriber has joined and has its first batch.
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
}
