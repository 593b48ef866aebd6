//! Services: the topics and consumer groups of a run, the bench database,
//! the databus process.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use databus::resp::Frame;
// Blocks on a future on this thread; the admin client's futures are
// resolved by librdkafka's own threads.
use futures_executor::block_on;
use mysql::prelude::Queryable;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::options::{env_str, Opts};
use crate::resp::RespConn;
use crate::{Res, APP_KEY, APP_SECRET, CLUSTER, SUB_WAIT_TIMEOUT_MS};

/// The topics and consumer groups of this run, deleted when it ends (unless
/// `BENCH_KEEP_TOPICS=1`), so that runs leave a shared broker as they found
/// it.
pub(crate) struct Topics {
    admin: AdminClient<DefaultClientContext>,
    names: Vec<String>,
    groups: Vec<String>,
    keep: bool,
}

impl Topics {
    pub(crate) fn create(opts: &Opts, names: Vec<String>, groups: Vec<String>) -> Res<Topics> {
        let admin: AdminClient<DefaultClientContext> = opts.client_config().create()?;
        let keep = env_str("BENCH_KEEP_TOPICS").is_some_and(|v| v != "0");
        let topics = Topics { admin, names, groups, keep };
        create_topics(opts, &topics.admin, &topics.names)?;
        Ok(topics)
    }

    /// Deletes the groups, best effort: a group that was never made counts
    /// as deleted; one whose members are still leaving is tried again for
    /// up to 20 s.
    fn delete_groups(&mut self) {
        let mut groups = std::mem::take(&mut self.groups);
        if self.keep || groups.is_empty() {
            return;
        }
        let total = groups.len();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while !groups.is_empty() {
            let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
            let left: Vec<String> = match block_on(self.admin.delete_groups(&refs, &options)) {
                Ok(results) => results
                    .into_iter()
                    .filter_map(|r| match r {
                        Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => None,
                        Err((g, e)) => {
                            last = Some(e);
                            Some(g)
                        }
                    })
                    .collect(),
                Err(e) => {
                    eprintln!("databus-bench: deleting consumer groups: {e}");
                    groups.clone()
                }
            };
            groups = left;
            if groups.is_empty() || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(500));
        }
        if !groups.is_empty() {
            eprintln!(
                "databus-bench: {} of {total} consumer groups were not deleted (last error: {last:?})",
                groups.len()
            );
        }
    }

    /// Deletes some topics now, best effort.
    pub(crate) fn delete(&mut self, names: &[String]) {
        self.names.retain(|n| !names.contains(n));
        if self.keep || names.is_empty() {
            return;
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        match block_on(self.admin.delete_topics(&refs, &options)) {
            Ok(results) => {
                for r in results {
                    if let Err((t, e)) = r {
                        eprintln!("databus-bench: deleting topic {t}: {e}");
                    }
                }
            }
            Err(e) => eprintln!("databus-bench: deleting topics: {e}"),
        }
    }
}

impl Drop for Topics {
    fn drop(&mut self) {
        let rest = std::mem::take(&mut self.names);
        self.delete(&rest);
        self.delete_groups();
    }
}

fn create_topics(opts: &Opts, admin: &AdminClient<DefaultClientContext>, topics: &[String]) -> Res<()> {
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, opts.partitions, TopicReplication::Fixed(opts.replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics(&new, &options))
        .map_err(|e| format!("Kafka at {} unreachable: {e}", opts.brokers))?;
    for r in results {
        r.map_err(|(t, e)| format!("create topic {t}: {e}"))?;
    }
    let probe: BaseConsumer = opts.client_config().create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for topic in topics {
        loop {
            let ready = probe.fetch_metadata(Some(topic), Duration::from_secs(5)).is_ok_and(|md| {
                md.topics()
                    .iter()
                    .any(|t| t.error().is_none() && t.partitions().len() == opts.partitions as usize)
            });
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("topic {topic} did not appear on {}", opts.brokers).into());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Recreates the bench database with one app and the given grants
/// (group, operation, topic).
pub(crate) fn reset_database(opts: &Opts, grants: &[(String, u8, String)]) -> Res<()> {
    let server = mysql::Opts::from_url(&opts.mysql_url)?;
    let mut conn = mysql::Conn::new(server)
        .map_err(|e| format!("MySQL at {} unreachable: {e}", redact(&opts.mysql_url)))?;
    let db = &opts.database;
    conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))?;
    conn.query_drop(format!("CREATE DATABASE `{db}`"))?;
    conn.query_drop(format!("USE `{db}`"))?;
    create_tables(&mut conn)?;
    conn.exec_drop(
        "INSERT INTO app_tb (id, app_key, app_secret, cluster) VALUES (1, ?, ?, ?)",
        (APP_KEY, APP_SECRET, CLUSTER),
    )?;
    conn.exec_batch(
        "INSERT INTO auth_tb (app_id, group_name, operation, topic) VALUES (1, ?, ?, ?)",
        grants.iter().map(|(g, op, t)| (g, op, t)),
    )?;
    Ok(())
}

/// Adds app `id` with `key` and the bench's secret, and its grants (group,
/// operation, topic), to the bench database that [`reset_database`] made.
pub(crate) fn add_app(opts: &Opts, id: i64, key: &str, grants: &[(String, u8, String)]) -> Res<()> {
    let server = mysql::Opts::from_url(&opts.mysql_url)?;
    let mut conn = mysql::Conn::new(server)
        .map_err(|e| format!("MySQL at {} unreachable: {e}", redact(&opts.mysql_url)))?;
    conn.query_drop(format!("USE `{}`", opts.database))?;
    conn.exec_drop(
        "INSERT INTO app_tb (id, app_key, app_secret, cluster) VALUES (?, ?, ?, ?)",
        (id, key, APP_SECRET, CLUSTER),
    )?;
    conn.exec_batch(
        "INSERT INTO auth_tb (app_id, group_name, operation, topic) VALUES (?, ?, ?, ?)",
        grants.iter().map(|(g, op, t)| (id, g, op, t)),
    )?;
    Ok(())
}

/// The seed's tables in the current database: scripts/schema.sql, the one
/// copy, whose statements end with ";" and hold no other.
pub(crate) fn create_tables(conn: &mut mysql::Conn) -> Res<()> {
    let schema = include_str!("../../scripts/schema.sql");
    let schema: String = schema.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join("\n");
    for statement in schema.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.query_drop(statement)?;
    }
    Ok(())
}

/// A MySQL URL with its password masked, as databus logs it.
fn redact(url: &str) -> String {
    databus::auth::mask_password(url)
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A databus child process; killed when dropped.
pub(crate) struct Databus {
    child: Child,
    pub(crate) addr: SocketAddr,
    pid_file: PathBuf,
    /// Its config file, and the engine it was written for.
    conf: PathBuf,
    engine: String,
}

impl Databus {
    fn config(opts: &Opts, port: u16, engine: &str) -> String {
        let brokers: Vec<String> = opts.brokers.split(',').map(|b| toml_str(b.trim())).collect();
        let mut c = String::new();
        let _ = writeln!(c, "# Generated by databus-bench; see BENCHMARKS.md.");
        let _ = writeln!(c, "addr = \"127.0.0.1:{port}\"\nauth = \"mysql\"");
        let _ = writeln!(c, "log_level = \"warn\"\nmax_clients = 5000");
        let _ = writeln!(c, "{}", opts.config_top);
        let _ = writeln!(
            c,
            "[producer]\nengine = \"{engine}\"\nlinger_ms = {}\nmax_in_flight = {}",
            opts.linger_ms, opts.max_in_flight
        );
        if let Some(n) = opts.producer_instances {
            let _ = writeln!(c, "instances = {n}");
        }
        let _ = writeln!(c, "[subscriber]\nwait_timeout_ms = {SUB_WAIT_TIMEOUT_MS}");
        if let Some(b) = opts.sub_batch {
            let _ = writeln!(c, "batch_size = {b}");
        }
        let _ = writeln!(c, "[clusters.{CLUSTER}]\nbrokers = [{}]", brokers.join(", "));
        if !opts.kafka_properties.is_empty() {
            let props: Vec<String> = opts
                .kafka_properties
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
                .collect();
            let _ = writeln!(c, "properties = {{ {} }}", props.join(", "));
        }
        let url = format!("{}/{}", opts.mysql_url, opts.database);
        let _ = writeln!(c, "[mysql]\nurl = {}", toml_str(&url));
        c
    }

    /// A databus on its default producer engine (its own).
    pub(crate) fn start(opts: &Opts, name: &str) -> Res<Databus> {
        Databus::start_with(opts, name, "databus")
    }

    /// Rewrites its config with `extra` TOML appended and has it re-read
    /// (SIGHUP: the clusters and `[limits]`).
    pub(crate) fn reload(&self, opts: &Opts, extra: &str) -> Res<()> {
        let config = Databus::config(opts, self.addr.port(), &self.engine) + extra;
        fs::write(&self.conf, config)?;
        let status = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status()?;
        if !status.success() {
            return Err(format!("kill -HUP databus: {status}").into());
        }
        // The re-read is quick; a SET after it sees the new limits.
        thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// A databus whose producer is `engine` (`producer.engine`).
    pub(crate) fn start_with(opts: &Opts, name: &str, engine: &str) -> Res<Databus> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        fs::create_dir_all(&opts.run_dir)?;
        let conf = opts.run_dir.join(format!("{name}.toml"));
        fs::write(&conf, Databus::config(opts, port, engine))?;
        let log_path = opts.run_dir.join(format!("{name}.log"));
        let log = fs::File::create(&log_path)?;
        let child = Command::new(&opts.databus_bin)
            .arg("--conf")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", opts.databus_bin.display()))?;
        // scripts/bench.sh kills whatever this names if the bench dies first.
        let pid_file = match name {
            "databus" => opts.run_dir.join("databus.pid"),
            other => opts.run_dir.join(format!("{other}.pid")),
        };
        fs::write(&pid_file, child.id().to_string())?;
        let mut databus = Databus {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid_file,
            conf,
            engine: engine.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = databus.child.try_wait()? {
                let tail = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("databus exited at start-up ({status}):\n{tail}").into());
            }
            if let Ok(mut c) = RespConn::connect(databus.addr) {
                if c.call(&[b"PING"])? == Frame::Simple("PONG".into()) {
                    return Ok(databus);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("databus did not answer on {} within 30 s", databus.addr).into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Databus {
    /// SIGTERM first, so its consumers leave their groups; SIGKILL if it
    /// has not exited within 10 s.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let termed = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while termed && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.pid_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("mysql://u:pw@h:3306"), "mysql://u:***@h:3306");
        assert_eq!(redact("mysql://h:3306"), "mysql://h:3306");
    }
}
