//! `AUTH <string>`, or `AUTH <username> <string>` as clients that always
//! send a username do; the username is ignored. Any failure closes the
//! connection (HELLO's first refusal aside, see `hello.rs`).

use std::cell::Cell;
use std::sync::Arc;

use crate::auth::{parse_auth_string, AuthStringError, Role};
use crate::kafka::consumer::Member;
use crate::kafka::{ConsumeError, GroupConsumer};
use crate::queue::QueueKey;
use crate::resp::Frame;
use crate::session::publisher::Publisher;
use crate::session::subscriber::Subscriber;
use crate::session::{CommandError, Reply, Session, State};

use super::parse::Args;

/// The AUTH string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Auth<'a>(&'a [u8]);

impl<'a> Auth<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Auth<'a>, CommandError> {
        let mut args = Args::new("auth", args);
        let first = args.next_bytes()?;
        // With a username first: the string is the second.
        let string = args.next_optional().unwrap_or(first);
        args.finish()?;
        Ok(Auth(string))
    }
}

/// The table says AUTH's refusals close the connection (`refusal_closes`)
/// and lets only connections not yet authenticated use it.
pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Auth::parse(args).and_then(|a| try_auth(session, a.0)).into()
}

/// Checks `string` against the grants and takes the role it asks for; the
/// connection stays open whatever the outcome.
pub(crate) fn try_auth(session: &mut Session, string: &[u8]) -> Result<Frame, CommandError> {
    let text = std::str::from_utf8(string).map_err(|_| AuthStringError::NotUtf8)?;
    let req = parse_auth_string(text)?;
    // Registered before the check: a refresh that changes this group
    // after the check then finds this connection and closes it.
    if let Some(r) = &session.registration {
        r.set_group(&req.group);
    }
    let settings = &session.ctx.settings;
    // One table for the check and the join, whatever SIGHUP does meanwhile.
    let clusters = session.ctx.clusters.now();
    let snapshot = session.ctx.auth.snapshot();
    session.app_tried = snapshot.known_app(&req.key).to_owned();
    let checked = snapshot.check(&req, |cluster| clusters.contains_key(cluster));
    let grant = match checked {
        Ok(g) => g,
        Err(e) => {
            log::info!("auth refused for {}: {e}", session.peer);
            return Err(e.into());
        }
    };
    let cluster = grant.cluster.clone();
    let seat = session.ctx.limiter.seat(&req.key, req.role == Role::Sub).map_err(|e| {
        log::info!("auth refused for {}: {e}", session.peer);
        CommandError::Limit(e)
    })?;
    let app = seat.app().clone();
    let state = match req.role {
        Role::Pub => State::Publisher(Publisher {
            app,
            meter: Arc::new(session.ctx.metrics.publisher(
                &req.key,
                &req.group,
                &grant.topic,
                &grant.cluster,
            )),
            cluster: grant.cluster,
            topic: grant.topic,
            color: req.color.clone(),
            max_value_size: settings.max_value_size,
            lane: session.client.id as usize,
            more_input: false,
            held: Cell::new(false),
        }),
        Role::Sub => {
            // A colored subscriber is a group of its own, so it never takes
            // partitions (and their uncolored messages) from the plain one.
            let group = match req.color.as_str() {
                "" => req.group.clone(),
                color => format!("{}-{color}", req.group),
            };
            let queue = QueueKey {
                cluster: grant.cluster.clone(),
                group: group.clone(),
                topic: grant.topic.clone(),
                color: req.color.clone(),
            };
            // While the group is consumed in queue mode here, a newcomer is
            // a queue consumer: joining as a member of its own would take
            // partitions (and their pending entries) from the shared one.
            let (undecided, others_undecided) = session.ctx.queues.undecided(&queue);
            let mut refused = None;
            let consumer = match session.ctx.queues.has(&queue) {
                true => None,
                false => {
                    let member = Member {
                        cluster: &grant.cluster,
                        group: &group,
                        topic: &grant.topic,
                        start: req.offset,
                    };
                    let joined = GroupConsumer::join(
                        &clusters[&grant.cluster],
                        member,
                        &settings.subscriber,
                        &session.ctx.members,
                        session.ctx.metrics.lag(&group, &grant.topic),
                    );
                    match joined {
                        Ok(c) => Some(c),
                        // The group is full, but of connections that may yet
                        // turn to queue mode (which has no such limit): this
                        // one may be a queue consumer too; its MGET gets
                        // the refusal.
                        Err(e @ ConsumeError::GroupFull { .. }) if others_undecided > 0 => {
                            refused = Some(e);
                            None
                        }
                        Err(e) => {
                            log::info!("subscriber {} refused: {e}", session.peer);
                            return Err(CommandError::Join(e));
                        }
                    }
                }
            };
            let mut subscriber = Subscriber::new(
                consumer,
                queue,
                req.offset,
                &req.color,
                req.wait,
                settings.subscriber.clone(),
                session.ctx.metrics.subscriber(&req.key, &group, &grant.topic),
            );
            subscriber.undecided = Some(undecided);
            subscriber.refused = refused;
            State::Subscriber(Box::new(subscriber))
        }
    };
    session.authenticated(state, seat);
    log::info!(
        "auth ok for {}: key={} group={} topic={} role={} color={:?} cluster={cluster}",
        session.peer,
        req.key,
        req.group,
        req.topic,
        req.role,
        req.color
    );
    Ok(Frame::ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn the_string_with_or_without_a_username() {
        let parse = |a: &[&str]| Auth::parse(&args(a)).map(|auth| auth.0.to_vec());
        assert_eq!(parse(&["AUTH", "k:s@g/topic=t&role=pub"]), Ok(b"k:s@g/topic=t&role=pub".to_vec()));
        assert_eq!(parse(&["auth", "default", "k:s@g"]), Ok(b"k:s@g".to_vec()));
        assert_eq!(parse(&["AUTH"]), Err(CommandError::WrongArgs("auth")));
        assert_eq!(parse(&["AUTH", "a", "b", "c"]), Err(CommandError::WrongArgs("auth")));
    }
}
