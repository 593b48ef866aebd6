//! `databus check [-c PATH]`: what an operator runs before a restart, as
//! `nginx -t`. It loads and validates the config, reads the auth store once
//! (apps, grants, rows skipped), asks each configured cluster for its
//! metadata with the cluster's own TLS and SASL settings, and checks that
//! every granted topic exists there, and that a cluster set to
//! `group_protocol = "consumer"` serves it. It writes nothing anywhere, binds no
//! port, and prints no secret: the store is named as its `describe` names it
//! (password masked), a cluster by its brokers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

use crate::auth::Grant;
use crate::config::Settings;
use crate::kafka::broker_errors::{because, BrokerErrors};
use crate::kafka::{client_config, group_protocol, Cluster, GroupProtocol};
use crate::server::open_store;
use crate::tls::TlsAcceptor;

/// Longest a cluster may take to answer its metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// One metadata try; between tries, a refused login ends the wait early.
const METADATA_TRY: Duration = Duration::from_secs(1);

/// Runs every check, writing the report to `out`; true when nothing is wrong.
pub fn run(conf: &Path, out: &mut dyn Write) -> std::io::Result<bool> {
    let mut problems = 0usize;
    let mut problem = |out: &mut dyn Write, text: String| {
        problems += 1;
        writeln!(out, "  PROBLEM: {text}")
    };
    let settings = match Settings::load(conf) {
        Ok(s) => s,
        Err(e) => {
            writeln!(out, "config: {e}")?;
            writeln!(out, "databus check: FAILED (the config does not load)")?;
            return Ok(false);
        }
    };
    writeln!(out, "config {}: valid; clients on {}", conf.display(), settings.addr)?;
    if let Some(a) = &settings.admin {
        writeln!(out, "  admin port on {}", a.addr)?;
    }
    if let Some(t) = &settings.tls {
        match TlsAcceptor::new(t.clone()) {
            Ok(_) => writeln!(out, "  TLS listener on {}: certificate and key load", t.addr)?,
            Err(e) => problem(out, format!("TLS listener on {}: {e}", t.addr))?,
        }
    }

    let grants = match open_store(&settings.auth) {
        Err(e) => {
            problem(out, format!("auth store: {e}"))?;
            None
        }
        Ok(mut store) => match store.load() {
            Err(e) => {
                problem(out, format!("auth store: {e}"))?;
                None
            }
            Ok(grants) => {
                let apps: BTreeSet<i64> = grants.iter().map(|g| g.app_id).collect();
                let skipped = store.skipped();
                writeln!(
                    out,
                    "auth store {}: {} apps, {} grants, {} rows skipped",
                    store.describe(),
                    apps.len(),
                    grants.len(),
                    skipped.len()
                )?;
                for row in &skipped {
                    writeln!(out, "  skipped {row}")?;
                }
                if grants.is_empty() {
                    problem(out, "the auth store holds no grant: every AUTH would be refused".into())?;
                }
                Some(grants)
            }
        },
    };

    let mut topics: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, cluster) in &settings.clusters {
        match metadata(cluster) {
            Ok((brokers, names)) => {
                writeln!(
                    out,
                    "cluster '{name}' ({}): answers, {brokers} brokers, {} topics",
                    cluster.brokers.join(","),
                    names.len()
                )?;
                topics.insert(name, names);
                if cluster.group_protocol == GroupProtocol::Consumer {
                    match group_protocol::served(cluster) {
                        Ok(true) => writeln!(out, "  serves group_protocol = \"consumer\" (KIP-848)")?,
                        Ok(false) => problem(out, group_protocol::unsupported(name).to_string())?,
                        Err(why) => writeln!(out, "  could not ask which group protocols it serves: {why}")?,
                    }
                }
            }
            Err(why) => problem(out, format!("cluster '{name}' ({}): {why}", cluster.brokers.join(",")))?,
        }
    }

    for g in grants.iter().flatten() {
        let grant = format!("grant of group '{}' (app id {}) to topic '{}'", g.group, g.app_id, g.topic);
        if !settings.clusters.contains_key(&g.cluster) {
            problem(out, format!("{grant}: cluster '{}' is not configured", g.cluster))?;
        } else if topics.get(g.cluster.as_str()).is_some_and(|names| !names.contains(&g.topic)) {
            problem(out, format!("{grant}: no such topic on cluster '{}'", g.cluster))?;
        }
    }
    if let Some(grants) = &grants {
        let used: BTreeSet<(&str, &str)> =
            grants.iter().map(|g: &Grant| (g.cluster.as_str(), g.topic.as_str())).collect();
        writeln!(out, "grants: {} topics on {} clusters checked", used.len(), topics.len())?;
    }

    if problems == 0 {
        writeln!(out, "databus check: ok")?;
    } else {
        writeln!(out, "databus check: FAILED ({problems} problems)")?;
    }
    Ok(problems == 0)
}

/// Keeps what librdkafka said about the brokers, to say why they did not answer.
struct CheckContext {
    errors: BrokerErrors,
}

impl ClientContext for CheckContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.errors.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.keep(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for CheckContext {}

/// The cluster's broker count and topic names, asked with its own settings.
fn metadata(cluster: &Cluster) -> Result<(usize, BTreeSet<String>), String> {
    let consumer: BaseConsumer<CheckContext> = client_config(cluster)
        .create_with_context(CheckContext { errors: BrokerErrors::default() })
        .map_err(|e| format!("cannot create a client: {e}"))?;
    let started = Instant::now();
    let deadline = started + METADATA_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.fetch_metadata(None, left.min(METADATA_TRY)) {
            Ok(m) => {
                let names = m.topics().iter().filter(|t| t.error().is_none()).map(|t| t.name().to_owned());
                return Ok((m.brokers().len(), names.collect()));
            }
            Err(e) => {
                // Hands librdkafka's queued errors to the context.
                let _ = consumer.poll(Duration::from_millis(100));
                let errors = &consumer.context().errors;
                if let Some(reason) = errors.refused_since(started) {
                    return Err(format!("refused databus: {reason}"));
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "no metadata answer within {METADATA_TIMEOUT:?}: {e}{}",
                        because(&errors.get())
                    ));
                }
            }
        }
    }
}
