//! A command's reply: a frame known now, or the reply to a published record,
//! which renders itself once the broker has spoken ([`Pending`]). How
//! either reaches the socket is the connection's business (`connection/`).

use crate::kafka::{Count, Delivered, Delivery, PublishError, Sent};
use crate::resp::Frame;

use super::error::CommandError;

/// A reply in the making: either known now, or waiting for the broker.
pub(crate) enum Reply {
    Now(Frame),
    Publish(Box<Pending>),
}

/// A published record waiting for the broker, and how its reply reads.
pub(crate) struct Pending {
    pub(super) delivery: Delivery,
    pub(super) answer: Answer,
}

/// Turns a published record's verdict into its reply, counted: the
/// record's verdict in the publisher's meter, the reply under its command.
#[derive(Clone)]
pub(crate) struct Answer {
    count: Count,
    /// The command's metric label.
    command: &'static str,
    /// The reply to an acknowledged record: `+OK`, or `XADD`'s entry ID.
    render: fn(&Delivered) -> Frame,
}

impl Answer {
    pub(crate) fn frame(&self, verdict: Result<Delivered, PublishError>) -> Frame {
        self.count.verdict(&verdict);
        let frame = match verdict {
            Ok(d) => (self.render)(&d),
            Err(e) => CommandError::Publish(e).to_frame(),
        };
        self.count.command(self.command, error_code(&frame));
        frame
    }
}

impl Pending {
    pub(crate) fn new(sent: Sent, command: &'static str, render: fn(&Delivered) -> Frame) -> Pending {
        let (delivery, count) = sent.split();
        Pending { delivery, answer: Answer { count, command, render } }
    }
}

impl Reply {
    /// Whether `resolve` would return at once.
    pub(crate) fn is_ready(&mut self) -> bool {
        match self {
            Reply::Now(_) => true,
            Reply::Publish(p) => p.delivery.is_settled(),
        }
    }

    /// Blocks until the reply is known.
    pub(crate) fn resolve(self) -> Frame {
        match self {
            Reply::Now(frame) => frame,
            Reply::Publish(p) => {
                let Pending { delivery, answer } = *p;
                answer.frame(delivery.wait())
            }
        }
    }
}

impl From<Result<Frame, CommandError>> for Reply {
    fn from(r: Result<Frame, CommandError>) -> Reply {
        Reply::Now(r.unwrap_or_else(|e| e.to_frame()))
    }
}

/// The code of an error reply (`ERR`, `NOPERM`, ...); `None` for any other reply.
pub(crate) fn error_code(frame: &Frame) -> Option<&str> {
    match frame {
        Frame::Error(text) => text.split(' ').next(),
        _ => None,
    }
}
