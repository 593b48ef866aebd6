//! Ctrl-C (SIGINT) and SIGTERM. An `MGET` can block for databus's whole wait
//! timeout and a blocking socket read cannot be interrupted, so the signal
//! thread exits the process itself. That is clean at any moment except
//! between printing a message and committing it; the main thread holds the
//! `busy` lock over exactly those stretches, and the signal thread waits for
//! it. Messages fetched but not yet printed are simply delivered again later.
//!
//! A signal that lands on the main thread makes its blocking read fail with
//! EINTR, which looks like a lost connection. The handler raises `requested`
//! before that read returns, so the main thread can tell the two apart and
//! leave the exit to the signal thread instead of reporting a retry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

pub struct Stop {
    busy: Mutex<()>,
    requested: Arc<AtomicBool>,
}

impl Stop {
    /// Starts the signal thread.
    pub fn install() -> std::io::Result<Arc<Stop>> {
        let stop = Arc::new(Stop { busy: Mutex::new(()), requested: Arc::new(AtomicBool::new(false)) });
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register(signal, stop.requested.clone())?;
        }
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let waiting = stop.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _quiet = waiting.busy();
                eprintln!("example_cli: stopped by signal {signal}");
                std::process::exit(0);
            }
        })?;
        Ok(stop)
    }

    /// While the guard lives, a signal waits instead of exiting.
    pub fn busy(&self) -> MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When a signal came, waits for the signal thread to end the process
    /// (the caller holds no `busy` guard); returns at once otherwise.
    pub fn exit_if_requested(&self) {
        while self.requested.load(Ordering::SeqCst) {
            std::thread::park();
        }
    }
}
