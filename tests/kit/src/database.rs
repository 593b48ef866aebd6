//! A MySQL database of a test's own, of the seed's schema.

use mysql::prelude::Queryable;

use crate::services::{mysql_url, unique, HOW_TO_START};

/// The seed's auth schema (`scripts/schema.sql`, the one copy), statement
/// by statement: each ends with ";" and holds no other.
fn schema_statements() -> Vec<String> {
    let schema: Vec<&str> =
        include_str!("../../../scripts/schema.sql").lines().filter(|l| !l.starts_with("--")).collect();
    schema.join("\n").split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// A database of the seed's schema, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pool: mysql::Pool,
}

impl TestDb {
    pub fn new(test: &str) -> TestDb {
        let name = unique(&format!("databus_test_{test}"));
        let server = mysql::Opts::from_url(&mysql_url()).expect("DATABUS_MYSQL_URL");
        let mut conn = mysql::Conn::new(server.clone())
            .unwrap_or_else(|e| panic!("MySQL at {} unreachable ({e}); {HOW_TO_START}", mysql_url()));
        conn.query_drop(format!("CREATE DATABASE `{name}`")).unwrap();
        let pool =
            mysql::Pool::new(mysql::OptsBuilder::from_opts(server).db_name(Some(name.clone()))).unwrap();
        let db = TestDb { name, pool };
        for statement in schema_statements() {
            db.exec(&statement);
        }
        db
    }

    pub fn url(&self) -> String {
        format!("{}/{}", mysql_url().trim_end_matches('/'), self.name)
    }

    pub fn exec(&self, sql: &str) {
        self.pool.get_conn().unwrap().query_drop(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn add_app(&self, id: i64, key: &str, secret: &str, cluster: &str) {
        self.exec(&format!(
            "INSERT INTO app_tb (id, app_key, app_secret, cluster) VALUES ({id}, '{key}', '{secret}', '{cluster}')"
        ));
    }

    pub fn add_grant(&self, app_id: i64, group: &str, operation: u8, topic: &str) {
        self.exec(&format!(
            "INSERT INTO auth_tb (app_id, group_name, operation, topic) VALUES ({app_id}, '{group}', {operation}, '{topic}')"
        ));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = self.pool.get_conn() {
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}
