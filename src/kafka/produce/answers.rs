//! The answers a connection reads besides Produce's: ApiVersions and
//! SaslHandshake while it opens, Metadata whenever a leader moves. Those
//! with arrays are read by databus itself (`read.rs` says why), into
//! `kafka-protocol`'s types so the code that uses them does not change;
//! InitProducerId and SaslAuthenticate hold no array, and `kafka-protocol`
//! bounds strings and bytes by what is left, so it reads them.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiVersionsResponse, InitProducerIdResponse, MetadataResponse, ResponseHeader, SaslAuthenticateResponse,
    SaslHandshakeResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion, StrBytes};

use super::read::{expect_correlation, Reader};
use super::wire::WireError;

/// A response read from its bytes (header included) after a request of
/// `version` with `correlation`.
pub(crate) trait Answer: Sized {
    fn read(body: Bytes, version: i16, correlation: i32) -> Result<Self, WireError>;
}

impl Answer for ApiVersionsResponse {
    fn read(body: Bytes, version: i16, correlation: i32) -> Result<Self, WireError> {
        // Header v0 whatever the version, so that a client that spoke too
        // new a version can still read the answer.
        let mut r = Reader::new(&body, version >= 3, "ApiVersions");
        r.answers(correlation)?;
        let mut answer = ApiVersionsResponse::default().with_error_code(r.i16()?);
        if answer.error_code == UNSUPPORTED_VERSION {
            // The rest is a v0 answer; the caller asks again in v0.
            return Ok(answer);
        }
        for _ in 0..r.count()? {
            let key = ApiVersion::default().with_api_key(r.i16()?).with_min_version(r.i16()?);
            answer.api_keys.push(key.with_max_version(r.i16()?));
            r.tags()?;
        }
        if version >= 1 {
            answer.throttle_time_ms = r.i32()?;
        }
        r.tags_with(|tag, field| {
            match tag {
                0 => {
                    for _ in 0..field.count()? {
                        let name = StrBytes::from_string(field.text()?);
                        let key =
                            SupportedFeatureKey::default().with_name(name).with_min_version(field.i16()?);
                        answer.supported_features.push(key.with_max_version(field.i16()?));
                        field.tags()?;
                    }
                }
                1 => answer.finalized_features_epoch = field.i64()?,
                2 => {
                    for _ in 0..field.count()? {
                        let name = StrBytes::from_string(field.text()?);
                        let key = FinalizedFeatureKey::default()
                            .with_name(name)
                            .with_max_version_level(field.i16()?);
                        answer.finalized_features.push(key.with_min_version_level(field.i16()?));
                        field.tags()?;
                    }
                }
                3 => answer.zk_migration_ready = field.bool()?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(answer)
    }
}

/// UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

impl Answer for SaslHandshakeResponse {
    fn read(body: Bytes, _version: i16, correlation: i32) -> Result<Self, WireError> {
        let mut r = Reader::new(&body, false, "SaslHandshake");
        r.answers(correlation)?;
        let mut answer = SaslHandshakeResponse::default().with_error_code(r.i16()?);
        for _ in 0..r.count()? {
            answer.mechanisms.push(StrBytes::from_string(r.text()?));
        }
        Ok(answer)
    }
}

/// Metadata v1–v12 (the topic id of v10+ is skipped: databus names topics).
impl Answer for MetadataResponse {
    fn read(body: Bytes, version: i16, correlation: i32) -> Result<Self, WireError> {
        let mut r = Reader::new(&body, version >= 9, "Metadata");
        r.answers(correlation)?;
        r.tags()?;
        let mut answer = MetadataResponse::default();
        if version >= 3 {
            answer.throttle_time_ms = r.i32()?;
        }
        for _ in 0..r.count()? {
            let broker = MetadataResponseBroker::default()
                .with_node_id(r.i32()?.into())
                .with_host(StrBytes::from_string(r.text()?))
                .with_port(r.i32()?);
            answer.brokers.push(broker.with_rack(r.string()?.map(StrBytes::from_string)));
            r.tags()?;
        }
        if version >= 2 {
            answer.cluster_id = r.string()?.map(StrBytes::from_string);
        }
        answer.controller_id = r.i32()?.into();
        for _ in 0..r.count()? {
            let mut topic = MetadataResponseTopic::default().with_error_code(r.i16()?);
            topic.name = r.string()?.map(|name| TopicName(StrBytes::from_string(name)));
            if version >= 10 {
                r.skip(16)?;
            }
            topic.is_internal = r.bool()?;
            for _ in 0..r.count()? {
                let mut partition = MetadataResponsePartition::default()
                    .with_error_code(r.i16()?)
                    .with_partition_index(r.i32()?)
                    .with_leader_id(r.i32()?.into());
                if version >= 7 {
                    partition.leader_epoch = r.i32()?;
                }
                partition.replica_nodes = r.i32s()?;
                partition.isr_nodes = r.i32s()?;
                if version >= 5 {
                    partition.offline_replicas = r.i32s()?;
                }
                r.tags()?;
                topic.partitions.push(partition);
            }
            if version >= 8 {
                topic.topic_authorized_operations = r.i32()?;
            }
            r.tags()?;
            answer.topics.push(topic);
        }
        if (8..=10).contains(&version) {
            answer.cluster_authorized_operations = r.i32()?;
        }
        r.tags()?;
        Ok(answer)
    }
}

impl Answer for InitProducerIdResponse {
    fn read(body: Bytes, version: i16, correlation: i32) -> Result<Self, WireError> {
        with_kafka_protocol(body, version, correlation)
    }
}

impl Answer for SaslAuthenticateResponse {
    fn read(body: Bytes, version: i16, correlation: i32) -> Result<Self, WireError> {
        with_kafka_protocol(body, version, correlation)
    }
}

/// In how many ways databus makes sense of a response `frame` (the fuzz
/// target `broker_response`): as a Produce response v3–v9, Metadata
/// v1–v12, ApiVersions v0–v3 and SaslHandshake v0–v1.
pub(crate) fn readings(frame: &Bytes) -> usize {
    let correlation = frame.get(..4).map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let read = |ok: bool| usize::from(ok);
    (3..=9).map(|v| read(super::response::decode(frame, v, correlation).is_ok())).sum::<usize>()
        + (1..=12).map(|v| read(MetadataResponse::read(frame.clone(), v, correlation).is_ok())).sum::<usize>()
        + (0..=3)
            .map(|v| read(ApiVersionsResponse::read(frame.clone(), v, correlation).is_ok()))
            .sum::<usize>()
        + (0..=1)
            .map(|v| read(SaslHandshakeResponse::read(frame.clone(), v, correlation).is_ok()))
            .sum::<usize>()
}

/// The fake cluster's own tests read whole Produce responses; the producer
/// reads them with `response.rs`.
#[cfg(test)]
impl Answer for kafka_protocol::messages::ProduceResponse {
    fn read(body: Bytes, version: i16, correlation: i32) -> Result<Self, WireError> {
        with_kafka_protocol(body, version, correlation)
    }
}

/// A response without arrays, read by `kafka-protocol`.
fn with_kafka_protocol<T: Decodable + HeaderVersion>(
    mut body: Bytes,
    version: i16,
    correlation: i32,
) -> Result<T, WireError> {
    fn bad(e: impl std::fmt::Display) -> WireError {
        WireError::Protocol(format!("cannot decode a response: {e}"))
    }
    let header = ResponseHeader::decode(&mut body, T::header_version(version)).map_err(bad)?;
    expect_correlation(header.correlation_id, correlation)?;
    T::decode(&mut body, version).map_err(bad)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    /// A response as kafka-protocol's encoder writes it (the crate agrees
    /// with the brokers: the fake cluster speaks it, the tests meet real ones).
    fn encoded<T: Encodable + HeaderVersion>(
        response: &T,
        version: i16,
        correlation: i32,
        header: i16,
    ) -> Bytes {
        let mut out = BytesMut::new();
        ResponseHeader::default().with_correlation_id(correlation).encode(&mut out, header).unwrap();
        response.encode(&mut out, version).unwrap();
        out.freeze()
    }

    /// What kafka-protocol reads from the same bytes.
    fn theirs<T: Decodable>(mut bytes: Bytes, version: i16, header: i16) -> T {
        ResponseHeader::decode(&mut bytes, header).unwrap();
        T::decode(&mut bytes, version).unwrap()
    }

    /// A metadata answer with every field `version` has.
    fn metadata(version: i16) -> MetadataResponse {
        let partition = |index: i32, leader: i32| {
            MetadataResponsePartition::default()
                .with_error_code(if leader < 0 { 5 } else { 0 })
                .with_partition_index(index)
                .with_leader_id(leader.into())
                .with_leader_epoch(4)
                .with_replica_nodes(vec![1.into(), 2.into(), 3.into()])
                .with_isr_nodes(vec![1.into(), 3.into()])
                .with_offline_replicas(vec![2.into()])
        };
        let topic = |name: &'static str, partitions| {
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str(name))))
                .with_is_internal(name.starts_with("__"))
                .with_partitions(partitions)
                .with_topic_authorized_operations(if version >= 8 { 248 } else { i32::MIN })
        };
        let broker = |node: i32, rack: Option<&'static str>| {
            MetadataResponseBroker::default()
                .with_node_id(node.into())
                .with_host(StrBytes::from_string(format!("kafka-{node}.example")))
                .with_port(9092 + node)
                .with_rack(rack.map(StrBytes::from_static_str))
        };
        MetadataResponse::default()
            .with_throttle_time_ms(3)
            .with_brokers(vec![broker(1, Some("a")), broker(2, None), broker(3, Some("c"))])
            .with_cluster_id(Some(StrBytes::from_static_str("cluster-x")))
            .with_controller_id(2.into())
            .with_topics(vec![
                topic("orders", vec![partition(0, 1), partition(1, 3), partition(2, -1)]),
                topic("__consumer_offsets", vec![partition(0, 2)]),
                MetadataResponseTopic::default()
                    .with_error_code(3)
                    .with_name(Some(TopicName(StrBytes::from_static_str("unknown")))),
            ])
            .with_cluster_authorized_operations(if (8..=10).contains(&version) { 7 } else { i32::MIN })
    }

    fn api_versions() -> ApiVersionsResponse {
        ApiVersionsResponse::default()
            .with_api_keys(vec![
                ApiVersion::default().with_api_key(0).with_min_version(3).with_max_version(13),
                ApiVersion::default().with_api_key(3).with_min_version(0).with_max_version(13),
                ApiVersion::default().with_api_key(68).with_min_version(0).with_max_version(1),
            ])
            .with_throttle_time_ms(1)
            .with_supported_features(vec![SupportedFeatureKey::default()
                .with_name(StrBytes::from_static_str("group.version"))
                .with_min_version(0)
                .with_max_version(1)])
            .with_finalized_features_epoch(42)
            .with_finalized_features(vec![FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str("group.version"))
                .with_max_version_level(1)
                .with_min_version_level(1)])
            .with_zk_migration_ready(true)
    }

    fn handshake() -> SaslHandshakeResponse {
        SaslHandshakeResponse::default().with_error_code(33).with_mechanisms(vec![
            StrBytes::from_static_str("PLAIN"),
            StrBytes::from_static_str("SCRAM-SHA-512"),
        ])
    }

    /// What this module keeps of a kafka-protocol answer: all but the
    /// topic ids.
    fn without_topic_ids(mut answer: MetadataResponse) -> MetadataResponse {
        for topic in &mut answer.topics {
            topic.topic_id = Default::default();
        }
        answer
    }

    #[test]
    fn every_version_reads_as_kafka_protocol_reads_it() {
        for version in 1..=12 {
            let header = MetadataResponse::header_version(version);
            let bytes = encoded(&metadata(version), version, 9, header);
            let mine = MetadataResponse::read(bytes.clone(), version, 9).unwrap();
            assert_eq!(mine, without_topic_ids(theirs(bytes, version, header)), "Metadata v{version}");
        }
        for version in 0..=4 {
            let bytes = encoded(&api_versions(), version, 1, 0);
            let mine = ApiVersionsResponse::read(bytes.clone(), version, 1).unwrap();
            assert_eq!(mine, theirs(bytes, version, 0), "ApiVersions v{version}");
        }
        for version in 0..=1 {
            let bytes = encoded(&handshake(), version, 2, 0);
            assert_eq!(
                SaslHandshakeResponse::read(bytes.clone(), version, 2).unwrap(),
                theirs(bytes, version, 0)
            );
        }
    }

    #[test]
    fn a_real_brokers_answers_read_as_it_meant_them() {
        // Apache Kafka 4.3.1 (services.sh's broker, test156 of 3 partitions).
        let frame = |bytes: &'static [u8]| Bytes::from_static(&bytes[4..]);
        let versions =
            frame(include_bytes!("../../../fuzz/corpus/broker_response/kafka-4.3.1-api-versions-v3"));
        let versions = ApiVersionsResponse::read(versions, 3, 1).unwrap();
        let produce = versions.api_keys.iter().find(|k| k.api_key == 0).unwrap();
        assert!(produce.min_version <= 3 && produce.max_version == 13, "{produce:?}");
        assert!(versions.finalized_features.iter().any(|f| f.name.as_str() == "group.version"));
        let metadata = frame(include_bytes!("../../../fuzz/corpus/broker_response/kafka-4.3.1-metadata-v12"));
        let metadata = MetadataResponse::read(metadata, 12, 2).unwrap();
        assert_eq!(metadata.brokers.len(), 1);
        assert_eq!((metadata.brokers[0].host.as_str(), metadata.brokers[0].port), ("127.0.0.1", 9092));
        let topic = &metadata.topics[0];
        assert_eq!(topic.name.as_ref().map(|n| n.0.as_str()), Some("test156"));
        assert_eq!(topic.partitions.len(), 3);
        assert!(topic.partitions.iter().all(|p| p.leader_id == metadata.brokers[0].node_id));
    }

    #[test]
    fn tagged_fields_of_newer_brokers_are_skipped() {
        let mut answer = metadata(12);
        answer.unknown_tagged_fields.insert(7, Bytes::from_static(b"future"));
        answer.topics[0].partitions[1].unknown_tagged_fields.insert(9, Bytes::from_static(b"hint"));
        answer.brokers[0].unknown_tagged_fields.insert(3, Bytes::from_static(b"zone"));
        let mine = MetadataResponse::read(encoded(&answer, 12, 1, 1), 12, 1).unwrap();
        assert_eq!(mine, without_topic_ids(metadata(12)));
        let mut versions = api_versions();
        versions.unknown_tagged_fields.insert(11, Bytes::from_static(b"later"));
        assert_eq!(ApiVersionsResponse::read(encoded(&versions, 3, 1, 0), 3, 1).unwrap(), api_versions());
    }

    #[test]
    fn an_unsupported_version_answer_is_left_for_the_v0_question() {
        // A broker that speaks no ApiVersions v3 answers in v0's shape.
        let v0 = ApiVersionsResponse::default().with_error_code(35).with_api_keys(api_versions().api_keys);
        let answer = ApiVersionsResponse::read(encoded(&v0, 0, 4, 0), 3, 4).unwrap();
        assert_eq!(answer.error_code, 35);
    }

    #[test]
    fn a_response_to_another_request_is_refused() {
        let error = MetadataResponse::read(encoded(&metadata(12), 12, 3, 1), 12, 4).unwrap_err();
        assert_eq!(error.to_string(), "a response to request 3 came where 4 was expected");
        let error = InitProducerIdResponse::read(encoded(&InitProducerIdResponse::default(), 4, 3, 1), 4, 4);
        assert_eq!(error.unwrap_err().to_string(), "a response to request 3 came where 4 was expected");
    }

    #[test]
    fn every_cut_of_an_answer_is_an_error_not_a_panic() {
        for version in 1..=12 {
            let whole = encoded(&metadata(version), version, 1, MetadataResponse::header_version(version));
            for end in 0..whole.len() {
                assert!(
                    MetadataResponse::read(whole.slice(..end), version, 1).is_err(),
                    "v{version} cut at {end}"
                );
            }
        }
        for version in 0..=3 {
            let whole = encoded(&api_versions(), version, 1, 0);
            for end in 0..whole.len() {
                let cut = ApiVersionsResponse::read(whole.slice(..end), version, 1);
                assert!(cut.is_err(), "ApiVersions v{version} cut at {end}");
            }
        }
    }

    #[test]
    fn a_declared_length_beyond_the_bytes_left_is_refused_before_allocating() {
        // Metadata v1: no throttle time, then 2^31 - 1 brokers in 4 bytes.
        let mut lie = 1i32.to_be_bytes().to_vec();
        lie.extend_from_slice(&i32::MAX.to_be_bytes());
        lie.extend_from_slice(b"tiny");
        let error = MetadataResponse::read(Bytes::from(lie), 1, 1).unwrap_err();
        assert_eq!(error.to_string(), "a Metadata response declares 2147483647 entries with 4 bytes left");
        // v12: a partition's replicas as a compact array of ~2^32 entries.
        let mut one = metadata(12);
        one.topics.truncate(1);
        one.topics[0].partitions.truncate(1);
        one.topics[0].partitions[0].replica_nodes.clear();
        let bytes = encoded(&one, 12, 1, 1).to_vec();
        // The replicas' count (an empty compact array is the byte 1) sits
        // right after the leader epoch 4.
        let at = bytes.windows(5).position(|w| w == [0, 0, 0, 4, 1]).unwrap() + 4;
        let mut lie = bytes[..at].to_vec();
        lie.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        lie.extend_from_slice(&bytes[at + 1..]);
        let error = MetadataResponse::read(Bytes::from(lie), 12, 1).unwrap_err();
        assert!(error.to_string().contains("a Metadata response declares 4294967294 entries"), "{error}");
        // ApiVersions v3 and SaslHandshake: the same lie.
        let mut lie = 1i32.to_be_bytes().to_vec();
        lie.extend_from_slice(&0i16.to_be_bytes());
        lie.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0]);
        assert!(ApiVersionsResponse::read(Bytes::from(lie), 3, 1).is_err());
        let mut lie = 1i32.to_be_bytes().to_vec();
        lie.extend_from_slice(&0i16.to_be_bytes());
        lie.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(SaslHandshakeResponse::read(Bytes::from(lie), 1, 1).is_err());
    }
}
