//! `XADD <topic> [NOMKSTREAM] * field value [field value ...]`: a
//! publisher's record, answered with its entry ID `<partition>-<offset>`
//! once the broker has it. Field `key` is the record's key (none: the
//! partitioner spreads the records), `value` its value, every other field a
//! header, in order.

use crate::kafka::Delivered;
use crate::queue::EntryId;
use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session, State};

use super::parse::Args;

pub(crate) struct Xadd<'a> {
    stream: &'a [u8],
    key: Option<&'a [u8]>,
    value: &'a [u8],
    headers: Vec<(String, Vec<u8>)>,
}

impl<'a> Xadd<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Xadd<'a>, CommandError> {
        let mut args = Args::new("xadd", args);
        let stream = args.next_bytes()?;
        while let Some(word) = args.peek() {
            match word.to_ascii_lowercase().as_slice() {
                b"nomkstream" => _ = args.next_optional(),
                b"maxlen" | b"minid" | b"limit" => return Err(CommandError::Trim),
                _ => break,
            }
        }
        let id = args.next_bytes()?;
        let pairs = args.rest();
        if pairs.is_empty() || pairs.len() % 2 != 0 {
            return Err(args.wrong_arity());
        }
        if id != b"*" {
            return Err(match crate::queue::EntryId::parse(id, 0) {
                Some(_) => CommandError::ExplicitId,
                None => CommandError::BadStreamId,
            });
        }
        let (mut key, mut value, mut headers) = (None, None, Vec::new());
        for pair in pairs.chunks(2) {
            match pair[0].as_slice() {
                b"key" if key.is_none() => key = Some(pair[1].as_slice()),
                b"value" if value.is_none() => value = Some(pair[1].as_slice()),
                b"color" => return Err(CommandError::ColorField),
                name => {
                    let name = std::str::from_utf8(name).map_err(|_| CommandError::FieldName)?;
                    headers.push((name.to_owned(), pair[1].clone()));
                }
            }
        }
        Ok(Xadd { stream, key, value: value.unwrap_or_default(), headers })
    }

    pub(crate) fn apply(self, session: &mut Session) -> Reply {
        let kafka = session.ctx.kafka.as_ref();
        let State::Publisher(p) = &session.state else {
            // The command table lets only publishers through.
            return Reply::Now(CommandError::NoAuth.to_frame());
        };
        if self.stream != p.topic.as_bytes() {
            return Reply::Now(CommandError::OtherStream(p.topic.clone()).to_frame());
        }
        // The fields count against the value's bound, as their bytes travel with it.
        let size = self.value.len() + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let record = p.record(self.key.unwrap_or_default(), self.value).fields(&self.headers);
        let record = if self.key.is_none() { record.keyless() } else { record };
        p.publish(&record, size, kafka, "xadd", entry_id)
    }
}

/// The reply to an acknowledged entry: its ID, where the broker stored it.
fn entry_id(d: &Delivered) -> Frame {
    Frame::Bulk(EntryId::of(d.partition, d.offset).to_string().into_bytes())
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    match Xadd::parse(args) {
        Ok(x) => x.apply(session),
        Err(e) => Reply::Now(e.to_frame()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn fields_map_to_key_value_and_headers() {
        let a = args(&["XADD", "t", "*", "a", "1", "key", "k", "value", "v", "key", "k2"]);
        let x = Xadd::parse(&a).unwrap();
        assert_eq!((x.key, x.value), (Some(&b"k"[..]), &b"v"[..]));
        assert_eq!(x.headers, vec![("a".to_string(), b"1".to_vec()), ("key".to_string(), b"k2".to_vec())]);
        let a = args(&["XADD", "t", "NOMKSTREAM", "*", "a", "1"]);
        let x = Xadd::parse(&a).unwrap();
        assert_eq!((x.key, x.value), (None, &b""[..]));
        let err = |parts: &[&str]| Xadd::parse(&args(parts)).err();
        assert_eq!(err(&["XADD", "t", "MAXLEN", "10", "*", "a", "1"]), Some(CommandError::Trim));
        assert_eq!(err(&["XADD", "t", "minid", "0", "*", "a", "1"]), Some(CommandError::Trim));
        assert_eq!(err(&["XADD", "t", "1-1", "a", "1"]), Some(CommandError::ExplicitId));
        assert_eq!(err(&["XADD", "t", "x-1", "a", "1"]), Some(CommandError::BadStreamId));
        assert_eq!(err(&["XADD", "t", "*", "a"]), Some(CommandError::WrongArgs("xadd")));
        assert_eq!(err(&["XADD", "t", "*"]), Some(CommandError::WrongArgs("xadd")));
        assert_eq!(err(&["XADD", "t", "*", "color", "red"]), Some(CommandError::ColorField));
        assert_eq!(err(&["XADD", "t"]), Some(CommandError::WrongArgs("xadd")));
        assert_eq!(err(&["XADD", "t", "nomkstream", "*"]), Some(CommandError::WrongArgs("xadd")));
        let field = [b"XADD".to_vec(), b"t".to_vec(), b"*".to_vec(), b"\xff".to_vec(), b"v".to_vec()];
        assert_eq!(Xadd::parse(&field).err(), Some(CommandError::FieldName));
    }
}
