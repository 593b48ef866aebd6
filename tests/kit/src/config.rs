//! `databus.toml` for tests, built as a typed TOML table and serialized by
//! the `toml` crate, so no test formats the file's syntax by hand and a
//! fragment a test adds is parsed (a typo fails at once) and merged.

use toml::{Table, Value};

/// A config in the making.
#[derive(Debug, Clone, Default)]
pub struct Config(Table);

impl Config {
    /// A config listening on `addr`.
    pub fn new(addr: &str) -> Config {
        Config::default().set("addr", addr)
    }

    /// The MySQL store at `url` (`mysql://user:pw@host:port/db`).
    pub fn mysql(self, url: &str) -> Config {
        self.set("auth", "mysql").set("mysql.url", url)
    }

    /// Cluster `name` on `brokers`.
    pub fn cluster(self, name: &str, brokers: &[String]) -> Config {
        let list: Vec<Value> = brokers.iter().map(|b| Value::String(b.clone())).collect();
        self.set(&format!("clusters.{name}.brokers"), Value::Array(list))
    }

    /// Sets `path` (dotted: `subscriber.wait_timeout_ms`), creating the tables on the way.
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Config {
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().expect("a key");
        let mut table = &mut self.0;
        for key in keys {
            table = table
                .entry(key)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("`{key}` of `{path}` is not a table"));
        }
        table.insert(last.to_owned(), value.into());
        self
    }

    /// Merges a TOML fragment (top-level keys and sections); its values win.
    pub(crate) fn merge(mut self, fragment: &str) -> Config {
        let extra: Table =
            fragment.parse().unwrap_or_else(|e| panic!("test config fragment: {e}\n{fragment}"));
        merge_into(&mut self.0, extra);
        self
    }

    /// The file. `DATABUS_TEST_PRODUCER_ENGINE` names the producer engine
    /// of every config that does not name one (`make test` runs the
    /// publishing tests on librdkafka's too).
    pub fn to_toml(&self) -> String {
        let mut config = self.clone();
        if let Ok(engine) = std::env::var("DATABUS_TEST_PRODUCER_ENGINE") {
            let named = config.0.get("producer").and_then(|p| p.get("engine")).is_some();
            if !named && !engine.is_empty() {
                config = config.set("producer.engine", engine);
            }
        }
        toml::to_string(&config.0).expect("a table serializes")
    }
}

fn merge_into(into: &mut Table, from: Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(mine)), Value::Table(theirs)) => merge_into(mine, theirs),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
