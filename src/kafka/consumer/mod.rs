//! Consuming. Each subscriber connection owns one librdkafka `BaseConsumer`,
//! a member of the Kafka consumer group named by its auth group, with
//! auto-commit off: offsets are committed only by the client's `SET p o`.
//! Dropping it leaves the group at once, so its partitions move on without
//! waiting for a session timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Statistics};
use rdkafka::{Offset, TopicPartitionList};

use rdkafka::config::ClientConfig;

use super::broker_errors::{because, BrokerErrors};
use super::{Cluster, GroupProtocol};
use crate::metrics::LagGauge;

#[derive(Debug, Clone)]
pub(crate) struct SubscriberSettings {
    /// Most messages one MGET returns.
    pub batch_size: usize,
    /// How often a waiting MGET with at least one message returns it.
    pub tick: Duration,
    /// Longest an MGET waits before it answers an empty array.
    pub wait_timeout: Duration,
    pub idle_timeout: Duration,
    /// The consumer group's `session.timeout.ms`.
    pub session_timeout: Duration,
    /// How often librdkafka reports the consumer's statistics (its lag);
    /// zero turns them off.
    pub stats_interval: Duration,
}

/// The librdkafka configuration of one subscriber's group consumer; offsets
/// are committed only by the client.
pub(crate) fn consumer_config(
    cluster: &Cluster,
    group: &str,
    reset: &str,
    settings: &SubscriberSettings,
) -> ClientConfig {
    let mut config = super::client_config(cluster);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        // librdkafka pauses a partition's fetching for a second when its
        // local queue fills; with a backlog that stalls MGETs for up to
        // 0.7 s (BENCHMARKS.md, "Subscriber settings"). Resume after 10 ms instead.
        .set("fetch.queue.backoff.ms", "10")
        // Prefetch at most this many records per partition, so a
        // subscriber on a backlog holds megabytes, not tens of them.
        .set("queued.min.messages", "10000");
    match cluster.group_protocol {
        GroupProtocol::Classic => {
            config.set("session.timeout.ms", settings.session_timeout.as_millis().to_string());
        }
        // The session timeout and the assignor are the broker's then;
        // librdkafka refuses them.
        GroupProtocol::Consumer => {
            config.set("group.protocol", "consumer");
        }
    }
    if !settings.stats_interval.is_zero() {
        config.set("statistics.interval.ms", settings.stats_interval.as_millis().to_string());
    }
    config
}

/// Why a subscriber could not join or commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConsumeError {
    #[error("cannot create consumer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot read metadata of topic '{topic}' from cluster '{cluster}': {cause}{}", because(.last_error))]
    Metadata {
        cluster: String,
        topic: String,
        #[source]
        cause: Box<KafkaError>,
        last_error: Option<String>,
    },
    #[error("cluster '{cluster}' refused databus: {reason}")]
    Refused { cluster: String, reason: String },
    #[error("the cluster's ACLs do not let databus read {what}: {cause}")]
    Denied {
        /// `topic 't'` or `group 'g'`.
        what: String,
        #[source]
        cause: KafkaError,
    },
    #[error("topic '{0}' does not exist")]
    NoTopic(String),
    #[error("group '{group}' already has {members} members for the {partitions} partitions of topic '{topic}'; another would get no partition")]
    GroupFull { group: String, topic: String, members: usize, partitions: usize },
    #[error("commit failed: {0}")]
    Commit(#[source] KafkaError),
    #[error("cluster '{cluster}' does not support group_protocol = \"consumer\" (KIP-848, Apache Kafka 4.0+): set group_protocol = \"classic\"")]
    GroupProtocol { cluster: String },
    /// librdkafka gave the member up (a fatal error): nothing more comes.
    #[error("the consumer of cluster '{cluster}' failed for good: {reason}")]
    Fatal { cluster: String, reason: String },
    #[error("cluster '{cluster}' is unreachable: {cause}{}", because(.last_error))]
    Unreachable {
        cluster: String,
        #[source]
        cause: Box<KafkaError>,
        last_error: Option<String>,
    },
}

impl ConsumeError {
    /// Whether trying again later may succeed: a full group frees up, an
    /// unreachable cluster comes back, a commit is retried.
    pub(crate) fn may_pass(&self) -> bool {
        matches!(
            self,
            ConsumeError::Metadata { .. }
                | ConsumeError::Refused { .. }
                | ConsumeError::GroupFull { .. }
                | ConsumeError::Commit(_)
                | ConsumeError::Unreachable { .. }
        )
    }
}

/// One consumed record, borrowed from librdkafka's buffer while it is
/// looked at ([`GroupConsumer::poll`]): encoding it copies it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InMessage<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Milliseconds since the epoch; 0 when the record has none.
    pub timestamp_ms: i64,
    pub color: &'a [u8],
    pub metadata: Option<&'a [u8]>,
}

/// Subscriber connections per (cluster, group, topic) on this databus,
/// counted from the moment they subscribe: the cluster's DescribeGroups
/// lists a member only once its JoinGroup has completed, so two connections
/// authenticating at the same moment would both see room for one.
#[derive(Default)]
pub(crate) struct Memberships {
    count: Mutex<HashMap<(String, String, String), usize>>,
}

impl Memberships {
    /// Members per (group, topic), summed over clusters.
    pub(crate) fn counts(&self) -> Vec<((String, String), usize)> {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let mut sums: std::collections::BTreeMap<(String, String), usize> = Default::default();
        for ((_, group, topic), n) in count.iter() {
            *sums.entry((group.clone(), topic.clone())).or_default() += n;
        }
        sums.into_iter().collect()
    }
}

/// A counted member; uncounted when dropped.
pub(crate) struct Membership {
    registry: Arc<Memberships>,
    key: (String, String, String),
}

impl Membership {
    /// Counts `member` (a queue group's shared member, which has no limit).
    pub(crate) fn count(registry: &Arc<Memberships>, member: Member<'_>) -> Membership {
        let key = (member.cluster.to_owned(), member.group.to_owned(), member.topic.to_owned());
        *registry.count.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default() += 1;
        Membership { registry: registry.clone(), key }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut count = self.registry.count.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = count.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                count.remove(&self.key);
            }
        }
    }
}

/// How long joining waits for the topic's metadata, how long one request
/// may take (librdkafka holds a request while a login is in progress), and
/// how long it waits between two.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
const METADATA_TRY: Duration = Duration::from_secs(1);
const METADATA_RETRY: Duration = Duration::from_millis(250);

/// Keeps librdkafka's latest connection error, so that a failed join says
/// why (a wrong SASL password, an untrusted certificate, ...), and reports
/// the lag of the partitions held from librdkafka's statistics.
#[derive(Default)]
pub(crate) struct ConsumerErrors {
    errors: BrokerErrors,
    /// librdkafka reported a failed connection that no metadata answer has
    /// cleared since.
    failing: AtomicBool,
    /// The cluster's ACLs refusing the group or the topic, since taken.
    denied: Mutex<Option<KafkaError>>,
    /// librdkafka gave the member up: why (kept for every later command).
    fatal: Mutex<Option<ConsumeError>>,
    /// The topic and where its lag goes; absent in the config check.
    lag: Option<(String, LagGauge)>,
}

impl ClientContext for ConsumerErrors {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.errors.log(level, fac, message);
        if fac == "FAIL" {
            self.failed();
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, reason);
        self.keep_denied(error);
        self.failed();
    }

    /// Partitions being fetched (assigned to this member) with a committed
    /// offset: their high watermark minus that offset.
    fn stats(&self, statistics: Statistics) {
        let Some((topic, gauge)) = &self.lag else { return };
        let held = statistics.topics.get(topic).map(|t| {
            t.partitions
                .values()
                .filter(|p| {
                    p.partition >= 0 && !matches!(p.fetch_state.as_str(), "none" | "stopping" | "stopped")
                })
                .filter(|p| p.consumer_lag >= 0)
                .map(|p| (p.partition, p.consumer_lag))
                .collect::<Vec<_>>()
        });
        gauge.set(&held.unwrap_or_default());
    }
}

impl ConsumerContext for ConsumerErrors {}

impl ConsumerErrors {
    /// Keeps `error` if it is the cluster's ACLs refusing the group or topic.
    fn keep_denied(&self, error: KafkaError) {
        let code = error.rdkafka_error_code();
        if matches!(
            code,
            Some(RDKafkaErrorCode::GroupAuthorizationFailed | RDKafkaErrorCode::TopicAuthorizationFailed)
        ) {
            *self.denied.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        }
    }

    fn take_denied(&self) -> Option<KafkaError> {
        self.denied.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn failed(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }

    /// Whether a failed connection was reported that no metadata answer has
    /// cleared since. Sticky on purpose: librdkafka reports a repeating
    /// failure once every 30 s at most, while an MGET waits 1.5 s by default,
    /// so "a failure during this MGET" would miss most of an outage.
    fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    fn answered(&self) {
        self.failing.store(false, Ordering::Relaxed);
    }
}

/// Where a consumer group with no committed offset starts reading
/// (`offset=new` or `offset=old` in AUTH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    Latest,
    Earliest,
}

/// Who joins: a consumer group on a topic of a named cluster.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member<'a> {
    pub cluster: &'a str,
    pub group: &'a str,
    pub topic: &'a str,
    /// Where the group starts when it has no committed offset.
    pub start: StartOffset,
}

/// The cluster's ACLs refusing databus `group` or `topic`, if `error` says so.
fn denial(error: KafkaError, group: &str, topic: &str) -> Option<ConsumeError> {
    let what = match error.rdkafka_error_code()? {
        RDKafkaErrorCode::GroupAuthorizationFailed => format!("group '{group}'"),
        RDKafkaErrorCode::TopicAuthorizationFailed => format!("topic '{topic}'"),
        _ => return None,
    };
    Some(ConsumeError::Denied { what, cause: error })
}

/// Why librdkafka gave up `who`, a member of cluster `name` on `client`
/// (`code`, with the reason `client` keeps): the cluster not serving the
/// consumer protocol it is set to (said once in the log,
/// [`super::group_protocol::refused`]), or the reason as it came (logged).
pub(crate) fn gave_up<C: ClientContext>(
    name: &str,
    cluster: &Cluster,
    client: &rdkafka::client::Client<C>,
    code: RDKafkaErrorCode,
    who: &str,
) -> ConsumeError {
    let reason = client.fatal_error().map_or_else(|| code.to_string(), |(_, r)| r);
    let unsupported =
        matches!(code, RDKafkaErrorCode::UnsupportedVersion | RDKafkaErrorCode::UnsupportedFeature);
    if unsupported && cluster.group_protocol == GroupProtocol::Consumer {
        log::debug!("{who}: {reason}");
        return super::group_protocol::refused(name, cluster);
    }
    let e = ConsumeError::Fatal { cluster: name.to_owned(), reason };
    log::error!("{who}: {e}");
    e
}

/// A client of a group that never joins it, for what commands ask of the
/// brokers about the group and its topic (watermarks, commits, members):
/// a member's own connections carry its fetches, which the brokers answer
/// first (up to `fetch.wait.max.ms`, 500 ms, each). Every call is bounded
/// by its `timeout`: a commit that takes longer is left to finish (or
/// fail) on a thread of its own.
pub(crate) struct GroupClient {
    consumer: Arc<BaseConsumer>,
    group: String,
    topic: String,
}

/// How long librdkafka holds a commit of a [`GroupClient`] while the group
/// has no coordinator (its `session.timeout.ms`, which bounds that wait),
/// and waits for a broker's answer at most.
const GROUP_CLIENT_WAIT: Duration = Duration::from_millis(1500);

impl GroupClient {
    pub(crate) fn new(cluster: &Cluster, group: &str, topic: &str) -> Result<GroupClient, ConsumeError> {
        // The classic protocol whatever the cluster's: it never joins, and
        // only the classic one takes a session timeout, which bounds how
        // long a commit waits for a coordinator. No statistics: nothing
        // polls it for them.
        let mut config = super::client_config(cluster);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", GROUP_CLIENT_WAIT.as_millis().to_string())
            .set("statistics.interval.ms", "0");
        let consumer: BaseConsumer = config.create().map_err(ConsumeError::Create)?;
        Ok(GroupClient { consumer: Arc::new(consumer), group: group.to_owned(), topic: topic.to_owned() })
    }

    /// Serves the events librdkafka queued for it (errors), so they do not
    /// pile up.
    fn drain(&self) {
        let _ = self.consumer.poll(Duration::ZERO);
    }

    /// The group's committed offsets of `partitions` (`None` where it has
    /// none) within `timeout`.
    pub(crate) fn committed(
        &self,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<Vec<(i32, Option<i64>)>, KafkaError> {
        self.drain();
        let mut asked = TopicPartitionList::new();
        for p in partitions {
            asked.add_partition(&self.topic, *p);
        }
        let got = self.consumer.committed_offsets(asked, timeout)?;
        Ok(got
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), Some(o)),
                _ => (e.partition(), None),
            })
            .collect())
    }

    /// The topic's partitions with their low and high watermarks, all
    /// within `timeout`.
    pub(crate) fn watermarks(&self, timeout: Duration) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
        self.drain();
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), left())?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        partitions
            .into_iter()
            .map(|p| self.consumer.fetch_watermarks(&self.topic, p, left()).map(|(lo, hi)| (p, lo, hi)))
            .collect()
    }

    /// Commits `offsets` ((partition, next offset)) from outside the group,
    /// which Kafka takes while the group has no members, and waits up to
    /// `timeout` for the broker's answer (`OperationTimedOut` past it: the
    /// commit may still land).
    pub(crate) fn commit(&self, offsets: &[(i32, i64)], timeout: Duration) -> Result<(), KafkaError> {
        self.drain();
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o))?;
        }
        let (answer, answered) = std::sync::mpsc::channel();
        let consumer = self.consumer.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                let _ = answer.send(consumer.commit(&tpl, CommitMode::Sync));
            })
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        answered
            .recv_timeout(timeout)
            .unwrap_or(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::OperationTimedOut)))
    }

    /// Members the cluster reports in the group, within `timeout`.
    pub(crate) fn members(&self, timeout: Duration) -> Result<usize, KafkaError> {
        self.drain();
        let list = self.consumer.fetch_group_list(Some(&self.group), timeout)?;
        Ok(list.groups().iter().map(|g| g.members().len()).sum())
    }
}

/// A subscriber's consumer and its place in the group.
pub(crate) struct GroupConsumer {
    consumer: BaseConsumer<ConsumerErrors>,
    cluster: String,
    /// The cluster's settings, to ask whether it serves the group protocol
    /// they name before joining.
    settings: Cluster,
    group: String,
    topic: String,
    /// Whether it asked to join the group (see [`GroupConsumer::subscribe`]).
    subscribed: bool,
    // Declared after `consumer`, so the member count drops only once the
    // consumer has left the group.
    _membership: Membership,
}

impl GroupConsumer {
    /// Makes a member of `group` on `topic` and counts it, unless the group
    /// already has a member for every partition (counting this databus's
    /// members and those the cluster reports, whichever is more), after
    /// checking that the cluster answers and lets databus use the topic and
    /// the group. It joins Kafka's group at [`GroupConsumer::subscribe`]:
    /// a connection that turns to queue mode never joins (and never makes
    /// the group rebalance).
    pub(crate) fn join(
        cluster: &Cluster,
        member: Member<'_>,
        settings: &SubscriberSettings,
        registry: &Arc<Memberships>,
        lag: LagGauge,
    ) -> Result<GroupConsumer, ConsumeError> {
        let Member { cluster: cluster_name, group, topic, start } = member;
        let reset = match start {
            StartOffset::Latest => "latest",
            StartOffset::Earliest => "earliest",
        };
        let consumer: BaseConsumer<ConsumerErrors> = consumer_config(cluster, group, reset, settings)
            .create_with_context(ConsumerErrors {
                errors: BrokerErrors::default(),
                failing: AtomicBool::new(false),
                denied: Mutex::default(),
                fatal: Mutex::default(),
                lag: Some((topic.to_owned(), lag)),
            })
            .map_err(ConsumeError::Create)?;

        // A connection that fails (a broker restarting) fails the fetch at
        // once; try again until the deadline, unless the brokers refused
        // the login or the TLS handshake, which trying again cannot mend.
        // Polling in between hands librdkafka's queued log and error events
        // to the context, which keeps the cause to report.
        let started = Instant::now();
        let deadline = started + METADATA_TIMEOUT;
        let metadata = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match consumer.fetch_metadata(Some(topic), left.min(METADATA_TRY)) {
                Ok(m) => break m,
                Err(_) if deadline.saturating_duration_since(Instant::now()) > METADATA_RETRY => {
                    let _ = consumer.poll(METADATA_RETRY);
                    if let Some(reason) = consumer.context().errors.refused_since(started) {
                        return Err(ConsumeError::Refused { cluster: cluster_name.into(), reason });
                    }
                }
                Err(e) => {
                    return Err(ConsumeError::Metadata {
                        cluster: cluster_name.into(),
                        topic: topic.into(),
                        cause: Box::new(e),
                        last_error: consumer.context().errors.get(),
                    })
                }
            }
        };
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        if let Some(code) = found.and_then(|t| t.error()).map(RDKafkaErrorCode::from) {
            if let Some(denied) = denial(KafkaError::MetadataFetch(code), group, topic) {
                return Err(denied);
            }
        }
        let partitions = found.filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(ConsumeError::NoTopic(topic.into()));
        }
        // The group's committed offsets, asked for only to learn now, not at
        // the first MGET, whether the cluster's ACLs let databus use the
        // group: a refusal comes per partition, or as an error event while
        // librdkafka keeps looking for the group's coordinator.
        let mut asked = TopicPartitionList::new();
        asked.add_partition(topic, 0);
        while Instant::now() < deadline {
            match consumer.committed_offsets(asked.clone(), METADATA_TRY) {
                Ok(got) => {
                    let refused = got.elements().iter().find_map(|e| e.error().err());
                    if let Some(denied) = refused.and_then(|e| denial(e, group, topic)) {
                        return Err(denied);
                    }
                    break;
                }
                Err(_) => {
                    let _ = consumer.poll(Duration::ZERO);
                    if let Some(denied) =
                        consumer.context().take_denied().and_then(|e| denial(e, group, topic))
                    {
                        return Err(denied);
                    }
                }
            }
        }
        let remote = consumer
            .fetch_group_list(Some(group), METADATA_TIMEOUT)
            .map(|list| list.groups().iter().map(|g| g.members().len()).sum::<usize>())
            .unwrap_or(0);

        let key = (cluster_name.to_owned(), group.to_owned(), topic.to_owned());
        {
            let mut count = registry.count.lock().unwrap_or_else(|e| e.into_inner());
            let local = count.get(&key).copied().unwrap_or(0);
            let members = local.max(remote);
            if members >= partitions {
                return Err(ConsumeError::GroupFull {
                    group: group.into(),
                    topic: topic.into(),
                    members,
                    partitions,
                });
            }
            *count.entry(key.clone()).or_default() += 1;
        }
        let membership = Membership { registry: registry.clone(), key };
        Ok(GroupConsumer {
            consumer,
            cluster: cluster_name.to_owned(),
            settings: cluster.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            subscribed: false,
            _membership: membership,
        })
    }

    /// Joins the group (at the connection's first MGET or commit); the
    /// partitions come with the next polls. Refused while the cluster does
    /// not serve the group protocol it is set to, or once librdkafka gave
    /// the member up.
    pub(crate) fn subscribe(&mut self) -> Result<(), ConsumeError> {
        if let Some(e) = self.fatal() {
            return Err(e);
        }
        if !self.subscribed {
            super::group_protocol::require(&self.cluster, &self.settings)?;
            self.consumer.subscribe(&[&self.topic]).map_err(ConsumeError::Create)?;
            self.subscribed = true;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the next record and has `look` make what
    /// the caller keeps of it, while it is still in librdkafka's buffer.
    /// Errors librdkafka reports while polling are transient (it retries on
    /// its own) and only logged, but for the cluster's ACLs refusing the
    /// group or the topic, which are kept for [`GroupConsumer::take_denied`].
    pub(crate) fn poll<R>(&self, timeout: Duration, look: impl FnOnce(InMessage<'_>) -> R) -> Option<R> {
        match self.consumer.poll(timeout)? {
            Ok(m) => {
                let headers = m.headers();
                let header = |name: &str| {
                    headers
                        .and_then(|h| h.iter().find(|h| h.key == name).map(|h| h.value.unwrap_or_default()))
                };
                Some(look(InMessage {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default(),
                    value: m.payload().unwrap_or_default(),
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                    color: header("color").unwrap_or_default(),
                    metadata: header("metadata"),
                }))
            }
            Err(KafkaError::MessageConsumptionFatal(code)) => {
                self.gave_up(code);
                None
            }
            Err(e) => {
                log::debug!("consumer of '{}': {e}", self.topic);
                self.consumer.context().keep_denied(e);
                None
            }
        }
    }

    /// librdkafka gave the member up (`code`): kept, with its reason, for
    /// every later command, and logged once. The cluster's ACLs refusing
    /// the group are reported as such ([`GroupConsumer::take_denied`]).
    fn gave_up(&self, code: RDKafkaErrorCode) {
        let context = self.consumer.context();
        context.keep_denied(KafkaError::MessageConsumptionFatal(code));
        let mut fatal = context.fatal.lock().unwrap_or_else(|e| e.into_inner());
        if fatal.is_some() {
            return;
        }
        let who = format!("consumer of group '{}' on '{}'", self.group, self.topic);
        *fatal = Some(gave_up(&self.cluster, &self.settings, self.consumer.client(), code, &who));
    }

    /// Why librdkafka gave the member up, if it did.
    pub(crate) fn fatal(&self) -> Option<ConsumeError> {
        self.consumer.context().fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cluster's ACLs refusing the group or the topic, seen while
    /// polling since the last call.
    pub(crate) fn take_denied(&self) -> Option<ConsumeError> {
        self.consumer.context().take_denied().and_then(|e| denial(e, &self.group, &self.topic))
    }

    /// Whether librdkafka reported a failed connection that no metadata
    /// answer has cleared since.
    pub(crate) fn failing(&self) -> bool {
        self.consumer.context().failing()
    }

    /// Why the cluster is unreachable, when librdkafka reported a failed
    /// connection (not cleared since) and the cluster does not answer a
    /// metadata request within `timeout`; `None` when it answers, which
    /// clears the failure, or when nothing failed.
    pub(crate) fn unreachable(&self, timeout: Duration) -> Option<ConsumeError> {
        if !self.failing() {
            return None;
        }
        let Err(cause) = self.consumer.fetch_metadata(Some(&self.topic), timeout) else {
            self.consumer.context().answered();
            return None;
        };
        Some(ConsumeError::Unreachable {
            cluster: self.cluster.clone(),
            cause: Box::new(cause),
            last_error: self.consumer.context().errors.get(),
        })
    }

    /// Whether `partition` is assigned to this member right now.
    pub(crate) fn owns(&self, partition: i32) -> bool {
        self.consumer
            .assignment()
            .map(|a| a.find_partition(&self.topic, partition).is_some())
            .unwrap_or(false)
    }

    /// Commits `next_offset` (one past the last processed record) for
    /// `partition` and waits for the broker to acknowledge it.
    pub(crate) fn commit(&self, partition: i32, next_offset: i64) -> Result<(), ConsumeError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next_offset))
            .map_err(ConsumeError::Commit)?;
        self.consumer.commit(&tpl, CommitMode::Sync).map_err(ConsumeError::Commit)
    }
}
