//! One client connection's session: its state (not yet authenticated,
//! publisher, subscriber or queue reader) and the dispatch of each request
//! through the command table (`commands.rs`), which says which commands
//! each state accepts and with how many arguments, to its command (`cmd/`).
//! The socket and the order of replies are `connection/`'s; the loop that
//! joins them is `serve.rs`.

pub(crate) mod cmd;
pub(crate) mod commands;
pub(crate) mod connection;
pub(crate) mod error;
pub(crate) mod publisher;
pub(crate) mod queue_reader;
pub(crate) mod registry;
pub(crate) mod reply;
mod serve;
pub(crate) mod setup;
pub(crate) mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AuthCache, Role};
use crate::config::Settings;
use crate::kafka::{Clusters, Memberships, Publish};
use crate::metrics::{Metrics, OpenConnection};
use crate::resp::{Discard, Frame, Limits, Oversized};

use connection::HangUpWatch;
pub(crate) use connection::Stream;
pub(crate) use error::CommandError;
use publisher::Publisher;
use registry::{Interrupt, InterruptFlag, Registration};
use reply::error_code;
pub(crate) use reply::Reply;
pub(crate) use serve::serve;
use setup::ClientInfo;
use subscriber::Subscriber;

/// Room past the request bound for a length line still arriving.
const LENGTH_LINE_SLACK: usize = 64;

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
    /// Per-app publish rates and connection counts.
    pub limiter: Arc<crate::limits::Limiter>,
    pub metrics: Arc<Metrics>,
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
    /// Counts it against its app's connection limits, once authenticated.
    seat: Option<crate::limits::Seat>,
    /// The app key its latest AUTH named, if the store knows it (empty
    /// otherwise): the `app` label of its connection and its refusals.
    app_tried: String,
}

impl Session {
    pub(crate) fn new(ctx: Arc<Context>, peer: String, registration: Option<Registration>) -> Session {
        let interrupt = registration.as_ref().map(|r| r.flag.clone()).unwrap_or_default();
        let id = registration.as_ref().map_or(0, |r| r.id() as u64);
        let client = ClientInfo::new(id, peer.clone());
        let _open = ctx.metrics.connection("unauthenticated", "");
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
            seat: None,
            app_tried: String::new(),
        }
    }

    /// The reply to a request over the bounds that is being dropped: a
    /// SET's or HSET's value gets the size error it would get within them,
    /// anything else that the request was too long. Counted like a command.
    fn oversized(&self, o: &Oversized) -> Frame {
        let name = o.command.as_deref().unwrap_or_default();
        let value_at = commands::lookup(name).and_then(|spec| spec.value_at);
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
    fn authenticated(&mut self, state: State, seat: crate::limits::Seat) {
        self.state = state;
        if let Some(role) = self.role() {
            self._open = self.ctx.metrics.connection(&role.to_string(), &self.app_tried);
        }
        self.seat = Some(seat);
    }

    /// An authentication refused with the reply `code`: counted, and the
    /// connection closes after the reply, so a stranger gets one guess.
    fn auth_refused(&mut self, code: &str) {
        self.ctx.metrics.refused(code, &self.app_tried);
        self.close();
    }

    /// A `HELLO ... AUTH` refused with `code`: counted; the first of the
    /// connection leaves it open (see `cmd/hello.rs`), any later one closes it.
    fn hello_auth_refused(&mut self, code: &str) {
        match self.hello_refused {
            true => self.auth_refused(code),
            false => {
                self.ctx.metrics.refused(code, &self.app_tried);
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

    /// Handles one request. `args` is never empty.
    pub(crate) fn handle(&mut self, args: &[Vec<u8>]) -> Reply {
        let reply = self.dispatch(args);
        // A delivery is counted once the broker has spoken.
        if let Reply::Now(frame) = &reply {
            self.ctx.metrics.command(commands::label(&args[0]), error_code(frame));
        }
        reply
    }

    /// Whether more requests are buffered behind the one about to be
    /// handled (see [`Publisher::more_input`]).
    pub(crate) fn set_more_input(&mut self, more: bool) {
        if let State::Publisher(p) = &mut self.state {
            p.more_input = more;
        }
    }

    /// The buffered requests are handled: records held for the rest of a
    /// pipeline go now.
    pub(crate) fn release_held(&self) {
        if let State::Publisher(p) = &self.state {
            p.release(self.ctx.kafka.as_ref());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Grant, Snapshot};
    use crate::config::Settings;
    use crate::kafka::{Delivery, PublishError, Record};
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
            limiter: Arc::new(crate::limits::Limiter::new(Default::default(), Arc::default())),
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
