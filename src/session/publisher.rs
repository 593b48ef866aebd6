//! The publisher role: `SET key value` and `HSET key metadata value` (see
//! `cmd/`) become Kafka records on the granted topic, stamped with the
//! connection's color.

use std::sync::Arc;

use crate::kafka::{Delivery, Publish, Record};
use crate::metrics::PublishMeter;

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
    /// Produces `key value` (and `metadata`, from HSET) on the
    /// connection's lane, its verdict to come.
    pub(crate) fn produce(
        &self,
        key: &[u8],
        value: &[u8],
        metadata: Option<&[u8]>,
        kafka: &dyn Publish,
    ) -> Result<Delivery, CommandError> {
        let record = Record::new(&self.topic, key, value).color(&self.color).metadata(metadata);
        self.send(&record, value.len(), kafka)
    }

    /// Produces `XADD`'s record: its `key` (none: spread by the
    /// partitioner), `value` and the other fields as headers.
    pub(crate) fn produce_fields(
        &self,
        key: Option<&[u8]>,
        value: &[u8],
        fields: &[(String, Vec<u8>)],
        kafka: &dyn Publish,
    ) -> Result<Delivery, CommandError> {
        let size = value.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let record =
            Record::new(&self.topic, key.unwrap_or_default(), value).color(&self.color).fields(fields);
        let record = if key.is_none() { record.keyless() } else { record };
        self.send(&record, size, kafka)
    }

    fn send(&self, record: &Record<'_>, size: usize, kafka: &dyn Publish) -> Result<Delivery, CommandError> {
        if size > self.max_value_size {
            return Err(CommandError::ValueTooLarge { len: size as u64, max: self.max_value_size as u64 });
        }
        kafka.send(&self.cluster, self.lane, record).map_err(|e| {
            self.meter.refused(e.cause());
            CommandError::Publish(e)
        })
    }
}
