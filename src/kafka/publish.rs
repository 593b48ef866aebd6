//! The one way a record is published, whoever publishes it: a publisher's
//! `SET`, `HSET` and `XADD`, HTTP publish, and queue mode's dead letters.
//! [`publish`] hands the record to its cluster's producer and counts it in
//! the publisher's meter (if it has one) exactly once: a refusal at once,
//! the broker's verdict when it comes, however the caller waits for it.

use std::sync::Arc;
use std::time::Instant;

use super::{Delivered, Delivery, Publish, PublishError, Record};
use crate::metrics::PublishMeter;

/// Produces `record` on `cluster` through `lane`'s producer.
pub(crate) fn publish(
    kafka: &dyn Publish,
    cluster: &str,
    lane: usize,
    record: &Record<'_>,
    meter: Option<&Arc<PublishMeter>>,
) -> Result<Sent, PublishError> {
    let count = Count { meter: meter.cloned(), started: Instant::now(), value_len: record.value.len() };
    match kafka.send(cluster, lane, record) {
        Ok(delivery) => Ok(Sent { delivery, count }),
        Err(e) => {
            if let Some(meter) = &count.meter {
                meter.refused(e.cause());
            }
            Err(e)
        }
    }
}

/// A published record whose verdict is still to come.
pub(crate) struct Sent {
    delivery: Delivery,
    count: Count,
}

/// What a record counts once its verdict is in; given to whoever receives
/// the verdict (see [`Sent::split`]).
#[derive(Clone)]
pub(crate) struct Count {
    meter: Option<Arc<PublishMeter>>,
    started: Instant,
    value_len: usize,
}

impl Count {
    /// Counts the verdict: the latency, and the record or its failure.
    pub(crate) fn verdict(&self, verdict: &Result<Delivered, PublishError>) {
        if let Some(meter) = &self.meter {
            meter.finish(self.started, self.value_len, verdict.as_ref().err().map(PublishError::cause));
        }
    }

    /// Counts the command that published the record, answered with `error_code`.
    pub(crate) fn command(&self, label: &'static str, error_code: Option<&str>) {
        if let Some(meter) = &self.meter {
            meter.command(label, error_code);
        }
    }
}

impl Sent {
    /// A record sent by a test's double, counted nowhere.
    #[cfg(test)]
    pub(crate) fn of(delivery: Delivery) -> Sent {
        Sent { delivery, count: Count { meter: None, started: Instant::now(), value_len: 0 } }
    }

    /// Waits for the verdict (see [`Delivery::wait`]), counted.
    pub(crate) fn wait(self) -> Result<Delivered, PublishError> {
        let verdict = self.delivery.wait();
        self.count.verdict(&verdict);
        verdict
    }

    /// The delivery and what it counts, for a caller that has the verdict
    /// called back ([`Delivery::then`]) and counts it there, or counts a
    /// verdict that never came ([`KeepAlive::timed_out`]).
    pub(crate) fn split(self) -> (Delivery, Count) {
        (self.delivery, self.count)
    }
}
