//! The Kafka side: librdkafka clients built from a cluster's configuration.

pub mod consumer;
pub mod producer;

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

pub use consumer::{ConsumeError, GroupConsumer, InMessage, Memberships, SubscriberSettings};
pub use producer::{
    Delivered, OutRecord, PendingDelivery, ProducerSettings, Producers, Publish, PublishError,
};

/// One Kafka cluster as `databus.toml` names it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub brokers: Vec<String>,
    /// Extra librdkafka properties, applied after databus's own defaults.
    pub properties: BTreeMap<String, String>,
}

/// Why librdkafka refuses a cluster's settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PropertyError {
    /// The operator's property at fault; `None` when only the combination is.
    pub property: Option<String>,
    pub reason: String,
}

/// Checks, without creating a client or touching the network, that
/// librdkafka accepts every property of `cluster` and the producer and
/// consumer configurations built from it, so that a typo or a value this
/// build does not support stops startup instead of failing the first SET.
pub fn check_cluster(
    cluster: &Cluster,
    producer: &ProducerSettings,
    subscriber: &SubscriberSettings,
) -> Result<(), PropertyError> {
    let reason = |e: KafkaError| match e {
        KafkaError::ClientConfig(_, description, _, _) => description,
        other => other.to_string(),
    };
    for (key, value) in &cluster.properties {
        let mut alone = ClientConfig::new();
        alone.set(key, value);
        alone
            .create_native_config()
            .map_err(|e| PropertyError { property: Some(key.clone()), reason: reason(e) })?;
    }
    for config in [
        producer::producer_config(cluster, producer),
        consumer::consumer_config(cluster, "databus-config-check", "latest", subscriber),
    ] {
        config.create_native_config().map_err(|e| PropertyError { property: None, reason: reason(e) })?;
    }
    Ok(())
}

/// Base client settings of a cluster: its brokers, then the operator's extra
/// librdkafka properties, which win.
pub fn client_config(cluster: &Cluster) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.brokers.join(","));
    // librdkafka backs off up to 10 s between reconnects; a restarted broker
    // should be used again within a second.
    config.set("reconnect.backoff.max.ms", "1000");
    // librdkafka's own log lines go through `log` via the default context;
    // keep them to warnings so a down broker does not flood the output.
    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    for (k, v) in &cluster.properties {
        config.set(k, v);
    }
    config
}
