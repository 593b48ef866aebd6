//! redis-cli itself, driven through a pipe as a person types into it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use crate::process::Guard;

/// An interactive `redis-cli` process, fed one line at a time on stdin, its
/// stdout read line by line. `--no-raw` prints replies as a terminal session
/// shows them (`OK`, `1) "..."`, `(error) ...`).
pub struct RedisCli {
    process: Guard,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl RedisCli {
    /// `extra` arguments come first (`--tls`, `--cacert` …).
    pub fn start(addr: SocketAddr, extra: &[&str]) -> RedisCli {
        let mut child = Command::new("redis-cli")
            .args(extra)
            .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string(), "--no-raw"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-cli ({e}); install it with `apt-get install redis-tools` \
                     (`scripts/services.sh up` does)"
                )
            });
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        RedisCli { stdin: child.stdin.take(), process: Guard::from(child), lines }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// The next line of a reply. The `(0.52s)` that redis-cli prints after a
    /// command slower than half a second is not part of it.
    fn next_line(&mut self, after: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if is_elapsed_note(&line) => continue,
                Ok(line) => return line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("redis-cli printed nothing within 30 s after `{after}`")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("redis-cli exited after `{after}`"),
            }
        }
    }

    /// Types one command whose reply is one line, and returns that line.
    pub fn line(&mut self, command: &str) -> String {
        self.send(command);
        self.next_line(command)
    }

    /// Types one command and returns every line of its reply: a `ping` with
    /// a marker follows it, and its echo ends the reply.
    pub fn lines(&mut self, command: &str) -> Vec<String> {
        const END: &str = "end-of-reply-4f1c";
        self.send(command);
        self.send(&format!("ping {END}"));
        let mut out = Vec::new();
        loop {
            let line = self.next_line(command);
            if line == format!("\"{END}\"") {
                return out;
            }
            out.push(line);
        }
    }

    /// Ends the session as a user does (EOF on stdin) and checks the exit.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.process.wait();
        assert!(status.success(), "redis-cli exited with {status}");
    }
}

/// `(0.52s)`: redis-cli's note of how long a slow command took.
fn is_elapsed_note(line: &str) -> bool {
    line.strip_prefix('(').and_then(|l| l.strip_suffix("s)")).is_some_and(|secs| secs.parse::<f64>().is_ok())
}

/// Undoes redis-cli's quoting of a bulk string (`"..."` with `\"`, `\\`,
/// `\n`, `\xHH` … escapes).
pub fn unquote_cli(quoted: &str) -> Vec<u8> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a quoted string: {quoted}"));
    let mut out = Vec::new();
    let mut bytes = inner.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'a') => out.push(7),
            Some(b'b') => out.push(8),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
            }
            Some(other) => out.push(other),
            None => panic!("dangling backslash in {quoted}"),
        }
    }
    out
}
