//! Configuration in two steps: serde reads `databus.toml` into [`RawConfig`]
//! exactly as written, then [`RawConfig::validate`] turns it into [`Settings`],
//! naming the file, the key and the problem when something is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::kafka::{self, Cluster, GroupProtocol, KafkaSasl, KafkaTls, ProducerSettings, SubscriberSettings};
use crate::resp::Limits;
use crate::tls::TlsSettings;

/// A configuration problem, always tied to the file it came from.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    /// Dotted key the problem is about; empty when the file as a whole is at fault.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config {}: {}", self.path.display(), self.problem)
        } else {
            write!(f, "config {}: key `{}`: {}", self.path.display(), self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

/// `databus.toml` as written; every field but `addr`, `auth` and the chosen
/// store's section has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub addr: Option<String>,
    pub tls_addr: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub admin_addr: Option<String>,
    pub admin_max_body: Option<usize>,
    pub health_interval_ms: Option<u64>,
    pub auth: Option<String>,
    pub log_level: Option<String>,
    pub max_clients: Option<usize>,
    pub listen_backlog: Option<u32>,
    pub auth_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_value_size: Option<usize>,
    pub max_request_len: Option<usize>,
    pub max_discard_len: Option<usize>,
    /// Replaced by `max_request_len`; kept so the error can say so.
    pub max_bulk_len: Option<usize>,
    pub max_inline_len: Option<usize>,
    pub max_args: Option<usize>,
    pub unauth_max_args: Option<usize>,
    pub unauth_max_request_len: Option<usize>,
    pub refresh_interval_ms: Option<u64>,
    pub thread_stack_kib: Option<usize>,
    #[serde(default)]
    pub producer: RawProducer,
    #[serde(default)]
    pub subscriber: RawSubscriber,
    #[serde(default)]
    pub clusters: BTreeMap<String, RawCluster>,
    pub mysql: Option<RawMysql>,
    pub redis: Option<RawRedis>,
    /// Apps and grants of the file store (`auth = "file"`): accepted here,
    /// read row by row by `auth::file`, so that one bad row is skipped, not
    /// the whole file.
    #[serde(default, rename = "apps")]
    _apps: Vec<toml::Value>,
    #[serde(default, rename = "grants")]
    _grants: Vec<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProducer {
    pub timeout_ms: Option<u64>,
    pub partitioner: Option<String>,
    pub linger_ms: Option<u64>,
    pub instances: Option<usize>,
    pub max_in_flight: Option<usize>,
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
    pub properties: BTreeMap<String, String>,
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafkaSasl {
    pub mechanism: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for RawKafkaSasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawKafkaSasl").field("mechanism", &self.mechanism).finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMysql {
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub addr: Option<String>,
    pub db: Option<i64>,
    pub password: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// Where grants come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthSource {
    Mysql {
        url: String,
    },
    Redis {
        addr: String,
        db: i64,
        password: Option<String>,
        timeout: Duration,
    },
    /// The `[[apps]]` and `[[grants]]` of the config file at this path.
    File {
        path: PathBuf,
    },
}

/// Bounds on one request, by what the connection has proved so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLimits {
    /// Before AUTH: like Redis 6.2.6's bound on unauthenticated clients, and
    /// small enough that such a connection holds well under 64 KiB.
    pub unauthenticated: Limits,
    /// A publisher's largest SET/HSET: the value, key, metadata and framing.
    pub publisher: Limits,
    /// A subscriber only sends MGET, commits and PING: a few hundred bytes.
    pub subscriber: Limits,
}

impl RequestLimits {
    pub(crate) const SUBSCRIBER: Limits = Limits {
        max_bulk_len: 512,
        max_array_len: 8,
        max_inline_len: 512,
        max_request_len: 512,
        max_discard_len: 0,
    };
}

/// `admin_addr` and what goes with it: the admin port, which sits above
/// the modules config builds settings for, so its settings live here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminSettings {
    pub addr: String,
    /// Largest HTTP publish body, refused by its length before it is read.
    pub max_body: usize,
    /// How often each cluster in use is probed, and librdkafka's statistics interval.
    pub interval: Duration,
}

/// Validated, resolved settings: everything the server needs, nothing optional
/// that has a sensible default.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) addr: String,
    /// The TLS listener beside the plain one, when configured.
    pub(crate) tls: Option<TlsSettings>,
    /// The admin HTTP listener (metrics, health, HTTP publish), when configured.
    pub(crate) admin: Option<AdminSettings>,
    pub(crate) auth: AuthSource,
    pub log_level: String,
    pub(crate) max_clients: usize,
    /// Connections the kernel queues before databus accepts them.
    pub(crate) listen_backlog: u32,
    pub(crate) auth_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_value_size: usize,
    pub(crate) limits: RequestLimits,
    pub(crate) refresh_interval: Duration,
    pub(crate) thread_stack_size: usize,
    pub(crate) producer: ProducerSettings,
    pub(crate) subscriber: SubscriberSettings,
    pub(crate) clusters: BTreeMap<String, Cluster>,
    /// The file the settings came from, which SIGHUP re-reads for the
    /// clusters; `None` when they came from a string.
    pub(crate) source: Option<PathBuf>,
}

/// Longest duration any `*_ms` key may hold: a week.
const MAX_MS: u64 = 7 * 24 * 3600 * 1000;
/// An empty `MGET` answers after 1.5 s by default: before the shortest read
/// timeout common clients set on their own (Jedis's 2 s; go-redis's is 5 s),
/// so they work with their defaults. A client that wants the seed's long
/// poll asks for it (`wait=30000` in AUTH, or `MGET BLOCK 30000`).
const DEFAULT_WAIT_MS: u64 = 1500;
/// Redis's own ceiling for `databases`.
const MAX_REDIS_DB: u64 = i32::MAX as u64;
/// Room beside the value that `max_request_len` must leave, and its default.
const REQUEST_OVERHEAD_MIN: usize = 1024;
const DEFAULT_REQUEST_OVERHEAD: usize = 64 * 1024;
const MAX_REQUEST_LEN: usize = 1 << 30;
/// A publisher's request up to 64 MiB is read and dropped, however far over
/// `max_request_len` (a value a client library retries on a fresh connection
/// would otherwise turn a clear size error into a confusing one); longer is a
/// protocol error and a close.
const DEFAULT_DISCARD_LEN: usize = 64 << 20;
const MAX_DISCARD_LEN: usize = 1 << 40;

const PARTITIONERS: &[&str] =
    &["murmur2_random", "murmur2", "consistent_random", "consistent", "fnv1a_random", "fnv1a", "random"];

impl Settings {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: String::new(),
            problem: format!("cannot read: {e}"),
        })?;
        let settings = Settings::from_toml(path, &text)?;
        Ok(Settings { source: Some(path.to_owned()), ..settings })
    }

    /// Parses and validates `text`; `path` names the source in errors and is
    /// where the file store reads its grants.
    pub fn from_toml(path: &Path, text: &str) -> Result<Settings, ConfigError> {
        RawConfig::parse(path, text)?.validate(path)
    }
}

impl RawConfig {
    pub(crate) fn parse(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: String::new(),
            problem: e.to_string().trim_end().replace('\n', " "),
        })
    }

    pub(crate) fn validate(self, path: &Path) -> Result<Settings, ConfigError> {
        let err =
            |key: &str, problem: String| ConfigError { path: path.to_owned(), key: key.to_owned(), problem };
        // Every number is bounded here, so no later `Instant + Duration` or
        // size arithmetic can overflow.
        let within = |key: &str, v: u64, min: u64, max: u64| {
            if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(err(key, format!("{v} is outside {min}..={max}")))
            }
        };
        let ms = |key: &str, v: Option<u64>, default: u64| {
            within(key, v.unwrap_or(default), 1, MAX_MS).map(Duration::from_millis)
        };
        let size = |key: &str, v: Option<usize>, default: usize, min: usize, max: usize| {
            within(key, v.unwrap_or(default) as u64, min as u64, max as u64).map(|v| v as usize)
        };

        if self.max_bulk_len.is_some() {
            return Err(err(
                "max_bulk_len",
                "replaced by `max_request_len`, which bounds the whole request, not one argument".into(),
            ));
        }
        let addr = self.addr.ok_or_else(|| err("addr", "missing (e.g. \"0.0.0.0:6205\")".into()))?;
        if addr.parse::<SocketAddr>().is_err() && !addr.contains(':') {
            return Err(err("addr", format!("`{addr}` is not host:port")));
        }

        let tls = match (self.tls_addr, self.tls_cert, self.tls_key) {
            (None, None, None) if self.tls_ca.is_none() => None,
            (Some(tls_addr), Some(cert), Some(key)) => {
                for (field, path) in
                    [("tls_cert", Some(&cert)), ("tls_key", Some(&key)), ("tls_ca", self.tls_ca.as_ref())]
                {
                    if let Some(path) = path.filter(|p| !p.is_file()) {
                        return Err(err(field, format!("`{}` is not a readable file", path.display())));
                    }
                }
                if tls_addr.parse::<SocketAddr>().is_err() && !tls_addr.contains(':') {
                    return Err(err("tls_addr", format!("`{tls_addr}` is not host:port")));
                }
                Some(TlsSettings { addr: tls_addr, cert, key, ca: self.tls_ca })
            }
            (None, ..) => {
                return Err(err(
                    "tls_addr",
                    "missing: tls_cert, tls_key and tls_ca need a TLS listener".into(),
                ))
            }
            (Some(_), None, _) => {
                return Err(err("tls_cert", "missing: tls_addr needs a certificate".into()))
            }
            (Some(_), Some(_), None) => {
                return Err(err("tls_key", "missing: tls_addr needs the certificate's key".into()))
            }
        };

        let admin = match self.admin_addr {
            None => None,
            Some(admin_addr) => {
                if admin_addr.parse::<SocketAddr>().is_err() && !admin_addr.contains(':') {
                    return Err(err("admin_addr", format!("`{admin_addr}` is not host:port")));
                }
                Some(AdminSettings {
                    addr: admin_addr,
                    max_body: 0,
                    // Each tick asks every cluster in use for metadata: not a spin.
                    interval: Duration::from_millis(within(
                        "health_interval_ms",
                        self.health_interval_ms.unwrap_or(5_000),
                        100,
                        MAX_MS,
                    )?),
                })
            }
        };

        let auth = match self.auth.as_deref() {
            None => return Err(err("auth", "missing: \"mysql\", \"redis\" or \"file\"".into())),
            Some("mysql") => {
                let url = self
                    .mysql
                    .and_then(|m| m.url)
                    .ok_or_else(|| err("mysql.url", "missing: auth = \"mysql\" needs [mysql] url".into()))?;
                if !url.starts_with("mysql://") {
                    return Err(err("mysql.url", "must start with mysql://".into()));
                }
                AuthSource::Mysql { url }
            }
            Some("redis") => {
                let r = self.redis.ok_or_else(|| {
                    err("redis", "missing: auth = \"redis\" needs a [redis] section".into())
                })?;
                let addr =
                    r.addr.ok_or_else(|| err("redis.addr", "missing (e.g. \"127.0.0.1:6379\")".into()))?;
                let db = r.db.unwrap_or(0);
                if db < 0 {
                    return Err(err("redis.db", "must not be negative".into()));
                }
                within("redis.db", db.unsigned_abs(), 0, MAX_REDIS_DB)?;
                let timeout = ms("redis.timeout_ms", r.timeout_ms, 3000)?;
                AuthSource::Redis { addr, db, password: r.password, timeout }
            }
            Some("file") => AuthSource::File { path: path.to_owned() },
            Some(other) => {
                return Err(err("auth", format!("`{other}` is not one of \"mysql\", \"redis\", \"file\"")))
            }
        };

        let log_level = self.log_level.unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace", "off"].contains(&log_level.as_str()) {
            return Err(err(
                "log_level",
                format!("`{log_level}` is not one of error, warn, info, debug, trace, off"),
            ));
        }

        let max_clients = size("max_clients", self.max_clients, 10_000, 1, 1_000_000)?;
        // librdkafka's own ceiling for `message.max.bytes`.
        let max_value_size = size("max_value_size", self.max_value_size, 1_000_000, 1, 1_000_000_000)?;
        // A value just over max_value_size must still reach the command, so it
        // gets a clear error and the connection survives; only a request far
        // larger is a protocol error.
        let request_floor = max_value_size + REQUEST_OVERHEAD_MIN;
        let max_request_len = size(
            "max_request_len",
            self.max_request_len,
            max_value_size + DEFAULT_REQUEST_OVERHEAD,
            request_floor,
            MAX_REQUEST_LEN,
        )?;
        // A publisher's request longer than that, up to this, is dropped as
        // it streams in and answered with an error; the connection stays.
        let max_discard_len = size(
            "max_discard_len",
            self.max_discard_len,
            DEFAULT_DISCARD_LEN.max(max_request_len),
            max_request_len,
            MAX_DISCARD_LEN,
        )?;
        let publisher = Limits {
            max_bulk_len: max_request_len,
            max_array_len: size("max_args", self.max_args, 1024, 4, 1 << 20)?,
            max_inline_len: size("max_inline_len", self.max_inline_len, 64 * 1024, 64, MAX_REQUEST_LEN)?,
            max_request_len,
            max_discard_len,
        };
        let unauth_len =
            size("unauth_max_request_len", self.unauth_max_request_len, 16 * 1024, 256, 64 * 1024)?;
        let unauthenticated = Limits {
            max_bulk_len: unauth_len,
            max_array_len: size("unauth_max_args", self.unauth_max_args, 10, 2, 64)?,
            max_inline_len: unauth_len,
            max_request_len: unauth_len,
            max_discard_len: 0,
        };
        let limits = RequestLimits { unauthenticated, publisher, subscriber: RequestLimits::SUBSCRIBER };

        let p = self.producer;
        let producer = ProducerSettings {
            timeout: ms("producer.timeout_ms", p.timeout_ms, 10_000)?,
            partitioner: p.partitioner.unwrap_or_else(|| "murmur2_random".into()),
            // 0 is a valid linger: send at once.
            linger: Duration::from_millis(within(
                "producer.linger_ms",
                p.linger_ms.unwrap_or(0),
                0,
                900_000,
            )?),
            instances: size("producer.instances", p.instances, 1, 1, 64)?,
            // librdkafka's ceiling for an idempotent producer is 5.
            max_in_flight: size("producer.max_in_flight", p.max_in_flight, 1, 1, 5)?,
        };
        if !PARTITIONERS.contains(&producer.partitioner.as_str()) {
            return Err(err(
                "producer.partitioner",
                format!("`{}` is not one of {}", producer.partitioner, PARTITIONERS.join(", ")),
            ));
        }
        if producer.linger >= producer.timeout {
            return Err(err("producer.linger_ms", "must be below producer.timeout_ms".into()));
        }

        let s = self.subscriber;
        let subscriber = SubscriberSettings {
            batch_size: size("subscriber.batch_size", s.batch_size, 100, 1, 100_000)?,
            tick: ms("subscriber.tick_ms", s.tick_ms, 100)?,
            wait_timeout: ms("subscriber.wait_timeout_ms", s.wait_timeout_ms, DEFAULT_WAIT_MS)?,
            idle_timeout: ms("subscriber.idle_timeout_ms", s.idle_timeout_ms, 40_000)?,
            session_timeout: ms("subscriber.session_timeout_ms", s.session_timeout_ms, 45_000)?,
            // The consumer lag of /metrics comes from these statistics.
            stats_interval: admin.as_ref().map_or(Duration::ZERO, |a| a.interval),
        };
        let admin = match admin {
            None => None,
            Some(a) => {
                // A JSON body escapes a value's bytes, up to 6 characters each.
                let default = (4 * max_value_size + 64 * 1024).min(MAX_REQUEST_LEN);
                let max_body = size("admin_max_body", self.admin_max_body, default, 1024, MAX_REQUEST_LEN)?;
                Some(AdminSettings { max_body, ..a })
            }
        };

        if self.clusters.is_empty() {
            return Err(err("clusters", "at least one [clusters.<name>] section is needed".into()));
        }
        let mut clusters = BTreeMap::new();
        for (name, c) in self.clusters {
            let key = format!("clusters.{name}.brokers");
            let brokers = c.brokers.ok_or_else(|| err(&key, "missing".into()))?;
            if brokers.is_empty() {
                return Err(err(&key, "must list at least one broker".into()));
            }
            if let Some(b) = brokers.iter().find(|b| !b.contains(':')) {
                return Err(err(&key, format!("`{b}` is not host:port")));
            }
            let tls = c.tls.map(|t| kafka_tls(&name, t)).transpose().map_err(|(k, p)| err(&k, p))?;
            let sasl = c.sasl.map(|s| kafka_sasl(&name, s)).transpose().map_err(|(k, p)| err(&k, p))?;
            if tls.is_some() || sasl.is_some() {
                if let Some(p) =
                    c.properties.keys().find(|p| kafka::SECURITY_PROPERTIES.contains(&p.as_str()))
                {
                    return Err(err(
                        &format!("clusters.{name}.properties.\"{p}\""),
                        format!("set by the [clusters.{name}.tls] and [clusters.{name}.sasl] sections; remove it here"),
                    ));
                }
            }
            let group_protocol = match c.group_protocol.as_deref() {
                None | Some("classic") => GroupProtocol::Classic,
                Some("consumer") => GroupProtocol::Consumer,
                Some(other) => {
                    return Err(err(
                        &format!("clusters.{name}.group_protocol"),
                        format!("`{other}` is not classic or consumer"),
                    ))
                }
            };
            let cluster = Cluster { brokers, tls, sasl, properties: c.properties, group_protocol };
            kafka::check_cluster(&cluster, &producer, &subscriber).map_err(|e| {
                let key = match &e.property {
                    Some(p) => format!("clusters.{name}.properties.\"{p}\""),
                    None => format!("clusters.{name}.properties"),
                };
                err(&key, format!("librdkafka: {}", e.reason))
            })?;
            clusters.insert(name, cluster);
        }

        Ok(Settings {
            addr,
            tls,
            admin,
            auth,
            log_level,
            max_clients,
            listen_backlog: size("listen_backlog", self.listen_backlog.map(|v| v as usize), 4096, 1, 65_535)?
                as u32,
            auth_timeout: ms("auth_timeout_ms", self.auth_timeout_ms, 5_000)?,
            idle_timeout: ms("idle_timeout_ms", self.idle_timeout_ms, 300_000)?,
            max_value_size,
            limits,
            refresh_interval: ms("refresh_interval_ms", self.refresh_interval_ms, 60_000)?,
            thread_stack_size: size("thread_stack_kib", self.thread_stack_kib, 256, 64, 1 << 20)? * 1024,
            producer,
            subscriber,
            clusters,
            source: None,
        })
    }
}

/// A cluster's TLS section, with every file checked now so that a missing
/// one stops startup, not the first SET.
fn kafka_tls(cluster: &str, raw: RawKafkaTls) -> Result<KafkaTls, (String, String)> {
    for (field, path) in
        [("ca_file", &raw.ca_file), ("cert_file", &raw.cert_file), ("key_file", &raw.key_file)]
    {
        if let Some(path) = path {
            if !path.is_file() {
                let key = format!("clusters.{cluster}.tls.{field}");
                return Err((key, format!("`{}` is not a readable file", path.display())));
            }
        }
    }
    if raw.cert_file.is_some() != raw.key_file.is_some() {
        return Err((format!("clusters.{cluster}.tls"), "cert_file and key_file go together".into()));
    }
    Ok(KafkaTls { ca_file: raw.ca_file, cert_file: raw.cert_file, key_file: raw.key_file })
}

fn kafka_sasl(cluster: &str, raw: RawKafkaSasl) -> Result<KafkaSasl, (String, String)> {
    let key = |field: &str| format!("clusters.{cluster}.sasl.{field}");
    let mechanism = raw.mechanism.unwrap_or_else(|| "SCRAM-SHA-512".into()).to_ascii_uppercase();
    if !kafka::SASL_MECHANISMS.contains(&mechanism.as_str()) {
        return Err((
            key("mechanism"),
            format!("`{mechanism}` is not one of {}", kafka::SASL_MECHANISMS.join(", ")),
        ));
    }
    let username =
        raw.username.filter(|u| !u.is_empty()).ok_or_else(|| (key("username"), "missing".into()))?;
    let password =
        raw.password.filter(|p| !p.is_empty()).ok_or_else(|| (key("password"), "missing".into()))?;
    Ok(KafkaSasl { mechanism, username, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
addr = "127.0.0.1:6205"
auth = "mysql"
[clusters.cluster1]
brokers = ["127.0.0.1:9092"]
[mysql]
url = "mysql://root@127.0.0.1:3306/databus_db"
"#;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(Path::new("t.toml"), text)
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let s = load(MINIMAL).unwrap();
        assert_eq!(s.addr, "127.0.0.1:6205");
        assert_eq!(s.max_value_size, 1_000_000);
        assert_eq!(s.subscriber.batch_size, 100);
        assert_eq!(s.auth_timeout, Duration::from_secs(5));
        assert_eq!(s.producer.partitioner, "murmur2_random");
        assert_eq!(s.clusters["cluster1"].brokers, vec!["127.0.0.1:9092"]);
        assert_eq!(s.auth, AuthSource::Mysql { url: "mysql://root@127.0.0.1:3306/databus_db".into() });
    }

    #[test]
    fn missing_pieces_name_the_key() {
        let e = load(&MINIMAL.replace("addr = \"127.0.0.1:6205\"", "")).unwrap_err();
        assert_eq!(e.key, "addr");
        let e = load(&MINIMAL.replace("url = ", "#")).unwrap_err();
        assert_eq!(e.key, "mysql.url");
        let e = load(&MINIMAL.replace("brokers = [\"127.0.0.1:9092\"]", "brokers = []")).unwrap_err();
        assert_eq!(e.key, "clusters.cluster1.brokers");
        assert_eq!(
            e.to_string(),
            "config t.toml: key `clusters.cluster1.brokers`: must list at least one broker"
        );
        let e = load(&MINIMAL.replace("auth = \"mysql\"", "auth = \"ldap\"")).unwrap_err();
        assert_eq!(e.key, "auth");
        let e = load(&format!("{MINIMAL}\n[producer]\npartitioner = \"nope\"\n")).unwrap_err();
        assert_eq!(e.key, "producer.partitioner");
    }

    #[test]
    fn unknown_keys_and_bad_types_are_errors() {
        let e = load(&format!("adr = 1\n{MINIMAL}")).unwrap_err();
        assert!(e.to_string().contains("adr"), "{e}");
        let e = load(&format!("max_clients = \"many\"\n{MINIMAL}")).unwrap_err();
        assert!(e.to_string().contains("max_clients"), "{e}");
    }

    #[test]
    fn file_store_reads_its_rows_itself() {
        // The rows are the file store's business: a bad one is skipped when
        // the store loads, and never stops startup.
        let text = MINIMAL.replace("auth = \"mysql\"", "auth = \"file\"")
            + "[[apps]]\nid = 1\nkey = \"k\"\nsecret = 7\n[[grants]]\napp_id = 2\n";
        let s = load(&text).unwrap();
        assert_eq!(s.auth, AuthSource::File { path: PathBuf::from("t.toml") });
    }

    #[test]
    fn request_limits_by_state() {
        let s = load(MINIMAL).unwrap();
        let l = s.limits;
        assert_eq!(
            (
                l.unauthenticated.max_array_len,
                l.unauthenticated.max_request_len,
                l.unauthenticated.max_bulk_len
            ),
            (10, 16_384, 16_384)
        );
        assert_eq!((l.publisher.max_request_len, l.publisher.max_array_len), (1_065_536, 1024));
        assert_eq!(l.subscriber.max_request_len, 512);
        let s = load(&format!(
            "max_value_size = 100\nmax_request_len = 2000\nunauth_max_args = 4\nunauth_max_request_len = 1000\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!((s.limits.publisher.max_request_len, s.limits.publisher.max_bulk_len), (2000, 2000));
        assert_eq!(
            (s.limits.unauthenticated.max_array_len, s.limits.unauthenticated.max_request_len),
            (4, 1000)
        );
        // The request bound must leave room for the key, metadata and framing.
        let e = load(&format!("max_value_size = 100\nmax_request_len = 1123\n{MINIMAL}")).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.problem.as_str()),
            ("max_request_len", "1123 is outside 1124..=1073741824")
        );
        let e = load(&format!("unauth_max_request_len = 100000\n{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, "unauth_max_request_len");
        let e = load(&format!("max_bulk_len = 4194304\n{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, "max_bulk_len");
    }

    #[test]
    fn every_number_is_bounded() {
        for key in [
            "auth_timeout_ms",
            "idle_timeout_ms",
            "refresh_interval_ms",
            "max_clients",
            "max_value_size",
            "max_request_len",
            "max_discard_len",
            "max_args",
            "max_inline_len",
            "thread_stack_kib",
            "unauth_max_args",
            "unauth_max_request_len",
        ] {
            // TOML integers stop at i64::MAX.
            for v in [0, i64::MAX as u64] {
                let e = load(&format!("{key} = {v}\n{MINIMAL}")).unwrap_err();
                assert_eq!(e.key, key, "{key} = {v}: {e}");
            }
        }
        for (section, key) in [
            ("producer", "timeout_ms"),
            ("producer", "linger_ms"),
            ("subscriber", "batch_size"),
            ("subscriber", "tick_ms"),
            ("subscriber", "wait_timeout_ms"),
            ("subscriber", "idle_timeout_ms"),
            ("subscriber", "session_timeout_ms"),
        ] {
            let e = load(&format!("{MINIMAL}\n[{section}]\n{key} = {}\n", i64::MAX)).unwrap_err();
            assert_eq!(e.key, format!("{section}.{key}"), "{e}");
        }
        let redis = MINIMAL.replace("auth = \"mysql\"", "auth = \"redis\"") + "[redis]\naddr = \"h:1\"\n";
        let e = load(&format!("{redis}timeout_ms = {}\n", i64::MAX)).unwrap_err();
        assert_eq!(e.key, "redis.timeout_ms");
        let e = load(&format!("{redis}db = -1\n")).unwrap_err();
        assert_eq!(e.key, "redis.db");
        // The largest accepted values leave every deadline computable.
        let s = load(&format!("idle_timeout_ms = {MAX_MS}\nauth_timeout_ms = {MAX_MS}\n{MINIMAL}")).unwrap();
        assert!(std::time::Instant::now().checked_add(s.idle_timeout).is_some());
    }

    #[test]
    fn kafka_tls_and_sasl_sections() {
        let dir = std::env::temp_dir().join(format!("databus-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not read at load").unwrap();
        let with = |sections: &str| load(&format!("{MINIMAL}[clusters.cluster1.tls]\n{sections}"));
        let s = with(&format!(
            "ca_file = \"{}\"\n[clusters.cluster1.sasl]\nmechanism = \"scram-sha-256\"\nusername = \"u\"\npassword = \"pa55-w0rd\"\n",
            ca.display()
        ))
        .unwrap();
        let c = &s.clusters["cluster1"];
        assert_eq!(c.tls.as_ref().unwrap().ca_file.as_deref(), Some(ca.as_path()));
        assert_eq!(c.sasl.as_ref().unwrap().mechanism, "SCRAM-SHA-256");
        assert!(!format!("{s:?}").contains("pa55-w0rd"), "the password shows in {s:?}");
        // TLS alone, with the system's CAs.
        assert!(with("").unwrap().clusters["cluster1"].tls.is_some());

        let e = with("ca_file = \"/no/such/ca.pem\"\n").unwrap_err();
        assert_eq!(e.key, "clusters.cluster1.tls.ca_file");
        let e = with(&format!("cert_file = \"{}\"\n", ca.display())).unwrap_err();
        assert_eq!(e.key, "clusters.cluster1.tls");
        let e = with("[clusters.cluster1.sasl]\nusername = \"u\"\n").unwrap_err();
        assert_eq!(e.key, "clusters.cluster1.sasl.password");
        let e =
            with("[clusters.cluster1.sasl]\nmechanism = \"GSSAPI\"\nusername = \"u\"\npassword = \"p\"\n")
                .unwrap_err();
        assert_eq!(e.key, "clusters.cluster1.sasl.mechanism");
        // A section and a raw property may not both say how to connect.
        let brokers = "brokers = [\"127.0.0.1:9092\"]";
        let text =
            MINIMAL.replace(brokers, &format!("{brokers}\nproperties = {{ \"sasl.username\" = \"x\" }}"));
        let e = load(&format!("{text}[clusters.cluster1.tls]\n")).unwrap_err();
        assert_eq!(e.key, "clusters.cluster1.properties.\"sasl.username\"");
        // The raw properties still work alone, SSL and SASL included.
        let text = MINIMAL.replace(
            brokers,
            &format!("{brokers}\nproperties = {{ \"security.protocol\" = \"sasl_ssl\", \"sasl.mechanisms\" = \"PLAIN\" }}"),
        );
        assert!(load(&text).is_ok(), "{:?}", load(&text).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn client_tls_listener_keys() {
        let dir = std::env::temp_dir().join(format!("databus-config-ltls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert, "").unwrap();
        std::fs::write(&key, "").unwrap();
        let keys = format!(
            "tls_addr = \"127.0.0.1:6380\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        );
        let s = load(&format!("{keys}{MINIMAL}")).unwrap();
        let tls = s.tls.unwrap();
        assert_eq!((tls.addr.as_str(), tls.ca), ("127.0.0.1:6380", None));
        assert!(load(MINIMAL).unwrap().tls.is_none());
        let e = load(&format!("tls_addr = \"127.0.0.1:6380\"\n{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, "tls_cert");
        let e = load(&format!("tls_ca = \"{}\"\n{MINIMAL}", cert.display())).unwrap_err();
        assert_eq!(e.key, "tls_addr");
        let e = load(&format!("{keys}tls_ca = \"/no/such/ca.pem\"\n{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, "tls_ca");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn librdkafka_properties_are_checked_at_load() {
        let with = |props: &str| {
            let brokers = "brokers = [\"127.0.0.1:9092\"]";
            load(&MINIMAL.replace(brokers, &format!("{brokers}\nproperties = {{ {props} }}")))
        };
        assert!(with("\"client.id\" = \"databus-1\", \"socket.keepalive.enable\" = \"true\"").is_ok());
        let e = with("\"no.such.property\" = \"1\"").unwrap_err();
        assert_eq!(e.key, "clusters.cluster1.properties.\"no.such.property\"");
        assert!(e.problem.starts_with("librdkafka: "), "{e}");
        assert!(e.problem.contains("No such configuration property"), "{e}");
        let e = with("\"socket.timeout.ms\" = \"soon\"").unwrap_err();
        assert_eq!(e.key, "clusters.cluster1.properties.\"socket.timeout.ms\"");
        assert!(e.to_string().starts_with("config t.toml: key `clusters.cluster1.properties"), "{e}");
        // The password of a property never shows in the problem.
        let e = with("\"sasl.password\" = \"pa55-w0rd\", \"bogus.key\" = \"x\"").unwrap_err();
        assert!(!e.to_string().contains("pa55-w0rd"), "{e}");
    }
}
