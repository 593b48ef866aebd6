//! A secured Kafka and a throwaway PKI for the TLS and SASL tests.
//!
//! - [`Pki`]: a CA, a server certificate for 127.0.0.1/localhost, a client
//!   certificate, and a second ("rogue") CA that trusts none of them, made
//!   with the `openssl` command.
//! - [`SecureBroker`]: an Apache Kafka of the test's own with a secured
//!   listener (SSL, or SASL_SSL with SCRAM users made when its storage is
//!   formatted) beside the plain one that the test's admin client uses.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{create_topic_on, free_port, NodeOptions, OwnBroker, TempDir, HOW_TO_START};

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

/// A SCRAM-SHA-512 user of [`SecureBroker::sasl_tls`].
pub const SCRAM_USER: &str = "databus";
pub const SCRAM_PASSWORD: &str = "scram-pw-7f3e1";

/// Apache Kafka with a listener `SECURE` on `port`: clients reach it only
/// through TLS there; the PLAINTEXT listener is for the test itself.
pub struct SecureBroker {
    broker: OwnBroker,
    pub port: u16,
}

impl SecureBroker {
    /// TLS only, with `topics` created.
    pub fn tls(pki: &Pki, topics: &[(&str, i32)]) -> SecureBroker {
        Self::start(pki, topics, "SSL", "", &[])
    }

    /// TLS and SCRAM-SHA-512: the only user is [`SCRAM_USER`].
    pub fn sasl_tls(pki: &Pki, topics: &[(&str, i32)]) -> SecureBroker {
        let jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
        let sasl = format!(
            "sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.secure.scram-sha-512.sasl.jaas.config={jaas}\n"
        );
        let user = format!("SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]");
        Self::start(pki, topics, "SASL_SSL", &sasl, &["--add-scram", &user])
    }

    fn start(
        pki: &Pki,
        topics: &[(&str, i32)],
        protocol: &str,
        props: &str,
        format: &[&str],
    ) -> SecureBroker {
        // Kafka reads PEM: the key (PKCS#8) and the certificate in one file.
        let keystore = pki.path("server-keystore.pem");
        let pem = |f: &str| std::fs::read_to_string(pki.path(f)).unwrap();
        std::fs::write(&keystore, pem("server.key") + &pem("server.pem")).unwrap();
        let port = free_port();
        let options = NodeOptions {
            props: format!(
                "ssl.keystore.type=PEM\nssl.keystore.location={}\n{props}",
                keystore.to_str().unwrap()
            ),
            format_args: format.iter().map(|a| a.to_string()).collect(),
            listeners: vec![("SECURE".into(), protocol.into(), port)],
        };
        let broker = OwnBroker::start_with(&options);
        for (topic, partitions) in topics {
            create_topic_on(&broker.addr(), topic, *partitions);
        }
        SecureBroker { broker, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The plain listener, for what must bypass the secured one.
    pub fn plain_addr(&self) -> String {
        self.broker.addr()
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

/// Client properties of an independent reader that trusts `ca` and logs in
/// as [`SCRAM_USER`].
pub fn scram_reader(broker: &SecureBroker, ca: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("bootstrap.servers", broker.addr()),
        ("security.protocol", "sasl_ssl".into()),
        ("ssl.ca.location", ca.to_str().unwrap().into()),
        ("sasl.mechanism", "SCRAM-SHA-512".into()),
        ("sasl.username", SCRAM_USER.into()),
        ("sasl.password", SCRAM_PASSWORD.into()),
    ]
}
