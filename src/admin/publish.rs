//! `POST /databus/pub?topic=T&group=G[&color=C]`: publishing over HTTP, the
//! bilibili databus request shape plus metadata. HTTP Basic `key:secret` is
//! checked against the same grants as `AUTH ... role=pub`, and each record
//! is produced exactly like `SET` (or `HSET` when it has metadata): same
//! producer, same headers, acknowledged by every in-sync replica.
//!
//! Body: `{"records":[{"key":"k","value":<any JSON>,"metadata":{"a":"b"}}]}`;
//! a string value is sent as its text, any other JSON as its compact text.
//! Reply: `{"offsets":[{"partition":p,"offset":o,"error_code":0}]}`, one per
//! record in order, with `error_code` 1 (will not pass if sent again) or 2
//! (may pass later) and an `error` text for a record not acknowledged.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use tiny_http::Request;

use super::{header, json, Reply};
use crate::auth::{AuthError, AuthRequest, Role};
use crate::kafka::{self, PublishError, Record, Sent, StartOffset};
use crate::secret::Secret;
use crate::session::Context;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    records: Vec<InRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InRecord {
    key: String,
    value: serde_json::Value,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    /// Kafka headers of the record's own, beside databus's `color` and
    /// `metadata`.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// One record of the body, ready to produce.
struct Prepared {
    key: String,
    value: Vec<u8>,
    metadata: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

/// A request that ends before anything is produced.
struct Refusal {
    status: u16,
    error: String,
}

fn refuse(status: u16, error: impl Into<String>) -> Refusal {
    Refusal { status, error: error.into() }
}

/// Serves one publish request; `lane` picks the producer its records share.
pub(super) fn handle(request: &mut Request, ctx: &Context, max_body: usize, lane: usize) -> Reply {
    let peer = request.remote_addr().map_or_else(|| "?".into(), ToString::to_string);
    let reply = match publish(request, ctx, max_body, lane) {
        Ok(offsets) => json(200, &serde_json::json!({ "offsets": offsets })),
        Err(Refusal { status, error }) => {
            log::info!("http publish from {peer} refused ({status}): {error}");
            let reply = json(status, &serde_json::json!({ "error": error }));
            if status == 401 {
                reply.with_header(header("WWW-Authenticate", "Basic realm=\"databus\""))
            } else {
                reply
            }
        }
    };
    let status = reply.status_code().0;
    ctx.metrics.command("http_publish", (status != 200).then(|| status.to_string()).as_deref());
    reply
}

fn publish(
    request: &mut Request,
    ctx: &Context,
    max_body: usize,
    lane: usize,
) -> Result<Vec<serde_json::Value>, Refusal> {
    let query = request.url().split_once('?').map_or("", |(_, q)| q);
    let mut topic = None;
    let mut group = None;
    let mut color = String::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "topic" => topic = Some(value.into_owned()),
            "group" => group = Some(value.into_owned()),
            "color" => color = value.into_owned(),
            other => return Err(refuse(400, format!("unknown query parameter '{other}'"))),
        }
    }
    let (Some(topic), Some(group)) = (topic, group) else {
        return Err(refuse(400, "the query needs topic and group"));
    };
    let (key, secret) = basic_auth(request).ok_or_else(|| {
        ctx.metrics.refused("WRONGPASS", "");
        refuse(401, "HTTP Basic authentication with key:secret is required")
    })?;
    let req = AuthRequest {
        key,
        secret,
        group: group.clone(),
        topic,
        role: Role::Pub,
        color,
        offset: StartOffset::Latest,
        wait: None,
    };
    let settings = &ctx.settings;
    let snapshot = ctx.auth.snapshot();
    let grant = snapshot.check(&req, |c| ctx.clusters.contains(c)).map_err(|e| {
        let (status, code) = match e {
            AuthError::BadCredentials => (401, "WRONGPASS"),
            AuthError::ClusterNotConfigured { .. } => (403, "ERR"),
            _ => (403, "NOPERM"),
        };
        ctx.metrics.refused(code, snapshot.known_app(&req.key));
        refuse(status, format!("auth failed: {e}"))
    })?;

    if request.body_length().is_some_and(|n| n > max_body) {
        return Err(refuse(413, format!("the body is over {max_body} bytes")));
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(max_body as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| refuse(400, format!("reading the body: {e}")))?;
    if body.len() > max_body {
        return Err(refuse(413, format!("the body is over {max_body} bytes")));
    }
    let body: Body =
        serde_json::from_slice(&body).map_err(|e| refuse(400, format!("malformed body: {e}")))?;
    let mut records = Vec::with_capacity(body.records.len());
    for (i, r) in body.records.into_iter().enumerate() {
        if let Some(name) = r.headers.keys().find(|k| *k == "color" || *k == "metadata") {
            return Err(refuse(
                400,
                format!("record {i}: header '{name}' is databus's own (the color comes from the query, metadata from \"metadata\")"),
            ));
        }
        let value = match r.value {
            serde_json::Value::String(s) => s.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        if value.len() > settings.max_value_size {
            return Err(refuse(
                413,
                format!(
                    "record {i}: value is {} bytes, over the limit of {}",
                    value.len(),
                    settings.max_value_size
                ),
            ));
        }
        let metadata = r.metadata.map(|m| serde_json::to_vec(&m).expect("a map of strings serializes"));
        let headers = r.headers.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        records.push(Prepared { key: r.key, value, metadata, headers });
    }

    // Held to the app's publish rates as a connection's SETs are.
    let bytes = records.iter().map(|r| r.value.len() as u64).sum();
    ctx.limiter
        .app(&req.key)
        .throttle(records.len() as u64, bytes)
        .map_err(|e| refuse(429, e.to_string()))?;
    let meter = Arc::new(ctx.metrics.publisher(&req.key, &group, &grant.topic, &grant.cluster));
    let sent: Vec<Result<Sent, PublishError>> = records
        .iter()
        .map(|r| {
            let record = Record::new(&grant.topic, r.key.as_bytes(), &r.value)
                .color(&req.color)
                .metadata(r.metadata.as_deref())
                .fields(&r.headers);
            kafka::publish(ctx.kafka.as_ref(), &grant.cluster, lane, &record, Some(&meter))
        })
        .collect();
    let offsets = sent
        .into_iter()
        .map(|sent| match sent.and_then(Sent::wait) {
            Ok(d) => serde_json::json!({"partition": d.partition, "offset": d.offset, "error_code": 0}),
            Err(e) => serde_json::json!({
                "partition": -1,
                "offset": -1,
                "error_code": if e.is_retriable() { 2 } else { 1 },
                "error": e.to_string(),
            }),
        })
        .collect();
    Ok(offsets)
}

/// The key and secret of an `Authorization: Basic` header.
fn basic_auth(request: &Request) -> Option<(String, Secret)> {
    let value = request.headers().iter().find(|h| h.field.equiv("Authorization"))?.value.as_str();
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (key, secret) = text.split_once(':')?;
    Some((key.to_owned(), Secret::new(secret)))
}
