//! `COMMAND`, `COMMAND COUNT|LIST|INFO name…|DOCS [name…]`: databus's
//! commands, from the table in `commands.rs`.

use crate::resp::Frame;
use crate::session::commands::{lookup, Spec, COMMANDS};
use crate::session::error::shown_name;
use crate::session::setup::ClientInfo;
use crate::session::{CommandError, Reply, Session};

use super::bulk;
use super::parse::Args;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command<'a> {
    All,
    Count,
    List,
    Info(&'a [Vec<u8>]),
    /// Every command's when no names are given.
    Docs(&'a [Vec<u8>]),
}

impl<'a> Command<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Command<'a>, CommandError> {
        let mut args = Args::new("command", args);
        let Some(sub) = args.next_optional() else {
            return Ok(Command::All);
        };
        match sub.to_ascii_lowercase().as_slice() {
            b"count" => args.naming("command|count").finish().map(|()| Command::Count),
            // Redis's FILTERBY is not applied: every command is listed.
            b"list" => Ok(Command::List),
            b"info" => Ok(Command::Info(args.rest())),
            b"docs" => Ok(Command::Docs(args.rest())),
            _ => Err(CommandError::UnknownSubcommand { command: "command", sub: shown_name(sub) }),
        }
    }

    pub(crate) fn apply(self, info: &ClientInfo) -> Frame {
        match self {
            Command::All => Frame::Array(COMMANDS.iter().map(entry).collect()),
            Command::Count => Frame::Integer(COMMANDS.len() as i64),
            Command::List => Frame::Array(COMMANDS.iter().map(|c| bulk(c.text)).collect()),
            Command::Info(names) => {
                Frame::Array(names.iter().map(|n| lookup(n).map_or(Frame::Null, entry)).collect())
            }
            Command::Docs(names) => {
                let chosen: Vec<&Spec> = match names {
                    [] => COMMANDS.iter().collect(),
                    _ => names.iter().filter_map(|n| lookup(n)).collect(),
                };
                let docs = chosen
                    .into_iter()
                    .map(|c| {
                        let doc = info.map(vec![
                            (bulk("summary"), bulk(c.summary)),
                            (bulk("since"), bulk("0.1.0")),
                            (bulk("group"), bulk("databus")),
                        ]);
                        (bulk(c.text), doc)
                    })
                    .collect();
                info.map(docs)
            }
        }
    }
}

/// A command as `COMMAND INFO` describes it.
fn entry(c: &Spec) -> Frame {
    Frame::Array(vec![
        bulk(c.text),
        Frame::Integer(c.arity),
        Frame::Array(c.flags.iter().map(|f| Frame::Simple((*f).to_owned())).collect()),
        Frame::Integer(0),
        Frame::Integer(0),
        Frame::Integer(0),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Command::parse(args).map(|c| c.apply(&session.client)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn command_describes_databus_only() {
        let info = ClientInfo::new(1, "p".into());
        let command = |a: &[&str]| Command::parse(&args(a)).map(|c| c.apply(&info));
        assert_eq!(command(&["COMMAND", "COUNT"]), Ok(Frame::Integer(COMMANDS.len() as i64)));
        let Ok(Frame::Array(all)) = command(&["COMMAND"]) else { panic!() };
        assert_eq!(all.len(), COMMANDS.len());
        let Ok(Frame::Array(one)) = command(&["COMMAND", "INFO", "SET", "flushall"]) else { panic!() };
        assert_eq!(one[1], Frame::Null);
        let Frame::Array(set) = &one[0] else { panic!() };
        assert_eq!((&set[0], &set[1]), (&bulk("set"), &Frame::Integer(3)));
        let Ok(Frame::Array(docs)) = command(&["COMMAND", "DOCS", "mget"]) else { panic!() };
        assert_eq!(docs[0], bulk("mget"));
        assert!(command(&["COMMAND", "GETKEYS"]).is_err());
    }

    #[test]
    fn subcommands() {
        let a = args(&["COMMAND", "INFO", "set", "mget"]);
        assert_eq!(Command::parse(&a), Ok(Command::Info(&a[2..])));
        let a = args(&["command", "docs"]);
        assert_eq!(Command::parse(&a), Ok(Command::Docs(&[])));
        assert_eq!(Command::parse(&args(&["COMMAND"])), Ok(Command::All));
        assert_eq!(Command::parse(&args(&["COMMAND", "list", "FILTERBY", "x"])), Ok(Command::List));
        assert_eq!(Command::parse(&args(&["COMMAND", "Count"])), Ok(Command::Count));
        assert_eq!(
            Command::parse(&args(&["COMMAND", "COUNT", "x"])),
            Err(CommandError::WrongArgs("command|count"))
        );
        assert_eq!(
            Command::parse(&args(&["COMMAND", "GETKEYS", "x"])),
            Err(CommandError::UnknownSubcommand { command: "command", sub: "GETKEYS".into() })
        );
    }
}
