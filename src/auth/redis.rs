//! The Redis store, in the layout the redis_orm library (and its workbench)
//! writes: one hash per table (`tb:authtb`, `tb:apptb`) with fields
//! `<id>_<Field>`, and the `Group` column indexed in the sorted set
//! `ix:authtb_group` (member = group, score = row id). Data entered with the
//! workbench works unchanged.

use std::collections::HashMap;
use std::time::Duration;

use redis::{Commands, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use super::{AuthStore, Grant, StoreError};

pub const AUTH_TABLE: &str = "tb:authtb";
pub const APP_TABLE: &str = "tb:apptb";
pub const GROUP_INDEX: &str = "ix:authtb_group";

pub struct RedisStore {
    info: ConnectionInfo,
    shown: String,
    timeout: Duration,
    conn: Option<redis::Connection>,
}

impl RedisStore {
    pub fn new(
        addr: &str,
        db: i64,
        password: Option<&str>,
        timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let shown = format!("redis {addr} db {db}");
        let bad = |cause: String| StoreError { store: shown.clone(), cause };
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
        Ok(RedisStore { info, shown, timeout, conn: None })
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
        let index: Vec<(String, f64)> = conn.zrange_withscores(GROUP_INDEX, 0, -1)?;
        let auth: HashMap<String, String> = conn.hgetall(AUTH_TABLE)?;
        let apps: HashMap<String, String> = conn.hgetall(APP_TABLE)?;
        Ok(join(&index, &auth, &apps))
    }
}

/// Joins the index with both tables. A row with a missing column is skipped
/// (logged), as the other stores skip rows that do not join.
pub fn join(
    index: &[(String, f64)],
    auth: &HashMap<String, String>,
    apps: &HashMap<String, String>,
) -> Vec<Grant> {
    let mut grants = Vec::new();
    for (group, score) in index {
        let id = *score as i64;
        let field = |table: &HashMap<String, String>, id: i64, name: &str| {
            table.get(&format!("{id}_{name}")).cloned()
        };
        let row = (|| {
            let app_id: i64 = field(auth, id, "AppId")?.trim().parse().ok()?;
            let topic = field(auth, id, "Topic")?;
            let operation: i64 = field(auth, id, "Operation").unwrap_or_default().trim().parse().unwrap_or(0);
            Some(Grant {
                group: group.clone(),
                topic,
                operation: operation.clamp(0, 255) as u8,
                app_id,
                app_key: field(apps, app_id, "AppKey")?,
                app_secret: field(apps, app_id, "AppSecret")?,
                cluster: field(apps, app_id, "Cluster")?,
            })
        })();
        match row {
            Some(g) if !g.topic.is_empty() => grants.push(g),
            _ => log::debug!("auth: redis row {id} of group '{group}' is incomplete; skipped"),
        }
    }
    grants
}

impl AuthStore for RedisStore {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn load(&mut self) -> Result<Vec<Grant>, StoreError> {
        self.query().map_err(|e| {
            self.conn = None;
            StoreError { store: self.describe(), cause: e.to_string() }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn joins_the_orm_layout() {
        let index =
            vec![("group_name1".to_string(), 1.0), ("broken".to_string(), 2.0), ("orphan".to_string(), 3.0)];
        let auth = table(&[
            ("1_AppId", "1"),
            ("1_Group", "group_name1"),
            ("1_Operation", "3"),
            ("1_Topic", "test156"),
            ("2_AppId", "1"),
            ("3_AppId", "9"),
            ("3_Topic", "t"),
        ]);
        let apps =
            table(&[("1_AppKey", "app_key1"), ("1_AppSecret", "app_secret1"), ("1_Cluster", "cluster1")]);
        let grants = join(&index, &auth, &apps);
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
    }
}
