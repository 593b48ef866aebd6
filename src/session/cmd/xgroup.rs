//! `XGROUP CREATE <topic> <group> <id> [MKSTREAM] [ENTRIESREAD n]`: `+OK`
//! for the connection's own group (it exists: the grant made it; where it
//! starts is AUTH's `offset=`), `NOPERM` for any other. `XGROUP
//! CREATECONSUMER` adds a consumer name. The rest (DESTROY, SETID,
//! DELCONSUMER) would move Kafka's offsets or drop pending entries, and is
//! refused.

use std::time::Instant;

use crate::resp::Frame;
use crate::session::queue::{self, consumer_name};
use crate::session::{CommandError, Reply, Session};

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    apply(session, args).into()
}

fn apply(session: &mut Session, args: &[Vec<u8>]) -> Result<Frame, CommandError> {
    let Some(sub) = args.get(1) else { return Err(CommandError::WrongArgs("xgroup")) };
    match (sub.to_ascii_lowercase().as_slice(), &args[2..]) {
        (b"create", [key, group, _id, ..]) => {
            let reader = queue::reader(session)?;
            if key != reader.topic.as_bytes() {
                return Err(CommandError::OtherStream(reader.topic.clone()));
            }
            if group != reader.group.as_bytes() {
                return Err(CommandError::OtherGroup {
                    asked: crate::session::error::shown_name(group),
                    granted: reader.group.clone(),
                });
            }
            Ok(Frame::ok())
        }
        (b"createconsumer", [key, group, consumer]) => {
            let reader = queue::reader(session)?;
            reader.check(key, group, None)?;
            let created = reader.attached.group.shared.book().create_consumer(&consumer_name(consumer), Instant::now());
            Ok(Frame::Integer(created as i64))
        }
        (b"create" | b"createconsumer", _) => Err(CommandError::WrongArgs("xgroup")),
        (b"destroy" | b"setid" | b"delconsumer", _) => Err(CommandError::Unsupported(
            "databus keeps consumer groups as Kafka does: XGROUP DESTROY, SETID and DELCONSUMER are not supported",
        )),
        _ => Err(CommandError::UnknownSubcommand {
            command: "xgroup",
            sub: crate::session::error::shown_name(sub),
        }),
    }
}
