//! `HELLO [2|3 [AUTH <username> <string>] [SETNAME <name>]]`, which redis-py
//! 8 and go-redis v9 open with: the protocol, optionally an AUTH (the
//! username is ignored), and the server's description. Without AUTH it is
//! answered before authentication too (protocol negotiation only; AUTH is
//! still required for anything else). Every reply databus sends is valid
//! RESP3 too, so protocol 3 changes only the shape of the maps (HELLO's,
//! COMMAND DOCS', CONFIG GET's).

use crate::resp::Frame;
use crate::session::error::shown_name;
use crate::session::{CommandError, Reply, Session};

use super::auth::try_auth;
use super::bulk;
use super::client::Client;
use super::parse::Args;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Hello<'a> {
    /// `None`: keep the connection's.
    proto: Option<i64>,
    /// The AUTH string.
    auth: Option<&'a [u8]>,
    name: Option<&'a [u8]>,
}

impl<'a> Hello<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Hello<'a>, CommandError> {
        let mut args = Args::new("hello", args);
        let proto = match args.next_optional() {
            None => None,
            Some(b"2") => Some(2),
            Some(b"3") => Some(3),
            Some(_) => return Err(CommandError::NoProto),
        };
        let mut hello = Hello { proto, auth: None, name: None };
        while let Some(option) = args.next_optional() {
            let mut value =
                || args.next_optional().ok_or_else(|| CommandError::HelloSyntax(shown_name(option)));
            match option.to_ascii_lowercase().as_slice() {
                b"auth" => {
                    let _username = value()?;
                    hello.auth = Some(value()?);
                }
                b"setname" => hello.name = Some(value()?),
                _ => return Err(CommandError::HelloSyntax(shown_name(option))),
            }
        }
        Ok(hello)
    }

    pub(crate) fn apply(self, session: &mut Session) -> Result<Frame, CommandError> {
        if let Some(string) = self.auth {
            if session.is_authenticated() {
                return Err(CommandError::AlreadyAuthenticated);
            }
            // Refused the first time, the connection stays open (still
            // unauthenticated, the auth timeout running): go-redis v9
            // answers a refused HELLO with a plain `AUTH` of the same
            // password and reports that reply, so it must get WRONGPASS
            // there, not a closed socket. Any later refusal closes the
            // connection, as a refused AUTH always does, so a connection
            // gets two guesses.
            try_auth(session, string).inspect_err(|e| session.hello_auth_refused(e.code()))?;
        }
        if let Some(name) = self.name {
            Client::set_name(name)?.apply(&mut session.client);
        }
        let proto = self.proto.unwrap_or(session.client.protocol);
        session.client.protocol = proto;
        Ok(session.client.map(vec![
            (bulk("server"), bulk("databus")),
            (bulk("version"), bulk(env!("CARGO_PKG_VERSION"))),
            (bulk("proto"), Frame::Integer(proto)),
            (bulk("id"), Frame::Integer(session.client.id as i64)),
            (bulk("mode"), bulk("standalone")),
            (bulk("role"), bulk("master")),
            (bulk("modules"), Frame::Array(Vec::new())),
        ]))
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Hello::parse(args).and_then(|h| h.apply(session)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::request;

    #[test]
    fn protocol_auth_and_name() {
        let parse = |a: &[&str]| Hello::parse(request(a));
        assert_eq!(parse(&["HELLO"]), Ok(Hello { proto: None, auth: None, name: None }));
        assert_eq!(
            parse(&["hello", "3", "auth", "default", "k:s@g", "SETNAME", "svc"]),
            Ok(Hello { proto: Some(3), auth: Some(b"k:s@g"), name: Some(b"svc") })
        );
        assert_eq!(
            parse(&["HELLO", "2", "SETNAME", "n"]).map(|h| (h.proto, h.name)),
            Ok((Some(2), Some(&b"n"[..])))
        );
        assert_eq!(parse(&["HELLO", "4"]), Err(CommandError::NoProto));
        assert_eq!(parse(&["HELLO", "x"]), Err(CommandError::NoProto));
        assert_eq!(parse(&["HELLO", "3", "AUTH", "default"]), Err(CommandError::HelloSyntax("AUTH".into())));
        assert_eq!(parse(&["HELLO", "3", "setname"]), Err(CommandError::HelloSyntax("setname".into())));
        assert_eq!(parse(&["HELLO", "3", "other"]), Err(CommandError::HelloSyntax("other".into())));
    }
}
