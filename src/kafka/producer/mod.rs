//! Publishing. One idempotent producer per cluster lane, shared by the
//! publisher connections of that cluster: databus's own (`produce/`, one
//! produce request per broker) or librdkafka's (`producer.engine`); both
//! report to one `DeliveryReports` and settle the same [`Delivery`].
//! [`Publish::send`] only enqueues a [`Record`]; the caller holds the
//! [`Delivery`] and waits on it
//! (or has it call back) before replying, so a pipelined burst is produced
//! concurrently and still answered in order. RESP and HTTP publish alike.
//!
//! `config.rs` holds the producer settings and each engine's configuration;
//! `registry.rs` [`Producers`], one producer per cluster and lane;
//! `delivery.rs` a record's verdict on its way to the caller;
//! `reports.rs` the delivery reports of both engines, made verdicts;
//! `watcher.rs` the thread that answers a refused producer's records at
//! once and learns why stalled ones stall; `error.rs` [`PublishError`].

mod config;
mod delivery;
mod error;
mod registry;
mod reports;
mod watcher;

pub(crate) use self::config::{producer_config, Compression, Engine, ProducerSettings};
pub(crate) use self::delivery::{Delivered, Delivery, KeepAlive, Reporter};
pub(crate) use self::error::PublishError;
#[cfg(test)]
pub(crate) use self::error::Refusal;
pub(crate) use self::registry::Producers;

/// Where publishers send records; a trait so command logic can be tested
/// without a broker.
pub(crate) trait Publish: Send + Sync {
    /// Enqueues `record` for `cluster`. Every record of one `lane` (a
    /// connection) goes through the same producer, so their order holds.
    fn send(&self, cluster: &str, lane: usize, record: &Record<'_>) -> Result<Delivery, PublishError>;

    /// The records `lane` sent with more to follow ([`Record::more`]) are
    /// all in: whatever waits for them goes now.
    fn release(&self, _cluster: &str, _lane: usize) {}
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
    /// The same client sends more records at once (the rest of a
    /// pipeline): the producer may wait for them, until
    /// [`Publish::release`], to send them in one request.
    more: bool,
}

impl<'a> Record<'a> {
    pub(crate) fn new(topic: &'a str, key: &'a [u8], value: &'a [u8]) -> Record<'a> {
        Record { topic, key, value, color: b"", metadata: None, fields: &[], keyless: false, more: false }
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

    pub(crate) fn more(self, more: bool) -> Record<'a> {
        Record { more, ..self }
    }

    pub(crate) fn is_more(&self) -> bool {
        self.more
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
