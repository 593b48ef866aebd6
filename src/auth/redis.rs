//! The Redis store, in the layout the redis_orm library (and its workbench)
//! writes: one hash per table (`tb:authtb`, `tb:apptb`) with fields
//! `<id>_<Field>`, and the `Group` column indexed in the sorted set
//! `ix:authtb_group` (member = group, score = row id). Data entered with the
//! workbench works unchanged.

use std::collections::HashMap;
use std::time::Duration;

use redis::{Commands, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use super::{AuthStore, Grant, SkippedRows, StoreError};
use crate::secret::Secret;

pub(crate) const AUTH_TABLE: &str = "tb:authtb";
pub(crate) const APP_TABLE: &str = "tb:apptb";
pub(crate) const GROUP_INDEX: &str = "ix:authtb_group";

pub(crate) struct RedisStore {
    info: ConnectionInfo,
    shown: String,
    timeout: Duration,
    conn: Option<redis::Connection>,
    skipped: SkippedRows,
}

impl RedisStore {
    pub(crate) fn new(
        addr: &str,
        db: i64,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let shown = format!("redis {addr} db {db}");
        let bad = |cause: String| StoreError { store: shown.clone(), cause: cause.into() };
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("address is not host:port".into()))?;
        let port: u16 = port.parse().map_err(|_| bad(format!("bad port '{port}'")))?;
        let mut settings = RedisConnectionInfo::default().set_db(db);
        if let Some(pw) = password {
            settings = settings.set_password(pw);
        }
        let info = ConnectionAddr::Tcp(host.trim_matches(['[', ']']).to_owned(), port)
            .into_connection_info()
            .map_err(|e| bad(e.to_string()))?
            .set_redis_settings(settings);
        let skipped = SkippedRows::new(shown.clone());
        Ok(RedisStore { info, shown, timeout, conn: None, skipped })
    }

    fn query(&mut self) -> redis::RedisResult<Vec<Grant>> {
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => {
                let client = redis::Client::open(self.info.clone())?;
                let c = client.get_connection_with_timeout(self.timeout)?;
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                self.conn.insert(c)
            }
        };
        // Read as bytes: one value that is not UTF-8 must skip its row, not
        // fail the whole load.
        let index: Vec<(Vec<u8>, f64)> = conn.zrange_withscores(GROUP_INDEX, 0, -1)?;
        let auth: Table = conn.hgetall(AUTH_TABLE)?;
        let apps: Table = conn.hgetall(APP_TABLE)?;
        self.skipped.begin();
        let grants = join(&index, &auth, &apps, &mut self.skipped);
        self.skipped.finish();
        Ok(grants)
    }
}

/// One redis_orm hash: field `<id>_<Column>` → value.
pub(crate) type Table = HashMap<Vec<u8>, Vec<u8>>;

/// Joins the index with both tables. A row that cannot be read (a missing
/// or non-UTF-8 column, an id that is not a number) is reported to `skipped`
/// by hash and row id, never by value, and left out.
pub(crate) fn join(
    index: &[(Vec<u8>, f64)],
    auth: &Table,
    apps: &Table,
    skipped: &mut SkippedRows,
) -> Vec<Grant> {
    let mut grants = Vec::new();
    for (group, score) in index {
        let Some(id) = row_id(*score) else {
            let row = format!("{GROUP_INDEX} member '{}'", group.escape_ascii());
            skipped.skip(&row, &format!("score {score} is not a row id"));
            continue;
        };
        let row = format!("{AUTH_TABLE} row {id}");
        match read_row(group, id, auth, apps) {
            Ok(g) => grants.push(g),
            Err(problem) => skipped.skip(&row, &problem),
        }
    }
    grants
}

fn read_row(group: &[u8], id: i64, auth: &Table, apps: &Table) -> Result<Grant, String> {
    let group =
        String::from_utf8(group.to_vec()).map_err(|_| format!("its {GROUP_INDEX} member is not UTF-8"))?;
    let app_id = text(auth, AUTH_TABLE, id, "AppId")?
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("{id}_AppId is not an integer"))?;
    // A missing Operation is redis_orm's zero value: no rights.
    let operation = match auth.get(format!("{id}_Operation").as_bytes()) {
        None => 0,
        Some(op) => std::str::from_utf8(op)
            .ok()
            .and_then(|op| op.trim().parse::<i64>().ok())
            .ok_or_else(|| format!("{id}_Operation is not an integer"))?,
    };
    Ok(Grant {
        group,
        topic: text(auth, AUTH_TABLE, id, "Topic")?,
        operation: operation.clamp(0, 255) as u8,
        app_id,
        app_key: text(apps, APP_TABLE, app_id, "AppKey")?,
        app_secret: Secret::new(text(apps, APP_TABLE, app_id, "AppSecret")?),
        cluster: text(apps, APP_TABLE, app_id, "Cluster")?,
    })
}

/// A whole, non-negative score: redis_orm stores the row id there.
fn row_id(score: f64) -> Option<i64> {
    (score.fract() == 0.0 && (0.0..9.0e15).contains(&score)).then_some(score as i64)
}

/// Field `<id>_<name>` of `table` as non-empty UTF-8 text.
fn text(table: &Table, hash: &str, id: i64, name: &str) -> Result<String, String> {
    let field = format!("{id}_{name}");
    match table.get(field.as_bytes()) {
        None => Err(format!("{hash} has no field {field}")),
        Some(v) if v.is_empty() => Err(format!("{hash} field {field} is empty")),
        Some(v) => String::from_utf8(v.clone()).map_err(|_| format!("{hash} field {field} is not UTF-8")),
    }
}

impl AuthStore for RedisStore {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn skipped(&self) -> Vec<String> {
        self.skipped.current()
    }

    fn load(&mut self) -> Result<Vec<Grant>, StoreError> {
        self.query().map_err(|e| {
            self.conn = None;
            StoreError { store: self.describe(), cause: e.into() }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, &[u8])]) -> Table {
        pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec())).collect()
    }

    #[test]
    fn joins_the_orm_layout_and_skips_unreadable_rows() {
        let index: Vec<(Vec<u8>, f64)> = [
            (&b"group_name1"[..], 1.0),
            (b"broken", 2.0),
            (b"orphan", 3.0),
            (b"\xffbin", 4.0),
            (b"half", 5.5),
            (b"badop", 6.0),
            (b"nosecret", 7.0),
        ]
        .iter()
        .map(|(g, s)| (g.to_vec(), *s))
        .collect();
        let auth = table(&[
            ("1_AppId", b"1"),
            ("1_Group", b"group_name1"),
            ("1_Operation", b"3"),
            ("1_Topic", b"test156"),
            ("2_AppId", b"1"),
            ("3_AppId", b"9"),
            ("3_Topic", b"t"),
            ("4_AppId", b"1"),
            ("4_Topic", b"t"),
            ("6_AppId", b"1"),
            ("6_Topic", b"t"),
            ("6_Operation", b"rw"),
            ("7_AppId", b"2"),
            ("7_Topic", b"\xfe"),
        ]);
        let apps = table(&[
            ("1_AppKey", b"app_key1"),
            ("1_AppSecret", b"app_secret1"),
            ("1_Cluster", b"cluster1"),
            ("2_AppKey", b"app_key2"),
            ("2_Cluster", b"cluster1"),
        ]);
        let mut skipped = SkippedRows::new("redis test".into());
        skipped.begin();
        let grants = join(&index, &auth, &apps, &mut skipped);
        assert_eq!(
            grants,
            vec![Grant {
                group: "group_name1".into(),
                topic: "test156".into(),
                operation: 3,
                app_id: 1,
                app_key: "app_key1".into(),
                app_secret: "app_secret1".into(),
                cluster: "cluster1".into(),
            }]
        );
        assert_eq!(
            skipped.current(),
            [
                "tb:authtb row 2: tb:authtb has no field 2_Topic",
                "tb:authtb row 3: tb:apptb has no field 9_AppKey",
                "tb:authtb row 4: its ix:authtb_group member is not UTF-8",
                "ix:authtb_group member 'half': score 5.5 is not a row id",
                "tb:authtb row 6: 6_Operation is not an integer",
                "tb:authtb row 7: tb:authtb field 7_Topic is not UTF-8",
            ]
        );
    }
}
