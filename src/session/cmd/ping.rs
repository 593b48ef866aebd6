//! `PING [message]`.

use crate::resp::Frame;
use crate::session::{Reply, Session};

/// `PONG`, or the message echoed.
pub(crate) struct Ping<'a>(Option<&'a [u8]>);

impl<'a> Ping<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Ping<'a> {
        match args {
            [_, message] => Ping(Some(message)),
            _ => Ping(None),
        }
    }

    pub(crate) fn apply(self) -> Frame {
        match self.0 {
            Some(message) => Frame::Bulk(message.to_vec()),
            None => Frame::Simple("PONG".into()),
        }
    }
}

pub(crate) fn run(_: &mut Session, args: &[Vec<u8>]) -> Reply {
    Reply::Now(Ping::parse(args).apply())
}
