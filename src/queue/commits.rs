//! What the group commits, and when: every `HOUSEKEEPING` what the book
//! says is acknowledged, the whole state of the partitions a rebalance
//! takes away before they go, and everything at a stop. A commit counts
//! in the book only once Kafka acknowledged it. librdkafka's rebalance
//! callbacks live here because they commit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::book::{self, Book, Commit};
use super::group::Shared;
use super::HOUSEKEEPING;

/// How long an assignment waits for the committed offsets' metadata.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

/// librdkafka's callbacks: rebalances move partitions in and out of the
/// book; failed commits are tried again.
pub(crate) struct QueueContext {
    pub(super) shared: Arc<Shared>,
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

/// Commits what is acknowledged every `HOUSEKEEPING`, until the group
/// stops; a failed commit stays due and goes again at the next tick. A run
/// of failures is logged once, at its start and at its end. At the stop,
/// the whole state, whatever was committed before (one thread, so a stop
/// during a coordinator outage waits for one held commit, not two).
pub(super) fn commit_periodically(consumer: &BaseConsumer<QueueContext>, shared: &Shared) {
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
