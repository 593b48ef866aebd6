//! `SELECT 0`; there is no other database.

use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session};

use super::parse::Args;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Select(i64);

impl Select {
    pub(crate) fn parse(args: &[Vec<u8>]) -> Result<Select, CommandError> {
        let mut args = Args::new("select", args);
        let index = args.next_integer(CommandError::NotAnInteger)?;
        args.finish()?;
        Ok(Select(index))
    }

    pub(crate) fn apply(self) -> Result<Frame, CommandError> {
        match self.0 {
            0 => Ok(Frame::ok()),
            _ => Err(CommandError::DbIndex),
        }
    }
}

pub(crate) fn run(_: &mut Session, args: &[Vec<u8>]) -> Reply {
    Select::parse(args).and_then(Select::apply).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn only_database_zero() {
        let select = |a: &[&str]| Select::parse(&args(a)).and_then(Select::apply);
        assert_eq!(select(&["SELECT", "0"]), Ok(Frame::ok()));
        assert_eq!(select(&["SELECT", "1"]), Err(CommandError::DbIndex));
        assert_eq!(select(&["SELECT", "x"]), Err(CommandError::NotAnInteger));
        assert_eq!(select(&["SELECT"]), Err(CommandError::WrongArgs("select")));
        assert_eq!(select(&["SELECT", "0", "1"]), Err(CommandError::WrongArgs("select")));
        assert_eq!(Select::parse(&args(&["select", "-3"])), Ok(Select(-3)));
    }
}
