//! The Kafka side, built from a cluster's configuration: the producers
//! (databus's own, `produce/`, or librdkafka's, `producer/` picks), and
//! librdkafka's consumers and metadata clients.

pub(crate) mod broker_errors;
pub(crate) mod clusters;
pub(crate) mod consumer;
pub(crate) mod group_protocol;
pub(crate) mod health;
pub(crate) mod probe;
pub(crate) mod produce;
pub(crate) mod producer;
pub(crate) mod publish;
pub(crate) mod settings;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::secret::Secret;

pub(crate) use clusters::Clusters;
pub use consumer::StartOffset;
pub(crate) use consumer::{ConsumeError, GroupClient, GroupConsumer, Memberships, SubscriberSettings};
pub(crate) use producer::{
    Delivered, Delivery, KeepAlive, ProducerSettings, Producers, Publish, PublishError, Record,
};
pub(crate) use publish::{publish, Count, Sent};

/// What databus's own producer makes of bytes from a broker (the fuzz
/// target `broker_response`): responses cut from the stream by their
/// lengths, each read as every response the producer reads, in every
/// version it speaks (Produce v3–v9, Metadata v1–v12, ApiVersions v0–v3,
/// SaslHandshake v0–v1). Returns how many readings made sense; never
/// panics nor allocates more than the bytes allow, whatever they are.
pub fn decode_broker_responses(data: &[u8]) -> usize {
    let mut buffer = bytes::BytesMut::from(data);
    let mut decoded = 0;
    while let Ok(Some(frame)) = produce::wire::take_frame(&mut buffer) {
        decoded += produce::readings(&frame);
    }
    decoded
}

/// One Kafka cluster as `databus.toml` names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cluster {
    pub brokers: Vec<String>,
    /// Encrypt the connections to the brokers (`security.protocol` ssl or sasl_ssl).
    pub tls: Option<KafkaTls>,
    /// Authenticate to the brokers (`security.protocol` sasl_plaintext or sasl_ssl).
    pub sasl: Option<KafkaSasl>,
    /// Extra librdkafka properties, applied after databus's own defaults.
    pub properties: BTreeMap<String, Secret>,
    /// How subscribers' consumer groups rebalance.
    pub group_protocol: GroupProtocol,
}

/// The consumer group protocol of a cluster's subscribers
/// (`[clusters.X] group_protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum GroupProtocol {
    /// The classic protocol: the group stops while a member joins or leaves
    /// (eager rebalance), its session timeout set by databus.
    #[default]
    Classic,
    /// KIP-848 (Kafka 4.0+): the broker assigns partitions incrementally,
    /// so a member's arrival or departure moves only the partitions it
    /// takes or frees; its session timeout is the broker's
    /// `group.consumer.session.timeout.ms`.
    Consumer,
}

/// TLS to the brokers. Without a CA file, the system's CA store is used
/// (librdkafka probes the usual places, since OpenSSL is built in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KafkaTls {
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key, for brokers that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// SASL credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password: Secret,
}

/// The SASL mechanisms this build speaks with a username and password.
pub(crate) const SASL_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// librdkafka properties that the `tls` and `sasl` settings own.
pub(crate) const SECURITY_PROPERTIES: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
];

/// Whether a librdkafka property holds a password or other secret.
pub(crate) fn is_secret_property(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key.ends_with(".pem")
}

impl Cluster {
    /// librdkafka's `security.protocol` for these settings.
    fn security_protocol(&self) -> Option<&'static str> {
        match (&self.tls, &self.sasl) {
            (None, None) => None,
            (Some(_), None) => Some("ssl"),
            (None, Some(_)) => Some("sasl_plaintext"),
            (Some(_), Some(_)) => Some("sasl_ssl"),
        }
    }
}

/// Why librdkafka refuses a cluster's settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct PropertyError {
    /// The operator's property at fault; `None` when only the combination is.
    pub property: Option<String>,
    pub reason: String,
}

/// Checks, without creating a client or touching the network, that
/// librdkafka accepts every property of `cluster` and the producer and
/// consumer configurations built from it, so that a typo or a value this
/// build does not support stops startup instead of failing the first SET.
pub(crate) fn check_cluster(
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
        alone.set(key, value.expose());
        alone.create_native_config().map_err(|e| {
            let mut reason = reason(e);
            if is_secret_property(key) && !value.is_empty() {
                reason = reason.replace(value.expose(), "***");
            }
            PropertyError { property: Some(key.clone()), reason }
        })?;
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
pub(crate) fn client_config(cluster: &Cluster) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.brokers.join(","));
    // librdkafka backs off up to 10 s between reconnects; a restarted broker
    // should be used again within a second.
    config.set("reconnect.backoff.max.ms", "1000");
    // No KIP-714 client telemetry: databus reports through /metrics, and
    // with it on every librdkafka instance keeps a dozen HDR histograms per
    // broker it knows, about 290 KiB per subscriber (BENCHMARKS.md, "Memory").
    // `properties` may turn it back on.
    config.set("enable.metrics.push", "false");
    // librdkafka's own log lines go through `log` via the contexts; keep
    // them to warnings so a down broker does not flood the output, unless
    // the operator asked for librdkafka's `debug` contexts (they come out at
    // debug level, under the `librdkafka` log target).
    let level = if cluster.properties.contains_key("debug") {
        rdkafka::config::RDKafkaLogLevel::Debug
    } else {
        rdkafka::config::RDKafkaLogLevel::Warning
    };
    config.set_log_level(level);
    if let Some(protocol) = cluster.security_protocol() {
        config.set("security.protocol", protocol);
    }
    if let Some(tls) = &cluster.tls {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        // OpenSSL is built into the binary, so its compiled-in CA directory
        // means nothing on this machine: probe the system's instead.
        config.set("ssl.ca.location", tls.ca_file.as_ref().map(path).unwrap_or_else(|| "probe".into()));
        if let Some(cert) = &tls.cert_file {
            config.set("ssl.certificate.location", path(cert));
        }
        if let Some(key) = &tls.key_file {
            config.set("ssl.key.location", path(key));
        }
    }
    if let Some(sasl) = &cluster.sasl {
        config
            .set("sasl.mechanisms", &sasl.mechanism)
            .set("sasl.username", &sasl.username)
            .set("sasl.password", sasl.password.expose());
    }
    for (k, v) in &cluster.properties {
        config.set(k, v.expose());
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::RDKafkaLogLevel;

    fn cluster(properties: &[(&str, &str)]) -> Cluster {
        Cluster {
            brokers: vec!["127.0.0.1:9092".into()],
            tls: None,
            sasl: None,
            properties: properties.iter().map(|(k, v)| (k.to_string(), Secret::new(*v))).collect(),
            group_protocol: GroupProtocol::Classic,
        }
    }

    #[test]
    fn librdkafka_logs_warnings_unless_its_debug_contexts_are_asked_for() {
        assert!(matches!(client_config(&cluster(&[])).log_level, RDKafkaLogLevel::Warning));
        let debug = client_config(&cluster(&[("debug", "cgrp")]));
        assert!(matches!(debug.log_level, RDKafkaLogLevel::Debug));
        assert_eq!(debug.get("debug"), Some("cgrp"));
    }

    #[test]
    fn client_telemetry_is_off_unless_the_cluster_turns_it_on() {
        assert_eq!(client_config(&cluster(&[])).get("enable.metrics.push"), Some("false"));
        let on = client_config(&cluster(&[("enable.metrics.push", "true")]));
        assert_eq!(on.get("enable.metrics.push"), Some("true"));
    }
}
