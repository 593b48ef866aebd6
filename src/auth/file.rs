//! The config-file store (`auth = "file"`): apps and grants listed in
//! `databus.toml` itself, for a deployment with no database. The file is
//! re-read on every refresh and on SIGHUP. A file that cannot be read or
//! parsed keeps the last good grants serving, like an unreachable database;
//! a single entry that cannot be read is skipped with a warning, like a bad
//! table row.
//!
//! Entries are read field by field rather than through serde, so that no
//! message about a bad entry can ever quote a value (a secret, say).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;
use toml::{Table, Value};

use super::{AuthStore, Grant, SkippedRows, StoreError};

pub(crate) struct FileStore {
    path: PathBuf,
    skipped: SkippedRows,
}

impl FileStore {
    pub(crate) fn new(path: &Path) -> FileStore {
        FileStore { path: path.to_owned(), skipped: SkippedRows::new(format!("file {}", path.display())) }
    }
}

impl AuthStore for FileStore {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn skipped(&self) -> Vec<String> {
        self.skipped.current()
    }

    fn load(&mut self) -> Result<Vec<Grant>, StoreError> {
        let fail = |cause: String| StoreError {
            store: format!("file {}", self.path.display()),
            cause: cause.into(),
        };
        let text = std::fs::read_to_string(&self.path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let lists: Lists = toml::from_str(&text).map_err(|e| fail(e.message().to_owned()))?;
        self.skipped.begin();
        let grants = join(&lists, &mut self.skipped);
        self.skipped.finish();
        Ok(grants)
    }
}

/// The two lists of the file; the rest of it is the server's own config.
#[derive(Deserialize)]
struct Lists {
    #[serde(default)]
    apps: Vec<Value>,
    #[serde(default)]
    grants: Vec<Value>,
}

struct App {
    id: i64,
    key: String,
    secret: Secret,
    cluster: String,
}

/// Every `[[grants]]` entry joined with its `[[apps]]` entry; entries that
/// cannot be read or joined are reported to `skipped` and left out.
fn join(lists: &Lists, skipped: &mut SkippedRows) -> Vec<Grant> {
    let mut apps: HashMap<i64, App> = HashMap::new();
    for (i, entry) in lists.apps.iter().enumerate() {
        let row = format!("[[apps]] entry {}", i + 1);
        match read_app(entry) {
            Ok(app) if apps.contains_key(&app.id) => {
                skipped.skip(&row, &format!("app id {} is listed twice", app.id))
            }
            Ok(app) => {
                apps.insert(app.id, app);
            }
            Err(problem) => skipped.skip(&row, &problem),
        }
    }
    let mut grants = Vec::with_capacity(lists.grants.len());
    for (i, entry) in lists.grants.iter().enumerate() {
        let row = format!("[[grants]] entry {}", i + 1);
        let grant = read_grant(entry).and_then(|(app_id, group, operation, topic)| {
            let app =
                apps.get(&app_id).ok_or_else(|| format!("no readable [[apps]] entry has id {app_id}"))?;
            Ok(Grant {
                group,
                topic,
                operation,
                app_id,
                app_key: app.key.clone(),
                app_secret: app.secret.clone(),
                cluster: app.cluster.clone(),
            })
        });
        match grant {
            Ok(g) => grants.push(g),
            Err(problem) => skipped.skip(&row, &problem),
        }
    }
    grants
}

fn read_app(entry: &Value) -> Result<App, String> {
    let table = fields(entry, &["id", "key", "secret", "cluster"])?;
    Ok(App {
        id: integer(table, "id")?,
        key: text(table, "key")?,
        secret: Secret::new(text(table, "secret")?),
        cluster: text(table, "cluster")?,
    })
}

fn read_grant(entry: &Value) -> Result<(i64, String, u8, String), String> {
    let table = fields(entry, &["app_id", "group", "operation", "topic"])?;
    let operation = integer(table, "operation")?;
    let operation = u8::try_from(operation).map_err(|_| "`operation` is not within 0..=255".to_owned())?;
    Ok((integer(table, "app_id")?, text(table, "group")?, operation, text(table, "topic")?))
}

/// The entry as a table holding only `known` fields.
fn fields<'a>(entry: &'a Value, known: &[&str]) -> Result<&'a Table, String> {
    let table = entry.as_table().ok_or_else(|| "is not a table".to_owned())?;
    match table.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(format!("unknown field `{unknown}`")),
        None => Ok(table),
    }
}

fn text(table: &Table, field: &str) -> Result<String, String> {
    match table.get(field) {
        None => Err(format!("`{field}` is missing")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("`{field}` is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{field}` is not a string")),
    }
}

fn integer(table: &Table, field: &str) -> Result<i64, String> {
    match table.get(field) {
        None => Err(format!("`{field}` is missing")),
        Some(Value::Integer(n)) => Ok(*n),
        Some(_) => Err(format!("`{field}` is not an integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Vec<Grant>, Vec<String>) {
        let lists: Lists = toml::from_str(text).unwrap();
        let mut skipped = SkippedRows::new("file test".into());
        skipped.begin();
        let grants = join(&lists, &mut skipped);
        (grants, skipped.current())
    }

    #[test]
    fn joins_apps_and_grants() {
        let (grants, skipped) = load(
            "addr = \"x\"\n[[apps]]\nid = 1\nkey = \"k\"\nsecret = \"s\"\ncluster = \"c\"\n\
             [[grants]]\napp_id = 1\ngroup = \"g\"\noperation = 3\ntopic = \"t\"\n",
        );
        assert!(skipped.is_empty(), "{skipped:?}");
        let g = &grants[0];
        assert_eq!(
            (g.group.as_str(), g.topic.as_str(), g.operation, g.app_key.as_str(), g.cluster.as_str()),
            ("g", "t", 3, "k", "c")
        );
    }

    #[test]
    fn unreadable_entries_are_skipped_and_named_without_values() {
        let secret = "hunter2-very-secret";
        let (grants, skipped) = load(&format!(
            "[[apps]]\nid = 1\nkey = \"k\"\nsecret = \"{secret}\"\ncluster = \"c\"\n\
             [[apps]]\nid = 2\nkey = \"k2\"\nsecret = 12345\ncluster = \"c\"\n\
             [[apps]]\nid = 1\nkey = \"dup\"\nsecret = \"{secret}\"\ncluster = \"c\"\n\
             [[apps]]\nid = 3\nkey = \"k3\"\nsecret = \"{secret}\"\n\
             [[grants]]\napp_id = 1\ngroup = \"good\"\noperation = 3\ntopic = \"t\"\n\
             [[grants]]\napp_id = 2\ngroup = \"badapp\"\noperation = 3\ntopic = \"t\"\n\
             [[grants]]\napp_id = 1\ngroup = \"\"\noperation = 3\ntopic = \"t\"\n\
             [[grants]]\napp_id = 1\ngroup = \"op\"\noperation = 300\ntopic = \"t\"\n\
             [[grants]]\napp_id = 1\ngroup = \"typo\"\noperation = 3\ntopik = \"t\"\n"
        ));
        assert_eq!(grants.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(), ["good"]);
        assert_eq!(
            skipped,
            [
                "[[apps]] entry 2: `secret` is not a string",
                "[[apps]] entry 3: app id 1 is listed twice",
                "[[apps]] entry 4: `cluster` is missing",
                "[[grants]] entry 2: no readable [[apps]] entry has id 2",
                "[[grants]] entry 3: `group` is empty",
                "[[grants]] entry 4: `operation` is not within 0..=255",
                "[[grants]] entry 5: unknown field `topik`",
            ]
        );
        for line in &skipped {
            assert!(!line.contains(secret) && !line.contains("12345"), "{line}");
        }
    }
}
