//! Why a partition does not acknowledge records, as far as a client can
//! tell: its leader, its replicas and in-sync replicas from the cluster's
//! metadata, and which of those brokers accept a connection.
//!
//! A producer learns nothing of it on its own. Below the minimum ISR the
//! leader answers `NOT_ENOUGH_REPLICAS`, which librdkafka retries silently
//! until the record times out; when the controllers have lost their quorum
//! too (two of three combined nodes down) the metadata never changes, the
//! ISR still lists the dead followers and the leader waits for them. Either
//! way the record's timeout alone says nothing. So when its records stall, a
//! producer's watcher (see `producer/watcher.rs`) asks for the metadata of the
//! topics its cluster's producers write (one look at a time per cluster), tries a TCP connection to each broker that leads or
//! follows in sync, and keeps what it finds per partition, for the errors
//! of the records that then time out. It asks through a client of its own
//! ([`MetadataClient`]): a broker serves one request of a connection at a
//! time, and the producer's connection to a leader that waits for its
//! in-sync replicas is held by the produce request until it times out.
//!
//! A frozen broker (SIGSTOP) still accepts connections (its kernel does);
//! it is not named. Nor is a topic whose `min.insync.replicas` exceeds its
//! replication factor: the metadata does not carry topic configs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::Cluster;

/// How long a broker gets to accept a test connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// The metadata request's timeout.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// The most brokers tried in one diagnosis; the rest are not named.
const MAX_PROBES: usize = 16;
/// The most topics a producer remembers for diagnosis.
const MAX_TOPICS: usize = 64;

/// One partition as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionState {
    pub id: i32,
    /// -1 when it has none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// What keeps `p` from acknowledging a record with acks=all, given the
/// brokers that did not accept a connection; `None` when it looks healthy.
pub(crate) fn describe(p: &PartitionState, unreachable: &BTreeSet<i32>) -> Option<String> {
    if p.leader < 0 {
        return Some("it has no leader".into());
    }
    let mut why = Vec::new();
    if unreachable.contains(&p.leader) {
        why.push(format!("its leader, broker {}, is unreachable", p.leader));
    }
    let followers: Vec<String> =
        unreachable.iter().filter(|&&b| b != p.leader && p.isr.contains(&b)).map(|b| b.to_string()).collect();
    match followers.as_slice() {
        [] => {}
        [one] => why.push(format!("its in-sync replica on broker {one} is unreachable")),
        many => why.push(format!("its in-sync replicas on brokers {} are unreachable", many.join(", "))),
    }
    if p.isr.len() < p.replicas.len() {
        why.push(format!("{} of {} replicas in sync", p.isr.len(), p.replicas.len()));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The brokers `describe` needs to know about: leaders and in-sync replicas.
fn brokers_to_probe(partitions: &[PartitionState]) -> BTreeSet<i32> {
    partitions.iter().flat_map(|p| p.isr.iter().copied().chain([p.leader])).filter(|&b| b >= 0).collect()
}

/// What a cluster's producers know of their topics' partitions. A finding
/// stays until a later look replaces it or a record of its partition is
/// acknowledged: a cluster that lost its controller quorum may stop
/// answering metadata requests for a while, and the findings from before
/// are still the best account of why records time out.
#[derive(Default)]
pub(crate) struct Health {
    /// The cluster, for the metadata client.
    cluster: Cluster,
    /// One look at a time, whichever producer's watcher asks.
    looking: Mutex<Looking>,
    /// Per (topic, partition), what keeps it from acknowledging records.
    found: Mutex<HashMap<(String, i32), String>>,
    /// Whether `found` holds anything, read without its lock on every
    /// acknowledged record.
    any: AtomicBool,
    /// Topics the producer wrote to lately.
    topics: Mutex<BTreeSet<String>>,
}

/// The client that looks, made at the first look, and when each topic was
/// last looked at.
#[derive(Default)]
struct Looking {
    client: Option<MetadataClient>,
    /// The client could not be made (said once).
    failed: bool,
    looked: HashMap<String, Instant>,
}

impl Health {
    pub(crate) fn new(cluster: Cluster) -> Health {
        Health { cluster, ..Health::default() }
    }

    /// Looks at those of `topics` not looked at within `every`, unless
    /// another producer of the cluster is looking now; `stop` is asked
    /// between topics (a refusal to serve first).
    pub(crate) fn look(&self, mut topics: Vec<String>, every: Duration, stop: &dyn Fn() -> bool) {
        let Ok(mut looking) = self.looking.try_lock() else { return };
        let now = Instant::now();
        topics.retain(|t| looking.looked.get(t).is_none_or(|at| now.duration_since(*at) >= every));
        if topics.is_empty() {
            return;
        }
        if looking.client.is_none() && !looking.failed {
            match MetadataClient::new(&self.cluster) {
                Ok(client) => looking.client = Some(client),
                Err(e) => {
                    log::warn!("cannot create a metadata client to see why records stall: {e}");
                    looking.failed = true;
                }
            }
        }
        let Some(client) = &looking.client else { return };
        client.diagnose(self, &topics, stop);
        if looking.looked.len() > MAX_TOPICS * 4 {
            looking.looked.clear();
        }
        let now = Instant::now();
        looking.looked.extend(topics.into_iter().map(|t| (t, now)));
    }

    /// Remembers that the producer writes to `topic`.
    pub(crate) fn wrote_to(&self, topic: &str) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if !topics.contains(topic) {
            if topics.len() >= MAX_TOPICS {
                topics.clear();
            }
            topics.insert(topic.to_owned());
        }
    }

    pub(crate) fn topics(&self) -> Vec<String> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// A record of `partition` of `topic` was acknowledged: whatever kept
    /// it from that is over.
    pub(crate) fn acknowledged(&self, topic: &str, partition: i32) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found.remove(&(topic.to_owned(), partition));
        self.any.store(!found.is_empty(), Ordering::Relaxed);
    }

    /// The finding on `partition` of `topic`, if any.
    pub(crate) fn of(&self, topic: &str, partition: i32) -> Option<String> {
        let found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found
            .get(&(topic.to_owned(), partition))
            .map(|why| format!("partition {partition} of topic '{topic}': {why}"))
    }

    /// The latest findings on the partitions of `topic`, for a record whose
    /// partition is not known (its delivery report never came).
    pub(crate) fn of_topic(&self, topic: &str) -> Option<String> {
        let found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        let mut partitions: Vec<(i32, &str)> =
            found.iter().filter(|((t, _), _)| t == topic).map(|((_, p), why)| (*p, why.as_str())).collect();
        partitions.sort();
        match partitions.as_slice() {
            [] => None,
            [(p, why)] => Some(format!("partition {p} of topic '{topic}': {why}")),
            many => Some(format!(
                "a partition of topic '{topic}': {}",
                many.iter().map(|(p, why)| format!("partition {p}: {why}")).collect::<Vec<_>>().join("; ")
            )),
        }
    }

    /// Asks the cluster about `topics` and keeps what is wrong with their
    /// partitions, replacing what was known of them. A topic whose metadata
    /// cannot be had keeps its earlier findings. Stops early (keeping what
    /// it found) when `stop` says so.
    fn diagnose<C: ClientContext>(&self, client: &Client<C>, topics: &[String], stop: &dyn Fn() -> bool) {
        let mut states: BTreeMap<&str, Vec<PartitionState>> = BTreeMap::new();
        let mut addresses: HashMap<i32, String> = HashMap::new();
        for topic in topics {
            if stop() {
                break;
            }
            let Ok(metadata) = client.fetch_metadata(Some(topic), METADATA_TIMEOUT) else { continue };
            for b in metadata.brokers() {
                addresses.insert(b.id(), format!("{}:{}", b.host(), b.port()));
            }
            let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else { continue };
            let partitions = t
                .partitions()
                .iter()
                .map(|p| PartitionState {
                    id: p.id(),
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    isr: p.isr().to_vec(),
                })
                .collect();
            states.insert(topic, partitions);
        }
        let wanted: BTreeSet<i32> = states.values().flat_map(|ps| brokers_to_probe(ps)).collect();
        let unreachable: BTreeSet<i32> = wanted
            .into_iter()
            .take(MAX_PROBES)
            .filter(|id| addresses.get(id).is_some_and(|a| !accepts_connections(a)))
            .collect();
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, partitions) in states {
            found.retain(|(t, _), _| t != topic);
            for p in &partitions {
                if let Some(why) = describe(p, &unreachable) {
                    found.insert((topic.to_owned(), p.id), why);
                }
            }
        }
        self.any.store(!found.is_empty(), Ordering::Relaxed);
    }
}

/// The client a producer's watcher asks for metadata: its own connections
/// to the brokers, opened on the first stall. It never produces.
pub(crate) struct MetadataClient(BaseProducer<Quiet>);

impl MetadataClient {
    pub(crate) fn new(cluster: &Cluster) -> KafkaResult<MetadataClient> {
        super::client_config(cluster).create_with_context(Quiet).map(MetadataClient)
    }

    /// As [`Health::diagnose`] through this client.
    fn diagnose(&self, health: &Health, topics: &[String], stop: &dyn Fn() -> bool) {
        health.diagnose(self.0.client(), topics, stop);
        // Serves the events its connections queued (errors), so they do
        // not pile up.
        self.0.poll(Duration::ZERO);
    }
}

/// The context of a [`MetadataClient`]: the producer beside it reports the
/// same broker failures, so its own go to the debug log only.
pub(crate) struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: RDKafkaLogLevel, fac: &str, message: &str) {
        log::debug!("librdkafka (metadata client): {fac} {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log::debug!("librdkafka (metadata client): {error}: {reason}");
    }
}

impl ProducerContext for Quiet {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Whether something accepts a TCP connection at `address` (host:port).
fn accepts_connections(address: &str) -> bool {
    let Ok(addrs) = address.to_socket_addrs() else { return false };
    addrs.into_iter().any(|a| TcpStream::connect_timeout(&a, CONNECT_TIMEOUT).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(id: i32, leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionState {
        PartitionState { id, leader, replicas: replicas.to_vec(), isr: isr.to_vec() }
    }

    fn down(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_healthy_partition_has_nothing_to_say() {
        assert_eq!(describe(&partition(0, 1, &[1, 2, 3], &[1, 2, 3]), &down(&[])), None);
        // A broker that is down but holds no replica of it is no concern.
        assert_eq!(describe(&partition(0, 1, &[1, 2], &[1, 2]), &down(&[3])), None);
    }

    #[test]
    fn names_a_missing_or_unreachable_leader() {
        assert_eq!(
            describe(&partition(2, -1, &[1, 2, 3], &[]), &down(&[])).as_deref(),
            Some("it has no leader")
        );
        assert_eq!(
            describe(&partition(1, 2, &[1, 2, 3], &[1, 2, 3]), &down(&[2])).as_deref(),
            Some("its leader, broker 2, is unreachable")
        );
    }

    #[test]
    fn names_unreachable_in_sync_followers_when_the_metadata_is_stale() {
        // Two of three combined nodes down: no controller quorum, so the ISR
        // still lists them while the leader waits for them.
        assert_eq!(
            describe(&partition(0, 1, &[1, 2, 3], &[1, 2, 3]), &down(&[2, 3])).as_deref(),
            Some("its in-sync replicas on brokers 2, 3 are unreachable")
        );
        assert_eq!(
            describe(&partition(0, 3, &[3, 2, 1], &[3, 2, 1]), &down(&[1, 2, 3])).as_deref(),
            Some(
                "its leader, broker 3, is unreachable; its in-sync replicas on brokers 1, 2 \
                 are unreachable"
            )
        );
    }

    #[test]
    fn names_a_shrunken_isr() {
        // The controller removed the dead followers: the leader answers
        // NOT_ENOUGH_REPLICAS, which librdkafka retries until the timeout.
        assert_eq!(
            describe(&partition(0, 1, &[1, 2, 3], &[1]), &down(&[2, 3])).as_deref(),
            Some("1 of 3 replicas in sync")
        );
        assert_eq!(
            describe(&partition(4, 1, &[1, 2, 3], &[1, 3]), &down(&[3])).as_deref(),
            Some("its in-sync replica on broker 3 is unreachable; 2 of 3 replicas in sync")
        );
    }

    #[test]
    fn probes_leaders_and_in_sync_replicas_only() {
        let partitions = [partition(0, 1, &[1, 2, 3], &[1, 2]), partition(1, -1, &[4, 5], &[])];
        assert_eq!(brokers_to_probe(&partitions), down(&[1, 2]));
    }

    #[test]
    fn findings_name_their_topic_and_end_with_an_acknowledgement() {
        let health = Health::default();
        let find = |partition: i32, why: &str| {
            health.found.lock().unwrap().insert(("t".into(), partition), why.into());
            health.any.store(true, Ordering::Relaxed);
        };
        find(0, "it has no leader");
        assert_eq!(health.of("t", 0).as_deref(), Some("partition 0 of topic 't': it has no leader"));
        assert_eq!(health.of("t", 1), None);
        assert_eq!(health.of("u", 0), None);
        assert_eq!(health.of_topic("t").as_deref(), Some("partition 0 of topic 't': it has no leader"));
        find(2, "1 of 3 replicas in sync");
        assert_eq!(
            health.of_topic("t").as_deref(),
            Some("a partition of topic 't': partition 0: it has no leader; partition 2: 1 of 3 replicas in sync")
        );
        assert_eq!(health.of_topic("u"), None);
        health.acknowledged("u", 0);
        health.acknowledged("t", 0);
        assert_eq!(health.of("t", 0), None);
        assert!(health.any.load(Ordering::Relaxed));
        health.acknowledged("t", 2);
        assert_eq!(health.of_topic("t"), None);
        assert!(!health.any.load(Ordering::Relaxed));
    }

    #[test]
    fn remembers_a_bounded_set_of_topics() {
        let health = Health::default();
        for i in 0..MAX_TOPICS + 3 {
            health.wrote_to(&format!("topic{i}"));
            health.wrote_to(&format!("topic{i}"));
        }
        assert!(health.topics().len() <= MAX_TOPICS);
        assert!(health.topics().contains(&format!("topic{}", MAX_TOPICS + 2)));
    }
}
