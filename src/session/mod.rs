//! One client connection: its state (not yet authenticated, publisher,
//! subscriber or queue reader), dispatch through the command table
//! (`commands.rs`) that says which commands each state accepts and with
//! how many arguments, and the loop that reads requests and writes replies
//! in order.

pub(crate) mod cmd;
pub(crate) mod commands;
pub(crate) mod connection;
pub(crate) mod error;
pub(crate) mod handoff;
pub(crate) mod outbox;
pub(crate) mod publisher;
pub(crate) mod queue_reader;
pub(crate) mod registry;
pub(crate) mod setup;
pub(crate) mod subscriber;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{AuthCache, Role};
use crate::config::Settings;
use crate::kafka::{Clusters, Delivered, Delivery, KeepAlive, Memberships, Publish, PublishError};
use crate::metrics::{Metrics, OpenConnection, PublishMeter};
use crate::resp::{discard, parse_request, Discard, Frame, Limits, Oversized, Parsed};

pub(crate) use connection::Stream;
use connection::{Connection, HangUpWatch, ReadOutcome};
pub(crate) use error::CommandError;
use handoff::Handoff;
use publisher::Publisher;
use registry::{Interrupt, InterruptFlag, Registration};
use setup::ClientInfo;
use subscriber::Subscriber;

/// What every connection shares.
pub(crate) struct Context {
    pub settings: Arc<Settings>,
    /// The clusters of the settings, as SIGHUP last re-read them.
    pub clusters: Arc<Clusters>,
    pub auth: Arc<AuthCache>,
    pub kafka: Arc<dyn Publish>,
    /// Subscribers per group on this databus.
    pub members: Arc<Memberships>,
    /// Queue mode's shared group members on this databus.
    pub queues: Arc<crate::queue::Queues>,
    pub metrics: Arc<Metrics>,
}

/// A reply in the making: either known now, or waiting for the broker.
pub(crate) enum Reply {
    Now(Frame),
    Delivery(Box<Awaited>),
}

/// A record whose reply was handed to the delivery thread: what keeps its
/// producer alive until the verdict is in, and what to count if it never
/// comes.
pub(crate) struct Handed {
    keep_alive: KeepAlive,
    tally: Tally,
}

/// A published record waiting for the broker, and what to count when it is settled.
pub(crate) struct Awaited {
    pending: Delivery,
    tally: Tally,
}

/// What a published record counts once the broker has spoken.
#[derive(Clone)]
struct Tally {
    meter: Arc<PublishMeter>,
    /// The command's metric label.
    command: &'static str,
    started: Instant,
    value_len: usize,
    /// Answered with the entry ID (`XADD`), not `+OK`.
    with_id: bool,
}

impl Tally {
    fn start(p: &Publisher, command: &'static str, value_len: usize) -> Tally {
        Tally { meter: p.meter.clone(), command, started: Instant::now(), value_len, with_id: false }
    }

    /// The reply to the record, counted.
    fn answer(&self, verdict: Result<Delivered, PublishError>) -> Frame {
        self.meter.finish(self.started, self.value_len, verdict.as_ref().err().map(PublishError::cause));
        let frame = match verdict {
            Ok(d) if self.with_id => {
                Frame::Bulk(crate::queue::EntryId::of(d.partition, d.offset).to_string().into_bytes())
            }
            Ok(_) => Frame::ok(),
            Err(e) => CommandError::Publish(e).to_frame(),
        };
        self.meter.command(self.command, error_code(&frame));
        frame
    }
}

impl Reply {
    /// Whether `resolve` would return at once.
    pub(crate) fn is_ready(&mut self) -> bool {
        match self {
            Reply::Now(_) => true,
            Reply::Delivery(d) => d.pending.is_settled(),
        }
    }

    /// Blocks until the reply is known.
    pub(crate) fn resolve(self) -> Frame {
        match self {
            Reply::Now(frame) => frame,
            Reply::Delivery(d) => {
                let Awaited { pending, tally } = *d;
                tally.answer(pending.wait())
            }
        }
    }
}

/// The code of an error reply (`ERR`, `NOPERM`, ...); `None` for any other reply.
fn error_code(frame: &Frame) -> Option<&str> {
    match frame {
        Frame::Error(text) => text.split(' ').next(),
        _ => None,
    }
}

impl From<Result<Frame, CommandError>> for Reply {
    fn from(r: Result<Frame, CommandError>) -> Reply {
        Reply::Now(r.unwrap_or_else(|e| e.to_frame()))
    }
}

enum State {
    Unauthenticated,
    Publisher(Publisher),
    Subscriber(Box<Subscriber>),
    /// A subscriber that turned to queue mode (see [`queue_reader`]).
    Queue(Box<queue_reader::QueueReader>),
}

/// The command-level state of one connection, free of IO so it can be tested
/// with in-memory doubles.
pub(crate) struct Session {
    ctx: Arc<Context>,
    state: State,
    peer: String,
    /// What the client said about itself, and its protocol.
    client: ClientInfo,
    /// The connection's entry in the server's registry (absent in unit tests).
    registration: Option<Registration>,
    interrupt: Arc<InterruptFlag>,
    /// Whether the client has hung up, asked while an MGET waits (absent in
    /// unit tests).
    hang_up: Option<HangUpWatch>,
    /// Set when the connection must close after the replies so far are sent.
    closing: bool,
    /// The rest of an oversized request, dropped as it arrives, and the
    /// reply it gets once it is all in.
    discarding: Option<(Discard, Frame)>,
    /// A `HELLO ... AUTH` was refused once; the next refusal closes.
    hello_refused: bool,
    /// Counts this connection under its role.
    _open: OpenConnection,
}

impl Session {
    pub(crate) fn new(ctx: Arc<Context>, peer: String, registration: Option<Registration>) -> Session {
        let interrupt = registration.as_ref().map(|r| r.flag.clone()).unwrap_or_default();
        let id = registration.as_ref().map_or(0, |r| r.id() as u64);
        let client = ClientInfo::new(id, peer.clone());
        let _open = ctx.metrics.connection("unauthenticated");
        Session {
            ctx,
            state: State::Unauthenticated,
            peer,
            client,
            registration,
            interrupt,
            hang_up: None,
            closing: false,
            discarding: None,
            hello_refused: false,
            _open,
        }
    }

    /// The reply to a request over the bounds that is being dropped: a
    /// SET's or HSET's value gets the size error it would get within them,
    /// anything else that the request was too long. Counted like a command.
    fn oversized(&self, o: &Oversized) -> Frame {
        let name = o.command.as_deref().unwrap_or_default();
        let value_at = match name.to_ascii_lowercase().as_slice() {
            b"set" => Some(2),
            b"hset" => Some(3),
            _ => None,
        };
        let error = match (&self.state, value_at) {
            (State::Publisher(p), Some(at)) if at == o.index && o.len > p.max_value_size as u64 => {
                CommandError::ValueTooLarge { len: o.len, max: p.max_value_size as u64 }
            }
            _ => CommandError::RequestTooLong { max: self.limits().max_request_len },
        };
        let frame = error.to_frame();
        self.ctx.metrics.command(commands::label(name), error_code(&frame));
        frame
    }

    /// Why the server wants this connection to end, if it does.
    pub(crate) fn interrupted(&self) -> Interrupt {
        self.interrupt.get()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Ends the connection once the replies so far are sent.
    pub(crate) fn close(&mut self) {
        self.closing = true;
    }

    /// AUTH proved who the client is: the connection takes its role's
    /// `state`, and is counted under that role from now on.
    fn authenticated(&mut self, state: State) {
        self.state = state;
        if let Some(role) = self.role() {
            self._open = self.ctx.metrics.connection(&role.to_string());
        }
    }

    /// An authentication refused with the reply `code`: counted, and the
    /// connection closes after the reply, so a stranger gets one guess.
    fn auth_refused(&mut self, code: &str) {
        self.ctx.metrics.refused(code);
        self.close();
    }

    /// A `HELLO ... AUTH` refused with `code`: counted; the first of the
    /// connection leaves it open (see `cmd/hello.rs`), any later one closes it.
    fn hello_auth_refused(&mut self, code: &str) {
        match self.hello_refused {
            true => self.auth_refused(code),
            false => {
                self.ctx.metrics.refused(code);
                self.hello_refused = true;
            }
        }
    }

    /// Whether a command waiting for entries should give up: the client
    /// went away, or the server wants the connection to end.
    fn should_stop(&self) -> bool {
        self.interrupt.is_set() || self.hang_up.as_ref().is_some_and(HangUpWatch::hung_up)
    }

    /// The bounds on the next request: tight until AUTH proves who the
    /// client is, then what its role can legitimately send.
    pub(crate) fn limits(&self) -> &Limits {
        let limits = &self.ctx.settings.limits;
        match self.state {
            State::Unauthenticated => &limits.unauthenticated,
            State::Publisher(_) => &limits.publisher,
            State::Subscriber(_) | State::Queue(_) => &limits.subscriber,
        }
    }

    /// Most unparsed input the connection may hold: one request within
    /// [`Session::limits`], plus a length line still arriving.
    pub(crate) fn max_buffered(&self) -> usize {
        self.limits().max_request_len + LENGTH_LINE_SLACK
    }

    /// How long the connection may stay silent before it is closed.
    pub(crate) fn read_timeout(&self) -> Duration {
        match self.state {
            State::Unauthenticated => self.ctx.settings.auth_timeout,
            State::Publisher(_) => self.ctx.settings.idle_timeout,
            State::Subscriber(ref s) => s.idle_timeout(),
            State::Queue(ref q) => q.idle_timeout,
        }
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        !matches!(self.state, State::Unauthenticated)
    }

    fn is_publisher(&self) -> bool {
        matches!(self.state, State::Publisher(_))
    }

    /// Handles one request whose reply may be written by the delivery
    /// thread (see [`handoff`]): a publisher's `SET` or `HSET` is handed
    /// over, and what it needs until its verdict is in comes back, for the
    /// head of the outbox; anything else, or a record refused before it was
    /// enqueued, is handled as [`Session::handle`] does, its reply the `Err`.
    fn handle_handing_off(&mut self, args: &[Vec<u8>], handoff: &Arc<Handoff>) -> Result<Handed, Reply> {
        let spec = commands::lookup(&args[0]);
        let (State::Publisher(p), Some(spec @ commands::Spec { text: "set" | "hset", .. })) =
            (&self.state, spec)
        else {
            return Err(self.handle(args));
        };
        let tally = Tally::start(p, spec.text, args.last().map_or(0, Vec::len));
        let kafka = self.ctx.kafka.as_ref();
        let enqueued = match spec.text {
            "set" => cmd::set::Set::parse(args).and_then(|c| c.produce(p, kafka)),
            _ => cmd::hset::Hset::parse(args).and_then(|c| c.produce(p, kafka)),
        };
        let delivery = match enqueued {
            Ok(d) => d,
            Err(e) => {
                let frame = e.to_frame();
                self.ctx.metrics.command(spec.text, error_code(&frame));
                return Err(Reply::Now(frame));
            }
        };
        // Handed over before the callback is set: the verdict may be in
        // already, and then the callback runs at once.
        handoff.hand(delivery.answer_by());
        let (to, counted) = (handoff.clone(), tally.clone());
        let keep_alive = delivery.then(Box::new(move |verdict| to.settle(|| counted.answer(verdict))));
        Ok(Handed { keep_alive, tally })
    }

    /// Handles one request. `args` is never empty.
    pub(crate) fn handle(&mut self, args: &[Vec<u8>]) -> Reply {
        let reply = self.dispatch(args);
        // A delivery is counted once the broker has spoken.
        if let Reply::Now(frame) = &reply {
            self.ctx.metrics.command(commands::label(&args[0]), error_code(frame));
        }
        reply
    }

    /// The role the connection authenticated with, if it has.
    fn role(&self) -> Option<Role> {
        match self.state {
            State::Unauthenticated => None,
            State::Publisher(_) => Some(Role::Pub),
            State::Subscriber(_) | State::Queue(_) => Some(Role::Sub),
        }
    }

    /// Runs the command `args` names if the table lets this connection
    /// use it with that many arguments.
    fn dispatch(&mut self, args: &[Vec<u8>]) -> Reply {
        let spec = match commands::permit(&args[0], self.role()) {
            Ok(spec) => spec,
            Err(e) => return Reply::Now(e.to_frame()),
        };
        let reply = match spec.check_arity(args.len()) {
            Ok(()) => (spec.run)(self, args),
            Err(e) => Reply::Now(e.to_frame()),
        };
        if let (true, Reply::Now(frame)) = (spec.refusal_closes, &reply) {
            if let Some(code) = error_code(frame) {
                self.auth_refused(code);
            }
        }
        reply
    }
}

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
/// Room past the request bound for a length line still arriving.
const LENGTH_LINE_SLACK: usize = 64;

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
    // A reply handed to the delivery thread still goes out before the close.
    if conn.outbox.take_back() {
        let _ = conn.flush();
    }
    // The delivery thread may still hold the socket (a verdict that came
    // too late): say goodbye now rather than when it lets go.
    conn.outbox.shut_down_shared();
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
    // written by the delivery thread (see [`handoff`]).
    let mut pipelining = false;
    loop {
        // A request that came while a reply was out: the client pipelines.
        pipelining |= !conn.buffered().is_empty() && conn.outbox.reply_out();
        // A handed-over reply not written yet is waited for now: the next
        // requests' replies go behind it.
        conn.outbox.take_back();
        let backlog = take_requests(conn, session, !pipelining);
        pipelining |= conn.outbox.waiting() > 1;
        if session.is_authenticated() && !write_timeout_set {
            if let Err(e) = conn.set_write_timeout(session.read_timeout()) {
                log::debug!("{peer}: {e}");
                return;
            }
            write_timeout_set = true;
        }
        if session.is_closing() {
            conn.outbox.answer_all();
            let _ = conn.flush();
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
        let step = if conn.outbox.waiting() > 0 {
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
    if !no_read_ahead && conn.outbox.waiting() < MAX_PENDING_REPLIES {
        match conn.read_available(session.max_buffered()) {
            ReadOutcome::Data => return Step::Continue,
            ReadOutcome::TimedOut | ReadOutcome::Closed => {}
            ReadOutcome::Failed(e) => {
                log::debug!("{}: read failed: {e}", session.peer);
                return Step::Stop;
            }
        }
    }
    conn.outbox.answer_next();
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
            if conn.outbox.reply_out() {
                return Step::Continue;
            }
            conn.outbox.push_now(CommandError::GrantChanged.to_frame());
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
    let handed = conn.outbox.reply_out();
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
            conn.outbox.push_now(CommandError::AuthTimeout.to_frame());
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
/// to the delivery thread (see [`handoff`]).
fn take_requests(conn: &mut Connection, session: &mut Session, may_hand_off: bool) -> bool {
    while !session.is_closing() {
        if conn.outbox.waiting() >= MAX_PENDING_REPLIES || conn.outbox.queued_bytes() >= OUTPUT_HIGH_WATER {
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
                    conn.outbox.push_now(reply);
                }
                Err(e) => {
                    log::info!("{}: protocol error in an oversized request, closing: {e}", session.peer);
                    session.discarding = None;
                    conn.outbox.push_now(CommandError::Protocol(e).to_frame());
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
                let handoff = if may_hand_off && session.is_publisher() { conn.free_handoff() } else { None };
                match handoff.map(|h| session.handle_handing_off(&args, &h)) {
                    Some(Ok(handed)) => conn.outbox.hand(handed),
                    Some(Err(reply)) => conn.outbox.push(reply),
                    None => conn.outbox.push(session.handle(&args)),
                }
            }
            Ok(Parsed::Incomplete) => return false,
            Ok(Parsed::Oversized(o)) => {
                conn.consume(o.header);
                let reply = session.oversized(&o);
                session.discarding = Some((o.rest, reply));
            }
            Err(e) => {
                log::info!("{}: protocol error, closing: {e}", session.peer);
                conn.outbox.push_now(CommandError::Protocol(e).to_frame());
                session.close();
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Grant, Snapshot};
    use crate::config::Settings;
    use crate::kafka::{PublishError, Record};
    use std::path::Path;
    use std::sync::Mutex;

    /// (cluster, topic, key, value, headers) of a record that would have been produced.
    type Sent = (String, String, Vec<u8>, Vec<u8>, Vec<(String, Vec<u8>)>);

    /// Records what would have been produced.
    #[derive(Default)]
    struct FakeKafka {
        sent: Mutex<Vec<Sent>>,
    }

    impl Publish for FakeKafka {
        fn send(&self, cluster: &str, _lane: usize, r: &Record<'_>) -> Result<Delivery, PublishError> {
            let headers = r.headers().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
            self.sent.lock().unwrap().push((
                cluster.into(),
                r.topic.into(),
                r.key.to_vec(),
                r.value.to_vec(),
                headers,
            ));
            Ok(Delivery::acknowledged(0, 0))
        }
    }

    fn session() -> (Session, Arc<FakeKafka>) {
        let settings = Settings::from_toml(
            Path::new("t.toml"),
            "addr = \"127.0.0.1:0\"\nauth = \"mysql\"\nmax_value_size = 10\n\
             [clusters.c1]\nbrokers = [\"127.0.0.1:1\"]\n[mysql]\nurl = \"mysql://x@h/db\"\n",
        )
        .unwrap();
        let grant = Grant {
            group: "g".into(),
            topic: "t".into(),
            operation: 2,
            app_id: 1,
            app_key: "k".into(),
            app_secret: "s".into(),
            cluster: "c1".into(),
        };
        let kafka = Arc::new(FakeKafka::default());
        let ctx = Context {
            clusters: Arc::new(Clusters::new(settings.clusters.clone())),
            settings: Arc::new(settings),
            auth: Arc::new(AuthCache::new(Snapshot::new(vec![grant]))),
            kafka: kafka.clone(),
            members: Arc::default(),
            queues: Arc::default(),
            metrics: Arc::default(),
        };
        (Session::new(Arc::new(ctx), "test".into(), None), kafka)
    }

    fn cmd(s: &mut Session, parts: &[&[u8]]) -> Frame {
        let args: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        s.handle(&args).resolve()
    }

    fn err(text: &str) -> Frame {
        Frame::Error(text.into())
    }

    #[test]
    fn before_auth_only_connection_setup() {
        let (mut s, kafka) = session();
        assert_eq!(cmd(&mut s, &[b"PING"]), Frame::Simple("PONG".into()));
        assert_eq!(cmd(&mut s, &[b"ping", b"hi"]), Frame::Bulk(b"hi".to_vec()));
        // What clients send on their own is answered, and tells nothing of grants.
        assert_eq!(cmd(&mut s, &[b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py"]), Frame::ok());
        assert_eq!(cmd(&mut s, &[b"SELECT", b"0"]), Frame::ok());
        assert_eq!(cmd(&mut s, &[b"ECHO", b"e"]), Frame::Bulk(b"e".to_vec()));
        assert_eq!(cmd(&mut s, &[b"CONFIG", b"GET", b"*"]), Frame::Array(Vec::new()));
        for request in [&[&b"INFO"[..]][..], &[b"CLIENT", b"INFO"], &[b"COMMAND"], &[b"COMMAND", b"DOCS"]] {
            let mut wire = Vec::new();
            cmd(&mut s, request).encode(&mut wire);
            let text = String::from_utf8_lossy(&wire);
            assert!(!text.contains("c1") && !text.contains("\"t\"") && !text.contains("\"g\""), "{text}");
        }
        for data in [&[&b"set"[..], b"k", b"v"][..], &[b"hset", b"k", b"{}", b"v"], &[b"mget"], &[b"nosuch"]]
        {
            assert_eq!(cmd(&mut s, data), err("NOAUTH Authentication required."));
        }
        assert!(!s.is_closing());
        assert!(kafka.sent.lock().unwrap().is_empty());
        assert_eq!(cmd(&mut s, &[b"QUIT"]), Frame::ok());
        assert!(s.is_closing());
    }

    #[test]
    fn hello_authenticates_and_describes_the_server() {
        let (mut s, _) = session();
        // Protocol negotiation alone; AUTH is still needed afterwards.
        let Frame::Map(pairs) = cmd(&mut s, &[b"HELLO", b"3"]) else { panic!("HELLO 3 must answer a map") };
        assert!(pairs.contains(&(Frame::Bulk(b"server".to_vec()), Frame::Bulk(b"databus".to_vec()))));
        assert_eq!(cmd(&mut s, &[b"set", b"k", b"v"]), err("NOAUTH Authentication required."));
        assert_eq!(cmd(&mut s, &[b"CONFIG", b"GET", b"x"]), Frame::Map(Vec::new()));
        assert_eq!(cmd(&mut s, &[b"HELLO", b"4"]), err("NOPROTO unsupported protocol version"));
        assert_eq!(
            cmd(&mut s, &[b"HELLO", b"3", b"AUTH", b"x"]),
            err("ERR syntax error in HELLO option 'AUTH'")
        );
        assert!(!s.is_closing());
        let Frame::Map(pairs) =
            cmd(&mut s, &[b"hello", b"3", b"auth", b"default", b"k:s@g/topic=t&role=pub"])
        else {
            panic!("HELLO 3 must answer a map")
        };
        assert!(pairs.contains(&(Frame::Bulk(b"proto".to_vec()), Frame::Integer(3))));
        assert_eq!(cmd(&mut s, &[b"set", b"k", b"v"]), Frame::ok());
        let Frame::Array(flat) = cmd(&mut s, &[b"HELLO", b"2"]) else {
            panic!("HELLO 2 must answer an array")
        };
        assert_eq!(flat[0], Frame::Bulk(b"server".to_vec()));
        let (mut s, _) = session();
        // A refused HELLO AUTH leaves the connection open for go-redis's
        // fallback AUTH, whose refusal closes it.
        let bad = b"k:bad@g/topic=t&role=pub";
        let reply = cmd(&mut s, &[b"HELLO", b"3", b"AUTH", b"default", bad]);
        assert_eq!(reply, err("WRONGPASS auth failed: invalid app key or secret"));
        assert!(!s.is_closing());
        assert_eq!(cmd(&mut s, &[b"set", b"k", b"v"]), err("NOAUTH Authentication required."));
        assert_eq!(cmd(&mut s, &[b"AUTH", bad]), err("WRONGPASS auth failed: invalid app key or secret"));
        assert!(s.is_closing());
        // A second refused HELLO AUTH closes too: two guesses per connection.
        let (mut s, _) = session();
        for _ in 0..2 {
            let reply = cmd(&mut s, &[b"HELLO", b"3", b"AUTH", b"default", bad]);
            assert_eq!(reply, err("WRONGPASS auth failed: invalid app key or secret"));
        }
        assert!(s.is_closing());
    }

    #[test]
    fn request_bounds_follow_the_state() {
        let (mut s, _) = session();
        assert_eq!((s.limits().max_array_len, s.limits().max_request_len), (10, 16_384));
        assert_eq!(s.max_buffered(), 16_384 + LENGTH_LINE_SLACK);
        assert_eq!(cmd(&mut s, &[b"AUTH", b"k:s@g/topic=t&role=pub"]), Frame::ok());
        // max_value_size = 10 in this config, plus the default 64 KiB for the rest.
        assert_eq!((s.limits().max_array_len, s.limits().max_request_len), (1024, 10 + 65_536));
    }

    #[test]
    fn failed_auth_closes() {
        let (mut s, _) = session();
        let reply = cmd(&mut s, &[b"auth", b"k:wrong@g/topic=t&role=pub"]);
        assert_eq!(reply, err("WRONGPASS auth failed: invalid app key or secret"));
        assert!(s.is_closing());
        let (mut s, _) = session();
        let reply = cmd(&mut s, &[b"auth", b"k:s@g/topic=other&role=pub"]);
        assert_eq!(reply, err("NOPERM auth failed: topic 'other' is not granted to group 'g'"));
        assert!(s.is_closing());
        let (mut s, _) = session();
        let reply = cmd(&mut s, &[b"auth", b"garbage"]);
        let Frame::Error(text) = reply else { panic!() };
        assert!(text.starts_with("ERR invalid auth string: missing '@'"), "{text}");
        assert!(s.is_closing());
    }

    #[test]
    fn the_table_checks_arity_and_a_refused_auth_closes() {
        let (mut s, _) = session();
        assert_eq!(cmd(&mut s, &[b"ECHO"]), err("ERR wrong number of arguments for 'echo' command"));
        assert_eq!(cmd(&mut s, &[b"config"]), err("ERR wrong number of arguments for 'config' command"));
        assert_eq!(
            cmd(&mut s, &[b"config", b"get"]),
            err("ERR wrong number of arguments for 'config|get' command")
        );
        assert!(!s.is_closing());
        // AUTH's wrong arity is a refusal like any other: the connection closes.
        assert_eq!(cmd(&mut s, &[b"AUTH"]), err("ERR wrong number of arguments for 'auth' command"));
        assert!(s.is_closing());
        let (mut s, _) = session();
        assert_eq!(
            cmd(&mut s, &[b"auth", b"a", b"b", b"c"]),
            err("ERR wrong number of arguments for 'auth' command")
        );
        assert!(s.is_closing());
        // Once authenticated, AUTH in any shape is "already", and closes nothing.
        let (mut s, _) = session();
        assert_eq!(cmd(&mut s, &[b"AUTH", b"default", b"k:s@g/topic=t&role=pub"]), Frame::ok());
        assert_eq!(cmd(&mut s, &[b"AUTH"]), err("ERR already authenticated"));
        assert_eq!(cmd(&mut s, &[b"HELLO", b"3", b"AUTH", b"u", b"p"]), err("ERR already authenticated"));
        assert!(!s.is_closing());
        assert_eq!(
            cmd(&mut s, &[b"hset", b"k", b"{}"]),
            err("ERR wrong number of arguments for 'hset' command")
        );
        assert_eq!(
            cmd(&mut s, &[b"xadd", b"t", b"*"]),
            err("ERR wrong number of arguments for 'xadd' command")
        );
        assert!(!s.is_closing());
    }

    #[test]
    fn publisher_commands() {
        let (mut s, kafka) = session();
        assert_eq!(cmd(&mut s, &[b"AUTH", b"k:s@g/topic=t&role=pub&color=red"]), Frame::ok());
        assert_eq!(cmd(&mut s, &[b"auth", b"k:s@g/topic=t&role=pub"]), err("ERR already authenticated"));
        assert_eq!(cmd(&mut s, &[b"Set", b"key", b"val"]), Frame::ok());
        assert_eq!(cmd(&mut s, &[b"hset", b"key", br#"{"a":"b"}"#, b"v2"]), Frame::ok());
        assert_eq!(
            cmd(&mut s, &[b"hset", b"key", b"not metadata", b"v2"]),
            err("ERR metadata must be a JSON object of string values or a protobuf infra.databus.Header")
        );
        assert_eq!(
            cmd(&mut s, &[b"set", b"key", b"01234567890"]),
            err("ERR value is 11 bytes, over the limit of 10")
        );
        assert_eq!(cmd(&mut s, &[b"set", b"key"]), err("ERR wrong number of arguments for 'set' command"));
        assert_eq!(cmd(&mut s, &[b"mget"]), err("ERR command 'mget' not allowed for role pub"));
        assert_eq!(cmd(&mut s, &[b"flushall"]), err("ERR unknown command 'flushall'"));
        assert!(!s.is_closing());
        let sent = kafka.sent.lock().unwrap();
        assert_eq!(sent.len(), 2);
        let (cluster, topic, key, value, headers) = &sent[0];
        assert_eq!((cluster.as_str(), topic.as_str()), ("c1", "t"));
        assert_eq!((key.as_slice(), value.as_slice()), (&b"key"[..], &b"val"[..]));
        assert_eq!(headers, &vec![("color".to_string(), b"red".to_vec())]);
        assert_eq!(
            sent[1].4,
            vec![("color".to_string(), b"red".to_vec()), ("metadata".to_string(), br#"{"a":"b"}"#.to_vec())]
        );
    }
}
