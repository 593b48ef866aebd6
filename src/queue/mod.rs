//! Queue mode: Redis Streams consumer groups over Kafka. All queue
//! consumers of one (cluster, group, topic) on this databus share one Kafka
//! group member, a [`QueueGroup`]: its thread polls Kafka into the group's
//! [`Book`] (the entries ready, the pending entries list, the consumers),
//! commits per partition the offset below which every entry is
//! acknowledged, and hands entries past their deliveries to the dead-letter
//! topic. Consumers may outnumber partitions: they are names in the book,
//! not Kafka members. The commands (`XREADGROUP`, `XACK`, ...) are in
//! `session/queue.rs`.
//!
//! Why a thread per group, not polling from the readers: a thousand idle
//! consumers then wait on one condition variable, and librdkafka is polled
//! (its rebalances served, its poll interval kept) whether anyone reads.

pub(crate) mod book;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;

use crate::kafka::broker_errors::BrokerErrors;
use crate::kafka::consumer::{consumer_config, gave_up, Member, Membership, StartOffset};
use crate::kafka::{
    group_protocol, publish, Cluster, ConsumeError, GroupClient, Memberships, Publish, Record,
    SubscriberSettings,
};
use crate::keys::{Check, ConfigError, Key, Number, Text, MAX_MS};
use crate::metrics::QueueMeter;

pub(crate) use book::{Book, BookSettings, ClaimOptions, Commit, Entry, EntryId};

/// `[queue]` of `databus.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    pub visibility_timeout_ms: Option<u64>,
    pub max_deliveries: Option<u64>,
    pub dead_letter_topic: Option<String>,
    pub max_pending: Option<usize>,
    pub linger_ms: Option<u64>,
}

/// Off by default, as in Redis: a pending entry stays its consumer's until
/// `XCLAIM`/`XAUTOCLAIM` moves it, which is what clients written for Redis
/// expect. Share-group style redelivery is one setting away.
pub(crate) const QUEUE_VISIBILITY_TIMEOUT_MS: Number = Number::count(
    "queue.visibility_timeout_ms",
    0,
    0,
    MAX_MS,
    "an entry pending this long goes to the next `XREADGROUP ... >` of any consumer, its delivery count raised; 0 (off) leaves it with its consumer until `XCLAIM`/`XAUTOCLAIM`, as Redis does",
);
/// Kafka share groups' `group.share.delivery.count.limit` default.
pub(crate) const QUEUE_MAX_DELIVERIES: Number = Number::count(
    "queue.max_deliveries",
    5,
    0,
    1_000_000,
    "an entry about to be delivered more often than this is produced to the dead-letter topic and acknowledged instead; 0: never (Kafka share groups' default limit is 5)",
);
/// Bounds the entries a group holds for redelivery (their keys, values and
/// headers stay in memory while pending).
pub(crate) const QUEUE_MAX_PENDING: Number = Number::count(
    "queue.max_pending",
    10_000,
    1,
    10_000_000,
    "pending entries per group on a databus; at the cap `XREADGROUP ... >` hands out nothing new until acknowledgements come",
);
/// How long a group's Kafka member stays after its last consumer left, so a
/// consumer that reconnects finds its pending entries.
pub(crate) const QUEUE_LINGER_MS: Number = Number::count(
    "queue.linger_ms",
    60_000,
    0,
    MAX_MS,
    "how long a group's shared Kafka member stays after its last queue consumer left, so one that reconnects finds its pending entries",
);
const DEFAULT_DEAD_LETTER_TOPIC: &str = "{topic}.dlq";
pub(crate) const QUEUE_DEAD_LETTER_TOPIC: Text = Text::form(
    "queue.dead_letter_topic",
    "`{topic}.dlq`",
    "a topic name, `{topic}` standing for the stream's",
    "the dead-letter topic; it must exist or be auto-created",
);

/// The keys of `[queue]`, in the reference's order.
pub(crate) const KEYS: &[Key] = &[
    Key::Number(QUEUE_VISIBILITY_TIMEOUT_MS),
    Key::Number(QUEUE_MAX_DELIVERIES),
    Key::Text(QUEUE_DEAD_LETTER_TOPIC),
    Key::Number(QUEUE_MAX_PENDING),
    Key::Number(QUEUE_LINGER_MS),
];

#[derive(Debug, Clone)]
pub(crate) struct QueueSettings {
    pub book: BookSettings,
    /// The dead-letter topic's name, `{topic}` standing for the stream's.
    pub dead_letter_topic: String,
    pub linger: Duration,
}

impl QueueSettings {
    pub(crate) fn from_raw(raw: RawQueue, check: Check<'_>) -> Result<QueueSettings, ConfigError> {
        let visibility = check.number(QUEUE_VISIBILITY_TIMEOUT_MS, raw.visibility_timeout_ms)?;
        let dead_letter_topic = raw.dead_letter_topic.unwrap_or_else(|| DEFAULT_DEAD_LETTER_TOPIC.into());
        let example = dead_letter_topic.replace("{topic}", "t");
        if example.is_empty()
            || example.len() > 249
            || !example.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(check.err(
                QUEUE_DEAD_LETTER_TOPIC.key,
                "must be a Kafka topic name (letters, digits, '.', '_', '-'), `{topic}` standing for the stream's",
            ));
        }
        Ok(QueueSettings {
            book: BookSettings {
                max_pending: check.number(QUEUE_MAX_PENDING, raw.max_pending.map(|n| n as u64))? as usize,
                visibility_timeout: (visibility > 0).then(|| Duration::from_millis(visibility)),
                max_deliveries: check.number(QUEUE_MAX_DELIVERIES, raw.max_deliveries)?,
            },
            dead_letter_topic,
            linger: Duration::from_millis(check.number(QUEUE_LINGER_MS, raw.linger_ms)?),
        })
    }
}

impl Default for QueueSettings {
    fn default() -> QueueSettings {
        QueueSettings {
            book: BookSettings { max_pending: 10_000, visibility_timeout: None, max_deliveries: 5 },
            dead_letter_topic: DEFAULT_DEAD_LETTER_TOPIC.into(),
            linger: Duration::from_secs(60),
        }
    }
}

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

/// How often the group's thread commits, settles dead letters, pauses or
/// resumes fetching, and wakes waiting readers (a visibility timeout that
/// passed).
const HOUSEKEEPING: Duration = Duration::from_millis(100);
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
/// Longest a queue command waits on the brokers: under a client's default
/// read timeout (Jedis: 2 s).
pub(crate) const BROKER_WAIT: Duration = Duration::from_millis(1500);
/// How long an assignment waits for the committed offsets' metadata.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

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
        group.shared.attached.fetch_add(1, Ordering::SeqCst);
        Ok(Attached { group })
    }

    fn attach_existing(&self, key: &QueueKey) -> Option<Attached> {
        let groups = self.lock();
        let group = groups.get(key)?.clone();
        group.shared.attached.fetch_add(1, Ordering::SeqCst);
        Some(Attached { group })
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
pub(crate) struct Shared {
    book: Mutex<Book>,
    /// Signalled when entries come or are acknowledged.
    more: Condvar,
    /// Signalled when readers take entries: the group's thread waits on it
    /// while `PREFETCH` entries are ready.
    room: Condvar,
    topic: String,
    attached: AtomicUsize,
    stop: AtomicBool,
    errors: BrokerErrors,
    /// Held from reading the book's commits until Kafka answered them, so
    /// commits reach Kafka in the order the book moved: an older one
    /// never lands after a newer one.
    commit_order: Mutex<()>,
    /// Commits Kafka did not acknowledge (each is tried again).
    commit_failures: AtomicU64,
    /// Why librdkafka gave the member up, if it did: the group has stopped.
    fatal: Mutex<Option<ConsumeError>>,
}

impl Shared {
    pub(crate) fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why librdkafka gave the group's member up, if it did.
    pub(crate) fn fatal(&self) -> Option<ConsumeError> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One group's Kafka member and its book.
pub(crate) struct QueueGroup {
    pub key: QueueKey,
    pub shared: Arc<Shared>,
    /// For what commands ask of the brokers (watermarks, commits): not
    /// through the member, whose connections carry its fetches.
    side: GroupClient,
    /// Where the group starts on a partition it has no commit for.
    start: StartOffset,
    /// To the group's dead-letter thread (see [`QueueGroup::dead_letter`]).
    dead_letters: mpsc::Sender<Vec<Arc<Entry>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// A queue consumer connection's hold on its group: the group's member
/// lingers after the last one is dropped.
pub(crate) struct Attached {
    pub group: Arc<QueueGroup>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.group.shared.attached.fetch_sub(1, Ordering::SeqCst);
    }
}

/// librdkafka's callbacks: rebalances move partitions in and out of the
/// book; failed commits are tried again.
pub(crate) struct QueueContext {
    shared: Arc<Shared>,
}

impl ClientContext for QueueContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.shared.errors.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.shared.errors.record(&error, reason);
    }
}

impl ConsumerContext for QueueContext {
    /// Before partitions go: commit what is acknowledged in them, so the
    /// next owner hands out only the rest. An incremental rebalance revokes
    /// only what moves: it leaves the book now. An eager one revokes every
    /// partition: they wait for the new assignment, and those that come
    /// back keep their pending entries.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        // An XACK between the commit and the revocation would be lost (its
        // entry handed out again by the next owner): the partitions leave
        // under the same lock that saw their state committed, or after a
        // few tries.
        // Kafka acknowledging exactly the current state (the stop's commit
        // before the close's revocation) needs no second commit.
        let mut tries = 0;
        let mut book = loop {
            let book = self.shared.book();
            if book.is_committed(&revoked) || tries == 3 {
                break book;
            }
            drop(book);
            tries += 1;
            let sent =
                commit(consumer, &self.shared, Some("before a rebalance"), |book| book.state_of(&revoked));
            if !matches!(sent, Some(Ok(()))) {
                break self.shared.book();
            }
        };
        match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => revoked.iter().for_each(|p| book.revoke(*p)),
            _ => book.suspend(&revoked),
        }
        self.shared.more.notify_all();
    }

    /// The new assignment (all of it after an eager rebalance, what is
    /// added after an incremental one): partitions new here start from the
    /// commit, skipping the acknowledged ranges its metadata lists.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let new = self.shared.book().reassigned(&assigned);
        if new.is_empty() {
            return;
        }
        let mut asked = TopicPartitionList::new();
        for p in &new {
            asked.add_partition(&self.shared.topic, *p);
        }
        let committed = consumer.committed_offsets(asked, COMMITTED_TIMEOUT);
        if let Err(e) = &committed {
            // The partitions start from the commit all the same; what its
            // metadata says was acknowledged above it comes again.
            log::warn!("queue group on '{}': no committed metadata for {new:?}: {e}", self.shared.topic);
        }
        let mut book = self.shared.book();
        for p in new {
            let ranges = committed
                .as_ref()
                .ok()
                .and_then(|c| c.find_partition(&self.shared.topic, p))
                .map(|c| book::parse_metadata(c.metadata()))
                .unwrap_or_default();
            book.assign(p, ranges);
        }
    }
}

/// Commits what `pick` takes from the book and waits for Kafka's answer:
/// a commit counts (in the book) only once Kafka acknowledged it; one that
/// failed stays due, so the next tick sends it again. librdkafka defers a
/// commit made while the group has no coordinator until one answers (up to
/// the session timeout): it lands the moment the coordinator is back.
/// Synchronous because librdkafka reports an asynchronous manual commit to
/// no callback that rust-rdkafka serves: its outcome would be unknown.
/// `when` names the commit in the log (`None`: the periodic one, whose
/// caller logs a run of failures once).
fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    shared: &Shared,
    when: Option<&str>,
    pick: impl FnOnce(&Book) -> Vec<Commit>,
) -> Option<Result<(), KafkaError>> {
    let _order = shared.commit_order.lock().unwrap_or_else(|e| e.into_inner());
    let commits = pick(&shared.book());
    let tpl = commit_list(&shared.topic, &commits)?;
    let result = consumer.commit(&tpl, CommitMode::Sync);
    match &result {
        Ok(()) => shared.book().committed(&commits),
        Err(_) => {
            shared.commit_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some(when) = when {
        let what = commits.iter().map(|c| format!("{}@{}", c.partition, c.offset)).collect::<Vec<_>>();
        match &result {
            Ok(()) => log::info!("queue group on '{}': committed {when}: {}", shared.topic, what.join(" ")),
            Err(e) => log::warn!("queue group on '{}': commit {when} failed: {e}", shared.topic),
        }
    }
    Some(result)
}

/// The offsets and metadata to commit, as librdkafka takes them.
fn commit_list(topic: &str, due: &[Commit]) -> Option<TopicPartitionList> {
    if due.is_empty() {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    for c in due {
        tpl.add_partition_offset(topic, c.partition, Offset::Offset(c.offset)).ok()?;
        if let Some(mut e) = tpl.find_partition(topic, c.partition) {
            e.set_metadata(&c.metadata);
        }
    }
    Some(tpl)
}

impl QueueGroup {
    fn join(key: &QueueKey, with: JoinWith<'_>, registry: Weak<Queues>) -> Result<QueueGroup, ConsumeError> {
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
    pub(crate) fn dead_letter(&self, entries: Vec<Arc<Entry>>) {
        if !entries.is_empty() {
            // The thread ends only once this group (the sender) is gone.
            let _ = self.dead_letters.send(entries);
        }
    }

    /// Waits on the book until `wake` or `timeout`; returns the book.
    pub(crate) fn wait<'a>(&self, book: MutexGuard<'a, Book>, timeout: Duration) -> MutexGuard<'a, Book> {
        match self.shared.more.wait_timeout(book, timeout) {
            Ok((b, _)) => b,
            Err(e) => e.into_inner().0,
        }
    }

    /// Wakes the readers waiting on the book (an acknowledgement made room).
    pub(crate) fn notify(&self) {
        self.shared.more.notify_all();
    }

    /// A reader took entries: the group's thread may fetch more.
    pub(crate) fn taken(&self) {
        self.shared.room.notify_one();
    }

    /// The topic's partitions and their low and high watermarks, within
    /// [`BROKER_WAIT`].
    pub(crate) fn watermarks(&self) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
        self.side.watermarks(BROKER_WAIT)
    }

    /// Entries not yet handed out, as `XINFO GROUPS` reports `lag`: per
    /// partition, past what this member fetched (plus what it fetched and
    /// has not handed out), or past the group's commit where it fetched
    /// nothing; `None` when the brokers did not answer within
    /// [`BROKER_WAIT`].
    pub(crate) fn lag(&self) -> Option<i64> {
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
                Some(&(next, ready)) => (high - next).max(0) + ready as i64,
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

/// The group's dead-letter thread: produces the entries past their
/// deliveries and waits for the broker's verdict, off every command's
/// reply path (a broker down holds it for the produce timeout). A record's
/// delivery stays on the thread that produced it.
struct DeadLetters {
    shared: Arc<Shared>,
    key: QueueKey,
    publish: Arc<dyn Publish>,
    topic: String,
}

impl DeadLetters {
    /// Until the group's [`QueueGroup`] (the sender) is gone.
    fn run(self, letters: mpsc::Receiver<Vec<Arc<Entry>>>) {
        for entries in letters {
            self.send(entries);
        }
    }

    fn send(&self, entries: Vec<Arc<Entry>>) {
        let mut sent = Vec::new();
        for e in entries {
            let mut headers = e.headers.clone();
            let (partition, offset) = e.id.record().unwrap_or_default();
            headers.push(("databus-dead-letter-topic".into(), self.key.topic.as_bytes().to_vec()));
            headers.push(("databus-dead-letter-partition".into(), partition.to_string().into_bytes()));
            headers.push(("databus-dead-letter-offset".into(), offset.to_string().into_bytes()));
            headers.push(("databus-dead-letter-group".into(), self.key.group.as_bytes().to_vec()));
            let record = Record::new(&self.topic, &e.key, &e.value).color(&self.key.color).fields(&headers);
            let record = if e.key.is_empty() { record.keyless() } else { record };
            match publish(self.publish.as_ref(), &self.key.cluster, 0, &record, None) {
                Ok(d) => sent.push((e.id, d)),
                Err(err) => {
                    log::warn!("dead letter {} of '{}' refused: {err}", e.id, self.key.topic);
                    self.shared.book().dead_lettered(e.id, false);
                }
            }
        }
        for (id, d) in sent {
            let stored = match d.wait() {
                Ok(_) => true,
                Err(e) => {
                    log::warn!("dead letter {id} of '{}' not stored: {e}", self.key.topic);
                    false
                }
            };
            self.shared.book().dead_lettered(id, stored);
        }
        self.shared.more.notify_all();
    }
}

/// Commits what is acknowledged every `HOUSEKEEPING`, until the group
/// stops; a failed commit stays due and goes again at the next tick. A run
/// of failures is logged once, at its start and at its end. At the stop,
/// the whole state, whatever was committed before (one thread, so a stop
/// during a coordinator outage waits for one held commit, not two).
fn commit_periodically(consumer: &BaseConsumer<QueueContext>, shared: &Shared) {
    let mut failing_since: Option<Instant> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        thread::sleep(HOUSEKEEPING);
        match commit(consumer, shared, None, Book::due_commits) {
            Some(Ok(())) => {
                if let Some(since) = failing_since.take() {
                    log::info!(
                        "queue group on '{}': commits go through again after {} ms of failures",
                        shared.topic,
                        since.elapsed().as_millis()
                    );
                }
            }
            Some(Err(e)) if failing_since.is_none() => {
                failing_since = Some(Instant::now());
                log::warn!("queue group on '{}': commit failed, trying again: {e}", shared.topic);
            }
            _ => {}
        }
    }
    commit(consumer, shared, Some("at a stop"), Book::state);
}

/// The group's thread.
struct Poller {
    consumer: Arc<BaseConsumer<QueueContext>>,
    shared: Arc<Shared>,
    key: QueueKey,
    color: Vec<u8>,
    linger: Duration,
    registry: Weak<Queues>,
    /// The cluster's settings, to tell why librdkafka gave the member up.
    cluster: Cluster,
    meter: QueueMeter,
    /// The periodic commits' thread, joined when the group stops.
    committer: Option<thread::JoinHandle<()>>,
    // Uncounted once the thread ends, after the consumer has left.
    _membership: Membership,
}

impl Poller {
    fn run(mut self) {
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
