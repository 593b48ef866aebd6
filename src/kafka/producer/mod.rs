//! Publishing. One idempotent producer per cluster lane, shared by the
//! publisher connections of that cluster: databus's own (`produce/`, one
//! produce request per broker) or librdkafka's (`producer.engine`); both
//! report to one `DeliveryReports` and settle the same [`Delivery`].
//! [`Publish::send`] only enqueues a [`Record`]; the caller holds the
//! [`Delivery`] and waits on it
//! (or has it call back) before replying, so a pipelined burst is produced
//! concurrently and still answered in order. RESP and HTTP publish alike.
//!
//! When the brokers refuse the producer (its SASL login or the TLS
//! handshake), waiting out the produce timeout helps nobody: the records it
//! holds are purged from its queue at once (never sent, so surely not
//! written) and answered with the broker's reason, and until the brokers
//! answer it again a new record is answered so without being queued.
//!
//! When its records stall, a producer looks at the partitions it writes to
//! (`health.rs`), so that a record that then times out says why: a leader
//! or an in-sync replica unreachable, an ISR below the replicas.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::{ClientContext, Message};

use super::broker_errors::{because, BrokerErrors};
use super::health::Health;
use super::{produce, Cluster, Clusters};

/// How often a refused producer asks the brokers for metadata, to learn
/// that they accept it again (librdkafka connects only on demand, and a
/// refused producer holds no records that would make one).
const REFUSED_RECHECK: Duration = Duration::from_secs(1);

/// How often a producer's watcher checks that its records still move: when
/// records are in flight and none was acknowledged over one such period,
/// it looks at the health of the partitions it writes to.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// One in this many acknowledged records tells the producer's [`Health`]
/// its topic (a timed-out record always does): enough to know the topics in
/// use, without a lock per record.
const TOPIC_SAMPLE: u64 = 64;

#[derive(Debug, Clone)]
pub(crate) struct ProducerSettings {
    /// Longest a SET waits for the broker before it gets an error reply.
    pub timeout: Duration,
    pub partitioner: String,
    pub linger: Duration,
    /// Producers per cluster; a publisher connection always uses the same
    /// one (its "lane"), so its records keep their order.
    pub instances: usize,
    /// Produce requests each producer keeps in flight. With 1, records that
    /// arrive while a request is out go together in the next one: batches
    /// grow with the load and a lone SET is sent at once; 5, the default,
    /// overlaps them across a network (BENCHMARKS.md, "Requests in flight").
    pub max_in_flight: usize,
    /// Which producer publishes (`producer.engine`).
    pub engine: Engine,
    /// How record batches are compressed (`producer.compression`).
    pub compression: Compression,
}

/// The producer that publishes: librdkafka's, or databus's own
/// (`produce/`), which sends one produce request per broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Librdkafka,
    Databus,
}

/// `producer.compression`: the codecs both engines speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub(crate) const NAMES: &'static [&'static str] = &["none", "gzip", "snappy", "lz4", "zstd"];

    pub(crate) fn from_name(name: &str) -> Option<Compression> {
        Some(match name {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        Compression::NAMES[self as usize]
    }

    fn codec(self) -> kafka_protocol::records::Compression {
        use kafka_protocol::records::Compression as C;
        match self {
            Compression::None => C::None,
            Compression::Gzip => C::Gzip,
            Compression::Snappy => C::Snappy,
            Compression::Lz4 => C::Lz4,
            Compression::Zstd => C::Zstd,
        }
    }
}

/// The librdkafka configuration of a cluster's producer: idempotent,
/// acknowledged by every in-sync replica.
pub(crate) fn producer_config(cluster: &Cluster, settings: &ProducerSettings) -> ClientConfig {
    let mut config = super::client_config(cluster);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", &settings.partitioner)
        .set("message.timeout.ms", settings.timeout.as_millis().to_string())
        .set("linger.ms", settings.linger.as_millis().to_string())
        .set("max.in.flight.requests.per.connection", settings.max_in_flight.to_string())
        .set("compression.codec", settings.compression.name());
    config
}

/// The configuration of databus's own producer for a cluster.
fn own_config(name: &str, cluster: &Cluster, settings: &ProducerSettings) -> Result<produce::Config, String> {
    Ok(produce::Config {
        cluster: name.to_owned(),
        brokers: cluster.brokers.clone(),
        security: produce::wire::Security::of(cluster)?,
        timeout: settings.timeout,
        linger: settings.linger,
        max_in_flight: settings.max_in_flight,
        partitioner: produce::Partitioner::from_name(&settings.partitioner)
            .unwrap_or(produce::Partitioner::Murmur2Random),
        compression: settings.compression.codec(),
        // librdkafka's `batch.size` and `queue.buffering.max.messages`.
        batch_bytes: 1_000_000,
        max_records: 100_000,
    })
}

/// Why a record was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("cluster '{0}' is not configured")]
    UnknownCluster(String),
    #[error("cannot create producer for cluster '{cluster}': {cause}")]
    Create {
        cluster: String,
        #[source]
        cause: KafkaError,
    },
    #[error("cannot start the producer of cluster '{cluster}': {cause}")]
    Start { cluster: String, cause: String },
    #[error("kafka refused the record: {0}")]
    Rejected(#[source] Refusal),
    #[error("the cluster's ACLs do not let databus write to topic '{topic}': {cause}")]
    Denied {
        topic: String,
        #[source]
        cause: Refusal,
    },
    #[error(
        "cluster '{cluster}' did not acknowledge the record within {ms} ms{}{}",
        partition.as_ref().map(|p| format!(": {p}")).unwrap_or_default(),
        because(.cause)
    )]
    Timeout {
        cluster: String,
        ms: u128,
        /// What is wrong with the record's partition, if databus found out.
        partition: Option<String>,
        cause: Option<String>,
    },
    #[error("cluster '{cluster}' refused databus: {reason}")]
    Refused { cluster: String, reason: String },
    #[error("producer closed before the record was acknowledged")]
    Closed,
}

/// What the cluster said when it would not take a record: librdkafka's
/// error, or the broker's error name and message to databus's own producer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refusal(pub String);

impl PublishError {
    /// A short name of the cause, for the produce error counter.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            PublishError::UnknownCluster(_) => "unknown_cluster",
            PublishError::Create { .. } | PublishError::Start { .. } => "create",
            PublishError::Rejected(_) => "rejected",
            PublishError::Denied { .. } => "denied",
            PublishError::Timeout { .. } => "timeout",
            PublishError::Refused { .. } => "refused",
            PublishError::Closed => "closed",
        }
    }

    /// Whether the same record may be acknowledged if sent again later.
    pub(crate) fn is_retriable(&self) -> bool {
        matches!(
            self,
            PublishError::Create { .. }
                | PublishError::Start { .. }
                | PublishError::Timeout { .. }
                | PublishError::Refused { .. }
                | PublishError::Closed
        )
    }
}

/// One record to produce, with databus's headers: the publisher's `color`
/// (always, empty when it has none) and, from `HSET` or HTTP, its
/// `metadata`.
pub(crate) struct Record<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub value: &'a [u8],
    color: &'a [u8],
    metadata: Option<&'a [u8]>,
    /// Headers of `XADD`'s fields and of dead letters.
    fields: &'a [(String, Vec<u8>)],
    /// Produced with no key (`XADD` without a `key` field): spread by the
    /// partitioner, not hashed as an empty key.
    keyless: bool,
}

impl<'a> Record<'a> {
    pub(crate) fn new(topic: &'a str, key: &'a [u8], value: &'a [u8]) -> Record<'a> {
        Record { topic, key, value, color: b"", metadata: None, fields: &[], keyless: false }
    }

    pub(crate) fn color(self, color: &'a str) -> Record<'a> {
        Record { color: color.as_bytes(), ..self }
    }

    pub(crate) fn metadata(self, metadata: Option<&'a [u8]>) -> Record<'a> {
        Record { metadata, ..self }
    }

    pub(crate) fn fields(self, fields: &'a [(String, Vec<u8>)]) -> Record<'a> {
        Record { fields, ..self }
    }

    pub(crate) fn keyless(self) -> Record<'a> {
        Record { keyless: true, ..self }
    }

    pub(crate) fn is_keyless(&self) -> bool {
        self.keyless
    }

    /// The Kafka headers: `color`, then `metadata` if any, then the fields.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        std::iter::once(("color", self.color))
            .chain(self.metadata.map(|m| ("metadata", m)))
            .chain(self.fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A record's verdict, handed to [`Delivery::then`]: called exactly once,
/// on the thread that serves librdkafka's delivery reports (or at once on
/// the caller's, if the verdict was already in).
pub(crate) type Settle = Box<dyn FnOnce(Result<Delivered, PublishError>) + Send + Sync>;

/// Where a record's verdict meets whoever wants it: shared by its
/// [`Delivery`] and its delivery report.
#[derive(Default)]
struct Slot {
    verdict: Mutex<Verdict>,
    settled: Condvar,
}

#[derive(Default)]
enum Verdict {
    /// Not yet in, and nobody asked to be called.
    #[default]
    Pending,
    /// Not yet in; this is to be called with it.
    Then(Settle),
    /// In, not yet taken.
    In(Result<Delivered, PublishError>),
    /// Taken, or handed to the callback.
    Gone,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Verdict> {
        self.verdict.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The verdict arrives: to the callback if there is one (outside the
    /// lock), else kept for the waiter.
    fn settle(&self, verdict: Result<Delivered, PublishError>) {
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Verdict::Gone) {
            Verdict::Then(settle) => {
                drop(slot);
                settle(verdict);
            }
            Verdict::Pending => {
                *slot = Verdict::In(verdict);
                drop(slot);
                self.settled.notify_one();
            }
            // A second report for one record: librdkafka sends none.
            earlier => *slot = earlier,
        }
    }
}

/// The delivery report's end of a [`Slot`]. A record librdkafka drops
/// without a report (its producer destroyed with the record still queued)
/// is settled as [`PublishError::Closed`].
pub(crate) struct Reporter(Arc<Slot>);

impl Reporter {
    /// Hands the record's verdict to whoever waits for it.
    pub(crate) fn settle(self, verdict: Result<Delivered, PublishError>) {
        self.0.settle(verdict);
    }

    /// A reporter nobody listens to, for tests of what carries reporters.
    #[cfg(test)]
    pub(crate) fn nobody() -> Reporter {
        Reporter(Arc::new(Slot::default()))
    }

    /// A reporter whose verdict is sent to `to`, for tests.
    #[cfg(test)]
    pub(crate) fn to(to: mpsc::Sender<Result<Delivered, PublishError>>) -> Reporter {
        let slot = Arc::new(Slot::default());
        *slot.lock() = Verdict::Then(Box::new(move |v| {
            let _ = to.send(v);
        }));
        Reporter(slot)
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let unsettled = matches!(*self.0.lock(), Verdict::Pending | Verdict::Then(_));
        if unsettled {
            self.0.settle(Err(PublishError::Closed));
        }
    }
}

/// A record handed to a producer, until its verdict is in: look at it
/// ([`Delivery::is_settled`]), wait for it ([`Delivery::wait`]), or have it
/// called back ([`Delivery::then`]).
///
/// It keeps the record's producer alive (a replaced producer must not cut
/// its records short), and it never leaves the thread that sent the record
/// (it is neither `Send` nor `Sync`, and a [`Settle`] must be `Send`): so
/// the thread that serves delivery reports never holds, and never drops,
/// the last reference to its own producer.
pub(crate) struct Delivery {
    slot: Arc<Slot>,
    /// When librdkafka fails the record (`message.timeout.ms`).
    deadline: Instant,
    keep: KeepAlive,
}

/// What a [`Delivery`] handed to a callback leaves its caller to hold until
/// the callback has run: the record's producer.
pub(crate) struct KeepAlive {
    producer: Option<Arc<ClusterProducer>>,
    /// The record's topic, for the error if its verdict never comes.
    topic: Box<str>,
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl KeepAlive {
    /// The error for a record whose verdict never came, as
    /// [`Delivery::wait`] gives it.
    pub(crate) fn timed_out(&self) -> PublishError {
        never_reported(reports_of(&self.producer), &self.topic)
    }
}

/// The delivery context of a record's producer; absent for test doubles.
fn reports_of(producer: &Option<Arc<ClusterProducer>>) -> Option<&DeliveryReports> {
    producer.as_ref().map(|p| &*p.reports)
}

impl Delivery {
    fn new(
        slot: Arc<Slot>,
        deadline: Instant,
        producer: Option<Arc<ClusterProducer>>,
        topic: &str,
    ) -> Delivery {
        let keep = KeepAlive { producer, topic: topic.into(), _this_thread: std::marker::PhantomData };
        Delivery { slot, deadline, keep }
    }

    /// An already acknowledged record, for doubles of [`Publish`].
    #[cfg(test)]
    pub(crate) fn acknowledged(partition: i32, offset: i64) -> Delivery {
        let slot = Arc::new(Slot::default());
        slot.settle(Ok(Delivered { partition, offset }));
        Delivery::new(slot, Instant::now(), None, "")
    }

    /// A record whose verdict comes when the returned reporter is settled
    /// (or dropped), for doubles of [`Publish`] that answer from another
    /// thread.
    #[cfg(test)]
    pub(crate) fn pending(
        timeout: Duration,
    ) -> (Delivery, impl FnOnce(Result<Delivered, PublishError>) + Send) {
        let slot = Arc::new(Slot::default());
        let reporter = Reporter(slot.clone());
        (Delivery::new(slot, Instant::now() + timeout, None, ""), move |verdict| reporter.0.settle(verdict))
    }

    /// When the caller stops waiting for the verdict: librdkafka fails the
    /// record at its deadline, and the extra second only guards against a
    /// lost report.
    pub(crate) fn answer_by(&self) -> Instant {
        self.deadline + Duration::from_secs(1)
    }

    /// Whether the broker's verdict is in, without waiting for it.
    pub(crate) fn is_settled(&self) -> bool {
        matches!(*self.slot.lock(), Verdict::In(_))
    }

    /// Has `settle` called with the verdict: at once, here, if it is in;
    /// else on the delivery thread when it comes. Keep the [`KeepAlive`]
    /// until then.
    pub(crate) fn then(self, settle: Settle) -> KeepAlive {
        let mut slot = self.slot.lock();
        match std::mem::replace(&mut *slot, Verdict::Gone) {
            Verdict::In(verdict) => {
                drop(slot);
                settle(verdict);
            }
            _ => *slot = Verdict::Then(settle),
        }
        self.keep
    }

    /// Waits for the broker's verdict, until [`Delivery::answer_by`].
    pub(crate) fn wait(self) -> Result<Delivered, PublishError> {
        let by = self.answer_by();
        let mut slot = self.slot.lock();
        loop {
            if let Verdict::In(_) = *slot {
                let Verdict::In(verdict) = std::mem::replace(&mut *slot, Verdict::Gone) else {
                    unreachable!()
                };
                return verdict;
            }
            let left = by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.keep.timed_out());
            }
            slot = self.slot.settled.wait_timeout(slot, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

const TIMED_OUT: KafkaError = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
const PURGED: KafkaError = KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue);

/// A delivery report of a record for `topic` as databus answers it: a
/// record librdkafka gave up on at the produce timeout is a timeout that
/// says why, if it knows; one purged because the brokers refused the
/// producer is that refusal.
fn judge(
    reports: &DeliveryReports,
    topic: &str,
    partition: i32,
    report: Result<Delivered, KafkaError>,
) -> Result<Delivered, PublishError> {
    match report {
        Ok(d) => Ok(d),
        Err(TIMED_OUT) => Err(timed_out(Some(reports), reports.health.of(topic, partition))),
        Err(PURGED) => {
            Err(reports
                .refusal(reports.errors.refusal().or_else(|| reports.errors.get()).unwrap_or_default()))
        }
        Err(e) => Err(rejected(e, topic)),
    }
}

/// A record the cluster would not take: the cluster's ACLs, or anything else.
fn rejected(error: KafkaError, topic: &str) -> PublishError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed) => {
            PublishError::Denied { topic: topic.to_owned(), cause: Refusal(error.to_string()) }
        }
        _ => PublishError::Rejected(Refusal(error.to_string())),
    }
}

/// The error of a record that was not acknowledged within the produce
/// timeout, with what is known of its partition and the last broker error
/// its producer saw.
fn timed_out(reports: Option<&DeliveryReports>, partition: Option<String>) -> PublishError {
    match reports {
        Some(r) => PublishError::Timeout {
            cluster: r.cluster.clone(),
            ms: r.timeout.as_millis(),
            partition,
            cause: r.errors.get(),
        },
        None => PublishError::Timeout { cluster: String::new(), ms: 0, partition, cause: None },
    }
}

/// The error of a record for `topic` whose delivery report did not come
/// within a second after its timeout: its partition is not known, so it
/// says what is known of the topic's.
fn never_reported(reports: Option<&DeliveryReports>, topic: &str) -> PublishError {
    timed_out(reports, reports.and_then(|r| r.health.of_topic(topic)))
}

/// Where publishers send records; a trait so command logic can be tested
/// without a broker.
pub(crate) trait Publish: Send + Sync {
    /// Enqueues `record` for `cluster`. Every record of one `lane` (a
    /// connection) goes through the same producer, so their order holds.
    fn send(&self, cluster: &str, lane: usize, record: &Record<'_>) -> Result<Delivery, PublishError>;
}

struct DeliveryReports {
    errors: BrokerErrors,
    /// The cluster and produce timeout, for the errors of timed-out records.
    cluster: String,
    timeout: Duration,
    /// Wakes the producer's watcher (see [`spawn_watcher`]).
    wake: SyncSender<Wake>,
    /// The brokers refused the producer since its watcher last purged.
    purge: AtomicBool,
    /// Records acknowledged so far, for the watcher to see a stall.
    acknowledged: AtomicU64,
    /// What is known of the partitions the cluster's producers write to
    /// (one per cluster, shared by its lanes).
    health: Arc<Health>,
}

/// What wakes a producer's watcher before its next check.
enum Wake {
    /// The brokers refused the producer: purge its queue (see
    /// `DeliveryReports::purge`).
    Refused,
    /// A record for this topic timed out.
    TimedOut(String),
}

impl ClientContext for DeliveryReports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if self.errors.log(level, fac, message) {
            self.refused();
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.errors.record(&error, reason) {
            self.refused();
        }
    }
}

impl DeliveryReports {
    /// Asks the watcher to purge the queue (a flag, so that no wake-up of
    /// another kind crowds it out).
    fn refused(&self) {
        self.purge.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(Wake::Refused);
    }

    /// A record for `topic` timed out: the watcher looks at the topic's
    /// health, for the errors of the records that time out next.
    fn timed_out_in(&self, topic: &str) {
        self.health.wrote_to(topic);
        let _ = self.wake.try_send(Wake::TimedOut(topic.to_owned()));
    }

    fn refusal(&self, reason: String) -> PublishError {
        PublishError::Refused { cluster: self.cluster.clone(), reason }
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<Reporter>;

    fn delivery(&self, result: &DeliveryResult<'_>, reporter: Box<Reporter>) {
        let (report, topic, partition) = match result {
            Ok(m) => {
                produce::Context::acknowledged(self, m.topic(), m.partition());
                (Ok(Delivered { partition: m.partition(), offset: m.offset() }), m.topic(), m.partition())
            }
            Err((e, m)) => {
                if *e == TIMED_OUT {
                    self.timed_out_in(m.topic());
                }
                (Err(e.clone()), m.topic(), m.partition())
            }
        };
        // The waiter may have given up already: the verdict is then dropped
        // with the slot.
        reporter.0.settle(judge(self, topic, partition, report));
    }
}

/// databus's own producer reports to the same context as librdkafka's.
impl produce::Context for DeliveryReports {
    fn acknowledged(&self, topic: &str, partition: i32) {
        self.errors.accepted();
        if self.acknowledged.fetch_add(1, Ordering::Relaxed) % TOPIC_SAMPLE == 0 {
            self.health.wrote_to(topic);
        }
        self.health.acknowledged(topic, partition);
    }

    fn failed(&self, failure: produce::Failure) -> PublishError {
        match failure {
            produce::Failure::Timeout { topic, partition } => {
                self.timed_out_in(&topic);
                let known = match partition {
                    Some(p) => self.health.of(&topic, p),
                    None => self.health.of_topic(&topic),
                };
                timed_out(Some(self), known)
            }
            // TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED
            produce::Failure::Rejected { topic, code: 29 | 31, message } => {
                PublishError::Denied { topic, cause: Refusal(message) }
            }
            produce::Failure::Rejected { message, .. } => PublishError::Rejected(Refusal(message)),
            produce::Failure::Refused(reason) => self.refusal(reason),
        }
    }

    fn broker_error(&self, error: &str) {
        self.errors.note(error);
    }

    fn accepted(&self) {
        self.errors.accepted();
    }
}

/// A thread per producer, apart from the delivery thread (which must never
/// drop the last reference): it holds the producer weakly and ends with it.
///
/// - Each time the brokers refuse the producer it purges the records waiting
///   in its queue: none was sent, so each is answered with the refusal at
///   once (by its delivery report) instead of at the produce timeout. While
///   refused, it asks for metadata every [`REFUSED_RECHECK`] and ends the
///   refusal once the brokers answer.
/// - When records are in flight and none was acknowledged for a
///   [`STALL_CHECK`], and when a record times out, it looks at the health of
///   the topics concerned (each at most once per [`STALL_CHECK`]), for the
///   errors of the records that time out next.
fn spawn_watcher(producer: &Arc<ClusterProducer>, wakes: Receiver<Wake>) {
    let weak = Arc::downgrade(producer);
    let spawned = thread::Builder::new().name("databus-watcher".into()).spawn(move || {
        let mut watch = Watch { next_check: Instant::now() + STALL_CHECK, acknowledged: 0 };
        loop {
            let Some(refused) = weak.upgrade().map(|p| p.is_refused()) else {
                return;
            };
            let wait = if refused {
                REFUSED_RECHECK
            } else {
                watch.next_check.saturating_duration_since(Instant::now())
            };
            let event = wakes.recv_timeout(wait);
            let Some(producer) = weak.upgrade() else { return };
            let reports = &producer.reports;
            // A refusal is served first, and stops a look at the health.
            purge_if_refused(&producer);
            let refusal = || reports.purge.load(Ordering::Relaxed);
            match event {
                Ok(Wake::Refused) => {}
                Ok(Wake::TimedOut(topic)) => reports.health.look(vec![topic], STALL_CHECK, &refusal),
                Err(RecvTimeoutError::Timeout) if refused => {
                    if let Producing::Librdkafka(kafka) = &producer.engine {
                        if kafka.client().fetch_metadata(None, REFUSED_RECHECK).is_ok() {
                            reports.errors.accepted();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if watch.stalled(&producer) {
                        reports.health.look(reports.health.topics(), STALL_CHECK, &refusal);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            purge_if_refused(&producer);
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot start the watcher of a producer ({e}): refused records wait for their timeout");
    }
}

/// Purges the producer's queue if the brokers refused it since the last
/// purge: none of those records was sent.
fn purge_if_refused(producer: &ClusterProducer) {
    if let Producing::Librdkafka(kafka) = &producer.engine {
        if producer.reports.purge.swap(false, Ordering::Relaxed) {
            kafka.purge(PurgeConfig::default().queue());
        }
    }
}

/// What a producer's watcher remembers between checks.
struct Watch {
    next_check: Instant,
    /// Records acknowledged at the last check.
    acknowledged: u64,
}

impl Watch {
    /// Whether, since the last check, records were in flight and none was
    /// acknowledged; schedules the next check.
    fn stalled(&mut self, producer: &ClusterProducer) -> bool {
        self.next_check = Instant::now() + STALL_CHECK;
        let acknowledged = producer.reports.acknowledged.load(Ordering::Relaxed);
        let stalled = acknowledged == self.acknowledged && producer.in_flight() > 0;
        self.acknowledged = acknowledged;
        stalled
    }
}

struct ClusterProducer {
    engine: Producing,
    /// The producer's context (librdkafka's holds it too).
    reports: Arc<DeliveryReports>,
}

enum Producing {
    Librdkafka(ThreadedProducer<DeliveryReports>),
    Databus(produce::Producer),
}

impl ClusterProducer {
    /// librdkafka's fatal error, if it hit one (an idempotent producer
    /// fenced or out of sequence for good); databus's own producer bumps
    /// its epoch or takes a new producer id instead.
    fn fatal_error(&self) -> Option<String> {
        match &self.engine {
            Producing::Librdkafka(kafka) => {
                kafka.client().fatal_error().map(|(code, reason)| format!("{code:?}: {reason}"))
            }
            Producing::Databus(_) => None,
        }
    }

    /// Records handed over and not yet settled.
    fn in_flight(&self) -> usize {
        match &self.engine {
            Producing::Librdkafka(kafka) => kafka.in_flight_count().max(0) as usize,
            Producing::Databus(own) => own.held(),
        }
    }

    /// Whether the brokers refuse it (librdkafka's: until a metadata
    /// request passes; databus's own producer answers refusals itself).
    fn is_refused(&self) -> bool {
        matches!(self.engine, Producing::Librdkafka(_)) && self.reports.errors.refusal().is_some()
    }

    fn flush(&self, timeout: Duration) -> Result<(), String> {
        match &self.engine {
            Producing::Librdkafka(kafka) => kafka.flush(timeout).map_err(|e| e.to_string()),
            Producing::Databus(own) => {
                own.flush(timeout).then_some(()).ok_or_else(|| format!("{} records unsettled", own.held()))
            }
        }
    }
}

/// The producers of every configured cluster, `instances` per cluster (one
/// per lane), each created on first use.
///
/// A producer is replaced when librdkafka reports a fatal error (an
/// idempotent producer fenced or out of sequence for good), or when the
/// cluster's settings change (SIGHUP). Records that time out do not replace
/// it: librdkafka's idempotent producer bumps its epoch and goes on, while a
/// new producer must first get a producer id from a transaction coordinator,
/// which right after a broker restart answers "coordinator load in
/// progress" for seconds; replacing it at each timeout (as databus did for
/// tansu, which lost producer state) kept publishing down below the minimum
/// ISR long after the brokers were back (`tests/chaos_cluster.rs`, scenario
/// 11). Replacing is safe: the records the old producer still holds were
/// never acknowledged to a client and fail with an error reply (or, in
/// flight, settle on it).
pub(crate) struct Producers {
    clusters: Arc<Clusters>,
    settings: ProducerSettings,
    live: Mutex<HashMap<(String, usize), Arc<ClusterProducer>>>,
    /// Per cluster, shared by its lanes' producers: one look at a stall,
    /// through one metadata client.
    health: Mutex<HashMap<String, Arc<Health>>>,
}

impl Producers {
    pub(crate) fn new(clusters: Arc<Clusters>, settings: ProducerSettings) -> Producers {
        Producers { clusters, settings, live: Mutex::new(HashMap::new()), health: Mutex::default() }
    }

    fn producer(&self, cluster: &str, lane: usize) -> Result<Arc<ClusterProducer>, PublishError> {
        let slot = (cluster.to_owned(), lane % self.settings.instances.max(1));
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = live.get(&slot) {
            if let Some(error) = p.fatal_error() {
                log::warn!("producer for cluster '{cluster}' hit a fatal error ({error}); re-creating it");
            } else {
                return Ok(p.clone());
            }
        }
        let config =
            self.clusters.get(cluster).ok_or_else(|| PublishError::UnknownCluster(cluster.to_owned()))?;
        let health = {
            let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
            health.entry(cluster.to_owned()).or_insert_with(|| Arc::new(Health::new(config.clone()))).clone()
        };
        let (wake, wakes) = mpsc::sync_channel(8);
        let reports = DeliveryReports {
            errors: BrokerErrors::default(),
            cluster: cluster.to_owned(),
            timeout: self.settings.timeout,
            wake,
            purge: AtomicBool::new(false),
            acknowledged: AtomicU64::new(0),
            health,
        };
        let producer = match self.settings.engine {
            Engine::Librdkafka => {
                let kafka: ThreadedProducer<DeliveryReports> = producer_config(&config, &self.settings)
                    .create_with_context(reports)
                    .map_err(|cause| PublishError::Create { cluster: cluster.to_owned(), cause })?;
                let reports = kafka.context().clone();
                ClusterProducer { engine: Producing::Librdkafka(kafka), reports }
            }
            Engine::Databus => {
                if !config.properties.is_empty() {
                    log::info!(
                        "cluster '{cluster}': its properties are librdkafka's, so databus's own producer \
                         does not use them (its consumers do)"
                    );
                }
                let reports = Arc::new(reports);
                let start = |cause: String| PublishError::Start { cluster: cluster.to_owned(), cause };
                let own = own_config(cluster, &config, &self.settings).map_err(start)?;
                let own = produce::Producer::start(own, reports.clone()).map_err(|e| start(e.to_string()))?;
                ClusterProducer { engine: Producing::Databus(own), reports }
            }
        };
        let producer = Arc::new(producer);
        spawn_watcher(&producer, wakes);
        live.insert(slot.clone(), producer.clone());
        log::info!("producer {} of cluster '{cluster}' created", slot.1);
        Ok(producer)
    }

    /// Closes the producers of clusters no grant uses any more. Records they
    /// still hold keep them alive until settled.
    pub(crate) fn retain(&self, clusters_in_use: &std::collections::HashSet<String>) {
        self.let_go(|name| !clusters_in_use.contains(name), "closed: no grant uses the cluster");
    }

    /// Retires the producers of `clusters`, whose settings changed: the next
    /// record of each creates a producer with the new settings, while the
    /// records the old one holds keep it alive until they are settled.
    pub(crate) fn reconfigured(&self, clusters: &[String]) {
        self.let_go(|name| clusters.iter().any(|c| c == name), "retired: the cluster's settings changed");
    }

    /// Drops the producers of the clusters `go` names, saying `why`.
    fn let_go(&self, go: impl Fn(&str) -> bool, why: &str) {
        // New producers of those clusters look with their new settings.
        self.health.lock().unwrap_or_else(|e| e.into_inner()).retain(|name, _| !go(name));
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(name, lane), _| {
            let gone = go(name);
            if gone {
                log::info!("producer {lane} of cluster '{name}' {why}");
            }
            !gone
        });
    }

    /// Records handed to librdkafka and not yet settled, per cluster.
    pub(crate) fn queue_depths(&self) -> Vec<(String, usize)> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut depths: BTreeMap<String, usize> = BTreeMap::new();
        for ((name, _), p) in live.iter() {
            *depths.entry(name.clone()).or_default() += p.in_flight();
        }
        depths.into_iter().collect()
    }

    /// Waits up to `timeout` for every queued record of every cluster.
    pub(crate) fn flush(&self, timeout: Duration) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        for ((name, lane), p) in live.iter() {
            if let Err(e) = p.flush(timeout) {
                log::warn!("flushing producer {lane} of cluster '{name}': {e}");
            }
        }
    }
}

impl Publish for Producers {
    fn send(&self, cluster: &str, lane: usize, record: &Record<'_>) -> Result<Delivery, PublishError> {
        let slot = Arc::new(Slot::default());
        let deadline = Instant::now() + self.settings.timeout;
        let producer = self.enqueue(cluster, lane, record, Reporter(slot.clone()))?;
        Ok(Delivery::new(slot, deadline, Some(producer), record.topic))
    }
}

impl Producers {
    /// Hands `record` to its lane's producer; its report goes to `reporter`.
    fn enqueue(
        &self,
        cluster: &str,
        lane: usize,
        record: &Record<'_>,
        reporter: Reporter,
    ) -> Result<Arc<ClusterProducer>, PublishError> {
        let producer = self.producer(cluster, lane)?;
        let kafka = match &producer.engine {
            Producing::Librdkafka(kafka) => kafka,
            Producing::Databus(own) => {
                let mut headers = record.headers();
                let key = (!record.is_keyless()).then_some(record.key);
                let outgoing = produce::Outgoing {
                    topic: record.topic,
                    key,
                    value: record.value,
                    headers: &mut headers,
                };
                own.send(outgoing, reporter)?;
                return Ok(producer);
            }
        };
        let reports = kafka.context();
        if let Some(reason) = reports.errors.refusal() {
            return Err(reports.refusal(reason));
        }
        let mut headers = OwnedHeaders::new_with_capacity(2);
        for (key, value) in record.headers() {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        let timeout = self.settings.timeout;
        let deadline = Instant::now() + timeout;
        let mut base = BaseRecord::with_opaque_to(record.topic, Box::new(reporter))
            .payload(record.value)
            .headers(headers);
        if !record.is_keyless() {
            base = base.key(record.key);
        }
        loop {
            match kafka.send(base) {
                Ok(()) => return Ok(producer),
                // The local queue is full: wait for deliveries to drain it,
                // but never past this record's own deadline.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    base = back;
                    thread::sleep(Duration::from_millis(1));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(PublishError::Timeout {
                        cluster: cluster.to_owned(),
                        ms: timeout.as_millis(),
                        partition: None,
                        cause: Some("the local queue stayed full".into()),
                    })
                }
                Err((e, _)) => return Err(rejected(e, record.topic)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Delivered = Delivered { partition: 1, offset: 7 };

    #[test]
    fn a_delivery_is_waited_for_across_threads() {
        let (delivery, report) = Delivery::pending(Duration::from_secs(5));
        assert!(!delivery.is_settled());
        let reporter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            report(Ok(AT));
        });
        assert_eq!(delivery.wait(), Ok(AT));
        reporter.join().unwrap();
    }

    #[test]
    fn a_delivery_seen_settled_is_still_waited_for() {
        let (delivery, report) = Delivery::pending(Duration::from_secs(5));
        report(Err(PublishError::Closed));
        assert!(delivery.is_settled());
        assert!(delivery.is_settled(), "looking does not take the verdict");
        assert_eq!(delivery.wait(), Err(PublishError::Closed));
    }

    #[test]
    fn a_callback_runs_once_where_the_verdict_is() {
        let (tx, rx) = mpsc::channel();
        // Set before the verdict: runs on the reporting thread.
        let (delivery, report) = Delivery::pending(Duration::from_secs(5));
        let to = tx.clone();
        let _keep = delivery.then(Box::new(move |v| to.send((v, thread::current().id())).unwrap()));
        let reporter = thread::spawn(move || {
            report(Ok(AT));
            thread::current().id()
        });
        let reporter = reporter.join().unwrap();
        assert_eq!(rx.recv().unwrap(), (Ok(AT), reporter));
        // Set after it: runs at once, here.
        let (delivery, report) = Delivery::pending(Duration::from_secs(5));
        report(Ok(AT));
        let _keep = delivery.then(Box::new(move |v| tx.send((v, thread::current().id())).unwrap()));
        assert_eq!(rx.recv().unwrap(), (Ok(AT), thread::current().id()));
        assert!(rx.try_recv().is_err(), "each callback ran once");
    }

    #[test]
    fn a_record_dropped_without_a_report_is_closed() {
        let (tx, rx) = mpsc::channel();
        let slot = Arc::new(Slot::default());
        let delivery = Delivery::new(slot.clone(), Instant::now() + Duration::from_secs(5), None, "t");
        let _keep = delivery.then(Box::new(move |v| tx.send(v).unwrap()));
        drop(Reporter(slot));
        assert_eq!(rx.recv().unwrap(), Err(PublishError::Closed));
    }

    #[test]
    fn a_verdict_that_never_comes_times_out_after_the_grace_second() {
        let (delivery, _report) = Delivery::pending(Duration::ZERO);
        let started = Instant::now();
        assert!(matches!(delivery.wait(), Err(PublishError::Timeout { .. })));
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[test]
    fn a_timeout_says_what_is_known_of_the_partition_and_the_brokers() {
        let timeout = |partition: Option<&str>, cause: Option<&str>| {
            PublishError::Timeout {
                cluster: "c".into(),
                ms: 5000,
                partition: partition.map(Into::into),
                cause: cause.map(Into::into),
            }
            .to_string()
        };
        assert_eq!(timeout(None, None), "cluster 'c' did not acknowledge the record within 5000 ms");
        assert_eq!(
            timeout(Some("partition 0 of topic 't': it has no leader"), Some("Connection refused")),
            "cluster 'c' did not acknowledge the record within 5000 ms: partition 0 of topic 't': it has \
             no leader (last broker error: Connection refused)"
        );
        assert_eq!(
            timeout(None, Some("Connection refused")),
            "cluster 'c' did not acknowledge the record within 5000 ms (last broker error: Connection refused)"
        );
    }
}
