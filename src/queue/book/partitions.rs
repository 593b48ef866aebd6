//! The book's Kafka side: the partitions this member holds, what each has
//! fetched and not yet seen acknowledged, and the commits that follow (the
//! offset below which every entry is acknowledged, and the acknowledged
//! ranges above it in the commit's metadata, so a restart does not hand
//! them out again). Rebalances move partitions in and out here.

use std::collections::{BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::sync::Arc;

use super::{Book, Entry, EntryId};

/// One assigned partition.
#[derive(Debug, Default)]
pub(super) struct Part {
    /// Offsets fetched and not acknowledged: ready, pending or being dead-lettered.
    outstanding: BTreeSet<i64>,
    /// One past the highest offset fetched; `None` before the first.
    next: Option<i64>,
    /// Offsets acknowledged before this assignment (from the commit's
    /// metadata), not fetched yet: inclusive ranges, ascending.
    acked_ahead: Vec<RangeInclusive<i64>>,
    /// What Kafka last acknowledged as committed (offset and metadata).
    committed: Option<(i64, String)>,
    /// Revoked by an eager rebalance, which revokes every partition: kept
    /// until the new assignment says whether it comes back.
    suspended: bool,
}

impl Part {
    /// The offset below which everything is acknowledged.
    fn point(&self) -> Option<i64> {
        self.outstanding.first().copied().or(self.next)
    }

    /// The acknowledged ranges above the commit point, as commit metadata:
    /// `a-b,c-d`, at most `MAX_METADATA` bytes (ranges past that are left
    /// out: those entries come again after a restart, at least once).
    fn metadata(&self) -> String {
        let mut ranges = Vec::new();
        if let (Some(mut at), Some(next)) = (self.outstanding.first().copied(), self.next) {
            for &o in self.outstanding.iter().skip(1).chain(std::iter::once(&next)) {
                if o > at + 1 {
                    ranges.push((at + 1, o - 1));
                }
                at = o;
            }
        }
        // What the last assignment's metadata said lies ahead, past what has
        // been fetched since (below that, `outstanding` tells).
        let fetched = self.next.unwrap_or(i64::MIN);
        ranges.extend(
            self.acked_ahead
                .iter()
                .filter(|r| *r.end() >= fetched)
                .map(|r| (*r.start().max(&fetched), *r.end())),
        );
        let mut out = String::new();
        for (lo, hi) in ranges {
            let item = if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") };
            if out.len() + item.len() + 1 > MAX_METADATA {
                break;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&item);
        }
        out
    }

    /// Whether `offset` was acknowledged before this assignment.
    fn acked_before(&mut self, offset: i64) -> bool {
        self.acked_ahead.retain(|r| *r.end() >= offset);
        self.acked_ahead.first().is_some_and(|r| *r.start() <= offset)
    }
}

/// Room the brokers give commit metadata (`offset.metadata.max.bytes`,
/// 4096 by default), with some to spare.
const MAX_METADATA: usize = 4000;

/// Parses commit metadata written by [`Part::metadata`]; anything else
/// (another client's metadata) reads as no ranges.
pub(crate) fn parse_metadata(text: &str) -> Vec<RangeInclusive<i64>> {
    let mut ranges: Vec<RangeInclusive<i64>> = Vec::new();
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let range = match item.split_once('-') {
            Some((lo, hi)) => lo.parse().ok().zip(hi.parse().ok()),
            None => item.parse().ok().map(|o| (o, o)),
        };
        match range {
            Some((lo, hi)) if lo <= hi && ranges.last().is_none_or(|last| *last.end() < lo) => {
                ranges.push(lo..=hi)
            }
            _ => return Vec::new(),
        }
    }
    ranges
}

impl Book {
    /// A partition comes to this member; `acked` are the ranges the last
    /// commit says were acknowledged above its offset.
    pub(crate) fn assign(&mut self, partition: i32, acked: Vec<RangeInclusive<i64>>) {
        self.revoke(partition);
        self.parts.insert(partition, Part { acked_ahead: acked, ..Part::default() });
    }

    /// An eager rebalance revoked `partitions` (all of them): they stay, with
    /// their entries, until [`Book::reassigned`] says which come back.
    pub(crate) fn suspend(&mut self, partitions: &[i32]) {
        for p in partitions {
            if let Some(part) = self.parts.get_mut(p) {
                part.suspended = true;
            }
        }
    }

    /// The new assignment after a rebalance: suspended partitions in it
    /// come back as they were (nobody else held them meanwhile); those not
    /// in it leave. Returns the partitions that are new here, for
    /// [`Book::assign`].
    pub(crate) fn reassigned(&mut self, assigned: &[i32]) -> Vec<i32> {
        let gone: Vec<i32> = self
            .parts
            .iter()
            .filter(|(p, part)| part.suspended && !assigned.contains(p))
            .map(|(p, _)| *p)
            .collect();
        for p in gone {
            self.revoke(p);
        }
        let mut new = Vec::new();
        for p in assigned {
            match self.parts.get_mut(p) {
                Some(part) if part.suspended => part.suspended = false,
                _ => new.push(*p),
            }
        }
        new
    }

    /// A partition leaves this member: its entries leave the book (the new
    /// owner fetches them again from the committed offset).
    pub(crate) fn revoke(&mut self, partition: i32) {
        if self.parts.remove(&partition).is_none() {
            return;
        }
        self.ready.retain(|e| e.partition() != partition);
        self.ready_bytes = self.ready.iter().map(|e| e.size()).sum();
        let gone = |id: &EntryId| id.ms == partition as u64;
        self.pending.retain(|id, _| !gone(id));
        self.dying.retain(|id, _| !gone(id));
    }

    #[cfg(test)]
    pub(crate) fn partitions(&self) -> Vec<i32> {
        self.parts.keys().copied().collect()
    }

    /// Takes a fetched record; false when it is not wanted (a partition not
    /// held, an offset already fetched or acknowledged before).
    pub(crate) fn push(&mut self, entry: Entry) -> bool {
        let (partition, offset) = (entry.partition(), entry.offset());
        let Some(part) = self.parts.get_mut(&partition) else { return false };
        if part.next.is_some_and(|n| offset < n) {
            return false;
        }
        part.next = Some(offset + 1);
        if part.acked_before(offset) {
            return false;
        }
        part.outstanding.insert(offset);
        self.ready_bytes += entry.size();
        self.ready.push_back(Arc::new(entry));
        true
    }

    /// A fetched record that is not for this group (another color): as if
    /// acknowledged.
    pub(crate) fn skip(&mut self, partition: i32, offset: i64) {
        if let Some(part) = self.parts.get_mut(&partition) {
            if part.next.is_none_or(|n| offset >= n) {
                part.next = Some(offset + 1);
            }
        }
    }

    /// An entry is done with: no longer outstanding in its partition.
    pub(super) fn settle(&mut self, id: EntryId) {
        if let Some(part) = self.parts.get_mut(&(id.ms as i32)) {
            part.outstanding.remove(&(id.seq as i64));
        }
    }

    /// Partitions held (and not suspended) whose state differs from what
    /// Kafka last acknowledged: the commits to send.
    pub(crate) fn due_commits(&self) -> Vec<Commit> {
        self.commits_where(|_, part| !part.suspended, true)
    }

    /// The whole current state of `partitions`, whatever was committed
    /// before: what the commit before a revocation sends.
    pub(crate) fn state_of(&self, partitions: &[i32]) -> Vec<Commit> {
        self.commits_where(|p, _| partitions.contains(&p), false)
    }

    /// The whole current state of every partition held: what the commit at
    /// a graceful stop sends.
    pub(crate) fn state(&self) -> Vec<Commit> {
        self.commits_where(|_, part| !part.suspended, false)
    }

    /// Whether Kafka has the whole current state of `partitions`.
    pub(crate) fn is_committed(&self, partitions: &[i32]) -> bool {
        self.commits_where(|p, _| partitions.contains(&p), true).is_empty()
    }

    fn commits_where(&self, wanted: impl Fn(i32, &Part) -> bool, only_changed: bool) -> Vec<Commit> {
        let mut due = Vec::new();
        for (&partition, part) in &self.parts {
            if !wanted(partition, part) {
                continue;
            }
            let Some(offset) = part.point() else { continue };
            let metadata = part.metadata();
            if only_changed && part.committed.as_ref().is_some_and(|(o, m)| *o == offset && *m == metadata) {
                continue;
            }
            due.push(Commit { partition, offset, metadata });
        }
        due
    }

    /// Kafka acknowledged `commits`: they count from now on (a partition
    /// that left meanwhile is not held, so nothing is kept of it).
    pub(crate) fn committed(&mut self, commits: &[Commit]) {
        for c in commits {
            if let Some(part) = self.parts.get_mut(&c.partition) {
                part.committed = Some((c.offset, c.metadata.clone()));
            }
        }
    }

    /// Per partition that has fetched something: one past the highest
    /// offset fetched, and how many of its entries wait to be handed out.
    pub(crate) fn fetched(&self) -> HashMap<i32, Fetched> {
        let mut fetched: HashMap<i32, Fetched> = self
            .parts
            .iter()
            .filter_map(|(p, part)| Some((*p, Fetched { next: part.next?, ready: 0 })))
            .collect();
        for e in &self.ready {
            if let Some(f) = fetched.get_mut(&e.partition()) {
                f.ready += 1;
            }
        }
        fetched
    }
}

/// What a partition has fetched: one past the highest offset, and how many
/// of its entries wait to be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub next: i64,
    pub ready: usize,
}

/// One partition's commit: the offset below which every entry is
/// acknowledged, and the acknowledged ranges above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{book, commits, entry, id};
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_commit_counts_once_kafka_acknowledged_it() {
        let mut b = book(100, None, 0);
        let now = Instant::now();
        (0..4).for_each(|o| assert!(b.push(entry(0, o))));
        b.deliver("a", 4, false, now);
        b.ack(&[id("0-0"), id("0-2")]);
        let sent = b.due_commits();
        assert_eq!(sent, vec![Commit { partition: 0, offset: 1, metadata: "2".into() }]);
        // Not acknowledged (the coordinator was away): due again, whole.
        assert_eq!(b.due_commits(), sent, "a failed commit is sent again");
        b.committed(&sent);
        assert!(b.due_commits().is_empty());
        // Before a revocation and at a stop the whole state goes, whatever
        // was committed before.
        assert_eq!(b.state_of(&[0, 5]), sent);
        assert_eq!(b.state(), sent);
        assert!(b.is_committed(&[0]));
        b.ack(&[id("0-1")]);
        assert_eq!(b.due_commits(), vec![Commit { partition: 0, offset: 3, metadata: "".into() }]);
        assert!(!b.is_committed(&[0]) && b.is_committed(&[1]));
        let counts = b.counts();
        assert_eq!((counts.delivered, counts.acknowledged), (4, 3));
    }

    #[test]
    fn a_restart_skips_what_the_metadata_says_was_acknowledged() {
        let ranges = parse_metadata("1,3-4,9");
        assert_eq!(ranges, vec![1..=1, 3..=4, 9..=9]);
        assert!(parse_metadata("3,1").is_empty(), "not ours");
        assert!(parse_metadata("x").is_empty());
        let mut b = book(100, None, 0);
        b.assign(0, ranges);
        let pushed: Vec<i64> = (0..10).filter(|&o| b.push(entry(0, o))).collect();
        assert_eq!(pushed, [0, 2, 5, 6, 7, 8]);
        // Before anything is handed out, the ranges still ahead are kept.
        let mut b2 = book(100, None, 0);
        b2.assign(0, vec![5..=6]);
        b2.push(entry(0, 2));
        assert_eq!(commits(&mut b2), vec![(0, 2, "5-6".to_string())]);
    }

    #[test]
    fn an_eager_rebalance_keeps_the_partitions_that_come_back() {
        let mut b = book(100, None, 0);
        let now = Instant::now();
        b.push(entry(0, 0));
        b.push(entry(1, 0));
        b.deliver("a", 2, false, now);
        b.suspend(&[0, 1]);
        assert!(commits(&mut b).is_empty(), "nothing committed while suspended");
        assert_eq!(b.reassigned(&[1, 2]), vec![2]);
        assert_eq!(b.partitions(), [1]);
        assert_eq!(b.ack(&[id("0-0"), id("1-0")]), 1, "partition 0 went, partition 1 came back as it was");
        assert!(!b.push(entry(1, 0)), "refetched from the commit: not handed out again");
    }

    #[test]
    fn metadata_never_repeats_a_range() {
        let mut b = book(100, None, 0);
        let now = Instant::now();
        b.assign(0, vec![3..=4, 8..=9]);
        (0..4).for_each(|o| {
            b.push(entry(0, o));
        });
        b.deliver("a", 10, false, now);
        b.ack(&[id("0-1")]);
        let (_, point, metadata) = commits(&mut b).pop().unwrap();
        assert_eq!((point, metadata.as_str()), (0, "1,3,4,8-9"));
        assert!(!parse_metadata(&metadata).is_empty(), "it parses back");
    }

    #[test]
    fn a_revoked_partition_leaves_the_book() {
        let mut b = book(100, None, 0);
        let now = Instant::now();
        b.push(entry(0, 0));
        b.push(entry(1, 0));
        b.push(entry(1, 1));
        b.deliver("a", 2, false, now);
        b.revoke(1);
        assert_eq!(b.ack(&[id("1-0")]), 0, "an entry of a revoked partition is not pending any more");
        assert!(b.deliver("a", 10, false, now).entries.is_empty());
        assert_eq!(b.partitions(), [0]);
        assert_eq!(b.ack(&[id("0-0")]), 1);
    }

    #[test]
    fn metadata_is_bounded() {
        let mut b = book(100_000, None, 0);
        let now = Instant::now();
        (0..4000).for_each(|o| assert!(b.push(entry(0, o))));
        b.deliver("a", 4000, false, now);
        let every_other: Vec<EntryId> = (1..4000).step_by(2).map(|o| EntryId::of(0, o)).collect();
        b.ack(&every_other);
        let (_, _, metadata) = commits(&mut b).pop().unwrap();
        assert!(metadata.len() <= MAX_METADATA && metadata.starts_with("1,3,5"), "{}", metadata.len());
        assert!(!parse_metadata(&metadata).is_empty());
    }
}
