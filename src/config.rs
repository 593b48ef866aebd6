//! Configuration in two steps: serde reads `databus.toml` into [`RawConfig`]
//! exactly as written, then [`RawConfig::validate`] turns it into [`Settings`],
//! naming the file, the key and the problem when something is wrong. This
//! module converts the top level and the auth stores, section by section;
//! `kafka::settings` and `queue` convert theirs. Every key is one
//! `keys::Number` or `keys::Text` constant with its default, range or
//! accepted values and a one-line doc; `keys()` gathers them into the
//! configuration reference (`databus keys`, docs/configuration.md), which
//! the tests check against the fields serde reads and against the docs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::kafka::settings::{RawCluster, RawProducer, RawSubscriber};
use crate::kafka::{Cluster, ProducerSettings, SubscriberSettings};
pub use crate::keys::ConfigError;
use crate::keys::{Check, Key, Number, Text, MAX_MS};
use crate::limits::{LimitSettings, RawLimits};
use crate::queue::{QueueSettings, RawQueue};
use crate::resp::Limits;
use crate::secret::Secret;
use crate::tls::TlsSettings;

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
    pub listen_backlog: Option<u64>,
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
    pub queue: RawQueue,
    #[serde(default)]
    pub limits: RawLimits,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMysql {
    pub url: Option<Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub addr: Option<String>,
    pub db: Option<i64>,
    pub password: Option<Secret>,
    pub timeout_ms: Option<u64>,
}

/// Where grants come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthSource {
    Mysql {
        url: Secret,
    },
    Redis {
        addr: String,
        db: i64,
        password: Option<Secret>,
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
    /// A subscriber sends MGET, commits and PING, or queue mode's commands
    /// (an XACK of up to a thousand IDs): short arguments, 64 KiB in all.
    pub subscriber: Limits,
}

impl RequestLimits {
    pub(crate) const SUBSCRIBER: Limits = Limits {
        max_bulk_len: 512,
        max_array_len: 1024,
        max_inline_len: 512,
        max_request_len: 64 * 1024,
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
    pub(crate) queue: QueueSettings,
    /// Per-app publish rates and connection counts (`[limits]`).
    pub(crate) app_limits: LimitSettings,
    pub(crate) clusters: BTreeMap<String, Cluster>,
    /// The file the settings came from, which SIGHUP re-reads for the
    /// clusters; `None` when they came from a string.
    pub(crate) source: Option<PathBuf>,
}

pub(crate) const ADDR: Text = Text::form("addr", "required", "host:port", "the listen address");
pub(crate) const TLS_ADDR: Text = Text::form(
    "tls_addr",
    "none",
    "host:port",
    "a TLS listener beside the plain one; needs `tls_cert` and `tls_key` (docs/security.md)",
);
pub(crate) const TLS_CERT: Text =
    Text::form("tls_cert", "none", "a PEM file", "the TLS listener's certificate chain");
pub(crate) const TLS_KEY: Text =
    Text::form("tls_key", "none", "a PEM file", "the TLS listener's private key");
pub(crate) const TLS_CA: Text = Text::form(
    "tls_ca",
    "none",
    "a PEM file",
    "when set, the TLS listener requires client certificates signed by these CAs",
);
pub(crate) const ADMIN_ADDR: Text = Text::form(
    "admin_addr",
    "none (off; `make run` sets `127.0.0.1:6206`)",
    "host:port",
    "the admin HTTP port: metrics, health, HTTP publish (docs/operating.md)",
);
pub(crate) const AUTH: Text = Text::one_of(
    "auth",
    "required",
    &["mysql", "redis", "file"],
    "where apps and grants are read from: `[mysql]`, `[redis]`, or this file's `[[apps]]` and `[[grants]]`",
);
const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];
pub(crate) const LOG_LEVEL: Text =
    Text::one_of("log_level", "`info`", LOG_LEVELS, "overridden by `RUST_LOG`");
pub(crate) const MYSQL_URL: Text = Text::form(
    "mysql.url",
    "required for `auth = \"mysql\"`",
    "`mysql://user:password@host:port/database`",
    "the MySQL (or MariaDB) database holding `app_tb` and `auth_tb`",
);
pub(crate) const REDIS_ADDR: Text = Text::form(
    "redis.addr",
    "required for `auth = \"redis\"`",
    "host:port",
    "the Redis holding the app and grant hashes",
);
pub(crate) const REDIS_PASSWORD: Text = Text::form("redis.password", "none", "text", "the Redis password");
pub(crate) const APPS: Text = Text::form(
    "[[apps]]",
    "for `auth = \"file\"`",
    "`id`, `key`, `secret`, `cluster`",
    "the file store's apps, one table each",
);
pub(crate) const GRANTS: Text = Text::form(
    "[[grants]]",
    "for `auth = \"file\"`",
    "`app_id`, `group`, `operation`, `topic`",
    "the file store's grants, one table each",
);
pub(crate) const AUTH_TIMEOUT_MS: Number = Number::millis("auth_timeout_ms", 5_000, "time to authenticate");
pub(crate) const IDLE_TIMEOUT_MS: Number =
    Number::millis("idle_timeout_ms", 300_000, "a silent publisher is closed after this");
pub(crate) const REFRESH_INTERVAL_MS: Number =
    Number::millis("refresh_interval_ms", 60_000, "how often grants are re-read");
/// Each tick asks every cluster in use for metadata: not a spin.
pub(crate) const HEALTH_INTERVAL_MS: Number = Number::count(
    "health_interval_ms",
    5_000,
    100,
    MAX_MS,
    "how often each cluster in use is probed for `/ready`; librdkafka's statistics interval (broker state, lag)",
);
pub(crate) const MAX_CLIENTS: Number =
    Number::count(
    "max_clients",
    10_000,
    1,
    1_000_000,
    "connections served at once; at start databus raises its soft open-file limit to the hard one and, if 2 files per client beside 128 of its own still do not fit, lowers this and says so in the log",
);
pub(crate) const LISTEN_BACKLOG: Number = Number::count(
    "listen_backlog",
    4096,
    1,
    65_535,
    "connections the kernel queues before databus accepts them (capped by `net.core.somaxconn`)",
);
/// librdkafka's own ceiling for `message.max.bytes`.
pub(crate) const MAX_VALUE_SIZE: Number = Number::count(
    "max_value_size",
    1_000_000,
    1,
    1_000_000_000,
    "largest SET/HSET value; larger gets an error reply and the connection stays",
);
/// At least `max_value_size` + [`REQUEST_OVERHEAD_MIN`]; by default
/// `max_value_size` + [`DEFAULT_REQUEST_OVERHEAD`].
pub(crate) const MAX_REQUEST_LEN: Number = Number::derived(
    "max_request_len",
    1,
    1 << 30,
    "`max_value_size` + 65536",
    "a publisher's whole request, at least `max_value_size` + 1024 (docs/protocol.md, limits)",
);
/// At least `max_request_len`; by default the larger of that and
/// [`DEFAULT_DISCARD_LEN`].
pub(crate) const MAX_DISCARD_LEN: Number = Number::derived(
    "max_discard_len",
    1,
    1 << 40,
    "67108864 (64 MiB)",
    "a publisher's request longer than `max_request_len`, up to this, is dropped as it streams in and answered with an error; longer closes the connection",
);
pub(crate) const MAX_ARGS: Number =
    Number::count("max_args", 1024, 4, 1 << 20, "a publisher's arguments per request");
pub(crate) const MAX_INLINE_LEN: Number =
    Number::count("max_inline_len", 64 * 1024, 64, 1 << 30, "longest inline (telnet-style) command line");
pub(crate) const UNAUTH_MAX_REQUEST_LEN: Number = Number::count(
    "unauth_max_request_len",
    16 * 1024,
    256,
    64 * 1024,
    "longest request before AUTH (Redis 6.2.6's bound)",
);
pub(crate) const UNAUTH_MAX_ARGS: Number =
    Number::count("unauth_max_args", 10, 2, 64, "most arguments of a request before AUTH");
pub(crate) const THREAD_STACK_KIB: Number =
    Number::count("thread_stack_kib", 256, 64, 1 << 20, "stack of each connection's thread");
/// By default 4 × `max_value_size` + 64 KiB (a JSON body escapes a value's
/// bytes, up to 6 characters each), at most `MAX_REQUEST_LEN`'s maximum.
pub(crate) const ADMIN_MAX_BODY: Number = Number::derived(
    "admin_max_body",
    1024,
    1 << 30,
    "4 × `max_value_size` + 65536",
    "largest HTTP publish body (413 above it, refused before it is read)",
);
/// Redis's own ceiling for `databases`.
pub(crate) const REDIS_DB: Number =
    Number::count("redis.db", 0, 0, i32::MAX as u64, "the Redis database index");
pub(crate) const REDIS_TIMEOUT_MS: Number =
    Number::millis("redis.timeout_ms", 3000, "connect and read timeout of the Redis store");

/// Keys no longer read, which serde still accepts so that the error can
/// say what replaced them; the reference leaves them out.
pub(crate) const RETIRED_KEYS: &[&str] = &["max_bulk_len"];

/// The keys of the top level and the auth stores, in the reference's order.
pub(crate) const KEYS: &[Key] = &[
    Key::Text(ADDR),
    Key::Text(TLS_ADDR),
    Key::Text(TLS_CERT),
    Key::Text(TLS_KEY),
    Key::Text(TLS_CA),
    Key::Text(ADMIN_ADDR),
    Key::Number(ADMIN_MAX_BODY),
    Key::Number(HEALTH_INTERVAL_MS),
    Key::Text(AUTH),
    Key::Text(LOG_LEVEL),
    Key::Number(MAX_CLIENTS),
    Key::Number(LISTEN_BACKLOG),
    Key::Number(AUTH_TIMEOUT_MS),
    Key::Number(IDLE_TIMEOUT_MS),
    Key::Number(MAX_VALUE_SIZE),
    Key::Number(MAX_REQUEST_LEN),
    Key::Number(MAX_DISCARD_LEN),
    Key::Number(MAX_ARGS),
    Key::Number(MAX_INLINE_LEN),
    Key::Number(UNAUTH_MAX_ARGS),
    Key::Number(UNAUTH_MAX_REQUEST_LEN),
    Key::Number(REFRESH_INTERVAL_MS),
    Key::Number(THREAD_STACK_KIB),
];

/// The auth stores' keys, after the Kafka and queue sections in the reference.
pub(crate) const STORE_KEYS: &[Key] = &[
    Key::Text(MYSQL_URL),
    Key::Text(REDIS_ADDR),
    Key::Number(REDIS_DB),
    Key::Text(REDIS_PASSWORD),
    Key::Number(REDIS_TIMEOUT_MS),
    Key::Text(APPS),
    Key::Text(GRANTS),
];

/// The configuration reference (`databus keys` prints it; the one in
/// `docs/configuration.md` is checked against it).
pub fn reference() -> String {
    crate::keys::table(&keys())
}

/// Every key of `databus.toml`, in the configuration reference's order.
pub(crate) fn keys() -> Vec<Key> {
    use crate::kafka::settings;
    let sections: [&[Key]; 6] =
        [KEYS, settings::KEYS, crate::queue::KEYS, crate::limits::KEYS, settings::CLUSTER_KEYS, STORE_KEYS];
    sections.concat()
}

/// Room beside the value that `max_request_len` must leave, and its default.
const REQUEST_OVERHEAD_MIN: usize = 1024;
const DEFAULT_REQUEST_OVERHEAD: usize = 64 * 1024;
/// A publisher's request up to 64 MiB is read and dropped, however far over
/// `max_request_len` (a value a client library retries on a fresh connection
/// would otherwise turn a clear size error into a confusing one); longer is a
/// protocol error and a close.
const DEFAULT_DISCARD_LEN: usize = 64 << 20;

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
        let check = Check { path };
        if self.max_bulk_len.is_some() {
            return Err(check.err(
                RETIRED_KEYS[0],
                "replaced by `max_request_len`, which bounds the whole request, not one argument",
            ));
        }
        let addr = self.addr.clone().ok_or_else(|| check.err(ADDR.key, "missing (e.g. \"0.0.0.0:6205\")"))?;
        check.host_port(ADDR.key, &addr)?;
        let tls = self.tls(check)?;
        let max_value_size = check.size(MAX_VALUE_SIZE, self.max_value_size)?;
        let admin = self.admin(max_value_size, check)?;
        let auth = self.auth_source(path, check)?;
        let log_level = self.log_level.clone().unwrap_or_else(|| "info".into());
        check.one_of(LOG_LEVEL.key, &log_level, LOG_LEVELS)?;
        let max_clients = check.size(MAX_CLIENTS, self.max_clients)?;
        let limits = self.limits(max_value_size, check)?;
        let producer = ProducerSettings::from_raw(self.producer, check)?;
        let stats_interval = admin.as_ref().map_or(Duration::ZERO, |a| a.interval);
        let subscriber = SubscriberSettings::from_raw(self.subscriber, stats_interval, check)?;
        let queue = QueueSettings::from_raw(self.queue, check)?;
        let app_limits = LimitSettings::from_raw(self.limits, check)?;
        if self.clusters.is_empty() {
            return Err(check.err("clusters", "at least one [clusters.<name>] section is needed"));
        }
        let mut clusters = BTreeMap::new();
        for (name, c) in self.clusters {
            let cluster = Cluster::from_raw(&name, c, &producer, &subscriber, check)?;
            clusters.insert(name, cluster);
        }
        Ok(Settings {
            addr,
            tls,
            admin,
            auth,
            log_level,
            max_clients,
            listen_backlog: check.number(LISTEN_BACKLOG, self.listen_backlog)? as u32,
            auth_timeout: check.millis(AUTH_TIMEOUT_MS, self.auth_timeout_ms)?,
            idle_timeout: check.millis(IDLE_TIMEOUT_MS, self.idle_timeout_ms)?,
            max_value_size,
            limits,
            refresh_interval: check.millis(REFRESH_INTERVAL_MS, self.refresh_interval_ms)?,
            thread_stack_size: check.size(THREAD_STACK_KIB, self.thread_stack_kib)? * 1024,
            producer,
            subscriber,
            queue,
            app_limits,
            clusters,
            source: None,
        })
    }

    /// The client TLS listener: `tls_addr`, `tls_cert`, `tls_key` and the
    /// optional `tls_ca` go together.
    fn tls(&self, check: Check<'_>) -> Result<Option<TlsSettings>, ConfigError> {
        match (&self.tls_addr, &self.tls_cert, &self.tls_key) {
            (None, None, None) if self.tls_ca.is_none() => Ok(None),
            (Some(tls_addr), Some(cert), Some(key)) => {
                for (field, path) in
                    [(TLS_CERT.key, Some(cert)), (TLS_KEY.key, Some(key)), (TLS_CA.key, self.tls_ca.as_ref())]
                {
                    if let Some(path) = path.filter(|p| !p.is_file()) {
                        return Err(check.err(field, format!("`{}` is not a readable file", path.display())));
                    }
                }
                check.host_port(TLS_ADDR.key, tls_addr)?;
                Ok(Some(TlsSettings {
                    addr: tls_addr.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: self.tls_ca.clone(),
                }))
            }
            (None, ..) => {
                Err(check.err(TLS_ADDR.key, "missing: tls_cert, tls_key and tls_ca need a TLS listener"))
            }
            (Some(_), None, _) => Err(check.err(TLS_CERT.key, "missing: tls_addr needs a certificate")),
            (Some(_), Some(_), None) => {
                Err(check.err(TLS_KEY.key, "missing: tls_addr needs the certificate's key"))
            }
        }
    }

    /// The admin HTTP port, if `admin_addr` is set.
    fn admin(&self, max_value_size: usize, check: Check<'_>) -> Result<Option<AdminSettings>, ConfigError> {
        let Some(admin_addr) = &self.admin_addr else { return Ok(None) };
        check.host_port(ADMIN_ADDR.key, admin_addr)?;
        let interval = Duration::from_millis(check.number(HEALTH_INTERVAL_MS, self.health_interval_ms)?);
        let default = (4 * max_value_size as u64 + 64 * 1024).min(ADMIN_MAX_BODY.max);
        let max_body = check.derived(ADMIN_MAX_BODY, self.admin_max_body.map(|v| v as u64), default, 0)?;
        Ok(Some(AdminSettings { addr: admin_addr.clone(), max_body: max_body as usize, interval }))
    }

    /// `auth` and the chosen store's section.
    fn auth_source(&self, path: &Path, check: Check<'_>) -> Result<AuthSource, ConfigError> {
        match self.auth.as_deref() {
            None => Err(check.err(AUTH.key, "missing: \"mysql\", \"redis\" or \"file\"")),
            Some("mysql") => {
                let url =
                    self.mysql.as_ref().and_then(|m| m.url.clone()).ok_or_else(|| {
                        check.err(MYSQL_URL.key, "missing: auth = \"mysql\" needs [mysql] url")
                    })?;
                if !url.expose().starts_with("mysql://") {
                    return Err(check.err(MYSQL_URL.key, "must start with mysql://"));
                }
                Ok(AuthSource::Mysql { url })
            }
            Some("redis") => {
                let r = self
                    .redis
                    .as_ref()
                    .ok_or_else(|| check.err("redis", "missing: auth = \"redis\" needs a [redis] section"))?;
                let addr = r
                    .addr
                    .clone()
                    .ok_or_else(|| check.err(REDIS_ADDR.key, "missing (e.g. \"127.0.0.1:6379\")"))?;
                let db = r.db.unwrap_or(0);
                if db < 0 {
                    return Err(check.err("redis.db", "must not be negative"));
                }
                check.number(REDIS_DB, Some(db.unsigned_abs()))?;
                let timeout = check.millis(REDIS_TIMEOUT_MS, r.timeout_ms)?;
                Ok(AuthSource::Redis { addr, db, password: r.password.clone(), timeout })
            }
            Some("file") => Ok(AuthSource::File { path: path.to_owned() }),
            Some(other) => {
                Err(check.err(AUTH.key, format!("`{other}` is not one of \"mysql\", \"redis\", \"file\"")))
            }
        }
    }

    /// The request bounds of each connection state.
    fn limits(&self, max_value_size: usize, check: Check<'_>) -> Result<RequestLimits, ConfigError> {
        let size = |n: Number, raw: Option<usize>, default: usize, min: usize| {
            check.derived(n, raw.map(|v| v as u64), default as u64, min as u64).map(|v| v as usize)
        };
        // A value just over max_value_size must still reach the command, so it
        // gets a clear error and the connection survives; only a request far
        // larger is a protocol error.
        let max_request_len = size(
            MAX_REQUEST_LEN,
            self.max_request_len,
            max_value_size + DEFAULT_REQUEST_OVERHEAD,
            max_value_size + REQUEST_OVERHEAD_MIN,
        )?;
        // A publisher's request longer than that, up to this, is dropped as
        // it streams in and answered with an error; the connection stays.
        let max_discard_len = size(
            MAX_DISCARD_LEN,
            self.max_discard_len,
            DEFAULT_DISCARD_LEN.max(max_request_len),
            max_request_len,
        )?;
        let publisher = Limits {
            max_bulk_len: max_request_len,
            max_array_len: check.size(MAX_ARGS, self.max_args)?,
            max_inline_len: check.size(MAX_INLINE_LEN, self.max_inline_len)?,
            max_request_len,
            max_discard_len,
        };
        let unauth_len = check.size(UNAUTH_MAX_REQUEST_LEN, self.unauth_max_request_len)?;
        let unauthenticated = Limits {
            max_bulk_len: unauth_len,
            max_array_len: check.size(UNAUTH_MAX_ARGS, self.unauth_max_args)?,
            max_inline_len: unauth_len,
            max_request_len: unauth_len,
            max_discard_len: 0,
        };
        Ok(RequestLimits { unauthenticated, publisher, subscriber: RequestLimits::SUBSCRIBER })
    }
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
        assert_eq!(l.subscriber.max_request_len, 65_536);
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

    /// A config that reaches `key`: its section, the store it belongs to.
    fn with_key(key: &str, value: &str) -> String {
        match key.split_once('.') {
            Some(("redis", field)) => format!(
                "{}[redis]\naddr = \"h:1\"\n{field} = {value}\n",
                MINIMAL.replace("auth = \"mysql\"", "auth = \"redis\"")
            ),
            Some((section, field)) => format!("{MINIMAL}\n[{section}]\n{field} = {value}\n"),
            None if key == "admin_max_body" || key == "health_interval_ms" => {
                format!("admin_addr = \"127.0.0.1:0\"\n{key} = {value}\n{MINIMAL}")
            }
            None => format!("{key} = {value}\n{MINIMAL}"),
        }
    }

    #[test]
    fn every_number_is_bounded() {
        let numbers = keys().into_iter().filter_map(|k| match k {
            Key::Number(n) => Some(n),
            Key::Text(_) => None,
        });
        for n in numbers {
            // A key of a named section (an app's limits) as app `x` spells it.
            let key = n.key.replace("<name>", "x");
            // TOML integers stop at i64::MAX; below the minimum is only
            // possible where it is above 0.
            let below = (n.min > 0).then(|| n.min - 1);
            for v in below.into_iter().chain([i64::MAX as u64]) {
                let e = load(&with_key(&key, &v.to_string())).unwrap_err();
                assert_eq!(e.key, key, "{key} = {v}: {e}");
            }
            // Its default, or its minimum for one that is off unless set, is
            // accepted (a derived one's minimum depends on other keys).
            if let Some(fine) = n.default.or((n.shown == "off").then_some(n.min)) {
                let s = load(&with_key(&key, &fine.to_string()));
                assert!(s.is_ok(), "{key} = {fine}: {}", s.unwrap_err());
            }
        }
        let e = load(&with_key("redis.db", "-1")).unwrap_err();
        assert_eq!(e.key, "redis.db");
        // The largest accepted values leave every deadline computable.
        let s = load(&format!("idle_timeout_ms = {MAX_MS}\nauth_timeout_ms = {MAX_MS}\n{MINIMAL}")).unwrap();
        assert!(std::time::Instant::now().checked_add(s.idle_timeout).is_some());
    }

    /// The key table is the set of fields serde reads, no more, no less:
    /// a field added without its key, or a key left after its field went,
    /// fails here.
    #[test]
    fn every_field_is_a_key() {
        let read = crate::keys::trace::keys::<RawConfig>("");
        let read: std::collections::BTreeSet<&str> =
            read.iter().map(String::as_str).filter(|k| !RETIRED_KEYS.contains(k)).collect();
        let names: Vec<&str> =
            keys().iter().map(|k| k.name().trim_start_matches("[[").trim_end_matches("]]")).collect();
        let listed: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(listed.len(), names.len(), "a key listed twice: {names:?}");
        assert_eq!(listed, read, "the key table vs the fields serde reads");
    }

    /// The configuration reference in the docs is `databus keys`'s table,
    /// defaults and ranges included. `DATABUS_WRITE_REFERENCE=1` rewrites it.
    #[test]
    fn the_docs_show_the_key_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let header = "| key | default | accepts | meaning |";
        let start = doc.find(header).expect("the configuration reference's table");
        let len = doc[start..].find("\n\n").expect("a blank line after the table") + 1;
        let expected = reference();
        if doc[start..start + len] != expected && std::env::var_os("DATABUS_WRITE_REFERENCE").is_some() {
            std::fs::write(path, format!("{}{expected}{}", &doc[..start], &doc[start + len..])).unwrap();
            return;
        }
        assert!(
            doc[start..start + len] == expected,
            "{path}'s configuration table is not the key table; run \
             `DATABUS_WRITE_REFERENCE=1 cargo test --lib the_docs_show_the_key_table` to rewrite it:\n{expected}"
        );
    }

    #[test]
    fn no_secret_shows_in_the_settings() {
        let text = MINIMAL.replace("root@", "root:my5ql-pa55@").replace(
            "brokers = [\"127.0.0.1:9092\"]",
            "brokers = [\"127.0.0.1:9092\"]\nproperties = { \"ssl.key.password\" = \"k3y-pa55\" }",
        );
        let shown = format!("{:?}", load(&text).unwrap());
        assert!(!shown.contains("my5ql-pa55") && !shown.contains("k3y-pa55"), "{shown}");
        let text = format!(
            "{}[redis]\naddr = \"h:1\"\npassword = \"red1s-pa55\"\n",
            MINIMAL.replace("auth = \"mysql\"", "auth = \"redis\"")
        );
        let shown = format!("{:?}", load(&text).unwrap());
        assert!(!shown.contains("red1s-pa55") && shown.contains("<redacted>"), "{shown}");
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
