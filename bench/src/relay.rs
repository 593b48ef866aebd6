//! A delay relay: a TCP proxy that holds every byte for a fixed one-way
//! delay in each direction, so that the bench sees a network between the
//! fronts (databus, the Go databus, the bare and the Java producer) and
//! Kafka, as a deployment does: this kernel has no netem, and on loopback
//! a round trip costs nothing, which hides what a produce request per
//! partition costs. `databus-bench relay LISTEN TARGET DELAY_US` runs one
//! until killed; scripts/bench.sh puts it in front of a broker whose
//! relayed listener advertises the relay's address, so every connection a
//! client makes (bootstrap and per broker) goes through it.
//!
//! Each direction of a connection has a reader thread, which stamps what
//! it reads with the time it is due, and a writer thread, which sleeps
//! until then and writes everything due in one write. Sleeping, not
//! spinning: a spinning relay would take a core of a 2-core machine from
//! the processes measured. The relay's threads ask for a timer slack of
//! 1 µs (Linux's default, 50 µs, would make every sleep end that much
//! late); a busy machine still wakes them late at times, so the delay is
//! at least the one asked for, and the relay measures what it really held
//! each chunk and prints the mean and the 99th percentile when it gets a
//! line on stdin (or every minute).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::Res;

/// What the relay really held the chunks it forwarded, in microseconds.
#[derive(Default)]
struct Held {
    samples: Vec<u32>,
}

impl Held {
    fn summary(&mut self) -> String {
        if self.samples.is_empty() {
            return "no chunks".into();
        }
        self.samples.sort_unstable();
        let n = self.samples.len();
        let mean = self.samples.iter().map(|&s| s as u64).sum::<u64>() / n as u64;
        let p99 = self.samples[(n * 99 / 100).min(n - 1)];
        let summary = format!("{n} chunks, held mean {mean} µs, p99 {p99} µs");
        self.samples.clear();
        summary
    }
}

/// Most samples kept between two summaries.
const MAX_SAMPLES: usize = 1_000_000;

pub(crate) fn run(listen: &str, target: &str, delay: Duration) -> Res<()> {
    // Inherited by every thread made from now on.
    nix::sys::prctl::set_timerslack(1_000)?;
    let listener = TcpListener::bind(listen)?;
    let held = Arc::new(Mutex::new(Held::default()));
    eprintln!("relay: {listen} -> {target}, {} µs each way", delay.as_micros());
    let report = held.clone();
    thread::spawn(move || loop {
        let mut line = String::new();
        let asked = std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0);
        if !asked {
            thread::sleep(Duration::from_secs(60));
        }
        let summary = report.lock().unwrap_or_else(|e| e.into_inner()).summary();
        println!("relay: {summary}");
    });
    for client in listener.incoming() {
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                eprintln!("relay: accept: {e}");
                continue;
            }
        };
        let server = match TcpStream::connect(target) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("relay: connect {target}: {e}");
                continue;
            }
        };
        for s in [&client, &server] {
            s.set_nodelay(true)?;
        }
        pipe(client.try_clone()?, server.try_clone()?, delay, held.clone());
        pipe(server, client, delay, held.clone());
    }
    Ok(())
}

/// Forwards `from` to `to`, each chunk `delay` after it was read; closes
/// `to`'s sending side when `from` ends.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration, held: Arc<Mutex<Held>>) {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if chunks.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    thread::spawn(move || {
        let mut out = Vec::new();
        let mut stamps = Vec::new();
        // A chunk taken from the channel that was not due yet.
        let mut next: Option<(Instant, Vec<u8>)> = None;
        while let Some((read_at, chunk)) = next.take().or_else(|| due.recv().ok()) {
            let now = Instant::now();
            if read_at + delay > now {
                thread::sleep(read_at + delay - now);
            }
            // Everything else already due goes in the same write.
            out.clear();
            stamps.clear();
            out.extend_from_slice(&chunk);
            stamps.push(read_at);
            let now = Instant::now();
            while let Ok((read_at, chunk)) = due.try_recv() {
                if read_at + delay > now {
                    next = Some((read_at, chunk));
                    break;
                }
                out.extend_from_slice(&chunk);
                stamps.push(read_at);
            }
            if to.write_all(&out).is_err() {
                break;
            }
            let written = Instant::now();
            let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
            if held.samples.len() < MAX_SAMPLES {
                held.samples.extend(stamps.iter().map(|s| written.duration_since(*s).as_micros() as u32));
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
