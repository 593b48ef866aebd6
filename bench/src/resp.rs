//! A lean RESP client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use databus::resp::{parse_reply, Frame, Limits};

use crate::{Res, APP_KEY, APP_SECRET, IO_TIMEOUT};

pub(crate) struct RespConn {
    stream: TcpStream,
    input: Vec<u8>,
    start: usize,
    output: Vec<u8>,
    chunk: Box<[u8]>,
}

const REPLY_LIMITS: Limits = Limits {
    max_bulk_len: 64 << 20,
    max_array_len: 1 << 20,
    max_inline_len: 1 << 20,
    max_request_len: usize::MAX,
    max_discard_len: 0,
};

impl RespConn {
    pub(crate) fn connect(addr: SocketAddr) -> Res<RespConn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(RespConn {
            stream,
            input: Vec::new(),
            start: 0,
            output: Vec::new(),
            chunk: vec![0; 64 * 1024].into_boxed_slice(),
        })
    }

    /// Queues one command; [`RespConn::send`] writes the queue in one go.
    pub(crate) fn push(&mut self, args: &[&[u8]]) {
        let out = &mut self.output;
        let _ = write!(out, "*{}\r\n", args.len());
        for a in args {
            let _ = write!(out, "${}\r\n", a.len());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
    }

    pub(crate) fn send(&mut self) -> Res<()> {
        self.stream.write_all(&self.output)?;
        self.output.clear();
        Ok(())
    }

    fn fill(&mut self) -> Res<()> {
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        let n = self.stream.read(&mut self.chunk)?;
        if n == 0 {
            return Err("databus closed the connection".into());
        }
        self.input.extend_from_slice(&self.chunk[..n]);
        Ok(())
    }

    pub(crate) fn read(&mut self) -> Res<Frame> {
        loop {
            if let Some((frame, used)) = parse_reply(&self.input[self.start..], &REPLY_LIMITS)? {
                self.start += used;
                return Ok(frame);
            }
            self.fill()?;
        }
    }

    /// Reads one reply that should be `+OK`; the common case allocates nothing.
    pub(crate) fn read_ok(&mut self) -> Res<Result<(), String>> {
        loop {
            let rest = &self.input[self.start..];
            if rest.starts_with(b"+OK\r\n") {
                self.start += 5;
                return Ok(Ok(()));
            }
            if rest.len() >= 5 || rest.first().is_some_and(|&b| b != b'+') {
                return Ok(match self.read()? {
                    Frame::Simple(s) if s == "OK" => Ok(()),
                    other => Err(format!("{other:?}")),
                });
            }
            self.fill()?;
        }
    }

    pub(crate) fn call(&mut self, args: &[&[u8]]) -> Res<Frame> {
        self.push(args);
        self.send()?;
        self.read()
    }

    pub(crate) fn auth(addr: SocketAddr, auth: &str) -> Res<RespConn> {
        let mut c = RespConn::connect(addr)?;
        match c.call(&[b"AUTH", auth.as_bytes()])? {
            Frame::Simple(s) if s == "OK" => Ok(c),
            other => Err(format!("AUTH {auth:?}: {other:?}").into()),
        }
    }
}

pub(crate) fn auth_string(group: &str, topic: &str, role: &str, extra: &str) -> String {
    format!("{APP_KEY}:{APP_SECRET}@{group}/topic={topic}&role={role}{extra}")
}
