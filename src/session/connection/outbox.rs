//! One ordered outbox per connection: the replies still to be written, in
//! request order, the bytes encoded from them, and the only way out to the
//! socket. The connection's thread writes the encoded bytes
//! ([`Outbox::flush`]); a reply handed to the delivery thread (see
//! `handoff.rs`) is the head of the queue, and that thread writes it
//! through the outbox's [`Handoff`]. Nothing behind a handed-over reply is
//! encoded while it is out, so replies keep their order whoever writes
//! them, without any caller having to remember to take it back first.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;

use super::handoff::{Handoff, TakenBack};
use crate::kafka::KeepAlive;
use crate::session::reply::{Answer, Pending, Reply};

/// Buffers above this size are released once written, so one large reply
/// does not pin memory for the rest of a long-lived connection.
const KEEP_CAPACITY: usize = 64 * 1024;

pub(crate) struct Outbox {
    queue: VecDeque<Entry>,
    /// Encoded replies not yet written.
    output: Vec<u8>,
    /// The plain socket, shared with the handoff (none over TLS).
    plain: Option<Arc<TcpStream>>,
    /// Made at the first reply that could be handed over.
    handoff: Option<Arc<Handoff>>,
}

enum Entry {
    Reply(Reply),
    /// A reply handed to the delivery thread; only ever at the head.
    Handed(Handed),
}

/// A published record's reply handed to the delivery thread: what keeps
/// its producer alive until the verdict is in, and how to answer if the
/// verdict never comes.
struct Handed {
    keep_alive: KeepAlive,
    answer: Answer,
}

impl Outbox {
    pub(crate) fn new(plain: Option<Arc<TcpStream>>) -> Outbox {
        Outbox { queue: VecDeque::new(), output: Vec::new(), plain, handoff: None }
    }

    /// Replies waiting to be encoded, a handed-over one aside.
    pub(crate) fn waiting(&self) -> usize {
        // A handed-over reply is only ever at the head.
        self.queue.len() - usize::from(matches!(self.queue.front(), Some(Entry::Handed(_))))
    }

    /// Bytes encoded and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.output.len()
    }

    /// Whether a handed-over reply is out (or left over): nothing behind it
    /// can be written until it is taken back.
    pub(crate) fn reply_out(&self) -> bool {
        self.handoff.as_ref().is_some_and(|h| h.is_out())
    }

    /// Queues `reply`, handing it to the delivery thread if it is a
    /// published record's and the handoff is free (see [`Outbox::free_handoff`]).
    pub(crate) fn offer(&mut self, reply: Reply) {
        let Reply::Publish(pending) = reply else { return self.push(reply) };
        let Some(handoff) = self.free_handoff() else { return self.push(Reply::Publish(pending)) };
        let Pending { delivery, answer } = *pending;
        // Handed over before the callback is set: the verdict may be in
        // already, and then the callback runs at once.
        handoff.hand(delivery.answer_by());
        let rendered = answer.clone();
        let keep_alive = delivery.then(Box::new(move |verdict| handoff.settle(|| rendered.frame(verdict))));
        self.queue.push_back(Entry::Handed(Handed { keep_alive, answer }));
    }

    /// The handoff, if a reply may be handed over now: the socket is plain
    /// TCP, nothing waits or is encoded, and no reply is out.
    fn free_handoff(&mut self) -> Option<Arc<Handoff>> {
        self.drop_written();
        if !self.queue.is_empty() || !self.output.is_empty() {
            return None;
        }
        if self.handoff.is_none() {
            self.handoff = Some(Handoff::new(self.plain.clone()?));
        }
        self.handoff.clone().filter(|h| h.is_idle())
    }

    /// Queues `reply` behind the others, and encodes what is settled.
    pub(crate) fn push(&mut self, reply: Reply) {
        self.queue.push_back(Entry::Reply(reply));
        self.answer_settled();
    }

    /// Encodes, in order, the replies at the front that need no more
    /// waiting; stops at a handed-over reply that is still out.
    pub(crate) fn answer_settled(&mut self) {
        self.drop_written();
        while let Some(Entry::Reply(reply)) = self.queue.front_mut() {
            if !reply.is_ready() {
                return;
            }
            self.encode_front();
        }
    }

    /// Waits for the reply at the front (taking a handed-over one back) and
    /// encodes it, then those settled after it.
    pub(crate) fn answer_next(&mut self) {
        if !self.take_back() {
            self.encode_front();
        }
        self.answer_settled();
    }

    /// Encodes every reply, waiting for each: the connection closes.
    pub(crate) fn answer_all(&mut self) {
        while !self.queue.is_empty() {
            self.answer_next();
        }
    }

    /// Takes a handed-over reply back, waiting until its deadline for the
    /// verdict if it has not come, and encodes whatever of it the delivery
    /// thread did not write; then the replies settled behind it. Returns
    /// whether there was one to take back.
    pub(crate) fn take_back(&mut self) -> bool {
        let Some(Entry::Handed(handed)) = self.queue.front() else {
            return false;
        };
        let handoff = self.handoff.as_ref().expect("a handed reply has its handoff");
        if handoff.is_out() {
            match handoff.take_back() {
                TakenBack::Nothing => {}
                TakenBack::Write(bytes) => self.output.extend_from_slice(&bytes),
                // As a waiting Delivery answers and counts it.
                TakenBack::Lost => {
                    handed.answer.frame(Err(handed.keep_alive.timed_out())).encode(&mut self.output)
                }
            }
        }
        // Its verdict is in (or given up on): its producer may go.
        self.queue.pop_front();
        self.answer_settled();
        true
    }

    /// Drops a handed-over reply at the head that the delivery thread has
    /// written (or that was answered for), and with it its producer.
    fn drop_written(&mut self) {
        if matches!(self.queue.front(), Some(Entry::Handed(_))) && !self.reply_out() {
            self.queue.pop_front();
        }
    }

    /// Encodes the reply at the front, waiting for it if need be; a
    /// handed-over one is taken back instead.
    fn encode_front(&mut self) {
        match self.queue.front() {
            Some(Entry::Reply(_)) => {
                if let Some(Entry::Reply(reply)) = self.queue.pop_front() {
                    reply.resolve().encode(&mut self.output);
                }
            }
            Some(Entry::Handed(_)) => {
                self.take_back();
            }
            None => {}
        }
    }

    /// Writes the encoded replies to `stream`.
    pub(crate) fn flush(&mut self, stream: &mut impl Write) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = stream.write_all(&self.output).and_then(|()| stream.flush());
        self.output.clear();
        if self.output.capacity() > KEEP_CAPACITY {
            self.output = Vec::new();
        }
        result
    }

    /// Shuts the socket down when the delivery thread shares it, so the
    /// client sees the close now, not when a late verdict lets go of it.
    pub(crate) fn shut_down_shared(&self) {
        if let (Some(_), Some(socket)) = (&self.handoff, &self.plain) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::thread;
    use std::time::Duration;

    use super::*;
    use crate::kafka::{Delivered, Delivery, PublishError, Sent};
    use crate::resp::Frame;

    const AT: Delivered = Delivered { partition: 0, offset: 1 };

    /// A connected pair: the outbox on the server side, and the client.
    fn pair() -> (Outbox, TcpStream, Arc<TcpStream>) {
        let (client, server) = super::super::tests::socket_pair();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let server = Arc::new(server);
        (Outbox::new(Some(server.clone())), client, server)
    }

    fn read_exactly(client: &mut TcpStream, n: usize) -> String {
        let mut buf = vec![0; n];
        client.read_exact(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// Offers a SET's reply as the connection does, with the handoff free;
    /// `report` is the fake producer's delivery report, to be called from
    /// any thread.
    fn hand(outbox: &mut Outbox, timeout: Duration) -> impl FnOnce(Result<Delivered, PublishError>) + Send {
        let (delivery, report) = Delivery::pending(timeout);
        outbox.offer(Reply::Publish(Box::new(Pending::new(Sent::of(delivery), "set", |_| Frame::ok()))));
        assert!(outbox.reply_out(), "handed over");
        report
    }

    #[test]
    fn the_delivery_thread_writes_a_handed_reply_and_what_follows_comes_after() {
        let (mut outbox, mut client, server) = pair();
        let report = hand(&mut outbox, Duration::from_secs(5));
        assert!(outbox.reply_out());
        assert!(outbox.free_handoff().is_none(), "one reply out at a time");
        thread::spawn(move || report(Ok(AT))).join().unwrap();
        assert_eq!(read_exactly(&mut client, 5), "+OK\r\n");
        assert!(!outbox.reply_out());
        outbox.push(Reply::Now(Frame::Simple("PONG".into())));
        outbox.flush(&mut &*server).unwrap();
        assert_eq!(read_exactly(&mut client, 7), "+PONG\r\n");
    }

    #[test]
    fn a_reply_queued_behind_a_handed_one_waits_for_it() {
        let (mut outbox, mut client, server) = pair();
        let report = hand(&mut outbox, Duration::from_secs(5));
        outbox.push(Reply::Now(Frame::Simple("PONG".into())));
        assert_eq!(outbox.queued_bytes(), 0, "nothing is encoded behind a reply that is out");
        assert_eq!(outbox.waiting(), 1);
        let reporter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            report(Ok(AT));
        });
        // The connection takes it back and waits; the verdict comes from the
        // other thread, and both replies go out in order.
        assert!(outbox.take_back());
        reporter.join().unwrap();
        outbox.flush(&mut &*server).unwrap();
        assert_eq!(read_exactly(&mut client, 12), "+OK\r\n+PONG\r\n");
        assert!(!outbox.reply_out());
        assert!(outbox.free_handoff().is_some(), "free again");
    }

    #[test]
    fn a_verdict_that_never_comes_is_answered_at_the_deadline() {
        let (mut outbox, mut client, server) = pair();
        let _report = hand(&mut outbox, Duration::ZERO);
        outbox.push(Reply::Now(Frame::Simple("PONG".into())));
        outbox.answer_all();
        outbox.flush(&mut &*server).unwrap();
        let mut text = read_exactly(&mut client, 10);
        while !text.ends_with("+PONG\r\n") {
            text += &read_exactly(&mut client, 1);
        }
        assert!(text.starts_with("-TRYAGAIN publish failed: "), "{text}");
        // The late verdict is dropped: nothing more is written.
        assert!(!outbox.reply_out());
    }

    #[test]
    fn a_late_report_after_the_connection_answered_is_dropped() {
        let (mut outbox, mut client, server) = pair();
        let report = hand(&mut outbox, Duration::ZERO);
        assert!(outbox.take_back(), "answered for at the deadline");
        report(Ok(AT));
        outbox.push(Reply::Now(Frame::Simple("PONG".into())));
        outbox.flush(&mut &*server).unwrap();
        let mut text = String::new();
        while !text.ends_with("+PONG\r\n") {
            text += &read_exactly(&mut client, 1);
        }
        assert!(text.starts_with("-TRYAGAIN"), "{text}");
        assert!(!text.contains("+OK"), "{text}");
    }
}
