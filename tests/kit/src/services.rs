//! Where the real services are (from the environment, as `make test` sets
//! it; the defaults match `scripts/services.sh up`), names and ports no
//! other test uses, temp dirs, and the project's installer scripts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) const HOW_TO_START: &str = "start the services with `scripts/services.sh up` (or run `make test`)";

pub fn brokers() -> String {
    std::env::var("DATABUS_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Server URL of MySQL, without a database.
pub fn mysql_url() -> String {
    std::env::var("DATABUS_MYSQL_URL").unwrap_or_else(|_| "mysql://databus:databus@127.0.0.1:3306".into())
}

pub(crate) fn redis_addr() -> String {
    std::env::var("DATABUS_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A port nothing listens on right now, and never given before in this
/// process: the kernel may hand a port just released out again, so two
/// calls (a server's port and its admin port, or two tests at once) could
/// get the same one (a CI run failed so: `admin port: cannot listen on
/// 127.0.0.1:38305` with the server already on it).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// A directory of the test's own under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(&format!("databus_{test}")));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` to `name` inside the directory.
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository (the kit is `tests/kit` in it): its `scripts/`, its `target/`.
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("the kit is tests/kit of the repository")
}

/// What one of the project's installer scripts (`scripts/<name>`, which
/// installs or builds what a test needs if missing) prints on stdout,
/// trimmed; `needs` says what it needs when it fails.
pub fn script_output(name: &str, args: &[&str], needs: &str) -> String {
    let script = repo_root().join("scripts").join(name);
    let out: Output = Command::new(&script)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed ({needs}):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The venv's python, from `scripts/pyvenv.sh` (which creates it if needed).
pub fn venv_python() -> PathBuf {
    PathBuf::from(script_output("pyvenv.sh", &[], "it needs python3 with venv and PyPI access"))
}
