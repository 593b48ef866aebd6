//! The fake brokers' sockets: an accept thread per broker, a thread per
//! connection that reads one request at a time and writes its answer, and
//! the requests' framing and dispatch by API key. What a request gets is
//! `answers.rs`'s.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, InitProducerIdRequest, MetadataRequest, ProduceRequest, RequestHeader,
    ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{Shared, State};

const UNSUPPORTED_SASL_MECHANISM: i16 = ResponseError::UnsupportedSaslMechanism.code();
const UNSUPPORTED_VERSION: i16 = ResponseError::UnsupportedVersion.code();

/// What the brokers say they speak, and so all they serve: any other
/// request closes the connection, as Kafka does with one it cannot parse.
const ADVERTISED: [(ApiKey, i16, i16); 6] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Kafka's `socket.request.max.bytes`: a longer frame is a broken stream.
const MAX_REQUEST: usize = 100 << 20;

/// One connection's place: which node, of which generation.
struct Conn {
    node: usize,
    generation: u64,
    id: u64,
    /// After a SaslHandshake v0 the PLAIN token comes bare, not in a
    /// SaslAuthenticate request.
    raw_sasl_token: bool,
}

pub(super) enum Reply {
    /// Sends these bytes after holding them this long.
    Send(Vec<u8>, Duration),
    /// Answers nothing (a produce at acks=0).
    Silent,
    /// Closes the connection: a request Kafka would not parse, a lost
    /// response, a stopped node.
    Close,
}

impl Reply {
    fn now(bytes: Vec<u8>) -> Reply {
        Reply::Send(bytes, Duration::ZERO)
    }
}

pub(super) fn accept(shared: &Arc<Shared>, node: usize, generation: u64, listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut state = shared.lock();
        if state.nodes[node].generation != generation {
            return;
        }
        let Ok(handle) = stream.try_clone() else { continue };
        let id = state.next_connection;
        state.next_connection += 1;
        state.nodes[node].connections.insert(id, handle);
        drop(state);
        let conn = Conn { node, generation, id, raw_sasl_token: false };
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("fake-broker-{node}-conn"))
            .spawn(move || serve(&shared, conn, stream))
            .unwrap();
    }
}

/// Binds the port a stopped node had. std sets SO_REUSEADDR, so the node's
/// closed connections do not hold it; the retry covers a close the kernel
/// has not finished.
pub(super) fn rebind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return listener,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("cannot listen on port {port} again: {e}"),
        }
    }
}

fn serve(shared: &Shared, mut conn: Conn, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    while let Ok(frame) = read_frame(&mut stream) {
        match shared.handle(&mut conn, frame) {
            Reply::Send(bytes, after) => {
                if !after.is_zero() {
                    thread::sleep(after);
                }
                if stream.write_all(&bytes).is_err() {
                    break;
                }
            }
            Reply::Silent => {}
            Reply::Close => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    shared.lock().nodes[conn.node].connections.remove(&conn.id);
}

fn read_frame(stream: &mut TcpStream) -> io::Result<Bytes> {
    let mut length = [0; 4];
    stream.read_exact(&mut length)?;
    let length = usize::try_from(i32::from_be_bytes(length))
        .ok()
        .filter(|l| *l <= MAX_REQUEST)
        .ok_or(io::ErrorKind::InvalidData)?;
    let mut frame = vec![0; length];
    stream.read_exact(&mut frame)?;
    Ok(frame.into())
}

impl Shared {
    /// Handles one request, under the lock: a stop cannot come between
    /// checking the node runs and appending.
    fn handle(&self, conn: &mut Conn, mut frame: Bytes) -> Reply {
        let mut state = self.lock();
        if state.nodes[conn.node].generation != conn.generation {
            return Reply::Close;
        }
        if std::mem::take(&mut conn.raw_sasl_token) {
            // PLAIN's answer is empty, and as bare as the token.
            return Reply::now(vec![0; 4]);
        }
        let Some((api, header)) = decode_header(&mut frame) else { return Reply::Close };
        state.answer(conn, api, &header, frame).unwrap_or(Reply::Close)
    }
}

/// The request header, read at the version its API and version call for.
fn decode_header(frame: &mut Bytes) -> Option<(ApiKey, RequestHeader)> {
    if frame.len() < 4 {
        return None;
    }
    let api = ApiKey::try_from(i16::from_be_bytes([frame[0], frame[1]])).ok()?;
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let header = RequestHeader::decode(frame, api.request_header_version(version)).ok()?;
    Some((api, header))
}

/// A response as sent: length, header (at the version the API and version
/// call for: v0 for every ApiVersions), body.
pub(super) fn respond<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &R) -> Vec<u8> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut out = vec![0; 4];
    header.encode(&mut out, api.response_header_version(version)).unwrap();
    body.encode(&mut out, version).unwrap();
    let length = i32::try_from(out.len() - 4).unwrap();
    out[..4].copy_from_slice(&length.to_be_bytes());
    out
}

impl State {
    /// The response to a request, or `None` to close the connection.
    fn answer(
        &mut self,
        conn: &mut Conn,
        api: ApiKey,
        header: &RequestHeader,
        mut body: Bytes,
    ) -> Option<Reply> {
        let version = header.request_api_version;
        let id = header.correlation_id;
        if api == ApiKey::ApiVersions {
            return Some(Reply::now(api_versions(version, id)));
        }
        let &(_, min, max) = ADVERTISED.iter().find(|(key, ..)| *key == api)?;
        if !(min..=max).contains(&version) {
            return None;
        }
        let bytes = match api {
            ApiKey::Metadata => {
                let request = MetadataRequest::decode(&mut body, version).ok()?;
                respond(api, version, id, &self.metadata(&request))
            }
            ApiKey::InitProducerId => {
                let request = InitProducerIdRequest::decode(&mut body, version).ok()?;
                respond(api, version, id, &self.init_producer_id(&request))
            }
            ApiKey::Produce => {
                let request = ProduceRequest::decode(&mut body, version).ok()?;
                return Some(self.produce(conn.node, version, id, &request));
            }
            ApiKey::SaslHandshake => {
                let request = SaslHandshakeRequest::decode(&mut body, version).ok()?;
                let response = sasl_handshake(&request);
                conn.raw_sasl_token = version == 0 && response.error_code == 0;
                respond(api, version, id, &response)
            }
            ApiKey::SaslAuthenticate => {
                SaslAuthenticateRequest::decode(&mut body, version).ok()?;
                respond(api, version, id, &SaslAuthenticateResponse::default().with_error_message(None))
            }
            _ => return None,
        };
        Some(Reply::now(bytes))
    }
}

fn api_versions(version: i16, correlation_id: i32) -> Vec<u8> {
    let api_keys = ADVERTISED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect();
    let response = ApiVersionsResponse::default().with_api_keys(api_keys);
    let newest = ADVERTISED.iter().find(|(key, ..)| *key == ApiKey::ApiVersions).unwrap().2;
    if version > newest {
        // A client ahead of the broker is told so in a v0 answer, which it
        // can read whatever version it spoke (KIP-511).
        respond(ApiKey::ApiVersions, 0, correlation_id, &response.with_error_code(UNSUPPORTED_VERSION))
    } else {
        respond(ApiKey::ApiVersions, version, correlation_id, &response)
    }
}

fn sasl_handshake(request: &SaslHandshakeRequest) -> SaslHandshakeResponse {
    let response = SaslHandshakeResponse::default().with_mechanisms(vec![StrBytes::from_static_str("PLAIN")]);
    if &*request.mechanism == "PLAIN" {
        response
    } else {
        response.with_error_code(UNSUPPORTED_SASL_MECHANISM)
    }
}
