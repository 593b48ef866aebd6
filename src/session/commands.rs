//! databus's commands, one table: each command's name, arity, flags, who may
//! use it, what a refusal does, where a publisher's value is, its one-line
//! summary and how it runs
//! (`cmd/`). The table drives dispatch (which command a request names,
//! whether its sender may use it: `NOAUTH` before AUTH, "not allowed for
//! role" after, "already authenticated" for AUTH again; whether it has
//! enough arguments, by Redis's arity; and the command's `run`), the
//! `COMMAND` replies and the metric labels. AUTH's refusals, a wrong
//! arity included, close the connection: its `refusal_closes` says so.

use crate::auth::Role;

use super::cmd;
use super::error::{shown_name, CommandError};
use super::{Reply, Session};

/// How a command is carried out: parsed from the request's arguments and
/// applied to the session (one file each in `cmd/`).
pub(crate) type Run = fn(&mut Session, &[Vec<u8>]) -> Reply;

/// Who may use a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    /// Anyone, authenticated or not.
    Anyone,
    /// A connection not authenticated yet; after AUTH, "already
    /// authenticated".
    Unauthenticated,
    /// A connection authenticated with one of these roles.
    Roles(&'static [Role]),
}

/// One command as the table declares it.
pub(crate) struct Spec {
    /// Lower case, as `COMMAND` and the metrics show it.
    pub text: &'static str,
    /// Arguments including the name; negative: at least that many.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub who: Who,
    /// An error reply closes the connection after it is sent, counted as a
    /// refused authentication (AUTH: a stranger gets one guess).
    pub refusal_closes: bool,
    /// The argument that holds a publisher's value (SET's 2, HSET's 3): a
    /// request dropped for its length gets the value's size error there.
    pub value_at: Option<usize>,
    pub summary: &'static str,
    pub run: Run,
}

impl Spec {
    /// Whether a request of `len` arguments (the name included) has the
    /// arity the table gives; Redis's error if not.
    pub(crate) fn check_arity(&self, len: usize) -> Result<(), CommandError> {
        let len = len as i64;
        match self.arity {
            exact if exact >= 0 && len == exact => Ok(()),
            at_least if at_least < 0 && len >= -at_least => Ok(()),
            _ => Err(CommandError::WrongArgs(self.text)),
        }
    }
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec").field("text", &self.text).field("arity", &self.arity).finish()
    }
}

/// Flags of the commands that need no AUTH, as `COMMAND` shows them.
const NO_AUTH: &[&str] = &["fast", "no-auth", "loading", "stale"];
const PUB: &[Role] = &[Role::Pub];
const SUB: &[Role] = &[Role::Sub];
const PUB_OR_SUB: &[Role] = &[Role::Pub, Role::Sub];

pub(crate) const COMMANDS: &[Spec] = &[
    Spec {
        text: "auth",
        arity: -2,
        flags: NO_AUTH,
        who: Who::Unauthenticated,
        value_at: None,
        refusal_closes: true,
        summary: "Authenticates: AUTH key:secret@group/topic=T&role=pub|sub",
        run: cmd::auth::run,
    },
    Spec {
        text: "hello",
        arity: -1,
        flags: NO_AUTH,
        who: Who::Anyone,
        value_at: None,
        refusal_closes: false,
        summary: "Chooses protocol 2 or 3, optionally with AUTH and SETNAME",
        run: cmd::hello::run,
    },
    Spec {
        text: "ping",
        arity: -1,
        flags: NO_AUTH,
        who: Who::Anyone,
        value_at: None,
        refusal_closes: false,
        summary: "Answers PONG, or echoes its argument",
        run: cmd::ping::run,
    },
    Spec {
        text: "quit",
        arity: -1,
        flags: NO_AUTH,
        who: Who::Anyone,
        value_at: None,
        refusal_closes: false,
        summary: "Closes the connection",
        run: cmd::quit::run,
    },
    Spec {
        text: "echo",
        arity: 2,
        flags: NO_AUTH,
        who: Who::Anyone,
        value_at: None,
        refusal_closes: false,
        summary: "Echoes its argument",
        run: cmd::echo::run,
    },
    Spec {
        text: "client",
        arity: -2,
        flags: NO_AUTH,
        who: Who::Anyone,
        value_at: None,
        refusal_closes: false,
        summary: "CLIENT SETINFO|SETNAME|GETNAME|ID|INFO, about this connection",
        run: cmd::client::run,
    },
    Spec {
        text: "select",
        arity: 2,
        flags: NO_AUTH,
        who: Who::Anyone,
        value_at: None,
        refusal_closes: false,
        summary: "Only database 0 exists",
        run: cmd::select::run,
    },
    Spec {
        text: "command",
        arity: -1,
        flags: NO_AUTH,
        who: Who::Anyone,
        value_at: None,
        refusal_closes: false,
        summary: "Describes these commands",
        run: cmd::command::run,
    },
    Spec {
        text: "config",
        arity: -2,
        flags: NO_AUTH,
        who: Who::Anyone,
        value_at: None,
        refusal_closes: false,
        summary: "CONFIG GET answers nothing: databus is configured by its file",
        run: cmd::config::run,
    },
    Spec {
        text: "info",
        arity: -1,
        flags: NO_AUTH,
        who: Who::Anyone,
        value_at: None,
        refusal_closes: false,
        summary: "The server section: databus and its version",
        run: cmd::info::run,
    },
    Spec {
        text: "set",
        arity: 3,
        flags: &["write"],
        who: Who::Roles(PUB_OR_SUB),
        value_at: Some(2),
        refusal_closes: false,
        summary: "Publisher: produce key and value; subscriber: commit partition and offset",
        run: cmd::set::run,
    },
    Spec {
        text: "hset",
        arity: 4,
        flags: &["write"],
        who: Who::Roles(PUB),
        value_at: Some(3),
        refusal_closes: false,
        summary: "Publisher: produce key, metadata and value",
        run: cmd::hset::run,
    },
    Spec {
        text: "mget",
        arity: -1,
        flags: &["readonly"],
        who: Who::Roles(SUB),
        value_at: None,
        refusal_closes: false,
        summary: "Subscriber: the next batch of messages, json (default) or pb",
        run: cmd::mget::run,
    },
    Spec {
        text: "xadd",
        arity: -5,
        flags: &["write"],
        who: Who::Roles(PUB),
        value_at: None,
        refusal_closes: false,
        summary: "Publisher: XADD topic * field value [...]: one record; key and value fields are its key and value, the rest headers; answers its ID partition-offset",
        run: cmd::xadd::run,
    },
    Spec {
        text: "xreadgroup",
        arity: -7,
        flags: &["write"],
        who: Who::Roles(SUB),
        value_at: None,
        refusal_closes: false,
        summary: "Queue consumer: new entries (>) or the consumer's own pending ones; the first makes the connection a queue consumer",
        run: cmd::xreadgroup::run,
    },
    Spec {
        text: "xack",
        arity: -4,
        flags: &["write", "fast"],
        who: Who::Roles(SUB),
        value_at: None,
        refusal_closes: false,
        summary: "Queue consumer: acknowledges pending entries; counts those that were pending",
        run: cmd::xack::run,
    },
    Spec {
        text: "xpending",
        arity: -3,
        flags: &["readonly"],
        who: Who::Roles(SUB),
        value_at: None,
        refusal_closes: false,
        summary: "Queue consumer: the group's pending entries, summary or per entry",
        run: cmd::xpending::run,
    },
    Spec {
        text: "xclaim",
        arity: -6,
        flags: &["write", "fast"],
        who: Who::Roles(SUB),
        value_at: None,
        refusal_closes: false,
        summary: "Queue consumer: takes over idle pending entries",
        run: cmd::xclaim::run,
    },
    Spec {
        text: "xautoclaim",
        arity: -6,
        flags: &["write", "fast"],
        who: Who::Roles(SUB),
        value_at: None,
        refusal_closes: false,
        summary: "Queue consumer: takes over idle pending entries from an ID on",
        run: cmd::xautoclaim::run,
    },
    Spec {
        text: "xgroup",
        arity: -2,
        flags: &["write"],
        who: Who::Roles(SUB),
        value_at: None,
        refusal_closes: false,
        summary: "Queue consumer: CREATE and SETID (the granted group only, at 0 or $) and CREATECONSUMER",
        run: cmd::xgroup::run,
    },
    Spec {
        text: "xinfo",
        arity: -2,
        flags: &["readonly"],
        who: Who::Roles(SUB),
        value_at: None,
        refusal_closes: false,
        summary: "Queue consumer: GROUPS, CONSUMERS and STREAM",
        run: cmd::xinfo::run,
    },
];

/// The command `name` names, in any case.
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS.iter().find(|c| c.text.as_bytes().eq_ignore_ascii_case(name))
}

/// The label a request named `name` is counted under: its command's, or
/// `other` for anything databus does not know (so a client cannot grow the
/// metrics with names of its own).
pub(crate) fn label(name: &[u8]) -> &'static str {
    lookup(name).map_or("other", |c| c.text)
}

/// The command a request names, if a connection of `role` (`None`: not
/// yet authenticated) may use it; else the error it gets.
pub(crate) fn permit(name: &[u8], role: Option<Role>) -> Result<&'static Spec, CommandError> {
    let spec = lookup(name);
    match (spec, role) {
        (Some(s), _) if s.who == Who::Anyone => Ok(s),
        (Some(s), None) if s.who == Who::Unauthenticated => Ok(s),
        (Some(s), Some(_)) if s.who == Who::Unauthenticated => Err(CommandError::AlreadyAuthenticated),
        (_, None) => Err(CommandError::NoAuth),
        (None, Some(_)) => Err(CommandError::UnknownCommand(shown_name(name))),
        (Some(s), Some(role)) => match s.who {
            Who::Roles(roles) if roles.contains(&role) => Ok(s),
            _ => Err(CommandError::NotAllowed { command: shown_name(name), role }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_in_the_table_once() {
        for (i, c) in COMMANDS.iter().enumerate() {
            assert_eq!(lookup(c.text.to_uppercase().as_bytes()).map(|s| s.text), Some(c.text));
            assert!(COMMANDS[i + 1..].iter().all(|d| d.text != c.text), "{c:?} twice");
            assert_eq!(c.text, c.text.to_lowercase());
        }
    }

    #[test]
    fn labels_are_the_commands_or_other() {
        assert_eq!(label(b"SET"), "set");
        assert_eq!(label(b"mGeT"), "mget");
        assert_eq!(label(b"flushall"), "other");
        assert_eq!(label(b""), "other");
    }

    #[test]
    fn who_may_use_what() {
        let name = |r: Result<&Spec, CommandError>| r.map(|s| s.text);
        // Before AUTH: the setup commands, nothing else, known or not.
        assert_eq!(name(permit(b"PING", None)), Ok("ping"));
        assert_eq!(name(permit(b"auth", None)), Ok("auth"));
        assert_eq!(name(permit(b"set", None)), Err(CommandError::NoAuth));
        assert_eq!(name(permit(b"flushall", None)), Err(CommandError::NoAuth));
        // After: each role its own, with SET meaning produce or commit.
        assert_eq!(name(permit(b"set", Some(Role::Pub))), Ok("set"));
        assert_eq!(name(permit(b"set", Some(Role::Sub))), Ok("set"));
        assert_eq!(name(permit(b"HSET", Some(Role::Pub))), Ok("hset"));
        assert_eq!(name(permit(b"mget", Some(Role::Sub))), Ok("mget"));
        assert_eq!(
            name(permit(b"MGET", Some(Role::Pub))),
            Err(CommandError::NotAllowed { command: "MGET".into(), role: Role::Pub })
        );
        assert_eq!(
            name(permit(b"hset", Some(Role::Sub))),
            Err(CommandError::NotAllowed { command: "hset".into(), role: Role::Sub })
        );
        assert_eq!(
            name(permit(b"flushall", Some(Role::Sub))),
            Err(CommandError::UnknownCommand("flushall".into()))
        );
        // AUTH again: already authenticated.
        assert_eq!(name(permit(b"auth", Some(Role::Pub))), Err(CommandError::AlreadyAuthenticated));
        assert_eq!(name(permit(b"AUTH", Some(Role::Sub))), Err(CommandError::AlreadyAuthenticated));
    }

    #[test]
    fn arity_is_redis_convention() {
        let spec = |name: &str| lookup(name.as_bytes()).expect("in the table");
        // Exact.
        assert_eq!(spec("set").check_arity(3), Ok(()));
        assert_eq!(spec("set").check_arity(2), Err(CommandError::WrongArgs("set")));
        assert_eq!(spec("set").check_arity(4), Err(CommandError::WrongArgs("set")));
        // At least.
        assert_eq!(spec("xack").check_arity(3), Err(CommandError::WrongArgs("xack")));
        assert_eq!(spec("xack").check_arity(4), Ok(()));
        assert_eq!(spec("xack").check_arity(40), Ok(()));
        assert_eq!(spec("ping").check_arity(1), Ok(()));
        // Only AUTH's refusals close the connection.
        let closing: Vec<&str> = COMMANDS.iter().filter(|c| c.refusal_closes).map(|c| c.text).collect();
        assert_eq!(closing, ["auth"]);
    }
}
