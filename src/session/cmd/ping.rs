//! `PING [message]`.

use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session};

use super::parse::Args;

/// `PONG`, or the message echoed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ping<'a>(Option<&'a [u8]>);

impl<'a> Ping<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Ping<'a>, CommandError> {
        let mut args = Args::new("ping", args);
        let message = args.next_optional();
        args.finish()?;
        Ok(Ping(message))
    }

    pub(crate) fn apply(self) -> Frame {
        match self.0 {
            Some(message) => Frame::Bulk(message.to_vec()),
            None => Frame::Simple("PONG".into()),
        }
    }
}

pub(crate) fn run(_: &mut Session, args: &[Vec<u8>]) -> Reply {
    Ping::parse(args).map(Ping::apply).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::{args, bulk};

    #[test]
    fn pong_or_the_message() {
        assert_eq!(Ping::parse(&args(&["PING"])).map(Ping::apply), Ok(Frame::Simple("PONG".into())));
        assert_eq!(Ping::parse(&args(&["ping", "hi"])).map(Ping::apply), Ok(bulk("hi")));
        // As Redis answers: one message at most.
        assert_eq!(Ping::parse(&args(&["PING", "a", "b"])), Err(CommandError::WrongArgs("ping")));
    }
}
