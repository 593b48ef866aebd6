//! The group's thread: polls the shared member into the book in batches,
//! holds back while the readers have plenty, reports to `/metrics`, leaves
//! the group once nobody attached for `queue.linger_ms`, and stops the
//! group when librdkafka gives the member up.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};

use crate::kafka::consumer::{gave_up, Membership};
use crate::kafka::Cluster;
use crate::metrics::QueueMeter;

use super::book::{Book, Entry, EntryId};
use super::commits::QueueContext;
use super::group::Shared;
use super::{QueueKey, Queues, HOUSEKEEPING};

/// Most entries, and bytes, taken from librdkafka ahead of the readers.
/// Above either, the group's thread takes one record per housekeeping
/// tick (so librdkafka's rebalances and poll interval are still served)
/// and librdkafka's own prefetch bound (`queued.min.messages`) holds the
/// rest. Pausing the partitions instead was measured: librdkafka drops its
/// queue on a pause and refetches on resume, which stalled reads for up to
/// 0.8 s (45k entries/s against 165k without).
const PREFETCH: usize = 10_000;
const PREFETCH_BYTES: usize = 16 << 20;
/// Records taken from librdkafka per lock of the book.
const POLL_BATCH: usize = 500;

/// The group's thread.
pub(super) struct Poller {
    pub(super) consumer: Arc<BaseConsumer<QueueContext>>,
    pub(super) shared: Arc<Shared>,
    pub(super) key: QueueKey,
    pub(super) color: Vec<u8>,
    pub(super) linger: Duration,
    pub(super) registry: Weak<Queues>,
    /// The cluster's settings, to tell why librdkafka gave the member up.
    pub(super) cluster: Cluster,
    pub(super) meter: QueueMeter,
    /// The periodic commits' thread, joined when the group stops.
    pub(super) committer: Option<thread::JoinHandle<()>>,
    // Uncounted once the thread ends, after the consumer has left.
    pub(super) _membership: Membership,
}

impl Poller {
    pub(super) fn run(mut self) {
        let mut last_housekeeping = Instant::now();
        let mut alone_since: Option<Instant> = None;
        while !self.shared.stop.load(Ordering::SeqCst) {
            self.poll_batch();
            if last_housekeeping.elapsed() < HOUSEKEEPING {
                continue;
            }
            last_housekeeping = Instant::now();
            self.report(false);
            if self.shared.attached.load(Ordering::SeqCst) > 0 {
                alone_since = None;
            } else if alone_since.get_or_insert_with(Instant::now).elapsed() >= self.linger && self.leave() {
                break;
            }
        }
        // Also when the registry is gone (`leave`): the committer ends with
        // the stop's commit of the whole state.
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        self.report(true);
        self.consumer.unsubscribe();
        log::info!("queue group '{}' on '{}' left", self.key.group, self.key.topic);
    }

    /// Hands the book's numbers to `/metrics`; none pending once `left`
    /// (the next member hands those entries out again).
    fn report(&self, left: bool) {
        let (pending, counts) = {
            let book = self.shared.book();
            (if left { 0 } else { book.pending_len() }, book.counts())
        };
        self.meter.set(pending, counts.totals(), self.shared.commit_failures.load(Ordering::Relaxed));
    }

    /// Takes the group out of the registry if still nobody is attached
    /// (checked under the registry's lock, which attaching holds too).
    fn leave(&self) -> bool {
        let Some(registry) = self.registry.upgrade() else { return true };
        let mut groups = registry.lock();
        if self.shared.attached.load(Ordering::SeqCst) > 0 {
            return false;
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        groups.remove(&self.key);
        true
    }

    /// Polls what librdkafka has fetched, up to `POLL_BATCH` records (the
    /// first wait up to `HOUSEKEEPING`), and takes them into the book under
    /// one lock, with one wake-up.
    fn poll_batch(&self) {
        let full = |b: &Book| b.ready_len() >= PREFETCH || b.ready_bytes() >= PREFETCH_BYTES;
        let half = |b: &mut Book| b.ready_len() >= PREFETCH / 2 || b.ready_bytes() >= PREFETCH_BYTES / 2;
        let mut book = self.shared.book();
        if full(&book) {
            // Until the readers have taken half, or a tick passes.
            book = match self.shared.room.wait_timeout_while(book, HOUSEKEEPING, half) {
                Ok((b, _)) => b,
                Err(e) => e.into_inner().0,
            };
        }
        let (limit, mut timeout) = match full(&book) {
            true => (1, Duration::ZERO),
            false => (POLL_BATCH, HOUSEKEEPING),
        };
        drop(book);
        let mut batch = Vec::new();
        while batch.len() < limit {
            match self.consumer.poll(timeout) {
                Some(Ok(m)) => batch.push(self.entry_of(&m)),
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    self.gave_up(code);
                    break;
                }
                Some(Err(e)) => {
                    log::debug!("queue group on '{}': {e}", self.key.topic);
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }
        if batch.is_empty() {
            return;
        }
        let mut book = self.shared.book();
        let mut added = false;
        for polled in batch {
            match polled {
                Ok(entry) => added |= book.push(entry),
                Err((partition, offset)) => book.skip(partition, offset),
            }
        }
        if added {
            self.shared.more.notify_all();
        }
    }

    /// librdkafka gave the member up (`code`): the group stops and leaves
    /// the registry, so the next stream command of any connection joins
    /// anew; its readers are told why (see [`Shared::fatal`]).
    fn gave_up(&self, code: rdkafka::error::RDKafkaErrorCode) {
        let who = format!("queue group '{}' on '{}'", self.key.group, self.key.topic);
        let e = gave_up(&self.key.cluster, &self.cluster, self.consumer.client(), code, &who);
        *self.shared.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(registry) = self.registry.upgrade() {
            registry.lock().remove(&self.key);
        }
        self.shared.more.notify_all();
    }

    /// A record as an entry, or `Err` with its place when it is not for
    /// this group (another color).
    fn entry_of(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Result<Entry, (i32, i64)> {
        let mut color: &[u8] = b"";
        let mut kept = Vec::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                if h.key == "color" {
                    color = h.value.unwrap_or_default();
                } else {
                    kept.push((h.key.to_owned(), h.value.unwrap_or_default().to_vec()));
                }
            }
        }
        if color != self.color.as_slice() {
            return Err((m.partition(), m.offset()));
        }
        Ok(Entry {
            id: EntryId::of(m.partition(), m.offset()),
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().unwrap_or_default().to_vec(),
            headers: kept,
        })
    }
}
