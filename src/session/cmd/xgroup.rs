//! `XGROUP CREATE <topic> <group> 0|$ [MKSTREAM] [ENTRIESREAD n]` and
//! `XGROUP SETID <topic> <group> 0|$ [ENTRIESREAD n]` with Redis's meaning,
//! for the connection's own group (the grant made it; any other is
//! `NOPERM`): a group "exists" once it has committed offsets or members.
//! CREATE of a new group commits every partition's earliest offset (`0`)
//! or its high watermark (`$`), overriding AUTH's `offset=`; of an existing
//! one it answers `BUSYGROUP`, which clients expect and catch. SETID moves
//! the committed offsets the same way, while nobody reads (Kafka takes a
//! commit from outside a group only while it has no members).
//! `XGROUP CREATECONSUMER` adds a consumer name. DESTROY and DELCONSUMER
//! would drop pending entries, and are refused.
//!
//! Neither CREATE nor SETID makes the connection a queue consumer: they ask
//! Kafka through a client that never joins the group.

use std::time::Instant;

use crate::kafka::{GroupClient, StartOffset};
use crate::queue::BROKER_WAIT;
use crate::resp::Frame;
use crate::session::error::shown_name;
use crate::session::queue_reader;
use crate::session::{CommandError, Reply, Session};

use super::parse::{integer, Args};

/// What a `CREATE` or `SETID` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Move {
    /// A new group only.
    Create(StartOffset),
    SetId(StartOffset),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Xgroup<'a> {
    /// `CREATE` or `SETID`.
    Move {
        key: &'a [u8],
        group: &'a [u8],
        how: Move,
    },
    CreateConsumer {
        key: &'a [u8],
        group: &'a [u8],
        consumer: String,
    },
}

impl<'a> Xgroup<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Xgroup<'a>, CommandError> {
        let mut args = Args::new("xgroup", args);
        let sub = args.next_bytes()?;
        match sub.to_ascii_lowercase().as_slice() {
            word @ (b"create" | b"setid") => {
                let create = word == b"create";
                let (key, group, id) = (args.next_bytes()?, args.next_bytes()?, args.next_bytes()?);
                check_options(&mut args, create)?;
                let start = parse_start(id)?;
                let how = if create { Move::Create(start) } else { Move::SetId(start) };
                Ok(Xgroup::Move { key, group, how })
            }
            b"createconsumer" => {
                let (key, group, consumer) = (args.next_bytes()?, args.next_bytes()?, args.next_string()?);
                args.finish()?;
                Ok(Xgroup::CreateConsumer { key, group, consumer })
            }
            b"destroy" | b"delconsumer" => Err(CommandError::Unsupported(
                "databus keeps consumer groups as Kafka does: XGROUP DESTROY and DELCONSUMER are not supported",
            )),
            _ => Err(CommandError::UnknownSubcommand { command: "xgroup", sub: shown_name(sub) }),
        }
    }

    pub(crate) fn apply(self, session: &mut Session) -> Result<Frame, CommandError> {
        match self {
            Xgroup::Move { key, group, how } => position(session, key, group, how),
            Xgroup::CreateConsumer { key, group, consumer } => {
                let q = queue_reader::reader(session)?;
                q.reader.check(key, group, None)?;
                Ok(Frame::Integer(q.reader.attached.create_consumer(&consumer) as i64))
            }
        }
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Xgroup::parse(args).and_then(|x| x.apply(session)).into()
}

/// Where `CREATE` or `SETID` puts the group, as Redis spells it: `0` (or
/// `0-0`) every partition's earliest entry, `$` past its latest.
fn parse_start(raw: &[u8]) -> Result<StartOffset, CommandError> {
    match raw {
        b"0" | b"0-0" => Ok(StartOffset::Earliest),
        b"$" => Ok(StartOffset::Latest),
        _ => Err(CommandError::GroupStart),
    }
}

/// `MKSTREAM` (CREATE only; the topic exists, the grant says so) and
/// `ENTRIESREAD n` (ignored: Kafka counts the lag itself).
fn check_options(args: &mut Args<'_>, create: bool) -> Result<(), CommandError> {
    while let Some(option) = args.next_word() {
        match option.as_slice() {
            b"mkstream" if create => {}
            b"entriesread" => {
                if integer::<i64>(args.option_value()?).is_none_or(|n| n < -1) {
                    return Err(CommandError::NotAnInteger);
                }
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    Ok(())
}

/// Checks the names, then commits the group's new start, if the group is
/// new (CREATE) or idle (SETID).
fn position(session: &mut Session, key: &[u8], group: &[u8], how: Move) -> Result<Frame, CommandError> {
    let (key_of, granted) = queue_reader::group_of(session, key, group)?;
    let topic = key_of.topic.clone();
    // The group's member is up on this databus.
    if session.ctx.queues.has(&key_of) {
        return Err(match how {
            Move::Create(_) => CommandError::BusyGroup,
            Move::SetId(_) => CommandError::GroupReading(granted),
        });
    }
    let clusters = session.ctx.clusters.now();
    let Some(cluster) = clusters.get(&key_of.cluster) else {
        return Err(CommandError::Unsupported("the grant's cluster is no longer configured"));
    };
    let client = GroupClient::new(cluster, &key_of.group, &topic)?;
    move_group(&client, &granted, how)?;
    Ok(Frame::ok())
}

fn move_group(client: &GroupClient, group: &str, how: Move) -> Result<(), CommandError> {
    let deadline = Instant::now() + BROKER_WAIT;
    let left = || deadline.saturating_duration_since(Instant::now());
    let kafka = |what| move |cause| CommandError::Kafka { what, cause };
    let marks = client.watermarks(left()).map_err(kafka("read the topic's offsets"))?;
    let members = client.members(left()).map_err(kafka("describe the group"))?;
    // Whether the group has commits matters to CREATE only.
    let committed = match how {
        Move::Create(_) => {
            let partitions: Vec<i32> = marks.iter().map(|(p, _, _)| *p).collect();
            let committed =
                client.committed(&partitions, left()).map_err(kafka("read the group's offsets"))?;
            committed.iter().any(|(_, o)| o.is_some())
        }
        Move::SetId(_) => false,
    };
    let (start, offsets) = decide(how, group, members, committed, &marks)?;
    client.commit(&offsets, left()).map_err(kafka("commit the group's offsets"))?;
    log::info!("group '{group}' starts at {start:?} ({how:?}): {offsets:?}");
    Ok(())
}

/// What Redis would do, given what Kafka says of the group (`members`,
/// whether it has `committed` offsets) and the topic's watermarks: the
/// start and the offsets to commit, or the refusal.
fn decide(
    how: Move,
    group: &str,
    members: usize,
    committed: bool,
    marks: &[(i32, i64, i64)],
) -> Result<(StartOffset, Vec<(i32, i64)>), CommandError> {
    let start = match how {
        Move::Create(_) if members > 0 || committed => return Err(CommandError::BusyGroup),
        Move::SetId(_) if members > 0 => return Err(CommandError::GroupReading(group.to_owned())),
        Move::Create(start) | Move::SetId(start) => start,
    };
    let offsets = marks
        .iter()
        .map(|&(p, low, high)| (p, if start == StartOffset::Earliest { low } else { high }))
        .collect();
    Ok((start, offsets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_and_setid_decide_as_redis_does() {
        let marks = [(0, 5, 9), (1, 0, 0), (2, 3, 40)];
        let earliest = Ok((StartOffset::Earliest, vec![(0, 5), (1, 0), (2, 3)]));
        let latest = Ok((StartOffset::Latest, vec![(0, 9), (1, 0), (2, 40)]));
        // A new group: where it was asked to start, AUTH's offset= aside.
        assert_eq!(decide(Move::Create(StartOffset::Earliest), "g", 0, false, &marks), earliest);
        assert_eq!(decide(Move::Create(StartOffset::Latest), "g", 0, false, &marks), latest);
        // One that exists, by its commits or its members: BUSYGROUP.
        assert_eq!(
            decide(Move::Create(StartOffset::Earliest), "g", 0, true, &marks),
            Err(CommandError::BusyGroup)
        );
        assert_eq!(
            decide(Move::Create(StartOffset::Latest), "g", 2, false, &marks),
            Err(CommandError::BusyGroup)
        );
        // SETID moves an idle group's offsets, commits or not; not while
        // anyone reads.
        assert_eq!(decide(Move::SetId(StartOffset::Earliest), "g", 0, true, &marks), earliest);
        assert_eq!(decide(Move::SetId(StartOffset::Latest), "g", 0, false, &marks), latest);
        assert_eq!(
            decide(Move::SetId(StartOffset::Earliest), "g", 1, true, &marks),
            Err(CommandError::GroupReading("g".into()))
        );
    }

    #[test]
    fn starts_and_options() {
        assert_eq!(parse_start(b"0"), Ok(StartOffset::Earliest));
        assert_eq!(parse_start(b"0-0"), Ok(StartOffset::Earliest));
        assert_eq!(parse_start(b"$"), Ok(StartOffset::Latest));
        assert_eq!(parse_start(b"1-0"), Err(CommandError::GroupStart));
        let parse = |a: &[&str]| Xgroup::parse(crate::session::cmd::request(a));
        let moved = |how| Ok(Xgroup::Move { key: b"t", group: b"g", how });
        assert_eq!(parse(&["XGROUP", "CREATE", "t", "g", "0"]), moved(Move::Create(StartOffset::Earliest)));
        assert_eq!(
            parse(&["xgroup", "create", "t", "g", "$", "MKSTREAM"]),
            moved(Move::Create(StartOffset::Latest))
        );
        assert_eq!(
            parse(&["XGROUP", "CREATE", "t", "g", "0", "mkstream", "ENTRIESREAD", "5"]),
            moved(Move::Create(StartOffset::Earliest))
        );
        assert_eq!(
            parse(&["XGROUP", "SETID", "t", "g", "$", "ENTRIESREAD", "-1"]),
            moved(Move::SetId(StartOffset::Latest))
        );
        assert_eq!(parse(&["XGROUP", "SETID", "t", "g", "0", "MKSTREAM"]), Err(CommandError::Syntax));
        assert_eq!(parse(&["XGROUP", "CREATE", "t", "g", "0", "ENTRIESREAD"]), Err(CommandError::Syntax));
        assert_eq!(
            parse(&["XGROUP", "CREATE", "t", "g", "0", "ENTRIESREAD", "x"]),
            Err(CommandError::NotAnInteger)
        );
        assert_eq!(
            parse(&["XGROUP", "CREATE", "t", "g", "0", "ENTRIESREAD", "-2"]),
            Err(CommandError::NotAnInteger)
        );
        assert_eq!(parse(&["XGROUP", "CREATE", "t", "g", "0", "other"]), Err(CommandError::Syntax));
        // The options are looked at before the start.
        assert_eq!(parse(&["XGROUP", "CREATE", "t", "g", "5", "other"]), Err(CommandError::Syntax));
        assert_eq!(parse(&["XGROUP", "CREATE", "t", "g", "5"]), Err(CommandError::GroupStart));
        assert_eq!(parse(&["XGROUP", "CREATE", "t", "g"]), Err(CommandError::WrongArgs("xgroup")));
        assert_eq!(
            parse(&["XGROUP", "CREATECONSUMER", "t", "g", "c"]),
            Ok(Xgroup::CreateConsumer { key: b"t", group: b"g", consumer: "c".into() })
        );
        assert_eq!(
            parse(&["XGROUP", "CREATECONSUMER", "t", "g", "c", "d"]),
            Err(CommandError::WrongArgs("xgroup"))
        );
        assert!(matches!(parse(&["XGROUP", "DESTROY"]), Err(CommandError::Unsupported(_))));
        assert_eq!(
            parse(&["XGROUP", "HELP"]),
            Err(CommandError::UnknownSubcommand { command: "xgroup", sub: "HELP".into() })
        );
        assert_eq!(parse(&["XGROUP"]), Err(CommandError::WrongArgs("xgroup")));
    }
}
