//! The producers of every configured cluster, one per cluster and lane,
//! each of either engine: made on first use, replaced after a fatal error
//! or a change of the cluster's settings, closed when no grant uses the
//! cluster. [`Publish::send`] goes through here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use super::config::{own_config, producer_config, Engine, ProducerSettings};
use super::delivery::{Delivery, Reporter, Slot};
use super::error::{rejected, PublishError};
use super::reports::DeliveryReports;
use super::watcher::spawn_watcher;
use super::{Publish, Record};
use crate::kafka::broker_errors::BrokerErrors;
use crate::kafka::health::Health;
use crate::kafka::{produce, Clusters};

pub(super) struct ClusterProducer {
    pub(super) engine: Producing,
    /// The producer's context (librdkafka's holds it too).
    pub(super) reports: Arc<DeliveryReports>,
}

pub(super) enum Producing {
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
    pub(super) fn in_flight(&self) -> usize {
        match &self.engine {
            Producing::Librdkafka(kafka) => kafka.in_flight_count().max(0) as usize,
            Producing::Databus(own) => own.held(),
        }
    }

    /// Whether the brokers refuse it (librdkafka's: until a metadata
    /// request passes; databus's own producer answers refusals itself).
    pub(super) fn is_refused(&self) -> bool {
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
    /// Per cluster, what its own producers did (kept across re-creations,
    /// so the counts only grow).
    stats: Mutex<BTreeMap<String, Arc<produce::Stats>>>,
}

impl Producers {
    pub(crate) fn new(clusters: Arc<Clusters>, settings: ProducerSettings) -> Producers {
        Producers {
            clusters,
            settings,
            live: Mutex::new(HashMap::new()),
            health: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    /// Which of a cluster's producers serves `lane`.
    fn slot(&self, cluster: &str, lane: usize) -> (String, usize) {
        (cluster.to_owned(), lane % self.settings.instances.max(1))
    }

    fn producer(&self, cluster: &str, lane: usize) -> Result<Arc<ClusterProducer>, PublishError> {
        let slot = self.slot(cluster, lane);
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
                let stats = self
                    .stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(cluster.to_owned())
                    .or_default()
                    .clone();
                let own = own_config(cluster, &config, &self.settings, stats).map_err(start)?;
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

    /// What each cluster's own producers did since start (see
    /// [`produce::Stats::read`]); none for a cluster on librdkafka's.
    pub(crate) fn produce_stats(&self) -> Vec<(String, [u64; 5])> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.iter().map(|(cluster, s)| (cluster.clone(), s.read())).collect()
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

    fn release(&self, cluster: &str, lane: usize) {
        let producer =
            self.live.lock().unwrap_or_else(|e| e.into_inner()).get(&self.slot(cluster, lane)).cloned();
        if let Some(Producing::Databus(own)) = producer.as_ref().map(|p| &p.engine) {
            own.release();
        }
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
                    more: record.more,
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
