//! A classic subscriber's own group member. Each subscriber connection owns
//! one librdkafka `BaseConsumer`, a member of the Kafka consumer group named
//! by its auth group, with auto-commit off: offsets are committed only by
//! the client's `SET p o`. Dropping it leaves the group at once, so its
//! partitions move on without waiting for a session timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Statistics};
use rdkafka::{Offset, TopicPartitionList};

use super::{
    consumer_config, gave_up, ConsumeError, Member, Membership, Memberships, StartOffset, SubscriberSettings,
};
use crate::kafka::broker_errors::BrokerErrors;
use crate::kafka::Cluster;
use crate::metrics::LagGauge;

/// One consumed record, borrowed from librdkafka's buffer while it is
/// looked at ([`GroupConsumer::poll`]): encoding it copies it once.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Every other header, in the record's order (other producers', or
    /// `XADD`'s extra fields).
    pub headers: Vec<(&'a str, &'a [u8])>,
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

/// The cluster's ACLs refusing databus `group` or `topic`, if `error` says so.
fn denial(error: KafkaError, group: &str, topic: &str) -> Option<ConsumeError> {
    let what = match error.rdkafka_error_code()? {
        RDKafkaErrorCode::GroupAuthorizationFailed => format!("group '{group}'"),
        RDKafkaErrorCode::TopicAuthorizationFailed => format!("topic '{topic}'"),
        _ => return None,
    };
    Some(ConsumeError::Denied { what, cause: error })
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
            crate::kafka::group_protocol::require(&self.cluster, &self.settings)?;
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
                let (mut color, mut metadata, mut headers) = (None, None, Vec::new());
                for h in m.headers().into_iter().flat_map(|h| h.iter()) {
                    let value = h.value.unwrap_or_default();
                    match h.key {
                        // databus's own headers: the first of each counts.
                        "color" => _ = color.get_or_insert(value),
                        "metadata" => _ = metadata.get_or_insert(value),
                        _ => headers.push((h.key, value)),
                    }
                }
                Some(look(InMessage {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default(),
                    value: m.payload().unwrap_or_default(),
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                    color: color.unwrap_or_default(),
                    metadata,
                    headers,
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
