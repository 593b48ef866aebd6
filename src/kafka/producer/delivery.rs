//! A record's verdict on its way from the delivery report to whoever
//! waits for it: the caller holds a [`Delivery`] (look, wait, or be called
//! back), the producer a [`Reporter`], and both share one slot. A
//! [`Delivery`] keeps its producer alive and stays on the thread that sent
//! the record.

#[cfg(test)]
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::registry::ClusterProducer;
use super::reports::{never_reported, DeliveryReports};
use super::PublishError;

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A record's verdict, handed to [`Delivery::then`]: called exactly once,
/// on the thread that serves librdkafka's delivery reports (or at once on
/// the caller's, if the verdict was already in).
pub(crate) type Settle = Box<dyn FnOnce(Result<Delivered, PublishError>) + Send + Sync>;

/// Where a record's verdict meets whoever wants it: shared by its
/// [`Delivery`] and its delivery report.
#[derive(Default)]
pub(super) struct Slot {
    verdict: Mutex<Verdict>,
    settled: Condvar,
}

#[derive(Default)]
enum Verdict {
    /// Not yet in, and nobody asked to be called.
    #[default]
    Pending,
    /// Not yet in; this is to be called with it.
    Then(Settle),
    /// In, not yet taken.
    In(Result<Delivered, PublishError>),
    /// Taken, or handed to the callback.
    Gone,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Verdict> {
        self.verdict.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The verdict arrives: to the callback if there is one (outside the
    /// lock), else kept for the waiter.
    pub(super) fn settle(&self, verdict: Result<Delivered, PublishError>) {
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Verdict::Gone) {
            Verdict::Then(settle) => {
                drop(slot);
                settle(verdict);
            }
            Verdict::Pending => {
                *slot = Verdict::In(verdict);
                drop(slot);
                self.settled.notify_one();
            }
            // A second report for one record: librdkafka sends none.
            earlier => *slot = earlier,
        }
    }
}

/// The delivery report's end of a [`Slot`]. A record librdkafka drops
/// without a report (its producer destroyed with the record still queued)
/// is settled as [`PublishError::Closed`].
pub(crate) struct Reporter(pub(super) Arc<Slot>);

impl Reporter {
    /// Hands the record's verdict to whoever waits for it.
    pub(crate) fn settle(self, verdict: Result<Delivered, PublishError>) {
        self.0.settle(verdict);
    }

    /// A reporter nobody listens to, for tests of what carries reporters.
    #[cfg(test)]
    pub(crate) fn nobody() -> Reporter {
        Reporter(Arc::new(Slot::default()))
    }

    /// A reporter whose verdict is sent to `to`, for tests.
    #[cfg(test)]
    pub(crate) fn to(to: mpsc::Sender<Result<Delivered, PublishError>>) -> Reporter {
        let slot = Arc::new(Slot::default());
        *slot.lock() = Verdict::Then(Box::new(move |v| {
            let _ = to.send(v);
        }));
        Reporter(slot)
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let unsettled = matches!(*self.0.lock(), Verdict::Pending | Verdict::Then(_));
        if unsettled {
            self.0.settle(Err(PublishError::Closed));
        }
    }
}

/// A record handed to a producer, until its verdict is in: look at it
/// ([`Delivery::is_settled`]), wait for it ([`Delivery::wait`]), or have it
/// called back ([`Delivery::then`]).
///
/// It keeps the record's producer alive (a replaced producer must not cut
/// its records short), and it never leaves the thread that sent the record
/// (it is neither `Send` nor `Sync`, and a [`Settle`] must be `Send`): so
/// the thread that serves delivery reports never holds, and never drops,
/// the last reference to its own producer.
pub(crate) struct Delivery {
    slot: Arc<Slot>,
    /// When librdkafka fails the record (`message.timeout.ms`).
    deadline: Instant,
    keep: KeepAlive,
}

/// What a [`Delivery`] handed to a callback leaves its caller to hold until
/// the callback has run: the record's producer.
pub(crate) struct KeepAlive {
    producer: Option<Arc<ClusterProducer>>,
    /// The record's topic, for the error if its verdict never comes.
    topic: Box<str>,
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl KeepAlive {
    /// The error for a record whose verdict never came, as
    /// [`Delivery::wait`] gives it.
    pub(crate) fn timed_out(&self) -> PublishError {
        never_reported(reports_of(&self.producer), &self.topic)
    }
}

/// The delivery context of a record's producer; absent for test doubles.
fn reports_of(producer: &Option<Arc<ClusterProducer>>) -> Option<&DeliveryReports> {
    producer.as_ref().map(|p| &*p.reports)
}

impl Delivery {
    pub(super) fn new(
        slot: Arc<Slot>,
        deadline: Instant,
        producer: Option<Arc<ClusterProducer>>,
        topic: &str,
    ) -> Delivery {
        let keep = KeepAlive { producer, topic: topic.into(), _this_thread: std::marker::PhantomData };
        Delivery { slot, deadline, keep }
    }

    /// An already acknowledged record, for doubles of [`Publish`](super::Publish).
    #[cfg(test)]
    pub(crate) fn acknowledged(partition: i32, offset: i64) -> Delivery {
        let slot = Arc::new(Slot::default());
        slot.settle(Ok(Delivered { partition, offset }));
        Delivery::new(slot, Instant::now(), None, "")
    }

    /// A record whose verdict comes when the returned reporter is settled
    /// (or dropped), for doubles of [`Publish`](super::Publish) that answer
    /// from another thread.
    #[cfg(test)]
    pub(crate) fn pending(
        timeout: Duration,
    ) -> (Delivery, impl FnOnce(Result<Delivered, PublishError>) + Send) {
        let slot = Arc::new(Slot::default());
        let reporter = Reporter(slot.clone());
        (Delivery::new(slot, Instant::now() + timeout, None, ""), move |verdict| reporter.0.settle(verdict))
    }

    /// When the caller stops waiting for the verdict: librdkafka fails the
    /// record at its deadline, and the extra second only guards against a
    /// lost report.
    pub(crate) fn answer_by(&self) -> Instant {
        self.deadline + Duration::from_secs(1)
    }

    /// Whether the broker's verdict is in, without waiting for it.
    pub(crate) fn is_settled(&self) -> bool {
        matches!(*self.slot.lock(), Verdict::In(_))
    }

    /// Has `settle` called with the verdict: at once, here, if it is in;
    /// else on the delivery thread when it comes. Keep the [`KeepAlive`]
    /// until then.
    pub(crate) fn then(self, settle: Settle) -> KeepAlive {
        let mut slot = self.slot.lock();
        match std::mem::replace(&mut *slot, Verdict::Gone) {
            Verdict::In(verdict) => {
                drop(slot);
                settle(verdict);
            }
            _ => *slot = Verdict::Then(settle),
        }
        self.keep
    }

    /// Waits for the broker's verdict, until [`Delivery::answer_by`].
    pub(crate) fn wait(self) -> Result<Delivered, PublishError> {
        let by = self.answer_by();
        let mut slot = self.slot.lock();
        loop {
            if let Verdict::In(_) = *slot {
                let Verdict::In(verdict) = std::mem::replace(&mut *slot, Verdict::Gone) else {
                    unreachable!()
                };
                return verdict;
            }
            let left = by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.keep.timed_out());
            }
            slot = self.slot.settled.wait_timeout(slot, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    const AT: Delivered = Delivered { partition: 1, offset: 7 };

    #[test]
    fn a_delivery_is_waited_for_across_threads() {
        let (delivery, report) = Delivery::pending(Duration::from_secs(5));
        assert!(!delivery.is_settled());
        let reporter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            report(Ok(AT));
        });
        assert_eq!(delivery.wait(), Ok(AT));
        reporter.join().unwrap();
    }

    #[test]
    fn a_delivery_seen_settled_is_still_waited_for() {
        let (delivery, report) = Delivery::pending(Duration::from_secs(5));
        report(Err(PublishError::Closed));
        assert!(delivery.is_settled());
        assert!(delivery.is_settled(), "looking does not take the verdict");
        assert_eq!(delivery.wait(), Err(PublishError::Closed));
    }

    #[test]
    fn a_callback_runs_once_where_the_verdict_is() {
        let (tx, rx) = mpsc::channel();
        // Set before the verdict: runs on the reporting thread.
        let (delivery, report) = Delivery::pending(Duration::from_secs(5));
        let to = tx.clone();
        let _keep = delivery.then(Box::new(move |v| to.send((v, thread::current().id())).unwrap()));
        let reporter = thread::spawn(move || {
            report(Ok(AT));
            thread::current().id()
        });
        let reporter = reporter.join().unwrap();
        assert_eq!(rx.recv().unwrap(), (Ok(AT), reporter));
        // Set after it: runs at once, here.
        let (delivery, report) = Delivery::pending(Duration::from_secs(5));
        report(Ok(AT));
        let _keep = delivery.then(Box::new(move |v| tx.send((v, thread::current().id())).unwrap()));
        assert_eq!(rx.recv().unwrap(), (Ok(AT), thread::current().id()));
        assert!(rx.try_recv().is_err(), "each callback ran once");
    }

    #[test]
    fn a_record_dropped_without_a_report_is_closed() {
        let (tx, rx) = mpsc::channel();
        let slot = Arc::new(Slot::default());
        let delivery = Delivery::new(slot.clone(), Instant::now() + Duration::from_secs(5), None, "t");
        let _keep = delivery.then(Box::new(move |v| tx.send(v).unwrap()));
        drop(Reporter(slot));
        assert_eq!(rx.recv().unwrap(), Err(PublishError::Closed));
    }

    #[test]
    fn a_verdict_that_never_comes_times_out_after_the_grace_second() {
        let (delivery, _report) = Delivery::pending(Duration::ZERO);
        let started = Instant::now();
        assert!(matches!(delivery.wait(), Err(PublishError::Timeout { .. })));
        assert!(started.elapsed() >= Duration::from_secs(1));
    }
}
