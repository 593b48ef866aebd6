//! The MySQL store: the seed's `app_tb` and `auth_tb`, read whole on each
//! load (they hold one row per app and per grant, so a full read is cheap and
//! never misses a deletion).

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder};

use super::{AuthStore, Grant, StoreError};

const QUERY: &str = "SELECT g.group_name, g.topic, g.operation, a.id, a.app_key, a.app_secret, a.cluster \
     FROM auth_tb g JOIN app_tb a ON a.id = g.app_id \
     WHERE (g.deleted_at IS NULL OR g.deleted_at = 0) \
       AND (a.deleted_at IS NULL OR a.deleted_at = 0) \
       AND g.group_name IS NOT NULL AND g.group_name <> ''";

pub struct MysqlStore {
    opts: Opts,
    /// URL with any password masked, for logs.
    shown: String,
    conn: Option<Conn>,
}

impl MysqlStore {
    pub fn new(url: &str, timeout: Duration) -> Result<MysqlStore, StoreError> {
        let shown = mask_password(url);
        let opts = Opts::from_url(url)
            .map_err(|e| StoreError { store: format!("mysql {shown}"), cause: e.to_string() })?;
        let opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(timeout))
            .read_timeout(Some(timeout))
            .write_timeout(Some(timeout));
        Ok(MysqlStore { opts: opts.into(), shown, conn: None })
    }

    fn query(&mut self) -> Result<Vec<Grant>, mysql::Error> {
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => self.conn.insert(Conn::new(self.opts.clone())?),
        };
        type Row = (String, String, Option<i64>, i64, String, String, String);
        conn.query_map(QUERY, |(group, topic, operation, app_id, app_key, app_secret, cluster): Row| Grant {
            group,
            topic,
            operation: operation.unwrap_or(0).clamp(0, 255) as u8,
            app_id,
            app_key,
            app_secret,
            cluster,
        })
    }
}

impl AuthStore for MysqlStore {
    fn describe(&self) -> String {
        format!("mysql {}", self.shown)
    }

    fn load(&mut self) -> Result<Vec<Grant>, StoreError> {
        self.query().map_err(|e| {
            // A broken connection is dropped so the next load reconnects.
            self.conn = None;
            StoreError { store: self.describe(), cause: e.to_string() }
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
