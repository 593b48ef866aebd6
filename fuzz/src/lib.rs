//! Fuzz checks for every databus parser that reads untrusted bytes: RESP requests from
//! clients, RESP replies (read by clients and the tests), the AUTH string, HSET metadata and
//! the config file. Each check is a pure function of `&[u8]` that panics only when an
//! invariant is broken, so one body serves both the libFuzzer binaries in `fuzz_targets/`
//! and the corpus regression test at the bottom, which `make test` runs over
//! `corpus/<target>/`.
//!
//! It is a crate of its own so libFuzzer never reaches the server build: the binaries need
//! the `libfuzzer` feature, which only `scripts/fuzz.sh` turns on (see FUZZING.md).

#![forbid(unsafe_code)]

use std::path::Path;

use databus::auth::{parse_auth_string, AuthRequest};
use databus::config::Settings;
use databus::kafka::StartOffset;
use databus::proto::{decode_metadata, Header};
use databus::resp::{discard, parse_reply, parse_request, Discard, Frame, Limits, Parsed};
use prost::Message;

/// A fuzz check: returns for any input, panics only on a broken invariant.
pub type Check = fn(&[u8]);

/// Every target, named as its `fuzz_targets/<name>.rs` binary and its `corpus/<name>/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("resp_request", resp_request),
    ("resp_reply", resp_reply),
    ("auth_string", auth_string),
    ("metadata", metadata),
    ("config", config),
    ("broker_response", broker_response),
];

/// The shipped bounds, and bounds so small that short inputs reach every one of them.
// `..Limits::default()` keeps this compiling while `Limits` gains fields; clippy calls the
// update needless whenever every field happens to be named.
#[allow(clippy::needless_update)]
fn limit_sets() -> [Limits; 4] {
    [
        Limits::default(),
        Limits { max_bulk_len: 4, max_array_len: 3, max_inline_len: 16, ..Limits::default() },
        Limits { max_bulk_len: 0, max_array_len: 1, max_inline_len: 1, ..Limits::default() },
        // A publisher's: requests over the bounds but within 64 bytes are dropped.
        Limits {
            max_bulk_len: 4,
            max_array_len: 3,
            max_inline_len: 16,
            max_request_len: 24,
            max_discard_len: 64,
        },
    ]
}

/// Where to cut a buffer to check that a result was not reached early: every cut of a short
/// one, a spread of cuts of a long one (checking all of them would be quadratic).
fn cuts(len: usize) -> Vec<usize> {
    if len <= 64 {
        (0..len).collect()
    } else {
        vec![0, 1, 2, len / 4, len / 2, len - len / 4, len - 2, len - 1]
    }
}

/// `parse_request` under each limit set, on the buffer and on every request pipelined after
/// the first, consumed one by one as a connection does: an oversized one by dropping it.
pub fn resp_request(data: &[u8]) {
    for limits in limit_sets() {
        let mut rest = data;
        let mut requests = 0;
        loop {
            if let Some(used) = check_request(rest, &limits) {
                rest = &rest[used..];
            } else if let Ok(Parsed::Oversized(o)) = parse_request(rest, &limits) {
                assert!(limits.max_discard_len > 0, "oversized with discarding off: {o:?}");
                assert!(
                    0 < o.header && o.header <= rest.len(),
                    "header {} of {} bytes",
                    o.header,
                    rest.len()
                );
                let Some(used) = check_discard(&rest[o.header..], o.rest) else { break };
                rest = &rest[o.header + used..];
            } else {
                break;
            }
            requests += 1;
            // `used > 0` is checked, so this cannot loop; the count says so explicitly.
            assert!(requests <= data.len(), "{requests} requests from {} bytes", data.len());
        }
    }
}

/// Drops the rest of an oversized request from `buf` as a connection does, in one go and
/// in two reads cut anywhere: both end at the same byte with the same outcome. Returns how
/// many bytes it took when the request ended within `buf`.
fn check_discard(buf: &[u8], rest: Discard) -> Option<usize> {
    let mut whole = rest.clone();
    let outcome = discard(buf, &mut whole);
    for cut in cuts(buf.len()) {
        let mut split = rest.clone();
        let first = discard(&buf[..cut], &mut split);
        let Ok((used, false)) = first else {
            // Decided within the first part: the whole buffer decides the same.
            assert_eq!(first.map(|(u, _)| u), outcome.clone().map(|(u, _)| u), "cut at {cut}");
            continue;
        };
        assert!(used <= cut);
        let second = discard(&buf[used..], &mut split).map(|(u, done)| (used + u, done));
        assert_eq!(second, outcome, "cut at {cut}");
    }
    match outcome {
        Ok((used, true)) => {
            assert!(0 < used && used <= buf.len());
            Some(used)
        }
        Ok((used, false)) => {
            // What it leaves is the start of the next argument's length line.
            assert!(used == buf.len() || buf[used] == b'$', "left {:?}", &buf[used..]);
            None
        }
        Err(_) => None,
    }
}

/// What a buffer may hold after a complete request or reply: something that is not one on
/// its own yet, so it would be easy to read into the one before.
const NEXT_REQUEST: &[u8] = b"*2\r\n$3\r\nGET";
const NEXT_REPLY: &[u8] = b"*1\r\n:1";

/// Checks the request at the front of `buf`; returns its length when there is a complete one.
fn check_request(buf: &[u8], limits: &Limits) -> Option<usize> {
    let parsed = parse_request(buf, limits);
    let Ok(Parsed::Complete(args, used)) = &parsed else {
        return None;
    };
    let used = *used;
    assert!(0 < used && used <= buf.len(), "used {used} of {} bytes", buf.len());
    // Inline or multibulk alike: an inline line of one-letter words must not get around them.
    assert!(args.len() <= limits.max_array_len, "{} args over {limits:?}", args.len());
    if let Some(arg) = args.iter().find(|a| a.len() > limits.max_bulk_len) {
        panic!("a {}-byte arg over {limits:?}", arg.len());
    }

    if buf[0] == b'*' {
        let mut encoded = Vec::new();
        Frame::Array(args.iter().cloned().map(Frame::Bulk).collect()).encode(&mut encoded);
        assert_eq!(parse_request(&encoded, limits), Ok(Parsed::Complete(args.clone(), encoded.len())));
        // Lengths have one spelling (no sign, no leading zero), so a request with arguments
        // can only have arrived in the canonical form; only `*0`/`*-n` have several.
        if !args.is_empty() {
            assert_eq!(buf[..used].escape_ascii().to_string(), encoded.escape_ascii().to_string());
        }
    }

    // Bytes after the request cannot change it (the next one is usually already buffered)...
    assert_eq!(parse_request(&buf[..used], limits), parsed);
    let mut longer = buf[..used].to_vec();
    longer.extend_from_slice(NEXT_REQUEST);
    assert_eq!(parse_request(&longer, limits), parsed);
    // ...and it is not decided before its last byte has arrived.
    for cut in cuts(used) {
        assert_eq!(parse_request(&buf[..cut], limits), Ok(Parsed::Incomplete), "cut at {cut}");
    }
    Some(used)
}

/// `parse_reply` under each limit set: the frame it reads encodes back to itself, and bytes
/// after it do not change it.
pub fn resp_reply(data: &[u8]) {
    for limits in limit_sets() {
        let parsed = parse_reply(data, &limits);
        let Ok(Some((frame, used))) = &parsed else {
            continue;
        };
        let used = *used;
        assert!(0 < used && used <= data.len(), "used {used} of {} bytes", data.len());

        let mut encoded = Vec::new();
        frame.encode(&mut encoded);
        let expected = flatten_status_lines(frame.clone());
        assert_eq!(parse_reply(&encoded, &limits), Ok(Some((expected, encoded.len()))));

        assert_eq!(parse_reply(&data[..used], &limits), parsed);
        let mut longer = data[..used].to_vec();
        longer.extend_from_slice(NEXT_REPLY);
        assert_eq!(parse_reply(&longer, &limits), parsed);
        for cut in cuts(used) {
            assert_eq!(parse_reply(&data[..cut], &limits), Ok(None), "cut at {cut}");
        }
    }
}

/// The frame as it reads back after encoding, which turns a CR or LF in a status or error
/// line into a space (a bare `\r` or `\n` parses, only CRLF ends the line).
fn flatten_status_lines(frame: Frame) -> Frame {
    let flatten = |text: String| text.replace(['\r', '\n'], " ");
    match frame {
        Frame::Simple(text) => Frame::Simple(flatten(text)),
        Frame::Error(text) => Frame::Error(flatten(text)),
        Frame::Array(items) => Frame::Array(items.into_iter().map(flatten_status_lines).collect()),
        Frame::Map(pairs) => Frame::Map(
            pairs.into_iter().map(|(k, v)| (flatten_status_lines(k), flatten_status_lines(v))).collect(),
        ),
        other => other,
    }
}

/// A secret that cannot change where the AUTH string splits: no `@`.
const STAND_IN_SECRET: &str = "stand-in-secret";

/// `parse_auth_string` on UTF-8 input: what it accepts is well formed and prints back to
/// itself, and nothing it returns, error text included, depends on the secret.
pub fn auth_string(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_auth_string(text);
    if let Ok(req) = &parsed {
        check_auth_request(req);
    }

    // Swap the secret for another one: the outcome may differ only in the secret itself, so
    // no error message and no Debug line can be carrying it.
    let Some((credentials, rest)) = text.rsplit_once('@') else {
        return;
    };
    let Some((key, secret)) = credentials.split_once(':') else {
        return;
    };
    if secret.is_empty() {
        return;
    }
    let swapped = parse_auth_string(&format!("{key}:{STAND_IN_SECRET}@{rest}"));
    match (&parsed, swapped) {
        (Ok(req), Ok(other)) => {
            assert_eq!(format!("{req:?}"), format!("{other:?}"));
            assert_eq!(*req, AuthRequest { secret: secret.into(), ..other });
        }
        (Err(e), Err(other)) => assert_eq!(*e, other),
        (a, b) => panic!("the secret decided the outcome: {a:?} vs {b:?}"),
    }
}

fn check_auth_request(req: &AuthRequest) {
    for (what, value) in [
        ("key", req.key.as_str()),
        ("secret", req.secret.expose()),
        ("group", &req.group),
        ("topic", &req.topic),
    ] {
        assert!(!value.is_empty(), "empty {what} accepted");
    }
    assert!(
        req.color.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "color {:?} accepted",
        req.color
    );

    let shown = format!("{req:?}");
    let secret = req.secret.expose();
    let elsewhere = [&req.key, &req.group, &req.topic, &req.color].iter().any(|v| v.contains(secret))
        || format!("{:?}", AuthRequest { secret: STAND_IN_SECRET.into(), ..req.clone() }).contains(secret);
    if secret.len() >= 8 && !elsewhere {
        assert!(!shown.contains(secret), "Debug shows the secret: {shown}");
    }

    // Written back in full canonical form, it parses to itself.
    let offset = match req.offset {
        StartOffset::Latest => "new",
        StartOffset::Earliest => "old",
    };
    let canonical = format!(
        "{}:{}@{}/topic={}&role={}&color={}&offset={offset}",
        req.key,
        req.secret.expose(),
        req.group,
        req.topic,
        req.role,
        req.color
    );
    assert_eq!(parse_auth_string(&canonical).as_ref(), Ok(req));
}

/// `decode_metadata`: whichever of the two forms HSET accepts a map arrived in, it survives
/// being written back in either one, as a protobuf `Header` and as a JSON object.
pub fn metadata(data: &[u8]) {
    let Some(map) = decode_metadata(data) else {
        return;
    };
    let pb = Header { metadata: map.clone() }.encode_to_vec();
    assert_eq!(decode_metadata(&pb).as_ref(), Some(&map), "protobuf round trip");
    let json = serde_json::to_vec(&map).expect("a map of strings serializes");
    assert_eq!(decode_metadata(&json).as_ref(), Some(&map), "JSON round trip");
}

/// `decode_broker_responses`: databus's own producer reads whatever a broker (or something
/// posing as one) sends without panicking, and makes sense of a length-prefixed frame in at most
/// 23 ways (Produce v3–v9, Metadata v1–v12, ApiVersions v0–v3, SaslHandshake v0–v1).
pub fn broker_response(data: &[u8]) {
    let decoded = databus::kafka::decode_broker_responses(data);
    assert!(decoded <= 23 * (data.len() / 4 + 1), "{decoded} responses from {} bytes", data.len());
}

/// `Settings::from_toml` on UTF-8 input: it returns settings or an error, never panics, and
/// the error names the file. (What the settings hold is the config module's own unit tests'
/// business; checking it here would tie the fuzzer to the layout of `Settings`.)
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Settings::from_toml(Path::new("fuzz.toml"), text) {
        let shown = e.to_string();
        assert!(shown.starts_with("config fuzz.toml"), "error without the file: {shown}");
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::{Path, PathBuf};

    use super::{Check, TARGETS};

    fn fuzz_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// Runs `check` over every file in `dir`, naming each file that breaks an invariant.
    fn run_dir(name: &str, check: Check, dir: &Path) -> usize {
        let entries = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("corpus dir {} of target {name} is missing: {e}", dir.display()));
        let mut files: Vec<PathBuf> = entries.map(|e| e.expect("readable corpus dir").path()).collect();
        files.sort();
        let mut failed = Vec::new();
        for path in &files {
            let data = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failed.push(path.display().to_string());
            }
        }
        assert!(failed.is_empty(), "{name}: invariants broken by {failed:#?}");
        files.len()
    }

    /// The corpus regression: every committed input of every target still passes its check.
    #[test]
    fn committed_corpus_passes() {
        for (name, check) in TARGETS {
            let dir = fuzz_dir().join("corpus").join(name);
            let count = run_dir(name, *check, &dir);
            assert!(count > 0, "corpus dir {} is empty", dir.display());
        }
    }

    /// A target binary without a check (or the reverse) would silently go unfuzzed or untested.
    #[test]
    fn every_fuzz_target_has_a_check() {
        let mut binaries: Vec<String> = fs::read_dir(fuzz_dir().join("fuzz_targets"))
            .expect("fuzz_targets/ is there")
            .map(|e| e.expect("readable dir").path())
            .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
            .collect();
        binaries.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
        names.sort();
        assert_eq!(binaries, names);
    }
}
