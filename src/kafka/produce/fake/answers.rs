//! What the fake brokers answer to Metadata, InitProducerId and Produce,
//! from the cluster's state: the leaders, the producer ids and epochs, and
//! each partition's verdict on a batch (`partition.rs`), with the faults a
//! test injected.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, BrokerId, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::partition::decode_batch;
use super::server::{respond, Reply};
use super::State;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
const NOT_LEADER_OR_FOLLOWER: i16 = ResponseError::NotLeaderOrFollower.code();
const INVALID_REQUIRED_ACKS: i16 = ResponseError::InvalidRequiredAcks.code();
const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
const PRODUCER_FENCED: i16 = ResponseError::ProducerFenced.code();
const UNKNOWN_TOPIC_ID: i16 = ResponseError::UnknownTopicId.code();

fn broker_id(node: usize) -> BrokerId {
    BrokerId(i32::try_from(node).unwrap())
}

impl State {
    pub(super) fn metadata(&self, request: &MetadataRequest) -> MetadataResponse {
        let brokers = self
            .nodes
            .iter()
            .enumerate()
            .map(|(id, node)| {
                MetadataResponseBroker::default()
                    .with_node_id(broker_id(id))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(node.port.into())
            })
            .collect();
        let topics = match &request.topics {
            None => self.topics.keys().map(|name| self.topic_metadata(name)).collect(),
            Some(asked) => asked
                .iter()
                .map(|topic| match &topic.name {
                    Some(name) => self.topic_metadata(name),
                    // Asked by id (v12): the fake's topics have none.
                    None => MetadataResponseTopic::default()
                        .with_error_code(UNKNOWN_TOPIC_ID)
                        .with_name(None)
                        .with_topic_id(topic.topic_id),
                })
                .collect(),
        };
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(StrBytes::from_static_str("fake-cluster")))
            .with_controller_id(broker_id(0))
            .with_topics(topics)
    }

    fn topic_metadata(&self, name: &str) -> MetadataResponseTopic {
        let topic =
            MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from(name.to_owned()))));
        let Some(partitions) = self.topics.get(name) else {
            return topic.with_error_code(UNKNOWN_TOPIC_OR_PARTITION);
        };
        let partitions = partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| {
                let leader = broker_id(partition.leader);
                MetadataResponsePartition::default()
                    .with_partition_index(i32::try_from(index).unwrap())
                    .with_leader_id(leader)
                    .with_leader_epoch(partition.leader_epoch)
                    .with_replica_nodes(vec![leader])
                    .with_isr_nodes(vec![leader])
            })
            .collect();
        topic.with_partitions(partitions)
    }

    /// A new producer id at epoch 0, or with the producer's id and epoch
    /// given (KIP-360) the same id at the next epoch; a retry of that bump
    /// gets the same answer, any other epoch PRODUCER_FENCED, as from Kafka's
    /// transaction coordinator.
    pub(super) fn init_producer_id(&mut self, request: &InitProducerIdRequest) -> InitProducerIdResponse {
        let refuse = |code| InitProducerIdResponse::default().with_error_code(code);
        if request.transactional_id.as_ref().is_some_and(|id| id.is_empty()) {
            return refuse(INVALID_REQUEST);
        }
        let (id, epoch) = match (request.producer_id.0, request.producer_epoch) {
            (-1, -1) => self.new_producer_id(),
            (-1, _) | (_, -1) => return refuse(INVALID_REQUEST),
            _ if self.reinit_gives_new_id => self.new_producer_id(),
            (id, epoch) => match self.producer_epochs.get(&id).copied() {
                // An exhausted epoch: Kafka starts a new producer id.
                Some(current) if epoch == current && current >= i16::MAX - 1 => self.new_producer_id(),
                Some(current) if epoch == current => {
                    self.producer_epochs.insert(id, current + 1);
                    (id, current + 1)
                }
                Some(current) if epoch == current - 1 => (id, current),
                _ => return refuse(PRODUCER_FENCED),
            },
        };
        InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch)
    }

    fn new_producer_id(&mut self) -> (i64, i16) {
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        self.producer_epochs.insert(id, 0);
        (id, 0)
    }

    pub(super) fn produce(
        &mut self,
        node: usize,
        version: i16,
        correlation_id: i32,
        request: &ProduceRequest,
    ) -> Reply {
        self.nodes[node].produce_requests += 1;
        self.partitions_per_request.push(request.topic_data.iter().map(|t| t.partition_data.len()).sum());
        let mut responses = Vec::new();
        for topic in &request.topic_data {
            let mut partitions = Vec::new();
            for data in &topic.partition_data {
                let result = if matches!(request.acks, -1..=1) {
                    self.produce_partition(node, &topic.name, data)
                } else {
                    Err(INVALID_REQUIRED_ACKS)
                };
                partitions.push(partition_response(data.index, result));
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic.name.clone())
                    .with_partition_responses(partitions),
            );
        }
        let node = &mut self.nodes[node];
        if node.drop_responses > 0 {
            node.drop_responses -= 1;
            return Reply::Close;
        }
        if request.acks == 0 {
            // Kafka answers nothing at acks=0, and closes the connection on
            // an error so that the producer notices.
            let failed = responses.iter().flat_map(|t| &t.partition_responses).any(|p| p.error_code != 0);
            return if failed { Reply::Close } else { Reply::Silent };
        }
        let response = ProduceResponse::default().with_responses(responses);
        Reply::Send(respond(ApiKey::Produce, version, correlation_id, &response), node.delay)
    }

    /// The base offset of a partition's batch, or the error code it gets.
    fn produce_partition(
        &mut self,
        node: usize,
        topic: &str,
        data: &PartitionProduceData,
    ) -> Result<i64, i16> {
        let unknown_producer = self.unknown_producer;
        let partition = self
            .topics
            .get_mut(topic)
            .and_then(|p| p.get_mut(usize::try_from(data.index).ok()?))
            .ok_or(UNKNOWN_TOPIC_OR_PARTITION)?;
        if partition.leader != node {
            return Err(NOT_LEADER_OR_FOLLOWER);
        }
        if let Some(code) = partition.failures.pop_front() {
            return Err(code);
        }
        let (info, records) = decode_batch(data.records.as_ref())?;
        partition.append(&info, &records, unknown_producer)
    }
}

fn partition_response(index: i32, result: Result<i64, i16>) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default().with_index(index);
    match result {
        Ok(base_offset) => response.with_base_offset(base_offset).with_log_start_offset(0),
        Err(code) => response.with_error_code(code).with_base_offset(-1),
    }
}
