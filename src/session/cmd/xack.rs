//! `XACK <topic> <group> <id> [id ...]`: the entries are done with; the
//! reply counts those that were pending (of any consumer, as in Redis; an
//! entry of a partition this databus no longer holds is not).

use crate::resp::Frame;
use crate::session::queue::{self, parse_id};
use crate::session::{CommandError, Reply, Session};

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    apply(session, args).into()
}

fn apply(session: &mut Session, args: &[Vec<u8>]) -> Result<Frame, CommandError> {
    let [_, key, group, ids @ ..] = args else { return Err(CommandError::WrongArgs("xack")) };
    if ids.is_empty() {
        return Err(CommandError::WrongArgs("xack"));
    }
    let ids = ids.iter().map(|id| parse_id(id)).collect::<Result<Vec<_>, _>>()?;
    let reader = queue::reader(session)?;
    if !reader.is_ours(key, group) {
        return Ok(Frame::Integer(0));
    }
    let acked = reader.attached.group.shared.book().ack(&ids);
    if acked > 0 {
        reader.attached.group.notify();
    }
    Ok(Frame::Integer(acked as i64))
}
