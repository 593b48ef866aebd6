//! The Kafka sections of `databus.toml`, as written (serde) and as
//! databus uses them: `[producer]`, `[subscriber]` and
//! `[clusters.<name>]` with its `tls` and `sasl`. Each key's range and
//! default is spelled once, here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::producer::{Compression, Engine};
use super::{Cluster, GroupProtocol, KafkaSasl, KafkaTls, ProducerSettings, SubscriberSettings};
use crate::keys::{Check, ConfigError, Key, Number, Text};
use crate::secret::Secret;

pub(crate) const PRODUCER_TIMEOUT_MS: Number =
    Number::millis("producer.timeout_ms", 10_000, "longest a SET waits for the broker's acknowledgement");
/// 0 is a valid linger: send at once.
pub(crate) const PRODUCER_LINGER_MS: Number =
    Number::count("producer.linger_ms", 0, 0, 900_000, "how long a record waits to be batched with others");
pub(crate) const PRODUCER_INSTANCES: Number = Number::count(
    "producer.instances",
    1,
    1,
    64,
    "producers per cluster; a connection always uses the same one",
);
/// librdkafka's ceiling for an idempotent producer is 5, which keeps each
/// partition's order. 5 since the bench crossed a network (BENCHMARKS.md,
/// "Requests in flight"):
/// with 1, every record waits for the request in flight to its
/// partition's broker, a round trip each.
pub(crate) const PRODUCER_MAX_IN_FLIGHT: Number = Number::count(
    "producer.max_in_flight",
    5,
    1,
    5,
    "produce requests in flight per broker connection (order per partition holds with any); across a network 5 is up to 3.8 × faster than 1 at depth 1; the own engine takes it as a ceiling and sends fewer at once where the round trip is mostly the broker's work",
);
const ENGINES: &[&str] = &["databus", "librdkafka"];
pub(crate) const PRODUCER_ENGINE: Text = Text::one_of(
    "producer.engine",
    "`databus`",
    ENGINES,
    "which producer publishes: databus's own (one produce request per broker) or librdkafka's (one per partition; for `properties` that concern producing, such as OAUTHBEARER); see Publishing engines below",
);
pub(crate) const PRODUCER_COMPRESSION: Text = Text::one_of(
    "producer.compression",
    "`none`",
    Compression::NAMES,
    "record batch compression (either engine)",
);
const PARTITIONERS: &[&str] =
    &["murmur2_random", "murmur2", "consistent_random", "consistent", "fnv1a_random", "fnv1a", "random"];
pub(crate) const PRODUCER_PARTITIONER: Text = Text::one_of(
    "producer.partitioner",
    "`murmur2_random`",
    PARTITIONERS,
    "librdkafka's partitioners; the own engine computes each byte-identically, so a key lands on the same partition with either engine",
);
pub(crate) const SUBSCRIBER_BATCH_SIZE: Number =
    Number::count("subscriber.batch_size", 100, 1, 100_000, "most messages per MGET");
pub(crate) const SUBSCRIBER_TICK_MS: Number =
    Number::millis("subscriber.tick_ms", 100, "an MGET with messages returns at the end of the tick");
/// An empty `MGET` answers after 1.5 s by default: before the shortest read
/// timeout common clients set on their own (Jedis's 2 s; go-redis's is 5 s),
/// so they work with their defaults. A client that wants the seed's long
/// poll asks for it (`wait=30000` in AUTH, or `MGET BLOCK 30000`).
pub(crate) const SUBSCRIBER_WAIT_TIMEOUT_MS: Number = Number::millis(
    "subscriber.wait_timeout_ms",
    1500,
    "an MGET with none returns `*0` after this, unless the AUTH string says `wait=<ms>` or the call `BLOCK <ms>`; below Jedis's 2 s default read timeout",
);
pub(crate) const SUBSCRIBER_IDLE_TIMEOUT_MS: Number =
    Number::millis("subscriber.idle_timeout_ms", 40_000, "a silent subscriber is closed after this");
pub(crate) const SUBSCRIBER_SESSION_TIMEOUT_MS: Number = Number::millis(
    "subscriber.session_timeout_ms",
    45_000,
    "Kafka consumer-group session timeout (classic protocol)",
);
pub(crate) const BROKERS: Text = Text::form(
    "clusters.<name>.brokers",
    "required",
    "a list of host:port",
    "bootstrap brokers of the cluster named in `app_tb.cluster`",
);
pub(crate) const TLS_CA_FILE: Text = Text::form(
    "clusters.<name>.tls.ca_file",
    "the system's CAs",
    "a PEM file",
    "the `[clusters.<name>.tls]` section turns TLS to the brokers on; this CA checks them",
);
pub(crate) const TLS_CERT_FILE: Text = Text::form(
    "clusters.<name>.tls.cert_file",
    "none",
    "a PEM file",
    "a client certificate (mTLS), with `key_file`",
);
pub(crate) const TLS_KEY_FILE: Text =
    Text::form("clusters.<name>.tls.key_file", "none", "a PEM file", "the client certificate's key");
pub(crate) const SASL_MECHANISM: Text = Text::one_of(
    "clusters.<name>.sasl.mechanism",
    "`SCRAM-SHA-512`",
    super::SASL_MECHANISMS,
    "the `[clusters.<name>.sasl]` section logs in to the brokers (any case)",
);
pub(crate) const SASL_USERNAME: Text =
    Text::form("clusters.<name>.sasl.username", "required in `sasl`", "text", "the SASL user");
pub(crate) const SASL_PASSWORD: Text =
    Text::form("clusters.<name>.sasl.password", "required in `sasl`", "text", "the SASL password");
pub(crate) const GROUP_PROTOCOL: Text = Text::one_of(
    "clusters.<name>.group_protocol",
    "`classic`",
    &["classic", "consumer"],
    "subscribers' consumer group protocol: `consumer` is KIP-848 (Apache Kafka 4.0+), see Consumer group protocol below",
);
pub(crate) const PROPERTIES: Text = Text::form(
    "clusters.<name>.properties",
    "none",
    "a table of librdkafka properties",
    "applied to librdkafka's clients after databus's own, see librdkafka properties below",
);

/// The keys of `[producer]` and `[subscriber]`, in the reference's order.
pub(crate) const KEYS: &[Key] = &[
    Key::Number(PRODUCER_TIMEOUT_MS),
    Key::Text(PRODUCER_ENGINE),
    Key::Text(PRODUCER_COMPRESSION),
    Key::Text(PRODUCER_PARTITIONER),
    Key::Number(PRODUCER_LINGER_MS),
    Key::Number(PRODUCER_MAX_IN_FLIGHT),
    Key::Number(PRODUCER_INSTANCES),
    Key::Number(SUBSCRIBER_BATCH_SIZE),
    Key::Number(SUBSCRIBER_TICK_MS),
    Key::Number(SUBSCRIBER_WAIT_TIMEOUT_MS),
    Key::Number(SUBSCRIBER_IDLE_TIMEOUT_MS),
    Key::Number(SUBSCRIBER_SESSION_TIMEOUT_MS),
];

/// The keys of `[clusters.<name>]`.
pub(crate) const CLUSTER_KEYS: &[Key] = &[
    Key::Text(BROKERS),
    Key::Text(TLS_CA_FILE),
    Key::Text(TLS_CERT_FILE),
    Key::Text(TLS_KEY_FILE),
    Key::Text(SASL_MECHANISM),
    Key::Text(SASL_USERNAME),
    Key::Text(SASL_PASSWORD),
    Key::Text(GROUP_PROTOCOL),
    Key::Text(PROPERTIES),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProducer {
    pub timeout_ms: Option<u64>,
    pub partitioner: Option<String>,
    pub linger_ms: Option<u64>,
    pub instances: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub engine: Option<String>,
    pub compression: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubscriber {
    pub batch_size: Option<usize>,
    pub tick_ms: Option<u64>,
    pub wait_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub session_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub brokers: Option<Vec<String>>,
    pub tls: Option<RawKafkaTls>,
    pub sasl: Option<RawKafkaSasl>,
    /// Extra librdkafka properties.
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
    pub group_protocol: Option<String>,
}

/// `[clusters.<name>.tls]`: its presence turns TLS on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafkaTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `[clusters.<name>.sasl]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafkaSasl {
    pub mechanism: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl ProducerSettings {
    /// `[producer]`.
    pub(crate) fn from_raw(p: RawProducer, check: Check<'_>) -> Result<ProducerSettings, ConfigError> {
        let producer = ProducerSettings {
            timeout: check.millis(PRODUCER_TIMEOUT_MS, p.timeout_ms)?,
            partitioner: p.partitioner.unwrap_or_else(|| "murmur2_random".into()),
            linger: check.millis(PRODUCER_LINGER_MS, p.linger_ms)?,
            instances: check.size(PRODUCER_INSTANCES, p.instances)?,
            max_in_flight: check.size(PRODUCER_MAX_IN_FLIGHT, p.max_in_flight)?,
            engine: match p.engine.as_deref() {
                // databus's own since the relay grid and the fault suite
                // (BENCHMARKS.md, "One request per broker"; RELIABILITY.md,
                // "On databus's own producer").
                None | Some("databus") => Engine::Databus,
                Some("librdkafka") => Engine::Librdkafka,
                Some(other) => {
                    check.one_of(PRODUCER_ENGINE.key, other, ENGINES)?;
                    Engine::Databus
                }
            },
            compression: {
                let name = p.compression.as_deref().unwrap_or("none");
                check.one_of(PRODUCER_COMPRESSION.key, name, Compression::NAMES)?;
                Compression::from_name(name).unwrap_or(Compression::None)
            },
        };
        check.one_of(PRODUCER_PARTITIONER.key, &producer.partitioner, PARTITIONERS)?;
        if producer.linger >= producer.timeout {
            return Err(check.err(PRODUCER_LINGER_MS.key, "must be below producer.timeout_ms"));
        }
        Ok(producer)
    }
}

impl SubscriberSettings {
    /// `[subscriber]`; `stats_interval` is the health interval, which the
    /// consumer lag of `/metrics` comes from (zero without an admin port).
    pub(crate) fn from_raw(
        s: RawSubscriber,
        stats_interval: Duration,
        check: Check<'_>,
    ) -> Result<SubscriberSettings, ConfigError> {
        Ok(SubscriberSettings {
            batch_size: check.size(SUBSCRIBER_BATCH_SIZE, s.batch_size)?,
            tick: check.millis(SUBSCRIBER_TICK_MS, s.tick_ms)?,
            wait_timeout: check.millis(SUBSCRIBER_WAIT_TIMEOUT_MS, s.wait_timeout_ms)?,
            idle_timeout: check.millis(SUBSCRIBER_IDLE_TIMEOUT_MS, s.idle_timeout_ms)?,
            session_timeout: check.millis(SUBSCRIBER_SESSION_TIMEOUT_MS, s.session_timeout_ms)?,
            stats_interval,
        })
    }
}

impl Cluster {
    /// `[clusters.<name>]`, checked with librdkafka against the producer
    /// and subscriber settings it will be used with.
    pub(crate) fn from_raw(
        name: &str,
        c: RawCluster,
        producer: &ProducerSettings,
        subscriber: &SubscriberSettings,
        check: Check<'_>,
    ) -> Result<Cluster, ConfigError> {
        let key = BROKERS.of(name);
        let brokers = c.brokers.ok_or_else(|| check.err(&key, "missing"))?;
        if brokers.is_empty() {
            return Err(check.err(&key, "must list at least one broker"));
        }
        if let Some(b) = brokers.iter().find(|b| !b.contains(':')) {
            return Err(check.err(&key, format!("`{b}` is not host:port")));
        }
        let tls = c.tls.map(|t| kafka_tls(name, t, check)).transpose()?;
        let sasl = c.sasl.map(|s| kafka_sasl(name, s, check)).transpose()?;
        if tls.is_some() || sasl.is_some() {
            if let Some(p) = c.properties.keys().find(|p| super::SECURITY_PROPERTIES.contains(&p.as_str())) {
                return Err(check.err(
                    &format!("{}.\"{p}\"", PROPERTIES.of(name)),
                    format!("set by the [clusters.{name}.tls] and [clusters.{name}.sasl] sections; remove it here"),
                ));
            }
        }
        let group_protocol = match c.group_protocol.as_deref() {
            None | Some("classic") => GroupProtocol::Classic,
            Some("consumer") => GroupProtocol::Consumer,
            Some(other) => {
                return Err(
                    check.err(&GROUP_PROTOCOL.of(name), format!("`{other}` is not classic or consumer"))
                )
            }
        };
        let cluster = Cluster { brokers, tls, sasl, properties: c.properties, group_protocol };
        super::check_cluster(&cluster, producer, subscriber).map_err(|e| {
            let key = match &e.property {
                Some(p) => format!("{}.\"{p}\"", PROPERTIES.of(name)),
                None => PROPERTIES.of(name),
            };
            check.err(&key, format!("librdkafka: {}", e.reason))
        })?;
        Ok(cluster)
    }
}

/// A cluster's TLS section, with every file checked now so that a missing
/// one stops startup, not the first SET.
fn kafka_tls(cluster: &str, raw: RawKafkaTls, check: Check<'_>) -> Result<KafkaTls, ConfigError> {
    for (key, path) in
        [(TLS_CA_FILE, &raw.ca_file), (TLS_CERT_FILE, &raw.cert_file), (TLS_KEY_FILE, &raw.key_file)]
    {
        if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
            return Err(check.err(&key.of(cluster), format!("`{}` is not a readable file", path.display())));
        }
    }
    if raw.cert_file.is_some() != raw.key_file.is_some() {
        return Err(check.err(&format!("clusters.{cluster}.tls"), "cert_file and key_file go together"));
    }
    Ok(KafkaTls { ca_file: raw.ca_file, cert_file: raw.cert_file, key_file: raw.key_file })
}

fn kafka_sasl(cluster: &str, raw: RawKafkaSasl, check: Check<'_>) -> Result<KafkaSasl, ConfigError> {
    let mechanism = raw.mechanism.unwrap_or_else(|| "SCRAM-SHA-512".into()).to_ascii_uppercase();
    check.one_of(&SASL_MECHANISM.of(cluster), &mechanism, super::SASL_MECHANISMS)?;
    let username = raw
        .username
        .filter(|u| !u.is_empty())
        .ok_or_else(|| check.err(&SASL_USERNAME.of(cluster), "missing"))?;
    let password = raw
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| check.err(&SASL_PASSWORD.of(cluster), "missing"))?;
    Ok(KafkaSasl { mechanism, username, password })
}
