//! What a queue consumer connection does to its group, in one place: read
//! (new entries, or its own pending ones after an ID, waiting if asked),
//! acknowledge, claim, auto-claim, and ask about the pending entries, the
//! group, its consumers and the stream. Each call takes the book's lock
//! itself and does what its change to the book implies: wakes the readers
//! when room was made, lets the group's thread fetch more when entries were
//! taken, and hands entries past their deliveries to the dead-letter
//! thread. The stream commands (`session/cmd/x*.rs`) reach their group
//! through nothing else, so none can forget one of these.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use crate::kafka::ConsumeError;

use super::book::{
    AutoClaimed, Book, ClaimOptions, ConsumerInfo, Entry, EntryId, Pending, PendingRange, PendingSummary,
};
use super::group::QueueGroup;
use super::QueueKey;

/// A queue consumer connection's hold on its group: the group's member
/// lingers after the last one is dropped.
pub(crate) struct Attached {
    group: Arc<QueueGroup>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.group.shared.attached.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a read may wait for entries.
pub(crate) struct Wait<F: Fn() -> bool> {
    /// `None`: it answers at once.
    pub until: Option<Instant>,
    /// The longest wait between two looks at `stop`.
    pub tick: Duration,
    /// Whether to give up: the client left, or the server wants the
    /// connection to end.
    pub stop: F,
}

/// What `XINFO GROUPS` shows of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupInfo {
    pub consumers: usize,
    pub pending: usize,
    /// `0-0` before the first `>` read.
    pub last_delivered: EntryId,
    pub entries_read: u64,
    /// Entries not handed out yet; `None` when the brokers did not say.
    pub lag: Option<i64>,
}

/// What `XINFO STREAM` shows of the topic: its records still kept, how many
/// were ever written, and the last one's ID (`0-0` when none was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamInfo {
    pub length: i64,
    pub entries_added: i64,
    pub last_generated: EntryId,
}

impl Attached {
    /// Counts a connection on `group` until the hold is dropped.
    pub(super) fn new(group: Arc<QueueGroup>) -> Attached {
        group.shared.attached.fetch_add(1, Ordering::SeqCst);
        Attached { group }
    }

    /// Which group it holds.
    pub(crate) fn key(&self) -> &QueueKey {
        &self.group.key
    }

    /// Why librdkafka gave the group's member up, if it did: the group has
    /// stopped, and the connection should end.
    pub(crate) fn fatal(&self) -> Option<ConsumeError> {
        self.group.shared.fatal()
    }

    /// `XREADGROUP ... >`: up to `count` entries for `consumer` (see
    /// [`Book::deliver`]), waiting as `wait` says while there are none. What
    /// passed its deliveries goes to the dead-letter topic, and a read that
    /// met only such entries waits on for others.
    pub(crate) fn read_new<F: Fn() -> bool>(
        &self,
        consumer: &str,
        count: usize,
        no_ack: bool,
        wait: Wait<F>,
    ) -> Vec<Arc<Entry>> {
        loop {
            let handed = self.wait_for(&wait, |book| {
                let h = book.deliver(consumer, count, no_ack, Instant::now());
                (!h.entries.is_empty() || !h.dead.is_empty()).then_some(h)
            });
            let handed = handed.unwrap_or_default();
            if !handed.entries.is_empty() {
                self.group.taken();
                // Acknowledged as handed out: room for the other readers.
                if no_ack {
                    self.group.notify();
                }
            }
            let only_dead = handed.entries.is_empty() && !handed.dead.is_empty();
            self.group.dead_letter(handed.dead);
            if only_dead && wait.until.is_some_and(|u| Instant::now() < u) {
                continue;
            }
            return handed.entries;
        }
    }

    /// Waits on the book until `take` hands something out, `wait.until`
    /// passes, or `wait.stop` says to give up; `take` runs under the book's
    /// lock.
    fn wait_for<T, F: Fn() -> bool>(
        &self,
        wait: &Wait<F>,
        mut take: impl FnMut(&mut Book) -> Option<T>,
    ) -> Option<T> {
        let mut book = self.group.shared.book();
        loop {
            if let Some(got) = take(&mut book) {
                return Some(got);
            }
            let now = Instant::now();
            let until = wait.until.filter(|u| *u > now)?;
            book = self.group.wait(book, (until - now).min(wait.tick));
            if (wait.stop)() {
                drop(book);
                return None;
            }
        }
    }

    /// `XREADGROUP` with an ID: `consumer`'s own pending entries after
    /// `after` (see [`Book::history`]).
    pub(crate) fn read_pending(&self, consumer: &str, after: EntryId, count: usize) -> Vec<Arc<Entry>> {
        self.group.shared.book().history(consumer, after, count, Instant::now())
    }

    /// `XACK`: how many of `ids` were pending; their room wakes the readers.
    pub(crate) fn ack(&self, ids: &[EntryId]) -> usize {
        let acked = self.group.shared.book().ack(ids);
        if acked > 0 {
            self.group.notify();
        }
        acked
    }

    /// `XCLAIM`: the entries of `ids` idle at least `min_idle` that became
    /// `consumer`'s; those past their deliveries went to the dead-letter
    /// topic instead and are left out.
    pub(crate) fn claim(
        &self,
        consumer: &str,
        min_idle: Duration,
        ids: &[EntryId],
        options: ClaimOptions,
        now: Instant,
    ) -> Vec<Arc<Entry>> {
        let handed = self.group.shared.book().claim(consumer, min_idle, ids, options, now);
        self.group.dead_letter(handed.dead);
        handed.entries
    }

    /// `XAUTOCLAIM`: up to `count` entries idle at least `min_idle`, from
    /// `start` on, for `consumer`; `handed.dead` went to the dead-letter
    /// topic instead.
    pub(crate) fn auto_claim(
        &self,
        consumer: &str,
        min_idle: Duration,
        start: EntryId,
        count: usize,
        options: ClaimOptions,
    ) -> AutoClaimed {
        let claimed =
            self.group.shared.book().auto_claim(consumer, min_idle, start, count, options, Instant::now());
        self.group.dead_letter(claimed.handed.dead.clone());
        claimed
    }

    /// `XPENDING <topic> <group>`.
    pub(crate) fn pending_summary(&self) -> PendingSummary {
        self.group.shared.book().summary()
    }

    /// `XPENDING` with a range.
    pub(crate) fn pending(&self, range: &PendingRange) -> Vec<Pending> {
        self.group.shared.book().pending_range(range)
    }

    /// `XINFO GROUPS`; the lag is asked of the brokers before the book's
    /// lock is taken.
    pub(crate) fn group_info(&self) -> GroupInfo {
        let lag = self.group.lag();
        let book = self.group.shared.book();
        GroupInfo {
            consumers: book.consumer_count(),
            pending: book.pending_len(),
            last_delivered: book.last_delivered().unwrap_or(EntryId::MIN),
            entries_read: book.entries_read(),
            lag,
        }
    }

    /// `XINFO CONSUMERS`.
    pub(crate) fn consumers(&self) -> Vec<ConsumerInfo> {
        self.group.shared.book().consumers()
    }

    /// `XGROUP CREATECONSUMER`: whether `consumer` is new.
    pub(crate) fn create_consumer(&self, consumer: &str) -> bool {
        self.group.shared.book().create_consumer(consumer, Instant::now())
    }

    /// `XINFO STREAM`, from the topic's watermarks.
    pub(crate) fn stream_info(&self) -> Result<StreamInfo, KafkaError> {
        let marks = self.group.watermarks()?;
        Ok(StreamInfo {
            length: marks.iter().map(|(_, low, high)| high - low).sum(),
            entries_added: marks.iter().map(|(_, _, high)| high).sum(),
            last_generated: marks
                .iter()
                .filter(|(_, _, high)| *high > 0)
                .map(|(p, _, high)| EntryId::of(*p, high - 1))
                .max()
                .unwrap_or(EntryId::MIN),
        })
    }
}
