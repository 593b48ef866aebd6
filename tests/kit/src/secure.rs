//! A secured Kafka and a throwaway PKI for the TLS and SASL tests.
//!
//! - [`Pki`]: a CA, a server certificate for 127.0.0.1/localhost, a client
//!   certificate, a server certificate for another host name, and a second
//!   ("rogue") CA that trusts none of them, made with the `openssl` command.
//! - [`SecureBroker`]: an Apache Kafka of the test's own with a secured
//!   listener ([`Security`]: SSL with or without client certificates, SASL
//!   over TCP or TLS with SCRAM users made when its storage is formatted or
//!   a PLAIN user in its JAAS config) beside the plain one that the test
//!   itself uses.

use std::path::PathBuf;
use std::process::Command;

use crate::kafka::{kafka_tool, NodeOptions, OwnBroker};
use crate::services::{free_port, TempDir, HOW_TO_START};
use crate::topics::create_topic_on;

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
        pki.leaf_for("wrong-host-server", "ca", "serverAuth", "DNS:wrong-host.invalid");
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

    /// `openssl req` with a new P-256 key, `<name>.key`, and `args`.
    fn req_with_new_key(&self, name: &str, args: &[&str]) {
        let key = format!("{name}.key");
        let new_key =
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &key];
        self.openssl(&[&new_key[..], args].concat());
    }

    fn ca(&self, name: &str) {
        self.req_with_new_key(
            name,
            &[
                "-x509",
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
            ],
        );
    }

    /// A certificate for 127.0.0.1 and localhost, signed by `ca`.
    fn leaf(&self, name: &str, ca: &str, usage: &str) {
        self.leaf_for(name, ca, usage, "IP:127.0.0.1,DNS:localhost")
    }

    /// A certificate for the subject alternative names `san`, signed by `ca`.
    fn leaf_for(&self, name: &str, ca: &str, usage: &str, san: &str) {
        self.req_with_new_key(name, &["-out", &format!("{name}.csr"), "-subj", &format!("/CN={name}")]);
        let ext = format!(
            "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
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

/// The one SASL user of every [`SecureBroker`] (SCRAM-SHA-256, SCRAM-SHA-512
/// and PLAIN alike).
pub const SASL_USER: &str = "databus";
pub const SASL_PASSWORD: &str = "sasl-pw-7f3e1";

/// How the broker's `SECURE` listener protects and authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS; with `client_auth`, a certificate signed by the test CA is
    /// required of every client (`ssl.client.auth=required`).
    Ssl { client_auth: bool },
    /// SASL with this mechanism over plain TCP.
    SaslPlaintext(&'static str),
    /// SASL with this mechanism over TLS.
    SaslSsl(&'static str),
}

impl Security {
    fn protocol(self) -> &'static str {
        match self {
            Security::Ssl { .. } => "SSL",
            Security::SaslPlaintext(_) => "SASL_PLAINTEXT",
            Security::SaslSsl(_) => "SASL_SSL",
        }
    }

    fn mechanism(self) -> Option<&'static str> {
        match self {
            Security::Ssl { .. } => None,
            Security::SaslPlaintext(m) | Security::SaslSsl(m) => Some(m),
        }
    }

    fn tls(self) -> bool {
        !matches!(self, Security::SaslPlaintext(_))
    }
}

/// Apache Kafka with a listener `SECURE` on `port`, secured as `security`
/// says; the PLAINTEXT listener is for the test itself (topics, ACLs).
pub struct SecureBroker {
    broker: OwnBroker,
    pub port: u16,
    security: Security,
}

impl SecureBroker {
    /// TLS only, with `topics` created.
    pub fn tls(pki: &Pki, topics: &[(&str, i32)]) -> SecureBroker {
        Self::start(pki, topics, Security::Ssl { client_auth: false })
    }

    /// TLS and SCRAM-SHA-512.
    pub fn sasl_tls(pki: &Pki, topics: &[(&str, i32)]) -> SecureBroker {
        Self::start(pki, topics, Security::SaslSsl("SCRAM-SHA-512"))
    }

    /// The broker's certificate is `server.pem` of `pki`; its users are
    /// [`SASL_USER`] (SCRAM users made when the storage is formatted, a
    /// PLAIN user in the JAAS config).
    pub fn start(pki: &Pki, topics: &[(&str, i32)], security: Security) -> SecureBroker {
        Self::start_with_cert(pki, topics, security, "server")
    }

    /// As [`SecureBroker::start`], with the certificate `<cert>.pem` of `pki`.
    pub fn start_with_cert(
        pki: &Pki,
        topics: &[(&str, i32)],
        security: Security,
        cert: &str,
    ) -> SecureBroker {
        Self::start_as(pki, topics, security, cert, String::new())
    }

    /// SASL_SSL with SCRAM-SHA-512 and Kafka's `StandardAuthorizer`: the
    /// secured listener's users may do only what an ACL allows
    /// ([`SecureBroker::allow`]); the plain listener's (the test's) anything.
    pub fn with_acls(pki: &Pki, topics: &[(&str, i32)]) -> SecureBroker {
        let acls = "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
                    super.users=User:ANONYMOUS\n";
        Self::start_as(pki, topics, Security::SaslSsl("SCRAM-SHA-512"), "server", acls.to_owned())
    }

    fn start_as(
        pki: &Pki,
        topics: &[(&str, i32)],
        security: Security,
        cert: &str,
        mut props: String,
    ) -> SecureBroker {
        if security.tls() {
            // Kafka reads PEM: the key (PKCS#8) and the certificate in one file.
            let keystore = pki.path(&format!("{cert}-keystore.pem"));
            let pem = |f: &str| std::fs::read_to_string(pki.path(f)).unwrap();
            std::fs::write(&keystore, pem(&format!("{cert}.key")) + &pem(&format!("{cert}.pem"))).unwrap();
            props +=
                &format!("ssl.keystore.type=PEM\nssl.keystore.location={}\n", keystore.to_str().unwrap());
        }
        if security == (Security::Ssl { client_auth: true }) {
            props += &format!(
                "ssl.truststore.type=PEM\nssl.truststore.location={}\nlistener.name.secure.ssl.client.auth=required\n",
                pki.path_str("ca.pem")
            );
        }
        let mut format_args = Vec::new();
        if let Some(mechanism) = security.mechanism() {
            let module = if mechanism == "PLAIN" {
                format!("org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}=\"{SASL_PASSWORD}\";")
            } else {
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".to_owned()
            };
            props += &format!(
                "listener.name.secure.sasl.enabled.mechanisms={mechanism}\n\
                 listener.name.secure.{}.sasl.jaas.config={module}\n",
                mechanism.to_ascii_lowercase()
            );
            for scram in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
                format_args.push("--add-scram".to_owned());
                format_args.push(format!("{scram}=[name={SASL_USER},password={SASL_PASSWORD}]"));
            }
        }
        let port = free_port();
        let options = NodeOptions {
            props,
            format_args,
            listeners: vec![("SECURE".into(), security.protocol().into(), port)],
        };
        let broker = OwnBroker::start_with(&options);
        for (topic, partitions) in topics {
            create_topic_on(&broker.addr(), topic, *partitions);
        }
        SecureBroker { broker, port, security }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The plain listener, for what must bypass the secured one.
    fn plain_addr(&self) -> String {
        self.broker.addr()
    }

    /// Kills the broker and starts it again on the same ports and data, so
    /// every client must log in anew.
    pub fn restart(&mut self) {
        self.broker.stop();
        self.broker.restart();
    }

    /// Allows [`SASL_USER`] `operation` (`Write`, `Read` ...) on `resource`
    /// (`--topic t`, `--group g`), with Kafka's own `AclCommand`.
    pub fn allow(&self, operation: &str, resource: &[&str]) {
        let principal = format!("User:{SASL_USER}");
        let args = ["--bootstrap-server", &self.plain_addr(), "--add", "--allow-principal", &principal];
        kafka_tool(
            "org.apache.kafka.tools.AclCommand",
            &[&args[..], &["--operation", operation], resource].concat(),
        );
    }

    /// Gives [`SASL_USER`] a new SCRAM-SHA-512 password (Kafka's own
    /// `ConfigCommand`, over the plain listener).
    pub fn set_scram_password(&self, password: &str) {
        let config = format!("SCRAM-SHA-512=[password={password}]");
        let args = ["--bootstrap-server", &self.plain_addr(), "--alter", "--add-config", &config];
        kafka_tool(
            "kafka.admin.ConfigCommand",
            &[&args[..], &["--entity-type", "users", "--entity-name", SASL_USER]].concat(),
        );
    }

    /// databus's `[clusters.<name>]` for this broker: TLS trusting `ca` of
    /// `pki` (with the client certificate when the broker wants one), and
    /// SASL as [`SASL_USER`] with `password`.
    pub fn cluster_toml(&self, name: &str, pki: &Pki, ca: &str, password: &str) -> String {
        let mut toml = format!("[clusters.{name}]\nbrokers = [\"{}\"]\n", self.addr());
        if self.security.tls() {
            toml += &format!("[clusters.{name}.tls]\nca_file = \"{}\"\n", pki.path_str(ca));
        }
        if self.security == (Security::Ssl { client_auth: true }) {
            toml += &format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                pki.path_str("client.pem"),
                pki.path_str("client.key")
            );
        }
        if let Some(mechanism) = self.security.mechanism() {
            toml += &format!(
                "[clusters.{name}.sasl]\nmechanism = \"{mechanism}\"\nusername = \"{SASL_USER}\"\npassword = \"{password}\"\n"
            );
        }
        toml
    }

    /// librdkafka properties of an independent client that trusts the CA
    /// and logs in as [`SASL_USER`], `bootstrap.servers` included.
    pub fn reader(&self, pki: &Pki) -> Vec<(&'static str, String)> {
        self.reader_as(pki, SASL_PASSWORD)
    }

    /// [`SecureBroker::reader`] with another password.
    pub fn reader_as(&self, pki: &Pki, password: &str) -> Vec<(&'static str, String)> {
        let mut props = vec![
            ("bootstrap.servers", self.addr()),
            ("security.protocol", self.security.protocol().to_ascii_lowercase()),
        ];
        if self.security.tls() {
            props.push(("ssl.ca.location", pki.path_str("ca.pem")));
        }
        if self.security == (Security::Ssl { client_auth: true }) {
            props.push(("ssl.certificate.location", pki.path_str("client.pem")));
            props.push(("ssl.key.location", pki.path_str("client.key")));
        }
        if let Some(mechanism) = self.security.mechanism() {
            props.push(("sasl.mechanism", mechanism.into()));
            props.push(("sasl.username", SASL_USER.into()));
            props.push(("sasl.password", password.into()));
        }
        props
    }
}
