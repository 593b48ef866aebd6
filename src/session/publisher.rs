//! The publisher role: `SET key value` and `HSET key metadata value` become
//! Kafka records on the granted topic, stamped with the connection's color.

use std::sync::Arc;

use crate::kafka::{OutRecord, PendingDelivery, Publish};
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
    /// `SET key value`.
    pub(crate) fn set(&self, args: &[Vec<u8>], kafka: &dyn Publish) -> Result<PendingDelivery, CommandError> {
        let [_, key, value] = args else {
            return Err(CommandError::WrongArgs("set"));
        };
        self.produce(key, value, None, kafka)
    }

    /// `HSET key metadata value`.
    pub(crate) fn hset(
        &self,
        args: &[Vec<u8>],
        kafka: &dyn Publish,
    ) -> Result<PendingDelivery, CommandError> {
        let [_, key, metadata, value] = args else {
            return Err(CommandError::WrongArgs("hset"));
        };
        if decode_metadata(metadata).is_none() {
            return Err(CommandError::BadMetadata);
        }
        self.produce(key, value, Some(metadata), kafka)
    }

    fn produce(
        &self,
        key: &[u8],
        value: &[u8],
        metadata: Option<&[u8]>,
        kafka: &dyn Publish,
    ) -> Result<PendingDelivery, CommandError> {
        if value.len() > self.max_value_size {
            return Err(CommandError::ValueTooLarge { len: value.len(), max: self.max_value_size });
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
        kafka.publish(&self.cluster, self.lane, &record).map_err(|e| {
            self.meter.refused(e.cause());
            CommandError::Publish(e)
        })
    }
}
