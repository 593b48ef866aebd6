//! A publisher's reply written by the thread that learns the broker's verdict.
//!
//! Most clients send one `SET` and wait for its reply. The connection's
//! thread has nothing to do until the delivery report comes, yet waiting for
//! it costs a sleep and a wake-up per `SET` on top of the ones for the next
//! request (BENCHMARKS.md, "The reply handoff"). So when a plain-TCP client has
//! exactly one request outstanding and nothing else is queued, the connection
//! hands its reply over: the thread that serves delivery reports writes it to
//! the socket itself, without blocking, and the connection's thread goes
//! straight back to reading. Before the connection queues anything else, or
//! closes, it takes the reply back (waiting for it if need be), so replies
//! keep their order and none is lost.

use std::io;
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use socket2::SockRef;

use crate::resp::Frame;

pub(crate) struct Handoff {
    /// The client's socket, shared with its connection.
    socket: Arc<TcpStream>,
    state: Mutex<State>,
    settled: Condvar,
}

enum State {
    /// Nothing handed over, or the handed reply was written.
    Idle,
    /// A reply is out; the delivery thread writes it when the verdict comes.
    Out { deadline: Instant },
    /// The connection waits for the reply to write it itself.
    TakenBack { deadline: Instant },
    /// The reply, or what the socket did not take of it, for the connection
    /// to write.
    Left(Vec<u8>),
    /// The connection gave up waiting past the deadline and answered with a
    /// timeout; a verdict that still comes is dropped.
    Abandoned,
}

/// What [`Handoff::take_back`] found.
pub(crate) enum TakenBack {
    /// Nothing left to write: no reply was out, or it has been written.
    Nothing,
    /// Bytes the connection must write before anything else.
    Write(Vec<u8>),
    /// No verdict came by the deadline.
    Lost,
}

impl Handoff {
    pub(crate) fn new(socket: Arc<TcpStream>) -> Arc<Handoff> {
        Arc::new(Handoff { socket, state: Mutex::new(State::Idle), settled: Condvar::new() })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a reply may be handed over now: none is out or left over.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(*self.state(), State::Idle)
    }

    /// Whether a reply is out (or left over): the connection must take it
    /// back before it queues anything. An abandoned reply is not: the
    /// connection has answered for it.
    pub(crate) fn is_out(&self) -> bool {
        !matches!(*self.state(), State::Idle | State::Abandoned)
    }

    /// Marks a reply as handed over, before the verdict's callback is set
    /// (it may run at once); `deadline` is when the connection stops waiting
    /// for it.
    pub(crate) fn hand(&self, deadline: Instant) {
        let mut state = self.state();
        debug_assert!(matches!(*state, State::Idle));
        *state = State::Out { deadline };
    }

    /// The delivery thread's side: makes the reply with `reply` (not called
    /// for an abandoned one, which the connection answered and counted) and
    /// writes it to the socket if the connection is not waiting for it and
    /// the socket takes it without blocking; otherwise leaves it (or the
    /// rest of it) to the connection.
    pub(crate) fn settle(&self, reply: impl FnOnce() -> Frame) {
        let mut state = self.state();
        if matches!(*state, State::Abandoned) {
            *state = State::Idle;
            return;
        }
        let mut bytes = Vec::with_capacity(16);
        reply().encode(&mut bytes);
        // Only a connection that took the reply back waits for it.
        let waited = matches!(*state, State::TakenBack { .. });
        match *state {
            State::Out { .. } => {
                let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
                *state = match SockRef::from(&*self.socket).send_with_flags(&bytes, flags) {
                    Ok(n) if n == bytes.len() => State::Idle,
                    Ok(n) => State::Left(bytes.split_off(n)),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                        State::Left(bytes)
                    }
                    // The client is gone; its connection finds out on its
                    // next read.
                    Err(_) => State::Idle,
                };
            }
            State::TakenBack { .. } => *state = State::Left(bytes),
            State::Idle | State::Left(_) | State::Abandoned => {
                log::error!("a delivery verdict came with no reply handed over; dropped");
                return;
            }
        }
        drop(state);
        if waited {
            self.settled.notify_one();
        }
    }

    /// The connection's side: takes a reply that is out back, waiting until
    /// its deadline for the verdict.
    pub(crate) fn take_back(&self) -> TakenBack {
        let mut state = self.state();
        loop {
            match std::mem::replace(&mut *state, State::Idle) {
                State::Idle => return TakenBack::Nothing,
                State::Left(bytes) => return TakenBack::Write(bytes),
                State::Out { deadline } | State::TakenBack { deadline } => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        *state = State::Abandoned;
                        return TakenBack::Lost;
                    }
                    *state = State::TakenBack { deadline };
                    state = self.settled.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
                }
                State::Abandoned => {
                    *state = State::Abandoned;
                    return TakenBack::Nothing;
                }
            }
        }
    }

    /// Whether the connection waits in [`Handoff::take_back`].
    #[cfg(test)]
    fn is_taken_back(&self) -> bool {
        matches!(*self.state(), State::TakenBack { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::socket_pair as pair;
    use super::*;
    use std::io::Read;
    use std::thread;
    use std::time::Duration;

    fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.read_exact(&mut buf).unwrap();
        buf
    }

    #[test]
    fn the_delivery_thread_writes_a_reply_that_is_out() {
        let (mut client, server) = pair();
        let h = Handoff::new(Arc::new(server));
        h.hand(Instant::now() + Duration::from_secs(5));
        assert!(h.is_out() && !h.is_idle());
        let h2 = h.clone();
        thread::spawn(move || h2.settle(Frame::ok)).join().unwrap();
        assert_eq!(read_exactly(&mut client, 5), b"+OK\r\n");
        assert!(h.is_idle());
        assert!(matches!(h.take_back(), TakenBack::Nothing));
    }

    #[test]
    fn a_reply_taken_back_is_written_by_the_connection_not_the_delivery_thread() {
        let (mut client, server) = pair();
        let h = Handoff::new(Arc::new(server));
        h.hand(Instant::now() + Duration::from_secs(5));
        let h2 = h.clone();
        let connection = thread::spawn(move || h2.take_back());
        while !h.is_taken_back() {
            thread::sleep(Duration::from_millis(1));
        }
        h.settle(|| Frame::Error("TRYAGAIN x".into()));
        let TakenBack::Write(bytes) = connection.join().unwrap() else {
            panic!("the verdict must be handed back")
        };
        assert_eq!(bytes, b"-TRYAGAIN x\r\n");
        client.set_nonblocking(true).unwrap();
        assert_eq!(
            client.read(&mut [0; 16]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing written"
        );
        assert!(h.is_idle());
    }

    #[test]
    fn past_the_deadline_the_connection_gives_up_and_a_late_verdict_is_dropped() {
        let (mut client, server) = pair();
        let h = Handoff::new(Arc::new(server));
        h.hand(Instant::now() + Duration::from_millis(50));
        assert!(matches!(h.take_back(), TakenBack::Lost));
        assert!(!h.is_idle(), "no new reply is handed over while the verdict may still come");
        assert!(!h.is_out(), "the connection answered for it");
        h.settle(|| panic!("an abandoned reply is neither made nor counted"));
        assert!(h.is_idle());
        client.set_nonblocking(true).unwrap();
        assert_eq!(
            client.read(&mut [0; 16]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "nothing written"
        );
    }

    #[test]
    fn what_the_socket_does_not_take_is_left_to_the_connection() {
        let (_client, server) = pair();
        // A client that reads nothing: fill its socket until a write would block.
        server.set_nonblocking(true).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        while SockRef::from(&server).send(&chunk).is_ok() {}
        server.set_nonblocking(false).unwrap();
        let h = Handoff::new(Arc::new(server));
        h.hand(Instant::now() + Duration::from_secs(5));
        h.settle(Frame::ok);
        assert!(h.is_out(), "the connection has a reply to write");
        let TakenBack::Write(bytes) = h.take_back() else { panic!("the reply must be left") };
        assert_eq!(bytes, b"+OK\r\n");
        assert!(h.is_idle());
    }
}
