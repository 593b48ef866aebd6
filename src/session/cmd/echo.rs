//! `ECHO message`.

use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session};

use super::parse::Args;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Echo<'a>(&'a [u8]);

impl<'a> Echo<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Echo<'a>, CommandError> {
        let mut args = Args::new("echo", args);
        let message = args.next_bytes()?;
        args.finish()?;
        Ok(Echo(message))
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
        assert_eq!(Echo::parse(&args(&["ECHO"])), Err(CommandError::WrongArgs("echo")));
        assert_eq!(Echo::parse(&args(&["ECHO", "a", "b"])), Err(CommandError::WrongArgs("echo")));
    }
}
