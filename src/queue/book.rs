//! The bookkeeping of one queue group, free of Kafka, threads and sockets
//! so it is unit-tested directly: the entries fetched and not yet handed
//! out, the pending entries list (PEL) of Redis's consumer groups and the
//! consumers, which the stream commands read and change through
//! `attached.rs`; per partition what is outstanding and what to commit is
//! in `book/partitions.rs`. Its answers are named types, not tuples.

mod partitions;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use super::entry::{Entry, EntryId};
use partitions::Part;
pub(crate) use partitions::{parse_metadata, Commit};

/// How a group hands out and takes back entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BookSettings {
    /// Most entries pending at once; at the cap, `>` reads get nothing new.
    pub max_pending: usize,
    /// An entry pending this long goes to the next `>` read; `None`: only
    /// `XCLAIM`/`XAUTOCLAIM` move it.
    pub visibility_timeout: Option<Duration>,
    /// An entry about to be delivered more often than this goes to the
    /// dead-letter topic instead; 0: never.
    pub max_deliveries: u64,
}

/// A pending entry: who has it, since when, how often it was delivered.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub entry: Arc<Entry>,
    pub consumer: Arc<str>,
    pub delivered: Instant,
    pub deliveries: u64,
}

/// What a consumer did last.
#[derive(Debug, Clone, Copy)]
struct ConsumerSeen {
    /// Its last command on the group.
    seen: Instant,
    /// Its last read or claim that got entries.
    active: Option<Instant>,
}

/// A consumer as `XINFO CONSUMERS` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerInfo {
    pub name: Arc<str>,
    /// Its entries pending.
    pub pending: usize,
    /// Its last command on the group.
    pub seen: Instant,
    /// Its last read or claim that got entries.
    pub active: Option<Instant>,
}

/// What a delivery hands out: entries for the reader, and entries past
/// their deliveries for the dead-letter topic.
#[derive(Debug, Default)]
pub(crate) struct Handed {
    pub entries: Vec<Arc<Entry>>,
    pub dead: Vec<Arc<Entry>>,
}

/// The `XCLAIM`/`XAUTOCLAIM` options that change the claimed entries.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClaimOptions {
    /// `JUSTID`: the delivery count stays.
    pub just_id: bool,
    /// `IDLE`/`TIME`: the new delivery time.
    pub delivered: Option<Instant>,
    /// `RETRYCOUNT`.
    pub deliveries: Option<u64>,
}

/// What a group did since its member joined, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Entries handed out by `>` reads for the first time.
    pub delivered: u64,
    /// Entries handed out again by a `>` read once past the visibility timeout.
    pub redelivered: u64,
    /// Entries moved to another consumer by `XCLAIM`/`XAUTOCLAIM`.
    pub claimed: u64,
    /// Entries the dead-letter topic has stored.
    pub dead_lettered: u64,
    /// Entries `XACK` acknowledged.
    pub acknowledged: u64,
}

impl Counts {
    /// In `metrics::QUEUE_EVENTS`' order.
    pub(crate) fn totals(&self) -> [u64; 5] {
        [self.delivered, self.redelivered, self.claimed, self.dead_lettered, self.acknowledged]
    }
}

/// `XPENDING`'s summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingSummary {
    /// Entries pending.
    pub count: usize,
    /// The lowest and highest pending ID; `None` when none is pending.
    pub bounds: Option<IdBounds>,
    /// Entries pending per consumer, by name.
    pub per_consumer: Vec<ConsumerPending>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdBounds {
    pub lowest: EntryId,
    pub highest: EntryId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerPending {
    pub consumer: Arc<str>,
    pub pending: usize,
}

/// Which pending entries `XPENDING` lists one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingRange {
    /// From `start` to `end`, both included.
    pub start: EntryId,
    pub end: EntryId,
    /// At most this many.
    pub count: usize,
    /// Only this consumer's.
    pub consumer: Option<String>,
    /// Only entries idle at least this long.
    pub min_idle: Option<Duration>,
}

/// What an `XAUTOCLAIM` did: the ID to continue from (`0-0` when the list
/// is done) and what it handed out.
#[derive(Debug, Default)]
pub(crate) struct AutoClaimed {
    pub next: EntryId,
    pub handed: Handed,
}

/// One queue group's state.
#[derive(Debug)]
pub(crate) struct Book {
    settings: BookSettings,
    parts: BTreeMap<i32, Part>,
    ready: VecDeque<Arc<Entry>>,
    /// What the ready entries hold, in bytes.
    ready_bytes: usize,
    pending: BTreeMap<EntryId, Pending>,
    /// Entries handed to the dead-letter topic, not yet acknowledged there.
    dying: BTreeMap<EntryId, Arc<Entry>>,
    consumers: BTreeMap<Arc<str>, ConsumerSeen>,
    /// No pending entry can pass the visibility timeout before this: `>`
    /// reads look for expired entries only from then on.
    next_expiry: Instant,
    /// The last entry a `>` read handed out, and how many it has.
    last_delivered: Option<EntryId>,
    entries_read: u64,
    counts: Counts,
}

impl Book {
    pub(crate) fn new(settings: BookSettings) -> Book {
        Book {
            settings,
            parts: BTreeMap::new(),
            ready: VecDeque::new(),
            ready_bytes: 0,
            pending: BTreeMap::new(),
            dying: BTreeMap::new(),
            consumers: BTreeMap::new(),
            next_expiry: Instant::now(),
            last_delivered: None,
            entries_read: 0,
            counts: Counts::default(),
        }
    }

    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub(crate) fn ready_bytes(&self) -> usize {
        self.ready_bytes
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn touch(&mut self, consumer: &str, now: Instant) -> Arc<str> {
        match self.consumers.get_key_value(consumer) {
            Some((name, _)) => {
                let name = name.clone();
                self.consumers.get_mut(&name).expect("just found").seen = now;
                name
            }
            None => {
                let name: Arc<str> = consumer.into();
                self.consumers.insert(name.clone(), ConsumerSeen { seen: now, active: None });
                name
            }
        }
    }

    /// `XGROUP CREATECONSUMER`: whether the consumer is new.
    pub(crate) fn create_consumer(&mut self, consumer: &str, now: Instant) -> bool {
        let new = !self.consumers.contains_key(consumer);
        self.touch(consumer, now);
        new
    }

    fn active(&mut self, consumer: &Arc<str>, now: Instant) {
        if let Some(c) = self.consumers.get_mut(consumer) {
            c.active = Some(now);
        }
    }

    /// An `XREADGROUP ... >`: up to `count` entries for `consumer`, first
    /// those past the visibility timeout, then new ones, within the pending
    /// cap. With `no_ack` they are acknowledged as handed out.
    pub(crate) fn deliver(&mut self, consumer: &str, count: usize, no_ack: bool, now: Instant) -> Handed {
        let name = self.touch(consumer, now);
        let mut handed = Handed::default();
        let timeout = self.settings.visibility_timeout.filter(|_| now >= self.next_expiry);
        if let Some(timeout) = timeout {
            let expired: Vec<EntryId> = self
                .pending
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.delivered) >= timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                if handed.entries.len() >= count {
                    break;
                }
                let p = self.pending.get_mut(&id).expect("listed");
                if self.settings.max_deliveries > 0 && p.deliveries >= self.settings.max_deliveries {
                    let p = self.pending.remove(&id).expect("listed");
                    self.dying.insert(id, p.entry.clone());
                    handed.dead.push(p.entry);
                    continue;
                }
                p.consumer = name.clone();
                p.delivered = now;
                p.deliveries = p.deliveries.saturating_add(1);
                handed.entries.push(p.entry.clone());
                self.counts.redelivered += 1;
            }
        }
        if let Some(timeout) = timeout {
            // The earliest an entry left pending can expire: no scan before.
            let earliest = self.pending.values().map(|p| p.delivered).min().unwrap_or(now);
            self.next_expiry = earliest + timeout;
        }
        while handed.entries.len() < count && (no_ack || self.pending.len() < self.settings.max_pending) {
            let Some(entry) = self.ready.pop_front() else { break };
            self.ready_bytes -= entry.size();
            self.last_delivered = Some(entry.id);
            self.entries_read += 1;
            self.counts.delivered += 1;
            if no_ack {
                self.settle(entry.id);
            } else {
                let p =
                    Pending { entry: entry.clone(), consumer: name.clone(), delivered: now, deliveries: 1 };
                self.pending.insert(entry.id, p);
            }
            handed.entries.push(entry);
        }
        if !handed.entries.is_empty() {
            self.active(&name, now);
        }
        handed
    }

    /// An `XREADGROUP` with an ID: `consumer`'s own pending entries after
    /// `after`, each delivered once more now (as Redis reads history: its
    /// delivery count raised, its idle time reset).
    pub(crate) fn history(
        &mut self,
        consumer: &str,
        after: EntryId,
        count: usize,
        now: Instant,
    ) -> Vec<Arc<Entry>> {
        self.touch(consumer, now);
        // `0` means all: Redis never makes ID 0-0, but partition 0's first
        // record is 0-0.
        let start = match after {
            EntryId::MIN => EntryId::MIN,
            _ => match after.next() {
                Some(id) => id,
                None => return Vec::new(),
            },
        };
        self.pending
            .range_mut(start..)
            .filter(|(_, p)| &*p.consumer == consumer)
            .take(count)
            .map(|(_, p)| {
                p.delivered = now;
                p.deliveries = p.deliveries.saturating_add(1);
                p.entry.clone()
            })
            .collect()
    }

    /// `XACK`: how many of `ids` were pending (and are acknowledged now).
    pub(crate) fn ack(&mut self, ids: &[EntryId]) -> usize {
        let mut acked = 0;
        for id in ids {
            if self.pending.remove(id).is_some() {
                self.settle(*id);
                acked += 1;
                self.counts.acknowledged += 1;
            }
        }
        acked
    }

    /// The dead-letter topic has the entry (`stored`), or refused it: then
    /// it is handed out again as if new.
    pub(crate) fn dead_lettered(&mut self, id: EntryId, stored: bool) {
        let Some(entry) = self.dying.remove(&id) else { return };
        if stored {
            self.settle(id);
            self.counts.dead_lettered += 1;
        } else {
            self.ready_bytes += entry.size();
            self.ready.push_front(entry);
        }
    }

    /// Moves one pending entry to `consumer` if it has been idle at least
    /// `min_idle`; `Err` with the entry when that delivery would pass
    /// `max_deliveries` (it goes to the dead-letter topic instead).
    fn claim_one(
        &mut self,
        name: &Arc<str>,
        id: EntryId,
        min_idle: Duration,
        options: ClaimOptions,
        now: Instant,
    ) -> Option<Result<Arc<Entry>, Arc<Entry>>> {
        let max = self.settings.max_deliveries;
        let p = self.pending.get_mut(&id)?;
        if now.saturating_duration_since(p.delivered) < min_idle {
            return None;
        }
        if !options.just_id && max > 0 && p.deliveries >= max {
            let p = self.pending.remove(&id).expect("found");
            self.dying.insert(id, p.entry.clone());
            return Some(Err(p.entry));
        }
        p.consumer = name.clone();
        p.delivered = options.delivered.unwrap_or(now);
        if let (Some(at), Some(timeout)) = (options.delivered, self.settings.visibility_timeout) {
            self.next_expiry = self.next_expiry.min(at + timeout);
        }
        match options.deliveries {
            Some(n) => p.deliveries = n,
            None if !options.just_id => p.deliveries = p.deliveries.saturating_add(1),
            None => {}
        }
        self.counts.claimed += 1;
        Some(Ok(p.entry.clone()))
    }

    /// [`Book::claim_one`], its outcome put in `handed`.
    fn claim_into(
        &mut self,
        handed: &mut Handed,
        name: &Arc<str>,
        id: EntryId,
        min_idle: Duration,
        options: ClaimOptions,
        now: Instant,
    ) {
        match self.claim_one(name, id, min_idle, options, now) {
            Some(Ok(e)) => handed.entries.push(e),
            Some(Err(e)) => handed.dead.push(e),
            None => {}
        }
    }

    /// `XCLAIM`: the entries of `ids` idle at least `min_idle` become
    /// `consumer`'s.
    pub(crate) fn claim(
        &mut self,
        consumer: &str,
        min_idle: Duration,
        ids: &[EntryId],
        options: ClaimOptions,
        now: Instant,
    ) -> Handed {
        let name = self.touch(consumer, now);
        let mut handed = Handed::default();
        for id in ids {
            self.claim_into(&mut handed, &name, *id, min_idle, options, now);
        }
        if !handed.entries.is_empty() {
            self.active(&name, now);
        }
        handed
    }

    /// `XAUTOCLAIM`: up to `count` entries idle at least `min_idle`, from
    /// `start` on; with the ID to continue from (`0-0` when the list is done).
    pub(crate) fn auto_claim(
        &mut self,
        consumer: &str,
        min_idle: Duration,
        start: EntryId,
        count: usize,
        options: ClaimOptions,
        now: Instant,
    ) -> AutoClaimed {
        let name = self.touch(consumer, now);
        // Redis looks at ten times COUNT entries at most per call.
        let scan: Vec<EntryId> =
            self.pending.range(start..).map(|(id, _)| *id).take(count * 10 + 1).collect();
        let mut handed = Handed::default();
        let mut next = EntryId::MIN;
        for (i, id) in scan.iter().enumerate() {
            if handed.entries.len() >= count || i == count * 10 {
                next = *id;
                break;
            }
            self.claim_into(&mut handed, &name, *id, min_idle, options, now);
        }
        if !handed.entries.is_empty() {
            self.active(&name, now);
        }
        AutoClaimed { next, handed }
    }

    /// `XPENDING key group`: the count, lowest and highest ID, and entries
    /// per consumer.
    pub(crate) fn summary(&self) -> PendingSummary {
        let bounds = self.pending.keys().next().copied().zip(self.pending.keys().next_back().copied());
        let mut per: BTreeMap<Arc<str>, usize> = BTreeMap::new();
        for p in self.pending.values() {
            *per.entry(p.consumer.clone()).or_default() += 1;
        }
        PendingSummary {
            count: self.pending.len(),
            bounds: bounds.map(|(lowest, highest)| IdBounds { lowest, highest }),
            per_consumer: per
                .into_iter()
                .map(|(consumer, pending)| ConsumerPending { consumer, pending })
                .collect(),
        }
    }

    /// `XPENDING key group [IDLE ms] start end count [consumer]`.
    pub(crate) fn pending_range(&self, range: &PendingRange) -> Vec<Pending> {
        if range.start > range.end {
            return Vec::new();
        }
        let now = Instant::now();
        self.pending
            .range(range.start..=range.end)
            .map(|(_, p)| p)
            .filter(|p| range.consumer.as_deref().is_none_or(|c| &*p.consumer == c))
            .filter(|p| range.min_idle.is_none_or(|m| now.saturating_duration_since(p.delivered) >= m))
            .take(range.count)
            .cloned()
            .collect()
    }

    /// `XINFO CONSUMERS`: each consumer, its pending count and when it was
    /// last seen and active.
    pub(crate) fn consumers(&self) -> Vec<ConsumerInfo> {
        let mut per: HashMap<&str, usize> = HashMap::new();
        for p in self.pending.values() {
            *per.entry(&p.consumer).or_default() += 1;
        }
        self.consumers
            .iter()
            .map(|(name, seen)| ConsumerInfo {
                name: name.clone(),
                pending: per.get(&**name).copied().unwrap_or(0),
                seen: seen.seen,
                active: seen.active,
            })
            .collect()
    }

    /// How many consumers the group has.
    pub(crate) fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// The last entry a `>` read handed out.
    pub(crate) fn last_delivered(&self) -> Option<EntryId> {
        self.last_delivered
    }

    /// How many entries `>` reads handed out.
    pub(crate) fn entries_read(&self) -> u64 {
        self.entries_read
    }

    /// Counters of what the group did, for `/metrics`.
    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }
}

/// What the tests of the book and its partitions build on.
#[cfg(test)]
pub(super) mod test_support {
    use super::*;

    /// Up to `count` pending entries from `start` to `end`, of anyone, idle or not.
    pub(in crate::queue) fn range(start: EntryId, end: EntryId, count: usize) -> PendingRange {
        PendingRange { start, end, count, consumer: None, min_idle: None }
    }

    pub(in crate::queue) fn entry(partition: i32, offset: i64) -> Entry {
        Entry {
            id: EntryId::of(partition, offset),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            headers: Vec::new(),
        }
    }

    pub(in crate::queue) fn book(max_pending: usize, visibility: Option<u64>, max_deliveries: u64) -> Book {
        let mut b = Book::new(BookSettings {
            max_pending,
            visibility_timeout: visibility.map(Duration::from_millis),
            max_deliveries,
        });
        b.assign(0, Vec::new());
        b.assign(1, Vec::new());
        b
    }

    pub(in crate::queue) fn ids(entries: &[Arc<Entry>]) -> Vec<String> {
        entries.iter().map(|e| e.id.to_string()).collect()
    }

    /// The commits due, acknowledged by Kafka at once.
    pub(in crate::queue) fn commits(b: &mut Book) -> Vec<(i32, i64, String)> {
        let due = b.due_commits();
        b.committed(&due);
        due.into_iter().map(|c| (c.partition, c.offset, c.metadata)).collect()
    }

    pub(in crate::queue) fn id(s: &str) -> EntryId {
        EntryId::parse(s.as_bytes(), 0).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{book, commits, entry, id, ids, range};
    use super::*;

    #[test]
    fn new_entries_become_pending_and_acks_move_the_commit_point() {
        let mut b = book(100, None, 0);
        let now = Instant::now();
        for o in 0..5 {
            assert!(b.push(entry(0, o)));
        }
        assert!(!b.push(entry(0, 3)), "an offset fetched again is not handed out twice");
        assert!(!b.push(entry(7, 0)), "a partition not held");
        assert_eq!(ids(&b.deliver("a", 2, false, now).entries), ["0-0", "0-1"]);
        assert_eq!(ids(&b.deliver("b", 10, false, now).entries), ["0-2", "0-3", "0-4"]);
        assert_eq!(commits(&mut b), vec![(0, 0, "".to_string())]);
        // Acks above the gap at 0-0 do not move the point, but are remembered.
        assert_eq!(b.ack(&[id("0-1"), id("0-3"), id("0-3"), id("9-9")]), 2);
        assert_eq!(commits(&mut b), vec![(0, 0, "1,3".to_string())]);
        assert_eq!(b.ack(&[id("0-0")]), 1);
        assert_eq!(commits(&mut b), vec![(0, 2, "3".to_string())]);
        assert!(commits(&mut b).is_empty(), "nothing moved");
        assert_eq!(b.ack(&[id("0-2"), id("0-4")]), 2);
        assert_eq!(commits(&mut b), vec![(0, 5, "".to_string())]);
        assert_eq!(b.pending_len(), 0);
    }

    #[test]
    fn history_returns_the_consumers_own_pending_entries() {
        let mut b = book(100, None, 0);
        let now = Instant::now();
        (0..4).for_each(|o| assert!(b.push(entry(1, o))));
        b.deliver("a", 2, false, now);
        b.deliver("b", 2, false, now);
        assert_eq!(ids(&b.history("a", EntryId::MIN, 10, now)), ["1-0", "1-1"]);
        b.push(entry(0, 0));
        b.deliver("d", 1, false, now);
        assert_eq!(ids(&b.history("d", EntryId::MIN, 10, now)), ["0-0"], "0 means all, 0-0 too");
        assert_eq!(ids(&b.history("a", id("1-0"), 10, now)), ["1-1"]);
        assert_eq!(ids(&b.history("b", EntryId::MIN, 1, now)), ["1-2"]);
        assert!(b.history("c", EntryId::MIN, 10, now).is_empty());
        let p = b.pending_range(&range(id("1-1"), id("1-1"), 1));
        assert_eq!(p[0].deliveries, 3, "read, then read twice as history");
    }

    #[test]
    fn the_pending_cap_holds_new_entries_back() {
        let mut b = book(3, None, 0);
        let now = Instant::now();
        (0..5).for_each(|o| assert!(b.push(entry(0, o))));
        assert_eq!(b.deliver("a", 10, false, now).entries.len(), 3);
        assert!(b.deliver("a", 10, false, now).entries.is_empty());
        b.ack(&[id("0-0")]);
        assert_eq!(ids(&b.deliver("a", 10, false, now).entries), ["0-3"]);
        // NOACK entries are not pending: the cap does not hold them.
        assert_eq!(ids(&b.deliver("a", 10, true, now).entries), ["0-4"]);
    }

    #[test]
    fn the_visibility_timeout_redelivers_then_dead_letters() {
        let mut b = book(100, Some(1000), 2);
        let t0 = Instant::now();
        b.push(entry(0, 0));
        b.push(entry(0, 1));
        assert_eq!(b.deliver("a", 1, false, t0).entries.len(), 1);
        // Not yet expired: the next read gets the new entry.
        assert_eq!(ids(&b.deliver("b", 1, false, t0).entries), ["0-1"]);
        let t1 = t0 + Duration::from_millis(1500);
        let h = b.deliver("b", 10, false, t1);
        assert_eq!(ids(&h.entries), ["0-0", "0-1"]);
        let p = b.pending_range(&range(EntryId::MIN, EntryId::MAX, 10));
        assert!(p.iter().all(|p| &*p.consumer == "b" && p.deliveries == 2));
        // A third delivery would pass max_deliveries: dead-lettered instead.
        let h = b.deliver("c", 10, false, t1 + Duration::from_millis(1500));
        assert!(h.entries.is_empty());
        assert_eq!(ids(&h.dead), ["0-0", "0-1"]);
        assert_eq!(
            commits(&mut b),
            vec![(0, 0, "".to_string())],
            "not acknowledged until the dead-letter topic has them"
        );
        b.dead_lettered(id("0-0"), true);
        b.dead_lettered(id("0-1"), false);
        assert_eq!(commits(&mut b), vec![(0, 1, "".to_string())]);
        assert_eq!(
            ids(&b.deliver("c", 10, false, t1).entries),
            ["0-1"],
            "refused by the dead-letter topic: again"
        );
    }

    #[test]
    fn claims_move_idle_entries() {
        let mut b = book(100, None, 3);
        let t0 = Instant::now();
        (0..30).for_each(|o| assert!(b.push(entry(0, o))));
        b.deliver("a", 30, false, t0);
        let t1 = t0 + Duration::from_secs(10);
        let none = b.claim("b", Duration::from_secs(20), &[id("0-0")], ClaimOptions::default(), t1);
        assert!(none.entries.is_empty());
        let got = b.claim("b", Duration::from_secs(5), &[id("0-0"), id("0-99")], ClaimOptions::default(), t1);
        assert_eq!(ids(&got.entries), ["0-0"]);
        let got = b.auto_claim("b", Duration::from_secs(5), id("0-1"), 2, ClaimOptions::default(), t1);
        assert_eq!((got.next, ids(&got.handed.entries)), (id("0-3"), vec!["0-1".into(), "0-2".into()]));
        let got = b.auto_claim("b", Duration::ZERO, id("0-3"), 100, ClaimOptions::default(), t1);
        assert_eq!((got.next, got.handed.entries.len()), (EntryId::MIN, 27));
        // 0-0 was delivered twice (read, XCLAIM); a third claim makes three,
        // and the next dead-letters it (and claims the following entry instead).
        b.auto_claim("c", Duration::ZERO, EntryId::MIN, 1, ClaimOptions::default(), t1);
        let got = b.auto_claim("c", Duration::ZERO, EntryId::MIN, 1, ClaimOptions::default(), t1);
        assert_eq!(ids(&got.handed.dead), ["0-0"]);
        let summary = b.summary();
        assert_eq!(summary.count, 29);
        assert_eq!(summary.bounds, Some(IdBounds { lowest: id("0-1"), highest: id("0-29") }));
        let per = |consumer: &str, pending| ConsumerPending { consumer: consumer.into(), pending };
        assert_eq!(summary.per_consumer, [per("b", 28), per("c", 1)]);
    }

    #[test]
    fn pending_entries_by_range_consumer_and_idle_time() {
        let mut b = book(100, None, 0);
        let t0 = Instant::now() - Duration::from_secs(60);
        (0..4).for_each(|o| assert!(b.push(entry(0, o))));
        b.deliver("a", 2, false, t0);
        b.deliver("b", 2, false, Instant::now());
        let listed = |b: &Book, r: &PendingRange| {
            ids(&b.pending_range(r).iter().map(|p| p.entry.clone()).collect::<Vec<_>>())
        };
        assert_eq!(listed(&b, &range(EntryId::MIN, EntryId::MAX, 10)), ["0-0", "0-1", "0-2", "0-3"]);
        assert_eq!(listed(&b, &range(id("0-1"), id("0-2"), 10)), ["0-1", "0-2"]);
        assert_eq!(listed(&b, &range(EntryId::MIN, EntryId::MAX, 3)), ["0-0", "0-1", "0-2"]);
        assert!(listed(&b, &range(id("0-2"), id("0-1"), 10)).is_empty());
        let of_b = PendingRange { consumer: Some("b".into()), ..range(EntryId::MIN, EntryId::MAX, 10) };
        assert_eq!(listed(&b, &of_b), ["0-2", "0-3"]);
        let idle =
            PendingRange { min_idle: Some(Duration::from_secs(30)), ..range(EntryId::MIN, EntryId::MAX, 10) };
        assert_eq!(listed(&b, &idle), ["0-0", "0-1"]);
    }

    #[test]
    fn consumers_and_what_the_group_read() {
        let mut b = book(100, None, 0);
        let now = Instant::now();
        (0..3).for_each(|o| assert!(b.push(entry(0, o))));
        assert!(b.create_consumer("idle", now));
        assert!(!b.create_consumer("idle", now));
        b.deliver("a", 3, false, now);
        assert_eq!((b.consumer_count(), b.last_delivered(), b.entries_read()), (2, Some(id("0-2")), 3));
        let info = b.consumers();
        assert_eq!(
            info.iter().map(|c| (&*c.name, c.pending, c.active.is_some())).collect::<Vec<_>>(),
            [("a", 3, true), ("idle", 0, false)]
        );
    }
}
