//! One client socket and everything that touches it: reads append to a
//! buffer the parser looks at; replies go out, in request order, through
//! the connection's outbox (`outbox.rs`), which alone decides whether a
//! published record's reply is written by the delivery thread (`handoff.rs`)
//! or by the connection's own. The socket is private to this module and its
//! two submodules: one writer per socket holds by ownership. The caller
//! says how much unparsed input it accepts, so the buffer never outgrows
//! the request bound of the connection's state.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

mod handoff;
mod outbox;

use outbox::Outbox;

use super::reply::Reply;
use crate::resp::Frame;

/// A client's byte stream: the socket itself, or TLS over it.
pub(crate) enum Stream {
    /// Shared with the connection's [`Handoff`], through which the
    /// delivery thread writes a handed-over reply.
    Plain(Arc<TcpStream>),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    /// TLS over `socket`, its handshake still to come.
    pub(crate) fn tls(socket: TcpStream, config: Arc<ServerConfig>) -> Result<Stream, rustls::Error> {
        Ok(Stream::Tls(Box::new(StreamOwned::new(ServerConnection::new(config)?, socket))))
    }

    /// The socket underneath, for its options.
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => (&**s).read(buf),
            // A peer that drops the socket without close_notify has still
            // closed the connection; nothing is lost, since every request is
            // length-checked and parsed whole.
            Stream::Tls(t) => match t.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => (&**s).write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => (&**s).flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// Read size per call; large enough for a pipelined burst, small enough to
/// keep on the worker's stack.
const READ_CHUNK: usize = 16 * 1024;
/// Read size while reads come in small: a client that waits for each reply
/// sends one request at a time, and zeroing a whole [`READ_CHUNK`] for it
/// was 2 % of databus's CPU on loopback at 100 clients. A read that fills
/// it makes the next one [`READ_CHUNK`] again.
const SMALL_READ: usize = 2 * 1024;
/// Buffers above this size are released once empty, so one large value does
/// not pin memory for the rest of a long-lived connection.
const KEEP_CAPACITY: usize = 64 * 1024;

pub(crate) enum ReadOutcome {
    Data,
    Closed,
    TimedOut,
    Failed(io::Error),
}

pub(crate) struct Connection {
    stream: Stream,
    input: Vec<u8>,
    /// Bytes of `input` already parsed.
    start: usize,
    /// The socket's read timeout as last set, to skip a syscall per read.
    read_timeout: Option<Duration>,
    /// The last read filled a [`SMALL_READ`]: read a [`READ_CHUNK`] next.
    big_reads: bool,
    /// The replies, in order, and the only way out to the socket.
    outbox: Outbox,
}

/// Tells, without blocking or taking anything from it, whether the client
/// hung up: a zero-byte peek at the socket (end of stream) or an error. Input
/// waiting to be read is no hang-up. Over TLS a client's `close_notify`
/// counts as input, so only a bare close is seen there.
pub(crate) struct HangUpWatch(TcpStream);

impl HangUpWatch {
    pub(crate) fn hung_up(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
        match socket2::SockRef::from(&self.0).recv_with_flags(&mut byte, flags) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted),
        }
    }
}

impl Connection {
    /// A [`HangUpWatch`] on this connection's socket.
    pub(crate) fn hang_up_watch(&self) -> io::Result<HangUpWatch> {
        self.stream.socket().try_clone().map(HangUpWatch)
    }

    pub(crate) fn new(stream: Stream, write_timeout: Duration) -> io::Result<Connection> {
        stream.socket().set_nodelay(true)?;
        stream.socket().set_write_timeout(Some(write_timeout))?;
        let plain = match &stream {
            Stream::Plain(socket) => Some(socket.clone()),
            Stream::Tls(_) => None,
        };
        Ok(Connection {
            stream,
            input: Vec::new(),
            start: 0,
            read_timeout: None,
            big_reads: false,
            outbox: Outbox::new(plain),
        })
    }

    /// Completes a TLS handshake within `timeout` (nothing to do for a plain
    /// socket), so a peer that stalls, speaks plain text or presents a bad
    /// certificate is turned away before any request is read.
    pub(crate) fn handshake(&mut self, timeout: Duration) -> io::Result<()> {
        let Stream::Tls(tls) = &mut self.stream else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        while tls.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake not done within the auth timeout",
                ));
            }
            tls.sock.set_read_timeout(Some(left))?;
            tls.sock.set_write_timeout(Some(left))?;
            tls.conn.complete_io(&mut tls.sock)?;
        }
        tls.sock.set_write_timeout(Some(timeout))?;
        // The read timeout changed under the cache.
        self.read_timeout = None;
        Ok(())
    }

    /// Longest a write may block on a client that does not read.
    pub(crate) fn set_write_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.socket().set_write_timeout(Some(timeout))
    }

    /// Queues a request's reply behind the others. With `may_hand_off` (a
    /// client that waits for each reply), a published record's reply may go
    /// to the delivery thread if it is the only one outstanding and no
    /// input is buffered (see `handoff.rs`).
    pub(crate) fn answer(&mut self, reply: Reply, may_hand_off: bool) {
        if may_hand_off && self.start == self.input.len() {
            self.outbox.offer(reply);
        } else {
            self.outbox.push(reply);
        }
    }

    /// A reply made now, behind the others (an error the connection closes with).
    pub(crate) fn answer_now(&mut self, frame: Frame) {
        self.outbox.push(Reply::Now(frame));
    }

    /// Replies waiting to be encoded, a handed-over one aside.
    pub(crate) fn replies_waiting(&self) -> usize {
        self.outbox.waiting()
    }

    /// Encoded replies not yet written.
    pub(crate) fn output_bytes(&self) -> usize {
        self.outbox.queued_bytes()
    }

    /// Whether a handed-over reply is out: nothing behind it is written until
    /// it is taken back.
    pub(crate) fn reply_out(&self) -> bool {
        self.outbox.reply_out()
    }

    /// Takes a handed-over reply back (waiting for its verdict until its
    /// deadline); whether there was one.
    pub(crate) fn take_back(&mut self) -> bool {
        self.outbox.take_back()
    }

    /// Waits for the next reply and encodes it, with those settled after it.
    pub(crate) fn answer_next(&mut self) {
        self.outbox.answer_next()
    }

    /// Encodes every reply, waiting for each, and writes them: the
    /// connection closes.
    pub(crate) fn answer_all(&mut self) {
        self.outbox.answer_all();
        let _ = self.flush();
    }

    /// The end of the connection: a reply still handed over goes out first,
    /// and the socket is shut down if the delivery thread shares it (so the
    /// client sees the close now, not when a late verdict lets go of it).
    pub(crate) fn finish(mut self) {
        if self.outbox.take_back() {
            let _ = self.flush();
        }
        self.outbox.shut_down_shared();
    }

    /// Unparsed input.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.input[self.start..]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Waits up to `timeout` for more input, keeping at most `max_buffered`
    /// unparsed bytes.
    pub(crate) fn read_more(&mut self, timeout: Duration, max_buffered: usize) -> ReadOutcome {
        if self.read_timeout != Some(timeout) {
            if let Err(e) = self.stream.socket().set_read_timeout(Some(timeout)) {
                return ReadOutcome::Failed(e);
            }
            self.read_timeout = Some(timeout);
        }
        self.read(max_buffered, true)
    }

    /// Reads what has come, up to the buffer's bound. A small read that
    /// fills its buffer means the client sends several requests at a time:
    /// what else has come is taken at once, without waiting, so a pipeline
    /// is handled (and produced) whole rather than cut at 2 KiB.
    fn read(&mut self, max_buffered: usize, blocking: bool) -> ReadOutcome {
        let was_small = !self.big_reads;
        let outcome = self.read_chunk(max_buffered);
        if !(was_small && self.big_reads && matches!(outcome, ReadOutcome::Data)) {
            return outcome;
        }
        if !blocking {
            let _ = self.read_chunk(max_buffered);
            return outcome;
        }
        // Nothing more yet, an end or an error: the next read sees it.
        match self.without_waiting(|c| c.read_chunk(max_buffered)) {
            Ok(_) => outcome,
            Err(e) => ReadOutcome::Failed(e),
        }
    }

    /// Runs `f` with the socket non-blocking; an error if the socket's mode
    /// could not be set or set back.
    fn without_waiting<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> io::Result<T> {
        self.stream.socket().set_nonblocking(true)?;
        let out = f(self);
        self.stream.socket().set_nonblocking(false)?;
        Ok(out)
    }

    fn read_chunk(&mut self, max_buffered: usize) -> ReadOutcome {
        self.compact();
        let room = max_buffered.saturating_sub(self.input.len()).min(READ_CHUNK);
        if room == 0 {
            // The parser refuses a request over the bound before it fills
            // the buffer, so this means a caller's bug, not a client's.
            return ReadOutcome::Failed(io::Error::other("input buffer full"));
        }
        let mut small = [0u8; SMALL_READ];
        let mut big;
        let chunk: &mut [u8] = if self.big_reads {
            big = [0u8; READ_CHUNK];
            &mut big[..room]
        } else {
            &mut small[..room.min(SMALL_READ)]
        };
        loop {
            return match self.stream.read(chunk) {
                Ok(0) => ReadOutcome::Closed,
                Ok(n) => {
                    self.big_reads = n >= SMALL_READ;
                    self.grow_input(n, max_buffered);
                    self.input.extend_from_slice(&chunk[..n]);
                    ReadOutcome::Data
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    ReadOutcome::TimedOut
                }
                Err(e) => ReadOutcome::Failed(e),
            };
        }
    }

    /// Doubles the input's capacity as `Vec` would, but never past
    /// `max_buffered`, so a connection's buffer stays within its bound.
    fn grow_input(&mut self, more: usize, max_buffered: usize) {
        let needed = self.input.len() + more;
        if needed > self.input.capacity() {
            let target = (self.input.capacity() * 2).clamp(needed, max_buffered.max(needed));
            self.input.reserve_exact(target - self.input.len());
        }
    }

    /// Takes whatever input has already arrived, without waiting, keeping
    /// at most `max_buffered` unparsed bytes: `TimedOut` when there is none.
    pub(crate) fn read_available(&mut self, max_buffered: usize) -> ReadOutcome {
        self.without_waiting(|c| c.read(max_buffered, false)).unwrap_or_else(ReadOutcome::Failed)
    }

    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        self.input.drain(..self.start);
        self.start = 0;
        if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            self.input = Vec::new();
        }
    }

    /// Writes what the outbox has encoded.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.outbox.flush(&mut self.stream)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A connected pair of sockets on loopback: (client, server).
    pub(super) fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    fn pair() -> (TcpStream, Connection) {
        let (client, server) = socket_pair();
        (client, Connection::new(Stream::Plain(Arc::new(server)), Duration::from_secs(5)).unwrap())
    }

    fn read_until(conn: &mut Connection, len: usize) -> usize {
        let mut reads = 0;
        while conn.buffered().len() < len {
            let outcome = conn.read_more(Duration::from_secs(5), 1 << 20);
            assert!(matches!(outcome, ReadOutcome::Data), "read {reads} found no data");
            reads += 1;
        }
        reads
    }

    #[test]
    fn reads_start_small_grow_for_a_burst_and_keep_every_byte() {
        let (mut client, mut conn) = pair();
        client.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        read_until(&mut conn, 14);
        assert!(!conn.big_reads, "one small request keeps reads small");
        conn.consume(14);

        let burst: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&burst).unwrap();
        let reads = read_until(&mut conn, burst.len());
        assert_eq!(conn.buffered(), &burst[..]);
        // Small reads only would take 20; after the first fills, 16 KiB each.
        assert!(reads < burst.len() / SMALL_READ, "{reads} reads for {} bytes", burst.len());
        conn.consume(burst.len());

        client.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        read_until(&mut conn, 14);
        assert!(!conn.big_reads, "small again after a small read");
        conn.consume(14);

        // A pipeline already in is taken whole by one read, not cut at the
        // small read's size (its requests would go in two produce requests).
        let mut set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n".to_vec();
        set.extend([b'v'; 100]);
        set.extend(b"\r\n");
        let pipeline = set.repeat(20);
        assert!(pipeline.len() > SMALL_READ);
        client.write_all(&pipeline).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(read_until(&mut conn, pipeline.len()), 1, "a pipeline of 20 in one read");
        assert_eq!(conn.buffered(), &pipeline[..]);
    }
}
