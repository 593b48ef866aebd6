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

use std::collections::{BTreeMap, HashMap};
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
use super::{Cluster, Clusters};

/// How often a refused producer asks the brokers for metadata, to learn
/// that they accept it again (librdkafka connects only on demand, and a
/// refused producer holds no records that would make one).
const REFUSED_RECHECK: Duration = Duration::from_secs(1);

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
    #[error("cluster '{cluster}' did not acknowledge the record within {ms} ms{}", because(.cause))]
    Timeout { cluster: String, ms: u128, cause: Option<String> },
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
pub(crate) struct KeepAlive(Option<Arc<ClusterProducer>>);

impl KeepAlive {
    /// The error for a record whose verdict never came, as a waiting
    /// [`PendingDelivery`] gives it.
    pub(crate) fn timed_out(&self) -> PublishError {
        timed_out(reports_of(&self.0))
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
    _producer: Option<Arc<ClusterProducer>>,
    /// The verdict, once [`PendingDelivery::is_settled`] has seen it.
    settled: Option<Result<Delivered, PublishError>>,
}

impl PendingDelivery {
    /// An already acknowledged record, for doubles of [`Publish`].
    #[cfg(test)]
    pub(crate) fn acknowledged(partition: i32, offset: i64) -> PendingDelivery {
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = tx.send(Ok(Delivered { partition, offset }));
        PendingDelivery { rx, deadline: Instant::now(), _producer: None, settled: None }
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
            Err(RecvTimeoutError::Timeout) => Err(timed_out(reports_of(&self._producer))),
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
    report: Result<Delivered, KafkaError>,
) -> Result<Delivered, PublishError> {
    match report {
        Ok(d) => Ok(d),
        Err(TIMED_OUT) => Err(timed_out(Some(reports))),
        Err(PURGED) => {
            Err(reports
                .refused(reports.errors.refusal().or_else(|| reports.errors.get()).unwrap_or_default()))
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
/// timeout, with the last broker error its producer saw.
fn timed_out(reports: Option<&DeliveryReports>) -> PublishError {
    match reports {
        Some(r) => PublishError::Timeout {
            cluster: r.cluster.clone(),
            ms: r.timeout.as_millis(),
            cause: r.errors.get(),
        },
        None => PublishError::Timeout { cluster: String::new(), ms: 0, cause: None },
    }
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
        Ok(KeepAlive(None))
    }
}

struct DeliveryReports {
    errors: BrokerErrors,
    /// The cluster and produce timeout, for the errors of timed-out records.
    cluster: String,
    timeout: Duration,
    /// Wakes the producer's purger (see [`spawn_purger`]) on a refusal.
    purge: SyncSender<()>,
}

impl ClientContext for DeliveryReports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if self.errors.log(level, fac, message) {
            let _ = self.purge.try_send(());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.errors.record(&error, reason) {
            let _ = self.purge.try_send(());
        }
    }
}

impl DeliveryReports {
    fn refused(&self, reason: String) -> PublishError {
        PublishError::Refused { cluster: self.cluster.clone(), reason }
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<DeliverySender>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Box<DeliverySender>) {
        let (report, topic) = match result {
            Ok(m) => {
                self.errors.accepted();
                (Ok(Delivered { partition: m.partition(), offset: m.offset() }), m.topic())
            }
            Err((e, m)) => (Err(e.clone()), m.topic()),
        };
        let verdict = judge(self, topic, report);
        match *reply {
            // The waiter may have given up already; nothing to do then.
            DeliverySender::Waiter(tx) => {
                let _ = tx.send(verdict);
            }
            DeliverySender::Call(settle) => settle(verdict),
        }
    }
}

/// A thread per producer that, each time the brokers refuse it, purges the
/// records waiting in its queue: none was sent, so each is answered with the
/// refusal at once (by its delivery report) instead of at the produce
/// timeout. While refused, it asks for metadata every [`REFUSED_RECHECK`]
/// and ends the refusal once the brokers answer. It holds the producer
/// weakly and ends with it; it runs apart from the delivery thread, which
/// must never drop the last reference.
fn spawn_purger(producer: &Arc<ClusterProducer>, refusals: Receiver<()>) {
    let weak = Arc::downgrade(producer);
    let spawned = thread::Builder::new().name("databus-purger".into()).spawn(move || loop {
        let Some(refused) = weak.upgrade().map(|p| p.kafka.context().errors.refusal().is_some()) else {
            return;
        };
        let event = if refused {
            refusals.recv_timeout(REFUSED_RECHECK)
        } else {
            refusals.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        let Some(producer) = weak.upgrade() else { return };
        match event {
            Ok(()) => producer.kafka.purge(PurgeConfig::default().queue()),
            Err(RecvTimeoutError::Timeout) => {
                if producer.kafka.client().fetch_metadata(None, REFUSED_RECHECK).is_ok() {
                    producer.kafka.context().errors.accepted();
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot start the purger of a producer ({e}): refused records wait for their timeout");
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
        let (purge, refusals) = mpsc::sync_channel(1);
        let kafka = producer_config(&config, &self.settings)
            .create_with_context(DeliveryReports {
                errors: BrokerErrors::default(),
                cluster: cluster.to_owned(),
                timeout: self.settings.timeout,
                purge,
            })
            .map_err(|cause| PublishError::Create { cluster: cluster.to_owned(), cause })?;
        let producer = Arc::new(ClusterProducer { kafka });
        spawn_purger(&producer, refusals);
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
        Ok(PendingDelivery { rx, deadline, _producer: Some(producer), settled: None })
    }

    fn publish_then(
        &self,
        cluster: &str,
        lane: usize,
        record: &OutRecord<'_>,
        settle: Settle,
    ) -> Result<KeepAlive, PublishError> {
        let producer = self.enqueue(cluster, lane, record, DeliverySender::Call(settle))?;
        Ok(KeepAlive(Some(producer)))
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
            return Err(reports.refused(reason));
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
                        cause: Some("the local queue stayed full".into()),
                    })
                }
                Err((e, _)) => return Err(rejected(e, record.topic)),
            }
        }
    }
}
