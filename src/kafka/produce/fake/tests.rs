//! The fake cluster's own tests, through a minimal client over TCP: what
//! it advertises, logins, metadata, appends, duplicates, sequences and
//! epochs, and each injected fault.

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
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

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
        let data = PartitionProduceData::default().with_index(*partition).with_records(Some(records.clone()));
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
        .map(|p| (p.partition_index, p.leader_id.0, p.leader_epoch, ids(&p.replica_nodes), ids(&p.isr_nodes)))
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
    let scram = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
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
    assert_eq!(written.iter().map(|w| (w.offset, w.sequence)).collect::<Vec<_>>(), [(0, 0), (1, 1), (2, 2)]);
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
    let mut send =
        |epoch, sequence, value| client.produce(&[("t", 0, batch(7, epoch, sequence, &[value]))], 9).unwrap();
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
    let mut send = |sequence, value| client.produce(&[("t", 0, batch(7, 0, sequence, &[value]))], 9).unwrap();
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
    assert_eq!(follower.produce(&[("t", 0, batch(7, 0, 0, &["a"]))], 9).unwrap(), [answer("t", 0, 6, -1)]);
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
