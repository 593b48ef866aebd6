//! The keys of `databus.toml` and the checks they share, below every module
//! that owns settings: each converts its own raw section (`config` the
//! top level and the auth stores, `kafka` its producer, subscriber and
//! cluster sections, `queue` its own) with a [`Check`], and defines each of
//! its keys once, as a [`Number`] (range, default) or a [`Text`] (what it
//! accepts, default), each with its one-line doc, listed in the module's
//! `KEYS`. `config::keys` gathers them; its tests prove the list is the
//! set of fields serde reads (so no key can be missing from it) and
//! generate the configuration reference (`docs/configuration.md`) from it,
//! defaults included.

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

/// A numeric key: its dotted name, range, default and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Number {
    pub key: &'static str,
    /// `None`: computed from other keys, as `shown` says.
    pub default: Option<u64>,
    pub min: u64,
    pub max: u64,
    /// The default as the reference shows it, when it is computed.
    pub shown: &'static str,
    pub doc: &'static str,
}

impl Number {
    /// Milliseconds, at least 1, at most [`MAX_MS`].
    pub(crate) const fn millis(key: &'static str, default: u64, doc: &'static str) -> Number {
        Number { key, default: Some(default), min: 1, max: MAX_MS, shown: "", doc }
    }

    pub(crate) const fn count(
        key: &'static str,
        default: u64,
        min: u64,
        max: u64,
        doc: &'static str,
    ) -> Number {
        Number { key, default: Some(default), min, max, shown: "", doc }
    }

    /// A limit that is off unless set.
    pub(crate) const fn optional(key: &'static str, min: u64, max: u64, doc: &'static str) -> Number {
        Number { key, default: None, min, max, shown: "off", doc }
    }

    /// A count whose default depends on other keys, as `shown` says.
    pub(crate) const fn derived(
        key: &'static str,
        min: u64,
        max: u64,
        shown: &'static str,
        doc: &'static str,
    ) -> Number {
        Number { key, default: None, min, max, shown, doc }
    }
}

/// A key whose value is text: a word from a list, an address, a path, a
/// name, or a section of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Text {
    pub key: &'static str,
    /// The default as the reference shows it (`required`, `none`, a value).
    pub default: &'static str,
    pub accepts: Accepts,
    pub doc: &'static str,
}

/// What a [`Text`] key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepts {
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A value of this form (`host:port`, a path...).
    Form(&'static str),
}

impl Text {
    pub(crate) const fn one_of(
        key: &'static str,
        default: &'static str,
        allowed: &'static [&'static str],
        doc: &'static str,
    ) -> Text {
        Text { key, default, accepts: Accepts::OneOf(allowed), doc }
    }

    /// The key as it names the cluster `name`'s (`clusters.<name>.x`).
    pub(crate) fn of(&self, name: &str) -> String {
        self.key.replace("<name>", name)
    }

    pub(crate) const fn form(
        key: &'static str,
        default: &'static str,
        form: &'static str,
        doc: &'static str,
    ) -> Text {
        Text { key, default, accepts: Accepts::Form(form), doc }
    }
}

/// One key of the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Number(Number),
    Text(Text),
}

impl Key {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Key::Number(n) => n.key,
            Key::Text(t) => t.key,
        }
    }

    /// Its row of the configuration reference: key, default, accepts, meaning.
    pub(crate) fn row(&self) -> String {
        let (default, accepts, doc) = match self {
            Key::Number(n) => {
                let default = match n.default {
                    Some(d) => d.to_string(),
                    None => n.shown.to_owned(),
                };
                let unit = if n.key.ends_with("_ms") { " ms" } else { "" };
                let range = if n.max == MAX_MS {
                    format!("{}{unit} to a week", n.min)
                } else {
                    format!("{}–{}{unit}", n.min, n.max)
                };
                (default, range, n.doc)
            }
            Key::Text(t) => {
                let accepts = match t.accepts {
                    Accepts::OneOf(words) => {
                        words.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
                    }
                    Accepts::Form(form) => form.to_owned(),
                };
                (t.default.to_owned(), accepts, t.doc)
            }
        };
        format!("| `{}` | {default} | {accepts} | {doc} |", self.name())
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

    /// `raw` within the key's range, or `None` (off) when unset; `key` is
    /// the key as this file spells it (an app's own section, say).
    pub(crate) fn optional(
        &self,
        n: Number,
        key: &str,
        raw: Option<u64>,
    ) -> Result<Option<u64>, ConfigError> {
        raw.map(|v| self.within(key, v, n.min, n.max)).transpose()
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
        let n = Number::count("n", 5, 2, 9, "");
        assert_eq!(check.number(n, None).unwrap(), 5);
        assert_eq!(check.number(n, Some(9)).unwrap(), 9);
        let e = check.number(n, Some(10)).unwrap_err();
        assert_eq!((e.key.as_str(), e.problem.as_str()), ("n", "10 is outside 2..=9"));
        assert_eq!(check.derived(Number::derived("d", 1, 100, "", ""), None, 50, 60).unwrap_err().key, "d");
        assert_eq!(check.millis(Number::millis("ms", 7, ""), None).unwrap(), Duration::from_millis(7));
        assert!(check.millis(Number::millis("ms", 7, ""), Some(0)).is_err());
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

/// The configuration reference: a Markdown table of `keys`, one row each.
pub(crate) fn table(keys: &[Key]) -> String {
    let mut table = String::from("| key | default | accepts | meaning |\n|---|---|---|---|\n");
    for key in keys {
        table.push_str(&key.row());
        table.push('\n');
    }
    table
}

/// The dotted keys a raw section's serde `Deserialize` reads, found by
/// driving it with a deserializer that offers every field once: the list
/// the key table is checked against, so that a field added to a raw struct
/// without its [`Key`] fails a test. A map of names (`clusters`) stands as
/// `<name>`; a map of plain values (`properties`) and a list (`brokers`,
/// `[[apps]]`) are one key each.
#[cfg(test)]
pub(crate) mod trace {
    use std::cell::RefCell;

    use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;

    #[derive(Debug)]
    pub(crate) struct Untraceable(String);

    impl std::fmt::Display for Untraceable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Untraceable {}

    impl de::Error for Untraceable {
        fn custom<T: std::fmt::Display>(msg: T) -> Self {
            Untraceable(msg.to_string())
        }
    }

    /// Every key `T` reads, `prefix` before each.
    pub(crate) fn keys<'de, T: Deserialize<'de>>(prefix: &str) -> Vec<String> {
        let found = RefCell::new(Vec::new());
        T::deserialize(Tracer { path: prefix.to_owned(), found: &found }).expect("a traceable section");
        found.into_inner()
    }

    struct Tracer<'a> {
        path: String,
        found: &'a RefCell<Vec<String>>,
    }

    impl Tracer<'_> {
        fn leaf(&self) {
            self.found.borrow_mut().push(self.path.clone());
        }

        fn child(&self, name: &str) -> Tracer<'_> {
            let path = if self.path.is_empty() { name.to_owned() } else { format!("{}.{name}", self.path) };
            Tracer { path, found: self.found }
        }
    }

    impl<'de> de::Deserializer<'de> for Tracer<'_> {
        type Error = Untraceable;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Untraceable> {
            Err(Untraceable(format!("`{}`: a type the tracer does not know", self.path)))
        }

        fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Untraceable> {
            self.leaf();
            v.visit_bool(false)
        }

        fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Untraceable> {
            self.leaf();
            v.visit_i64(0)
        }

        fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Untraceable> {
            self.leaf();
            v.visit_u64(0)
        }

        fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Untraceable> {
            self.leaf();
            v.visit_str("")
        }

        fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Untraceable> {
            self.deserialize_str(v)
        }

        fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Untraceable> {
            v.visit_some(self)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            v: V,
        ) -> Result<V::Value, Untraceable> {
            v.visit_newtype_struct(self)
        }

        fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Untraceable> {
            self.leaf();
            v.visit_seq(Empty)
        }

        fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Untraceable> {
            // Traced apart: a map of sections gives their keys under
            // `<name>`; a map of plain values is one key, the map's own.
            let inner = RefCell::new(Vec::new());
            let named = Tracer { path: format!("{}.<name>", self.path), found: &inner };
            let value = v.visit_map(OneName { value: Some(named) })?;
            let inner = inner.into_inner();
            if inner == [format!("{}.<name>", self.path)] {
                self.leaf();
            } else {
                self.found.borrow_mut().extend(inner);
            }
            Ok(value)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, Untraceable> {
            v.visit_map(Fields { tracer: self, fields, at: 0 })
        }

        serde::forward_to_deserialize_any! {
            i8 i16 i32 i128 u8 u16 u32 u128 f32 f64 char bytes byte_buf unit unit_struct
            tuple tuple_struct enum identifier ignored_any
        }
    }

    struct Empty;

    impl<'de> SeqAccess<'de> for Empty {
        type Error = Untraceable;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            _: T,
        ) -> Result<Option<T::Value>, Untraceable> {
            Ok(None)
        }
    }

    /// A map of one entry, named `<name>`.
    struct OneName<'a> {
        value: Option<Tracer<'a>>,
    }

    impl<'de> MapAccess<'de> for OneName<'_> {
        type Error = Untraceable;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Untraceable> {
            if self.value.is_none() {
                return Ok(None);
            }
            seed.deserialize("<name>".into_deserializer()).map(Some)
        }

        fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Untraceable> {
            seed.deserialize(self.value.take().expect("a value after its key"))
        }
    }

    /// A struct's fields, each offered once.
    struct Fields<'a> {
        tracer: Tracer<'a>,
        fields: &'static [&'static str],
        at: usize,
    }

    impl<'de> MapAccess<'de> for Fields<'_> {
        type Error = Untraceable;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Untraceable> {
            let Some(field) = self.fields.get(self.at) else { return Ok(None) };
            seed.deserialize((*field).into_deserializer()).map(Some)
        }

        fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Untraceable> {
            let field = self.fields[self.at];
            self.at += 1;
            seed.deserialize(self.tracer.child(field))
        }
    }

    #[test]
    fn finds_every_field() {
        use std::collections::BTreeMap;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            a: Option<u64>,
            b: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            top: Option<usize>,
            #[serde(default)]
            section: Option<Inner>,
            #[serde(default)]
            named: BTreeMap<String, Inner>,
            #[serde(default)]
            words: BTreeMap<String, String>,
            list: Option<Vec<String>>,
            #[serde(rename = "rows")]
            _rows: Vec<i64>,
            flag: bool,
            n: i64,
        }
        assert_eq!(
            keys::<Outer>(""),
            [
                "top",
                "section.a",
                "section.b",
                "named.<name>.a",
                "named.<name>.b",
                "words",
                "list",
                "rows",
                "flag",
                "n"
            ]
        );
    }
}
