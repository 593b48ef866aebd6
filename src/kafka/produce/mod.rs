//! databus's own Kafka producer: one produce request per broker.
//!
//! librdkafka sends one produce request per partition, so depth-1
//! publishers spread over P partitions make requests of about c/P records
//! each, every one a round trip (BENCHMARKS.md, "One request per broker"). This
//! producer, like Kafka's Java producer, sarama and franz-go, sends each
//! broker one request carrying a batch of every partition it leads that has
//! records, up to `max_in_flight` requests in flight per connection.
//!
//! Synchronous, no async runtime: a thread per broker writes requests
//! (`sender.rs`), a thread per connection reads their responses in order,
//! and a control thread (`control.rs`) keeps the metadata, the producer id
//! and the timeouts. Everything they share is one [`State`] under one
//! mutex; records are encoded into their partition's open batch as they
//! come (`batch.rs`), so a request is a copy of ready bytes.
//!
//! Idempotent, acks=all, as the librdkafka producer was: each partition's
//! batches carry consecutive sequences under one producer id and epoch, so
//! a batch sent again after a lost response is recognised by the broker,
//! and a batch can never be written ahead of an earlier one. A batch that
//! comes back with a retriable error goes back to the front of its
//! partition in sequence order, and the partition then sends one batch at a
//! time until the earlier ones are through ([`Partition::careful`]). A gap
//! the broker cannot explain (its producer state lost, a batch that timed
//! out after it may have been written) bumps the epoch (KIP-360), which
//! restarts every partition's sequences at 0, once nothing is in flight.

mod answers;
pub(crate) mod batch;
mod control;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod partitioner;
mod read;
mod response;
pub(crate) mod sasl;
mod sender;
pub(crate) mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::records::Compression;

pub(crate) use self::answers::readings;
use self::batch::{Batch, Parts};
pub(crate) use self::partitioner::Partitioner;
use super::producer::Reporter;
use super::{Delivered, PublishError};

/// How this producer is set up.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The cluster's name, for errors and logs.
    pub cluster: String,
    pub brokers: Vec<String>,
    pub security: wire::Security,
    /// How long a record may wait for its acknowledgement; also the
    /// broker's wait for the in-sync replicas and a request's timeout.
    pub timeout: Duration,
    /// How long a partition's first record waits for others before its
    /// batch may go (0: at once).
    pub linger: Duration,
    /// Produce requests in flight per broker connection, and batches per
    /// partition (at most 5, which an idempotent producer's broker-side
    /// deduplication covers).
    pub max_in_flight: usize,
    /// Whether a broker's requests in flight follow where its round trip
    /// goes, up to `max_in_flight` ([`Link::in_flight_limit`]); else
    /// always `max_in_flight` (the fake-cluster tests, to have every
    /// request in flight that may be).
    pub adapt_in_flight: bool,
    pub partitioner: Partitioner,
    pub compression: Compression,
    /// A partition's batch is closed at this many bytes of records.
    pub batch_bytes: usize,
    /// Records held (queued or in flight) at most; past it a record waits
    /// for room, up to its timeout.
    pub max_records: usize,
    /// Where it counts what it does (shared by a cluster's producers).
    pub stats: Arc<Stats>,
}

/// What a cluster's producers did, counted as they go; `/metrics` shows
/// them as `databus_produce_*_total`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Produce requests written (a request carries a batch of every
    /// partition of one broker that had records).
    pub requests: AtomicU64,
    pub batches: AtomicU64,
    pub records: AtomicU64,
    /// Batches to be sent again: answered with a retriable error, or in
    /// flight on a connection that broke or went unanswered.
    pub retries: AtomicU64,
    /// New producer epochs or ids (KIP-360), each restarting every
    /// partition's sequences.
    pub epoch_bumps: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counts now: requests, batches, records, retries, epoch bumps.
    pub(crate) fn read(&self) -> [u64; 5] {
        [&self.requests, &self.batches, &self.records, &self.retries, &self.epoch_bumps]
            .map(|c| c.load(Ordering::Relaxed))
    }
}

/// What a failed record failed of; the producer's context turns it into
/// the error the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not acknowledged within the produce timeout.
    Timeout { topic: String, partition: Option<i32> },
    /// The broker refused the batch for good (its error name and message).
    Rejected { topic: String, code: i16, message: String },
    /// The brokers refused databus's login.
    Refused(String),
}

impl Failure {
    /// The cluster's ACLs do not let databus write to `topic`
    /// (TOPIC_AUTHORIZATION_FAILED, from the metadata or a produce answer).
    fn denied(topic: &str) -> Failure {
        Failure::Rejected {
            topic: topic.to_owned(),
            code: TOPIC_AUTHORIZATION_FAILED,
            message: "TopicAuthorizationFailed".into(),
        }
    }
}

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// Whom the producer tells what happens: the verdicts' errors, the
/// acknowledgements (for the health of the partitions written to) and the
/// brokers' errors (for the cause of a timeout).
pub(crate) trait Context: Send + Sync + 'static {
    fn acknowledged(&self, topic: &str, partition: i32);
    fn failed(&self, failure: Failure) -> PublishError;
    fn broker_error(&self, error: &str);
    /// The brokers accepted the producer again after a refusal, or a first time.
    fn accepted(&self) {}
}

/// A record for [`Producer::send`].
pub(crate) struct Outgoing<'a, 'h> {
    pub topic: &'a str,
    /// `None`: a record with no key, spread by the partitioner.
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'h mut dyn Iterator<Item = (&'a str, &'a [u8])>,
    /// More records of the same client follow at once (a pipeline): the
    /// sender is not woken for this one, so that they go in one request;
    /// the next record without `more`, or [`Producer::release`], wakes it.
    pub more: bool,
}

/// A producer of one cluster. Dropping it stops its threads; records it
/// still holds are settled as closed.
pub(crate) struct Producer {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    context: Arc<dyn Context>,
    state: Mutex<State>,
    /// Wakes the control thread: metadata wanted, a stop.
    control: Condvar,
    /// Wakes senders waiting for room in the queue and flushes.
    settled: Condvar,
}

/// Everything the producer's threads share.
struct State {
    topics: HashMap<String, Topic>,
    /// Per broker node id: its address and its sender's state.
    links: HashMap<i32, Link>,
    /// The producer id and epoch, once a broker gave them.
    producer: Option<(i64, i16)>,
    /// Records of topics whose metadata is not in yet.
    waiting: Vec<Waiting>,
    /// Records held: waiting, queued or in flight.
    held: usize,
    /// Produce requests in flight over every connection.
    in_flight: usize,
    /// The epoch is to be bumped as soon as nothing is in flight.
    bump: bool,
    /// The bump is to get a new producer id (the broker fenced this one).
    new_id: bool,
    /// A metadata refresh is wanted now.
    metadata_due: bool,
    /// Why the brokers refuse databus, while they do.
    refused: Option<String>,
    stopping: bool,
}

/// A topic as the last metadata showed it.
#[derive(Default)]
struct Topic {
    partitions: Vec<Partition>,
}

/// One partition's batches.
struct Partition {
    /// The leader's node id; -1 when it has none.
    leader: i32,
    /// The batch records are appended to.
    open: Option<Batch>,
    /// Closed batches waiting to be sent, in order; a batch sent again is
    /// put back at the front, in sequence order.
    ready: VecDeque<Batch>,
    /// Batches of this partition in flight.
    in_flight: usize,
    /// The sequence of the next record that gets one.
    next_sequence: i32,
    /// An error came back: one batch in flight at a time until every batch
    /// that had a sequence is through, so the broker sees them in order.
    careful: bool,
    /// A batch the broker refused for good (so never wrote) left a gap at
    /// this sequence: the batches after it take their sequences again from
    /// here before the next is sent.
    renumber_from: Option<i32>,
}

/// A record held until its topic's metadata is in.
struct Waiting {
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    reporter: Reporter,
    at_ms: i64,
    deadline: Instant,
}

/// A broker as the producer knows it.
struct Link {
    address: String,
    /// Wakes its sender (records for it, room in flight, a stop).
    wake: Arc<Condvar>,
    /// Requests written and not yet answered, in order.
    sent: VecDeque<Sent>,
    /// Its sender has a connection (else it opens one when it has work).
    connected: bool,
    /// The metadata no longer names it: its sender ends when idle.
    gone: bool,
    /// When the last request was written.
    last_sent: Instant,
    /// Its sender sleeps until the pace ends, with records to send: it
    /// sees a new record then, so the record need not wake it.
    paced: bool,
    /// The produce round trip, smoothed (7/8 of the last value, 1/8 of
    /// the new one), as its reader measures it.
    round_trip: Duration,
    /// Records came for it with more to follow and its sender was not
    /// woken for them: [`Producer::release`] wakes it (else its sender's
    /// 100 ms look does).
    held: bool,
    /// The quickest produce round trip of this window and of the one
    /// before (windows of [`QUICKEST_WINDOW`]): what the wire costs, with
    /// no queue at the broker.
    quickest: (Duration, Duration),
    /// When this window began.
    window_since: Instant,
    /// When the last response came, how many records its request carried,
    /// and how many records came for this broker since: see
    /// [`Link::pace`].
    answered_at: Instant,
    freed: usize,
    since_answer: usize,
}

/// How long a window of [`Link::quickest`] lasts: the wire's round trip is
/// the quickest of the last 10 to 20 seconds.
const QUICKEST_WINDOW: Duration = Duration::from_secs(10);

impl Link {
    fn new(address: String) -> Link {
        Link {
            address,
            wake: Arc::default(),
            sent: VecDeque::new(),
            connected: false,
            gone: false,
            last_sent: Instant::now(),
            paced: false,
            round_trip: Duration::ZERO,
            held: false,
            quickest: (Duration::MAX, Duration::MAX),
            window_since: Instant::now(),
            answered_at: Instant::now(),
            freed: 0,
            since_answer: 0,
        }
    }

    /// Whether a new record must wake the sender: not while it sleeps out
    /// the pace (it wakes by itself, or when the records it waits for after
    /// an answer are all in) nor while every request it may have is in
    /// flight (the next response wakes it). Each needless wake is a context
    /// switch per SET at depth 1, where cores are scarce.
    fn wants_wake(&self, config: &Config) -> bool {
        let back = self.sent.is_empty() && self.since_answer == self.freed;
        (!self.paced || back) && self.sent.len() < self.in_flight_limit(config)
    }

    /// How many requests may be in flight now, at most `max_in_flight`.
    /// A broker works through a connection's requests one at a time, so a
    /// request sent while another is in flight gains only the time it
    /// spends on the wire, and it takes records that would have gone
    /// together into a fuller request. The wire is the quickest round
    /// trip of late; the rest of the smoothed round trip is the broker's
    /// work and queue. One more request may go beside those in flight for
    /// each time the wire fits in that rest: through a 0.5 ms network
    /// (quickest 0.7 ms, round trip 0.9-1.2 ms) that is 2 to 5; beside
    /// the broker (quickest 0.1 ms, round trip 0.2-0.4 ms) it is 1, as
    /// sarama sends, and fuller requests leave the cores to the broker
    /// and the clients (BENCHMARKS.md, "Requests in flight").
    fn in_flight_limit(&self, config: &Config) -> usize {
        let wire = self.quickest.0.min(self.quickest.1);
        let rest = self.round_trip.saturating_sub(wire);
        if !config.adapt_in_flight || wire == Duration::MAX || rest.is_zero() {
            return config.max_in_flight;
        }
        let beside = (wire.as_nanos() / rest.as_nanos()).min(config.max_in_flight as u128) as usize;
        (1 + beside).min(config.max_in_flight)
    }

    /// How long the sender waits before its next request, with records
    /// to send and room in flight.
    ///
    /// While requests are in flight: until half a round trip after the
    /// last. Records that come meanwhile gather into the next, so a busy
    /// gateway sends about two fuller requests per round trip (the
    /// broker's cost is per request). Measured through the relay at 12
    /// partitions against a pace of a fifth of a round trip: 1.1-1.5 × the
    /// SET/s at depth 1 with c=10 to 100, with a half to three fifths of
    /// the requests (BENCHMARKS.md, "The pace").
    ///
    /// With nothing in flight and one request at a time (the round trip is
    /// the broker's work, not the wire's): until as many records have come
    /// as the last answered request carried, at most a round trip after
    /// its answer. A client at depth 1 sends its next record after its
    /// answer, so this waits for the clients just answered to come back
    /// and go in the same request as those already waiting; when cores are
    /// busy their answers take a while to reach them, and sending without
    /// them split the clients into two half-full requests per round trip.
    /// A lone client is never held: its one record is all the last answer
    /// freed. Measured on loopback from c=10 on: half the requests per SET,
    /// the broker's CPU per SET down by a third to a half (BENCHMARKS.md,
    /// "The clients just answered").
    fn pace(&self, config: &Config) -> Duration {
        if !self.sent.is_empty() {
            (self.round_trip / 2).saturating_sub(self.last_sent.elapsed())
        } else if self.since_answer < self.freed && self.in_flight_limit(config) == 1 {
            self.round_trip.saturating_sub(self.answered_at.elapsed())
        } else {
            Duration::ZERO
        }
    }

    /// A response to `records` records came `took` after its request.
    fn answered(&mut self, took: Duration, records: usize) {
        self.answered_at = Instant::now();
        self.freed = records;
        self.since_answer = 0;
        self.round_trip = if self.round_trip.is_zero() { took } else { (self.round_trip * 7 + took) / 8 };
        if self.window_since.elapsed() > QUICKEST_WINDOW {
            self.quickest = (self.quickest.1, took);
            self.window_since = Instant::now();
        } else {
            self.quickest.1 = self.quickest.1.min(took);
        }
    }
}

/// A produce request in flight.
struct Sent {
    correlation: i32,
    version: i16,
    at: Instant,
    batches: Vec<(String, i32, Batch)>,
}

impl Sent {
    fn records(&self) -> usize {
        self.batches.iter().map(|(_, _, b)| b.reporters.len()).sum()
    }
}

/// Settled outside the state's lock: a record's reporter and its verdict.
type Verdicts = Vec<(Reporter, Result<Delivered, PublishError>)>;

fn settle(verdicts: Verdicts) {
    for (reporter, verdict) in verdicts {
        reporter.settle(verdict);
    }
}

/// Fails the records of `reporters` with `failure`, into `out`; returns
/// how many, for the count of records held.
fn fail(
    context: &dyn Context,
    failure: &Failure,
    reporters: impl IntoIterator<Item = Reporter>,
    out: &mut Verdicts,
) -> usize {
    let before = out.len();
    out.extend(reporters.into_iter().map(|r| (r, Err(context.failed(failure.clone())))));
    out.len() - before
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Partition {
    fn new(leader: i32) -> Partition {
        Partition {
            leader,
            open: None,
            ready: VecDeque::new(),
            in_flight: 0,
            next_sequence: 0,
            careful: false,
            renumber_from: None,
        }
    }

    /// Appends a record that came at `at_ms` and times out at `deadline`.
    fn append(
        &mut self,
        config: &Config,
        at_ms: i64,
        deadline: Instant,
        record: Parts<'_, '_>,
        reporter: Reporter,
    ) {
        let open = self.open.get_or_insert_with(|| Batch::new(at_ms, deadline));
        open.append(at_ms, record, reporter);
        if open.size() >= config.batch_bytes {
            self.ready.extend(self.open.take());
        }
    }

    /// Whether a batch may be sent now, and which.
    fn sendable(&self, max_in_flight: usize, linger: Duration) -> bool {
        let room = if self.careful { self.in_flight == 0 } else { self.in_flight < max_in_flight };
        room && (!self.ready.is_empty()
            || self.open.as_ref().is_some_and(|b| linger.is_zero() || b.age() >= linger))
    }

    /// Takes the next batch to send, giving it its sequences.
    fn take(&mut self) -> Option<Batch> {
        if let Some(from) = self.renumber_from.take() {
            self.renumber(from);
        }
        let mut batch = self.ready.pop_front().or_else(|| self.open.take())?;
        if batch.sequence.is_none() {
            batch.sequence = Some(self.next_sequence);
            self.next_sequence = self.next_sequence.wrapping_add(batch.count());
        }
        batch.attempts += 1;
        self.in_flight += 1;
        Some(batch)
    }

    /// Gives the batches that have sequences new ones from `from` on, in
    /// order.
    fn renumber(&mut self, from: i32) {
        let mut next = from;
        for batch in self.ready.iter_mut().filter(|b| b.sequence.is_some()) {
            batch.sequence = Some(next);
            next = next.wrapping_add(batch.count());
        }
        self.next_sequence = next;
    }

    /// A batch that had `sequence` was refused for good, so never written:
    /// the batches after it take its sequences before the next is sent.
    fn refused(&mut self, sequence: Option<i32>) {
        self.in_flight -= 1;
        self.careful = true;
        let from = sequence.unwrap_or(self.next_sequence);
        self.renumber_from = Some(self.renumber_from.map_or(from, |r| r.min(from)));
    }

    /// A batch that is to be sent again, at its place in sequence order.
    fn put_back(&mut self, batch: Batch) {
        let at = self
            .ready
            .iter()
            .position(|b| b.sequence.is_none_or(|s| batch.sequence.is_some_and(|mine| mine < s)))
            .unwrap_or(self.ready.len());
        self.ready.insert(at, batch);
    }

    /// After a success: the partition goes back to full speed once no
    /// batch with a sequence waits.
    fn through(&mut self) {
        if self.careful && self.in_flight == 0 && self.ready.iter().all(|b| b.sequence.is_none()) {
            self.careful = false;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every sender (an epoch bump done, metadata changed, a stop).
    fn wake_all(&self, state: &State) {
        for link in state.links.values() {
            link.wake.notify_one();
        }
    }

    /// Wakes the senders not woken for records sent with more to follow.
    fn wake_held(&self, state: &mut State) {
        for link in state.links.values_mut().filter(|l| l.held) {
            link.held = false;
            link.wake.notify_one();
        }
    }

    /// Wakes the senders that have records to send (after a response: room
    /// in flight, or batches put back); the others sleep on.
    fn wake_busy(&self, state: &State) {
        for (node, link) in &state.links {
            if sender::has_work(state, *node, self.config.max_in_flight, self.config.linger) {
                link.wake.notify_one();
            }
        }
    }
}

impl State {
    /// The partition a record of `topic` with `key` goes to, once the
    /// topic's metadata is in.
    fn partition_for(&mut self, config: &Config, topic: &str, key: Option<&[u8]>) -> Option<&mut Partition> {
        let topic = self.topics.get_mut(topic).filter(|t| !t.partitions.is_empty())?;
        let partition = config.partitioner.partition(key, topic.partitions.len() as i32, rand_u32);
        topic.partitions.get_mut(partition as usize)
    }

    /// Appends a record that waited for its topic's metadata, or keeps it
    /// waiting if the metadata still does not have it.
    fn place(&mut self, config: &Config, record: Waiting) {
        let Some(p) = self.partition_for(config, &record.topic, record.key.as_deref()) else {
            self.waiting.push(record);
            self.metadata_due = true;
            return;
        };
        let mut headers = record.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        let parts = Parts { key: record.key.as_deref(), value: &record.value, headers: &mut headers };
        p.append(config, record.at_ms, record.deadline, parts, record.reporter);
        let leader = p.leader;
        self.count_for(leader);
    }

    /// Counts a record just appended for `leader` toward the wait for
    /// answered clients (see [`Link::wants_wake`]); the leader's link, if
    /// databus has one.
    fn count_for(&mut self, leader: i32) -> Option<&mut Link> {
        let link = self.links.get_mut(&leader)?;
        link.since_answer += 1;
        Some(link)
    }

    /// Fails every record held (a refusal): `failure` for each.
    fn fail_queued(&mut self, context: &dyn Context, failure: &Failure, out: &mut Verdicts) {
        let waiting = std::mem::take(&mut self.waiting);
        self.held -= fail(context, failure, waiting.into_iter().map(|w| w.reporter), out);
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                // Batches that were sent keep their place: their outcome is
                // the broker's.
                let (sent, unsent): (VecDeque<Batch>, VecDeque<Batch>) =
                    p.ready.drain(..).partition(|b| b.sequence.is_some());
                p.ready = sent;
                for batch in unsent.into_iter().chain(p.open.take()) {
                    self.held -= fail(context, failure, batch.reporters, out);
                }
            }
        }
    }
}

/// A random number for the partitioners that pick at random.
fn rand_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState has keys of its own: its empty hash is a new number.
    RandomState::new().build_hasher().finish() as u32
}

impl Producer {
    /// Starts a producer: its control thread connects, gets a producer id
    /// and the metadata of the topics records come for.
    pub(crate) fn start(config: Config, context: Arc<dyn Context>) -> std::io::Result<Producer> {
        let shared = Arc::new(Shared {
            config,
            context,
            state: Mutex::new(State {
                topics: HashMap::new(),
                links: HashMap::new(),
                producer: None,
                waiting: Vec::new(),
                held: 0,
                in_flight: 0,
                bump: false,
                new_id: false,
                metadata_due: false,
                refused: None,
                stopping: false,
            }),
            control: Condvar::new(),
            settled: Condvar::new(),
        });
        control::spawn(shared.clone())?;
        Ok(Producer { shared })
    }

    /// Queues `record`; its verdict goes to `reporter`. Fails at once while
    /// the brokers refuse databus, or if the queue stayed full for the
    /// whole produce timeout.
    pub(crate) fn send(&self, record: Outgoing<'_, '_>, reporter: Reporter) -> Result<(), PublishError> {
        let config = &self.shared.config;
        let deadline = Instant::now() + config.timeout;
        let mut state = self.shared.lock();
        while state.held >= config.max_records {
            self.shared.wake_held(&mut state);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PublishError::Timeout {
                    cluster: config.cluster.clone(),
                    ms: config.timeout.as_millis(),
                    partition: None,
                    cause: Some("the local queue stayed full".into()),
                });
            }
            state = self.shared.settled.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        if let Some(reason) = &state.refused {
            return Err(self.shared.context.failed(Failure::Refused(reason.clone())));
        }
        state.held += 1;
        let at_ms = now_ms();
        let wake = match state.partition_for(config, record.topic, record.key) {
            Some(p) => {
                let parts = Parts { key: record.key, value: record.value, headers: record.headers };
                p.append(config, at_ms, deadline, parts, reporter);
                let leader = p.leader;
                let wake = state.count_for(leader).and_then(|link| {
                    if !link.wants_wake(config) {
                        return None;
                    }
                    link.held |= record.more;
                    (!record.more).then(|| link.wake.clone())
                });
                // The last of a pipeline: what it held for any broker goes
                // now, with no release to wait for.
                if !record.more {
                    self.shared.wake_held(&mut state);
                }
                wake
            }
            None => {
                let waiting = Waiting {
                    topic: record.topic.to_owned(),
                    key: record.key.map(<[u8]>::to_vec),
                    value: record.value.to_vec(),
                    headers: record.headers.map(|(k, v)| (k.to_owned(), v.to_vec())).collect(),
                    reporter,
                    at_ms,
                    deadline,
                };
                state.waiting.push(waiting);
                state.metadata_due = true;
                self.shared.control.notify_one();
                None
            }
        };
        drop(state);
        if let Some(wake) = wake {
            wake.notify_one();
        }
        Ok(())
    }

    /// Wakes the senders not woken for records sent with `more` (see
    /// [`Outgoing::more`]): the client's pipeline is all in.
    pub(crate) fn release(&self) {
        let mut state = self.shared.lock();
        self.shared.wake_held(&mut state);
    }

    /// Records held and not yet settled.
    pub(crate) fn held(&self) -> usize {
        self.shared.lock().held
    }

    /// Waits up to `timeout` until every record held is settled; false if
    /// some still are not.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let by = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.held > 0 {
            let left = by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.shared.settled.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stopping = true;
        self.shared.wake_all(&state);
        drop(state);
        self.shared.control.notify_all();
    }
}

#[cfg(test)]
mod tests;
