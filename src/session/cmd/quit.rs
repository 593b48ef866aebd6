//! `QUIT`: `+OK`, then the connection closes. Like Redis, it takes no
//! arguments and ignores any it is given: a client on its way out is not
//! told it spelled goodbye wrong.

use crate::resp::Frame;
use crate::session::{Reply, Session};

pub(crate) struct Quit;

impl Quit {
    pub(crate) fn parse(_args: &[Vec<u8>]) -> Quit {
        Quit
    }

    pub(crate) fn apply(self, session: &mut Session) -> Frame {
        session.close();
        Frame::ok()
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Reply::Now(Quit::parse(args).apply(session))
}
