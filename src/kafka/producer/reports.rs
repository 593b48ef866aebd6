//! Where both engines report: one `DeliveryReports` per producer, the
//! context of librdkafka's producer and the `produce::Context` of
//! databus's own. It turns a delivery report into the record's verdict
//! (a timeout that says why, a refusal, a denial), keeps the last broker
//! error, tells the partitions' [`Health`] what is written and
//! acknowledged, and wakes the producer's watcher.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{ClientContext, Message};

use super::delivery::{Delivered, Reporter};
use super::error::{rejected, PublishError, Refusal};
use crate::kafka::broker_errors::BrokerErrors;
use crate::kafka::health::Health;
use crate::kafka::produce;

/// One in this many acknowledged records tells the producer's [`Health`]
/// its topic (a timed-out record always does): enough to know the topics in
/// use, without a lock per record.
const TOPIC_SAMPLE: u64 = 64;

const TIMED_OUT: KafkaError = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
const PURGED: KafkaError = KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue);

/// A delivery report of a record for `topic` as databus answers it: a
/// record librdkafka gave up on at the produce timeout is a timeout that
/// says why, if it knows; one purged because the brokers refused the
/// producer is that refusal.
fn judge(
    reports: &DeliveryReports,
    topic: &str,
    partition: i32,
    report: Result<Delivered, KafkaError>,
) -> Result<Delivered, PublishError> {
    match report {
        Ok(d) => Ok(d),
        Err(TIMED_OUT) => Err(timed_out(Some(reports), reports.health.of(topic, partition))),
        Err(PURGED) => {
            Err(reports
                .refusal(reports.errors.refusal().or_else(|| reports.errors.get()).unwrap_or_default()))
        }
        Err(e) => Err(rejected(e, topic)),
    }
}

/// The error of a record that was not acknowledged within the produce
/// timeout, with what is known of its partition and the last broker error
/// its producer saw.
fn timed_out(reports: Option<&DeliveryReports>, partition: Option<String>) -> PublishError {
    match reports {
        Some(r) => PublishError::Timeout {
            cluster: r.cluster.clone(),
            ms: r.timeout.as_millis(),
            partition,
            cause: r.errors.get(),
        },
        None => PublishError::Timeout { cluster: String::new(), ms: 0, partition, cause: None },
    }
}

/// The error of a record for `topic` whose delivery report did not come
/// within a second after its timeout: its partition is not known, so it
/// says what is known of the topic's.
pub(super) fn never_reported(reports: Option<&DeliveryReports>, topic: &str) -> PublishError {
    timed_out(reports, reports.and_then(|r| r.health.of_topic(topic)))
}

pub(super) struct DeliveryReports {
    pub(super) errors: BrokerErrors,
    /// The cluster and produce timeout, for the errors of timed-out records.
    pub(super) cluster: String,
    pub(super) timeout: Duration,
    /// Wakes the producer's watcher (see [`spawn_watcher`](super::watcher::spawn_watcher)).
    pub(super) wake: SyncSender<Wake>,
    /// The brokers refused the producer since its watcher last purged.
    pub(super) purge: AtomicBool,
    /// Records acknowledged so far, for the watcher to see a stall.
    pub(super) acknowledged: AtomicU64,
    /// What is known of the partitions the cluster's producers write to
    /// (one per cluster, shared by its lanes).
    pub(super) health: Arc<Health>,
}

/// What wakes a producer's watcher before its next check.
pub(super) enum Wake {
    /// The brokers refused the producer: purge its queue (see
    /// `DeliveryReports::purge`).
    Refused,
    /// A record for this topic timed out.
    TimedOut(String),
}

impl ClientContext for DeliveryReports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if self.errors.log(level, fac, message) {
            self.refused();
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.errors.record(&error, reason) {
            self.refused();
        }
    }
}

impl DeliveryReports {
    /// Asks the watcher to purge the queue (a flag, so that no wake-up of
    /// another kind crowds it out).
    fn refused(&self) {
        self.purge.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(Wake::Refused);
    }

    /// A record for `topic` timed out: the watcher looks at the topic's
    /// health, for the errors of the records that time out next.
    fn timed_out_in(&self, topic: &str) {
        self.health.wrote_to(topic);
        let _ = self.wake.try_send(Wake::TimedOut(topic.to_owned()));
    }

    pub(super) fn refusal(&self, reason: String) -> PublishError {
        PublishError::Refused { cluster: self.cluster.clone(), reason }
    }
}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = Box<Reporter>;

    fn delivery(&self, result: &DeliveryResult<'_>, reporter: Box<Reporter>) {
        let (report, topic, partition) = match result {
            Ok(m) => {
                produce::Context::acknowledged(self, m.topic(), m.partition());
                (Ok(Delivered { partition: m.partition(), offset: m.offset() }), m.topic(), m.partition())
            }
            Err((e, m)) => {
                if *e == TIMED_OUT {
                    self.timed_out_in(m.topic());
                }
                (Err(e.clone()), m.topic(), m.partition())
            }
        };
        // The waiter may have given up already: the verdict is then dropped
        // with the slot.
        reporter.0.settle(judge(self, topic, partition, report));
    }
}

/// databus's own producer reports to the same context as librdkafka's.
impl produce::Context for DeliveryReports {
    fn acknowledged(&self, topic: &str, partition: i32) {
        self.errors.accepted();
        if self.acknowledged.fetch_add(1, Ordering::Relaxed) % TOPIC_SAMPLE == 0 {
            self.health.wrote_to(topic);
        }
        self.health.acknowledged(topic, partition);
    }

    fn failed(&self, failure: produce::Failure) -> PublishError {
        match failure {
            produce::Failure::Timeout { topic, partition } => {
                self.timed_out_in(&topic);
                let known = match partition {
                    Some(p) => self.health.of(&topic, p),
                    None => self.health.of_topic(&topic),
                };
                timed_out(Some(self), known)
            }
            // TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED
            produce::Failure::Rejected { topic, code: 29 | 31, message } => {
                PublishError::Denied { topic, cause: Refusal(message) }
            }
            produce::Failure::Rejected { message, .. } => PublishError::Rejected(Refusal(message)),
            produce::Failure::Refused(reason) => self.refusal(reason),
        }
    }

    fn broker_error(&self, error: &str) {
        self.errors.note(error);
    }

    fn accepted(&self) {
        self.errors.accepted();
    }
}
