//! Publishing. One idempotent librdkafka producer per cluster, shared by all
//! publisher connections of that cluster. `publish` only enqueues; the caller
//! holds a [`PendingDelivery`] and waits on it before replying, so a pipelined
//! burst is produced concurrently and still answered in order.
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
use std::sync::{Arc, Mutex};
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
use super::health::{Health, MetadataClient};
use super::{Cluster, Clusters};

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
    /// grow with the load and a lone SET is sent at once (BENCHMARKS.md).
    pub max_in_flight: usize,
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
        .set("max.in.flight.requests.per.connection", settings.max_in_flight.to_string());
    config
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
    #[error("kafka refused the record: {0}")]
    Rejected(#[source] KafkaError),
    #[error("the cluster's ACLs do not let databus write to topic '{topic}': {cause}")]
    Denied {
        topic: String,
        #[source]
        cause: KafkaError,
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

impl PublishError {
    /// A short name of the cause, for the produce error counter.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            PublishError::UnknownCluster(_) => "unknown_cluster",
            PublishError::Create { .. } => "create",
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
                | PublishError::Timeout { .. }
                | PublishError::Refused { .. }
                | PublishError::Closed
        )
    }
}

/// One record to produce.
pub(crate) struct OutRecord<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Called once with a record's verdict, on the thread that serves
/// librdkafka's delivery reports (see [`Publish::publish_then`]).
pub(crate) type Settle = Box<dyn FnOnce(Result<Delivered, PublishError>) + Send + Sync>;

/// Where a record's delivery report goes.
enum DeliverySender {
    /// A [`PendingDelivery`], which its connection waits on.
    Waiter(SyncSender<Result<Delivered, PublishError>>),
    /// A callback that acts on the verdict itself.
    Call(Settle),
}

/// Holds the producer of a record handed to [`Publish::publish_then`], so
/// that replacing the producer does not cut the record short; drop it once
/// the record is settled, never on the delivery thread.
pub(crate) struct KeepAlive {
    producer: Option<Arc<ClusterProducer>>,
    /// The record's topic, for the error if its verdict never comes.
    topic: Box<str>,
}

impl KeepAlive {
    /// The error for a record whose verdict never came, as a waiting
    /// [`PendingDelivery`] gives it.
    pub(crate) fn timed_out(&self) -> PublishError {
        never_reported(reports_of(&self.producer), &self.topic)
    }
}

/// The delivery context of a record's producer; absent for test doubles.
fn reports_of(producer: &Option<Arc<ClusterProducer>>) -> Option<&DeliveryReports> {
    producer.as_ref().map(|p| &**p.kafka.context())
}

/// A record handed to the producer, not yet acknowledged.
pub(crate) struct PendingDelivery {
    rx: Receiver<Result<Delivered, PublishError>>,
    deadline: Instant,
    /// Keeps a replaced producer alive until its records are settled.
    producer: Option<Arc<ClusterProducer>>,
    /// The record's topic, for the error if its verdict never comes.
    topic: Box<str>,
    /// The verdict, once [`PendingDelivery::is_settled`] has seen it.
    settled: Option<Result<Delivered, PublishError>>,
}

impl PendingDelivery {
    /// An already acknowledged record, for doubles of [`Publish`].
    #[cfg(test)]
    pub(crate) fn acknowledged(partition: i32, offset: i64) -> PendingDelivery {
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = tx.send(Ok(Delivered { partition, offset }));
        PendingDelivery { rx, deadline: Instant::now(), producer: None, topic: "".into(), settled: None }
    }

    /// Whether the broker's verdict is in, without waiting for it.
    pub(crate) fn is_settled(&mut self) -> bool {
        if self.settled.is_none() {
            self.settled = self.rx.try_recv().ok();
        }
        self.settled.is_some()
    }

    /// Waits for the broker's verdict. librdkafka itself fails the record at
    /// `message.timeout.ms`; the extra second only guards against a lost report.
    pub(crate) fn wait(mut self) -> Result<Delivered, PublishError> {
        let left = self.deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        let verdict = match self.settled.take() {
            Some(v) => Ok(v),
            None => self.rx.recv_timeout(left),
        };
        match verdict {
            Ok(verdict) => verdict,
            Err(RecvTimeoutError::Timeout) => Err(never_reported(reports_of(&self.producer), &self.topic)),
            Err(RecvTimeoutError::Disconnected) => Err(PublishError::Closed),
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
            PublishError::Denied { topic: topic.to_owned(), cause: error }
        }
        _ => PublishError::Rejected(error),
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
    fn publish(
        &self,
        cluster: &str,
        lane: usize,
        record: &OutRecord<'_>,
    ) -> Result<PendingDelivery, PublishError>;

    /// Enqueues `record` like [`Publish::publish`], and calls `settle` with
    /// the broker's verdict exactly once, on the thread that serves delivery
    /// reports, unless this returns an error (then never). The caller keeps
    /// the [`KeepAlive`] until `settle` has run.
    fn publish_then(
        &self,
        cluster: &str,
        lane: usize,
        record: &OutRecord<'_>,
        settle: Settle,
    ) -> Result<KeepAlive, PublishError> {
        let pending = self.publish(cluster, lane, record)?;
        settle(pending.wait());
        Ok(KeepAlive { producer: None, topic: record.topic.into() })
    }
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
    /// What is known of the partitions the producer writes to.
    health: Health,
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

    fn refusal(&self, reason: String) -> PublishError {
        PublishError::Refused { cluster: self.cluster.clone(), reason }
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<DeliverySender>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Box<DeliverySender>) {
        let (report, topic, partition) = match result {
            Ok(m) => {
                self.errors.accepted();
                if self.acknowledged.fetch_add(1, Ordering::Relaxed) % TOPIC_SAMPLE == 0 {
                    self.health.wrote_to(m.topic());
                }
                self.health.acknowledged(m.topic(), m.partition());
                (Ok(Delivered { partition: m.partition(), offset: m.offset() }), m.topic(), m.partition())
            }
            Err((e, m)) => {
                if *e == TIMED_OUT {
                    self.health.wrote_to(m.topic());
                    let _ = self.wake.try_send(Wake::TimedOut(m.topic().to_owned()));
                }
                (Err(e.clone()), m.topic(), m.partition())
            }
        };
        let verdict = judge(self, topic, partition, report);
        match *reply {
            // The waiter may have given up already; nothing to do then.
            DeliverySender::Waiter(tx) => {
                let _ = tx.send(verdict);
            }
            DeliverySender::Call(settle) => settle(verdict),
        }
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
fn spawn_watcher(producer: &Arc<ClusterProducer>, cluster: Cluster, wakes: Receiver<Wake>) {
    let weak = Arc::downgrade(producer);
    let spawned = thread::Builder::new().name("databus-watcher".into()).spawn(move || {
        let mut watch = Watch::new(cluster);
        loop {
            let Some(refused) = weak.upgrade().map(|p| p.kafka.context().errors.refusal().is_some()) else {
                return;
            };
            let wait = if refused {
                REFUSED_RECHECK
            } else {
                watch.next_check.saturating_duration_since(Instant::now())
            };
            let event = wakes.recv_timeout(wait);
            let Some(producer) = weak.upgrade() else { return };
            let reports = producer.kafka.context();
            match event {
                Ok(Wake::Refused) => {}
                Ok(Wake::TimedOut(topic)) => watch.diagnose(&producer, vec![topic]),
                Err(RecvTimeoutError::Timeout) if refused => {
                    if producer.kafka.client().fetch_metadata(None, REFUSED_RECHECK).is_ok() {
                        reports.errors.accepted();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if watch.stalled(&producer) {
                        watch.diagnose(&producer, reports.health.topics());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if reports.purge.swap(false, Ordering::Relaxed) {
                producer.kafka.purge(PurgeConfig::default().queue());
            }
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot start the watcher of a producer ({e}): refused records wait for their timeout");
    }
}

/// What a producer's watcher remembers between checks.
struct Watch {
    next_check: Instant,
    /// Records acknowledged at the last check.
    acknowledged: u64,
    /// When each topic was last diagnosed.
    diagnosed: HashMap<String, Instant>,
    cluster: Cluster,
    /// Created on the first diagnosis.
    metadata: Option<MetadataClient>,
}

impl Watch {
    fn new(cluster: Cluster) -> Watch {
        Watch {
            next_check: Instant::now() + STALL_CHECK,
            acknowledged: 0,
            diagnosed: HashMap::new(),
            cluster,
            metadata: None,
        }
    }

    /// Whether, since the last check, records were in flight and none was
    /// acknowledged; schedules the next check.
    fn stalled(&mut self, producer: &ClusterProducer) -> bool {
        self.next_check = Instant::now() + STALL_CHECK;
        let acknowledged = producer.kafka.context().acknowledged.load(Ordering::Relaxed);
        let stalled = acknowledged == self.acknowledged && producer.kafka.in_flight_count() > 0;
        self.acknowledged = acknowledged;
        stalled
    }

    /// Diagnoses those of `topics` not diagnosed within a [`STALL_CHECK`].
    fn diagnose(&mut self, producer: &ClusterProducer, mut topics: Vec<String>) {
        let now = Instant::now();
        topics.retain(|t| self.diagnosed.get(t).is_none_or(|at| now.duration_since(*at) >= STALL_CHECK));
        if topics.is_empty() {
            return;
        }
        let health = &producer.kafka.context().health;
        if self.metadata.is_none() {
            match MetadataClient::new(&self.cluster) {
                Ok(client) => self.metadata = Some(client),
                Err(e) => log::warn!("cannot create a metadata client to see why records stall: {e}"),
            }
        }
        match &self.metadata {
            Some(client) => client.diagnose(health, &topics),
            None => health.diagnose(producer.kafka.client(), &topics),
        }
        if self.diagnosed.len() > 256 {
            self.diagnosed.clear();
        }
        let now = Instant::now();
        self.diagnosed.extend(topics.into_iter().map(|t| (t, now)));
    }
}

struct ClusterProducer {
    kafka: ThreadedProducer<DeliveryReports>,
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
}

impl Producers {
    pub(crate) fn new(clusters: Arc<Clusters>, settings: ProducerSettings) -> Producers {
        Producers { clusters, settings, live: Mutex::new(HashMap::new()) }
    }

    fn producer(&self, cluster: &str, lane: usize) -> Result<Arc<ClusterProducer>, PublishError> {
        let slot = (cluster.to_owned(), lane % self.settings.instances.max(1));
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = live.get(&slot) {
            if let Some((code, reason)) = p.kafka.client().fatal_error() {
                log::warn!(
                    "producer for cluster '{cluster}' hit a fatal error ({code:?}: {reason}); re-creating it"
                );
            } else {
                return Ok(p.clone());
            }
        }
        let config =
            self.clusters.get(cluster).ok_or_else(|| PublishError::UnknownCluster(cluster.to_owned()))?;
        let (wake, wakes) = mpsc::sync_channel(8);
        let kafka = producer_config(&config, &self.settings)
            .create_with_context(DeliveryReports {
                errors: BrokerErrors::default(),
                cluster: cluster.to_owned(),
                timeout: self.settings.timeout,
                wake,
                purge: AtomicBool::new(false),
                acknowledged: AtomicU64::new(0),
                health: Health::default(),
            })
            .map_err(|cause| PublishError::Create { cluster: cluster.to_owned(), cause })?;
        let producer = Arc::new(ClusterProducer { kafka });
        spawn_watcher(&producer, config, wakes);
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
            *depths.entry(name.clone()).or_default() += p.kafka.in_flight_count().max(0) as usize;
        }
        depths.into_iter().collect()
    }

    /// Waits up to `timeout` for every queued record of every cluster.
    pub(crate) fn flush(&self, timeout: Duration) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        for ((name, lane), p) in live.iter() {
            if let Err(e) = p.kafka.flush(timeout) {
                log::warn!("flushing producer {lane} of cluster '{name}': {e}");
            }
        }
    }
}

impl Publish for Producers {
    fn publish(
        &self,
        cluster: &str,
        lane: usize,
        record: &OutRecord<'_>,
    ) -> Result<PendingDelivery, PublishError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let deadline = Instant::now() + self.settings.timeout;
        let producer = self.enqueue(cluster, lane, record, DeliverySender::Waiter(tx))?;
        Ok(PendingDelivery {
            rx,
            deadline,
            producer: Some(producer),
            topic: record.topic.into(),
            settled: None,
        })
    }

    fn publish_then(
        &self,
        cluster: &str,
        lane: usize,
        record: &OutRecord<'_>,
        settle: Settle,
    ) -> Result<KeepAlive, PublishError> {
        let producer = self.enqueue(cluster, lane, record, DeliverySender::Call(settle))?;
        Ok(KeepAlive { producer: Some(producer), topic: record.topic.into() })
    }
}

impl Producers {
    /// Hands `record` to its lane's producer; its report goes to `reply`.
    fn enqueue(
        &self,
        cluster: &str,
        lane: usize,
        record: &OutRecord<'_>,
        reply: DeliverySender,
    ) -> Result<Arc<ClusterProducer>, PublishError> {
        let producer = self.producer(cluster, lane)?;
        let reports = producer.kafka.context();
        if let Some(reason) = reports.errors.refusal() {
            return Err(reports.refusal(reason));
        }
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in record.headers {
            headers = headers.insert(Header { key, value: Some(*value) });
        }
        let timeout = self.settings.timeout;
        let deadline = Instant::now() + timeout;
        let mut base = BaseRecord::with_opaque_to(record.topic, Box::new(reply))
            .key(record.key)
            .payload(record.value)
            .headers(headers);
        loop {
            match producer.kafka.send(base) {
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
