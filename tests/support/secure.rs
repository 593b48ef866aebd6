//! A secured Kafka and a throwaway PKI for the TLS and SASL tests.
//!
//! - [`Pki`]: a CA, a server certificate for 127.0.0.1/localhost, a client
//!   certificate, and a second ("rogue") CA that trusts none of them, made
//!   with the `openssl` command.
//! - [`SecureBroker`]: tansu behind stunnel (tansu's own TLS listener closes
//!   the handshake, so a terminator from Debian does TLS and tansu
//!   advertises its port), optionally with SASL authentication required.
//!   This tansu build cannot hold a SCRAM user across the restart that turns
//!   authentication on (its storage keeps users in memory, and its CLI cannot
//!   authenticate), so with SASL it has no users: every login is refused,
//!   which is what the wrong-password test needs.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Guard, TempDir, HOW_TO_START};

const WAIT: Duration = Duration::from_secs(30);

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited with {status} before listening on {port}");
        }
        assert!(Instant::now() < deadline, "{what} not listening on {port} after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Certificates and keys in a directory of the test's own.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new(test: &str) -> Pki {
        let pki = Pki { dir: TempDir::new(&format!("pki_{test}")) };
        pki.ca("ca");
        pki.ca("rogue-ca");
        pki.leaf("server", "ca", "serverAuth");
        pki.leaf("client", "ca", "clientAuth");
        pki.leaf("rogue-server", "rogue-ca", "serverAuth");
        pki.leaf("rogue-client", "rogue-ca", "clientAuth");
        pki
    }

    /// `<name>.pem` or `<name>.key` in the directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.0.join(file)
    }

    pub fn path_str(&self, file: &str) -> String {
        self.path(file).to_str().unwrap().to_owned()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir.0)
            .output()
            .unwrap_or_else(|e| panic!("running openssl: {e}; {HOW_TO_START}"));
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=databus test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// A certificate for 127.0.0.1 and localhost, signed by `ca`.
    fn leaf(&self, name: &str, ca: &str, usage: &str) {
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        let ext = format!(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
        );
        std::fs::write(self.path(&format!("{name}.ext")), ext).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

fn tansu() -> String {
    std::env::var("DATABUS_TANSU")
        .unwrap_or_else(|_| panic!("DATABUS_TANSU must name the tansu binary; {HOW_TO_START}"))
}

fn stunnel() -> &'static str {
    ["stunnel4", "stunnel"]
        .into_iter()
        .find(|b| Command::new("which").arg(b).output().is_ok_and(|o| o.status.success()))
        .unwrap_or_else(|| panic!("stunnel is not installed; {HOW_TO_START}"))
}

/// tansu behind stunnel: clients reach it only through TLS on `tls_port`.
pub struct SecureBroker {
    pub tls_port: u16,
    plain_port: u16,
    _stunnel: Guard,
    _tansu: Guard,
    _dir: TempDir,
}

impl SecureBroker {
    /// TLS only, with `topics` created.
    pub fn tls(pki: &Pki, topics: &[(&str, i32)]) -> SecureBroker {
        Self::start(pki, topics, false)
    }

    /// TLS, and SASL required of every client (none can pass, see above).
    pub fn sasl_tls(pki: &Pki, topics: &[(&str, i32)]) -> SecureBroker {
        Self::start(pki, topics, true)
    }

    fn start(pki: &Pki, topics: &[(&str, i32)], sasl: bool) -> SecureBroker {
        let dir = TempDir::new("secure_broker");
        let (plain_port, tls_port) = (free_port(), free_port());
        let run_tansu = |authentication: bool| {
            let mut cmd = Command::new(tansu());
            cmd.args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{plain_port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{tls_port}"),
            ]);
            if authentication {
                cmd.arg("--authentication");
            }
            let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            wait_for_port(plain_port, "tansu", &mut child);
            Guard::from(child)
        };
        let cli = |args: &[&str]| {
            let broker = format!("tcp://127.0.0.1:{plain_port}");
            let out = Command::new("timeout")
                .arg("30")
                .arg(tansu())
                .args(args)
                .args(["--broker", &broker])
                .output()
                .unwrap();
            assert!(out.status.success(), "tansu {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        // Topics first: with authentication on, the CLI cannot make them.
        let mut tansu_child = run_tansu(false);
        for (topic, partitions) in topics {
            cli(&["topic", "create", topic, "--partitions", &partitions.to_string()]);
        }
        if sasl {
            // In-memory storage: the restart forgets the topics too, but a
            // refused login never gets as far as a topic.
            drop(tansu_child);
            tansu_child = run_tansu(true);
        }

        let conf = dir.write(
            "stunnel.conf",
            &format!(
                "foreground = yes\npid =\nsyslog = no\n[kafka]\naccept = 127.0.0.1:{tls_port}\n\
                 connect = 127.0.0.1:{plain_port}\ncert = {}\nkey = {}\n",
                pki.path_str("server.pem"),
                pki.path_str("server.key")
            ),
        );
        let mut child = Command::new(stunnel())
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting stunnel: {e}"));
        wait_for_port(tls_port, "stunnel", &mut child);
        SecureBroker { tls_port, plain_port, _stunnel: Guard::from(child), _tansu: tansu_child, _dir: dir }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port)
    }

    /// The plain port behind stunnel, for what must bypass it.
    pub fn plain_addr(&self) -> String {
        format!("127.0.0.1:{}", self.plain_port)
    }
}

/// Client properties of an independent reader that trusts `ca`.
pub fn tls_reader(broker: &SecureBroker, ca: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("bootstrap.servers", broker.addr()),
        ("security.protocol", "ssl".into()),
        ("ssl.ca.location", ca.to_str().unwrap().into()),
    ]
}
