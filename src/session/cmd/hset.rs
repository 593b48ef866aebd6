//! `HSET key metadata value`: a publisher's record with a metadata header
//! (a protobuf map of strings).

use crate::kafka::{Delivery, Publish};
use crate::proto::decode_metadata;
use crate::session::publisher::Publisher;
use crate::session::{Awaited, CommandError, Reply, Session, State, Tally};

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

    /// Produces the record through `p`'s lane.
    pub(crate) fn produce(&self, p: &Publisher, kafka: &dyn Publish) -> Result<Delivery, CommandError> {
        p.produce(self.key, self.value, Some(self.metadata), kafka)
    }

    pub(crate) fn apply(self, session: &mut Session) -> Reply {
        let kafka = session.ctx.kafka.as_ref();
        let State::Publisher(p) = &session.state else {
            // The command table lets only publishers through.
            return Reply::Now(CommandError::NoAuth.to_frame());
        };
        let tally = Tally::start(p, "hset", self.value.len());
        match self.produce(p, kafka) {
            Ok(pending) => Reply::Delivery(Box::new(Awaited { pending, tally })),
            Err(e) => Reply::Now(e.to_frame()),
        }
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    match Hset::parse(args) {
        Ok(hset) => hset.apply(session),
        Err(e) => Reply::Now(e.to_frame()),
    }
}
