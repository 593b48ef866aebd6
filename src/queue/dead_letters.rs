//! The group's dead-letter thread: entries past `queue.max_deliveries`
//! are produced to the dead-letter topic with where they came from, and
//! acknowledged once it has them (or handed out again if it refused).

use std::sync::{mpsc, Arc};

use crate::kafka::{publish, Publish, Record};

use super::book::Entry;
use super::group::Shared;
use super::QueueKey;

/// The group's dead-letter thread: produces the entries past their
/// deliveries and waits for the broker's verdict, off every command's
/// reply path (a broker down holds it for the produce timeout). A record's
/// delivery stays on the thread that produced it.
pub(super) struct DeadLetters {
    pub(super) shared: Arc<Shared>,
    pub(super) key: QueueKey,
    pub(super) publish: Arc<dyn Publish>,
    pub(super) topic: String,
}

impl DeadLetters {
    /// Until the group's [`QueueGroup`](super::QueueGroup) (the sender) is gone.
    pub(super) fn run(self, letters: mpsc::Receiver<Vec<Arc<Entry>>>) {
        for entries in letters {
            self.send(entries);
        }
    }

    fn send(&self, entries: Vec<Arc<Entry>>) {
        let mut sent = Vec::new();
        for e in entries {
            let mut headers = e.headers.clone();
            let (partition, offset) = e.id.record().unwrap_or_default();
            headers.push(("databus-dead-letter-topic".into(), self.key.topic.as_bytes().to_vec()));
            headers.push(("databus-dead-letter-partition".into(), partition.to_string().into_bytes()));
            headers.push(("databus-dead-letter-offset".into(), offset.to_string().into_bytes()));
            headers.push(("databus-dead-letter-group".into(), self.key.group.as_bytes().to_vec()));
            let record = Record::new(&self.topic, &e.key, &e.value).color(&self.key.color).fields(&headers);
            let record = if e.key.is_empty() { record.keyless() } else { record };
            match publish(self.publish.as_ref(), &self.key.cluster, 0, &record, None) {
                Ok(d) => sent.push((e.id, d)),
                Err(err) => {
                    log::warn!("dead letter {} of '{}' refused: {err}", e.id, self.key.topic);
                    self.shared.book().dead_lettered(e.id, false);
                }
            }
        }
        for (id, d) in sent {
            let stored = match d.wait() {
                Ok(_) => true,
                Err(e) => {
                    log::warn!("dead letter {id} of '{}' not stored: {e}", self.key.topic);
                    false
                }
            };
            self.shared.book().dead_lettered(id, stored);
        }
        self.shared.more.notify_all();
    }
}
