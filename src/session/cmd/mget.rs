//! `MGET [json|pb] [BLOCK ms]`: a subscriber's next batch of messages.

use std::time::Duration;

use crate::auth::parse_wait_ms;
use crate::session::connection::HangUpWatch;
use crate::session::subscriber::Format;
use crate::session::{CommandError, Reply, Session, State};

use super::parse::Args;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mget {
    format: Format,
    /// The call's own wait, if it names one.
    wait: Option<Duration>,
}

impl Mget {
    /// `MGET [pb|json|""] [BLOCK ms]`: which is which goes by the count, as
    /// it always has (`MGET block` asks for an encoding named "block").
    pub(crate) fn parse(args: &[Vec<u8>]) -> Result<Mget, CommandError> {
        let mut args = Args::new("mget", args);
        if args.remaining() > 3 {
            return Err(args.wrong_arity());
        }
        let format = match args.remaining() % 2 {
            1 => match args.next_bytes()?.to_ascii_lowercase().as_slice() {
                b"" | b"json" => Format::Json,
                b"pb" => Format::Protobuf,
                _ => return Err(CommandError::BadFormat),
            },
            _ => Format::Json,
        };
        let wait = match args.is_empty() {
            true => None,
            false if args.next_is("block") => {
                Some(parse_wait_ms(args.next_bytes()?).ok_or(CommandError::BadBlock)?)
            }
            false => return Err(CommandError::BadFormat),
        };
        args.finish()?;
        Ok(Mget { format, wait })
    }

    pub(crate) fn apply(self, session: &mut Session) -> Reply {
        if matches!(session.state, State::Queue(_)) {
            return Reply::Now(CommandError::QueueOnly.to_frame());
        }
        let State::Subscriber(s) = &mut session.state else {
            // The command table lets only subscribers through.
            return Reply::Now(CommandError::NoAuth.to_frame());
        };
        let hang_up = &session.hang_up;
        let hung_up = || hang_up.as_ref().is_some_and(HangUpWatch::hung_up);
        let reply = s.mget(self.format, self.wait, &session.interrupt, &hung_up);
        if matches!(reply, Err(CommandError::Join(_))) {
            session.close();
        }
        reply.into()
    }
}

pub(crate) fn run(session: &mut Session, args: &[Vec<u8>]) -> Reply {
    match Mget::parse(args) {
        Ok(mget) => mget.apply(session),
        Err(e) => Reply::Now(e.to_frame()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn encoding_then_block() {
        let ms = |n| Some(Duration::from_millis(n));
        let ok = |format, wait| Ok(Mget { format, wait });
        let cases: &[(&[&str], Result<Mget, CommandError>)] = &[
            (&["mget"], ok(Format::Json, None)),
            (&["mget", ""], ok(Format::Json, None)),
            (&["mget", "JSON"], ok(Format::Json, None)),
            (&["mget", "pb"], ok(Format::Protobuf, None)),
            (&["mget", "block", "30000"], ok(Format::Json, ms(30_000))),
            (&["mget", "pb", "BLOCK", "1"], ok(Format::Protobuf, ms(1))),
            (&["mget", "", "block", "600000"], ok(Format::Json, ms(600_000))),
            (&["mget", "xml"], Err(CommandError::BadFormat)),
            (&["mget", "block"], Err(CommandError::BadFormat)),
            (&["mget", "wait", "10"], Err(CommandError::BadFormat)),
            (&["mget", "xml", "block", "10"], Err(CommandError::BadFormat)),
            (&["mget", "block", "0"], Err(CommandError::BadBlock)),
            (&["mget", "block", "600001"], Err(CommandError::BadBlock)),
            (&["mget", "pb", "block", "-1"], Err(CommandError::BadBlock)),
            (&["mget", "pb", "block", "1", "x"], Err(CommandError::WrongArgs("mget"))),
        ];
        for (input, want) in cases {
            assert_eq!(&Mget::parse(&args(input)), want, "{input:?}");
        }
    }
}
