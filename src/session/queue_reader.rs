//! The queue reader role: the first stream command (`XREADGROUP`, `XACK`,
//! `XPENDING`, ...) on a subscriber connection turns it into a
//! [`QueueReader`] of its group's shared member (`queue/`), leaving the
//! Kafka member of its own; `MGET` or a commit first keep it classic. Here
//! too: the check that a command names the connection's own stream and
//! group, and the reply shapes of entries, for every stream command.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::queue::{Attached, Entry, EntryId, JoinWith, QueueKey, Wait};
use crate::resp::Frame;

use super::cmd::bulk;
use super::error::CommandError;
use super::setup::ClientInfo;
use super::{Session, State};

/// A subscriber connection in queue mode.
pub(crate) struct QueueReader {
    /// What the stream commands do to the group goes through it.
    pub attached: Attached,
    /// The auth group, the Redis group name.
    pub group: String,
    /// The granted topic, the stream key.
    pub topic: String,
    pub tick: Duration,
    pub idle_timeout: Duration,
}

impl QueueReader {
    /// The stream and group a command names must be the connection's;
    /// else Redis's answer for a stream or group that does not exist.
    pub(crate) fn check(
        &self,
        key: &[u8],
        group: &[u8],
        command: Option<&'static str>,
    ) -> Result<(), CommandError> {
        if key == self.topic.as_bytes() && group == self.group.as_bytes() {
            return Ok(());
        }
        Err(CommandError::NoGroup { key: shown(key), group: shown(group), command })
    }

    /// Whether `key` and `group` are the connection's (XACK counts 0 otherwise).
    pub(crate) fn is_ours(&self, key: &[u8], group: &[u8]) -> bool {
        key == self.topic.as_bytes() && group == self.group.as_bytes()
    }
}

/// A name from the wire inside an error reply: bounded, printable.
fn shown(raw: &[u8]) -> String {
    super::error::shown_name(raw)
}

/// A connection in queue mode as a stream command sees it: its reader, its
/// client (whose protocol shapes the reply), and whether to stop waiting.
pub(crate) struct QueueSession<'s> {
    pub reader: &'s QueueReader,
    pub client: &'s ClientInfo,
    session: &'s Session,
}

impl<'s> QueueSession<'s> {
    /// How long a read may wait: `block` from now (`None`: not at all),
    /// looking every tick whether the client left or the server wants the
    /// connection to end.
    pub(crate) fn wait(&self, block: Option<Duration>) -> Wait<impl Fn() -> bool + 's> {
        let session = self.session;
        Wait {
            until: block.map(|b| Instant::now() + b),
            tick: self.reader.tick,
            stop: move || session.should_stop(),
        }
    }
}

/// The connection's queue reader, turning a subscriber that has not used
/// `MGET` or a commit into one (it leaves its own group member first).
pub(crate) fn reader(session: &mut Session) -> Result<QueueSession<'_>, CommandError> {
    if let State::Subscriber(s) = &mut session.state {
        if s.classic {
            return Err(CommandError::ClassicOnly);
        }
        // Gone before the shared member joins: its partitions go back.
        s.consumer = None;
        let clusters = session.ctx.clusters.now();
        let key = s.queue.clone();
        let Some(cluster) = clusters.get(&key.cluster) else {
            return Err(CommandError::Unsupported("the grant's cluster is no longer configured"));
        };
        let settings = &session.ctx.settings;
        let join = JoinWith {
            cluster,
            start: s.start,
            subscriber: &settings.subscriber,
            settings: &settings.queue,
            members: &session.ctx.members,
            publish: session.ctx.kafka.clone(),
            meter: session.ctx.metrics.queue(&key.group, &key.topic),
        };
        let attached = match session.ctx.queues.attach(&key, join) {
            Ok(a) => a,
            Err(e) => {
                // Its own member is gone: the connection has nothing left to
                // read with; the client reconnects.
                log::info!("{}: queue consumer refused: {e}", session.peer);
                session.close();
                return Err(CommandError::Consume(e));
            }
        };
        let group = redis_group(&key);
        log::info!("{}: queue consumer of group '{}' on '{}'", session.peer, key.group, key.topic);
        session.state = State::Queue(Box::new(QueueReader {
            attached,
            group,
            topic: key.topic,
            tick: settings.subscriber.tick,
            idle_timeout: settings.subscriber.idle_timeout,
        }));
    }
    if let State::Queue(q) = &session.state {
        if let Some(e) = q.attached.fatal() {
            // The group's member is gone: the client reconnects.
            session.close();
            return Err(CommandError::Consume(e));
        }
    }
    let session: &Session = session;
    match &session.state {
        State::Queue(reader) => Ok(QueueSession { reader, client: &session.client, session }),
        // The command table lets only subscribers through.
        _ => Err(CommandError::NoAuth),
    }
}

/// The group's name as the client knows it: the auth group (the Kafka
/// group of a colored subscriber has the color after it).
pub(crate) fn redis_group(key: &QueueKey) -> String {
    match key.color.as_str() {
        "" => key.group.clone(),
        color => key.group.strip_suffix(&format!("-{color}")).unwrap_or(&key.group).to_owned(),
    }
}

/// The connection's group (its shared member's key, and its name as the
/// client knows it), after checking that `key` and `group` name it;
/// without turning the connection to queue mode.
pub(crate) fn group_of(
    session: &Session,
    key: &[u8],
    group: &[u8],
) -> Result<(QueueKey, String), CommandError> {
    let (queue_key, granted) = match &session.state {
        State::Queue(q) => (q.attached.key().clone(), q.group.clone()),
        State::Subscriber(s) if s.classic => return Err(CommandError::ClassicOnly),
        State::Subscriber(s) => (s.queue.clone(), redis_group(&s.queue)),
        // The command table lets only subscribers through.
        _ => return Err(CommandError::NoAuth),
    };
    if key != queue_key.topic.as_bytes() {
        return Err(CommandError::OtherStream(queue_key.topic));
    }
    if group != granted.as_bytes() {
        return Err(CommandError::OtherGroup { asked: shown(group), granted });
    }
    Ok((queue_key, granted))
}

/// An entry as stream commands reply with it: `[id, [field, value, ...]]`.
pub(crate) fn entry_frame(e: &Entry) -> Frame {
    let fields = e.fields().into_iter().flat_map(|(f, v)| [bulk(f), bulk(v)]).collect();
    Frame::Array(vec![bulk(e.id.to_string()), Frame::Array(fields)])
}

pub(crate) fn entries_frame(entries: &[Arc<Entry>]) -> Frame {
    Frame::Array(entries.iter().map(|e| entry_frame(e)).collect())
}

pub(crate) fn ids_frame(ids: impl Iterator<Item = EntryId>) -> Frame {
    Frame::Array(ids.map(|id| bulk(id.to_string())).collect())
}

/// Null, as the client's protocol writes it.
pub(crate) fn nil(client: &ClientInfo) -> Frame {
    match client.protocol {
        3 => Frame::Null3,
        _ => Frame::Null,
    }
}

/// `XREADGROUP`'s reply: per stream its entries, a map in RESP3; nil when
/// nothing came.
pub(crate) fn streams_frame(
    client: &ClientInfo,
    topic: &str,
    entries: &[Arc<Entry>],
    nil_if_empty: bool,
) -> Frame {
    if entries.is_empty() && nil_if_empty {
        return nil(client);
    }
    let per_stream = (bulk(topic), entries_frame(entries));
    match client.protocol {
        3 => Frame::Map(vec![per_stream]),
        _ => Frame::Array(vec![Frame::Array(vec![per_stream.0, per_stream.1])]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_streams_have_redis_shapes() {
        let e = Arc::new(Entry {
            id: EntryId::of(1, 7),
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            headers: vec![("h".into(), b"x".to_vec())],
        });
        let entry = Frame::Array(vec![
            bulk("1-7"),
            Frame::Array(vec![bulk("key"), bulk("k"), bulk("value"), bulk("v"), bulk("h"), bulk("x")]),
        ]);
        assert_eq!(entry_frame(&e), entry);
        let mut client = ClientInfo::new(1, "p".into());
        assert_eq!(
            streams_frame(&client, "t", std::slice::from_ref(&e), true),
            Frame::Array(vec![Frame::Array(vec![bulk("t"), Frame::Array(vec![entry.clone()])])])
        );
        assert_eq!(streams_frame(&client, "t", &[], true), Frame::Null);
        client.protocol = 3;
        assert_eq!(streams_frame(&client, "t", &[], true), Frame::Null3);
        assert_eq!(
            streams_frame(&client, "t", &[e], true),
            Frame::Map(vec![(bulk("t"), Frame::Array(vec![entry]))])
        );
    }
}
