//! Record batches (Kafka's message format v2), written as records arrive:
//! each record is encoded into its partition's open batch at once, with its
//! offset and timestamp deltas, so a batch is ready to send the moment a
//! request wants it. The 61-byte header (producer id, epoch, first sequence)
//! is written at send time, since a batch sent again after an epoch bump
//! gets new ones; the records are compressed once, when the batch is sealed.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Compressor;
use kafka_protocol::records::Compression;

use super::super::producer::Reporter;

/// Bytes of a v2 batch header: base offset (8), length (4), then the
/// `length`-counted part: leader epoch (4), magic (1), CRC (4),
/// attributes (2), last offset delta (4), first and max timestamps (8 + 8),
/// producer id (8), epoch (2), base sequence (4), record count (4).
pub(crate) const HEADER: usize = 61;

/// Where the CRC'd part of the header begins (the attributes).
const CRC_FROM: usize = 21;

/// A record's parts, as [`Batch::append`] writes them.
pub(crate) struct Parts<'a, 'h> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'h mut dyn Iterator<Item = (&'a str, &'a [u8])>,
}

/// The records of one partition that go (or went) in one produce request.
pub(crate) struct Batch {
    /// The encoded records, uncompressed until [`Batch::seal`].
    records: BytesMut,
    /// The records once sealed (compressed if asked), kept for a retry.
    sealed: Option<Bytes>,
    count: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    /// Who waits for each record's verdict, in record order.
    pub reporters: Vec<Reporter>,
    /// The first record's sequence, once the batch was first sent: a batch
    /// sent again keeps it (the broker then knows it for a duplicate),
    /// unless its sequences are renumbered (see `Partition::renumber`).
    pub sequence: Option<i32>,
    /// When the oldest record times out (the produce timeout after it came).
    pub deadline: std::time::Instant,
    /// Times sent; more than once is a retry.
    pub attempts: u32,
    created: std::time::Instant,
}

impl Batch {
    pub(crate) fn new(now_ms: i64, deadline: std::time::Instant) -> Batch {
        Batch {
            records: BytesMut::with_capacity(256),
            sealed: None,
            count: 0,
            first_timestamp: now_ms,
            max_timestamp: now_ms,
            reporters: Vec::new(),
            sequence: None,
            deadline,
            attempts: 0,
            created: std::time::Instant::now(),
        }
    }

    /// How long ago its first record came.
    pub(crate) fn age(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    pub(crate) fn count(&self) -> i32 {
        self.count
    }

    /// Encoded bytes so far (uncompressed).
    pub(crate) fn size(&self) -> usize {
        self.records.len()
    }

    /// Writes one record, created at `now_ms`, whose verdict goes to `reporter`.
    pub(crate) fn append(&mut self, now_ms: i64, record: Parts<'_, '_>, reporter: Reporter) {
        debug_assert!(self.sealed.is_none(), "a sealed batch takes no record");
        let mut body = Vec::with_capacity(32 + record.key.map_or(0, <[u8]>::len) + record.value.len());
        body.put_u8(0); // attributes
        put_varlong(&mut body, now_ms.saturating_sub(self.first_timestamp).max(0));
        put_varlong(&mut body, i64::from(self.count));
        put_bytes(&mut body, record.key);
        put_bytes(&mut body, Some(record.value));
        let mut headers = Vec::new();
        let mut n = 0;
        for (key, value) in record.headers {
            put_bytes(&mut headers, Some(key.as_bytes()));
            put_bytes(&mut headers, Some(value));
            n += 1;
        }
        put_varlong(&mut body, n);
        body.extend_from_slice(&headers);
        put_varlong(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(&body);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(now_ms);
        self.reporters.push(reporter);
    }

    /// Ends the batch: no record is added after this, and its records are
    /// compressed (once, whatever the retries).
    pub(crate) fn seal(&mut self, compression: Compression) -> Result<(), String> {
        if self.sealed.is_some() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.records);
        let sealed = match compression {
            Compression::None => records.freeze(),
            other => compress(other, &records)?,
        };
        self.sealed = Some(sealed);
        Ok(())
    }

    /// The batch as sent: the header for this producer and sequence, then
    /// the sealed records.
    pub(crate) fn encode(&self, compression: Compression, producer_id: i64, epoch: i16) -> Bytes {
        let records = self.sealed.as_ref().map_or(&[][..], |b| &b[..]);
        let mut out = BytesMut::with_capacity(HEADER + records.len());
        out.put_i64(0); // base offset: the broker assigns it
        out.put_i32((HEADER - 12 + records.len()) as i32);
        out.put_i32(-1); // partition leader epoch
        out.put_i8(2); // magic
        out.put_u32(0); // CRC, below
        out.put_i16(compression as i16);
        out.put_i32(self.count - 1);
        out.put_i64(self.first_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(producer_id);
        out.put_i16(epoch);
        out.put_i32(self.sequence.unwrap_or(-1));
        out.put_i32(self.count);
        out.extend_from_slice(records);
        let crc = crc32c::crc32c(&out[CRC_FROM..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out.freeze()
    }
}

fn compress(compression: Compression, records: &[u8]) -> Result<Bytes, String> {
    use kafka_protocol::compression as c;
    let mut out = BytesMut::with_capacity(records.len() / 2 + 64);
    let write = |buf: &mut BytesMut| {
        buf.extend_from_slice(records);
        Ok(())
    };
    let done = match compression {
        Compression::Gzip => <c::Gzip as Compressor<BytesMut>>::compress(&mut out, write),
        Compression::Snappy => <c::Snappy as Compressor<BytesMut>>::compress(&mut out, write),
        Compression::Lz4 => <c::Lz4 as Compressor<BytesMut>>::compress(&mut out, write),
        Compression::Zstd => <c::Zstd as Compressor<BytesMut>>::compress(&mut out, write),
        Compression::None => return Ok(Bytes::copy_from_slice(records)),
    };
    done.map_err(|e| format!("cannot compress a batch ({compression:?}): {e}"))?;
    Ok(out.freeze())
}

/// A zigzag varint, as records write their lengths and deltas.
fn put_varlong(out: &mut impl BufMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// A length-prefixed byte string; `None` is length -1.
fn put_bytes(out: &mut impl BufMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.put_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::producer::Reporter;
    use kafka_protocol::records::RecordBatchDecoder;
    use std::time::{Duration, Instant};

    /// A record's key, value and headers.
    type Plain<'a> = (Option<&'a [u8]>, &'a [u8], &'a [(&'a str, &'a [u8])]);

    fn batch_of(records: &[Plain<'_>]) -> Batch {
        let mut batch = Batch::new(1_000, Instant::now() + Duration::from_secs(1));
        for (i, (key, value, headers)) in records.iter().enumerate() {
            let mut headers = headers.iter().map(|(k, v)| (*k, *v));
            let parts = Parts { key: *key, value, headers: &mut headers };
            batch.append(1_000 + i as i64 * 3, parts, Reporter::nobody());
        }
        batch
    }

    #[test]
    fn a_batch_decodes_as_kafka_reads_it_whatever_the_compression() {
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let mut batch = batch_of(&[
                (Some(b"k1"), b"v1", &[("color", b"red"), ("metadata", b"")]),
                (None, b"", &[]),
                (Some(b""), &[7u8; 300], &[("color", b"")]),
            ]);
            batch.seal(compression).unwrap();
            batch.sequence = Some(41);
            let mut wire = batch.encode(compression, 1000, 3);
            let set = RecordBatchDecoder::decode(&mut wire).unwrap();
            assert_eq!(set.compression, compression);
            let records = set.records;
            assert_eq!(records.len(), 3);
            assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
            assert_eq!(records[0].value.as_deref(), Some(&b"v1"[..]));
            let headers: Vec<_> = records[0]
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone().unwrap().to_vec()))
                .collect();
            assert_eq!(headers, [("color".to_string(), b"red".to_vec()), ("metadata".to_string(), vec![])]);
            assert_eq!(records[1].key, None, "a keyless record has a null key");
            assert_eq!(records[1].value.as_deref(), Some(&b""[..]));
            assert_eq!(records[2].key.as_deref(), Some(&b""[..]), "an empty key is not a null one");
            assert_eq!(records[2].value.as_deref(), Some(&[7u8; 300][..]));
            for (i, r) in records.iter().enumerate() {
                assert_eq!((r.producer_id, r.producer_epoch), (1000, 3));
                assert_eq!(r.sequence, 41 + i as i32);
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, 1_000 + i as i64 * 3);
            }
        }
    }

    #[test]
    fn a_batch_sent_again_keeps_its_records_and_takes_a_new_header() {
        let mut batch = batch_of(&[(Some(b"k"), b"v", &[])]);
        batch.seal(Compression::Lz4).unwrap();
        batch.sequence = Some(0);
        let first = batch.encode(Compression::Lz4, 7, 0);
        batch.sequence = Some(5);
        let again = batch.encode(Compression::Lz4, 7, 1);
        assert_eq!(first[HEADER..], again[HEADER..], "the records are compressed once");
        let record = &RecordBatchDecoder::decode(&mut again.clone()).unwrap().records[0];
        assert_eq!((record.producer_epoch, record.sequence), (1, 5));
    }
}
