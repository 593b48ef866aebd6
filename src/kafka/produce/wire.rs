//! One blocking connection to a broker: connect, learn the API versions
//! the broker speaks, log in (SASL PLAIN or SCRAM), then size-prefixed
//! requests and responses with correlation ids. Reading and writing may
//! happen on two threads ([`Conn::split`]): the sender writes requests
//! while the reader takes their responses, in order, as Kafka answers them.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};

use super::answers::Answer;
use super::sasl::{self, Scram, ScramHash};
use crate::kafka::{Cluster, KafkaSasl};

/// The client id in every request header.
const CLIENT_ID: StrBytes = StrBytes::from_static_str("databus");

/// The largest response databus reads (a produce or metadata response is
/// far smaller; a larger length is a broken stream).
const MAX_RESPONSE: usize = 64 << 20;

/// Why a connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// The connection broke or could not be made: anything in flight on it
    /// may or may not have been written.
    #[error("{0}")]
    Io(String),
    /// The broker refused databus's login: no use trying again at once.
    #[error("{0}")]
    Refused(String),
    /// The broker's answer made no sense.
    #[error("{0}")]
    Protocol(String),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> WireError {
        WireError::Io(e.to_string())
    }
}

/// The highest version of each API databus uses that both it and the
/// broker speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Versions {
    pub produce: i16,
    pub metadata: i16,
    pub init_producer_id: i16,
    /// Whether the broker serves KIP-848's consumer group protocol
    /// ([`serves_consumer_groups`]); asked by the consumers' check, not
    /// by the producer.
    pub consumer_groups: bool,
}

/// The versions databus speaks, up to which it asks: Produce 9 (flexible,
/// names topics by name; 3 is Kafka's oldest), Metadata 12, InitProducerId 4.
const OURS: [(ApiKey, i16, i16); 3] =
    [(ApiKey::Produce, 3, 9), (ApiKey::Metadata, 1, 12), (ApiKey::InitProducerId, 0, 4)];

/// Whether a broker's ApiVersions answer says it serves KIP-848's consumer
/// group protocol: it lists ConsumerGroupHeartbeat and its cluster has
/// finalized `group.version` 1 or more. Kafka 4.0+ finalizes it when the
/// cluster is formatted (or upgraded with `kafka-features upgrade`); a 3.x
/// broker lists the API but finalizes no `group.version` and answers the
/// heartbeat UNSUPPORTED_VERSION (its preview aside).
pub(crate) fn serves_consumer_groups(response: &ApiVersionsResponse) -> bool {
    let heartbeat = response.api_keys.iter().any(|k| k.api_key == ApiKey::ConsumerGroupHeartbeat as i16);
    let level = response
        .finalized_features
        .iter()
        .find(|f| f.name.as_str() == "group.version")
        .map_or(0, |f| f.max_version_level);
    heartbeat && level >= 1
}

/// How connections reach the brokers: TLS (rustls) if the cluster has a
/// `tls` section, SASL if it has a `sasl` one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Security {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<KafkaSasl>,
}

impl Security {
    /// The cluster's `tls` and `sasl` sections as databus's own
    /// connections use them; `Err` when its TLS files do not load.
    pub(crate) fn of(cluster: &Cluster) -> Result<Security, String> {
        let tls = match &cluster.tls {
            Some(tls) => {
                let client = tls.cert_file.as_deref().zip(tls.key_file.as_deref());
                Some(
                    crate::tls::client_config(tls.ca_file.as_deref(), client)
                        .map_err(|e| format!("TLS: {e}"))?,
                )
            }
            None => None,
        };
        Ok(Security { tls, sasl: cluster.sasl.clone() })
    }
}

/// A TLS session, shared by a connection's writer and reader: each takes
/// the lock only to encrypt and send, or to decrypt what it read, so the
/// reader never holds it while it waits for the broker.
type Tls = Arc<Mutex<rustls::ClientConnection>>;

fn lock(tls: &Tls) -> std::sync::MutexGuard<'_, rustls::ClientConnection> {
    tls.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connected, logged-in broker connection.
pub(crate) struct Conn {
    stream: TcpStream,
    tls: Option<Tls>,
    pub versions: Versions,
    next_correlation: i32,
    pub address: String,
}

impl Conn {
    /// Connects to `address`, shakes hands (TLS), learns its versions and
    /// logs in (SASL). A certificate or a login the broker refuses, or one
    /// of the broker's databus does not trust, is [`WireError::Refused`].
    pub(crate) fn open(address: &str, security: &Security, timeout: Duration) -> Result<Conn, WireError> {
        let addr = address
            .to_socket_addrs()
            .map_err(|e| WireError::Io(format!("{address}: {e}")))?
            .next()
            .ok_or_else(|| WireError::Io(format!("{address}: no address")))?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| WireError::Io(format!("{address}: {e}")))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let tls = match &security.tls {
            None => None,
            Some(config) => {
                let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| WireError::Refused(format!("SSL: {host} is not a server name: {e}")))?;
                let mut session = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| WireError::Refused(format!("SSL: {e}")))?;
                while session.is_handshaking() {
                    session.complete_io(&mut stream).map_err(classify)?;
                }
                Some(Arc::new(Mutex::new(session)))
            }
        };
        let placeholder = Versions { produce: 3, metadata: 1, init_producer_id: 0, consumer_groups: false };
        let mut conn =
            Conn { stream, tls, versions: placeholder, next_correlation: 0, address: address.to_owned() };
        conn.versions = conn.api_versions()?;
        if let Some(sasl) = &security.sasl {
            conn.login(sasl)?;
        }
        Ok(conn)
    }

    /// Asks the broker which versions it speaks (ApiVersions v3, or v0 if
    /// it does not speak v3).
    fn api_versions(&mut self) -> Result<Versions, WireError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("databus"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response = self.call(&request, 3)?;
        if response.error_code == 35 {
            // UNSUPPORTED_VERSION: the broker lists what it speaks in a v0 answer.
            response = self.call(&ApiVersionsRequest::default(), 0)?;
        }
        if response.error_code != 0 {
            return Err(WireError::Protocol(format!(
                "{}: ApiVersions failed with error {}",
                self.address, response.error_code
            )));
        }
        let pick = |key: ApiKey, low: i16, high: i16| -> Result<i16, WireError> {
            let theirs = response.api_keys.iter().find(|k| k.api_key == key as i16);
            match theirs {
                Some(k) if k.max_version >= low && k.min_version <= high => Ok(k.max_version.min(high)),
                _ => Err(WireError::Protocol(format!(
                    "{}: the broker speaks no version of {key:?} in {low}..={high}",
                    self.address
                ))),
            }
        };
        let [(p, pl, ph), (m, ml, mh), (i, il, ih)] = OURS;
        Ok(Versions {
            produce: pick(p, pl, ph)?,
            metadata: pick(m, ml, mh)?,
            init_producer_id: pick(i, il, ih)?,
            consumer_groups: serves_consumer_groups(&response),
        })
    }

    /// SASL: the handshake, then the mechanism's exchange in
    /// SaslAuthenticate requests (KIP-152).
    fn login(&mut self, sasl: &KafkaSasl) -> Result<(), WireError> {
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(sasl.mechanism.clone()));
        let answer: SaslHandshakeResponse = self.call(&handshake, 1)?;
        if answer.error_code != 0 {
            let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(WireError::Refused(format!(
                "SASL mechanism {} is not enabled on the broker (it offers {})",
                sasl.mechanism,
                offered.join(", ")
            )));
        }
        let refused = |e: sasl::SaslError| WireError::Refused(format!("SASL authentication error: {e}"));
        match (sasl.mechanism.as_str(), ScramHash::from_mechanism(&sasl.mechanism)) {
            ("PLAIN", _) => {
                self.authenticate(sasl::plain(&sasl.username, sasl.password.expose()))?;
            }
            (_, Some(hash)) => {
                let (mut scram, first) =
                    Scram::start(hash, &sasl.username, sasl.password.expose()).map_err(refused)?;
                let server_first = self.authenticate(first)?;
                let last = scram.client_final(&server_first).map_err(refused)?;
                let server_final = self.authenticate(last)?;
                scram.finish(&server_final).map_err(refused)?;
            }
            (other, None) => {
                return Err(WireError::Refused(format!("SASL mechanism {other} is not spoken by databus")))
            }
        }
        Ok(())
    }

    fn authenticate(&mut self, bytes: Vec<u8>) -> Result<Bytes, WireError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
        let answer: SaslAuthenticateResponse = self.call(&request, 1)?;
        if answer.error_code != 0 {
            let message = answer.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
            return Err(WireError::Refused(format!("SASL authentication error: {message}")));
        }
        Ok(answer.auth_bytes)
    }

    /// Sends `request` at `version` and waits for its response.
    pub(crate) fn call<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, WireError>
    where
        R::Response: Answer,
    {
        let correlation = self.next_correlation();
        let frame = frame(request, version, correlation)?;
        let body = match &self.tls {
            None => {
                self.stream.write_all(&frame)?;
                read_frame(&mut self.stream)?
            }
            Some(tls) => {
                let mut session = lock(tls);
                let mut stream = rustls::Stream::new(&mut *session, &mut self.stream);
                stream.write_all(&frame).map_err(classify)?;
                stream.flush().map_err(classify)?;
                read_frame(&mut stream)?
            }
        };
        R::Response::read(body, version, correlation)
    }

    pub(crate) fn next_correlation(&mut self) -> i32 {
        self.next_correlation = self.next_correlation.wrapping_add(1);
        self.next_correlation
    }

    /// The two halves: one writes requests, the other reads responses.
    pub(crate) fn split(self) -> Result<(Writer, Reader), WireError> {
        let read = self.stream.try_clone()?;
        // The reader looks up every so often (at the stop, or to time out a
        // request), so its reads return when nothing came.
        read.set_read_timeout(Some(Duration::from_millis(100)))?;
        let writer = Writer {
            stream: self.stream,
            tls: self.tls.clone(),
            next_correlation: self.next_correlation,
            versions: self.versions,
        };
        let reader =
            Reader { stream: read, tls: self.tls, buffer: BytesMut::with_capacity(4096), raw: Vec::new() };
        Ok((writer, reader))
    }
}

/// A TLS failure, in the words librdkafka (OpenSSL) uses where the
/// operator may know them: a broker certificate databus does not trust is
/// "certificate verify failed", a client certificate the broker does not
/// trust an "alert bad certificate". Those are refusals; anything else is
/// a broken connection.
fn classify(e: io::Error) -> WireError {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return e.into();
    };
    let reason = match tls {
        rustls::Error::InvalidCertificate(why) => format!("certificate verify failed: {why:?}"),
        rustls::Error::AlertReceived(alert) => format!("alert {}", words(&format!("{alert:?}"))),
        other => other.to_string(),
    };
    WireError::Refused(format!("SSL handshake failed: {reason}"))
}

/// `BadCertificate` as "bad certificate".
fn words(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// The writing half of a connection.
pub(crate) struct Writer {
    stream: TcpStream,
    tls: Option<Tls>,
    next_correlation: i32,
    pub versions: Versions,
}

impl Writer {
    pub(crate) fn next_correlation(&mut self) -> i32 {
        self.next_correlation = self.next_correlation.wrapping_add(1);
        self.next_correlation
    }

    /// Writes a whole request. In clear with sendmsg(2), as librdkafka
    /// sends its requests, so the bench counts Kafka requests the same way
    /// for both engines (the sessions' replies go out with send(2)).
    pub(crate) fn write(&mut self, mut frame: &[u8]) -> io::Result<()> {
        if let Some(tls) = &self.tls {
            let mut session = lock(tls);
            session.writer().write_all(frame)?;
            while session.wants_write() {
                session.write_tls(&mut &self.stream)?;
            }
            return Ok(());
        }
        let socket = socket2::SockRef::from(&self.stream);
        while !frame.is_empty() {
            match socket.send_vectored_with_flags(&[io::IoSlice::new(frame)], libc::MSG_NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => frame = &frame[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Closes the connection both ways: the reader's next read ends.
    pub(crate) fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The reading half of a connection.
pub(crate) struct Reader {
    stream: TcpStream,
    tls: Option<Tls>,
    /// Plain bytes read and not yet returned.
    buffer: BytesMut,
    /// TLS records as read, before decryption.
    raw: Vec<u8>,
}

impl Reader {
    /// Closes the connection both ways: the writer's next write fails.
    pub(crate) fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The next response's bytes (after the length), or `None` if none
    /// came within the read timeout.
    pub(crate) fn next(&mut self) -> Result<Option<Bytes>, WireError> {
        loop {
            if let Some(frame) = take_frame(&mut self.buffer)? {
                return Ok(Some(frame));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Reads what came; false if nothing did within the read timeout.
    fn fill(&mut self) -> Result<bool, WireError> {
        if let Some(tls) = &self.tls {
            if drain(&mut lock(tls), &mut self.buffer)? > 0 {
                return Ok(true);
            }
        }
        self.raw.resize(16 * 1024, 0);
        let n = match self.stream.read(&mut self.raw) {
            Ok(0) => return Err(WireError::Io("the broker closed the connection".into())),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        let Some(tls) = &self.tls else {
            self.buffer.extend_from_slice(&self.raw[..n]);
            return Ok(true);
        };
        let mut session = lock(tls);
        let mut records = &self.raw[..n];
        while !records.is_empty() {
            session.read_tls(&mut records)?;
            session
                .process_new_packets()
                .map_err(|e| classify(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            drain(&mut session, &mut self.buffer)?;
        }
        while session.wants_write() {
            session.write_tls(&mut &self.stream)?;
        }
        Ok(true)
    }
}

/// A response's length from its first four bytes: a negative one, or one
/// past [`MAX_RESPONSE`], is a broken stream.
fn frame_len(bytes: [u8; 4]) -> Result<usize, WireError> {
    let len = i32::from_be_bytes(bytes);
    usize::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_RESPONSE)
        .ok_or_else(|| WireError::Protocol(format!("a response of {len} bytes")))
}

/// The first whole response in `buffer` (its bytes after the length),
/// taken out of it; `None` until one is whole.
pub(crate) fn take_frame(buffer: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let len = frame_len([buffer[0], buffer[1], buffer[2], buffer[3]])?;
    if buffer.len() < 4 + len {
        return Ok(None);
    }
    buffer.advance(4);
    Ok(Some(buffer.split_to(len).freeze()))
}

/// Moves the plain bytes a TLS session decrypted into `buffer`.
fn drain(session: &mut rustls::ClientConnection, buffer: &mut BytesMut) -> Result<usize, WireError> {
    let mut chunk = [0u8; 8192];
    let mut moved = 0;
    loop {
        match session.reader().read(&mut chunk) {
            Ok(0) => return Err(WireError::Io("the broker closed the TLS session".into())),
            Ok(n) => {
                buffer.extend_from_slice(&chunk[..n]);
                moved += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A request as sent: length, header, body.
pub(crate) fn frame<R: Request>(request: &R, version: i16, correlation: i32) -> Result<Vec<u8>, WireError> {
    let bad = protocol_error(format!("cannot encode request {}", R::KEY));
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(CLIENT_ID));
    let header_version = R::header_version(version);
    let size =
        header.compute_size(header_version).map_err(&bad)? + request.compute_size(version).map_err(&bad)?;
    let mut out = Vec::with_capacity(4 + size);
    out.put_i32(size as i32);
    header.encode(&mut out, header_version).map_err(&bad)?;
    request.encode(&mut out, version).map_err(&bad)?;
    Ok(out)
}

/// The error of a message the crate could not encode or decode.
fn protocol_error<E: std::fmt::Display>(what: String) -> impl Fn(E) -> WireError {
    move |e| WireError::Protocol(format!("{what}: {e}"))
}

fn read_frame(stream: &mut impl Read) -> Result<Bytes, WireError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).map_err(classify)?;
    let len = frame_len(len)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).map_err(classify)?;
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey};

    use super::*;

    fn answer(heartbeat: bool, group_version: Option<i16>) -> ApiVersionsResponse {
        let mut keys = vec![ApiVersion::default().with_api_key(ApiKey::Produce as i16).with_max_version(13)];
        if heartbeat {
            keys.push(ApiVersion::default().with_api_key(ApiKey::ConsumerGroupHeartbeat as i16));
        }
        let features = group_version
            .map(|level| {
                FinalizedFeatureKey::default()
                    .with_name(StrBytes::from_static_str("group.version"))
                    .with_max_version_level(level)
                    .with_min_version_level(level)
            })
            .into_iter()
            .collect();
        ApiVersionsResponse::default().with_api_keys(keys).with_finalized_features(features)
    }

    #[test]
    fn the_consumer_protocol_needs_the_heartbeat_and_group_version_1() {
        // Kafka 4.0+ as formatted.
        assert!(serves_consumer_groups(&answer(true, Some(1))));
        // Kafka 3.9: the API listed, no group.version.
        assert!(!serves_consumer_groups(&answer(true, None)));
        // Kafka 4.x formatted or left at group.version=0.
        assert!(!serves_consumer_groups(&answer(true, Some(0))));
        // Before KIP-848 (3.6 and older).
        assert!(!serves_consumer_groups(&answer(false, None)));
    }
}
