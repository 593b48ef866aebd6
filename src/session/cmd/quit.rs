//! `QUIT`: `+OK`, then the connection closes.

use crate::resp::Frame;
use crate::session::{Reply, Session};

pub(crate) fn run(session: &mut Session, _: &[Vec<u8>]) -> Reply {
    session.close();
    Reply::Now(Frame::ok())
}
