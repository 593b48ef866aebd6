//! `SET`: a publisher's `SET key value` produces a record; a subscriber's
//! `SET partition offset` commits that offset of its group.

use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session, State};

pub(crate) struct Set<'a> {
    /// The key, or the partition.
    first: &'a [u8],
    /// The value, or the offset.
    second: &'a [u8],
}

impl<'a> Set<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Set<'a>, CommandError> {
        match args {
            [_, first, second] => Ok(Set { first, second }),
            _ => Err(CommandError::WrongArgs("set")),
        }
    }

    pub(crate) fn apply(self, session: &mut Session) -> Reply {
        let kafka = session.ctx.kafka.as_ref();
        match &mut session.state {
            State::Publisher(p) => {
                let record = p.record(self.first, self.second);
                p.publish(&record, self.second.len(), kafka, "set", |_| Frame::ok())
            }
            State::Subscriber(s) => {
                let reply = s.commit(self.first, self.second);
                if matches!(reply, Err(CommandError::Join(_))) {
                    session.closing = true;
                }
                reply.into()
            }
            State::Queue(_) => Reply::Now(CommandError::QueueOnly.to_frame()),
            State::Unauthenticated => Reply::Now(CommandError::NoAuth.to_frame()),
        }
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    match Set::parse(args) {
        Ok(set) => set.apply(session),
        Err(e) => Reply::Now(e.to_frame()),
    }
}
