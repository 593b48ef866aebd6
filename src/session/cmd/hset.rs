//! `HSET key metadata value`: a publisher's record with a metadata header
//! (a protobuf map of strings).

use crate::proto::decode_metadata;
use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session, State};

use super::parse::Args;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Hset<'a> {
    key: &'a [u8],
    /// Checked to decode.
    metadata: &'a [u8],
    value: &'a [u8],
}

impl<'a> Hset<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Hset<'a>, CommandError> {
        let mut args = Args::new("hset", args);
        let (key, metadata, value) = (args.next_bytes()?, args.next_bytes()?, args.next_bytes()?);
        // Counted before the metadata is looked at: a publisher's HSET may
        // come here without the table's arity check (see `handle_handing_off`).
        args.finish()?;
        if decode_metadata(metadata).is_none() {
            return Err(CommandError::BadMetadata);
        }
        Ok(Hset { key, metadata, value })
    }

    pub(crate) fn apply(self, session: &mut Session) -> Reply {
        let kafka = session.ctx.kafka.as_ref();
        let State::Publisher(p) = &session.state else {
            // The command table lets only publishers through.
            return Reply::Now(CommandError::NoAuth.to_frame());
        };
        let record = p.record(self.key, self.value).metadata(Some(self.metadata));
        p.publish(&record, self.value.len(), kafka, "hset", |_| Frame::ok())
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    match Hset::parse(args) {
        Ok(hset) => hset.apply(session),
        Err(e) => Reply::Now(e.to_frame()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::request;

    #[test]
    fn key_metadata_value() {
        let ok = Hset::parse(request(&["HSET", "k", r#"{"a":"b"}"#, "v"]));
        assert_eq!(ok, Ok(Hset { key: b"k", metadata: br#"{"a":"b"}"#, value: b"v" }));
        assert_eq!(Hset::parse(request(&["hset", "k", "not metadata", "v"])), Err(CommandError::BadMetadata));
        // The count first, whatever the metadata.
        assert_eq!(
            Hset::parse(request(&["hset", "k", "not metadata"])),
            Err(CommandError::WrongArgs("hset"))
        );
        assert_eq!(
            Hset::parse(request(&["hset", "k", "{}", "v", "w"])),
            Err(CommandError::WrongArgs("hset"))
        );
    }
}
