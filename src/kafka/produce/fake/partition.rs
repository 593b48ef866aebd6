//! A partition of the fake cluster: its log, and the idempotent producers'
//! sequences and epochs checked as a Kafka 4 broker checks them, so that a
//! retry is known for a duplicate and a gap is refused.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::{BatchDecodeInfo, Record, RecordBatchDecoder, NO_SEQUENCE};

use super::{UnknownProducerAnswer, Written};

const CORRUPT_MESSAGE: i16 = ResponseError::CorruptMessage.code();
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = ResponseError::OutOfOrderSequenceNumber.code();
const INVALID_PRODUCER_EPOCH: i16 = ResponseError::InvalidProducerEpoch.code();
const UNKNOWN_PRODUCER_ID: i16 = ResponseError::UnknownProducerId.code();
const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();

/// The batches of a producer a partition remembers (Kafka's
/// `NUM_BATCHES_TO_RETAIN`): a retry of any of them is a duplicate, which is
/// why an idempotent producer keeps at most five requests in flight.
const BATCHES_KEPT: usize = 5;

pub(super) struct Partition {
    pub(super) leader: usize,
    pub(super) leader_epoch: i32,
    pub(super) log: Vec<Written>,
    pub(super) producers: HashMap<i64, ProducerState>,
    /// Injected errors, answered to the next produce attempts in turn.
    pub(super) failures: VecDeque<i16>,
}

/// A producer's idempotence state on one partition (Kafka's
/// `ProducerStateEntry`).
pub(super) struct ProducerState {
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

/// The one batch of a partition's records that Produce v3+ allows: its
/// header and records, or the error Kafka answers for anything else.
pub(super) fn decode_batch(records: Option<&Bytes>) -> Result<(BatchDecodeInfo, Vec<Record>), i16> {
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
    pub(super) fn led_by(leader: usize) -> Partition {
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
    pub(super) fn append(
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
