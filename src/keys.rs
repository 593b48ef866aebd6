//! The keys of `databus.toml` and the checks they share, below every module
//! that owns settings: each converts its own raw section (`config` the
//! top level and the auth stores, `kafka` its producer, subscriber and
//! cluster sections) with a [`Check`], and declares its numeric keys as
//! [`Number`]s, each with its range and default in one place. `config`
//! gathers them into the key table that the tests and the table of
//! docs/configuration.md are checked against (`config::keys`, in its tests).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Longest duration any key accepts: a week. Every number is bounded, so no
/// later `Instant + Duration` or size arithmetic can overflow.
pub(crate) const MAX_MS: u64 = 7 * 24 * 3600 * 1000;

/// A numeric key: its dotted name, range and default. A default of `None`
/// is computed from other keys (said where the key is converted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Number {
    pub key: &'static str,
    pub default: Option<u64>,
    pub min: u64,
    pub max: u64,
}

impl Number {
    /// Milliseconds, at least 1, at most [`MAX_MS`].
    pub(crate) const fn millis(key: &'static str, default: u64) -> Number {
        Number { key, default: Some(default), min: 1, max: MAX_MS }
    }

    pub(crate) const fn count(key: &'static str, default: u64, min: u64, max: u64) -> Number {
        Number { key, default: Some(default), min, max }
    }

    /// A count whose default depends on other keys.
    pub(crate) const fn derived(key: &'static str, min: u64, max: u64) -> Number {
        Number { key, default: None, min, max }
    }
}

/// The checks of one file.
#[derive(Clone, Copy)]
pub(crate) struct Check<'a> {
    pub path: &'a Path,
}

impl Check<'_> {
    pub(crate) fn err(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError { path: self.path.to_owned(), key: key.to_owned(), problem: problem.into() }
    }

    /// `v` if it is within `min..=max`.
    pub(crate) fn within(&self, key: &str, v: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(self.err(key, format!("{v} is outside {min}..={max}")))
        }
    }

    /// `raw`, or the key's fixed default, within its range.
    pub(crate) fn number(&self, n: Number, raw: Option<u64>) -> Result<u64, ConfigError> {
        let default = n.default.expect("a key with a fixed default");
        self.within(n.key, raw.unwrap_or(default), n.min, n.max)
    }

    /// `raw`, or `default` (computed from other keys), within `min` (also
    /// computed, at least the key's own) and the key's maximum.
    pub(crate) fn derived(
        &self,
        n: Number,
        raw: Option<u64>,
        default: u64,
        min: u64,
    ) -> Result<u64, ConfigError> {
        self.within(n.key, raw.unwrap_or(default), min.max(n.min), n.max)
    }

    pub(crate) fn millis(&self, n: Number, raw: Option<u64>) -> Result<Duration, ConfigError> {
        self.number(n, raw).map(Duration::from_millis)
    }

    pub(crate) fn size(&self, n: Number, raw: Option<usize>) -> Result<usize, ConfigError> {
        self.number(n, raw.map(|v| v as u64)).map(|v| v as usize)
    }

    /// `value` if it reads as host:port (a name is resolved only when used).
    pub(crate) fn host_port(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        if value.parse::<SocketAddr>().is_err() && !value.contains(':') {
            return Err(self.err(key, format!("`{value}` is not host:port")));
        }
        Ok(())
    }

    /// `value` if it is one of `allowed`.
    pub(crate) fn one_of<'v>(
        &self,
        key: &str,
        value: &'v str,
        allowed: &[&str],
    ) -> Result<&'v str, ConfigError> {
        if allowed.contains(&value) {
            Ok(value)
        } else {
            Err(self.err(key, format!("`{value}` is not one of {}", allowed.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_to_their_range() {
        let check = Check { path: Path::new("t.toml") };
        let n = Number::count("n", 5, 2, 9);
        assert_eq!(check.number(n, None).unwrap(), 5);
        assert_eq!(check.number(n, Some(9)).unwrap(), 9);
        let e = check.number(n, Some(10)).unwrap_err();
        assert_eq!((e.key.as_str(), e.problem.as_str()), ("n", "10 is outside 2..=9"));
        assert_eq!(check.derived(Number::derived("d", 1, 100), None, 50, 60).unwrap_err().key, "d");
        assert_eq!(check.millis(Number::millis("ms", 7), None).unwrap(), Duration::from_millis(7));
        assert!(check.millis(Number::millis("ms", 7), Some(0)).is_err());
    }

    #[test]
    fn host_port_and_choices() {
        let check = Check { path: Path::new("t.toml") };
        assert!(check.host_port("a", "127.0.0.1:1").is_ok());
        assert!(check.host_port("a", "kafka-1:9092").is_ok());
        assert_eq!(check.host_port("a", "nohost").unwrap_err().problem, "`nohost` is not host:port");
        assert_eq!(check.one_of("k", "b", &["a", "b"]).unwrap(), "b");
        assert_eq!(check.one_of("k", "c", &["a", "b"]).unwrap_err().problem, "`c` is not one of a, b");
    }
}
