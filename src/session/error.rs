//! Everything a command can fail with, and the one place that turns it into
//! a RESP error reply.

use crate::auth::{AuthError, AuthStringError, Role};
use crate::kafka::{ConsumeError, PublishError};
use crate::resp::{Frame, ProtocolError};

#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum CommandError {
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
    #[error("unknown subcommand '{sub}' of '{command}'")]
    UnknownSubcommand { command: &'static str, sub: String },
    #[error("DB index is out of range")]
    DbIndex,
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    #[error("Client names cannot contain spaces, newlines or special characters.")]
    ClientName,
    #[error("max number of clients reached")]
    MaxClients,
    #[error("value is {len} bytes, over the limit of {max}")]
    ValueTooLarge { len: u64, max: u64 },
    #[error("request longer than {max} bytes; it was dropped")]
    RequestTooLong { max: usize },
    #[error("metadata must be a JSON object of string values or a protobuf infra.databus.Header")]
    BadMetadata,
    #[error("publish failed: {0}")]
    Publish(#[from] PublishError),
    #[error("auth failed: {0}")]
    Join(ConsumeError),
    #[error("{0}")]
    Consume(#[from] ConsumeError),
    #[error("MGET takes pb or json, then optionally BLOCK <milliseconds>")]
    BadFormat,
    #[error("BLOCK takes milliseconds from 1 to {}", crate::auth::MAX_WAIT_MS)]
    BadBlock,
    #[error("partition must be a non-negative integer")]
    BadPartition,
    #[error("offset must be a non-negative integer")]
    BadOffset,
    #[error("partition {0} is not assigned to this connection")]
    NotOwned(i32),
    #[error("this connection is a queue consumer (its group is consumed with XREADGROUP here): MGET and SET partition offset need a connection of their own")]
    QueueOnly,
    #[error("this connection consumes with MGET: the stream commands need a connection that has not used MGET or SET")]
    ClassicOnly,
    #[error("No such key '{key}' or consumer group '{group}'{}", .command.map(|c| format!(" in {c} with GROUP option")).unwrap_or_default())]
    NoGroup { key: String, group: String, command: Option<&'static str> },
    #[error("this connection may use stream '{0}' only")]
    OtherStream(String),
    #[error("consumer group '{asked}' is not this connection's: it authenticated for group '{granted}'")]
    OtherGroup { asked: String, granted: String },
    #[error("Invalid stream ID specified as stream command argument")]
    BadStreamId,
    #[error("databus assigns entry IDs (<partition>-<offset>): XADD takes * only")]
    ExplicitId,
    #[error("databus does not trim streams (MAXLEN, MINID): the topic's retention does")]
    Trim,
    #[error("field 'color' is databus's own header: AUTH's color= sets it")]
    ColorField,
    #[error("field names must be UTF-8 (they become Kafka header names)")]
    FieldName,
    #[error("syntax error")]
    Syntax,
    #[error("timeout is not an integer or out of range")]
    BadTimeout,
    #[error("Consumer Group name already exists")]
    BusyGroup,
    #[error("consumers are reading group '{0}' (on this databus or another, or its member lingers queue.linger_ms after the last one left): XGROUP SETID moves its offsets only while nobody reads")]
    GroupReading(String),
    #[error("databus starts a group at 0 (the earliest entry of every partition) or $ (past the latest)")]
    GroupStart,
    #[error("cannot {what}: {cause}")]
    Kafka {
        what: &'static str,
        #[source]
        cause: rdkafka::error::KafkaError,
    },
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Limit(#[from] crate::limits::LimitError),
}

impl CommandError {
    /// The first word of the reply, which clients branch on (as redis-rs's
    /// `ServerErrorKind` reads it): `WRONGPASS` for credentials, `NOPERM` for
    /// what a proven app is not granted, `NOAUTH`, `TRYAGAIN` for what may
    /// succeed later, `NOPROTO`, and `ERR` for the rest.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            CommandError::NoAuth => "NOAUTH",
            CommandError::NoProto => "NOPROTO",
            CommandError::Auth(AuthError::BadCredentials) => "WRONGPASS",
            CommandError::Auth(
                AuthError::GroupNotGranted { .. }
                | AuthError::TopicNotGranted { .. }
                | AuthError::RoleNotAllowed { .. },
            ) => "NOPERM",
            CommandError::Publish(
                PublishError::Timeout { .. } | PublishError::Refused { .. } | PublishError::Closed,
            ) => "TRYAGAIN",
            // The cluster's own ACLs: not granted, as a missing grant is.
            CommandError::Publish(PublishError::Denied { .. })
            | CommandError::Join(ConsumeError::Denied { .. })
            | CommandError::Consume(ConsumeError::Denied { .. }) => "NOPERM",
            CommandError::Join(e) | CommandError::Consume(e) if e.may_pass() => "TRYAGAIN",
            CommandError::MaxClients | CommandError::Kafka { .. } | CommandError::Limit(_) => "TRYAGAIN",
            CommandError::BusyGroup => "BUSYGROUP",
            CommandError::NoGroup { .. } => "NOGROUP",
            CommandError::OtherStream(_) | CommandError::OtherGroup { .. } => "NOPERM",
            _ => "ERR",
        }
    }

    pub(crate) fn to_frame(&self) -> Frame {
        Frame::error(format!("{} {self}", self.code()))
    }
}

/// A command name as it may appear inside an error reply: bounded and
/// printable, since it comes straight from the wire.
pub(crate) fn shown_name(raw: &[u8]) -> String {
    let name: String = String::from_utf8_lossy(&raw[..raw.len().min(64)])
        .chars()
        .map(|c| if c.is_control() || c == '\'' { '?' } else { c })
        .collect();
    name
}
