//! The publisher role: `SET key value` and `HSET key metadata value` become
//! Kafka records on the granted topic, stamped with the connection's color.

use std::sync::Arc;

use crate::kafka::{Delivery, Publish, Record};
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
    /// `SET key value`: the record goes to `kafka` on the connection's lane.
    pub(crate) fn set(&self, args: &[Vec<u8>], kafka: &dyn Publish) -> Result<Delivery, CommandError> {
        let [_, key, value] = args else {
            return Err(CommandError::WrongArgs("set"));
        };
        self.produce(key, value, None, kafka)
    }

    /// `HSET key metadata value`.
    pub(crate) fn hset(&self, args: &[Vec<u8>], kafka: &dyn Publish) -> Result<Delivery, CommandError> {
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
    ) -> Result<Delivery, CommandError> {
        if value.len() > self.max_value_size {
            return Err(CommandError::ValueTooLarge {
                len: value.len() as u64,
                max: self.max_value_size as u64,
            });
        }
        let record = Record::new(&self.topic, key, value).color(&self.color).metadata(metadata);
        kafka.send(&self.cluster, self.lane, &record).map_err(|e| {
            self.meter.refused(e.cause());
            CommandError::Publish(e)
        })
    }
}
