//! Consuming, through librdkafka: what every consumer of databus shares.
//! The subscriber settings and the group consumer configuration built from
//! them, why a consumer could not join or commit ([`ConsumeError`]), who
//! joins ([`Member`], [`StartOffset`]), and what it means when librdkafka
//! gives a member up ([`gave_up`]), for a classic subscriber's own member
//! and for queue mode's shared one alike.
//!
//! `group_consumer.rs` is a classic subscriber's own member;
//! `group_client.rs` asks a group's offsets and watermarks without joining
//! it; `membership.rs` counts the members on this databus.

mod group_client;
mod group_consumer;
mod membership;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

use super::broker_errors::because;
use super::{Cluster, GroupProtocol};

pub(crate) use self::group_client::GroupClient;
pub(crate) use self::group_consumer::{GroupConsumer, InMessage};
pub(crate) use self::membership::{Membership, Memberships};

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
