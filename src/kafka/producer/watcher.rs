//! A producer's watcher, so that a refusal or a stall does not cost the
//! caller the produce timeout to learn about.
//!
//! When the brokers refuse the producer (its SASL login or the TLS
//! handshake), waiting out the produce timeout helps nobody: the records it
//! holds are purged from its queue at once (never sent, so surely not
//! written) and answered with the broker's reason, and until the brokers
//! answer it again a new record is answered so without being queued.
//!
//! When its records stall, a producer looks at the partitions it writes to
//! (`health.rs`), so that a record that then times out says why: a leader
//! or an in-sync replica unreachable, an ISR below the replicas.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::producer::{Producer, PurgeConfig};

use super::registry::{ClusterProducer, Producing};
use super::reports::Wake;

/// How often a refused producer asks the brokers for metadata, to learn
/// that they accept it again (librdkafka connects only on demand, and a
/// refused producer holds no records that would make one).
const REFUSED_RECHECK: Duration = Duration::from_secs(1);

/// How often a producer's watcher checks that its records still move: when
/// records are in flight and none was acknowledged over one such period,
/// it looks at the health of the partitions it writes to.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// A thread per producer, apart from the delivery thread (which must never
/// drop the last reference): it holds the producer weakly and ends with it.
///
/// - Each time the brokers refuse the producer it purges the records waiting
///   in its queue: none was sent, so each is answered with the refusal at
///   once (by its delivery report) instead of at the produce timeout. While
///   refused, it asks for metadata every [`REFUSED_RECHECK`] and ends the
///   refusal once the brokers answer.
/// - When records are in flight and none was acknowledged for a
///   [`STALL_CHECK`], and when a record times out, it looks at the health of
///   the topics concerned (each at most once per [`STALL_CHECK`]), for the
///   errors of the records that time out next.
pub(super) fn spawn_watcher(producer: &Arc<ClusterProducer>, wakes: Receiver<Wake>) {
    let weak = Arc::downgrade(producer);
    let spawned = thread::Builder::new().name("databus-watcher".into()).spawn(move || {
        let mut watch = Watch { next_check: Instant::now() + STALL_CHECK, acknowledged: 0 };
        loop {
            let Some(refused) = weak.upgrade().map(|p| p.is_refused()) else {
                return;
            };
            let wait = if refused {
                REFUSED_RECHECK
            } else {
                watch.next_check.saturating_duration_since(Instant::now())
            };
            let event = wakes.recv_timeout(wait);
            let Some(producer) = weak.upgrade() else { return };
            let reports = &producer.reports;
            // A refusal is served first, and stops a look at the health.
            purge_if_refused(&producer);
            let refusal = || reports.purge.load(Ordering::Relaxed);
            match event {
                Ok(Wake::Refused) => {}
                Ok(Wake::TimedOut(topic)) => reports.health.look(vec![topic], STALL_CHECK, &refusal),
                Err(RecvTimeoutError::Timeout) if refused => {
                    if let Producing::Librdkafka(kafka) = &producer.engine {
                        if kafka.client().fetch_metadata(None, REFUSED_RECHECK).is_ok() {
                            reports.errors.accepted();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if watch.stalled(&producer) {
                        reports.health.look(reports.health.topics(), STALL_CHECK, &refusal);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            purge_if_refused(&producer);
        }
    });
    if let Err(e) = spawned {
        log::warn!("cannot start the watcher of a producer ({e}): refused records wait for their timeout");
    }
}

/// Purges the producer's queue if the brokers refused it since the last
/// purge: none of those records was sent.
fn purge_if_refused(producer: &ClusterProducer) {
    if let Producing::Librdkafka(kafka) = &producer.engine {
        if producer.reports.purge.swap(false, Ordering::Relaxed) {
            kafka.purge(PurgeConfig::default().queue());
        }
    }
}

/// What a producer's watcher remembers between checks.
struct Watch {
    next_check: Instant,
    /// Records acknowledged at the last check.
    acknowledged: u64,
}

impl Watch {
    /// Whether, since the last check, records were in flight and none was
    /// acknowledged; schedules the next check.
    fn stalled(&mut self, producer: &ClusterProducer) -> bool {
        self.next_check = Instant::now() + STALL_CHECK;
        let acknowledged = producer.reports.acknowledged.load(Ordering::Relaxed);
        let stalled = acknowledged == self.acknowledged && producer.in_flight() > 0;
        self.acknowledged = acknowledged;
        stalled
    }
}
