//! `XACK <topic> <group> <id> [id ...]`: the entries are done with; the
//! reply counts those that were pending (of any consumer, as in Redis; an
//! entry of a partition this databus no longer holds is not).

use crate::queue::EntryId;
use crate::resp::Frame;
use crate::session::queue_reader;
use crate::session::{CommandError, Reply, Session};

use super::parse::{stream_id, Args};

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Xack<'a> {
    key: &'a [u8],
    group: &'a [u8],
    ids: Vec<EntryId>,
}

impl<'a> Xack<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Xack<'a>, CommandError> {
        let mut args = Args::new("xack", args);
        let (key, group) = (args.next_bytes()?, args.next_bytes()?);
        let mut ids = vec![stream_id(args.next_bytes()?)?];
        while let Some(id) = args.next_optional() {
            ids.push(stream_id(id)?);
        }
        Ok(Xack { key, group, ids })
    }

    pub(crate) fn apply(self, session: &mut Session) -> Result<Frame, CommandError> {
        let q = queue_reader::reader(session)?;
        if !q.reader.is_ours(self.key, self.group) {
            return Ok(Frame::Integer(0));
        }
        Ok(Frame::Integer(q.reader.attached.ack(&self.ids) as i64))
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    Xack::parse(args).and_then(|x| x.apply(session)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::request;

    #[test]
    fn one_id_or_more() {
        let x = Xack::parse(request(&["XACK", "t", "g", "0-1", "2-3"])).unwrap();
        assert_eq!((x.key, x.group), (&b"t"[..], &b"g"[..]));
        assert_eq!(x.ids, [EntryId::of(0, 1), EntryId::of(2, 3)]);
        let err = |a: &[&str]| Xack::parse(request(a)).err();
        assert_eq!(err(&["XACK", "t", "g"]), Some(CommandError::WrongArgs("xack")));
        assert_eq!(err(&["XACK", "t", "g", "0-1", "x"]), Some(CommandError::BadStreamId));
    }
}
