//! Queue mode: Redis Streams consumer groups over Kafka. All queue
//! consumers of one (cluster, group, topic) on this databus share one Kafka
//! group member, a [`QueueGroup`] (`group.rs`), and its book (`book.rs`:
//! the entries fetched and not yet handed out, the pending entries list,
//! the consumers).
//! Consumers may outnumber partitions: they are names in the book, not
//! Kafka members. Three threads serve a group: `queue-` polls Kafka into
//! the book (`poller.rs`), `commit-` commits per partition the offset below
//! which every entry is acknowledged (`commits.rs`), `dlq-` produces the
//! entries past their deliveries to the dead-letter topic
//! (`dead_letters.rs`). A connection reads, acknowledges and claims through
//! its [`Attached`] (`attached.rs`); the stream commands themselves are in
//! `session/cmd/x*.rs`. This file: the registry of this databus's groups
//! ([`Queues`]), which attaches a connection to its group, making the
//! group if it is the first.
//!
//! Why a thread per group, not polling from the readers: a thousand idle
//! consumers then wait on one condition variable, and librdkafka is polled
//! (its rebalances served, its poll interval kept) whether anyone reads.

mod attached;
mod book;
mod commits;
mod dead_letters;
mod entry;
mod group;
mod poller;
mod settings;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::kafka::ConsumeError;

pub(crate) use attached::{Attached, Wait};
pub(crate) use book::{AutoClaimed, ClaimOptions, Entry, EntryId, PendingRange};
pub(crate) use group::{JoinWith, QueueGroup};
pub(crate) use settings::{QueueSettings, RawQueue, KEYS};

/// Which group member a queue consumer shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct QueueKey {
    pub cluster: String,
    /// The Kafka group: the auth group, or `<group>-<color>`.
    pub group: String,
    pub topic: String,
    /// Only records with this `color` header are entries.
    pub color: String,
}

/// The queue groups of this databus.
#[derive(Default)]
pub(crate) struct Queues {
    groups: Mutex<HashMap<QueueKey, Arc<QueueGroup>>>,
    /// Subscriber connections per group that have not read yet: each may
    /// become a queue consumer.
    undecided: Mutex<HashMap<QueueKey, usize>>,
}

/// A subscriber connection that has not chosen its mode yet; uncounted
/// when dropped.
pub(crate) struct Undecided {
    queues: Arc<Queues>,
    key: QueueKey,
}

impl Drop for Undecided {
    fn drop(&mut self) {
        let mut undecided = self.queues.undecided.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = undecided.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                undecided.remove(&self.key);
            }
        }
    }
}

/// How often the group's threads look around: the commit thread commits
/// what is acknowledged; the group's thread reports to `/metrics`, sees
/// whether its last consumer left `queue.linger_ms` ago, and waits for
/// records (or, while the readers have plenty, for them to take some) at
/// most this long.
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Longest a queue command waits on the brokers: under a client's default
/// read timeout (Jedis: 2 s).
pub(crate) const BROKER_WAIT: Duration = Duration::from_millis(1500);

impl Queues {
    fn lock(&self) -> MutexGuard<'_, HashMap<QueueKey, Arc<QueueGroup>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a subscriber connection of `key` that has not read yet;
    /// returns it and how many others there are.
    pub(crate) fn undecided(self: &Arc<Self>, key: &QueueKey) -> (Undecided, usize) {
        let mut undecided = self.undecided.lock().unwrap_or_else(|e| e.into_inner());
        let n = undecided.entry(key.clone()).or_default();
        *n += 1;
        (Undecided { queues: self.clone(), key: key.clone() }, *n - 1)
    }

    /// Whether the group has a member on this databus.
    pub(crate) fn has(&self, key: &QueueKey) -> bool {
        self.lock().contains_key(key)
    }

    /// The group's shared member, made (and joined to Kafka) if this databus
    /// has none yet.
    pub(crate) fn attach(
        self: &Arc<Self>,
        key: &QueueKey,
        join: JoinWith<'_>,
    ) -> Result<Attached, ConsumeError> {
        if let Some(attached) = self.attach_existing(key) {
            return Ok(attached);
        }
        // Joining Kafka takes a while: not under the registry's lock, which
        // every subscriber's AUTH takes.
        let made = Arc::new(QueueGroup::join(key, join, Arc::downgrade(self))?);
        let mut groups = self.lock();
        let group = match groups.get(key) {
            // Another connection made it meanwhile: that one serves; ours
            // leaves.
            Some(g) => {
                made.shared.stop.store(true, Ordering::SeqCst);
                g.clone()
            }
            None => {
                groups.insert(key.clone(), made.clone());
                made
            }
        };
        // Counted under the registry's lock, under which an idle group leaves.
        Ok(Attached::new(group))
    }

    fn attach_existing(&self, key: &QueueKey) -> Option<Attached> {
        let groups = self.lock();
        let group = groups.get(key)?.clone();
        Some(Attached::new(group))
    }

    /// Stops every group: each commits what is acknowledged and leaves.
    pub(crate) fn close_all(&self) {
        let groups: Vec<Arc<QueueGroup>> = self.lock().drain().map(|(_, g)| g).collect();
        for g in &groups {
            g.shared.stop.store(true, Ordering::SeqCst);
        }
        for g in groups {
            if let Some(t) = g.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = t.join();
            }
        }
    }
}
