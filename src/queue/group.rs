//! One group's shared Kafka member on this databus: how it joins (its
//! threads, then the subscription), what its threads and readers share
//! (the book under one lock and the two signals on it), and what it asks
//! of the brokers for the commands (watermarks, lag) through a client
//! that never joins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use crate::kafka::broker_errors::BrokerErrors;
use crate::kafka::consumer::{consumer_config, Member, Membership, StartOffset};
use crate::kafka::{
    group_protocol, Cluster, ConsumeError, GroupClient, Memberships, Publish, SubscriberSettings,
};
use crate::metrics::QueueMeter;

use super::book::{Book, Entry};
use super::commits::{commit_periodically, QueueContext};
use super::dead_letters::DeadLetters;
use super::poller::Poller;
use super::settings::QueueSettings;
use super::{QueueKey, Queues, BROKER_WAIT};

/// What making a group's member needs.
pub(crate) struct JoinWith<'a> {
    pub cluster: &'a Cluster,
    pub start: StartOffset,
    pub subscriber: &'a SubscriberSettings,
    pub settings: &'a QueueSettings,
    pub members: &'a Arc<Memberships>,
    pub publish: Arc<dyn Publish>,
    pub meter: QueueMeter,
}

/// What the group's thread, its librdkafka callbacks and its readers share.
pub(super) struct Shared {
    pub(super) book: Mutex<Book>,
    /// Signalled when entries come or are acknowledged.
    pub(super) more: Condvar,
    /// Signalled when readers take entries: the group's thread waits on it
    /// while `PREFETCH` entries are ready.
    pub(super) room: Condvar,
    pub(super) topic: String,
    pub(super) attached: AtomicUsize,
    pub(super) stop: AtomicBool,
    pub(super) errors: BrokerErrors,
    /// Held from reading the book's commits until Kafka answered them, so
    /// commits reach Kafka in the order the book moved: an older one
    /// never lands after a newer one.
    pub(super) commit_order: Mutex<()>,
    /// Commits Kafka did not acknowledge (each is tried again).
    pub(super) commit_failures: AtomicU64,
    /// Why librdkafka gave the member up, if it did: the group has stopped.
    pub(super) fatal: Mutex<Option<ConsumeError>>,
}

impl Shared {
    pub(super) fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why librdkafka gave the group's member up, if it did.
    pub(super) fn fatal(&self) -> Option<ConsumeError> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One group's Kafka member and its book.
pub(crate) struct QueueGroup {
    pub(super) key: QueueKey,
    pub(super) shared: Arc<Shared>,
    /// For what commands ask of the brokers (watermarks, commits): not
    /// through the member, whose connections carry its fetches.
    pub(super) side: GroupClient,
    /// Where the group starts on a partition it has no commit for.
    pub(super) start: StartOffset,
    /// To the group's dead-letter thread (see [`QueueGroup::dead_letter`]).
    pub(super) dead_letters: mpsc::Sender<Vec<Arc<Entry>>>,
    pub(super) thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl QueueGroup {
    pub(super) fn join(
        key: &QueueKey,
        with: JoinWith<'_>,
        registry: Weak<Queues>,
    ) -> Result<QueueGroup, ConsumeError> {
        group_protocol::require(&key.cluster, with.cluster)?;
        let reset = match with.start {
            StartOffset::Latest => "latest",
            StartOffset::Earliest => "earliest",
        };
        let shared = Arc::new(Shared {
            book: Mutex::new(Book::new(with.settings.book)),
            more: Condvar::new(),
            room: Condvar::new(),
            topic: key.topic.clone(),
            attached: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            errors: BrokerErrors::default(),
            commit_order: Mutex::new(()),
            commit_failures: AtomicU64::new(0),
            fatal: Mutex::new(None),
        });
        let consumer: BaseConsumer<QueueContext> =
            consumer_config(with.cluster, &key.group, reset, with.subscriber)
                .create_with_context(QueueContext { shared: shared.clone() })
                .map_err(ConsumeError::Create)?;
        let metadata =
            consumer.fetch_metadata(Some(&key.topic), BROKER_WAIT).map_err(|e| ConsumeError::Metadata {
                cluster: key.cluster.clone(),
                topic: key.topic.clone(),
                cause: Box::new(e),
                last_error: shared.errors.get(),
            })?;
        let found = metadata.topics().iter().find(|t| t.name() == key.topic);
        if found.filter(|t| t.error().is_none()).is_none_or(|t| t.partitions().is_empty()) {
            return Err(ConsumeError::NoTopic(key.topic.clone()));
        }
        let side = GroupClient::new(with.cluster, &key.group, &key.topic)?;
        let membership = Membership::count(
            with.members,
            Member { cluster: &key.cluster, group: &key.group, topic: &key.topic, start: with.start },
        );
        let consumer = Arc::new(consumer);
        // Threads first, the subscription last: whatever fails before it
        // stops the threads made so far, and no member joins that nothing
        // polls.
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            thread::Builder::new().name(format!("{name}-{}", key.topic)).spawn(run).map_err(|e| {
                shared.stop.store(true, Ordering::SeqCst);
                ConsumeError::Create(KafkaError::ClientCreation(e.to_string()))
            })
        };
        let (dead_letters, letters) = mpsc::channel();
        let dead_letterer = DeadLetters {
            shared: shared.clone(),
            key: key.clone(),
            publish: with.publish,
            topic: with.settings.dead_letter_topic.replace("{topic}", &key.topic),
        };
        // Ends once the group (the sender) is gone.
        spawn("dlq", Box::new(move || dead_letterer.run(letters)))?;
        let committer = {
            let (consumer, shared) = (consumer.clone(), shared.clone());
            spawn("commit", Box::new(move || commit_periodically(&consumer, &shared)))?
        };
        let poller = Poller {
            consumer,
            shared: shared.clone(),
            key: key.clone(),
            color: key.color.as_bytes().to_vec(),
            linger: with.settings.linger,
            registry,
            cluster: with.cluster.clone(),
            meter: with.meter,
            committer: Some(committer),
            _membership: membership,
        };
        let poller_consumer = poller.consumer.clone();
        let thread = spawn("queue", Box::new(move || poller.run()))?;
        if let Err(e) = poller_consumer.subscribe(&[&key.topic]) {
            shared.stop.store(true, Ordering::SeqCst);
            return Err(ConsumeError::Create(e));
        }
        Ok(QueueGroup {
            key: key.clone(),
            shared,
            side,
            start: with.start,
            dead_letters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands entries past their deliveries to the group's dead-letter
    /// thread, which produces them to the dead-letter topic: each is
    /// acknowledged once stored there, or handed out again if refused.
    /// Meanwhile they are neither pending nor ready (the book's `dying`),
    /// so the command that met them answers at once; they stay outstanding
    /// (uncommitted) until stored. A dead letter the broker stores after
    /// the member's last commit (at a stop) is in the dead-letter topic and
    /// comes again from the stream too: at least once.
    pub(super) fn dead_letter(&self, entries: Vec<Arc<Entry>>) {
        if !entries.is_empty() {
            // The thread ends only once this group (the sender) is gone.
            let _ = self.dead_letters.send(entries);
        }
    }

    /// Waits on the book until `wake` or `timeout`; returns the book.
    pub(super) fn wait<'a>(&self, book: MutexGuard<'a, Book>, timeout: Duration) -> MutexGuard<'a, Book> {
        match self.shared.more.wait_timeout(book, timeout) {
            Ok((b, _)) => b,
            Err(e) => e.into_inner().0,
        }
    }

    /// Wakes the readers waiting on the book (an acknowledgement made room).
    pub(super) fn notify(&self) {
        self.shared.more.notify_all();
    }

    /// A reader took entries: the group's thread may fetch more.
    pub(super) fn taken(&self) {
        self.shared.room.notify_one();
    }

    /// The topic's partitions and their low and high watermarks, within
    /// [`BROKER_WAIT`].
    pub(super) fn watermarks(&self) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
        self.side.watermarks(BROKER_WAIT)
    }

    /// Entries not yet handed out, as `XINFO GROUPS` reports `lag`: per
    /// partition, past what this member fetched (plus what it fetched and
    /// has not handed out), or past the group's commit where it fetched
    /// nothing; `None` when the brokers did not answer within
    /// [`BROKER_WAIT`].
    pub(super) fn lag(&self) -> Option<i64> {
        let deadline = Instant::now() + BROKER_WAIT;
        let left = || deadline.saturating_duration_since(Instant::now());
        let marks = self.side.watermarks(left()).ok()?;
        let fetched = self.shared.book().fetched();
        let unfetched: Vec<i32> = marks.iter().map(|m| m.0).filter(|p| !fetched.contains_key(p)).collect();
        let committed: HashMap<i32, Option<i64>> = match unfetched.is_empty() {
            true => HashMap::new(),
            false => self.side.committed(&unfetched, left()).ok()?.into_iter().collect(),
        };
        let mut lag = 0;
        for (p, low, high) in marks {
            lag += match fetched.get(&p) {
                Some(f) => (high - f.next).max(0) + f.ready as i64,
                None => match committed.get(&p).copied().flatten() {
                    Some(o) => (high - o).max(0),
                    None if self.start == StartOffset::Earliest => high - low,
                    None => 0,
                },
            };
        }
        Some(lag)
    }
}
