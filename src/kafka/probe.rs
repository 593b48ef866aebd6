//! Whether Kafka answers: every `interval`, each cluster that a grant uses
//! is asked for its metadata by a client of its own, so `/ready` can tell a
//! load balancer, and that client's librdkafka statistics give the state of
//! each broker connection for `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Statistics};

use super::broker_errors::{because, BrokerErrors};
use super::{Cluster, Clusters};
use crate::metrics::Metrics;

/// The latest answer of one cluster.
#[derive(Debug, Clone, Default)]
struct Answer {
    last_ok: Option<Instant>,
    /// Why the latest probe failed; `None` when it succeeded.
    failing: Option<String>,
}

/// The probing thread and what it found.
pub(crate) struct Probe {
    answers: Arc<Mutex<BTreeMap<String, Answer>>>,
    interval: Duration,
    stop: Option<Sender<()>>,
    handle: Option<thread::JoinHandle<()>>,
}

struct ProbeContext {
    cluster: String,
    metrics: Arc<Metrics>,
    errors: BrokerErrors,
}

impl ClientContext for ProbeContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.errors.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log::debug!("librdkafka (probe of '{}'): {error}: {reason}", self.cluster);
        self.errors.keep(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let brokers: Vec<(String, bool)> =
            statistics.brokers.values().map(|b| (b.name.clone(), b.state == "UP")).collect();
        self.metrics.set_brokers(&self.cluster, &brokers);
    }
}

impl ProducerContext for ProbeContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

impl Probe {
    /// Starts probing, at once and then every `interval`, the clusters
    /// `in_use` names at that moment.
    pub(crate) fn spawn(
        clusters: Arc<Clusters>,
        in_use: impl Fn() -> BTreeSet<String> + Send + 'static,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Probe {
        let answers: Arc<Mutex<BTreeMap<String, Answer>>> = Arc::default();
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = answers.clone();
        let handle = thread::Builder::new()
            .name("kafka-probe".into())
            .spawn(move || {
                let mut clients: BTreeMap<String, (Cluster, BaseProducer<ProbeContext>)> = BTreeMap::new();
                loop {
                    let wanted = in_use();
                    let table = clusters.now();
                    // A cluster whose settings changed (SIGHUP) gets a new client.
                    clients.retain(|name, (settings, _)| {
                        wanted.contains(name) && table.get(name) == Some(settings)
                    });
                    shared.lock().unwrap_or_else(|e| e.into_inner()).retain(|name, _| wanted.contains(name));
                    for name in &wanted {
                        let Some(cluster) = table.get(name) else { continue };
                        let answer = probe(&mut clients, name, cluster, interval, &metrics);
                        let mut answers = shared.lock().unwrap_or_else(|e| e.into_inner());
                        let entry = answers.entry(name.clone()).or_default();
                        match answer {
                            Ok(()) => *entry = Answer { last_ok: Some(Instant::now()), failing: None },
                            Err(why) => {
                                if entry.failing.is_none() {
                                    log::warn!("kafka: cluster '{name}' does not answer metadata: {why}");
                                }
                                entry.failing = Some(why);
                            }
                        }
                    }
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .expect("spawn kafka probe");
        Probe { answers, interval, stop: Some(stop), handle: Some(handle) }
    }

    /// What keeps `clusters` from being ready: each that has not answered
    /// its latest probe, or none for three intervals.
    pub(crate) fn missing(&self, clusters: &BTreeSet<String>) -> Vec<String> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let stale = self.interval * 3;
        clusters
            .iter()
            .filter_map(|name| match answers.get(name) {
                None => Some(format!("cluster '{name}': not probed yet")),
                Some(Answer { failing: Some(why), .. }) => {
                    Some(format!("cluster '{name}': no metadata answer: {why}"))
                }
                Some(Answer { last_ok: Some(at), .. }) if at.elapsed() <= stale => None,
                Some(Answer { last_ok, .. }) => Some(format!(
                    "cluster '{name}': no metadata answer for {} s",
                    last_ok.map_or(0, |at| at.elapsed().as_secs())
                )),
            })
            .collect()
    }

    pub(crate) fn stop(mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One metadata request to `cluster`, through its client (created on first use).
fn probe(
    clients: &mut BTreeMap<String, (Cluster, BaseProducer<ProbeContext>)>,
    name: &str,
    cluster: &Cluster,
    interval: Duration,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    if !clients.contains_key(name) {
        let context = ProbeContext {
            cluster: name.to_owned(),
            metrics: metrics.clone(),
            errors: BrokerErrors::default(),
        };
        let mut config = super::client_config(cluster);
        config.set("statistics.interval.ms", interval.as_millis().max(1000).to_string());
        let client = config.create_with_context(context).map_err(|e| e.to_string())?;
        clients.insert(name.to_owned(), (cluster.clone(), client));
    }
    let client = &clients[name].1;
    let result = client
        .client()
        .fetch_metadata(None, interval.clamp(Duration::from_millis(500), Duration::from_secs(10)))
        .map(|_| ())
        .map_err(|e| format!("{e}{}", because(&client.context().errors.get())));
    // Hands the queued statistics and errors to the context.
    client.poll(Duration::ZERO);
    result
}
