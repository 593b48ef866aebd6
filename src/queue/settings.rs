//! `[queue]` of `databus.toml`: the keys (each with its range, default
//! and reference line) and the settings they make, which the book and the
//! group's threads read.

use std::time::Duration;

use serde::Deserialize;

use crate::keys::{Check, ConfigError, Key, Number, Text, MAX_MS};

use super::book::BookSettings;

/// `[queue]` of `databus.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    pub visibility_timeout_ms: Option<u64>,
    pub max_deliveries: Option<u64>,
    pub dead_letter_topic: Option<String>,
    pub max_pending: Option<usize>,
    pub linger_ms: Option<u64>,
}

/// Off by default, as in Redis: a pending entry stays its consumer's until
/// `XCLAIM`/`XAUTOCLAIM` moves it, which is what clients written for Redis
/// expect. Share-group style redelivery is one setting away.
pub(crate) const QUEUE_VISIBILITY_TIMEOUT_MS: Number = Number::count(
    "queue.visibility_timeout_ms",
    0,
    0,
    MAX_MS,
    "an entry pending this long goes to the next `XREADGROUP ... >` of any consumer, its delivery count raised; 0 (off) leaves it with its consumer until `XCLAIM`/`XAUTOCLAIM`, as Redis does",
);
/// Kafka share groups' `group.share.delivery.count.limit` default.
pub(crate) const QUEUE_MAX_DELIVERIES: Number = Number::count(
    "queue.max_deliveries",
    5,
    0,
    1_000_000,
    "an entry about to be delivered more often than this is produced to the dead-letter topic and acknowledged instead; 0: never (Kafka share groups' default limit is 5)",
);
/// Bounds the entries a group holds for redelivery (their keys, values and
/// headers stay in memory while pending).
pub(crate) const QUEUE_MAX_PENDING: Number = Number::count(
    "queue.max_pending",
    10_000,
    1,
    10_000_000,
    "pending entries per group on a databus; at the cap `XREADGROUP ... >` hands out nothing new until acknowledgements come",
);
/// How long a group's Kafka member stays after its last consumer left, so a
/// consumer that reconnects finds its pending entries.
pub(crate) const QUEUE_LINGER_MS: Number = Number::count(
    "queue.linger_ms",
    60_000,
    0,
    MAX_MS,
    "how long a group's shared Kafka member stays after its last queue consumer left, so one that reconnects finds its pending entries",
);
const DEFAULT_DEAD_LETTER_TOPIC: &str = "{topic}.dlq";
pub(crate) const QUEUE_DEAD_LETTER_TOPIC: Text = Text::form(
    "queue.dead_letter_topic",
    "`{topic}.dlq`",
    "a topic name, `{topic}` standing for the stream's",
    "the dead-letter topic; it must exist or be auto-created",
);

/// The keys of `[queue]`, in the reference's order.
pub(crate) const KEYS: &[Key] = &[
    Key::Number(QUEUE_VISIBILITY_TIMEOUT_MS),
    Key::Number(QUEUE_MAX_DELIVERIES),
    Key::Text(QUEUE_DEAD_LETTER_TOPIC),
    Key::Number(QUEUE_MAX_PENDING),
    Key::Number(QUEUE_LINGER_MS),
];

#[derive(Debug, Clone)]
pub(crate) struct QueueSettings {
    pub book: BookSettings,
    /// The dead-letter topic's name, `{topic}` standing for the stream's.
    pub dead_letter_topic: String,
    pub linger: Duration,
}

impl QueueSettings {
    pub(crate) fn from_raw(raw: RawQueue, check: Check<'_>) -> Result<QueueSettings, ConfigError> {
        let visibility = check.number(QUEUE_VISIBILITY_TIMEOUT_MS, raw.visibility_timeout_ms)?;
        let dead_letter_topic = raw.dead_letter_topic.unwrap_or_else(|| DEFAULT_DEAD_LETTER_TOPIC.into());
        let example = dead_letter_topic.replace("{topic}", "t");
        if example.is_empty()
            || example.len() > 249
            || !example.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(check.err(
                QUEUE_DEAD_LETTER_TOPIC.key,
                "must be a Kafka topic name (letters, digits, '.', '_', '-'), `{topic}` standing for the stream's",
            ));
        }
        Ok(QueueSettings {
            book: BookSettings {
                max_pending: check.number(QUEUE_MAX_PENDING, raw.max_pending.map(|n| n as u64))? as usize,
                visibility_timeout: (visibility > 0).then(|| Duration::from_millis(visibility)),
                max_deliveries: check.number(QUEUE_MAX_DELIVERIES, raw.max_deliveries)?,
            },
            dead_letter_topic,
            linger: Duration::from_millis(check.number(QUEUE_LINGER_MS, raw.linger_ms)?),
        })
    }
}

impl Default for QueueSettings {
    fn default() -> QueueSettings {
        QueueSettings {
            book: BookSettings { max_pending: 10_000, visibility_timeout: None, max_deliveries: 5 },
            dead_letter_topic: DEFAULT_DEAD_LETTER_TOPIC.into(),
            linger: Duration::from_secs(60),
        }
    }
}
