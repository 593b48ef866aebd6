//! The bookkeeping of one queue group, free of Kafka and sockets so it is
//! unit-tested directly: the entries fetched and not yet handed out, the
//! pending entries list (PEL) of Redis's consumer groups, the consumers, and
//! per partition the offset below which every entry is acknowledged (what
//! is committed) with the acknowledged ranges above it (kept in the commit's
//! metadata, so a restart does not hand them out again).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A stream entry ID as Redis writes it, `<ms>-<seq>`; databus's entries are
/// `<partition>-<offset>`. Ordered as Redis orders IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub(crate) const MIN: EntryId = EntryId { ms: 0, seq: 0 };
    pub(crate) const MAX: EntryId = EntryId { ms: u64::MAX, seq: u64::MAX };

    pub(crate) fn of(partition: i32, offset: i64) -> EntryId {
        EntryId { ms: partition as u64, seq: offset as u64 }
    }

    /// The partition and offset, if the ID can name a record.
    pub(crate) fn record(self) -> Option<(i32, i64)> {
        Some((i32::try_from(self.ms).ok()?, i64::try_from(self.seq).ok()?))
    }

    /// `<ms>-<seq>`, or `<ms>` alone (`seq` then `missing_seq`), as Redis
    /// parses an ID argument.
    pub(crate) fn parse(raw: &[u8], missing_seq: u64) -> Option<EntryId> {
        let text = std::str::from_utf8(raw).ok()?;
        let number =
            |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?;
        match text.split_once('-') {
            Some((ms, seq)) => Some(EntryId { ms: number(ms)?, seq: number(seq)? }),
            None => Some(EntryId { ms: number(text)?, seq: missing_seq }),
        }
    }

    /// A range bound: `-` and `+`, an ID, or `(ID` for an exclusive one
    /// (then the next or previous ID); `None` when malformed or when an
    /// exclusive bound leaves nothing.
    pub(crate) fn parse_bound(raw: &[u8], start: bool) -> Option<EntryId> {
        match raw {
            b"-" => return Some(EntryId::MIN),
            b"+" => return Some(EntryId::MAX),
            _ => {}
        }
        let (exclusive, raw) = match raw.strip_prefix(b"(") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let id = EntryId::parse(raw, if start { 0 } else { u64::MAX })?;
        match (exclusive, start) {
            (false, _) => Some(id),
            (true, true) => id.next(),
            (true, false) => id.previous(),
        }
    }

    pub(crate) fn next(self) -> Option<EntryId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(EntryId { seq, ..self }),
            None => Some(EntryId { ms: self.ms.checked_add(1)?, seq: 0 }),
        }
    }

    fn previous(self) -> Option<EntryId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(EntryId { seq, ..self }),
            None => Some(EntryId { ms: self.ms.checked_sub(1)?, seq: u64::MAX }),
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One record as a stream entry: its key, value and headers, owned, since a
/// pending entry may be handed out again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: EntryId,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The record's headers but `color`, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// The entry's fields as `XREADGROUP` shows them: `key` when the record
    /// has one, `value` when it is not empty (or nothing else would be
    /// shown), then each header.
    pub(crate) fn fields(&self) -> Vec<(&[u8], &[u8])> {
        let mut fields = Vec::with_capacity(self.headers.len() + 2);
        if !self.key.is_empty() {
            fields.push((&b"key"[..], self.key.as_slice()));
        }
        if !self.value.is_empty() || (self.key.is_empty() && self.headers.is_empty()) {
            fields.push((&b"value"[..], self.value.as_slice()));
        }
        fields.extend(self.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())));
        fields
    }

    fn partition(&self) -> i32 {
        self.id.ms as i32
    }

    /// The bytes it holds.
    fn size(&self) -> usize {
        self.key.len() + self.value.len() + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    fn offset(&self) -> i64 {
        self.id.seq as i64
    }
}

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
pub(crate) struct ConsumerSeen {
    /// Its last command on the group.
    pub seen: Instant,
    /// Its last read or claim that got entries.
    pub active: Option<Instant>,
}

/// One assigned partition.
#[derive(Debug, Default)]
struct Part {
    /// Offsets fetched and not acknowledged: ready, pending or being dead-lettered.
    outstanding: BTreeSet<i64>,
    /// One past the highest offset fetched; `None` before the first.
    next: Option<i64>,
    /// Offsets acknowledged before this assignment (from the commit's
    /// metadata), not fetched yet: inclusive ranges, ascending.
    acked_ahead: Vec<(i64, i64)>,
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
            self.acked_ahead.iter().filter(|&&(_, hi)| hi >= fetched).map(|&(lo, hi)| (lo.max(fetched), hi)),
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
        self.acked_ahead.retain(|&(_, hi)| hi >= offset);
        self.acked_ahead.first().is_some_and(|&(lo, _)| lo <= offset)
    }
}

/// Room the brokers give commit metadata (`offset.metadata.max.bytes`,
/// 4096 by default), with some to spare.
const MAX_METADATA: usize = 4000;

/// Parses commit metadata written by [`Part::metadata`]; anything else
/// (another client's metadata) reads as no ranges.
pub(crate) fn parse_metadata(text: &str) -> Vec<(i64, i64)> {
    let mut ranges = Vec::new();
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let range = match item.split_once('-') {
            Some((lo, hi)) => lo.parse().ok().zip(hi.parse().ok()),
            None => item.parse().ok().map(|o| (o, o)),
        };
        match range {
            Some((lo, hi)) if lo <= hi && ranges.last().is_none_or(|&(_, last)| last < lo) => {
                ranges.push((lo, hi))
            }
            _ => return Vec::new(),
        }
    }
    ranges
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

/// `XPENDING`'s summary: the count, the lowest and highest pending ID, and
/// entries per consumer.
pub(crate) type Summary = (usize, Option<(EntryId, EntryId)>, Vec<(Arc<str>, usize)>);

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
    pub last_delivered: Option<EntryId>,
    pub entries_read: u64,
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

    /// A partition comes to this member; `acked` are the ranges the last
    /// commit says were acknowledged above its offset.
    pub(crate) fn assign(&mut self, partition: i32, acked: Vec<(i64, i64)>) {
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

    /// An entry is done with: no longer outstanding in its partition.
    fn settle(&mut self, id: EntryId) {
        if let Some(part) = self.parts.get_mut(&(id.ms as i32)) {
            part.outstanding.remove(&(id.seq as i64));
        }
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
    ) -> (EntryId, Handed) {
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
        (next, handed)
    }

    /// `XPENDING key group`: the count, lowest and highest ID, and entries
    /// per consumer.
    pub(crate) fn summary(&self) -> Summary {
        let bounds = self.pending.keys().next().copied().zip(self.pending.keys().next_back().copied());
        let mut per: BTreeMap<Arc<str>, usize> = BTreeMap::new();
        for p in self.pending.values() {
            *per.entry(p.consumer.clone()).or_default() += 1;
        }
        (self.pending.len(), bounds, per.into_iter().collect())
    }

    /// `XPENDING key group [IDLE ms] start end count [consumer]`.
    pub(crate) fn pending_range(
        &self,
        start: EntryId,
        end: EntryId,
        count: usize,
        consumer: Option<&str>,
        min_idle: Option<Duration>,
    ) -> Vec<(EntryId, Pending)> {
        if start > end {
            return Vec::new();
        }
        let now = Instant::now();
        self.pending
            .range(start..=end)
            .filter(|(_, p)| consumer.is_none_or(|c| &*p.consumer == c))
            .filter(|(_, p)| min_idle.is_none_or(|m| now.saturating_duration_since(p.delivered) >= m))
            .take(count)
            .map(|(id, p)| (*id, p.clone()))
            .collect()
    }

    /// `XINFO CONSUMERS`: each consumer, its pending count and when it was
    /// last seen and active.
    pub(crate) fn consumers(&self) -> Vec<(Arc<str>, usize, ConsumerSeen)> {
        let mut per: HashMap<&str, usize> = HashMap::new();
        for p in self.pending.values() {
            *per.entry(&p.consumer).or_default() += 1;
        }
        self.consumers
            .iter()
            .map(|(name, seen)| (name.clone(), per.get(&**name).copied().unwrap_or(0), *seen))
            .collect()
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
    pub(crate) fn fetched(&self) -> HashMap<i32, (i64, usize)> {
        let mut fetched: HashMap<i32, (i64, usize)> =
            self.parts.iter().filter_map(|(p, part)| Some((*p, (part.next?, 0)))).collect();
        for e in &self.ready {
            if let Some((_, ready)) = fetched.get_mut(&e.partition()) {
                *ready += 1;
            }
        }
        fetched
    }

    /// Counters of what the group did, for `/metrics`.
    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }
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
    use super::*;

    fn entry(partition: i32, offset: i64) -> Entry {
        Entry {
            id: EntryId::of(partition, offset),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            headers: Vec::new(),
        }
    }

    fn book(max_pending: usize, visibility: Option<u64>, max_deliveries: u64) -> Book {
        let mut b = Book::new(BookSettings {
            max_pending,
            visibility_timeout: visibility.map(Duration::from_millis),
            max_deliveries,
        });
        b.assign(0, Vec::new());
        b.assign(1, Vec::new());
        b
    }

    fn ids(entries: &[Arc<Entry>]) -> Vec<String> {
        entries.iter().map(|e| e.id.to_string()).collect()
    }

    /// The commits due, acknowledged by Kafka at once.
    fn commits(b: &mut Book) -> Vec<(i32, i64, String)> {
        let due = b.due_commits();
        b.committed(&due);
        due.into_iter().map(|c| (c.partition, c.offset, c.metadata)).collect()
    }

    fn id(s: &str) -> EntryId {
        EntryId::parse(s.as_bytes(), 0).unwrap()
    }

    #[test]
    fn ids_parse_as_redis_parses_them() {
        assert_eq!(EntryId::parse(b"3-17", 0), Some(EntryId { ms: 3, seq: 17 }));
        assert_eq!(EntryId::parse(b"3", 9), Some(EntryId { ms: 3, seq: 9 }));
        assert_eq!(EntryId::parse(b"18446744073709551615-0", 0), Some(EntryId { ms: u64::MAX, seq: 0 }));
        for bad in [&b""[..], b"-", b"1-", b"-1", b"a-1", b"1-2-3", b"+1", b" 1", b"18446744073709551616"] {
            assert_eq!(EntryId::parse(bad, 0), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(EntryId::parse_bound(b"-", true), Some(EntryId::MIN));
        assert_eq!(EntryId::parse_bound(b"+", false), Some(EntryId::MAX));
        assert_eq!(EntryId::parse_bound(b"(2-5", true), Some(EntryId { ms: 2, seq: 6 }));
        assert_eq!(EntryId::parse_bound(b"(2-0", false), Some(EntryId { ms: 1, seq: u64::MAX }));
        assert_eq!(EntryId::parse_bound(b"2", false), Some(EntryId { ms: 2, seq: u64::MAX }));
        assert_eq!(EntryId::of(2, 40).to_string(), "2-40");
        assert_eq!(id("2-40").record(), Some((2, 40)));
        assert_eq!(id("99999999999-0").record(), None);
    }

    #[test]
    fn fields_show_key_value_and_headers() {
        let mut e = entry(0, 0);
        e.headers = vec![("a".into(), b"1".to_vec())];
        assert_eq!(e.fields(), vec![(&b"key"[..], &b"k"[..]), (b"value", b"v"), (b"a", b"1")]);
        let e = Entry { key: Vec::new(), value: Vec::new(), ..e };
        assert_eq!(e.fields(), vec![(&b"a"[..], &b"1"[..])]);
        let e = Entry { headers: Vec::new(), ..e };
        assert_eq!(e.fields(), vec![(&b"value"[..], &b""[..])]);
    }

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
        assert_eq!(ranges, vec![(1, 1), (3, 4), (9, 9)]);
        assert!(parse_metadata("3,1").is_empty(), "not ours");
        assert!(parse_metadata("x").is_empty());
        let mut b = book(100, None, 0);
        b.assign(0, ranges);
        let pushed: Vec<i64> = (0..10).filter(|&o| b.push(entry(0, o))).collect();
        assert_eq!(pushed, [0, 2, 5, 6, 7, 8]);
        // Before anything is handed out, the ranges still ahead are kept.
        let mut b2 = book(100, None, 0);
        b2.assign(0, vec![(5, 6)]);
        b2.push(entry(0, 2));
        assert_eq!(commits(&mut b2), vec![(0, 2, "5-6".to_string())]);
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
        let p = b.pending_range(id("1-1"), id("1-1"), 1, None, None);
        assert_eq!(p[0].1.deliveries, 3, "read, then read twice as history");
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
        b.assign(0, vec![(3, 4), (8, 9)]);
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
        let p = b.pending_range(EntryId::MIN, EntryId::MAX, 10, None, None);
        assert!(p.iter().all(|(_, p)| &*p.consumer == "b" && p.deliveries == 2));
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
        let (next, got) =
            b.auto_claim("b", Duration::from_secs(5), id("0-1"), 2, ClaimOptions::default(), t1);
        assert_eq!((next, ids(&got.entries)), (id("0-3"), vec!["0-1".into(), "0-2".into()]));
        let (next, got) = b.auto_claim("b", Duration::ZERO, id("0-3"), 100, ClaimOptions::default(), t1);
        assert_eq!((next, got.entries.len()), (EntryId::MIN, 27));
        // 0-0 was delivered twice (read, XCLAIM); a third claim makes three,
        // and the next dead-letters it (and claims the following entry instead).
        b.auto_claim("c", Duration::ZERO, EntryId::MIN, 1, ClaimOptions::default(), t1);
        let (_, got) = b.auto_claim("c", Duration::ZERO, EntryId::MIN, 1, ClaimOptions::default(), t1);
        assert_eq!(ids(&got.dead), ["0-0"]);
        let (count, bounds, per) = b.summary();
        assert_eq!((count, bounds), (29, Some((id("0-1"), id("0-29")))));
        assert_eq!(
            per.iter().map(|(c, n)| (c.to_string(), *n)).collect::<Vec<_>>(),
            [("b".into(), 28), ("c".into(), 1)]
        );
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
