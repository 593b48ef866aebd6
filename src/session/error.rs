//! Everything a command can fail with, and the one place that turns it into
//! a RESP error reply.

use crate::auth::{AuthError, AuthStringError, Role};
use crate::kafka::{ConsumeError, PublishError};
use crate::resp::{Frame, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("Protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("Authentication required.")]
    NoAuth,
    #[error("authentication timeout")]
    AuthTimeout,
    #[error("invalid auth string: {0} (expected key:secret@group/topic=T&role=pub|sub)")]
    AuthString(#[from] AuthStringError),
    #[error("auth failed: {0}")]
    Auth(#[from] AuthError),
    #[error("grant changed: authenticate again")]
    GrantChanged,
    #[error("HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used")]
    HelloNoAuth,
    #[error("unsupported protocol version")]
    NoProto,
    #[error("syntax error in HELLO option '{0}'")]
    HelloSyntax(String),
    #[error("already authenticated")]
    AlreadyAuthenticated,
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    #[error("command '{command}' not allowed for role {role}")]
    NotAllowed { command: String, role: Role },
    #[error("wrong number of arguments for '{0}' command")]
    WrongArgs(&'static str),
    #[error("value is {len} bytes, over the limit of {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("metadata must be a JSON object of string values or a protobuf infra.databus.Header")]
    BadMetadata,
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    #[error("auth failed: {0}")]
    Join(ConsumeError),
    #[error("{0}")]
    Consume(#[from] ConsumeError),
    #[error("MGET takes pb or json")]
    BadFormat,
    #[error("partition must be a non-negative integer")]
    BadPartition,
    #[error("offset must be a non-negative integer")]
    BadOffset,
    #[error("partition {0} is not assigned to this connection")]
    NotOwned(i32),
}

impl CommandError {
    pub fn to_frame(&self) -> Frame {
        let prefix = match self {
            CommandError::NoAuth | CommandError::HelloNoAuth => "NOAUTH",
            CommandError::NoProto => "NOPROTO",
            _ => "ERR",
        };
        Frame::error(format!("{prefix} {self}"))
    }
}

/// A command name as it may appear inside an error reply: bounded and
/// printable, since it comes straight from the wire.
pub fn shown_name(raw: &[u8]) -> String {
    let name: String = String::from_utf8_lossy(&raw[..raw.len().min(64)])
        .chars()
        .map(|c| if c.is_control() || c == '\'' { '?' } else { c })
        .collect();
    name
}
