//! `HELLO [2|3 [AUTH <username> <string>] [SETNAME <name>]]`, which redis-py
//! 8 and go-redis v9 open with: the protocol, optionally an AUTH (the
//! username is ignored), and the server's description. Without AUTH it is
//! answered before authentication too (protocol negotiation only; AUTH is
//! still required for anything else). Every reply databus sends is valid
//! RESP3 too, so protocol 3 changes only the shape of the maps (HELLO's,
//! COMMAND DOCS', CONFIG GET's).

use crate::resp::Frame;
use crate::session::error::shown_name;
use crate::session::{CommandError, Reply, Session, State};

use super::auth::{auth, try_auth};
use super::bulk;
use super::client::Client;

pub(crate) struct Hello<'a> {
    /// `None`: keep the connection's.
    proto: Option<i64>,
    /// The AUTH string.
    auth: Option<&'a [u8]>,
    name: Option<&'a [u8]>,
}

impl<'a> Hello<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Hello<'a>, CommandError> {
        let proto = match args.get(1) {
            None => None,
            Some(v) => match v.as_slice() {
                b"2" => Some(2),
                b"3" => Some(3),
                _ => return Err(CommandError::NoProto),
            },
        };
        let mut hello = Hello { proto, auth: None, name: None };
        let mut rest = args.get(2..).unwrap_or_default();
        while let Some(option) = rest.first() {
            match (option.to_ascii_lowercase().as_slice(), rest) {
                (b"auth", [_, _user, pass, tail @ ..]) => {
                    hello.auth = Some(pass);
                    rest = tail;
                }
                (b"setname", [_, n, tail @ ..]) => {
                    hello.name = Some(n);
                    rest = tail;
                }
                _ => return Err(CommandError::HelloSyntax(shown_name(option))),
            }
        }
        Ok(hello)
    }

    pub(crate) fn apply(self, session: &mut Session) -> Result<Frame, CommandError> {
        match (&session.state, self.auth) {
            // Refused the first time, the connection stays open (still
            // unauthenticated, the auth timeout running): go-redis v9 answers
            // a refused HELLO with a plain `AUTH` of the same password and
            // reports that reply, so it must get WRONGPASS there, not a
            // closed socket. Any later refusal closes the connection, as a
            // refused AUTH always does, so a connection gets two guesses.
            (State::Unauthenticated, Some(auth)) if !session.hello_refused => {
                session.hello_refused = true;
                try_auth(session, auth).inspect_err(|e| session.ctx.metrics.refused(e.code()))?;
            }
            (State::Unauthenticated, Some(string)) => {
                auth(session, string)?;
            }
            (State::Publisher(_) | State::Subscriber(_) | State::Queue(_), Some(_)) => {
                return Err(CommandError::AlreadyAuthenticated)
            }
            (_, None) => {}
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
