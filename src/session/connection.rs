//! Buffered IO of one client socket: reads append to a buffer the parser
//! looks at, replies are queued and written in one go. The caller says how
//! much unparsed input it accepts, so the buffer never outgrows the request
//! bound of the connection's state.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::resp::Frame;

/// Read size per call; large enough for a pipelined burst, small enough to
/// keep on the worker's stack.
const READ_CHUNK: usize = 16 * 1024;
/// Buffers above this size are released once empty, so one large value does
/// not pin memory for the rest of a long-lived connection.
const KEEP_CAPACITY: usize = 64 * 1024;

pub enum ReadOutcome {
    Data,
    Closed,
    TimedOut,
    Failed(io::Error),
}

pub struct Connection {
    stream: TcpStream,
    input: Vec<u8>,
    /// Bytes of `input` already parsed.
    start: usize,
    output: Vec<u8>,
    /// The socket's read timeout as last set, to skip a syscall per read.
    read_timeout: Option<Duration>,
}

impl Connection {
    pub fn new(stream: TcpStream, write_timeout: Duration) -> io::Result<Connection> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(write_timeout))?;
        Ok(Connection { stream, input: Vec::new(), start: 0, output: Vec::new(), read_timeout: None })
    }

    /// Longest a write may block on a client that does not read.
    pub fn set_write_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.set_write_timeout(Some(timeout))
    }

    /// Unparsed input.
    pub fn buffered(&self) -> &[u8] {
        &self.input[self.start..]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Bytes of replies queued and not yet written.
    pub fn queued(&self) -> usize {
        self.output.len()
    }

    /// Waits up to `timeout` for more input, keeping at most `max_buffered`
    /// unparsed bytes.
    pub fn read_more(&mut self, timeout: Duration, max_buffered: usize) -> ReadOutcome {
        if self.read_timeout != Some(timeout) {
            if let Err(e) = self.stream.set_read_timeout(Some(timeout)) {
                return ReadOutcome::Failed(e);
            }
            self.read_timeout = Some(timeout);
        }
        self.read(max_buffered)
    }

    fn read(&mut self, max_buffered: usize) -> ReadOutcome {
        self.compact();
        let room = max_buffered.saturating_sub(self.input.len()).min(READ_CHUNK);
        if room == 0 {
            // The parser refuses a request over the bound before it fills
            // the buffer, so this means a caller's bug, not a client's.
            return ReadOutcome::Failed(io::Error::other("input buffer full"));
        }
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            return match self.stream.read(&mut chunk[..room]) {
                Ok(0) => ReadOutcome::Closed,
                Ok(n) => {
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
    pub fn read_available(&mut self, max_buffered: usize) -> ReadOutcome {
        if let Err(e) = self.stream.set_nonblocking(true) {
            return ReadOutcome::Failed(e);
        }
        let outcome = self.read(max_buffered);
        if let Err(e) = self.stream.set_nonblocking(false) {
            return ReadOutcome::Failed(e);
        }
        outcome
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

    pub fn queue(&mut self, frame: &Frame) {
        frame.encode(&mut self.output);
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.output);
        self.output.clear();
        if self.output.capacity() > KEEP_CAPACITY {
            self.output = Vec::new();
        }
        result
    }
}
