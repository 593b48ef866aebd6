//! The command line and `config.toml`: getopts finds the file, serde + toml
//! read it, and `validate` turns it into settings or one message naming the
//! file, the key and the problem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help(String),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub conf: PathBuf,
    /// Stop after printing (and committing) this many messages.
    pub max_messages: Option<u64>,
}

/// Parses the command line (without the program name). The original Go
/// client's single-dash `-conf=<path>` and `-conf <path>` work besides
/// `-c`/`--conf`.
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix("-conf") {
            Some(rest) if rest.is_empty() || rest.starts_with('=') => format!("--conf{rest}"),
            _ => a.clone(),
        })
        .collect();
    let mut opts = getopts::Options::new();
    opts.optopt("c", "conf", "configuration file (default ./config.toml)", "PATH");
    opts.optopt(
        "n",
        "max-messages",
        "exit after printing and committing N messages (default: consume until Ctrl-C)",
        "N",
    );
    opts.optflag("h", "help", "print this help");
    let m = opts.parse(&args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        let brief = "Usage: example_cli [-c|--conf PATH] [-n|--max-messages N]\n\n\
                     Publishes one JSON message through databus, then consumes the topic\n\
                     forever, printing and committing each message. Ctrl-C stops it.";
        return Ok(Command::Help(opts.usage(brief)));
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument `{extra}`"));
    }
    let max_messages = match m.opt_str("n") {
        None => None,
        Some(n) => match n.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("--max-messages: `{n}` is not a positive integer")),
        },
    };
    Ok(Command::Run(Options {
        conf: PathBuf::from(m.opt_str("c").unwrap_or_else(|| "config.toml".into())),
        max_messages,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "default_backoff_ms")]
    backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    max_backoff_ms: u64,
    publisher: PublisherFile,
    subscriber: SubscriberFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublisherFile {
    addr: String,
    key: String,
    secret: String,
    group: String,
    topic: String,
    #[serde(default)]
    color: String,
    #[serde(default = "default_message_key")]
    message_key: String,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_publisher_read_timeout_ms")]
    read_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriberFile {
    addr: String,
    key: String,
    secret: String,
    group: String,
    topic: String,
    #[serde(default)]
    color: String,
    #[serde(default = "default_offset")]
    offset: String,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_subscriber_read_timeout_ms")]
    read_timeout_ms: u64,
}

fn default_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    5000
}
fn default_message_key() -> String {
    "example".into()
}
fn default_offset() -> String {
    "old".into()
}
fn default_connect_timeout_ms() -> u64 {
    5000
}
fn default_publisher_read_timeout_ms() -> u64 {
    15000
}
fn default_subscriber_read_timeout_ms() -> u64 {
    35000
}

/// One side's connection to databus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` of databus.
    pub addr: String,
    pub topic: String,
    /// The `AUTH` argument: `key:secret@group/topic=T&role=R[&color=C][&offset=O]`.
    pub auth: String,
    /// For messages: the same without the secret.
    pub shown: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub publisher: Endpoint,
    /// Kafka key of the message published at start.
    pub message_key: String,
    pub subscriber: Endpoint,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        Config::from_toml(path, &text)
    }

    pub fn from_toml(path: &Path, text: &str) -> Result<Config, String> {
        let file: File = toml::from_str(text).map_err(|e| format!("config {}: {e}", path.display()))?;
        validate(file).map_err(|(key, problem)| format!("config {}: key `{key}`: {problem}", path.display()))
    }
}

/// A bad key and what is wrong with it.
type Problem = (String, String);

fn validate(f: File) -> Result<Config, Problem> {
    if f.backoff_ms == 0 {
        return Err(("backoff_ms".into(), "must be at least 1".into()));
    }
    if f.max_backoff_ms < f.backoff_ms {
        return Err(("max_backoff_ms".into(), "must be at least backoff_ms".into()));
    }
    let p = f.publisher;
    let mut pub_params = format!("role=pub{}", color_param(&p.color));
    let publisher = endpoint(
        "publisher",
        Credentials { addr: p.addr, key: &p.key, secret: &p.secret, group: &p.group, topic: &p.topic },
        &mut pub_params,
        p.connect_timeout_ms,
        p.read_timeout_ms,
    )?;
    if p.message_key.is_empty() {
        return Err(("publisher.message_key".into(), "must not be empty".into()));
    }
    let s = f.subscriber;
    if s.offset != "old" && s.offset != "new" {
        return Err(("subscriber.offset".into(), "must be \"old\" or \"new\"".into()));
    }
    let mut sub_params = format!("role=sub{}&offset={}", color_param(&s.color), s.offset);
    let subscriber = endpoint(
        "subscriber",
        Credentials { addr: s.addr, key: &s.key, secret: &s.secret, group: &s.group, topic: &s.topic },
        &mut sub_params,
        s.connect_timeout_ms,
        s.read_timeout_ms,
    )?;
    Ok(Config {
        publisher,
        message_key: p.message_key,
        subscriber,
        backoff: Duration::from_millis(f.backoff_ms),
        max_backoff: Duration::from_millis(f.max_backoff_ms),
    })
}

struct Credentials<'a> {
    addr: String,
    key: &'a str,
    secret: &'a str,
    group: &'a str,
    topic: &'a str,
}

fn color_param(color: &str) -> String {
    if color.is_empty() {
        String::new()
    } else {
        format!("&color={color}")
    }
}

fn endpoint(
    section: &str,
    c: Credentials<'_>,
    params: &mut String,
    connect_timeout_ms: u64,
    read_timeout_ms: u64,
) -> Result<Endpoint, Problem> {
    let bad = |key: &str, problem: &str| Err((format!("{section}.{key}"), problem.to_string()));
    // The characters that delimit the parts of the AUTH string cannot be in them.
    for (key, value, delimiters) in [
        ("addr", c.addr.as_str(), ""),
        ("key", c.key, ":@"),
        ("secret", c.secret, ""),
        ("group", c.group, "@/"),
        ("topic", c.topic, "&="),
    ] {
        if value.is_empty() {
            return bad(key, "must not be empty");
        }
        if value.chars().any(|ch| ch.is_whitespace() || delimiters.contains(ch)) {
            return bad(key, &format!("must not contain whitespace or any of `{delimiters}`"));
        }
    }
    if !c.addr.contains(':') {
        return bad("addr", "must be host:port");
    }
    if connect_timeout_ms == 0 {
        return bad("connect_timeout_ms", "must be at least 1");
    }
    if read_timeout_ms == 0 {
        return bad("read_timeout_ms", "must be at least 1");
    }
    let tail = format!("{}/topic={}&{params}", c.group, c.topic);
    Ok(Endpoint {
        auth: format!("{}:{}@{tail}", c.key, c.secret),
        shown: format!("{}:***@{tail}", c.key),
        addr: c.addr,
        topic: c.topic.to_string(),
        connect_timeout: Duration::from_millis(connect_timeout_ms),
        read_timeout: Duration::from_millis(read_timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn run(conf: &str, max: Option<u64>) -> Result<Command, String> {
        Ok(Command::Run(Options { conf: PathBuf::from(conf), max_messages: max }))
    }

    #[test]
    fn command_line_forms() {
        assert_eq!(parse_args(&args(&[])), run("config.toml", None));
        assert_eq!(parse_args(&args(&["-c", "a.toml"])), run("a.toml", None));
        assert_eq!(parse_args(&args(&["--conf", "b.toml"])), run("b.toml", None));
        assert_eq!(parse_args(&args(&["-conf=c.toml"])), run("c.toml", None));
        assert_eq!(parse_args(&args(&["-conf", "d.toml"])), run("d.toml", None));
        assert_eq!(parse_args(&args(&["--max-messages", "3", "-conf=e.toml"])), run("e.toml", Some(3)));
        assert!(parse_args(&args(&["-n", "0"])).is_err());
        assert!(parse_args(&args(&["stray"])).is_err());
        assert!(matches!(parse_args(&args(&["-h"])), Ok(Command::Help(_))));
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"));
        let c = Config::load(path).unwrap();
        assert_eq!(c.publisher.auth, "app_key1:app_secret1@group_name1/topic=test156&role=pub");
        assert_eq!(c.subscriber.auth, "app_key1:app_secret1@group_name1/topic=test156&role=sub&offset=old");
        assert_eq!(c.subscriber.shown, "app_key1:***@group_name1/topic=test156&role=sub&offset=old");
        assert_eq!(c.subscriber.addr, "127.0.0.1:6205");
        assert_eq!(c.subscriber.read_timeout, Duration::from_secs(35));
        assert_eq!(c.message_key, "example");
    }

    const MINIMAL: &str = "[publisher]\naddr = \"h:1\"\nkey = \"k\"\nsecret = \"s@x\"\ngroup = \"g\"\n\
                           topic = \"t\"\ncolor = \"red\"\n\
                           [subscriber]\naddr = \"h:1\"\nkey = \"k\"\nsecret = \"s\"\ngroup = \"g\"\ntopic = \"t\"\n";

    #[test]
    fn defaults_and_color() {
        let c = Config::from_toml(Path::new("x.toml"), MINIMAL).unwrap();
        assert_eq!(c.publisher.auth, "k:s@x@g/topic=t&role=pub&color=red");
        assert_eq!(c.subscriber.auth, "k:s@g/topic=t&role=sub&offset=old");
        assert_eq!(c.backoff, Duration::from_millis(200));
        assert_eq!(c.publisher.read_timeout, Duration::from_secs(15));
    }

    #[test]
    fn problems_name_the_file_and_key() {
        let bad = |text: &str| Config::from_toml(Path::new("x.toml"), text).unwrap_err();
        assert_eq!(
            bad(&MINIMAL.replacen("group = \"g\"", "group = \"a/b\"", 1)),
            "config x.toml: key `publisher.group`: must not contain whitespace or any of `@/`"
        );
        assert_eq!(
            bad(&format!("{MINIMAL}offset = \"newest\"\n")),
            "config x.toml: key `subscriber.offset`: must be \"old\" or \"new\""
        );
        assert_eq!(
            bad(&format!("{MINIMAL}read_timeout_ms = 0\n")),
            "config x.toml: key `subscriber.read_timeout_ms`: must be at least 1"
        );
        let unknown = bad(&format!("{MINIMAL}tpoic = \"t\"\n"));
        assert!(unknown.starts_with("config x.toml: ") && unknown.contains("tpoic"), "{unknown}");
    }
}
