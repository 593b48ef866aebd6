//! The Kafka side: librdkafka clients built from a cluster's configuration.

pub mod consumer;
pub mod producer;

use rdkafka::config::ClientConfig;

use crate::config::Cluster;

pub use consumer::{ConsumeError, GroupConsumer, InMessage, Memberships};
pub use producer::{Delivered, OutRecord, PendingDelivery, Producers, Publish, PublishError};

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
