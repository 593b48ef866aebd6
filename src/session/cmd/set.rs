//! `SET`: a publisher's `SET key value` produces a record; a subscriber's
//! `SET partition offset` commits that offset of its group.

use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session, State};

use super::parse::Args;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Set<'a> {
    /// The key, or the partition.
    first: &'a [u8],
    /// The value, or the offset.
    second: &'a [u8],
}

impl<'a> Set<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Set<'a>, CommandError> {
        let mut args = Args::new("set", args);
        let (first, second) = (args.next_bytes()?, args.next_bytes()?);
        args.finish()?;
        Ok(Set { first, second })
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
                    session.close();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn two_arguments() {
        assert_eq!(Set::parse(&args(&["SET", "k", "v"])), Ok(Set { first: b"k", second: b"v" }));
        assert_eq!(Set::parse(&args(&["set", "k"])), Err(CommandError::WrongArgs("set")));
        assert_eq!(Set::parse(&args(&["set", "k", "v", "EX", "1"])), Err(CommandError::WrongArgs("set")));
    }
}
