//! Asking the brokers about a consumer group without joining it: its
//! committed offsets, its members, its topic's watermarks, and a commit
//! from outside the group, for `XGROUP` and for queue mode's shared
//! members, each bounded by its caller's timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::ConsumeError;
use crate::kafka::Cluster;

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
        let mut config = crate::kafka::client_config(cluster);
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
