//! The two halves of the example, each on its own connection: `publish`
//! sends one JSON message with `SET`; `consume` loops on `MGET`, prints each
//! message and commits what it printed with `SET <partition> <offset>`.
//! Whenever databus goes away (restart, network) they reconnect with
//! exponential backoff; an `AUTH` that databus refuses for good (wrong
//! secret, topic not granted…) ends the program with databus's reason.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Connection, RedisError};
use serde::Deserialize;

use crate::config::{Config, Endpoint};
use crate::stop::Stop;

/// Why a connection was given up.
enum Failure {
    /// databus went away or is briefly unable to serve: reconnect.
    Lost(String),
    /// Retrying cannot help.
    Fatal(String),
}

/// Whether the error means the connection is gone (or never came up).
fn is_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// databus's own words for an error reply; the client's description otherwise.
fn reason(e: &RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(_), Some(detail)) => detail.to_string(),
        _ => e.to_string(),
    }
}

/// Connects and authenticates. `AUTH` is sent as a command of its own (not
/// as the connection password) so that databus's reason for a refusal is
/// shown as it is.
fn connect(ep: &Endpoint) -> Result<Connection, Failure> {
    let lost = |e: RedisError| Failure::Lost(format!("databus at {} unreachable: {e}", ep.addr));
    let client = redis::Client::open(format!("redis://{}/", ep.addr))
        .map_err(|e| Failure::Fatal(format!("address `{}`: {e}", ep.addr)))?;
    let mut con = client.get_connection_with_timeout(ep.connect_timeout).map_err(|e| {
        if is_lost(&e) {
            lost(e)
        } else {
            Failure::Fatal(format!("connecting to {}: {e}", ep.addr))
        }
    })?;
    con.set_read_timeout(Some(ep.read_timeout)).map_err(lost)?;
    con.set_write_timeout(Some(ep.read_timeout)).map_err(lost)?;
    match redis::cmd("AUTH").arg(&ep.auth).query::<()>(&mut con) {
        Ok(()) => Ok(con),
        Err(e) if is_lost(&e) => Err(lost(e)),
        Err(e) => {
            let refused = format!("AUTH {} refused by {}: {}", ep.shown, ep.addr, reason(&e));
            // TRYAGAIN: a full group (its old members not yet expired after
            // a restart), a full server, an unreachable cluster clear up by
            // themselves. WRONGPASS, NOPERM and ERR do not.
            if e.code() == Some("TRYAGAIN") {
                Err(Failure::Lost(refused))
            } else {
                Err(Failure::Fatal(refused))
            }
        }
    }
}

/// Exponential backoff between reconnection attempts.
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(config: &Config) -> Backoff {
        Backoff { first: config.backoff, max: config.max_backoff, next: config.backoff }
    }

    fn reset(&mut self) {
        self.next = self.first;
    }

    /// Reports the failure and sleeps; a fatal one is returned instead. A
    /// failure caused by Ctrl-C or SIGTERM (an interrupted read) is not
    /// reported: the process is ending.
    fn after(&mut self, failure: Failure, stop: &Stop) -> Result<(), String> {
        stop.exit_if_requested();
        match failure {
            Failure::Fatal(why) => Err(why),
            Failure::Lost(why) => {
                eprintln!("example_cli: {why}; retrying in {} ms", self.next.as_millis());
                std::thread::sleep(self.next);
                self.next = (self.next * 2).min(self.max);
                Ok(())
            }
        }
    }
}

/// Publishes one JSON message, retrying until databus acknowledges it. A
/// retry after a lost reply may write the message twice: delivery is at
/// least once, which is why consumers deduplicate.
pub fn publish(config: &Config, stop: &Stop) -> Result<(), String> {
    let ep = &config.publisher;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let value = serde_json::json!({
        "from": "example_cli",
        "id": format!("{}-{}", std::process::id(), now.as_nanos()),
        "sent_at": now.as_secs(),
    })
    .to_string();
    let mut backoff = Backoff::new(config);
    loop {
        let attempt = connect(ep).and_then(|mut con| {
            // A signal waits for the reply, so the last line printed is true.
            let _busy = stop.busy();
            match redis::cmd("SET").arg(&config.message_key).arg(&value).query::<()>(&mut con) {
                Ok(()) => {
                    println!(
                        "published topic={} key={} value={value}",
                        ep.topic,
                        json_string(&config.message_key)
                    );
                    Ok(())
                }
                Err(e) if is_lost(&e) => Err(Failure::Lost(format!("publishing: {e}"))),
                // `publish failed`: the broker did not acknowledge in time.
                Err(e) => Err(Failure::Lost(format!("publish refused: {}", reason(&e)))),
            }
        });
        match attempt {
            Ok(()) => return Ok(()),
            Err(failure) => backoff.after(failure, stop)?,
        }
    }
}

/// Consumes until `max_messages` were printed (forever without it).
pub fn consume(config: &Config, max_messages: Option<u64>, stop: &Stop) -> Result<(), String> {
    let ep = &config.subscriber;
    let mut consumer = Consumer { printed: HashMap::new(), count: 0, max_messages };
    let mut backoff = Backoff::new(config);
    loop {
        let failure = match connect(ep) {
            Ok(mut con) => {
                eprintln!("example_cli: subscribed to {} as {}", ep.addr, ep.shown);
                match consumer.serve(&mut con, stop, &mut backoff) {
                    Ok(()) => return Ok(()),
                    Err(f) => f,
                }
            }
            Err(f) => f,
        };
        backoff.after(failure, stop)?;
    }
}

/// One element of an `MGET` reply (JSON).
#[derive(Deserialize)]
struct Message {
    key: String,
    #[serde(default)]
    key_encoding: Option<String>,
    value: serde_json::Value,
    #[serde(default)]
    value_encoding: Option<String>,
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: i64,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl Message {
    /// `message topic=T partition=P offset=O timestamp=S key="k" [metadata={..}] value=<json>`.
    fn line(&self) -> String {
        let mut line = format!(
            "message topic={} partition={} offset={} timestamp={} key={}",
            self.topic,
            self.partition,
            self.offset,
            self.timestamp,
            json_string(&self.key)
        );
        if let Some(encoding) = &self.key_encoding {
            line.push_str(&format!(" key_encoding={encoding}"));
        }
        if !self.metadata.is_empty() {
            let metadata = serde_json::to_string(&self.metadata).unwrap_or_default();
            line.push_str(&format!(" metadata={metadata}"));
        }
        if let Some(encoding) = &self.value_encoding {
            line.push_str(&format!(" value_encoding={encoding}"));
        }
        line.push_str(&format!(" value={}", self.value));
        line
    }
}

struct Consumer {
    /// Highest offset printed per partition. After a reconnect, messages
    /// whose commit did not get through come again; they are committed but
    /// not printed twice (the deduplication by partition and offset of
    /// docs/protocol.md, "Delivery is at least once").
    printed: HashMap<i32, i64>,
    count: u64,
    max_messages: Option<u64>,
}

impl Consumer {
    fn done(&self) -> bool {
        self.max_messages.is_some_and(|max| self.count >= max)
    }

    /// Pulls, prints and commits on one connection; `Ok` once `max_messages`
    /// were printed.
    fn serve(&mut self, con: &mut Connection, stop: &Stop, backoff: &mut Backoff) -> Result<(), Failure> {
        loop {
            let batch: Vec<Vec<u8>> = redis::cmd("MGET").query(con).map_err(|e| {
                if is_lost(&e) {
                    Failure::Lost(format!("MGET: {e}"))
                } else {
                    Failure::Fatal(format!("MGET refused: {}", reason(&e)))
                }
            })?;
            backoff.reset();
            let _busy = stop.busy();
            // Last offset per partition of this batch, to commit.
            let mut last: BTreeMap<i32, i64> = BTreeMap::new();
            for raw in &batch {
                if self.done() {
                    break;
                }
                let msg: Message = serde_json::from_slice(raw).map_err(|e| {
                    Failure::Fatal(format!(
                        "MGET returned an element that is not a message ({e}): {}",
                        String::from_utf8_lossy(raw)
                    ))
                })?;
                let seen = self.printed.get(&msg.partition).is_some_and(|&o| msg.offset <= o);
                if !seen {
                    println!("{}", msg.line());
                    self.printed.insert(msg.partition, msg.offset);
                    self.count += 1;
                }
                let last = last.entry(msg.partition).or_insert(msg.offset);
                *last = (*last).max(msg.offset);
            }
            for (partition, offset) in last {
                match redis::cmd("SET").arg(partition).arg(offset).query::<()>(con) {
                    Ok(()) => eprintln!("example_cli: committed partition {partition} offset {offset}"),
                    Err(e) if is_lost(&e) => return Err(Failure::Lost(format!("commit: {e}"))),
                    // The partition moved to another member of the group:
                    // that member gets these messages again.
                    Err(e) => {
                        eprintln!(
                            "example_cli: commit of partition {partition} offset {offset}: {}",
                            reason(&e)
                        )
                    }
                }
            }
            if self.done() {
                return Ok(());
            }
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_line() {
        let m: Message = serde_json::from_str(
            r#"{"key":"k","value":{"a":1},"topic":"t","partition":2,"offset":5,"timestamp":1700000000,"metadata":{}}"#,
        )
        .unwrap();
        assert_eq!(
            m.line(),
            r#"message topic=t partition=2 offset=5 timestamp=1700000000 key="k" value={"a":1}"#
        );
        let m: Message = serde_json::from_str(
            r#"{"key":"k","value":"AP8=","value_encoding":"base64","topic":"t","partition":0,"offset":1,"timestamp":1,"metadata":{"trace":"x"}}"#,
        )
        .unwrap();
        assert_eq!(
            m.line(),
            r#"message topic=t partition=0 offset=1 timestamp=1 key="k" metadata={"trace":"x"} value_encoding=base64 value="AP8=""#
        );
    }
}
