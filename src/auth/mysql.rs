//! The MySQL store: the seed's `app_tb` and `auth_tb`, read whole on each
//! load (they hold one row per app and per grant, so a full read is cheap and
//! never misses a deletion).

use std::time::Duration;

use mysql::prelude::{FromValue, Queryable};
use mysql::{Conn, Opts, OptsBuilder, Row};

use super::{AuthStore, Grant, SkippedRows, StoreError};
use crate::secret::Secret;

const QUERY: &str =
    "SELECT g.id, g.group_name, g.topic, g.operation, a.id, a.app_key, a.app_secret, a.cluster \
     FROM auth_tb g JOIN app_tb a ON a.id = g.app_id \
     WHERE (g.deleted_at IS NULL OR g.deleted_at = 0) \
       AND (a.deleted_at IS NULL OR a.deleted_at = 0) \
       AND g.group_name IS NOT NULL AND g.group_name <> ''";

pub(crate) struct MysqlStore {
    opts: Opts,
    /// URL with any password masked, for logs.
    shown: String,
    conn: Option<Conn>,
    skipped: SkippedRows,
}

impl MysqlStore {
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<MysqlStore, StoreError> {
        let shown = mask_password(url);
        let opts = Opts::from_url(url)
            .map_err(|e| StoreError { store: format!("mysql {shown}"), cause: e.into() })?;
        let opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(timeout))
            .read_timeout(Some(timeout))
            .write_timeout(Some(timeout));
        let skipped = SkippedRows::new(format!("mysql {shown}"));
        Ok(MysqlStore { opts: opts.into(), shown, conn: None, skipped })
    }

    fn query(&mut self) -> Result<Vec<Grant>, mysql::Error> {
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => self.conn.insert(Conn::new(self.opts.clone())?),
        };
        let mut grants = Vec::new();
        self.skipped.begin();
        for row in conn.query_iter(QUERY)? {
            let mut row = row?;
            // Each column is read on its own, so that one unreadable value
            // skips its row (named by id) instead of failing the load.
            let ids = (column::<i64>(&mut row, 0, "auth_tb.id"), column::<i64>(&mut row, 4, "app_tb.id"));
            let name = match ids {
                (Ok(grant), Ok(app)) => format!("auth_tb row {grant} (app_tb row {app})"),
                (Ok(grant), Err(_)) => format!("auth_tb row {grant}"),
                (Err(_), _) => "an auth_tb row".to_owned(),
            };
            match read_row(&mut row, ids.1) {
                Ok(g) => grants.push(g),
                Err(problem) => self.skipped.skip(&name, &problem),
            }
        }
        self.skipped.finish();
        Ok(grants)
    }
}

fn read_row(row: &mut Row, app_id: Result<i64, String>) -> Result<Grant, String> {
    // `operation` may be NULL (DEFAULT 0): no rights, not a broken row.
    let operation = match row.take_opt::<Option<i64>, _>(3) {
        Some(Ok(op)) => op.unwrap_or(0).clamp(0, 255) as u8,
        _ => return Err("auth_tb.operation is not an integer".into()),
    };
    Ok(Grant {
        group: column(row, 1, "auth_tb.group_name")?,
        topic: non_empty(column(row, 2, "auth_tb.topic")?, "auth_tb.topic")?,
        operation,
        app_id: app_id?,
        app_key: non_empty(column(row, 5, "app_tb.app_key")?, "app_tb.app_key")?,
        app_secret: Secret::new(non_empty(column(row, 6, "app_tb.app_secret")?, "app_tb.app_secret")?),
        cluster: non_empty(column(row, 7, "app_tb.cluster")?, "app_tb.cluster")?,
    })
}

/// Takes column `index`; the problem text names the column and never quotes
/// its value, which may be a secret.
fn column<T: FromValue>(row: &mut Row, index: usize, name: &str) -> Result<T, String> {
    match row.take_opt::<Option<T>, _>(index) {
        Some(Ok(Some(v))) => Ok(v),
        Some(Ok(None)) => Err(format!("{name} is NULL")),
        Some(Err(_)) => Err(format!("{name} cannot be read as {}", type_name::<T>())),
        None => Err(format!("{name} is missing from the result")),
    }
}

fn non_empty(value: String, name: &str) -> Result<String, String> {
    if value.is_empty() {
        Err(format!("{name} is empty"))
    } else {
        Ok(value)
    }
}

/// What a column was expected to hold, in words.
fn type_name<T>() -> &'static str {
    match std::any::type_name::<T>() {
        "alloc::string::String" => "UTF-8 text",
        "i64" => "an integer",
        other => other,
    }
}

impl AuthStore for MysqlStore {
    fn describe(&self) -> String {
        format!("mysql {}", self.shown)
    }

    fn skipped(&self) -> Vec<String> {
        self.skipped.current()
    }

    fn load(&mut self) -> Result<Vec<Grant>, StoreError> {
        self.query().map_err(|e| {
            // A broken connection is dropped so the next load reconnects.
            self.conn = None;
            StoreError { store: self.describe(), cause: e.into() }
        })
    }
}

/// `mysql://user:pw@host/db` → `mysql://user:***@host/db`.
pub fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::mask_password;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_password("mysql://u:pw@h:3306/db"), "mysql://u:***@h:3306/db");
        assert_eq!(mask_password("mysql://u@h/db"), "mysql://u@h/db");
        assert_eq!(mask_password("mysql://h/db"), "mysql://h/db");
        assert_eq!(mask_password("mysql://u:p@ss@h/db"), "mysql://u:***@h/db");
    }
}
