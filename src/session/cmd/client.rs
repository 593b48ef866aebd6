//! `CLIENT SETINFO|SETNAME|GETNAME|ID|INFO`, about this connection only.

use crate::resp::Frame;
use crate::session::error::shown_name;
use crate::session::setup::ClientInfo;
use crate::session::{CommandError, Reply, Session};

use super::bulk;
use super::parse::Args;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Client<'a> {
    Id,
    GetName,
    /// An empty name clears it.
    SetName(&'a [u8]),
    SetInfo(LibAttribute, &'a [u8]),
    Info,
}

/// What `CLIENT SETINFO` may set.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LibAttribute {
    Name,
    Version,
}

impl LibAttribute {
    fn parse(raw: &[u8]) -> Result<LibAttribute, CommandError> {
        match raw.to_ascii_lowercase().as_slice() {
            b"lib-name" => Ok(LibAttribute::Name),
            b"lib-ver" => Ok(LibAttribute::Version),
            _ => Err(CommandError::UnknownSubcommand { command: "client setinfo", sub: shown_name(raw) }),
        }
    }
}

/// Names and library attributes: printable ASCII without spaces, as Redis
/// requires.
fn printable(value: &[u8]) -> Result<(), CommandError> {
    match value.iter().all(|b| (b'!'..=b'~').contains(b)) {
        true => Ok(()),
        false => Err(CommandError::ClientName),
    }
}

impl<'a> Client<'a> {
    /// `CLIENT SETNAME name`, also HELLO's `SETNAME`.
    pub(crate) fn set_name(name: &'a [u8]) -> Result<Client<'a>, CommandError> {
        printable(name).map(|()| Client::SetName(name))
    }

    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Client<'a>, CommandError> {
        let mut args = Args::new("client", args);
        let sub = args.next_bytes()?;
        // Each form's arguments are counted before they are checked.
        match sub.to_ascii_lowercase().as_slice() {
            b"id" => args.finish().map(|()| Client::Id),
            b"getname" => args.finish().map(|()| Client::GetName),
            b"info" => args.finish().map(|()| Client::Info),
            b"setname" => {
                let name = args.next_bytes()?;
                args.finish()?;
                Client::set_name(name)
            }
            b"setinfo" => {
                let (attribute, value) = (args.next_bytes()?, args.next_bytes()?);
                args.finish()?;
                printable(value)?;
                Ok(Client::SetInfo(LibAttribute::parse(attribute)?, value))
            }
            _ => Err(CommandError::UnknownSubcommand { command: "client", sub: shown_name(sub) }),
        }
    }

    pub(crate) fn apply(self, info: &mut ClientInfo) -> Frame {
        match self {
            Client::Id => Frame::Integer(info.id as i64),
            Client::GetName => info.name.clone().map_or(Frame::Null, Frame::Bulk),
            Client::SetName(name) => {
                info.name = (!name.is_empty()).then(|| name.to_vec());
                Frame::ok()
            }
            Client::SetInfo(LibAttribute::Name, value) => {
                info.lib_name = Some(value.to_vec());
                Frame::ok()
            }
            Client::SetInfo(LibAttribute::Version, value) => {
                info.lib_ver = Some(value.to_vec());
                Frame::ok()
            }
            Client::Info => {
                let text = |v: &Option<Vec<u8>>| {
                    String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned()
                };
                bulk(format!(
                    "id={} addr={} name={} db=0 resp={} lib-name={} lib-ver={}\n",
                    info.id,
                    info.peer,
                    text(&info.name),
                    info.protocol,
                    text(&info.lib_name),
                    text(&info.lib_ver)
                ))
            }
        }
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Client::parse(args).map(|c| c.apply(&mut session.client)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn client_subcommands() {
        let mut info = ClientInfo::new(7, "127.0.0.1:5000".into());
        let mut client = |a: &[&str]| Client::parse(&args(a)).map(|c| c.apply(&mut info));
        assert_eq!(client(&["CLIENT", "ID"]), Ok(Frame::Integer(7)));
        assert_eq!(client(&["client", "getname"]), Ok(Frame::Null));
        assert_eq!(client(&["client", "setname", "svc-1"]), Ok(Frame::ok()));
        assert_eq!(client(&["client", "getname"]), Ok(bulk("svc-1")));
        assert_eq!(client(&["client", "setname", "a b"]), Err(CommandError::ClientName));
        assert_eq!(client(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]), Ok(Frame::ok()));
        assert_eq!(client(&["CLIENT", "SETINFO", "lib-ver", "8.1.0"]), Ok(Frame::ok()));
        assert_eq!(
            client(&["client", "info"]),
            Ok(bulk("id=7 addr=127.0.0.1:5000 name=svc-1 db=0 resp=2 lib-name=redis-py lib-ver=8.1.0\n"))
        );
        assert_eq!(
            client(&["client", "kill", "x"]).unwrap_err().to_frame(),
            Frame::error("ERR unknown subcommand 'kill' of 'client'")
        );
        assert_eq!(client(&["client", "id", "x"]), Err(CommandError::WrongArgs("client")));
        assert_eq!(client(&["client", "setname", "a b", "c"]), Err(CommandError::WrongArgs("client")));
        assert_eq!(client(&["client", "setinfo", "lib-name"]), Err(CommandError::WrongArgs("client")));
        assert_eq!(client(&["client"]), Err(CommandError::WrongArgs("client")));
        assert_eq!(
            client(&["client", "setinfo", "lib-os", "x"]),
            Err(CommandError::UnknownSubcommand { command: "client setinfo", sub: "lib-os".into() })
        );
        assert_eq!(client(&["client", "setinfo", "lib-os", "a b"]), Err(CommandError::ClientName));
        assert_eq!(client(&["client", "setname", ""]), Ok(Frame::ok()));
        assert_eq!(client(&["client", "getname"]), Ok(Frame::Null));
    }
}
