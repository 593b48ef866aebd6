//! `MGET [json|pb] [BLOCK ms]`: a subscriber's next batch of messages.

use std::time::Duration;

use crate::session::connection::HangUpWatch;
use crate::session::subscriber::{mget_args, Format};
use crate::session::{CommandError, Reply, Session, State};

pub(crate) struct Mget {
    format: Format,
    /// The call's own wait, if it names one.
    wait: Option<Duration>,
}

impl Mget {
    pub(crate) fn parse(args: &[Vec<u8>]) -> Result<Mget, CommandError> {
        mget_args(args).map(|(format, wait)| Mget { format, wait })
    }

    pub(crate) fn apply(self, session: &mut Session) -> Reply {
        if matches!(session.state, State::Queue(_)) {
            return Reply::Now(CommandError::QueueOnly.to_frame());
        }
        let State::Subscriber(s) = &mut session.state else {
            // The command table lets only subscribers through.
            return Reply::Now(CommandError::NoAuth.to_frame());
        };
        let hang_up = &session.hang_up;
        let hung_up = || hang_up.as_ref().is_some_and(HangUpWatch::hung_up);
        let reply = s.mget(self.format, self.wait, &session.interrupt, &hung_up);
        if matches!(reply, Err(CommandError::Join(_))) {
            session.closing = true;
        }
        reply.into()
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    match Mget::parse(args) {
        Ok(mget) => mget.apply(session),
        Err(e) => Reply::Now(e.to_frame()),
    }
}
