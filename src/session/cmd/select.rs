//! `SELECT 0`; there is no other database.

use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session};

pub(crate) struct Select(i64);

impl Select {
    pub(crate) fn parse(args: &[Vec<u8>]) -> Result<Select, CommandError> {
        let [_, index] = args else {
            return Err(CommandError::WrongArgs("select"));
        };
        std::str::from_utf8(index)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Select)
            .ok_or(CommandError::NotAnInteger)
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
    }
}
