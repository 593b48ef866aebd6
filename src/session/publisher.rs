//! The publisher role: `SET key value` and `HSET key metadata value` become
//! Kafka records on the granted topic, stamped with the connection's color.

use std::sync::Arc;

use crate::kafka::{KeepAlive, OutRecord, PendingDelivery, Publish, PublishError, Settle};
use crate::metrics::PublishMeter;
use crate::proto::decode_metadata;

use super::error::CommandError;

/// A connection authenticated with `role=pub`.
pub(crate) struct Publisher {
    pub cluster: String,
    pub topic: String,
    pub color: String,
    pub max_value_size: usize,
    /// Which of the cluster's producers this connection's records use.
    pub lane: usize,
    /// Where its records are counted.
    pub meter: Arc<PublishMeter>,
}

impl Publisher {
    /// `SET key value`: the record goes to `send` (see [`Publisher::enqueue`]).
    pub(crate) fn set<T>(&self, args: &[Vec<u8>], send: impl Enqueue<T>) -> Result<T, CommandError> {
        let [_, key, value] = args else {
            return Err(CommandError::WrongArgs("set"));
        };
        self.produce(key, value, None, send)
    }

    /// `HSET key metadata value`.
    pub(crate) fn hset<T>(&self, args: &[Vec<u8>], send: impl Enqueue<T>) -> Result<T, CommandError> {
        let [_, key, metadata, value] = args else {
            return Err(CommandError::WrongArgs("hset"));
        };
        if decode_metadata(metadata).is_none() {
            return Err(CommandError::BadMetadata);
        }
        self.produce(key, value, Some(metadata), send)
    }

    /// Enqueues a record on the connection's lane, its reply to be waited
    /// for.
    pub(crate) fn enqueue<'a>(&'a self, kafka: &'a dyn Publish) -> impl Enqueue<PendingDelivery> + 'a {
        move |record: &OutRecord<'_>| kafka.publish(&self.cluster, self.lane, record)
    }

    /// Enqueues a record on the connection's lane, `settle` to be called
    /// with its verdict.
    pub(crate) fn enqueue_then<'a>(
        &'a self,
        kafka: &'a dyn Publish,
        settle: Settle,
    ) -> impl Enqueue<KeepAlive> + 'a {
        move |record: &OutRecord<'_>| kafka.publish_then(&self.cluster, self.lane, record, settle)
    }

    fn produce<T>(
        &self,
        key: &[u8],
        value: &[u8],
        metadata: Option<&[u8]>,
        send: impl Enqueue<T>,
    ) -> Result<T, CommandError> {
        if value.len() > self.max_value_size {
            return Err(CommandError::ValueTooLarge {
                len: value.len() as u64,
                max: self.max_value_size as u64,
            });
        }
        let color = ("color", self.color.as_bytes());
        let with_metadata;
        let headers: &[(&str, &[u8])] = match metadata {
            Some(m) => {
                with_metadata = [color, ("metadata", m)];
                &with_metadata
            }
            None => std::slice::from_ref(&color),
        };
        let record = OutRecord { topic: &self.topic, key, value, headers };
        send(&record).map_err(|e| {
            self.meter.refused(e.cause());
            CommandError::Publish(e)
        })
    }
}

/// How a publisher's record is handed to Kafka.
pub(crate) trait Enqueue<T>: FnOnce(&OutRecord<'_>) -> Result<T, PublishError> {}
impl<T, F: FnOnce(&OutRecord<'_>) -> Result<T, PublishError>> Enqueue<T> for F {}
