//! Why a record was not acknowledged ([`PublishError`]), with the short
//! cause the produce error counter uses and whether sending it again may
//! help.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::kafka::broker_errors::because;

/// Why a record was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("cluster '{0}' is not configured")]
    UnknownCluster(String),
    #[error("cannot create producer for cluster '{cluster}': {cause}")]
    Create {
        cluster: String,
        #[source]
        cause: KafkaError,
    },
    #[error("cannot start the producer of cluster '{cluster}': {cause}")]
    Start { cluster: String, cause: String },
    #[error("kafka refused the record: {0}")]
    Rejected(#[source] Refusal),
    #[error("the cluster's ACLs do not let databus write to topic '{topic}': {cause}")]
    Denied {
        topic: String,
        #[source]
        cause: Refusal,
    },
    #[error(
        "cluster '{cluster}' did not acknowledge the record within {ms} ms{}{}",
        partition.as_ref().map(|p| format!(": {p}")).unwrap_or_default(),
        because(.cause)
    )]
    Timeout {
        cluster: String,
        ms: u128,
        /// What is wrong with the record's partition, if databus found out.
        partition: Option<String>,
        cause: Option<String>,
    },
    #[error("cluster '{cluster}' refused databus: {reason}")]
    Refused { cluster: String, reason: String },
    #[error("producer closed before the record was acknowledged")]
    Closed,
}

/// What the cluster said when it would not take a record: librdkafka's
/// error, or the broker's error name and message to databus's own producer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refusal(pub String);

impl PublishError {
    /// A short name of the cause, for the produce error counter.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            PublishError::UnknownCluster(_) => "unknown_cluster",
            PublishError::Create { .. } | PublishError::Start { .. } => "create",
            PublishError::Rejected(_) => "rejected",
            PublishError::Denied { .. } => "denied",
            PublishError::Timeout { .. } => "timeout",
            PublishError::Refused { .. } => "refused",
            PublishError::Closed => "closed",
        }
    }

    /// Whether the same record may be acknowledged if sent again later.
    pub(crate) fn is_retriable(&self) -> bool {
        matches!(
            self,
            PublishError::Create { .. }
                | PublishError::Start { .. }
                | PublishError::Timeout { .. }
                | PublishError::Refused { .. }
                | PublishError::Closed
        )
    }
}

/// A record the cluster would not take: the cluster's ACLs, or anything else.
pub(super) fn rejected(error: KafkaError, topic: &str) -> PublishError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed) => {
            PublishError::Denied { topic: topic.to_owned(), cause: Refusal(error.to_string()) }
        }
        _ => PublishError::Rejected(Refusal(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_says_what_is_known_of_the_partition_and_the_brokers() {
        let timeout = |partition: Option<&str>, cause: Option<&str>| {
            PublishError::Timeout {
                cluster: "c".into(),
                ms: 5000,
                partition: partition.map(Into::into),
                cause: cause.map(Into::into),
            }
            .to_string()
        };
        assert_eq!(timeout(None, None), "cluster 'c' did not acknowledge the record within 5000 ms");
        assert_eq!(
            timeout(Some("partition 0 of topic 't': it has no leader"), Some("Connection refused")),
            "cluster 'c' did not acknowledge the record within 5000 ms: partition 0 of topic 't': it has \
             no leader (last broker error: Connection refused)"
        );
        assert_eq!(
            timeout(None, Some("Connection refused")),
            "cluster 'c' did not acknowledge the record within 5000 ms (last broker error: Connection refused)"
        );
    }
}
