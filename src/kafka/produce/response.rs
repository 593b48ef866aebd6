//! A Produce response (v3–v9) read by databus itself: the one response the
//! producer reads for every request, from bytes a broker — or whatever
//! sits at its address — sent. Every declared length is checked against the
//! bytes left before anything is allocated (`read.rs` says why not
//! `kafka-protocol`'s decoder), and only what the sender needs is kept: one
//! [`PartitionAnswer`] per partition.

use super::read::Reader;
use super::wire::WireError;

/// What the broker said of one partition's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionAnswer {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    /// The offset the batch's first record got, or -1.
    pub base_offset: i64,
    pub error_message: Option<String>,
}

/// The partitions a Produce response of `version` answers for, after
/// checking it answers request `correlation`.
pub(crate) fn decode(body: &[u8], version: i16, correlation: i32) -> Result<Vec<PartitionAnswer>, WireError> {
    let mut r = Reader::new(body, version >= 9, "Produce");
    r.answers(correlation)?;
    r.tags()?;
    let mut answers = Vec::new();
    for _ in 0..r.count()? {
        let topic = r.string()?.unwrap_or_default();
        for _ in 0..r.count()? {
            let partition = r.i32()?;
            let error_code = r.i16()?;
            let base_offset = r.i64()?;
            let _log_append_time = r.i64()?;
            if version >= 5 {
                let _log_start_offset = r.i64()?;
            }
            let mut error_message = None;
            if version >= 8 {
                for _ in 0..r.count()? {
                    let _batch_index = r.i32()?;
                    let _batch_error = r.string()?;
                    r.tags()?;
                }
                error_message = r.string()?;
            }
            r.tags()?;
            answers.push(PartitionAnswer {
                topic: topic.clone(),
                partition,
                error_code,
                base_offset,
                error_message,
            });
        }
        r.tags()?;
    }
    let _throttle_time = r.i32()?;
    r.tags()?;
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_response::{
        BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ProduceResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

    use super::*;

    /// A response as kafka-protocol's encoder writes it (the crate agrees
    /// with the brokers: the fake cluster and the fault tests speak it).
    fn encoded(response: &ProduceResponse, version: i16, correlation: i32) -> Vec<u8> {
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation)
            .encode(&mut out, ProduceResponse::header_version(version))
            .unwrap();
        response.encode(&mut out, version).unwrap();
        out.to_vec()
    }

    fn sample() -> ProduceResponse {
        let partition = |index, error_code, base_offset, message: Option<&str>| {
            PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(error_code)
                .with_base_offset(base_offset)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(7)
                .with_record_errors(vec![BatchIndexAndErrorMessage::default()
                    .with_batch_index(3)
                    .with_batch_index_error_message(Some(StrBytes::from_static_str("bad record")))])
                .with_error_message(message.map(|m| StrBytes::from_string(m.to_owned())))
        };
        ProduceResponse::default()
            .with_responses(vec![
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_static_str("orders")))
                    .with_partition_responses(vec![
                        partition(0, 0, 41, None),
                        partition(5, 6, -1, Some("not the leader")),
                    ]),
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_static_str("audit")))
                    .with_partition_responses(vec![partition(2, 0, 1_000_000_000_000, None)]),
            ])
            .with_throttle_time_ms(12)
    }

    #[test]
    fn every_version_reads_as_kafka_protocol_writes_it() {
        for version in 3..=9 {
            let answers = decode(&encoded(&sample(), version, 77), version, 77).unwrap();
            let brief: Vec<_> = answers
                .iter()
                .map(|a| (a.topic.as_str(), a.partition, a.error_code, a.base_offset))
                .collect();
            assert_eq!(
                brief,
                [("orders", 0, 0, 41), ("orders", 5, 6, -1), ("audit", 2, 0, 1_000_000_000_000)],
                "v{version}"
            );
            let message = answers[1].error_message.as_deref();
            assert_eq!(message, (version >= 8).then_some("not the leader"), "v{version}");
        }
    }

    #[test]
    fn tagged_fields_of_newer_brokers_are_skipped() {
        let mut response = sample();
        response.unknown_tagged_fields.insert(5, bytes::Bytes::from_static(b"future"));
        response.responses[0].partition_responses[1]
            .unknown_tagged_fields
            .insert(9, bytes::Bytes::from_static(b"leader hint"));
        let answers = decode(&encoded(&response, 9, 1), 9, 1).unwrap();
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[2].base_offset, 1_000_000_000_000);
    }

    #[test]
    fn a_response_to_another_request_is_refused() {
        let error = decode(&encoded(&sample(), 7, 3), 7, 4).unwrap_err();
        assert_eq!(error.to_string(), "a response to request 3 came where 4 was expected");
    }

    #[test]
    fn every_cut_of_a_response_is_an_error_not_a_panic() {
        for version in 3..=9 {
            let whole = encoded(&sample(), version, 1);
            for end in 0..whole.len() {
                assert!(decode(&whole[..end], version, 1).is_err(), "v{version} cut at {end}");
            }
        }
    }

    #[test]
    fn a_declared_length_beyond_the_bytes_left_is_refused_before_allocating() {
        // The input `make fuzz` found: a compact array declaring ~2^35 entries.
        let crash = include_bytes!(
            "../../../fuzz/corpus/broker_response/crash-b46bae28c50651c0c8c6d5d43e28005fdabcae8c"
        );
        let (first, _) = crash[4..].split_at(0x34);
        for version in 3..=9 {
            assert!(decode(first, version, 2).is_err(), "v{version}");
        }
        // Its second response is a well-formed one, of one version.
        let mut stream = bytes::BytesMut::from(&crash[..]);
        super::super::wire::take_frame(&mut stream).unwrap().unwrap();
        let second = super::super::wire::take_frame(&mut stream).unwrap().unwrap();
        let correlation = i32::from_be_bytes(second[..4].try_into().unwrap());
        assert_eq!((3..=9).filter(|&v| decode(&second, v, correlation).is_ok()).count(), 1);
        // v3: 2^31 - 1 topics in a few bytes.
        let mut lie = 1i32.to_be_bytes().to_vec();
        lie.extend_from_slice(&i32::MAX.to_be_bytes());
        lie.extend_from_slice(b"tiny");
        let error = decode(&lie, 3, 1).unwrap_err();
        assert_eq!(error.to_string(), "a Produce response declares 2147483647 entries with 4 bytes left");
        // v9: the same in a compact array.
        let mut lie = 1i32.to_be_bytes().to_vec();
        lie.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]);
        assert!(decode(&lie, 9, 1).unwrap_err().to_string().contains("entries with 2 bytes left"));
    }
}
