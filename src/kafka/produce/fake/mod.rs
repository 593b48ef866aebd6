//! A fake Kafka cluster for the producer's unit tests: brokers on 127.0.0.1
//! that speak enough of the protocol for a producer (ApiVersions, SASL
//! PLAIN, Metadata, InitProducerId, Produce), keep what they were sent, and
//! check idempotent sequences as a Kafka 4 broker does, so that retries,
//! leader changes and lost responses can be tested without a Kafka. Faults
//! are injected from the test while its clients are connected.
//!
//! Blocking `std::net`: an accept thread per broker and a thread per
//! connection, which handles one request at a time as Kafka does (it reads a
//! connection's next request only once the previous one is answered), so
//! responses leave in request order.
//!
//! Not modelled: replication (a partition's log and producer state are the
//! cluster's, so a new leader knows what the old one knew, as a Kafka
//! follower would), transactions (a transactional id or batch is taken as
//! merely idempotent), fetching, and authentication (any PLAIN login
//! passes).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{BatchDecodeInfo, Record, RecordBatchDecoder, NO_SEQUENCE};

const CORRUPT_MESSAGE: i16 = ResponseError::CorruptMessage.code();
const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
const NOT_LEADER_OR_FOLLOWER: i16 = ResponseError::NotLeaderOrFollower.code();
const INVALID_REQUIRED_ACKS: i16 = ResponseError::InvalidRequiredAcks.code();
const UNSUPPORTED_SASL_MECHANISM: i16 = ResponseError::UnsupportedSaslMechanism.code();
const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();
const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = ResponseError::OutOfOrderSequenceNumber.code();
const INVALID_PRODUCER_EPOCH: i16 = ResponseError::InvalidProducerEpoch.code();
const UNKNOWN_PRODUCER_ID: i16 = ResponseError::UnknownProducerId.code();
const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();
const PRODUCER_FENCED: i16 = ResponseError::ProducerFenced.code();
const UNKNOWN_TOPIC_ID: i16 = ResponseError::UnknownTopicId.code();

/// What the brokers say they speak, and so all they serve: any other
/// request closes the connection, as Kafka does with one it cannot parse.
const ADVERTISED: [(ApiKey, i16, i16); 6] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The batches of a producer a partition remembers (Kafka's
/// `NUM_BATCHES_TO_RETAIN`): a retry of any of them is a duplicate, which is
/// why an idempotent producer keeps at most five requests in flight.
const BATCHES_KEPT: usize = 5;

/// Kafka's `socket.request.max.bytes`: a longer frame is a broken stream.
const MAX_REQUEST: usize = 100 << 20;

const FIRST_PRODUCER_ID: i64 = 1000;

/// A record as a partition holds it. A header with a null value has an
/// empty one here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub offset: i64,
    pub producer_id: i64,
    pub epoch: i16,
    /// -1 for a record of a producer that is not idempotent.
    pub sequence: i32,
}

/// How a partition answers a producer it has no state for (never seen, or
/// forgotten: [`FakeCluster::forget_producers`]) whose batch does not start
/// at sequence 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum UnknownProducerAnswer {
    /// Appends it, as Kafka does since 2.5 (KIP-360), 4.x included, for an
    /// idempotent producer: "If there is no current producer epoch [...]
    /// accept writes with any sequence number" (`ProducerAppendInfo`).
    #[default]
    Accept,
    /// UNKNOWN_PRODUCER_ID (59), as Kafka answered before 2.5.
    UnknownProducerId,
    /// OUT_OF_ORDER_SEQUENCE_NUMBER (45), as Kafka 4 answers a
    /// transactions-v2 producer.
    OutOfOrder,
}

/// Brokers `0..nodes` on 127.0.0.1. Dropping it stops them all.
pub(crate) struct FakeCluster {
    shared: Arc<Shared>,
}

impl FakeCluster {
    /// Starts `nodes` brokers serving `topics` (name, partition count);
    /// partition `p` is led by node `p % nodes`.
    pub(crate) fn start(nodes: usize, topics: &[(&str, i32)]) -> FakeCluster {
        assert!(nodes > 0, "a cluster needs a node");
        let listeners: Vec<TcpListener> =
            (0..nodes).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let state = State {
            nodes: listeners.iter().map(|l| Node::new(l.local_addr().unwrap().port())).collect(),
            topics: topics
                .iter()
                .map(|&(name, count)| {
                    (name.to_owned(), (0..count).map(|p| Partition::led_by(p as usize % nodes)).collect())
                })
                .collect(),
            producer_epochs: HashMap::new(),
            next_producer_id: FIRST_PRODUCER_ID,
            unknown_producer: UnknownProducerAnswer::default(),
            reinit_gives_new_id: false,
            partitions_per_request: Vec::new(),
            next_connection: 0,
        };
        let cluster = FakeCluster { shared: Arc::new(Shared(Mutex::new(state))) };
        for (node, listener) in listeners.into_iter().enumerate() {
            cluster.listen(node, listener);
        }
        cluster
    }

    /// "127.0.0.1:port" of each node, in node order.
    pub(crate) fn bootstrap(&self) -> Vec<String> {
        self.shared.lock().nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect()
    }

    /// Makes `to_node` the partition's leader (with a new leader epoch):
    /// metadata says so, and the old leader answers NOT_LEADER_OR_FOLLOWER.
    pub(crate) fn move_leader(&self, topic: &str, partition: i32, to_node: usize) {
        let mut state = self.shared.lock();
        assert!(to_node < state.nodes.len(), "no node {to_node}");
        let partition = state.partition(topic, partition);
        partition.leader = to_node;
        partition.leader_epoch += 1;
    }

    /// Answers the partition's next `times` produce attempts (on its leader)
    /// with `error_code`, appending nothing; the request's other partitions
    /// go on as usual. Calls add up, in order.
    pub(crate) fn fail_next(&self, topic: &str, partition: i32, error_code: i16, times: usize) {
        let mut state = self.shared.lock();
        state.partition(topic, partition).failures.extend(std::iter::repeat_n(error_code, times));
    }

    /// The node's next `times` Produce requests are applied but answered by
    /// closing the connection: a lost response, which the producer retries.
    pub(crate) fn write_but_drop_response(&self, node: usize, times: usize) {
        self.shared.lock().nodes[node].drop_responses += times;
    }

    /// Holds the node's Produce responses this long after applying the
    /// request (as a leader waits for its followers at acks=all). Metadata
    /// and the rest are answered at once, so that a client reconnecting after
    /// a timeout is not held too.
    pub(crate) fn delay_responses(&self, node: usize, delay: Duration) {
        self.shared.lock().nodes[node].delay = delay;
    }

    /// Closes the node's listener and connections: connecting is refused
    /// until [`FakeCluster::start_node`]. Leadership does not move (see
    /// [`FakeCluster::move_leader`]).
    pub(crate) fn stop_node(&self, node: usize) {
        let (acceptor, port) = {
            let mut state = self.shared.lock();
            let node = &mut state.nodes[node];
            node.generation += 1;
            for (_, connection) in node.connections.drain() {
                let _ = connection.shutdown(Shutdown::Both);
            }
            (node.acceptor.take(), node.port)
        };
        if let Some(acceptor) = acceptor {
            // accept() blocks: a connection wakes it to see the new
            // generation and return, which closes the listener.
            let _ = TcpStream::connect(("127.0.0.1", port));
            acceptor.join().unwrap();
        }
    }

    /// Listens again on the port the node had.
    pub(crate) fn start_node(&self, node: usize) {
        let port = {
            let state = self.shared.lock();
            if state.nodes[node].acceptor.is_some() {
                return;
            }
            state.nodes[node].port
        };
        self.listen(node, rebind(port));
    }

    /// Forgets every producer's sequences and epoch on the partition, as a
    /// broker does once their records are gone: see
    /// [`FakeCluster::on_unknown_producer`] for what a producer's next batch
    /// then gets.
    pub(crate) fn forget_producers(&self, topic: &str, partition: i32) {
        self.shared.lock().partition(topic, partition).producers.clear();
    }

    /// How partitions answer a producer they have no state for whose batch
    /// does not start at sequence 0 (by default as Kafka 4 does: append it).
    pub(crate) fn on_unknown_producer(&self, answer: UnknownProducerAnswer) {
        self.shared.lock().unknown_producer = answer;
    }

    /// Whether an InitProducerId naming the producer's id and epoch
    /// (KIP-360) gets a new producer id at epoch 0, as Kafka 4 answers a
    /// producer without a transactional id, instead of the same id at the
    /// next epoch (the default, as Kafka's transaction coordinator answers).
    pub(crate) fn reinit_gives_new_id(&self, yes: bool) {
        self.shared.lock().reinit_gives_new_id = yes;
    }

    /// What the partition holds, in offset order.
    pub(crate) fn records(&self, topic: &str, partition: i32) -> Vec<Written> {
        self.shared.lock().partition(topic, partition).log.clone()
    }

    /// How many Produce requests the node received (answered or not).
    pub(crate) fn produce_requests(&self, node: usize) -> usize {
        self.shared.lock().nodes[node].produce_requests
    }

    /// For each Produce request to any node, in arrival order, how many
    /// partitions it carried.
    pub(crate) fn partitions_per_request(&self) -> Vec<usize> {
        self.shared.lock().partitions_per_request.clone()
    }

    fn listen(&self, node: usize, listener: TcpListener) {
        let mut state = self.shared.lock();
        let generation = state.nodes[node].generation;
        let shared = Arc::clone(&self.shared);
        let acceptor = thread::Builder::new()
            .name(format!("fake-broker-{node}"))
            .spawn(move || accept(&shared, node, generation, listener))
            .unwrap();
        state.nodes[node].acceptor = Some(acceptor);
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let nodes = self.shared.lock().nodes.len();
        for node in 0..nodes {
            self.stop_node(node);
        }
    }
}

struct Shared(Mutex<State>);

impl Shared {
    /// The state, even if a broker thread panicked holding it: the test
    /// then fails on what that thread did not answer, not on every call.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    nodes: Vec<Node>,
    topics: BTreeMap<String, Vec<Partition>>,
    /// The producer ids handed out, with their current epochs.
    producer_epochs: HashMap<i64, i16>,
    next_producer_id: i64,
    unknown_producer: UnknownProducerAnswer,
    reinit_gives_new_id: bool,
    partitions_per_request: Vec<usize>,
    next_connection: u64,
}

struct Node {
    port: u16,
    /// The accept thread, while the node runs.
    acceptor: Option<JoinHandle<()>>,
    /// Bumped at each stop: a connection accepted before answers nothing
    /// more, even one busy with a request at the time.
    generation: u64,
    /// A handle on each open connection, to close it at a stop.
    connections: HashMap<u64, TcpStream>,
    produce_requests: usize,
    drop_responses: usize,
    delay: Duration,
}

impl Node {
    fn new(port: u16) -> Node {
        Node {
            port,
            acceptor: None,
            generation: 0,
            connections: HashMap::new(),
            produce_requests: 0,
            drop_responses: 0,
            delay: Duration::ZERO,
        }
    }
}

struct Partition {
    leader: usize,
    leader_epoch: i32,
    log: Vec<Written>,
    producers: HashMap<i64, ProducerState>,
    /// Injected errors, answered to the next produce attempts in turn.
    failures: VecDeque<i16>,
}

/// A producer's idempotence state on one partition (Kafka's
/// `ProducerStateEntry`).
struct ProducerState {
    epoch: i16,
    last_sequence: i32,
    batches: VecDeque<Appended>,
}

/// A batch a retry of which is a duplicate.
struct Appended {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

/// One connection's place: which node, of which generation.
struct Conn {
    node: usize,
    generation: u64,
    id: u64,
    /// After a SaslHandshake v0 the PLAIN token comes bare, not in a
    /// SaslAuthenticate request.
    raw_sasl_token: bool,
}

enum Reply {
    /// Sends these bytes after holding them this long.
    Send(Vec<u8>, Duration),
    /// Answers nothing (a produce at acks=0).
    Silent,
    /// Closes the connection: a request Kafka would not parse, a lost
    /// response, a stopped node.
    Close,
}

impl Reply {
    fn now(bytes: Vec<u8>) -> Reply {
        Reply::Send(bytes, Duration::ZERO)
    }
}

fn accept(shared: &Arc<Shared>, node: usize, generation: u64, listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut state = shared.lock();
        if state.nodes[node].generation != generation {
            return;
        }
        let Ok(handle) = stream.try_clone() else { continue };
        let id = state.next_connection;
        state.next_connection += 1;
        state.nodes[node].connections.insert(id, handle);
        drop(state);
        let conn = Conn { node, generation, id, raw_sasl_token: false };
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("fake-broker-{node}-conn"))
            .spawn(move || serve(&shared, conn, stream))
            .unwrap();
    }
}

/// Binds the port a stopped node had. std sets SO_REUSEADDR, so the node's
/// closed connections do not hold it; the retry covers a close the kernel
/// has not finished.
fn rebind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return listener,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("cannot listen on port {port} again: {e}"),
        }
    }
}

fn serve(shared: &Shared, mut conn: Conn, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    while let Ok(frame) = read_frame(&mut stream) {
        match shared.handle(&mut conn, frame) {
            Reply::Send(bytes, after) => {
                if !after.is_zero() {
                    thread::sleep(after);
                }
                if stream.write_all(&bytes).is_err() {
                    break;
                }
            }
            Reply::Silent => {}
            Reply::Close => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    shared.lock().nodes[conn.node].connections.remove(&conn.id);
}

fn read_frame(stream: &mut TcpStream) -> io::Result<Bytes> {
    let mut length = [0; 4];
    stream.read_exact(&mut length)?;
    let length = usize::try_from(i32::from_be_bytes(length))
        .ok()
        .filter(|l| *l <= MAX_REQUEST)
        .ok_or(io::ErrorKind::InvalidData)?;
    let mut frame = vec![0; length];
    stream.read_exact(&mut frame)?;
    Ok(frame.into())
}

impl Shared {
    /// Handles one request, under the lock: a stop cannot come between
    /// checking the node runs and appending.
    fn handle(&self, conn: &mut Conn, mut frame: Bytes) -> Reply {
        let mut state = self.lock();
        if state.nodes[conn.node].generation != conn.generation {
            return Reply::Close;
        }
        if std::mem::take(&mut conn.raw_sasl_token) {
            // PLAIN's answer is empty, and as bare as the token.
            return Reply::now(vec![0; 4]);
        }
        let Some((api, header)) = decode_header(&mut frame) else { return Reply::Close };
        state.answer(conn, api, &header, frame).unwrap_or(Reply::Close)
    }
}

/// The request header, read at the version its API and version call for.
fn decode_header(frame: &mut Bytes) -> Option<(ApiKey, RequestHeader)> {
    if frame.len() < 4 {
        return None;
    }
    let api = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).ok()?;
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let header = RequestHeader::decode(frame, api.request_header_version(version)).ok()?;
    Some((api, header))
}

/// A response as sent: length, header (at the version the API and version
/// call for: v0 for every ApiVersions), body.
fn respond<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Vec<u8> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut out = vec![0; 4];
    header.encode(&mut out, api.response_header_version(version)).unwrap();
    body.encode(&mut out, version).unwrap();
    let length = i32::try_from(out.len() - 4).unwrap();
    out[..4].copy_from_slice(&length.to_be_bytes());
    out
}

fn broker_id(node: usize) -> BrokerId {
    BrokerId(i32::try_from(node).unwrap())
}

impl State {
    fn partition(&mut self, topic: &str, partition: i32) -> &mut Partition {
        self.topics
            .get_mut(topic)
            .and_then(|p| p.get_mut(usize::try_from(partition).ok()?))
            .unwrap_or_else(|| panic!("the fake cluster has no partition {topic}-{partition}"))
    }

    /// The response to a request, or `None` to close the connection.
    fn answer(
        &mut self,
        conn: &mut Conn,
        api: ApiKey,
        header: &RequestHeader,
        mut body: Bytes,
    ) -> Option<Reply> {
        let version = header.request_api_version;
        let id = header.correlation_id;
        if api == ApiKey::ApiVersions {
            return Some(Reply::now(api_versions(version, id)));
        }
        let &(_, min, max) = ADVERTISED.iter().find(|(key, ..)| *key == api)?;
        if !(min..=max).contains(&version) {
            return None;
        }
        let bytes = match api {
            ApiKey::Metadata => {
                let request = MetadataRequest::decode(&mut body, version).ok()?;
                respond(api, version, id, &self.metadata(&request))
            }
            ApiKey::InitProducerId => {
                let request = InitProducerIdRequest::decode(&mut body, version).ok()?;
                respond(api, version, id, &self.init_producer_id(&request))
            }
            ApiKey::Produce => {
                let request = ProduceRequest::decode(&mut body, version).ok()?;
                return Some(self.produce(conn.node, version, id, &request));
            }
            ApiKey::SaslHandshake => {
                let request = SaslHandshakeRequest::decode(&mut body, version).ok()?;
                let response = sasl_handshake(&request);
                conn.raw_sasl_token = version == 0 && response.error_code == 0;
                respond(api, version, id, &response)
            }
            ApiKey::SaslAuthenticate => {
                SaslAuthenticateRequest::decode(&mut body, version).ok()?;
                respond(api, version, id, &SaslAuthenticateResponse::default().with_error_message(None))
            }
            _ => return None,
        };
        Some(Reply::now(bytes))
    }

    fn metadata(&self, request: &MetadataRequest) -> MetadataResponse {
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
    fn init_producer_id(&mut self, request: &InitProducerIdRequest) -> InitProducerIdResponse {
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

    fn produce(&mut self, node: usize, version: i16, correlation_id: i32, request: &ProduceRequest) -> Reply {
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

/// The one batch of a partition's records that Produce v3+ allows: its
/// header and records, or the error Kafka answers for anything else.
fn decode_batch(records: Option<&Bytes>) -> Result<(BatchDecodeInfo, Vec<Record>), i16> {
    let records = records.ok_or(INVALID_RECORD)?;
    let infos = RecordBatchDecoder::decode_batch_info(&mut records.clone()).map_err(|_| CORRUPT_MESSAGE)?;
    let [info] = <[BatchDecodeInfo; 1]>::try_from(infos).map_err(|_| INVALID_RECORD)?;
    // Clients may not write control batches, nor batches of nothing.
    if info.control || info.record_count == 0 {
        return Err(INVALID_RECORD);
    }
    let records = RecordBatchDecoder::decode(&mut records.clone()).map_err(|_| CORRUPT_MESSAGE)?.records;
    // A producer numbers a batch's records 0, 1, ... from its base offset
    // and sequence alike; Kafka refuses other numbering in compressed
    // batches, and the fake in any.
    if !records.iter().zip(0..).all(|(r, i)| r.offset - info.min_offset == i) {
        return Err(INVALID_RECORD);
    }
    Ok((info, records))
}

impl Partition {
    fn led_by(leader: usize) -> Partition {
        Partition {
            leader,
            leader_epoch: 0,
            log: Vec::new(),
            producers: HashMap::new(),
            failures: VecDeque::new(),
        }
    }

    /// Appends a batch at the log end, checking an idempotent producer's
    /// epoch and sequence first: the base offset it got, or for a duplicate
    /// the one it got the first time.
    fn append(
        &mut self,
        info: &BatchDecodeInfo,
        records: &[Record],
        unknown_producer: UnknownProducerAnswer,
    ) -> Result<i64, i16> {
        let base_offset = i64::try_from(self.log.len()).unwrap();
        let idempotent = info.producer_id >= 0;
        if idempotent {
            let (epoch, first) = (info.producer_epoch, info.base_sequence);
            let last = increment_sequence(first, info.record_count - 1);
            let known = self.producers.get(&info.producer_id);
            if let Some(offset) = check_sequence(known, epoch, first, last, unknown_producer)? {
                return Ok(offset);
            }
            self.producers
                .entry(info.producer_id)
                .or_insert_with(|| ProducerState {
                    epoch,
                    last_sequence: NO_SEQUENCE,
                    batches: VecDeque::new(),
                })
                .add(epoch, first, last, base_offset);
        }
        for (record, index) in records.iter().zip(0..) {
            self.log.push(Written {
                key: record.key.as_ref().map(|k| k.to_vec()),
                value: record.value.as_ref().map(|v| v.to_vec()),
                headers: record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_ref().map_or_else(Vec::new, |v| v.to_vec())))
                    .collect(),
                offset: base_offset + i64::from(index),
                producer_id: info.producer_id,
                epoch: info.producer_epoch,
                sequence: if idempotent {
                    increment_sequence(info.base_sequence, index)
                } else {
                    NO_SEQUENCE
                },
            });
        }
        Ok(base_offset)
    }
}

impl ProducerState {
    fn add(&mut self, epoch: i16, first_sequence: i32, last_sequence: i32, base_offset: i64) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.batches.push_back(Appended { first_sequence, last_sequence, base_offset });
        self.last_sequence = last_sequence;
    }
}

/// Kafka's verdict on an idempotent batch (`UnifiedLog`'s duplicate lookup,
/// then `ProducerAppendInfo`'s epoch and sequence checks): `Some(offset)`
/// for a retry of one of the last batches, `None` to append it.
fn check_sequence(
    known: Option<&ProducerState>,
    epoch: i16,
    first: i32,
    last: i32,
    unknown_producer: UnknownProducerAnswer,
) -> Result<Option<i64>, i16> {
    let Some(known) = known else {
        return match unknown_producer {
            _ if first == 0 => Ok(None),
            UnknownProducerAnswer::Accept => Ok(None),
            UnknownProducerAnswer::UnknownProducerId => Err(UNKNOWN_PRODUCER_ID),
            UnknownProducerAnswer::OutOfOrder => Err(OUT_OF_ORDER_SEQUENCE_NUMBER),
        };
    };
    if epoch == known.epoch {
        let duplicate = known.batches.iter().find(|b| b.first_sequence == first && b.last_sequence == last);
        if let Some(duplicate) = duplicate {
            return Ok(Some(duplicate.base_offset));
        }
    }
    match epoch.cmp(&known.epoch) {
        std::cmp::Ordering::Less => Err(INVALID_PRODUCER_EPOCH),
        // A new epoch starts its sequences again.
        std::cmp::Ordering::Greater if first != 0 => Err(OUT_OF_ORDER_SEQUENCE_NUMBER),
        std::cmp::Ordering::Greater => Ok(None),
        std::cmp::Ordering::Equal if follows(known.last_sequence, first) => Ok(None),
        std::cmp::Ordering::Equal => Err(OUT_OF_ORDER_SEQUENCE_NUMBER),
    }
}

/// `sequence + increment`, past `i32::MAX` on from 0 (Kafka's
/// `DefaultRecordBatch.incrementSequence`).
fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

fn follows(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

fn api_versions(version: i16, correlation_id: i32) -> Vec<u8> {
    let api_keys = ADVERTISED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect();
    let response = ApiVersionsResponse::default().with_api_keys(api_keys);
    let newest = ADVERTISED.iter().find(|(key, ..)| *key == ApiKey::ApiVersions).unwrap().2;
    if version > newest {
        // A client ahead of the broker is told so in a v0 answer, which it
        // can read whatever version it spoke (KIP-511).
        respond(ApiKey::ApiVersions, 0, correlation_id, &response.with_error_code(UNSUPPORTED_VERSION))
    } else {
        respond(ApiKey::ApiVersions, version, correlation_id, &response)
    }
}

fn sasl_handshake(request: &SaslHandshakeRequest) -> SaslHandshakeResponse {
    let response = SaslHandshakeResponse::default().with_mechanisms(vec![StrBytes::from_static_str("PLAIN")]);
    if &*request.mechanism == "PLAIN" {
        response
    } else {
        response.with_error_code(UNSUPPORTED_SASL_MECHANISM)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsRequest, BrokerId, InitProducerIdRequest, MetadataRequest, MetadataResponse,
        ProduceRequest, ProduceResponse, ProducerId, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
        SaslHandshakeRequest, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::{FakeCluster, UnknownProducerAnswer, Written};

    /// The smallest blocking client: size-prefixed requests, responses read
    /// in order.
    struct Client {
        stream: TcpStream,
        correlation_id: i32,
    }

    impl Client {
        fn connect(address: &str) -> Client {
            let stream = TcpStream::connect(address).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Client { stream, correlation_id: 0 }
        }

        fn send<R: Request>(&mut self, request: &R, version: i16) -> io::Result<i32> {
            self.correlation_id += 1;
            let header = RequestHeader::default()
                .with_request_api_key(R::KEY)
                .with_request_api_version(version)
                .with_correlation_id(self.correlation_id)
                .with_client_id(Some(StrBytes::from_static_str("test")));
            let mut frame = vec![0; 4];
            header.encode(&mut frame, R::header_version(version)).unwrap();
            request.encode(&mut frame, version).unwrap();
            let length = i32::try_from(frame.len() - 4).unwrap();
            frame[..4].copy_from_slice(&length.to_be_bytes());
            self.stream.write_all(&frame)?;
            Ok(self.correlation_id)
        }

        fn receive<R: Request>(&mut self, version: i16, correlation_id: i32) -> io::Result<R::Response> {
            let mut length = [0; 4];
            self.stream.read_exact(&mut length)?;
            let mut frame = vec![0; usize::try_from(i32::from_be_bytes(length)).unwrap()];
            self.stream.read_exact(&mut frame)?;
            let mut frame = Bytes::from(frame);
            let api = ApiKey::try_from(R::KEY).unwrap();
            let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
            assert_eq!(header.correlation_id, correlation_id);
            let response = R::Response::decode(&mut frame, version).unwrap();
            assert!(frame.is_empty(), "{} bytes left after the {api:?} response", frame.len());
            Ok(response)
        }

        fn call<R: Request>(&mut self, request: &R, version: i16) -> io::Result<R::Response> {
            let correlation_id = self.send(request, version)?;
            self.receive::<R>(version, correlation_id)
        }

        fn init_producer_id(&mut self, given: Option<(i64, i16)>) -> (i16, i64, i16) {
            let (id, epoch) = given.unwrap_or((-1, -1));
            let request = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch);
            let response = self.call(&request, 4).unwrap();
            (response.error_code, response.producer_id.0, response.producer_epoch)
        }

        /// (topic, partition, error code, base offset) of each partition.
        fn produce(&mut self, parts: &[(&str, i32, Bytes)], version: i16) -> io::Result<Vec<Answer>> {
            Ok(answers(&self.call(&produce_request(parts), version)?))
        }
    }

    type Answer = (String, i32, i16, i64);

    fn answers(response: &ProduceResponse) -> Vec<Answer> {
        let mut answers = Vec::new();
        for topic in &response.responses {
            for p in &topic.partition_responses {
                answers.push((topic.name.to_string(), p.index, p.error_code, p.base_offset));
            }
        }
        answers
    }

    fn answer(topic: &str, partition: i32, error_code: i16, base_offset: i64) -> Answer {
        (topic.to_owned(), partition, error_code, base_offset)
    }

    fn produce_request(parts: &[(&str, i32, Bytes)]) -> ProduceRequest {
        let mut topics: Vec<TopicProduceData> = Vec::new();
        for (topic, partition, records) in parts {
            let data =
                PartitionProduceData::default().with_index(*partition).with_records(Some(records.clone()));
            match topics.iter_mut().find(|t| &*t.name.0 == *topic) {
                Some(t) => t.partition_data.push(data),
                None => topics.push(
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from(topic.to_string())))
                        .with_partition_data(vec![data]),
                ),
            }
        }
        ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(topics)
    }

    /// One v2 batch of `values` (each keyed "k-{value}", with a header),
    /// uncompressed.
    fn batch(producer_id: i64, epoch: i16, first_sequence: i32, values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .zip(0..)
            .map(|(value, i)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i64::from(i),
                sequence: if producer_id < 0 { -1 } else { first_sequence.wrapping_add(i) },
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from(format!("k-{value}"))),
                value: Some(Bytes::copy_from_slice(value.as_bytes())),
                headers: IndexMap::from([(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"v")))]),
            })
            .collect();
        let mut out = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: Compression::None };
        RecordBatchEncoder::encode(&mut out, &records, &options).unwrap();
        out.freeze()
    }

    fn values(written: &[Written]) -> Vec<String> {
        written.iter().map(|w| String::from_utf8(w.value.clone().unwrap()).unwrap()).collect()
    }

    fn metadata(client: &mut Client, topics: Option<&[&str]>, version: i16) -> MetadataResponse {
        let topics = topics.map(|names| {
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from(n.to_string()))))
                })
                .collect()
        });
        client.call(&MetadataRequest::default().with_topics(topics), version).unwrap()
    }

    /// A partition's index, leader, leader epoch, replicas and in-sync replicas.
    type Leader = (i32, i32, i32, Vec<i32>, Vec<i32>);

    fn leaders(response: &MetadataResponse, topic: &str) -> Vec<Leader> {
        let topic = response.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| &*n.0 == topic)).unwrap();
        assert_eq!(topic.error_code, 0);
        let ids = |nodes: &[BrokerId]| nodes.iter().map(|n| n.0).collect();
        topic
            .partitions
            .iter()
            .map(|p| {
                (p.partition_index, p.leader_id.0, p.leader_epoch, ids(&p.replica_nodes), ids(&p.isr_nodes))
            })
            .collect()
    }

    fn refused(address: &str) -> bool {
        TcpStream::connect(address).is_err()
    }

    #[test]
    fn api_versions_advertise_what_is_served() {
        let cluster = FakeCluster::start(1, &[]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let response = client.call(&request, 3).unwrap();
        assert_eq!(response.error_code, 0);
        let ranges: Vec<(i16, i16, i16)> =
            response.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        assert_eq!(ranges, [(0, 3, 9), (3, 1, 12), (22, 0, 4), (18, 0, 3), (17, 0, 1), (36, 0, 2)]);

        // Too new a version: UNSUPPORTED_VERSION, in a v0 answer.
        let correlation_id = client.send(&request, 4).unwrap();
        let response = client.receive::<ApiVersionsRequest>(0, correlation_id).unwrap();
        assert_eq!(response.error_code, 35);
        assert_eq!(response.api_keys.len(), 6);
    }

    #[test]
    fn sasl_plain_logins_pass() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        let scram =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
        let refused = client.call(&scram, 1).unwrap();
        assert_eq!(refused.error_code, 33);
        assert_eq!(refused.mechanisms, [StrBytes::from_static_str("PLAIN")]);

        let plain = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
        assert_eq!(client.call(&plain, 1).unwrap().error_code, 0);
        let token = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0user\0secret"));
        assert_eq!(client.call(&token, 2).unwrap().error_code, 0);
        assert_eq!(leaders(&metadata(&mut client, Some(&["t"]), 12), "t").len(), 1);

        // v0: the token goes bare, and so does the (empty) answer.
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        assert_eq!(client.call(&plain, 0).unwrap().error_code, 0);
        client.stream.write_all(b"\0\0\0\x0c\0user\0secret").unwrap();
        let mut answer = [1; 4];
        client.stream.read_exact(&mut answer).unwrap();
        assert_eq!(answer, [0; 4]);
        assert_eq!(leaders(&metadata(&mut client, Some(&["t"]), 1), "t").len(), 1);
    }

    #[test]
    fn metadata_lists_brokers_and_leaders() {
        let cluster = FakeCluster::start(3, &[("t", 4), ("u", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[1]);
        let all = metadata(&mut client, None, 12);
        let brokers: Vec<String> = all.brokers.iter().map(|b| format!("{}:{}", b.host, b.port)).collect();
        assert_eq!(brokers, cluster.bootstrap());
        assert_eq!(all.brokers.iter().map(|b| b.node_id.0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            leaders(&all, "t"),
            [
                (0, 0, 0, vec![0], vec![0]),
                (1, 1, 0, vec![1], vec![1]),
                (2, 2, 0, vec![2], vec![2]),
                (3, 0, 0, vec![0], vec![0])
            ]
        );
        assert_eq!(leaders(&all, "u"), [(0, 0, 0, vec![0], vec![0])]);

        let some = metadata(&mut client, Some(&["u", "missing"]), 1);
        assert_eq!(some.topics.len(), 2);
        assert_eq!(some.topics[1].name.as_ref().map(|n| n.0.to_string()), Some("missing".to_owned()));
        assert_eq!(some.topics[1].error_code, 3);

        cluster.move_leader("t", 1, 2);
        assert_eq!(leaders(&metadata(&mut client, Some(&["t"]), 9), "t")[1], (1, 2, 1, vec![2], vec![2]));
    }

    #[test]
    fn idempotent_produce_appends_with_offsets() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        assert_eq!(client.init_producer_id(None), (0, 1000, 0));
        assert_eq!(client.init_producer_id(None), (0, 1001, 0));

        let first = client.produce(&[("t", 0, batch(1000, 0, 0, &["a", "b"]))], 9).unwrap();
        assert_eq!(first, [answer("t", 0, 0, 0)]);
        let second = client.produce(&[("t", 0, batch(1000, 0, 2, &["c"]))], 3).unwrap();
        assert_eq!(second, [answer("t", 0, 0, 2)]);

        let written = cluster.records("t", 0);
        assert_eq!(
            written[0],
            Written {
                key: Some(b"k-a".to_vec()),
                value: Some(b"a".to_vec()),
                headers: vec![("h".to_owned(), b"v".to_vec())],
                offset: 0,
                producer_id: 1000,
                epoch: 0,
                sequence: 0,
            }
        );
        assert_eq!(values(&written), ["a", "b", "c"]);
        assert_eq!(
            written.iter().map(|w| (w.offset, w.sequence)).collect::<Vec<_>>(),
            [(0, 0), (1, 1), (2, 2)]
        );
        assert!(written.iter().all(|w| w.producer_id == 1000 && w.epoch == 0 && w.key.is_some()));
        assert!(written.iter().all(|w| w.headers == [("h".to_owned(), b"v".to_vec())]));
        assert_eq!(cluster.produce_requests(0), 2);
        assert_eq!(cluster.partitions_per_request(), [1, 1]);

        // A producer without an id is appended unchecked.
        let plain = client.produce(&[("t", 0, batch(-1, -1, -1, &["d"]))], 9).unwrap();
        assert_eq!(plain, [answer("t", 0, 0, 3)]);
        assert_eq!(cluster.records("t", 0)[3].sequence, -1);
    }

    #[test]
    fn a_duplicate_is_answered_with_its_first_offset() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        client.produce(&[("t", 0, batch(7, 0, 0, &["a", "b"]))], 9).unwrap();
        client.produce(&[("t", 0, batch(7, 0, 2, &["c"]))], 9).unwrap();

        let again = client.produce(&[("t", 0, batch(7, 0, 0, &["a", "b"]))], 9).unwrap();
        assert_eq!(again, [answer("t", 0, 0, 0)]);
        assert_eq!(client.produce(&[("t", 0, batch(7, 0, 2, &["c"]))], 9).unwrap(), [answer("t", 0, 0, 2)]);
        assert_eq!(values(&cluster.records("t", 0)), ["a", "b", "c"]);

        // Only the last five batches are known: an older one is out of order.
        for sequence in 3..7 {
            client.produce(&[("t", 0, batch(7, 0, sequence, &["x"]))], 9).unwrap();
        }
        let oldest = client.produce(&[("t", 0, batch(7, 0, 0, &["a", "b"]))], 9).unwrap();
        assert_eq!(oldest, [answer("t", 0, 45, -1)]);
        assert_eq!(client.produce(&[("t", 0, batch(7, 0, 2, &["c"]))], 9).unwrap(), [answer("t", 0, 0, 2)]);
        assert_eq!(cluster.records("t", 0).len(), 7);
    }

    #[test]
    fn sequences_and_epochs_are_checked() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        let mut send = |epoch, sequence, value| {
            client.produce(&[("t", 0, batch(7, epoch, sequence, &[value]))], 9).unwrap()
        };
        assert_eq!(send(0, 0, "a"), [answer("t", 0, 0, 0)]);
        // A gap.
        assert_eq!(send(0, 2, "gap"), [answer("t", 0, 45, -1)]);
        // A new epoch must start at 0.
        assert_eq!(send(1, 1, "b"), [answer("t", 0, 45, -1)]);
        assert_eq!(send(1, 0, "b"), [answer("t", 0, 0, 1)]);
        // The old epoch is fenced, even for what would be its next batch.
        assert_eq!(send(0, 1, "zombie"), [answer("t", 0, 47, -1)]);
        assert_eq!(send(1, 1, "c"), [answer("t", 0, 0, 2)]);
        assert_eq!(values(&cluster.records("t", 0)), ["a", "b", "c"]);
    }

    #[test]
    fn sequences_go_on_from_0_past_i32_max() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        let near_the_end = batch(7, 0, i32::MAX - 1, &["a", "b", "c"]);
        assert_eq!(client.produce(&[("t", 0, near_the_end)], 9).unwrap(), [answer("t", 0, 0, 0)]);
        assert_eq!(client.produce(&[("t", 0, batch(7, 0, 1, &["d"]))], 9).unwrap(), [answer("t", 0, 0, 3)]);
        let sequences: Vec<i32> = cluster.records("t", 0).iter().map(|w| w.sequence).collect();
        assert_eq!(sequences, [i32::MAX - 1, i32::MAX, 0, 1]);
    }

    #[test]
    fn malformed_records_are_refused() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        // Produce v3+ allows one batch per partition.
        let two = [batch(7, 0, 0, &["a"]), batch(7, 0, 1, &["b"])].concat();
        assert_eq!(client.produce(&[("t", 0, two.into())], 9).unwrap(), [answer("t", 0, 87, -1)]);
        // A flipped byte fails the CRC.
        let mut corrupt = batch(7, 0, 0, &["a"]).to_vec();
        *corrupt.last_mut().unwrap() ^= 1;
        assert_eq!(client.produce(&[("t", 0, corrupt.into())], 9).unwrap(), [answer("t", 0, 2, -1)]);
        assert!(cluster.records("t", 0).is_empty());
        assert_eq!(client.produce(&[("t", 0, batch(7, 0, 0, &["a"]))], 9).unwrap(), [answer("t", 0, 0, 0)]);
    }

    #[test]
    fn acks_0_is_not_answered() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        let unanswered = produce_request(&[("t", 0, batch(-1, -1, -1, &["a"]))]).with_acks(0);
        client.send(&unanswered, 9).unwrap();
        // The next answer is the next request's.
        assert_eq!(metadata(&mut client, None, 12).topics.len(), 1);
        assert_eq!(values(&cluster.records("t", 0)), ["a"]);

        // An error closes the connection instead.
        let failing = produce_request(&[("t", 1, batch(-1, -1, -1, &["b"]))]).with_acks(0);
        client.send(&failing, 9).unwrap();
        assert!(client.call(&MetadataRequest::default().with_topics(None), 12).is_err());
    }

    #[test]
    fn a_forgotten_producer_gets_what_kafka_answers() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        let mut send =
            |sequence, value| client.produce(&[("t", 0, batch(7, 0, sequence, &[value]))], 9).unwrap();
        assert_eq!(send(0, "a"), [answer("t", 0, 0, 0)]);

        // Kafka 4: appended at any sequence.
        cluster.forget_producers("t", 0);
        assert_eq!(send(5, "b"), [answer("t", 0, 0, 1)]);
        assert_eq!(send(6, "c"), [answer("t", 0, 0, 2)]);

        cluster.forget_producers("t", 0);
        cluster.on_unknown_producer(UnknownProducerAnswer::UnknownProducerId);
        assert_eq!(send(7, "d"), [answer("t", 0, 59, -1)]);
        cluster.on_unknown_producer(UnknownProducerAnswer::OutOfOrder);
        assert_eq!(send(7, "d"), [answer("t", 0, 45, -1)]);
        assert_eq!(send(0, "e"), [answer("t", 0, 0, 3)]);
        assert_eq!(values(&cluster.records("t", 0)), ["a", "b", "c", "e"]);
    }

    #[test]
    fn init_producer_id_bumps_a_given_epoch() {
        let cluster = FakeCluster::start(1, &[]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        assert_eq!(client.init_producer_id(None), (0, 1000, 0));
        assert_eq!(client.init_producer_id(Some((1000, 0))), (0, 1000, 1));
        // A retry of that bump, whose answer was lost.
        assert_eq!(client.init_producer_id(Some((1000, 0))), (0, 1000, 1));
        assert_eq!(client.init_producer_id(Some((1000, 1))), (0, 1000, 2));
        assert_eq!(client.init_producer_id(Some((1000, 0))).0, 90);
        assert_eq!(client.init_producer_id(Some((999, 0))).0, 90);
        assert_eq!(client.init_producer_id(Some((1000, -1))).0, 42);

        cluster.reinit_gives_new_id(true);
        assert_eq!(client.init_producer_id(Some((1000, 2))), (0, 1001, 0));

        // v0 has no id to give; an empty transactional id is refused.
        let v0 = InitProducerIdRequest::default().with_transactional_id(None);
        assert_eq!(client.call(&v0, 0).unwrap().producer_id.0, 1002);
        assert_eq!(client.call(&InitProducerIdRequest::default(), 4).unwrap().error_code, 42);
    }

    #[test]
    fn fail_next_fails_one_partition_of_a_request() {
        let cluster = FakeCluster::start(1, &[("t", 2)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        cluster.fail_next("t", 0, 19, 1);
        let both = [("t", 0, batch(7, 0, 0, &["a"])), ("t", 1, batch(7, 0, 0, &["b"]))];
        assert_eq!(client.produce(&both, 9).unwrap(), [answer("t", 0, 19, -1), answer("t", 1, 0, 0)]);
        assert!(cluster.records("t", 0).is_empty());
        assert_eq!(values(&cluster.records("t", 1)), ["b"]);

        let retry = client.produce(&[("t", 0, batch(7, 0, 0, &["a"]))], 9).unwrap();
        assert_eq!(retry, [answer("t", 0, 0, 0)]);
        assert_eq!(cluster.partitions_per_request(), [2, 1]);
    }

    #[test]
    fn write_but_drop_response_closes_after_appending() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        cluster.write_but_drop_response(0, 1);
        let lost = client.produce(&[("t", 0, batch(7, 0, 0, &["a", "b"]))], 9);
        assert!(lost.is_err(), "{lost:?}");
        assert_eq!(values(&cluster.records("t", 0)), ["a", "b"]);

        // The retry is known for a duplicate.
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        let retry = client.produce(&[("t", 0, batch(7, 0, 0, &["a", "b"]))], 9).unwrap();
        assert_eq!(retry, [answer("t", 0, 0, 0)]);
        assert_eq!(values(&cluster.records("t", 0)), ["a", "b"]);
        assert_eq!(cluster.produce_requests(0), 2);
    }

    #[test]
    fn only_the_leader_takes_a_partition() {
        let cluster = FakeCluster::start(2, &[("t", 1)]);
        let mut leader = Client::connect(&cluster.bootstrap()[0]);
        let mut follower = Client::connect(&cluster.bootstrap()[1]);
        assert_eq!(
            follower.produce(&[("t", 0, batch(7, 0, 0, &["a"]))], 9).unwrap(),
            [answer("t", 0, 6, -1)]
        );
        assert_eq!(leader.produce(&[("t", 0, batch(7, 0, 0, &["a"]))], 9).unwrap(), [answer("t", 0, 0, 0)]);
        assert_eq!(leader.produce(&[("u", 0, batch(7, 0, 0, &["a"]))], 9).unwrap(), [answer("u", 0, 3, -1)]);

        // The new leader knows the producer's sequence.
        cluster.move_leader("t", 0, 1);
        assert_eq!(leader.produce(&[("t", 0, batch(7, 0, 1, &["b"]))], 9).unwrap(), [answer("t", 0, 6, -1)]);
        assert_eq!(follower.produce(&[("t", 0, batch(7, 0, 0, &["a"]))], 9).unwrap(), [answer("t", 0, 0, 0)]);
        assert_eq!(follower.produce(&[("t", 0, batch(7, 0, 1, &["b"]))], 9).unwrap(), [answer("t", 0, 0, 1)]);
        assert_eq!(cluster.produce_requests(0), 3);
        assert_eq!(cluster.produce_requests(1), 3);
    }

    #[test]
    fn delayed_responses_keep_request_order() {
        let cluster = FakeCluster::start(1, &[("t", 1)]);
        let mut client = Client::connect(&cluster.bootstrap()[0]);
        let delay = Duration::from_millis(250);
        cluster.delay_responses(0, delay);
        let started = Instant::now();
        let first = client.send(&produce_request(&[("t", 0, batch(7, 0, 0, &["a"]))]), 9).unwrap();
        let second = client.send(&produce_request(&[("t", 0, batch(7, 0, 1, &["b"]))]), 9).unwrap();
        // Metadata is not held, but waits its turn.
        let third = client.send(&MetadataRequest::default().with_topics(None), 12).unwrap();
        assert_eq!(answers(&client.receive::<ProduceRequest>(9, first).unwrap()), [answer("t", 0, 0, 0)]);
        assert_eq!(answers(&client.receive::<ProduceRequest>(9, second).unwrap()), [answer("t", 0, 0, 1)]);
        assert_eq!(client.receive::<MetadataRequest>(12, third).unwrap().topics.len(), 1);
        assert!(started.elapsed() >= 2 * delay);

        cluster.delay_responses(0, Duration::ZERO);
        let started = Instant::now();
        client.produce(&[("t", 0, batch(7, 0, 2, &["c"]))], 9).unwrap();
        assert!(started.elapsed() < delay);
    }

    #[test]
    fn a_stopped_node_refuses_until_started_on_the_same_port() {
        let cluster = FakeCluster::start(2, &[("t", 2)]);
        let addresses = cluster.bootstrap();
        let mut client = Client::connect(&addresses[0]);
        assert_eq!(client.produce(&[("t", 0, batch(7, 0, 0, &["a"]))], 9).unwrap(), [answer("t", 0, 0, 0)]);

        cluster.stop_node(0);
        assert!(client.produce(&[("t", 0, batch(7, 0, 1, &["b"]))], 9).is_err());
        assert!(refused(&addresses[0]));
        let mut other = Client::connect(&addresses[1]);
        assert_eq!(other.produce(&[("t", 1, batch(7, 0, 0, &["c"]))], 9).unwrap(), [answer("t", 1, 0, 0)]);

        cluster.start_node(0);
        assert_eq!(cluster.bootstrap(), addresses);
        let mut client = Client::connect(&addresses[0]);
        assert_eq!(client.produce(&[("t", 0, batch(7, 0, 1, &["b"]))], 9).unwrap(), [answer("t", 0, 0, 1)]);
        assert_eq!(values(&cluster.records("t", 0)), ["a", "b"]);
    }

    #[test]
    fn dropping_the_cluster_closes_its_ports() {
        let cluster = FakeCluster::start(2, &[("t", 1)]);
        let addresses = cluster.bootstrap();
        let mut client = Client::connect(&addresses[0]);
        assert_eq!(metadata(&mut client, None, 12).brokers.len(), 2);
        drop(cluster);
        assert!(addresses.iter().all(|a| refused(a)));
        let mut byte = [0; 1];
        assert!(matches!(client.stream.read(&mut byte), Ok(0) | Err(_)));
    }
}
