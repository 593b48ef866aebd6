//! `HSET key metadata value`: a publisher's record with a metadata header
//! (a protobuf map of strings).

use crate::proto::decode_metadata;
use crate::resp::Frame;
use crate::session::{CommandError, Reply, Session, State};

pub(crate) struct Hset<'a> {
    key: &'a [u8],
    /// Checked to decode.
    metadata: &'a [u8],
    value: &'a [u8],
}

impl<'a> Hset<'a> {
    pub(crate) fn parse(args: &'a [Vec<u8>]) -> Result<Hset<'a>, CommandError> {
        let [_, key, metadata, value] = args else {
            return Err(CommandError::WrongArgs("hset"));
        };
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
