//! The one process guard of the tests: a child (a broker, a Redis, a TLS
//! tunnel, an S3 server) killed and reaped when the guard goes, so no test
//! leaks one, even when it panics.

use std::process::{Child, Command};

pub struct Guard(Child);

impl Guard {
    /// Spawns `command`; `what` names it in the panic if it cannot start.
    pub fn spawn(command: &mut Command, what: &str) -> Guard {
        Guard(command.spawn().unwrap_or_else(|e| panic!("starting {what}: {e}")))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`...) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {}", self.pid());
    }

    /// Waits for it to exit on its own.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().expect("waiting on a child")
    }

    /// Whether it has exited, with its status.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().expect("waiting on a child")
    }
}

impl From<Child> for Guard {
    fn from(child: Child) -> Guard {
        Guard(child)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
