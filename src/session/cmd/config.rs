//! `CONFIG GET pattern…` answers nothing: databus is configured by its file.

use crate::resp::Frame;
use crate::session::error::shown_name;
use crate::session::setup::ClientInfo;
use crate::session::{CommandError, Reply, Session};

use super::parse::Args;

/// `CONFIG GET`, whatever the patterns.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConfigGet;

impl ConfigGet {
    pub(crate) fn parse(args: &[Vec<u8>]) -> Result<ConfigGet, CommandError> {
        let mut args = Args::new("config", args);
        let sub = args.next_bytes()?;
        if !sub.eq_ignore_ascii_case(b"get") {
            return Err(CommandError::UnknownSubcommand { command: "config", sub: shown_name(sub) });
        }
        // At least one pattern; whichever, nothing matches.
        let mut patterns = args.naming("config|get");
        patterns.next_bytes()?;
        patterns.rest();
        Ok(ConfigGet)
    }

    pub(crate) fn apply(self, info: &ClientInfo) -> Frame {
        info.map(Vec::new())
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    ConfigGet::parse(args).map(|c| c.apply(&session.client)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn config_get_answers_an_empty_map() {
        let mut info = ClientInfo::new(1, "p".into());
        let config = |a: &[&str], info: &ClientInfo| ConfigGet::parse(&args(a)).map(|c| c.apply(info));
        assert_eq!(config(&["CONFIG", "GET", "*"], &info), Ok(Frame::Array(Vec::new())));
        info.protocol = 3;
        assert_eq!(config(&["config", "get", "maxmemory"], &info), Ok(Frame::Map(Vec::new())));
        assert_eq!(config(&["CONFIG", "GET"], &info), Err(CommandError::WrongArgs("config|get")));
        assert_eq!(config(&["CONFIG"], &info), Err(CommandError::WrongArgs("config")));
        assert_eq!(ConfigGet::parse(&args(&["config", "Get", "a", "b"])), Ok(ConfigGet));
        assert_eq!(
            ConfigGet::parse(&args(&["CONFIG", "SET", "a", "b"])),
            Err(CommandError::UnknownSubcommand { command: "config", sub: "SET".into() })
        );
    }
}
