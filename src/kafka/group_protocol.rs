//! Whether a cluster set to `group_protocol = "consumer"` serves KIP-848's
//! consumer group protocol. Kafka 3.9 lists the heartbeat API but serves it
//! only as a preview (it answers UNSUPPORTED_VERSION), and a 4.x cluster
//! left at `group.version` 0 does not serve it either; librdkafka's member
//! then waits for ever with nothing said. So before a member joins, one of
//! the cluster's brokers is asked (ApiVersions, on databus's own connection
//! with the cluster's TLS and SASL), and the answer is kept a while.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::consumer::ConsumeError;
use super::produce::wire::{Conn, Security};
use super::{Cluster, GroupProtocol};

/// How long the brokers may take to connect, log in and answer, in all.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer is kept: an operator who upgrades the cluster's
/// `group.version` is heard within it.
const KEPT: Duration = Duration::from_secs(30);

/// A cluster as its answer is kept: its name and brokers.
type Asked = (String, Vec<String>);

/// What each cluster answered: when, and whether it serves the protocol.
static ANSWERS: Mutex<BTreeMap<Asked, (Instant, bool)>> = Mutex::new(BTreeMap::new());

/// Whether one of the cluster's brokers says it serves the consumer
/// protocol (see [`super::produce::wire::serves_consumer_groups`]); `Err`
/// with the last broker's failure when none answers within `ASK_TIMEOUT`
/// in all.
pub(crate) fn served(cluster: &Cluster) -> Result<bool, String> {
    let security = Security::of(cluster)?;
    let deadline = Instant::now() + ASK_TIMEOUT;
    let mut failure = String::from("no brokers configured");
    for broker in &cluster.brokers {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match Conn::open(broker, &security, left) {
            Ok(conn) => return Ok(conn.versions.consumer_groups),
            Err(e) => failure = e.to_string(),
        }
    }
    Err(failure)
}

/// `Err` when the cluster is set to the consumer protocol and its brokers
/// do not serve it; said once in the log each time the answer turns so.
/// A cluster that cannot be asked (unreachable, or a login only
/// librdkafka speaks) passes: its consumers report what they meet.
pub(crate) fn require(name: &str, cluster: &Cluster) -> Result<(), ConsumeError> {
    if cluster.group_protocol != GroupProtocol::Consumer {
        return Ok(());
    }
    let key = (name.to_owned(), cluster.brokers.clone());
    let kept = ANSWERS.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
    let serves = match kept {
        Some((asked, serves)) if asked.elapsed() < KEPT => serves,
        _ => match served(cluster) {
            Ok(serves) => {
                keep(name, cluster, serves);
                serves
            }
            // Kept as a pass too, so that an unreachable cluster costs one
            // member's join `ASK_TIMEOUT`, not every member's.
            Err(why) => {
                log::debug!("cannot ask cluster '{name}' which group protocols it serves: {why}");
                keep(name, cluster, true);
                true
            }
        },
    };
    match serves {
        true => Ok(()),
        false => Err(unsupported(name)),
    }
}

/// Keeps the cluster's answer; logs the refusal when it turns so.
fn keep(name: &str, cluster: &Cluster, serves: bool) {
    let key = (name.to_owned(), cluster.brokers.clone());
    let was = ANSWERS.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (Instant::now(), serves));
    if !serves && was.is_none_or(|(_, served)| served) {
        log::error!("{}", unsupported(name));
    }
}

/// A member's heartbeat was refused as unsupported (a cluster that could
/// not be asked, or one whose brokers list the protocol but do not serve
/// it): the cluster is taken not to serve it, and the refusal returned.
pub(crate) fn refused(name: &str, cluster: &Cluster) -> ConsumeError {
    keep(name, cluster, false);
    unsupported(name)
}

/// The refusal of a cluster that does not serve the consumer protocol.
pub(crate) fn unsupported(name: &str) -> ConsumeError {
    ConsumeError::GroupProtocol { cluster: name.to_owned() }
}
