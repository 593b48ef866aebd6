//! The subscriber role: `MGET [pb|json] [BLOCK ms]` long-polls the group's
//! consumer for a batch, `SET <partition> <offset>` commits. The encodings of a message
//! (JSON and protobuf `MessagePB`) live here too, as pure functions.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::Engine;
use prost::Message;

use crate::kafka::consumer::{GroupConsumer, InMessage, SubscriberSettings};
use crate::kafka::ConsumeError;
use crate::kafka::StartOffset;
use crate::metrics::SubscribeMeter;
use crate::proto::{decode_metadata, MessagePb};
use crate::queue::{QueueKey, Undecided};
use crate::resp::Frame;

use super::error::CommandError;
use super::registry::InterruptFlag;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Protobuf,
}

/// A connection authenticated with `role=sub`.
pub(crate) struct Subscriber {
    /// The connection's own group member; `None` once it turned to queue
    /// mode, or when it came while its group is consumed in queue mode on
    /// this databus (see `queue_reader.rs`).
    pub consumer: Option<GroupConsumer>,
    /// The shared member queue mode would use.
    pub queue: QueueKey,
    /// Where a new group starts, for queue mode's member.
    pub start: StartOffset,
    /// `MGET` or a commit was used: the connection is a classic subscriber.
    pub classic: bool,
    /// Counted among the group's connections that may turn to queue mode,
    /// until it reads.
    pub undecided: Option<Undecided>,
    /// Why it has no member of its own, when AUTH found the group full of
    /// connections that had not read yet: its MGET gets this.
    pub refused: Option<ConsumeError>,
    /// Only messages with exactly this `color` header are handed out.
    pub color: Vec<u8>,
    pub settings: SubscriberSettings,
    /// How long an empty MGET waits unless it says `BLOCK`: AUTH's `wait=`,
    /// else `subscriber.wait_timeout_ms`.
    wait: Duration,
    /// Highest offset handed out per partition: after a rebalance gives a
    /// partition back, its uncommitted records come again from Kafka, but
    /// this connection already has them.
    handed_out: HashMap<i32, i64>,
    meter: SubscribeMeter,
}

impl Subscriber {
    pub(crate) fn new(
        consumer: Option<GroupConsumer>,
        queue: QueueKey,
        start: StartOffset,
        color: &str,
        wait: Option<Duration>,
        settings: SubscriberSettings,
        meter: SubscribeMeter,
    ) -> Subscriber {
        let wait = wait.unwrap_or(settings.wait_timeout);
        Subscriber {
            consumer,
            queue,
            start,
            classic: false,
            undecided: None,
            refused: None,
            color: color.as_bytes().to_vec(),
            settings,
            wait,
            handed_out: HashMap::new(),
            meter,
        }
    }

    /// `MGET [pb|json] [BLOCK ms]`: blocks until `batch_size` messages, or at
    /// least one and a tick boundary, or the wait with none (an empty array).
    /// Returns early with what it has when the connection is interrupted, or
    /// when `hung_up` says the client went away (asked every tick, so that
    /// a client that closes mid-wait leaves its group at once, not when the
    /// wait would have ended).
    pub(crate) fn mget(
        &mut self,
        format: Format,
        wait: Option<Duration>,
        interrupt: &InterruptFlag,
        hung_up: &dyn Fn() -> bool,
    ) -> Result<Frame, CommandError> {
        self.choose_classic()?;
        let Some(consumer) = &self.consumer else { return Err(CommandError::QueueOnly) };
        let wait = wait.unwrap_or(self.wait);
        let started = Instant::now();
        let deadline = started + wait;
        // Once librdkafka reports failed connections, the wait ends early
        // enough for the metadata request that tells "nothing new" from
        // "unreachable" to fit in it, so a client's read timeout chosen
        // above the wait holds either way.
        let probe = REACHABLE_TIMEOUT.min(wait / 2);
        let tick = self.settings.tick;
        let mut batch = Vec::new();
        let mut bytes = 0;
        // Set once the first message is in: the end of the tick it fell in.
        let mut flush_at: Option<Instant> = None;
        // When `hung_up` was last asked.
        let mut looked = started;
        while batch.len() < self.settings.batch_size && !interrupt.is_set() {
            let now = Instant::now();
            let until = flush_at.unwrap_or_else(|| match consumer.failing() {
                true => deadline - probe,
                false => deadline,
            });
            if now >= until {
                break;
            }
            if now.duration_since(looked) >= tick {
                if hung_up() {
                    break;
                }
                looked = now;
            }
            // Short polls, so an interrupt or a hang-up is seen promptly.
            let (color, handed_out) = (&self.color, &mut self.handed_out);
            let polled = consumer.poll((until - now).min(tick), |msg| {
                if msg.color != color.as_slice() {
                    return None;
                }
                let handed = handed_out.entry(msg.partition).or_insert(-1);
                if msg.offset <= *handed {
                    return None;
                }
                *handed = msg.offset;
                Some((msg.value.len(), encode(&msg, format)))
            });
            let Some(Some((len, encoded))) = polled else {
                match consumer.fatal() {
                    Some(e) if batch.is_empty() => return Err(CommandError::Consume(e)),
                    // What came is handed out; the next command says why
                    // nothing more comes.
                    Some(_) => break,
                    None => continue,
                }
            };
            bytes += len;
            batch.push(Frame::Bulk(encoded));
            if flush_at.is_none() {
                let ticks = (started.elapsed().as_nanos() / tick.as_nanos().max(1)) as u32 + 1;
                flush_at = Some(started + tick * ticks);
            }
        }
        self.meter.mget(started, batch.len(), bytes);
        // Nothing came: say so only if Kafka was there to ask, and would let
        // databus read.
        if batch.is_empty() && !interrupt.is_set() {
            if let Some(e) = consumer.take_denied() {
                return Err(CommandError::Consume(e));
            }
            let left = deadline.saturating_duration_since(Instant::now()).max(MIN_PROBE);
            if let Some(e) = consumer.unreachable(left) {
                return Err(CommandError::Consume(e));
            }
        }
        Ok(Frame::Array(batch))
    }

    /// `SET <partition> <offset>`: the record at `offset` and all before it
    /// are processed; the group's committed position becomes `offset + 1`.
    pub(crate) fn commit(&mut self, partition: &[u8], offset: &[u8]) -> Result<Frame, CommandError> {
        self.choose_classic()?;
        let Some(consumer) = &self.consumer else { return Err(CommandError::QueueOnly) };
        let partition: i32 = parse_non_negative(partition).ok_or(CommandError::BadPartition)?;
        let offset: i64 = parse_non_negative(offset).ok_or(CommandError::BadOffset)?;
        if offset == i64::MAX {
            return Err(CommandError::BadOffset);
        }
        if let Some(e) = consumer.fatal() {
            return Err(CommandError::Consume(e));
        }
        if !consumer.owns(partition) {
            return Err(CommandError::NotOwned(partition));
        }
        let committed = consumer.commit(partition, offset + 1);
        self.meter.commit(committed.is_ok());
        committed?;
        Ok(Frame::ok())
    }

    /// The connection reads as a classic subscriber now; the refusal AUTH
    /// held back, if any (which closes the connection).
    fn choose_classic(&mut self) -> Result<(), CommandError> {
        self.undecided = None;
        if let Some(e) = self.refused.take() {
            return Err(CommandError::Join(e));
        }
        self.classic = true;
        // Joins Kafka's group only now: a connection that turns to queue
        // mode never joins it.
        if let Some(consumer) = &mut self.consumer {
            consumer.subscribe().map_err(CommandError::Consume)?;
        }
        Ok(())
    }

    /// How long the connection may stay silent.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.settings.idle_timeout
    }
}

/// Longest an empty MGET's metadata request may take to tell "nothing new"
/// from "Kafka is unreachable"; at most half the wait.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest time that metadata request is given, however little is left.
const MIN_PROBE: Duration = Duration::from_millis(100);

fn parse_non_negative<T: std::str::FromStr + Default + PartialOrd>(raw: &[u8]) -> Option<T> {
    let n: T = std::str::from_utf8(raw).ok()?.parse().ok()?;
    (n >= T::default()).then_some(n)
}

/// One message as an `MGET` element.
pub(crate) fn encode(msg: &InMessage, format: Format) -> Vec<u8> {
    let metadata = msg.metadata.and_then(decode_metadata).unwrap_or_default();
    match format {
        Format::Json => encode_json(msg, &metadata),
        Format::Protobuf => MessagePb {
            key: String::from_utf8_lossy(msg.key).into_owned(),
            value: msg.value.to_vec(),
            topic: msg.topic.to_owned(),
            partition: msg.partition,
            offset: msg.offset,
            timestamp: msg.timestamp_ms.div_euclid(1000),
            metadata,
            headers: msg.headers.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect(),
        }
        .encode_to_vec(),
    }
}

/// `{"key":..,"value":..,"topic":..,"partition":..,"offset":..,"timestamp":..,"metadata":{..},"headers":{..}}`.
/// A value that is valid JSON is embedded as is; other UTF-8 becomes a JSON
/// string; other bytes become base64 with `"value_encoding":"base64"` (and
/// likewise for a key that is not UTF-8, and for header values, named in
/// `"headers_encoding":{"<name>":"base64"}`), so no record is ever skipped.
/// A header name the record repeats has its last value, as Kafka's
/// `Headers.lastHeader` reads it.
pub(crate) fn encode_json(msg: &InMessage, metadata: &HashMap<String, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.value.len() + msg.key.len() + msg.topic.len() + 96);
    out.extend_from_slice(b"{\"key\":");
    let key_base64 = write_text_or_base64(&mut out, msg.key);
    if key_base64 {
        out.extend_from_slice(b",\"key_encoding\":\"base64\"");
    }
    out.extend_from_slice(b",\"value\":");
    // Checked as UTF-8 first: serde_json does not validate ignored strings.
    let is_json = std::str::from_utf8(msg.value)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
    if is_json {
        out.extend_from_slice(msg.value.trim_ascii());
    } else if write_text_or_base64(&mut out, msg.value) {
        out.extend_from_slice(b",\"value_encoding\":\"base64\"");
    }
    out.extend_from_slice(b",\"topic\":");
    write_json_string(&mut out, msg.topic);
    let _ = write!(
        out,
        ",\"partition\":{},\"offset\":{},\"timestamp\":{},\"metadata\":",
        msg.partition,
        msg.offset,
        msg.timestamp_ms.div_euclid(1000)
    );
    serde_json::to_writer(&mut out, metadata).expect("a map of strings always serializes");
    out.extend_from_slice(b",\"headers\":{");
    let headers: BTreeMap<&str, &[u8]> = msg.headers.iter().copied().collect();
    let mut base64 = Vec::new();
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(&mut out, name);
        out.push(b':');
        if write_text_or_base64(&mut out, value) {
            base64.push(*name);
        }
    }
    out.push(b'}');
    if !base64.is_empty() {
        out.extend_from_slice(b",\"headers_encoding\":{");
        for (i, name) in base64.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(&mut out, name);
            out.extend_from_slice(b":\"base64\"");
        }
        out.push(b'}');
    }
    out.push(b'}');
    out
}

/// Writes `bytes` as a JSON string; base64-encoded (returning true) when
/// they are not UTF-8.
fn write_text_or_base64(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            write_json_string(out, text);
            false
        }
        Err(_) => {
            write_json_string(out, &base64::engine::general_purpose::STANDARD.encode(bytes));
            true
        }
    }
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(out, s).expect("a string always serializes");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(key: &'a [u8], value: &'a [u8], metadata: Option<&'a [u8]>) -> InMessage<'a> {
        InMessage {
            topic: "t",
            partition: 2,
            offset: 5,
            key,
            value,
            timestamp_ms: 1_700_000_000_999,
            color: &[],
            metadata,
            headers: Vec::new(),
        }
    }

    fn json(m: &InMessage) -> serde_json::Value {
        let bytes = encode(m, Format::Json);
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
    }

    #[test]
    fn json_layout_is_exact() {
        let bytes = encode(&msg(b"k", b"xx", None), Format::Json);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"key":"k","value":"xx","topic":"t","partition":2,"offset":5,"timestamp":1700000000,"metadata":{},"headers":{}}"#
        );
    }

    #[test]
    fn json_values_embed_raw() {
        assert_eq!(json(&msg(b"k", br#"{"a":1}"#, None))["value"], serde_json::json!({"a": 1}));
        assert_eq!(json(&msg(b"k", br#""xx""#, None))["value"], serde_json::json!("xx"));
        assert_eq!(json(&msg(b"k", b"42", None))["value"], serde_json::json!(42));
        assert_eq!(json(&msg(b"k", b" [1, 2] \n", None))["value"], serde_json::json!([1, 2]));
    }

    #[test]
    fn other_text_is_a_string_and_other_bytes_base64() {
        let v = json(&msg(b"k", b"not json {", None));
        assert_eq!(v["value"], "not json {");
        assert!(v.get("value_encoding").is_none());
        let v = json(&msg(b"k", b"", None));
        assert_eq!(v["value"], "");
        let v = json(&msg(b"k", b"\"\xff\"", None));
        assert_eq!(v["value"], "Iv8i");
        let v = json(&msg(b"\xff\x00", b"\x00\xff\xfe", None));
        assert_eq!(v["value"], "AP/+");
        assert_eq!(v["value_encoding"], "base64");
        assert_eq!(v["key"], "/wA=");
        assert_eq!(v["key_encoding"], "base64");
    }

    #[test]
    fn metadata_json_or_protobuf_becomes_a_map() {
        let v = json(&msg(b"k", b"v", Some(br#"{"trace":"abc"}"#)));
        assert_eq!(v["metadata"], serde_json::json!({"trace": "abc"}));
        let header = crate::proto::Header { metadata: HashMap::from([("x".to_string(), "y".to_string())]) };
        let v = json(&msg(b"k", b"v", Some(&header.encode_to_vec())));
        assert_eq!(v["metadata"], serde_json::json!({"x": "y"}));
    }

    #[test]
    fn protobuf_round_trip() {
        let m = msg(b"k", b"\x00\x01", Some(br#"{"a":"b"}"#));
        let pb = MessagePb::decode(encode(&m, Format::Protobuf).as_slice()).unwrap();
        assert_eq!(
            pb,
            MessagePb {
                key: "k".into(),
                value: vec![0, 1],
                topic: "t".into(),
                partition: 2,
                offset: 5,
                timestamp: 1_700_000_000,
                metadata: HashMap::from([("a".to_string(), "b".to_string())]),
                headers: HashMap::new(),
            }
        );
    }

    #[test]
    fn other_headers_show_utf8_as_text_and_other_bytes_as_base64() {
        let mut m = msg(b"k", b"v", None);
        m.headers = vec![("trace", b"abc"), ("bin", b"\x00\xff"), ("trace", b"last"), ("quote\"", b"\"")];
        let bytes = encode(&m, Format::Json);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"key":"k","value":"v","topic":"t","partition":2,"offset":5,"timestamp":1700000000,"metadata":{},"headers":{"bin":"AP8=","quote\"":"\"","trace":"last"},"headers_encoding":{"bin":"base64"}}"#
        );
        let pb = MessagePb::decode(encode(&m, Format::Protobuf).as_slice()).unwrap();
        let expected: HashMap<String, Vec<u8>> = HashMap::from([
            ("trace".to_string(), b"last".to_vec()),
            ("bin".to_string(), vec![0, 255]),
            ("quote\"".to_string(), b"\"".to_vec()),
        ]);
        assert_eq!(pb.headers, expected);
    }

    #[test]
    fn commit_arguments() {
        assert_eq!(parse_non_negative::<i64>(b"0"), Some(0));
        assert_eq!(parse_non_negative::<i64>(b"17"), Some(17));
        assert_eq!(parse_non_negative::<i64>(b"-5"), None);
        assert_eq!(parse_non_negative::<i64>(b"a"), None);
        assert_eq!(parse_non_negative::<i64>(b""), None);
        assert_eq!(parse_non_negative::<i32>(b"99999999999"), None);
    }
}
