//! The compiled `databus` binary as a child process: started from a config
//! file, awaited on its port, its stderr (the log) collected, killed on drop
//! so that no test leaks one.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::process::Guard;
use crate::services::brokers;

/// The `databus` binary that `cargo test` builds for the tests: cargo 1.94
/// and later name it at run time; before, it is in the profile directory
/// above the test's own executable (`target/debug/deps/<test>-<hash>`). A
/// crate of its own, the kit has no `env!("CARGO_BIN_EXE_databus")`.
pub fn databus_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_databus") {
        return path.into();
    }
    let test = std::env::current_exe().expect("the test's own executable");
    let path = test.parent().and_then(Path::parent).expect("a test in target/<profile>/deps").join("databus");
    assert!(path.is_file(), "no databus binary at {} (`cargo test` builds it)", path.display());
    path
}

/// Longest the binary may take to start listening, or to exit after a signal
/// or on a bad config.
pub const BOUND: Duration = Duration::from_secs(30);

/// A complete config for the binary: the test's database, `cluster1` on
/// `brokers` (comma-separated, items may be quoted; empty for none), and
/// `extra` (a TOML fragment) merged in.
pub fn daemon_config(port: u16, mysql_url: &str, brokers: &str, extra: &str) -> String {
    let list: Vec<String> =
        brokers.split(',').map(|b| b.trim().trim_matches('"').to_owned()).filter(|b| !b.is_empty()).collect();
    Config::new(&format!("127.0.0.1:{port}"))
        .mysql(mysql_url)
        .set("producer.timeout_ms", 5000)
        .cluster("cluster1", &list)
        .merge(extra)
        .to_toml()
}

/// `brokers()` (comma-separated) as a TOML list.
pub fn broker_list() -> String {
    brokers().split(',').map(|b| format!("\"{}\"", b.trim())).collect::<Vec<_>>().join(", ")
}

/// Resident memory of process `pid`, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A running `databus` child. Its stderr (the log) is collected by a thread
/// so the pipe never fills; its process guard kills it on drop, so no test
/// leaks one (the reader ends when the pipe closes).
pub struct Daemon {
    process: Guard,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts the binary with `args` and waits until `port` accepts
    /// connections. Panics with the child's stderr if it exits first.
    pub fn start(args: &[&str], port: u16) -> Daemon {
        let mut command = Command::new(databus_bin());
        command.args(args);
        Daemon::spawn(command, args, port)
    }

    /// As [`Daemon::start`], under open-file limits `soft` and `hard`
    /// (`ulimit -n`, set by the shell that then becomes databus).
    pub fn start_limited(args: &[&str], port: u16, soft: u64, hard: u64) -> Daemon {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!("ulimit -S -n {soft} && ulimit -H -n {hard} && exec \"$0\" \"$@\""))
            .arg(databus_bin())
            .args(args);
        Daemon::spawn(command, args, port)
    }

    fn spawn(mut command: Command, args: &[&str], port: u16) -> Daemon {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", databus_bin().display()));
        let mut pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let stderr = stderr.clone();
            thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => stderr.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
            })
        };
        let mut d = Daemon {
            process: Guard::from(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr,
            reader: Some(reader),
        };
        let deadline = Instant::now() + BOUND;
        loop {
            if TcpStream::connect_timeout(&d.addr, Duration::from_secs(1)).is_ok() {
                return d;
            }
            if let Some(status) = d.process.try_wait() {
                panic!(
                    "databus {args:?} exited with {status} before listening on {}; stderr:\n{}",
                    d.addr,
                    d.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "databus {args:?} not listening on {} after {BOUND:?}; stderr:\n{}",
                d.addr,
                d.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether it has exited, with its status.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.process.try_wait()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {}: {status}", self.pid());
    }

    /// Waits (bounded) for the child to exit, then for its stderr to close.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.process.try_wait() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "databus (pid {}) still running {BOUND:?} after the signal; stderr:\n{}",
                self.pid(),
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the child wrote on stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}
