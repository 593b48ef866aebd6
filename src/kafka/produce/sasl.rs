//! The client side of the SASL mechanisms Kafka brokers take a password
//! with: PLAIN, and SCRAM-SHA-256/512 (RFC 5802, RFC 7677) as Kafka runs
//! it: no channel binding (gs2 header "n,,"), the username escaped as a
//! saslname, and the password's UTF-8 bytes hashed as they are (no
//! SASLprep), as both Kafka's Java client and librdkafka do.

use std::num::NonZeroU32;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

use crate::secret::Secret;

/// The fewest iterations accepted: Kafka's client refuses fewer
/// (`ScramMechanism.minIterations`), a broker asking for less being either
/// misconfigured or after a cheap dictionary attack on the proof.
const MIN_ITERATIONS: u32 = 4096;

/// The most, librdkafka's bound: a hostile broker must not make us hash
/// for minutes.
const MAX_ITERATIONS: u32 = 1_000_000;

/// Random bytes of a client nonce: 32 characters once in base64, as long
/// as librdkafka's.
const NONCE_BYTES: usize = 24;

/// SASL PLAIN's one message (RFC 4616): no authorization identity, so the
/// broker takes the username for it, as librdkafka sends it.
pub(crate) fn plain(username: &str, password: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(username.len() + password.len() + 2);
    message.push(0);
    message.extend_from_slice(username.as_bytes());
    message.push(0);
    message.extend_from_slice(password.as_bytes());
    message
}

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    /// By the mechanism's SASL name, "SCRAM-SHA-256" or "SCRAM-SHA-512".
    pub(crate) fn from_mechanism(mechanism: &str) -> Option<ScramHash> {
        match mechanism {
            "SCRAM-SHA-256" => Some(ScramHash::Sha256),
            "SCRAM-SHA-512" => Some(ScramHash::Sha512),
            _ => None,
        }
    }

    /// The mechanism's SASL name.
    #[cfg(test)]
    pub(crate) fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
}

/// Why a SASL exchange failed. None carries the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SaslError {
    #[error("malformed SCRAM message from the broker: {0}")]
    Malformed(&'static str),
    #[error("the broker's SCRAM nonce does not extend ours")]
    NonceMismatch,
    #[error("the broker's SCRAM salt is empty or not base64")]
    Salt,
    #[error("the broker asks for {0} SCRAM iterations, outside 4096..=1000000")]
    Iterations(u32),
    #[error("the broker requires a SCRAM extension (m=) we do not know")]
    MandatoryExtension,
    /// The broker does not know the password: not the broker we meant to
    /// reach, or a man in the middle.
    #[error("the broker's SCRAM signature is wrong")]
    ServerSignature,
    /// The server's `e=`, as "invalid-proof" or "unknown-user".
    #[error("the broker refused the SCRAM authentication: {0}")]
    Server(String),
    #[error("SCRAM message out of order")]
    OutOfOrder,
    #[error("no randomness for the SCRAM nonce")]
    Random,
}

/// A SCRAM exchange, client side: `start` gives the client-first message,
/// `client_final` answers the server-first one, `finish` checks the
/// server-final one.
#[derive(Debug)]
pub(crate) struct Scram {
    hash: ScramHash,
    nonce: String,
    /// The client-first message without its gs2 header, part of what both
    /// sides sign.
    first_bare: String,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// Waiting for the server-first message, whose salt the password needs.
    ServerFirst { password: Secret },
    /// Waiting for the server-final message: what checks its signature.
    ServerFinal { server_key: hmac::Key, auth_message: String },
    /// `client_final` failed: the exchange cannot go on.
    Failed,
}

impl Scram {
    /// Starts a SCRAM-SHA-256 or SCRAM-SHA-512 exchange; returns the
    /// client-first message. Fails only when the system has no randomness
    /// for the nonce.
    pub(crate) fn start(
        hash: ScramHash,
        username: &str,
        password: &str,
    ) -> Result<(Scram, Vec<u8>), SaslError> {
        let mut random = [0; NONCE_BYTES];
        SystemRandom::new().fill(&mut random).map_err(|_| SaslError::Random)?;
        // URL-safe base64: printable and comma-free, as a nonce must be.
        Ok(Scram::with_nonce(hash, username, password, &URL_SAFE_NO_PAD.encode(random)))
    }

    /// For tests: a fixed client nonce.
    #[cfg(test)]
    pub(crate) fn start_with_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> (Scram, Vec<u8>) {
        Scram::with_nonce(hash, username, password, nonce)
    }

    fn with_nonce(hash: ScramHash, username: &str, password: &str, nonce: &str) -> (Scram, Vec<u8>) {
        let first_bare = format!("n={},r={nonce}", saslname(username));
        let first = format!("n,,{first_bare}").into_bytes();
        let stage = Stage::ServerFirst { password: Secret::new(password) };
        (Scram { hash, nonce: nonce.to_owned(), first_bare, stage }, first)
    }

    /// Answers the server-first message with the client-final one, proving
    /// we know the password. Refuses a nonce that does not extend ours
    /// (a replay), a salt that is not base64, fewer than 4096 iterations or
    /// more than a million, and a mandatory extension.
    pub(crate) fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        // Whatever the outcome, the password is not needed again.
        let password = match std::mem::replace(&mut self.stage, Stage::Failed) {
            Stage::ServerFirst { password } => password,
            stage => {
                self.stage = stage;
                return Err(SaslError::OutOfOrder);
            }
        };
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| SaslError::Malformed("server-first-message is not UTF-8"))?;
        let offer = ServerFirst::parse(server_first)?;
        if offer.nonce.len() <= self.nonce.len() || !offer.nonce.starts_with(&self.nonce) {
            return Err(SaslError::NonceMismatch);
        }
        let iterations = NonZeroU32::new(offer.iterations)
            .filter(|n| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&n.get()))
            .ok_or(SaslError::Iterations(offer.iterations))?;
        let salt = STANDARD.decode(offer.salt).map_err(|_| SaslError::Salt)?;
        if salt.is_empty() {
            return Err(SaslError::Salt);
        }

        let mut salted = [0; digest::MAX_OUTPUT_LEN];
        let salted = &mut salted[..self.hash.digest().output_len()];
        pbkdf2::derive(self.hash.pbkdf2(), iterations, &salt, password.expose().as_bytes(), salted);
        let salted = hmac::Key::new(self.hash.hmac(), salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(self.hash.digest(), client_key.as_ref());

        // "biws" is "n,," in base64: no channel binding.
        let without_proof = format!("c=biws,r={}", offer.nonce);
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let stored_key = hmac::Key::new(self.hash.hmac(), stored_key.as_ref());
        let client_signature = hmac::sign(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> =
            client_key.as_ref().iter().zip(client_signature.as_ref()).map(|(key, sig)| key ^ sig).collect();

        let server_key = hmac::Key::new(self.hash.hmac(), hmac::sign(&salted, b"Server Key").as_ref());
        self.stage = Stage::ServerFinal { server_key, auth_message };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: its `v=` must be the signature only
    /// a broker that knows the password can make; an `e=` is the broker's
    /// refusal.
    pub(crate) fn finish(&self, server_final: &[u8]) -> Result<(), SaslError> {
        let Stage::ServerFinal { server_key, auth_message } = &self.stage else {
            return Err(SaslError::OutOfOrder);
        };
        let server_final = std::str::from_utf8(server_final)
            .map_err(|_| SaslError::Malformed("server-final-message is not UTF-8"))?;
        // Extensions may follow, after a comma; none are known.
        let first = server_final.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(SaslError::Server(error.to_owned()));
        }
        let signature = first
            .strip_prefix("v=")
            .ok_or(SaslError::Malformed("server-final-message has neither v= nor e="))?;
        let signature = STANDARD
            .decode(signature)
            .map_err(|_| SaslError::Malformed("server-final-message's signature is not base64"))?;
        // In constant time, like any comparison of a MAC.
        hmac::verify(server_key, auth_message.as_bytes(), &signature).map_err(|_| SaslError::ServerSignature)
    }
}

/// The server-first message's attributes, still text.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: &'a str,
    iterations: u32,
}

impl<'a> ServerFirst<'a> {
    /// `[m=...,]r=...,s=...,i=...[,extensions]`, in that order (RFC 5802,
    /// section 7), as Kafka's brokers write it.
    fn parse(message: &'a str) -> Result<ServerFirst<'a>, SaslError> {
        if message.starts_with("m=") {
            return Err(SaslError::MandatoryExtension);
        }
        let mut attributes = message.split(',');
        let mut next = |name: &str, missing: &'static str| {
            attributes.next().and_then(|a| a.strip_prefix(name)).ok_or(SaslError::Malformed(missing))
        };
        let nonce = next("r=", "server-first-message has no r= first")?;
        let salt = next("s=", "server-first-message has no s= after r=")?;
        let iterations = next("i=", "server-first-message has no i= after s=")?;
        // printable: %x21-2B / %x2D-7E, the comma being the separator.
        if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(SaslError::Malformed("server-first-message's nonce is not printable"));
        }
        // Digits only: `parse` would take a sign too.
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SaslError::Malformed("server-first-message's iteration count is not a number"));
        }
        // Too many digits for a u32: too many iterations, whatever the number.
        let iterations = iterations.parse().unwrap_or(u32::MAX);
        Ok(ServerFirst { nonce, salt, iterations })
    }
}

/// A username as a saslname (RFC 5802, section 5.1): ',' and '=' escaped,
/// the rest as it is, as Kafka's `ScramFormatter.saslName` does.
fn saslname(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3.
    const RFC_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_exchange() -> Scram {
        let (mut scram, first) = Scram::start_with_nonce(ScramHash::Sha256, "user", "pencil", RFC_NONCE);
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(scram.client_final(RFC_SERVER_FIRST.as_bytes()).unwrap(), RFC_CLIENT_FINAL.as_bytes());
        scram
    }

    #[test]
    fn plain_message() {
        assert_eq!(plain("user", "pass"), b"\0user\0pass");
        assert_eq!(plain("", ""), b"\0\0");
    }

    #[test]
    fn mechanisms() {
        for hash in [ScramHash::Sha256, ScramHash::Sha512] {
            assert_eq!(ScramHash::from_mechanism(hash.mechanism()), Some(hash));
        }
        assert_eq!(ScramHash::from_mechanism("SCRAM-SHA-1"), None);
        assert_eq!(ScramHash::from_mechanism("PLAIN"), None);
    }

    #[test]
    fn rfc7677_sha256() {
        rfc_exchange().finish(RFC_SERVER_FINAL.as_bytes()).unwrap();
        // Extensions after the verifier are ignored.
        rfc_exchange().finish(format!("{RFC_SERVER_FINAL},x=y").as_bytes()).unwrap();
    }

    #[test]
    fn wrong_server_signature_refused() {
        let scram = rfc_exchange();
        let mut forged = STANDARD.decode(&RFC_SERVER_FINAL[2..]).unwrap();
        forged[0] ^= 1;
        let forged = format!("v={}", STANDARD.encode(forged));
        assert_eq!(scram.finish(forged.as_bytes()), Err(SaslError::ServerSignature));
        // A truncated signature too.
        assert_eq!(scram.finish(&RFC_SERVER_FINAL.as_bytes()[..18]), Err(SaslError::ServerSignature));
        assert!(matches!(scram.finish(b"v=not base64!"), Err(SaslError::Malformed(_))));
        assert!(matches!(scram.finish(b"x=1"), Err(SaslError::Malformed(_))));
        assert!(matches!(scram.finish(b""), Err(SaslError::Malformed(_))));
        // A broker that does not know the password signs with other keys.
        let (mut other, _) = Scram::start_with_nonce(ScramHash::Sha256, "user", "pencil2", RFC_NONCE);
        let _ = other.client_final(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(other.finish(RFC_SERVER_FINAL.as_bytes()), Err(SaslError::ServerSignature));
    }

    #[test]
    fn server_error_reported() {
        let scram = rfc_exchange();
        assert_eq!(scram.finish(b"e=invalid-proof"), Err(SaslError::Server("invalid-proof".into())));
        assert_eq!(scram.finish(b"e=other-error,x=y"), Err(SaslError::Server("other-error".into())));
        let error = scram.finish(b"e=unknown-user").unwrap_err();
        assert_eq!(error.to_string(), "the broker refused the SCRAM authentication: unknown-user");
    }

    #[test]
    fn username_escaped() {
        assert_eq!(saslname("a,b=c"), "a=2Cb=3Dc");
        assert_eq!(saslname("=2C"), "=3D2C");
        assert_eq!(saslname(",,=="), "=2C=2C=3D=3D");
        assert_eq!(saslname("plain_ü"), "plain_ü");
        let (_, first) = Scram::start_with_nonce(ScramHash::Sha512, "a,b=c", "pw", "abc");
        assert_eq!(first, b"n,,n=a=2Cb=3Dc,r=abc");
    }

    /// A broker's side of SCRAM, from RFC 5802 section 3, for the round trip.
    struct TestServer {
        hash: ScramHash,
        salt: Vec<u8>,
        iterations: u32,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    }

    impl TestServer {
        /// The credentials a broker keeps (its `kafka-configs --add-config`).
        fn new(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> TestServer {
            let mut salted = vec![0; hash.digest().output_len()];
            pbkdf2::derive(
                hash.pbkdf2(),
                NonZeroU32::new(iterations).unwrap(),
                salt,
                password.as_bytes(),
                &mut salted,
            );
            let salted = hmac::Key::new(hash.hmac(), &salted);
            let client_key = hmac::sign(&salted, b"Client Key");
            let stored_key = digest::digest(hash.digest(), client_key.as_ref()).as_ref().to_vec();
            let server_key = hmac::sign(&salted, b"Server Key").as_ref().to_vec();
            TestServer { hash, salt: salt.to_vec(), iterations, stored_key, server_key }
        }

        /// Runs the whole exchange against a client; returns the server-final
        /// message, or the server's error.
        fn authenticate(&self, client: &mut Scram, client_first: &[u8]) -> Result<Vec<u8>, String> {
            let client_first = std::str::from_utf8(client_first).unwrap();
            let first_bare = client_first.strip_prefix("n,,").unwrap();
            let client_nonce = first_bare.split_once(",r=").unwrap().1;
            let server_first =
                format!("r={client_nonce}srv-nonce,s={},i={}", STANDARD.encode(&self.salt), self.iterations);
            let client_final = client.client_final(server_first.as_bytes()).unwrap();
            let client_final = String::from_utf8(client_final).unwrap();
            let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
            assert_eq!(without_proof, format!("c=biws,r={client_nonce}srv-nonce"));
            let auth_message = format!("{first_bare},{server_first},{without_proof}");
            let stored_key = hmac::Key::new(self.hash.hmac(), &self.stored_key);
            let client_signature = hmac::sign(&stored_key, auth_message.as_bytes());
            let client_key: Vec<u8> = STANDARD
                .decode(proof)
                .unwrap()
                .iter()
                .zip(client_signature.as_ref())
                .map(|(p, s)| p ^ s)
                .collect();
            if digest::digest(self.hash.digest(), &client_key).as_ref() != self.stored_key {
                return Err("invalid-proof".into());
            }
            let server_key = hmac::Key::new(self.hash.hmac(), &self.server_key);
            let signature = hmac::sign(&server_key, auth_message.as_bytes());
            Ok(format!("v={}", STANDARD.encode(signature)).into_bytes())
        }
    }

    #[test]
    fn sha512_round_trip() {
        let server = TestServer::new(ScramHash::Sha512, "s3cret, with=signs", b"sixteen byte salt", 4096);
        let (mut client, first) = Scram::start(ScramHash::Sha512, "alice,ops", "s3cret, with=signs").unwrap();
        assert!(first.starts_with(b"n,,n=alice=2Cops,r="));
        let server_final = server.authenticate(&mut client, &first).unwrap();
        client.finish(&server_final).unwrap();

        // A wrong password: the broker refuses the proof.
        let (mut client, first) = Scram::start(ScramHash::Sha512, "alice,ops", "guess").unwrap();
        assert_eq!(server.authenticate(&mut client, &first), Err("invalid-proof".into()));
        assert_eq!(client.finish(b"e=invalid-proof"), Err(SaslError::Server("invalid-proof".into())));
    }

    #[test]
    fn sha256_round_trip_more_iterations() {
        let server = TestServer::new(ScramHash::Sha256, "pencil", &[0xa5; 20], 8192);
        let (mut client, first) = Scram::start(ScramHash::Sha256, "user", "pencil").unwrap();
        let server_final = server.authenticate(&mut client, &first).unwrap();
        client.finish(&server_final).unwrap();
    }

    /// SCRAM-SHA-512 has no RFC example: this one was computed apart, with
    /// Python's hashlib and hmac.
    #[test]
    fn sha512_vector() {
        let (mut scram, first) =
            Scram::start_with_nonce(ScramHash::Sha512, "a,b=c", "pässword", "fixedNonce123");
        assert_eq!(first, b"n,,n=a=2Cb=3Dc,r=fixedNonce123");
        let client_final = scram.client_final(b"r=fixedNonce123SERVER,s=c2FsdHNhbHRzYWx0,i=5000").unwrap();
        let expected =
            "c=biws,r=fixedNonce123SERVER,p=lf14yaZMiOJqxtXhndG164PaPHnnMzWwZWgIxyqMDwRjxYpeR4AScsYmdJH6\
            MktBGXsktm1t1MCGnIFNvLZbvg==";
        assert_eq!(String::from_utf8(client_final).unwrap(), expected);
        let server_final =
            "v=4IYjBqqT0bm4VRlmSBSPTbiXejZYJKjnZphD/EIGulRRB9QmjOSMSO7mMb/AYYzoTpHWEFp4ljmxR2LfRyIeaQ==";
        scram.finish(server_final.as_bytes()).unwrap();
    }

    #[test]
    fn random_nonces() {
        let (a, first) = Scram::start(ScramHash::Sha256, "user", "pencil").unwrap();
        let (b, _) = Scram::start(ScramHash::Sha256, "user", "pencil").unwrap();
        assert_eq!(a.nonce.len(), 32);
        assert!(a.nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(first, format!("n,,n=user,r={}", a.nonce).into_bytes());
    }

    fn client_final_of(server_first: &str) -> Result<Vec<u8>, SaslError> {
        let (mut scram, _) = Scram::start_with_nonce(ScramHash::Sha256, "user", "pencil", RFC_NONCE);
        scram.client_final(server_first.as_bytes())
    }

    #[test]
    fn server_first_refused() {
        let salt = "s=W22ZaJ0SNY7soEsUEjb6gQ==";
        let nonce = "r=rOprNGfwEbeRWgbNEkqO%hvY";
        let cases: [(String, SaslError); 8] = [
            (format!("r=XOprNGfwEbeRWgbNEkqO%hvY,{salt},i=4096"), SaslError::NonceMismatch),
            (format!("r={RFC_NONCE},{salt},i=4096"), SaslError::NonceMismatch),
            (format!("r=rOprNG,{salt},i=4096"), SaslError::NonceMismatch),
            (format!("{nonce},{salt},i=4095"), SaslError::Iterations(4095)),
            (format!("{nonce},{salt},i=0"), SaslError::Iterations(0)),
            (format!("{nonce},{salt},i=1000001"), SaslError::Iterations(1_000_001)),
            (format!("{nonce},{salt},i=99999999999999999999"), SaslError::Iterations(u32::MAX)),
            (format!("m=ext,{nonce},{salt},i=4096"), SaslError::MandatoryExtension),
        ];
        for (message, error) in cases {
            assert_eq!(client_final_of(&message), Err(error), "{message}");
        }
        for message in
            [format!("{nonce},s=!!!!,i=4096"), format!("{nonce},s=,i=4096"), format!("{nonce},s=QQ,i=4096")]
        {
            assert_eq!(client_final_of(&message), Err(SaslError::Salt), "{message}");
        }
        for message in [
            String::new(),
            format!("{salt},{nonce},i=4096"),
            format!("{nonce},{salt}"),
            format!("{nonce},{salt},i="),
            format!("{nonce},{salt},i=+4096"),
            format!("{nonce},{salt},i=4096x"),
            format!("{nonce},{salt},n=4096"),
            format!("{nonce}\x7f,{salt},i=4096"),
        ] {
            assert!(matches!(client_final_of(&message), Err(SaslError::Malformed(_))), "{message:?}");
        }
        let (mut scram, _) = Scram::start_with_nonce(ScramHash::Sha256, "user", "pencil", RFC_NONCE);
        assert!(matches!(scram.client_final(b"r=\xff"), Err(SaslError::Malformed(_))));
        // Extensions after the iteration count are ignored.
        assert!(client_final_of(&format!("{nonce},{salt},i=4096,x=y")).is_ok());
    }

    #[test]
    fn out_of_order() {
        let (mut scram, _) = Scram::start_with_nonce(ScramHash::Sha256, "user", "pencil", RFC_NONCE);
        assert_eq!(scram.finish(RFC_SERVER_FINAL.as_bytes()), Err(SaslError::OutOfOrder));
        scram.client_final(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(scram.client_final(RFC_SERVER_FIRST.as_bytes()), Err(SaslError::OutOfOrder));
        scram.finish(RFC_SERVER_FINAL.as_bytes()).unwrap();

        // A refused server-first ends the exchange.
        let (mut scram, _) = Scram::start_with_nonce(ScramHash::Sha256, "user", "pencil", RFC_NONCE);
        assert_eq!(scram.client_final(b"r=other,s=QQ==,i=4096"), Err(SaslError::NonceMismatch));
        assert_eq!(scram.client_final(RFC_SERVER_FIRST.as_bytes()), Err(SaslError::OutOfOrder));
        assert_eq!(scram.finish(RFC_SERVER_FINAL.as_bytes()), Err(SaslError::OutOfOrder));
    }

    #[test]
    fn password_never_shown() {
        let password = "hunter2-Pa55";
        let (mut scram, _) = Scram::start_with_nonce(ScramHash::Sha256, "user", password, RFC_NONCE);
        let debug = format!("{scram:?} {:?}", ScramHash::Sha256);
        assert!(!debug.contains(password), "{debug}");
        assert!(debug.contains("ServerFirst { password: <redacted> }"), "{debug}");
        let error = scram.client_final(b"r=x,s=QQ==,i=1").unwrap_err();
        assert!(!format!("{error} {error:?} {scram:?}").contains(password));

        let (mut scram, _) = Scram::start_with_nonce(ScramHash::Sha256, "user", password, RFC_NONCE);
        scram.client_final(RFC_SERVER_FIRST.as_bytes()).unwrap();
        let debug = format!("{scram:?}");
        assert!(!debug.contains(password), "{debug}");
        let error = scram.finish(b"v=AAAA").unwrap_err();
        assert!(!format!("{error} {error:?}").contains(password));
    }
}
