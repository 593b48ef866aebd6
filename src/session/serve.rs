//! The loop that serves one connection: it reads requests, hands each to
//! the session, and writes the replies in order, reading ahead while a
//! pipelining client's records wait for the broker and letting the
//! delivery thread answer a client that waits for each reply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connection::{Connection, ReadOutcome, Stream};
use super::registry::{Interrupt, Registration};
use super::{CommandError, Context, Session};
use crate::resp::{discard, parse_request, Parsed};

/// Replies a connection may have waiting for the broker before it stops
/// reading more requests; bounds the memory one pipelining client can hold.
const MAX_PENDING_REPLIES: usize = 4096;
/// Encoded replies held before they are written out, so a pipeline of
/// requests with large replies (echoes, MGET batches) holds one at a time.
const OUTPUT_HIGH_WATER: usize = 4 * 1024;
/// How long a connection whose reply is handed over waits for input before
/// it takes the reply back (and waits for the verdict, as it would have
/// without the handoff): a verdict that takes longer, or a reply the
/// delivery thread could not write whole, is then written by the connection.
const HANDOFF_CHECK: Duration = Duration::from_millis(100);

/// Serves one connection until the client leaves, a timeout fires, or the
/// session asks to close. Each round takes the requests already buffered,
/// answers in order what is settled, and then either reads ahead (while
/// replies wait for the broker), waits for the next reply, or waits for input.
pub(crate) fn serve(stream: Stream, ctx: Arc<Context>, registration: Registration) {
    let peer = stream.socket().peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    // A stranger that never reads its replies is dropped as soon as one that
    // never authenticates; after AUTH, when the role's idle timeout passes.
    let mut conn = match Connection::new(stream, ctx.settings.auth_timeout) {
        Ok(c) => c,
        Err(e) => {
            log::debug!("{peer}: {e}");
            return;
        }
    };
    if let Err(e) = conn.handshake(ctx.settings.auth_timeout) {
        log::info!("{peer}: TLS handshake failed: {e}");
        return;
    }
    let mut session = Session::new(ctx, peer, Some(registration));
    session.hang_up = conn.hang_up_watch().ok();
    serve_requests(&mut conn, &mut session);
    // The session ends first, as it always did: a subscriber leaves its
    // group before its client can see the close (and join again).
    drop(session);
    conn.finish();
}

/// The rounds of [`serve`], until the connection is to close.
fn serve_requests(conn: &mut Connection, session: &mut Session) {
    let peer = session.peer.clone();
    let connected = Instant::now();
    let mut write_timeout_set = false;
    // Whether the client has sent a request before the previous one's reply:
    // only then is it worth looking for more input while a reply waits for
    // the broker. A client that waits for each reply (most do) is spared
    // three syscalls per request that would find nothing, and its reply is
    // written by the delivery thread (see `connection/handoff.rs`).
    let mut pipelining = false;
    loop {
        // A request that came while a reply was out: the client pipelines.
        pipelining |= !conn.buffered().is_empty() && conn.reply_out();
        // A handed-over reply not written yet is waited for now: the next
        // requests' replies go behind it.
        conn.take_back();
        let backlog = take_requests(conn, session, !pipelining);
        session.release_held();
        pipelining |= conn.replies_waiting() > 1;
        if session.is_authenticated() && !write_timeout_set {
            if let Err(e) = conn.set_write_timeout(session.read_timeout()) {
                log::debug!("{peer}: {e}");
                return;
            }
            write_timeout_set = true;
        }
        if session.is_closing() {
            conn.answer_all();
            return;
        }
        if let Err(e) = conn.flush() {
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                log::info!("{peer}: replies not read within the write timeout, closing");
            } else {
                log::debug!("{peer}: write failed: {e}");
            }
            return;
        }
        let step = if conn.replies_waiting() > 0 {
            await_reply(conn, session, backlog || !pipelining)
        } else if backlog {
            Step::Continue
        } else {
            wait_for_input(conn, session, connected)
        };
        if step == Step::Stop {
            return;
        }
    }
}

/// Whether the connection goes on after a step of [`serve`].
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Continue,
    Stop,
}

/// The next reply waits for the broker. Takes more input meanwhile, so that
/// a long pipeline is produced as one stream rather than chunk by chunk;
/// with nothing to take (or `no_read_ahead`: complete requests still
/// buffered, or a client that does not pipeline), waits for that reply and
/// queues it with any settled after it.
fn await_reply(conn: &mut Connection, session: &Session, no_read_ahead: bool) -> Step {
    if !no_read_ahead && conn.replies_waiting() < MAX_PENDING_REPLIES {
        match conn.read_available(session.max_buffered()) {
            ReadOutcome::Data => return Step::Continue,
            ReadOutcome::TimedOut | ReadOutcome::Closed => {}
            ReadOutcome::Failed(e) => {
                log::debug!("{}: read failed: {e}", session.peer);
                return Step::Stop;
            }
        }
    }
    conn.answer_next();
    Step::Continue
}

/// Nothing to answer: says why when the server interrupted the connection,
/// else waits for more input until the state's timeout (counted from
/// `connected` before AUTH, from the last byte after).
fn wait_for_input(conn: &mut Connection, session: &Session, connected: Instant) -> Step {
    let peer = &session.peer;
    match session.interrupted() {
        Interrupt::None => {}
        Interrupt::Shutdown => return Step::Stop,
        Interrupt::GrantChanged => {
            log::info!("{peer}: grant changed, closing");
            // A handed-over reply goes first: `serve` takes it back.
            if conn.reply_out() {
                return Step::Continue;
            }
            conn.answer_now(CommandError::GrantChanged.to_frame());
            let _ = conn.flush();
            return Step::Stop;
        }
    }
    let timeout = if session.is_authenticated() {
        session.read_timeout()
    } else {
        session.read_timeout().saturating_sub(connected.elapsed())
    };
    // While a reply is handed over, look now and then whether the delivery
    // thread left some of it to write (a client that reads nothing).
    let handed = conn.reply_out();
    let timeout = if handed { timeout.min(HANDOFF_CHECK) } else { timeout };
    let outcome = if timeout.is_zero() {
        ReadOutcome::TimedOut
    } else {
        conn.read_more(timeout, session.max_buffered())
    };
    match outcome {
        ReadOutcome::Data => Step::Continue,
        // An interrupt closes the read side: go round once more to say why.
        ReadOutcome::Closed if session.interrupted() != Interrupt::None => Step::Continue,
        ReadOutcome::Closed => Step::Stop,
        ReadOutcome::TimedOut if handed => Step::Continue,
        ReadOutcome::TimedOut if !session.is_authenticated() => {
            log::info!("{peer}: no AUTH within {:?}, closing", session.read_timeout());
            conn.answer_now(CommandError::AuthTimeout.to_frame());
            let _ = conn.flush();
            Step::Stop
        }
        ReadOutcome::TimedOut => {
            log::info!("{peer}: idle for {:?}, closing", session.read_timeout());
            Step::Stop
        }
        ReadOutcome::Failed(e) => {
            log::debug!("{peer}: read failed: {e}");
            Step::Stop
        }
    }
}

/// Parses and handles the requests already buffered, in order, queueing each
/// reply as soon as it and those before it are settled (so a pipelined burst
/// is produced concurrently and still answered in order). Stops at an
/// incomplete request, when the session closes, or when the pending replies
/// or the queued output reach their bounds; returns whether it stopped for a
/// bound, i.e. complete requests may still be buffered.
///
/// With `may_hand_off` (a client that does not pipeline), a request that is
/// the only one outstanding, with nothing queued, may have its reply handed
/// to the delivery thread (see `connection/handoff.rs`).
fn take_requests(conn: &mut Connection, session: &mut Session, may_hand_off: bool) -> bool {
    while !session.is_closing() {
        if conn.replies_waiting() >= MAX_PENDING_REPLIES || conn.output_bytes() >= OUTPUT_HIGH_WATER {
            return true;
        }
        // An oversized request is answered once its last byte is in (so it
        // gets one reply, whatever follows), or not at all if it turns out
        // not to be a request.
        if let Some((rest, _)) = &mut session.discarding {
            match discard(conn.buffered(), rest) {
                Ok((used, done)) => {
                    conn.consume(used);
                    if !done {
                        return false;
                    }
                    let (_, reply) = session.discarding.take().expect("checked");
                    conn.answer_now(reply);
                }
                Err(e) => {
                    log::info!("{}: protocol error in an oversized request, closing: {e}", session.peer);
                    session.discarding = None;
                    conn.answer_now(CommandError::Protocol(e).to_frame());
                    session.close();
                    continue;
                }
            }
        }
        match parse_request(conn.buffered(), session.limits()) {
            Ok(Parsed::Complete(args, used)) => {
                conn.consume(used);
                if args.is_empty() {
                    continue;
                }
                session.set_more_input(!conn.buffered().is_empty());
                let reply = session.handle(&args);
                conn.answer(reply, may_hand_off);
            }
            Ok(Parsed::Incomplete) => return false,
            Ok(Parsed::Oversized(o)) => {
                conn.consume(o.header);
                let reply = session.oversized(&o);
                session.discarding = Some((o.rest, reply));
            }
            Err(e) => {
                log::info!("{}: protocol error, closing: {e}", session.peer);
                conn.answer_now(CommandError::Protocol(e).to_frame());
                session.close();
            }
        }
    }
    false
}
