//! `ECHO message`.

use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session};

pub(crate) struct Echo<'a>(&'a [u8]);

impl<'a> Echo<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Echo<'a>, CommandError> {
        match args {
            [_, message] => Ok(Echo(message)),
            _ => Err(CommandError::WrongArgs("echo")),
        }
    }

    pub(crate) fn apply(self) -> Frame {
        Frame::Bulk(self.0.to_vec())
    }
}

pub(crate) fn run(_: &mut Session, args: &[Vec<u8>]) -> Reply {
    Echo::parse(args).map(Echo::apply).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::{args, bulk};

    #[test]
    fn echoes_one_argument() {
        assert_eq!(Echo::parse(&args(&["ECHO", "hi"])).map(Echo::apply), Ok(bulk("hi")));
        assert_eq!(Echo::parse(&args(&["ECHO"])).err(), Some(CommandError::WrongArgs("echo")));
    }
}
