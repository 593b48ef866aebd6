//! The publisher role: `SET key value`, `HSET key metadata value` and
//! `XADD` (see `cmd/`) become Kafka records on the granted topic, stamped
//! with the connection's color, each published through [`Publisher::publish`].

use std::cell::Cell;
use std::sync::Arc;

use crate::kafka::{self, Delivered, Publish, Record};
use crate::limits::App;
use crate::metrics::PublishMeter;
use crate::resp::Frame;

use super::error::CommandError;
use super::reply::{Pending, Reply};

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
    /// Its app, whose publish rates it is held to.
    pub app: Arc<App>,
    /// More requests are buffered behind the one being handled: its record
    /// may wait for theirs, to go to Kafka in one request.
    pub more_input: bool,
    /// The last record was sent with more to follow: what the producer
    /// holds waits for [`Publisher::release`] (a record sent without
    /// more to follow releases it itself).
    pub held: Cell<bool>,
}

impl Publisher {
    /// A record of `key` and `value` on the granted topic, in the
    /// connection's color.
    pub(crate) fn record<'a>(&'a self, key: &'a [u8], value: &'a [u8]) -> Record<'a> {
        // An app with a rate may be held between two records; what came
        // before goes at once then.
        let more = self.more_input && !self.app.is_rated();
        Record::new(&self.topic, key, value).color(&self.color).more(more)
    }

    /// The client's buffered requests are all handled: its records held
    /// for the rest of its pipeline go now.
    pub(crate) fn release(&self, kafka: &dyn Publish) {
        if self.held.replace(false) {
            kafka.release(&self.cluster, self.lane);
        }
    }

    /// Publishes `record` (`size`: what counts against `max_value_size`)
    /// on the connection's lane. The reply is `render`ed from where the
    /// broker stored it, counted under `command`; a record over the size
    /// or refused by the producer is answered now.
    pub(crate) fn publish(
        &self,
        record: &Record<'_>,
        size: usize,
        kafka: &dyn Publish,
        command: &'static str,
        render: fn(&Delivered) -> Frame,
    ) -> Reply {
        if size > self.max_value_size {
            let too_large = CommandError::ValueTooLarge { len: size as u64, max: self.max_value_size as u64 };
            return Reply::Now(too_large.to_frame());
        }
        if let Err(e) = self.app.throttle(1, record.value.len() as u64) {
            return Reply::Now(CommandError::Limit(e).to_frame());
        }
        match kafka::publish(kafka, &self.cluster, self.lane, record, Some(&self.meter)) {
            Ok(sent) => {
                // The producer releases what was held at the first record
                // sent without more to follow.
                self.held.set(record.is_more());
                Reply::Publish(Box::new(Pending::new(sent, command, render)))
            }
            Err(e) => Reply::Now(CommandError::Publish(e).to_frame()),
        }
    }
}
