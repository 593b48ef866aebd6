//! What a producer is set up with: the `[producer]` settings, and the
//! configuration each engine is built from (librdkafka's properties, or
//! databus's own producer's `produce::Config`), idempotent and acks=all in
//! both.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;

use crate::kafka::{produce, Cluster};

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
    let mut config = crate::kafka::client_config(cluster);
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
pub(super) fn own_config(
    name: &str,
    cluster: &Cluster,
    settings: &ProducerSettings,
    stats: Arc<produce::Stats>,
) -> Result<produce::Config, String> {
    Ok(produce::Config {
        cluster: name.to_owned(),
        brokers: cluster.brokers.clone(),
        security: produce::wire::Security::of(cluster)?,
        timeout: settings.timeout,
        linger: settings.linger,
        max_in_flight: settings.max_in_flight,
        adapt_in_flight: true,
        partitioner: produce::Partitioner::from_name(&settings.partitioner)
            .unwrap_or(produce::Partitioner::Murmur2Random),
        compression: settings.compression.codec(),
        // librdkafka's `batch.size` and `queue.buffering.max.messages`.
        batch_bytes: 1_000_000,
        max_records: 100_000,
        stats,
    })
}
