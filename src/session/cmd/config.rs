//! `CONFIG GET pattern…` answers nothing: databus is configured by its file.

use crate::resp::Frame;
use crate::session::error::shown_name;
use crate::session::setup::ClientInfo;
use crate::session::{CommandError, Reply, Session};

/// `CONFIG GET`, whatever the patterns.
pub(crate) struct ConfigGet;

impl ConfigGet {
    pub(crate) fn parse(args: &[Vec<u8>]) -> Result<ConfigGet, CommandError> {
        match args.get(1).map(|s| s.to_ascii_lowercase()) {
            Some(sub) if sub == b"get" && args.len() > 2 => Ok(ConfigGet),
            Some(sub) if sub == b"get" => Err(CommandError::WrongArgs("config|get")),
            Some(_) => Err(CommandError::UnknownSubcommand { command: "config", sub: shown_name(&args[1]) }),
            None => Err(CommandError::WrongArgs("config")),
        }
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
        assert!(config(&["CONFIG", "SET", "a", "b"], &info).is_err());
        assert_eq!(config(&["CONFIG", "GET"], &info), Err(CommandError::WrongArgs("config|get")));
    }
}
