//! Configuration in two steps: serde reads `databus.toml` into [`RawConfig`]
//! exactly as written, then [`RawConfig::validate`] turns it into [`Settings`],
//! naming the file, the key and the problem when something is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::Grant;
use crate::resp::Limits;

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
pub struct RawConfig {
    pub addr: Option<String>,
    pub auth: Option<String>,
    pub log_level: Option<String>,
    pub max_clients: Option<usize>,
    pub auth_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_value_size: Option<usize>,
    pub max_bulk_len: Option<usize>,
    pub max_inline_len: Option<usize>,
    pub max_args: Option<usize>,
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
    /// Apps of the file store (`auth = "file"`).
    #[serde(default)]
    pub apps: Vec<RawApp>,
    /// Grants of the file store.
    #[serde(default)]
    pub grants: Vec<RawGrant>,
}

/// An `app_tb` row written in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub id: i64,
    pub key: String,
    pub secret: String,
    pub cluster: String,
}

/// An `auth_tb` row written in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    pub app_id: i64,
    pub group: String,
    pub operation: u8,
    pub topic: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProducer {
    pub timeout_ms: Option<u64>,
    pub partitioner: Option<String>,
    pub linger_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubscriber {
    pub batch_size: Option<usize>,
    pub tick_ms: Option<u64>,
    pub wait_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub session_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub brokers: Option<Vec<String>>,
    /// Extra librdkafka properties (security settings of a real cluster, say).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMysql {
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub addr: Option<String>,
    pub db: Option<i64>,
    pub password: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// Where grants come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSource {
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

#[derive(Debug, Clone)]
pub struct Cluster {
    pub brokers: Vec<String>,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// Longest a SET waits for the broker before it gets an error reply.
    pub timeout: Duration,
    pub partitioner: String,
    pub linger: Duration,
}

#[derive(Debug, Clone)]
pub struct SubscriberSettings {
    pub batch_size: usize,
    pub tick: Duration,
    pub wait_timeout: Duration,
    pub idle_timeout: Duration,
    pub session_timeout: Duration,
}

/// Validated, resolved settings: everything the server needs, nothing optional
/// that has a sensible default.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: String,
    pub auth: AuthSource,
    pub log_level: String,
    pub max_clients: usize,
    pub auth_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_value_size: usize,
    pub limits: Limits,
    pub refresh_interval: Duration,
    pub thread_stack_size: usize,
    pub producer: ProducerSettings,
    pub subscriber: SubscriberSettings,
    pub clusters: BTreeMap<String, Cluster>,
}

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
        Settings::from_toml(path, &text)
    }

    /// Parses and validates `text`; `path` names the source in errors and is
    /// where the file store reads its grants.
    pub fn from_toml(path: &Path, text: &str) -> Result<Settings, ConfigError> {
        RawConfig::parse(path, text)?.validate(path)
    }
}

impl RawConfig {
    pub fn parse(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: String::new(),
            problem: e.to_string().trim_end().replace('\n', " "),
        })
    }

    pub fn read(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: String::new(),
            problem: format!("cannot read: {e}"),
        })?;
        RawConfig::parse(path, &text)
    }

    /// The grants of the file store: every `[[grants]]` joined with its
    /// `[[apps]]` entry.
    pub fn file_grants(&self, path: &Path) -> Result<Vec<Grant>, ConfigError> {
        let err = |key: String, problem: String| ConfigError { path: path.to_owned(), key, problem };
        let mut apps = std::collections::HashMap::new();
        for (i, app) in self.apps.iter().enumerate() {
            for (field, value) in [("key", &app.key), ("secret", &app.secret), ("cluster", &app.cluster)] {
                if value.is_empty() {
                    return Err(err(format!("apps[{i}].{field}"), "must not be empty".into()));
                }
            }
            if apps.insert(app.id, app).is_some() {
                return Err(err(format!("apps[{i}].id"), format!("app id {} listed twice", app.id)));
            }
        }
        let mut grants = Vec::with_capacity(self.grants.len());
        for (i, g) in self.grants.iter().enumerate() {
            let app = apps.get(&g.app_id).ok_or_else(|| {
                err(format!("grants[{i}].app_id"), format!("no [[apps]] entry has id {}", g.app_id))
            })?;
            for (field, value) in [("group", &g.group), ("topic", &g.topic)] {
                if value.is_empty() {
                    return Err(err(format!("grants[{i}].{field}"), "must not be empty".into()));
                }
            }
            grants.push(Grant {
                group: g.group.clone(),
                topic: g.topic.clone(),
                operation: g.operation,
                app_id: app.id,
                app_key: app.key.clone(),
                app_secret: app.secret.clone(),
                cluster: app.cluster.clone(),
            });
        }
        Ok(grants)
    }

    pub fn validate(self, path: &Path) -> Result<Settings, ConfigError> {
        let err =
            |key: &str, problem: String| ConfigError { path: path.to_owned(), key: key.to_owned(), problem };
        let ms = |v: Option<u64>, default: u64| Duration::from_millis(v.unwrap_or(default));
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(err(key, "must be greater than 0".into()))
            } else {
                Ok(())
            }
        };

        if self.auth.as_deref() == Some("file") {
            // Checked now so a bad list stops startup, not the first refresh.
            self.file_grants(path)?;
        }
        let addr = self.addr.ok_or_else(|| err("addr", "missing (e.g. \"0.0.0.0:6205\")".into()))?;
        if addr.parse::<SocketAddr>().is_err() && !addr.contains(':') {
            return Err(err("addr", format!("`{addr}` is not host:port")));
        }

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
                AuthSource::Redis { addr, db, password: r.password, timeout: ms(r.timeout_ms, 3000) }
            }
            Some("file") => AuthSource::File { path: path.to_owned() },
            Some(other) => {
                return Err(err("auth", format!("`{other}` is not one of \"mysql\", \"redis\", \"file\"")))
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
            clusters.insert(name, Cluster { brokers, properties: c.properties });
        }

        let log_level = self.log_level.unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace", "off"].contains(&log_level.as_str()) {
            return Err(err(
                "log_level",
                format!("`{log_level}` is not one of error, warn, info, debug, trace, off"),
            ));
        }

        let max_clients = self.max_clients.unwrap_or(10_000);
        positive("max_clients", max_clients as u64)?;
        let max_value_size = self.max_value_size.unwrap_or(1_000_000);
        positive("max_value_size", max_value_size as u64)?;
        let limits = Limits {
            max_bulk_len: self.max_bulk_len.unwrap_or(4 * 1024 * 1024),
            max_array_len: self.max_args.unwrap_or(1024),
            max_inline_len: self.max_inline_len.unwrap_or(64 * 1024),
        };
        // A value just over max_value_size must reach the command so it gets a
        // clear error and the connection survives; only far larger bulks are
        // protocol errors.
        if limits.max_bulk_len < max_value_size {
            return Err(err(
                "max_bulk_len",
                format!("{} is below max_value_size ({max_value_size})", limits.max_bulk_len),
            ));
        }
        positive("max_args", limits.max_array_len as u64)?;
        positive("max_inline_len", limits.max_inline_len as u64)?;

        let producer = ProducerSettings {
            timeout: ms(self.producer.timeout_ms, 10_000),
            partitioner: self.producer.partitioner.unwrap_or_else(|| "murmur2_random".into()),
            linger: ms(self.producer.linger_ms, 1),
        };
        positive("producer.timeout_ms", producer.timeout.as_millis() as u64)?;
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
            batch_size: s.batch_size.unwrap_or(100),
            tick: ms(s.tick_ms, 100),
            wait_timeout: ms(s.wait_timeout_ms, 30_000),
            idle_timeout: ms(s.idle_timeout_ms, 40_000),
            session_timeout: ms(s.session_timeout_ms, 45_000),
        };
        positive("subscriber.batch_size", subscriber.batch_size as u64)?;
        positive("subscriber.tick_ms", subscriber.tick.as_millis() as u64)?;

        let settings = Settings {
            addr,
            auth,
            log_level,
            max_clients,
            auth_timeout: ms(self.auth_timeout_ms, 5_000),
            idle_timeout: ms(self.idle_timeout_ms, 300_000),
            max_value_size,
            limits,
            refresh_interval: ms(self.refresh_interval_ms, 60_000),
            thread_stack_size: self.thread_stack_kib.unwrap_or(256) * 1024,
            producer,
            subscriber,
            clusters,
        };
        positive("auth_timeout_ms", settings.auth_timeout.as_millis() as u64)?;
        positive("idle_timeout_ms", settings.idle_timeout.as_millis() as u64)?;
        positive("refresh_interval_ms", settings.refresh_interval.as_millis() as u64)?;
        if settings.thread_stack_size < 64 * 1024 {
            return Err(err("thread_stack_kib", "must be at least 64".into()));
        }
        Ok(settings)
    }
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run { conf: PathBuf },
    Help(String),
    Version,
}

/// Parses the command line (without the program name). Accepts the seed's
/// single-dash `-conf=<path>` and `-conf <path>` besides `-c`/`--conf`.
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix("-conf") {
            Some(rest) if rest.is_empty() || rest.starts_with('=') => format!("--conf{rest}"),
            _ => a.clone(),
        })
        .collect();
    let mut opts = getopts::Options::new();
    opts.optopt("c", "conf", "configuration file (default ./databus.toml)", "PATH");
    opts.optflag("h", "help", "print this help");
    opts.optflag("V", "version", "print the version");
    let m = opts.parse(&args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        return Ok(Command::Help(opts.usage("Usage: databus [-c|--conf PATH]")));
    }
    if m.opt_present("V") {
        return Ok(Command::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument `{extra}`"));
    }
    let conf = m.opt_str("c").unwrap_or_else(|| "databus.toml".into());
    Ok(Command::Run { conf: PathBuf::from(conf) })
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

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
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
    fn file_store_lists_apps_and_grants() {
        let text = MINIMAL.replace("auth = \"mysql\"", "auth = \"file\"")
            + "[[apps]]\nid = 1\nkey = \"k\"\nsecret = \"s\"\ncluster = \"cluster1\"\n\
               [[grants]]\napp_id = 1\ngroup = \"g\"\noperation = 3\ntopic = \"t\"\n";
        let s = load(&text).unwrap();
        assert_eq!(s.auth, AuthSource::File { path: PathBuf::from("t.toml") });
        let grants =
            RawConfig::parse(Path::new("t.toml"), &text).unwrap().file_grants(Path::new("t.toml")).unwrap();
        assert_eq!(
            (grants[0].app_key.as_str(), grants[0].group.as_str(), grants[0].operation),
            ("k", "g", 3)
        );
        let e = load(&text.replace("app_id = 1", "app_id = 2")).unwrap_err();
        assert_eq!(e.key, "grants[0].app_id");
        let e = load(&text.replace("secret = \"s\"", "secret = \"\"")).unwrap_err();
        assert_eq!(e.key, "apps[0].secret");
    }

    #[test]
    fn bulk_limit_must_cover_value_limit() {
        let e = load(&format!("max_bulk_len = 10\n{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, "max_bulk_len");
    }

    #[test]
    fn command_line_forms() {
        let run = |p: &str| Ok(Command::Run { conf: PathBuf::from(p) });
        assert_eq!(parse_args(&args(&[])), run("databus.toml"));
        assert_eq!(parse_args(&args(&["-c", "a.toml"])), run("a.toml"));
        assert_eq!(parse_args(&args(&["--conf", "b.toml"])), run("b.toml"));
        assert_eq!(parse_args(&args(&["--conf=c.toml"])), run("c.toml"));
        assert_eq!(parse_args(&args(&["-conf=d.toml"])), run("d.toml"));
        assert_eq!(parse_args(&args(&["-conf", "e.toml"])), run("e.toml"));
        assert_eq!(parse_args(&args(&["-V"])), Ok(Command::Version));
        assert!(matches!(parse_args(&args(&["--help"])), Ok(Command::Help(_))));
        assert!(parse_args(&args(&["--bogus"])).is_err());
        assert!(parse_args(&args(&["x.toml"])).is_err());
    }
}
