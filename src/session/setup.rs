//! The connection-setup commands that Redis clients send on their own,
//! answered before AUTH as well as after, so that every mainstream client
//! connects its default way: `CLIENT SETINFO|SETNAME|GETNAME|ID|INFO`,
//! `SELECT 0`, `ECHO`, `COMMAND [COUNT|DOCS|INFO|LIST]`, `CONFIG GET` and
//! `INFO [server]`. (`HELLO`, which may carry an AUTH, lives with the
//! session.) They describe databus and this connection only, never apps,
//! groups, topics or other connections.

use crate::resp::Frame;

use super::commands::{lookup, Spec, COMMANDS};
use super::error::{shown_name, CommandError};

/// What a client told about itself, and the protocol it chose.
#[derive(Debug, Clone)]
pub(crate) struct ClientInfo {
    pub id: u64,
    pub peer: String,
    pub name: Option<Vec<u8>>,
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
    /// 2 or 3, as `HELLO` set it.
    pub protocol: i64,
}

impl ClientInfo {
    pub(crate) fn new(id: u64, peer: String) -> ClientInfo {
        ClientInfo { id, peer, name: None, lib_name: None, lib_ver: None, protocol: 2 }
    }

    /// A map in RESP3, the flat array of RESP2 otherwise.
    pub(crate) fn map(&self, pairs: Vec<(Frame, Frame)>) -> Frame {
        if self.protocol == 3 {
            Frame::Map(pairs)
        } else {
            Frame::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        }
    }
}

fn bulk(s: impl AsRef<[u8]>) -> Frame {
    Frame::Bulk(s.as_ref().to_vec())
}

/// `ECHO message`.
pub(crate) fn echo(args: &[Vec<u8>]) -> Result<Frame, CommandError> {
    match args {
        [_, message] => Ok(Frame::Bulk(message.clone())),
        _ => Err(CommandError::WrongArgs("echo")),
    }
}

/// `SELECT 0`; there is no other database.
pub(crate) fn select(args: &[Vec<u8>]) -> Result<Frame, CommandError> {
    let [_, index] = args else {
        return Err(CommandError::WrongArgs("select"));
    };
    let index: i64 =
        std::str::from_utf8(index).ok().and_then(|s| s.parse().ok()).ok_or(CommandError::NotAnInteger)?;
    if index == 0 {
        Ok(Frame::ok())
    } else {
        Err(CommandError::DbIndex)
    }
}

/// `CLIENT SETINFO|SETNAME|GETNAME|ID|INFO`.
pub(crate) fn client(args: &[Vec<u8>], info: &mut ClientInfo) -> Result<Frame, CommandError> {
    let Some(sub) = args.get(1) else {
        return Err(CommandError::WrongArgs("client"));
    };
    let unknown = || CommandError::UnknownSubcommand { command: "client", sub: shown_name(sub) };
    match (sub.to_ascii_lowercase().as_slice(), &args[2..]) {
        (b"id", []) => Ok(Frame::Integer(info.id as i64)),
        (b"getname", []) => Ok(info.name.clone().map_or(Frame::Null, Frame::Bulk)),
        (b"setname", [name]) => {
            if !name.iter().all(|b| (b'!'..=b'~').contains(b)) {
                return Err(CommandError::ClientName);
            }
            info.name = (!name.is_empty()).then(|| name.clone());
            Ok(Frame::ok())
        }
        (b"setinfo", [attribute, value]) => {
            if !value.iter().all(|b| (b'!'..=b'~').contains(b)) {
                return Err(CommandError::ClientName);
            }
            match attribute.to_ascii_lowercase().as_slice() {
                b"lib-name" => info.lib_name = Some(value.clone()),
                b"lib-ver" => info.lib_ver = Some(value.clone()),
                _ => {
                    return Err(CommandError::UnknownSubcommand {
                        command: "client setinfo",
                        sub: shown_name(attribute),
                    })
                }
            }
            Ok(Frame::ok())
        }
        (b"info", []) => {
            let text =
                |v: &Option<Vec<u8>>| String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned();
            Ok(bulk(format!(
                "id={} addr={} name={} db=0 resp={} lib-name={} lib-ver={}\n",
                info.id,
                info.peer,
                text(&info.name),
                info.protocol,
                text(&info.lib_name),
                text(&info.lib_ver)
            )))
        }
        (b"id" | b"getname" | b"setname" | b"setinfo" | b"info", _) => Err(CommandError::WrongArgs("client")),
        _ => Err(unknown()),
    }
}

fn command_entry(c: &Spec) -> Frame {
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

/// `COMMAND`, `COMMAND COUNT|LIST|INFO name…|DOCS [name…]`.
pub(crate) fn command(args: &[Vec<u8>], info: &ClientInfo) -> Result<Frame, CommandError> {
    let Some(sub) = args.get(1) else {
        return Ok(Frame::Array(COMMANDS.iter().map(command_entry).collect()));
    };
    let names = &args[2..];
    match sub.to_ascii_lowercase().as_slice() {
        b"count" => Ok(Frame::Integer(COMMANDS.len() as i64)),
        b"list" => Ok(Frame::Array(COMMANDS.iter().map(|c| bulk(c.text)).collect())),
        b"info" => {
            Ok(Frame::Array(names.iter().map(|n| lookup(n).map_or(Frame::Null, command_entry)).collect()))
        }
        b"docs" => {
            let chosen: Vec<_> = if names.is_empty() {
                COMMANDS.iter().collect()
            } else {
                names.iter().filter_map(|n| lookup(n)).collect()
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
            Ok(info.map(docs))
        }
        _ => Err(CommandError::UnknownSubcommand { command: "command", sub: shown_name(sub) }),
    }
}

/// `CONFIG GET pattern…` answers nothing: databus is configured by its file.
pub(crate) fn config(args: &[Vec<u8>], info: &ClientInfo) -> Result<Frame, CommandError> {
    match args.get(1).map(|s| s.to_ascii_lowercase()) {
        Some(sub) if sub == b"get" && args.len() > 2 => Ok(info.map(Vec::new())),
        Some(sub) if sub == b"get" => Err(CommandError::WrongArgs("config|get")),
        Some(_) => Err(CommandError::UnknownSubcommand { command: "config", sub: shown_name(&args[1]) }),
        None => Err(CommandError::WrongArgs("config")),
    }
}

/// `INFO [section…]`: the server section (and `loading:0`, which some
/// clients wait for) by default; other sections are empty.
pub(crate) fn info(args: &[Vec<u8>]) -> Frame {
    let sections: Vec<Vec<u8>> = args[1..].iter().map(|s| s.to_ascii_lowercase()).collect();
    let wants = |name: &[u8]| {
        sections.is_empty()
            || sections.iter().any(|s| s == name || s == b"all" || s == b"default" || s == b"everything")
    };
    let mut text = String::new();
    if wants(b"server") {
        text += &format!(
            "# Server\r\nserver_name:databus\r\ndatabus_version:{}\r\nredis_mode:standalone\r\narch_bits:{}\r\nprocess_id:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            usize::BITS,
            std::process::id()
        );
    }
    if wants(b"persistence") {
        text += "\r\n# Persistence\r\nloading:0\r\n";
    }
    bulk(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn client_subcommands() {
        let mut info = ClientInfo::new(7, "127.0.0.1:5000".into());
        assert_eq!(client(&args(&["CLIENT", "ID"]), &mut info), Ok(Frame::Integer(7)));
        assert_eq!(client(&args(&["client", "getname"]), &mut info), Ok(Frame::Null));
        assert_eq!(client(&args(&["client", "setname", "svc-1"]), &mut info), Ok(Frame::ok()));
        assert_eq!(client(&args(&["client", "getname"]), &mut info), Ok(bulk("svc-1")));
        assert_eq!(client(&args(&["client", "setname", "a b"]), &mut info), Err(CommandError::ClientName));
        assert_eq!(client(&args(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]), &mut info), Ok(Frame::ok()));
        assert_eq!(client(&args(&["CLIENT", "SETINFO", "lib-ver", "8.1.0"]), &mut info), Ok(Frame::ok()));
        assert_eq!(
            client(&args(&["client", "info"]), &mut info),
            Ok(bulk("id=7 addr=127.0.0.1:5000 name=svc-1 db=0 resp=2 lib-name=redis-py lib-ver=8.1.0\n"))
        );
        assert_eq!(
            client(&args(&["client", "kill", "x"]), &mut info).unwrap_err().to_frame(),
            Frame::error("ERR unknown subcommand 'kill' of 'client'")
        );
        assert_eq!(client(&args(&["client", "id", "x"]), &mut info), Err(CommandError::WrongArgs("client")));
    }

    #[test]
    fn select_echo_config_info() {
        assert_eq!(select(&args(&["SELECT", "0"])), Ok(Frame::ok()));
        assert_eq!(
            select(&args(&["SELECT", "1"])).unwrap_err().to_frame(),
            Frame::error("ERR DB index is out of range")
        );
        assert_eq!(select(&args(&["SELECT", "x"])), Err(CommandError::NotAnInteger));
        assert_eq!(echo(&args(&["ECHO", "hi"])), Ok(bulk("hi")));
        let mut info = ClientInfo::new(1, "p".into());
        assert_eq!(config(&args(&["CONFIG", "GET", "*"]), &info), Ok(Frame::Array(Vec::new())));
        info.protocol = 3;
        assert_eq!(config(&args(&["config", "get", "maxmemory"]), &info), Ok(Frame::Map(Vec::new())));
        assert!(config(&args(&["CONFIG", "SET", "a", "b"]), &info).is_err());
        let Frame::Bulk(text) = super::info(&args(&["INFO"])) else { panic!() };
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("# Server\r\nserver_name:databus\r\ndatabus_version:0.1.0\r\n"), "{text}");
        assert!(text.contains("loading:0"), "{text}");
        assert_eq!(super::info(&args(&["INFO", "keyspace"])), bulk(""));
    }

    #[test]
    fn command_describes_databus_only() {
        let info = ClientInfo::new(1, "p".into());
        assert_eq!(command(&args(&["COMMAND", "COUNT"]), &info), Ok(Frame::Integer(COMMANDS.len() as i64)));
        let Ok(Frame::Array(all)) = command(&args(&["COMMAND"]), &info) else { panic!() };
        assert_eq!(all.len(), COMMANDS.len());
        let Ok(Frame::Array(one)) = command(&args(&["COMMAND", "INFO", "SET", "flushall"]), &info) else {
            panic!()
        };
        assert_eq!(one[1], Frame::Null);
        let Frame::Array(set) = &one[0] else { panic!() };
        assert_eq!((&set[0], &set[1]), (&bulk("set"), &Frame::Integer(3)));
        let Ok(Frame::Array(docs)) = command(&args(&["COMMAND", "DOCS", "mget"]), &info) else { panic!() };
        assert_eq!(docs[0], bulk("mget"));
    }
}
