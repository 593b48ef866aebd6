//! Parsing RESP2 from untrusted bytes: client requests (multibulk or inline) and, for tests and
//! clients, replies. Every length is checked against `Limits` before anything is allocated or
//! awaited, so a peer cannot make the server reserve memory it never sends.

use super::frame::Frame;

/// Longest `*`, `$` or `:` line we wait for: any i64 fits in 20 characters, so a peer still
/// sending digits past this is not speaking RESP.
const MAX_LENGTH_LINE: usize = 32;

/// Bounds recursion in `parse_reply`, so a hostile reply cannot exhaust the stack.
const MAX_REPLY_DEPTH: usize = 32;

/// Bounds applied to every length read from the wire, before any allocation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string, in bytes.
    pub max_bulk_len: usize,
    /// Most elements in one array (arguments in one request).
    pub max_array_len: usize,
    /// Most bytes before the `\n` of an inline request (or a `+`/`-` reply line).
    pub max_inline_len: usize,
    /// Most bytes of one whole request as sent, framing included, so that many arguments
    /// each within `max_bulk_len` still cannot add up to more. Requests only.
    pub max_request_len: usize,
    /// A multibulk request over `max_bulk_len` or `max_request_len` but at most this long
    /// is [`Parsed::Oversized`]: the caller drops it as it streams in (see [`discard`]) and
    /// the stream stays in step. 0: every request over the bounds is an error.
    pub max_discard_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 4 * 1024 * 1024,
            max_array_len: 1024,
            max_inline_len: 64 * 1024,
            max_request_len: 8 * 1024 * 1024,
            max_discard_len: 0,
        }
    }
}

/// Outcome of trying to parse one request from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The arguments and how many bytes they took. An empty list is a request Redis
    /// ignores (blank line, `*0`, `*-1`); its bytes must still be consumed.
    Complete(Vec<Vec<u8>>, usize),
    /// The buffer ends mid-request; call again once more bytes have arrived.
    Incomplete,
    /// A request over the bounds but within `max_discard_len`, known from the header of
    /// its first argument too long: nothing of it is kept. The caller consumes
    /// `Oversized::header` bytes, then feeds what follows to [`discard`] until it is done.
    Oversized(Oversized),
}

/// The part of an oversized request still to come, and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    /// Bytes of the buffer up to the data of the argument that is too long.
    pub header: usize,
    /// The first argument (the command name), when it came before the long one.
    pub command: Option<Vec<u8>>,
    /// Which argument is too long (0 is the command name), and its length.
    pub index: usize,
    pub len: u64,
    /// What is still to be dropped.
    pub rest: Discard,
}

/// The bytes of an oversized request still to be dropped: the rest of the current
/// argument (its CRLF included), then whole arguments, each `$<len>\r\n<data>\r\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discard {
    bytes: u64,
    args: usize,
    /// The request's length so far, framing included, held to `max`.
    total: u64,
    max: usize,
}

/// Why bytes could not be parsed; the text is meant to follow `ERR Protocol error: `.
/// Any of these leaves the stream unsynchronised, so the connection should be closed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("invalid bulk length")]
    InvalidBulkLength,
    #[error("invalid integer")]
    InvalidInteger,
    #[error("too many arguments: {count} over the limit of {max}")]
    TooManyArgs { count: u64, max: usize },
    #[error("bulk length {len} over the limit of {max}")]
    BulkTooLong { len: u64, max: usize },
    #[error("array length {len} over the limit of {max}")]
    ArrayTooLong { len: u64, max: usize },
    #[error("inline request longer than {max} bytes")]
    InlineTooLong { max: usize },
    #[error("request longer than {max} bytes")]
    RequestTooLong { max: usize },
    #[error("reply line longer than {max} bytes")]
    ReplyLineTooLong { max: usize },
    #[error("length line longer than {max} bytes")]
    LengthLineTooLong { max: usize },
    #[error("expected '$', got '{}'", .0.escape_ascii())]
    ExpectedBulk(u8),
    #[error("unknown reply type '{}'", .0.escape_ascii())]
    UnknownReplyType(u8),
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("expected CRLF after bulk data")]
    MissingCrlf,
    #[error("reply nested deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("status reply is not valid UTF-8")]
    InvalidUtf8,
}

use ProtocolError as E;

/// Parses one request from the front of `buf`. Redis picks the format from the first byte
/// alone: `*` means multibulk, anything else an inline command line.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    let Some((line, mut pos)) = read_length_line(buf, 1)? else {
        return Ok(Parsed::Incomplete);
    };
    let count = parse_int(line).ok_or(E::InvalidMultibulkLength)?;
    // Redis treats any non-positive count as an empty request rather than an error.
    if count <= 0 {
        return Ok(Parsed::Complete(Vec::new(), pos));
    }
    let count = count.unsigned_abs();
    let max = limits.max_array_len;
    let count = bounded(count, max).ok_or(E::TooManyArgs { count, max })?;
    // Borrow first and copy only once the whole request is here: a request arriving in many
    // reads is re-parsed each time, and copying partial arguments would make that quadratic.
    let mut args: Vec<&[u8]> = Vec::new();
    for _ in 0..count {
        let Some(&kind) = buf.get(pos) else {
            return Ok(Parsed::Incomplete);
        };
        if kind != b'$' {
            return Err(E::ExpectedBulk(kind));
        }
        let Some((line, start)) = read_length_line(buf, pos + 1)? else {
            return Ok(Parsed::Incomplete);
        };
        // Judged from the header: the data is never awaited, let alone buffered.
        let len = request_bulk_len(line)?;
        let end = (start as u64).saturating_add(len).saturating_add(2);
        let over = len > limits.max_bulk_len as u64 || end > limits.max_request_len as u64;
        if over && end <= limits.max_discard_len as u64 {
            let args_after = count - args.len() - 1;
            let rest = Discard { bytes: len + 2, args: args_after, total: end, max: limits.max_discard_len };
            let command = args.first().map(|c| c.to_vec());
            return Ok(Parsed::Oversized(Oversized { header: start, command, index: args.len(), len, rest }));
        }
        if len > limits.max_bulk_len as u64 {
            return Err(E::BulkTooLong { len, max: limits.max_bulk_len });
        }
        if end > limits.max_request_len as u64 {
            return Err(E::RequestTooLong { max: limits.max_request_len });
        }
        let len = len as usize;
        let Some((data, end)) = take_bulk(buf, start, len)? else {
            return Ok(Parsed::Incomplete);
        };
        args.push(data);
        pos = end;
    }
    Ok(Parsed::Complete(args.into_iter().map(<[u8]>::to_vec).collect(), pos))
}

/// The limit counts every byte before the `\n`, including a `\r`, so the search for the
/// newline itself never scans past it.
fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    let max = limits.max_inline_len.min(limits.max_request_len);
    let window = &buf[..buf.len().min(max.saturating_add(1))];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() > max {
            return Err(E::InlineTooLong { max });
        }
        return Ok(Parsed::Incomplete);
    };
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Parsed::Complete(split_args(line, limits)?, newline + 1))
}

/// C `isspace`, which `sdssplitargs` uses between arguments; unlike Rust's ASCII whitespace
/// it includes vertical tab.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Splits an inline line as Redis's `sdssplitargs` does, so `redis-cli`-style and telnet
/// input behaves identically here. One deliberate difference: a NUL byte is ordinary data
/// instead of ending the line, since we hold a slice, not a C string. The line is held to
/// the same argument count and size as a multibulk request: a 16 KiB line of one-letter
/// words would otherwise be thousands of argument vectors.
fn split_args(line: &[u8], limits: &Limits) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).copied().is_some_and(is_space) {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        if args.len() == limits.max_array_len {
            let count = args.len() as u64 + 1;
            return Err(E::TooManyArgs { count, max: limits.max_array_len });
        }
        let mut arg = Vec::new();
        let mut quote = None;
        loop {
            match (quote, line.get(i).copied()) {
                (None, None | Some(b' ' | b'\n' | b'\r' | b'\t')) => break,
                (Some(_), None) => return Err(E::UnbalancedQuotes),
                // As in Redis, a quote inside a bare word opens a quoted section of that word.
                (None, Some(q @ (b'"' | b'\''))) => quote = Some(q),
                (None, Some(c)) => arg.push(c),
                (Some(b'"'), Some(b'\\')) if i + 1 < line.len() => {
                    if let Some(byte) = hex_pair(line, i + 2).filter(|_| line[i + 1] == b'x') {
                        arg.push(byte);
                        i += 3;
                    } else {
                        i += 1;
                        arg.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                }
                (Some(b'\''), Some(b'\\')) if line.get(i + 1) == Some(&b'\'') => {
                    arg.push(b'\'');
                    i += 1;
                }
                (Some(q), Some(c)) if c == q => {
                    // `"a"b` is rejected rather than guessed at.
                    if line.get(i + 1).is_some_and(|&next| !is_space(next)) {
                        return Err(E::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                }
                (Some(_), Some(c)) => arg.push(c),
            }
            i += 1;
        }
        if arg.len() > limits.max_bulk_len {
            return Err(E::BulkTooLong { len: arg.len() as u64, max: limits.max_bulk_len });
        }
        args.push(arg);
    }
}

fn hex_pair(line: &[u8], at: usize) -> Option<u8> {
    let digit = |i: usize| char::from(*line.get(i)?).to_digit(16);
    u8::try_from(digit(at)? * 16 + digit(at + 1)?).ok()
}

/// Parses one complete reply from the front of `buf`, returning it with the bytes it took,
/// or `None` if more bytes are needed. `*-1` (the null array) is read as `Frame::Null`.
pub fn parse_reply(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, ProtocolError> {
    reply_at(buf, 0, limits, 0)
}

fn reply_at(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let line = match kind {
        b'+' | b'-' | b'_' => {
            let max = limits.max_inline_len;
            read_line(buf, pos + 1, max, E::ReplyLineTooLong { max })?
        }
        b':' | b'$' | b'*' | b'%' => read_length_line(buf, pos + 1)?,
        other => return Err(E::UnknownReplyType(other)),
    };
    let Some((line, next)) = line else {
        return Ok(None);
    };
    let text = || String::from_utf8(line.to_vec()).map_err(|_| E::InvalidUtf8);
    Ok(match kind {
        b'+' => Some((Frame::Simple(text()?), next)),
        b'-' => Some((Frame::Error(text()?), next)),
        b'_' if line.is_empty() => Some((Frame::Null3, next)),
        b'_' => return Err(E::UnknownReplyType(b'_')),
        b':' => Some((Frame::Integer(parse_int(line).ok_or(E::InvalidInteger)?), next)),
        b'$' => match bulk_len(line, limits)? {
            None => Some((Frame::Null, next)),
            Some(len) => take_bulk(buf, next, len)?.map(|(data, end)| (Frame::Bulk(data.to_vec()), end)),
        },
        _ => {
            let len = parse_int(line).ok_or(E::InvalidMultibulkLength)?;
            if len == -1 {
                return Ok(Some((Frame::Null, next)));
            }
            let len = u64::try_from(len).map_err(|_| E::InvalidMultibulkLength)?;
            let max = limits.max_array_len;
            let len = bounded(len, max).ok_or(E::ArrayTooLong { len, max })?;
            if depth >= MAX_REPLY_DEPTH {
                return Err(E::TooDeep { max: MAX_REPLY_DEPTH });
            }
            // A RESP3 map holds two frames per entry.
            let count = if kind == b'%' { len * 2 } else { len };
            let mut items = Vec::new();
            let mut pos = next;
            for _ in 0..count {
                let Some((item, end)) = reply_at(buf, pos, limits, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                pos = end;
            }
            if kind == b'%' {
                let mut items = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    pairs.push((k, v));
                }
                Some((Frame::Map(pairs), pos))
            } else {
                Some((Frame::Array(items), pos))
            }
        }
    })
}

/// Reads a `$` length; `None` is RESP2's null bulk (`-1`), which only replies may carry.
/// The length of a request's bulk argument, which may not be null (`$-1`).
fn request_bulk_len(line: &[u8]) -> Result<u64, ProtocolError> {
    let len = parse_int(line).ok_or(E::InvalidBulkLength)?;
    u64::try_from(len).map_err(|_| E::InvalidBulkLength)
}

/// Drops what `buf` holds of an oversized request (see [`Parsed::Oversized`]): returns how
/// many bytes to consume and whether the request is over. Memory stays bounded whatever the
/// request's length, since nothing is kept; past `max_discard_len` in all, or with bytes
/// that are not a request's framing, it fails, and the stream is out of step.
pub fn discard(buf: &[u8], d: &mut Discard) -> Result<(usize, bool), ProtocolError> {
    let mut pos = 0;
    loop {
        // The data, then its CRLF, which is checked as `take_bulk` does.
        while d.bytes > 0 && pos < buf.len() {
            if d.bytes > 2 {
                let drop = (d.bytes - 2).min((buf.len() - pos) as u64);
                pos += drop as usize;
                d.bytes -= drop;
                continue;
            }
            if buf[pos] != b"\r\n"[2 - d.bytes as usize] {
                return Err(E::MissingCrlf);
            }
            pos += 1;
            d.bytes -= 1;
        }
        if d.bytes > 0 {
            return Ok((pos, false));
        }
        if d.args == 0 {
            return Ok((pos, true));
        }
        let Some(&kind) = buf.get(pos) else {
            return Ok((pos, false));
        };
        if kind != b'$' {
            return Err(E::ExpectedBulk(kind));
        }
        let Some((line, start)) = read_length_line(buf, pos + 1)? else {
            return Ok((pos, false));
        };
        let len = request_bulk_len(line)?;
        d.total = d.total.saturating_add((start - pos) as u64).saturating_add(len).saturating_add(2);
        if d.total > d.max as u64 {
            return Err(E::RequestTooLong { max: d.max });
        }
        d.bytes = len + 2;
        d.args -= 1;
        pos = start;
    }
}

fn bulk_len(line: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    let len = parse_int(line).ok_or(E::InvalidBulkLength)?;
    if len == -1 {
        return Ok(None);
    }
    let len = u64::try_from(len).map_err(|_| E::InvalidBulkLength)?;
    let max = limits.max_bulk_len;
    bounded(len, max).map(Some).ok_or(E::BulkTooLong { len, max })
}

/// Converts without a lossy cast, so a length too big for `usize` counts as over the limit.
fn bounded(n: u64, max: usize) -> Option<usize> {
    usize::try_from(n).ok().filter(|&n| n <= max)
}

/// Takes `len` bytes of bulk data at `start` plus their CRLF. A wrong trailer is reported as
/// soon as its first byte is visible, since waiting could not fix it.
fn take_bulk(buf: &[u8], start: usize, len: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[start..];
    if rest.len() < len {
        return Ok(None);
    }
    let (data, tail) = rest.split_at(len);
    let trailer = &tail[..tail.len().min(2)];
    if !b"\r\n".starts_with(trailer) {
        return Err(E::MissingCrlf);
    }
    if trailer.len() < 2 {
        return Ok(None);
    }
    Ok(Some((data, start + len + 2)))
}

fn read_length_line(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    read_line(buf, start, MAX_LENGTH_LINE, E::LengthLineTooLong { max: MAX_LENGTH_LINE })
}

/// Finds the CRLF-terminated line at `start` (returning it and the offset after the CRLF),
/// failing with `too_long` once more than `max` bytes have arrived without one, so a peer
/// cannot keep us waiting on an endless line.
fn read_line(
    buf: &[u8],
    start: usize,
    max: usize,
    too_long: ProtocolError,
) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = &buf[start..];
    let window = &rest[..rest.len().min(max.saturating_add(2))];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], start + end + 2))),
        None if window.len() == max.saturating_add(2) => Err(too_long),
        None => Ok(None),
    }
}

/// Parses a decimal as Redis's `string2ll` does: only `-` as a sign, no leading zeros, no
/// spaces, so a length has a single spelling and garbage is never half-accepted.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, s),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    digits.iter().try_fold(0i64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        // Accumulating toward the sign lets i64::MIN parse without overflowing.
        let n = n.checked_mul(10)?;
        if negative {
            n.checked_sub(d)
        } else {
            n.checked_add(d)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::frame::Frame;
    use super::*;

    fn args(list: &[&[u8]]) -> Vec<Vec<u8>> {
        list.iter().map(|a| a.to_vec()).collect()
    }

    fn small() -> Limits {
        Limits {
            max_bulk_len: 4,
            max_array_len: 3,
            max_inline_len: 16,
            max_request_len: 1024,
            max_discard_len: 0,
        }
    }

    fn req(buf: &[u8]) -> Result<Parsed, ProtocolError> {
        parse_request(buf, &Limits::default())
    }

    /// Encodes a request the way clients do, independently of `Frame`.
    fn encode_request(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Consumes every complete request from the front of `buf`, as a connection loop would.
    fn drain(buf: &mut Vec<u8>, limits: &Limits) -> Vec<(Vec<Vec<u8>>, usize)> {
        let mut out = Vec::new();
        while let Parsed::Complete(args, used) = parse_request(buf, limits).unwrap() {
            buf.drain(..used);
            out.push((args, used));
        }
        out
    }

    const PIPELINE: &[u8] = b"*3\r\n$3\r\nSET\r\n$4\r\nk\r\nv\r\n$0\r\n\r\n\
        *0\r\n\
        PING \"a b\"\r\n\
        *-1\r\n\
        *1\r\n$4\r\nPING\r\n\
        \n";

    fn pipeline_expected() -> Vec<(Vec<Vec<u8>>, usize)> {
        vec![
            (args(&[b"SET", b"k\r\nv", b""]), 29),
            (vec![], 4),
            (args(&[b"PING", b"a b"]), 12),
            (vec![], 5),
            (args(&[b"PING"]), 14),
            (vec![], 1),
        ]
    }

    #[test]
    fn default_limits() {
        let l = Limits::default();
        assert_eq!(l.max_bulk_len, 4_194_304);
        assert_eq!(l.max_array_len, 1024);
        assert_eq!(l.max_inline_len, 65_536);
        assert_eq!(l.max_request_len, 8_388_608);
    }

    #[test]
    fn whole_request_bound() {
        // `*2\r\n$4\r\nabcd\r\n$4\r\nefgh\r\n` is 24 bytes; every argument is within
        // max_bulk_len, so only the whole-request bound can refuse it.
        let two = b"*2\r\n$4\r\nabcd\r\n$4\r\nefgh\r\n";
        let fits = Limits { max_request_len: 24, ..small() };
        assert_eq!(parse_request(two, &fits), Ok(Parsed::Complete(args(&[b"abcd", b"efgh"]), 24)));
        let tight = Limits { max_request_len: 23, ..small() };
        assert_eq!(parse_request(two, &tight), Err(E::RequestTooLong { max: 23 }));
        // Refused from the second header alone, before its data arrives.
        assert_eq!(parse_request(&two[..18], &tight), Err(E::RequestTooLong { max: 23 }));
        assert_eq!(parse_request(&two[..17], &tight), Ok(Parsed::Incomplete));
        assert_eq!(E::RequestTooLong { max: 23 }.to_string(), "request longer than 23 bytes");
        // An inline line is held to the smaller of the two bounds.
        let line = b"PING abcdefghijk\n";
        let l = Limits { max_bulk_len: 16, ..small() };
        assert_eq!(parse_request(line, &Limits { max_request_len: 16, ..l }).map(|_| ()), Ok(()));
        assert_eq!(
            parse_request(line, &Limits { max_request_len: 15, ..l }),
            Err(E::InlineTooLong { max: 15 })
        );
    }

    #[test]
    fn single_multibulk() {
        assert_eq!(
            req(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"),
            Ok(Parsed::Complete(args(&[b"GET", b"key"]), 22))
        );
        assert_eq!(req(b""), Ok(Parsed::Incomplete));
    }

    #[test]
    fn pipelined_commands_are_consumed_one_at_a_time() {
        let mut buf = PIPELINE.to_vec();
        buf.extend_from_slice(b"*1\r\n$3\r\nGE");
        assert_eq!(drain(&mut buf, &Limits::default()), pipeline_expected());
        assert_eq!(buf, b"*1\r\n$3\r\nGE");
        let total: usize = pipeline_expected().iter().map(|(_, used)| used).sum();
        assert_eq!(total, PIPELINE.len());
    }

    #[test]
    fn every_prefix_is_incomplete_until_the_first_request_ends() {
        let (first, first_len) = pipeline_expected().remove(0);
        for cut in 0..=PIPELINE.len() {
            let expected =
                if cut < first_len { Parsed::Incomplete } else { Parsed::Complete(first.clone(), first_len) };
            assert_eq!(req(&PIPELINE[..cut]), Ok(expected), "cut at {cut}");
        }
    }

    #[test]
    fn every_split_point_yields_the_same_requests() {
        let limits = Limits::default();
        for cut in 0..=PIPELINE.len() {
            let mut buf = PIPELINE[..cut].to_vec();
            let mut got = drain(&mut buf, &limits);
            buf.extend_from_slice(&PIPELINE[cut..]);
            got.extend(drain(&mut buf, &limits));
            assert_eq!(got, pipeline_expected(), "cut at {cut}");
            assert!(buf.is_empty(), "cut at {cut}");
        }
        // And byte by byte, the worst case for a slow client.
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in PIPELINE {
            buf.push(b);
            got.extend(drain(&mut buf, &limits));
        }
        assert_eq!(got, pipeline_expected());
    }

    #[test]
    fn bulk_length_bound() {
        let l = small();
        assert_eq!(parse_request(b"*1\r\n$4\r\nabcd\r\n", &l), Ok(Parsed::Complete(args(&[b"abcd"]), 14)));
        // Rejected from the header alone, without waiting for the data.
        assert_eq!(parse_request(b"*1\r\n$5\r\n", &l), Err(E::BulkTooLong { len: 5, max: 4 }));
        let err = req(b"*1\r\n$999999999999\r\n").unwrap_err();
        assert_eq!(err, E::BulkTooLong { len: 999_999_999_999, max: 4_194_304 });
        let err = req(b"*1\r\n$5000000\r\n").unwrap_err();
        assert_eq!(err.to_string(), "bulk length 5000000 over the limit of 4194304");
    }

    #[test]
    fn oversized_requests_are_dropped_as_they_stream() {
        let l = Limits { max_request_len: 24, max_discard_len: 64, ..small() };
        // The value (argument 2) is too long: known from its header, data not awaited.
        let head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$30\r\n";
        let Ok(Parsed::Oversized(o)) = parse_request(head, &l) else {
            panic!("{:?}", parse_request(head, &l))
        };
        assert_eq!((o.header, o.command.as_deref(), o.index, o.len), (head.len(), Some(&b"SET"[..]), 2, 30));
        // Dropped piece by piece; the next request is left alone.
        let mut rest = o.rest.clone();
        assert_eq!(discard(&[b'x'; 10], &mut rest), Ok((10, false)));
        assert_eq!(discard(&[b'x'; 20], &mut rest), Ok((20, false)));
        assert_eq!(discard(b"\r\n*1\r\n$4\r\nPING\r\n", &mut rest), Ok((2, true)));
        // Arguments after the long one are dropped too, whatever their length...
        let head = b"*3\r\n$3\r\nSET\r\n$30\r\n";
        let Ok(Parsed::Oversized(o)) = parse_request(head, &l) else { panic!() };
        assert_eq!(o.index, 1);
        let mut rest = o.rest.clone();
        let tail = [&[b'k'; 30][..], b"\r\n$5\r\nvalue\r\n"].concat();
        assert_eq!(discard(&tail, &mut rest), Ok((tail.len(), true)));
        // ...within max_discard_len in all.
        let mut rest = o.rest;
        let tail = [&[b'k'; 30][..], b"\r\n$40\r\n"].concat();
        assert_eq!(discard(&tail, &mut rest), Err(E::RequestTooLong { max: 64 }));
        let mut rest = parse_request(head, &l)
            .map(|p| match p {
                Parsed::Oversized(o) => o.rest,
                _ => panic!(),
            })
            .unwrap();
        assert_eq!(discard(&[&[b'k'; 30][..], b"\r\nx"].concat(), &mut rest), Err(E::ExpectedBulk(b'x')));
        // The CRLF after each argument is checked, so a miscounted length is an error.
        let mut rest = parse_request(head, &l)
            .map(|p| match p {
                Parsed::Oversized(o) => o.rest,
                _ => panic!(),
            })
            .unwrap();
        assert_eq!(discard(&[b'k'; 32], &mut rest), Err(E::MissingCrlf));
        // Past max_discard_len from the header alone, or with discarding off: an error.
        assert_eq!(parse_request(b"*2\r\n$3\r\nSET\r\n$60\r\n", &l), Err(E::BulkTooLong { len: 60, max: 4 }));
        assert_eq!(parse_request(head, &small()), Err(E::BulkTooLong { len: 30, max: 4 }));
    }

    #[test]
    fn array_length_bound() {
        let l = small();
        assert_eq!(
            parse_request(b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", &l),
            Ok(Parsed::Complete(args(&[b"a", b"b", b"c"]), 25))
        );
        assert_eq!(parse_request(b"*4\r\n", &l), Err(E::TooManyArgs { count: 4, max: 3 }));
        let many: Vec<Vec<u8>> = (0..1024u32).map(|i| i.to_string().into_bytes()).collect();
        let encoded = encode_request(&many);
        assert_eq!(req(&encoded), Ok(Parsed::Complete(many.clone(), encoded.len())));
        let err = req(b"*2000\r\n").unwrap_err();
        assert_eq!(err.to_string(), "too many arguments: 2000 over the limit of 1024");
        assert_eq!(
            req(b"*9223372036854775807\r\n"),
            Err(E::TooManyArgs { count: i64::MAX as u64, max: 1024 })
        );
    }

    #[test]
    fn inline_length_bound() {
        let l = Limits { max_bulk_len: 16, ..small() };
        let a16 = [b'a'; 16];
        assert_eq!(parse_request(&a16, &l), Ok(Parsed::Incomplete));
        assert_eq!(parse_request(&[b'a'; 17], &l), Err(E::InlineTooLong { max: 16 }));
        let mut line = a16.to_vec();
        line.push(b'\n');
        assert_eq!(parse_request(&line, &l), Ok(Parsed::Complete(vec![a16.to_vec()], 17)));
        // The limit counts the `\r` too.
        let mut line = [b'a'; 15].to_vec();
        line.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&line, &l), Ok(Parsed::Complete(vec![vec![b'a'; 15]], 17)));
        line.insert(0, b'a');
        assert_eq!(parse_request(&line, &l), Err(E::InlineTooLong { max: 16 }));
        let err = req(&vec![b'a'; 65_537]).unwrap_err();
        assert_eq!(err.to_string(), "inline request longer than 65536 bytes");
        assert_eq!(req(&vec![b'a'; 65_536]), Ok(Parsed::Incomplete));
    }

    #[test]
    fn length_line_bound() {
        let too_long = Err(E::LengthLineTooLong { max: 32 });
        let mut buf = vec![b'*'];
        buf.extend_from_slice(&[b'9'; 32]);
        buf.push(b'\r');
        // 32 digits and a CR: the LF may still come.
        assert_eq!(req(&buf), Ok(Parsed::Incomplete));
        buf.push(b'\n');
        assert_eq!(req(&buf), Err(E::InvalidMultibulkLength));
        let mut buf = vec![b'*'];
        buf.extend_from_slice(&[b'9'; 33]);
        assert_eq!(req(&buf), Ok(Parsed::Incomplete));
        buf.push(b'\r');
        assert_eq!(req(&buf), too_long);
        let mut buf = b"*1\r\n$".to_vec();
        buf.extend_from_slice(&[b' '; 34]);
        assert_eq!(req(&buf), too_long);
        buf.truncate(5 + 33);
        assert_eq!(req(&buf), Ok(Parsed::Incomplete));
    }

    #[test]
    fn empty_requests() {
        assert_eq!(req(b"*0\r\n"), Ok(Parsed::Complete(vec![], 4)));
        assert_eq!(req(b"*-1\r\n"), Ok(Parsed::Complete(vec![], 5)));
        assert_eq!(req(b"*-7\r\nPING\r\n"), Ok(Parsed::Complete(vec![], 5)));
        assert_eq!(req(b"\r\n"), Ok(Parsed::Complete(vec![], 2)));
        assert_eq!(req(b"\n"), Ok(Parsed::Complete(vec![], 1)));
        assert_eq!(req(b" \t \x0b\r\nX"), Ok(Parsed::Complete(vec![], 6)));
    }

    #[test]
    fn garbage_and_negative_lengths() {
        for bad in [
            &b"*abc\r\n"[..],
            b"*\r\n",
            b"*+2\r\n",
            b"*02\r\n",
            b"*-0\r\n",
            b"* 2\r\n",
            b"*2 \r\n",
            b"*99999999999999999999\r\n",
        ] {
            assert_eq!(req(bad), Err(E::InvalidMultibulkLength), "{bad:?}");
        }
        for bad in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$-2\r\n",
            b"*1\r\n$x\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$3x\r\n",
            b"*1\r\n$03\r\n",
            b"*1\r\n$99999999999999999999\r\n",
        ] {
            assert_eq!(req(bad), Err(E::InvalidBulkLength), "{bad:?}");
        }
        assert_eq!(E::InvalidBulkLength.to_string(), "invalid bulk length");
        assert_eq!(E::InvalidMultibulkLength.to_string(), "invalid multibulk length");
    }

    #[test]
    fn element_must_be_a_bulk_string() {
        let err = req(b"*1\r\n+OK\r\n").unwrap_err();
        assert_eq!(err, E::ExpectedBulk(b'+'));
        assert_eq!(err.to_string(), "expected '$', got '+'");
        assert_eq!(req(b"*2\r\n$1\r\na\r\n:1\r\n"), Err(E::ExpectedBulk(b':')));
        assert_eq!(E::ExpectedBulk(0).to_string(), "expected '$', got '\\x00'");
    }

    #[test]
    fn bulk_data_must_end_in_crlf() {
        assert_eq!(req(b"*1\r\n$3\r\nfooXY"), Err(E::MissingCrlf));
        assert_eq!(req(b"*1\r\n$3\r\nfoo\rX"), Err(E::MissingCrlf));
        // Detected from the first wrong byte instead of waiting for two.
        assert_eq!(req(b"*1\r\n$3\r\nfooX"), Err(E::MissingCrlf));
        assert_eq!(req(b"*1\r\n$3\r\nfoo\r"), Ok(Parsed::Incomplete));
        assert_eq!(req(b"*1\r\n$3\r\nfoo"), Ok(Parsed::Incomplete));
        assert_eq!(E::MissingCrlf.to_string(), "expected CRLF after bulk data");
    }

    #[test]
    fn inline_splitting() {
        assert_eq!(
            req(b"  SET   key\tvalue  \r\nGET"),
            Ok(Parsed::Complete(args(&[b"SET", b"key", b"value"]), 21))
        );
        assert_eq!(
            req(b"SET \"a b\" 'c d' \"\" ''\n"),
            Ok(Parsed::Complete(args(&[b"SET", b"a b", b"c d", b"", b""]), 22))
        );
        // A quote inside a bare word opens a quoted section, as in Redis.
        assert_eq!(req(b"foo\"bar baz\" x\n"), Ok(Parsed::Complete(args(&[b"foobar baz", b"x"]), 15)));
        // A `\r` not directly before the `\n` separates arguments.
        assert_eq!(req(b"a\rb\n"), Ok(Parsed::Complete(args(&[b"a", b"b"]), 4)));
    }

    #[test]
    fn inline_requests_are_held_to_the_argument_bounds() {
        let l = small();
        assert_eq!(parse_request(b"a b c\n", &l), Ok(Parsed::Complete(args(&[b"a", b"b", b"c"]), 6)));
        assert_eq!(parse_request(b"a b c d\n", &l), Err(E::TooManyArgs { count: 4, max: 3 }));
        // Trailing blanks are not an argument.
        assert_eq!(parse_request(b"a b c  \n", &l).map(|_| ()), Ok(()));
        assert_eq!(parse_request(b"ping hello\n", &l), Err(E::BulkTooLong { len: 5, max: 4 }));
        assert_eq!(parse_request(b"\"abcd\"\n", &l), Ok(Parsed::Complete(args(&[b"abcd"]), 7)));
        // The fuzzer's find: the second request of a pipeline.
        let buf = b"\r*1\r\nPIOPING\r\n";
        assert_eq!(parse_request(buf, &l), Ok(Parsed::Complete(args(&[b"*1"]), 5)));
        assert_eq!(parse_request(&buf[5..], &l), Err(E::BulkTooLong { len: 7, max: 4 }));
    }

    #[test]
    fn inline_escapes() {
        let line = b"\"\\n\\r\\t\\b\\a\\\\\\\"\\x41\\x00\\xfF\\q\\xZZ\\x4\" x\n";
        assert_eq!(
            req(line),
            Ok(Parsed::Complete(
                vec![b"\n\r\t\x08\x07\\\"A\x00\xffqxZZx4".to_vec(), b"x".to_vec()],
                line.len()
            ))
        );
        // Single quotes only unescape `\'`; other backslashes are literal.
        assert_eq!(req(b"'it\\'s' 'a\\nb'\n"), Ok(Parsed::Complete(args(&[b"it's", b"a\\nb"]), 15)));
        // Binary data, including NUL, survives.
        assert_eq!(
            req(b"SET k \"\\x00\\x01\\xff\"\r\n"),
            Ok(Parsed::Complete(args(&[b"SET", b"k", b"\x00\x01\xff"]), 22))
        );
    }

    #[test]
    fn unbalanced_quotes() {
        for bad in [
            &b"GET \"abc\n"[..],
            b"GET 'abc\n",
            b"GET \"a\"b\n",
            b"GET 'a'b\n",
            b"GET \"abc\\\"\n",
            b"GET \"abc\\\n",
        ] {
            assert_eq!(req(bad), Err(E::UnbalancedQuotes), "{bad:?}");
        }
        assert_eq!(E::UnbalancedQuotes.to_string(), "unbalanced quotes in request");
        assert_eq!(req(b"\"a\"\tb\n"), Ok(Parsed::Complete(args(&[b"a", b"b"]), 6)));
    }

    #[test]
    fn round_trip_random_requests() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut commands = Vec::new();
        for _ in 0..200 {
            let argc = 1 + (next() % 8) as usize;
            let command: Vec<Vec<u8>> =
                (0..argc).map(|_| (0..next() % 70).map(|_| next() as u8).collect()).collect();
            commands.push(command);
        }
        let mut buf = Vec::new();
        for command in &commands {
            let encoded = encode_request(command);
            // The test helper and Frame must agree on what a request looks like.
            let mut via_frame = Vec::new();
            Frame::Array(command.iter().cloned().map(Frame::Bulk).collect()).encode(&mut via_frame);
            assert_eq!(encoded, via_frame);
            assert_eq!(req(&encoded), Ok(Parsed::Complete(command.clone(), encoded.len())));
            buf.extend_from_slice(&encoded);
        }
        let got: Vec<_> = drain(&mut buf, &Limits::default()).into_iter().map(|(args, _)| args).collect();
        assert_eq!(got, commands);
        assert!(buf.is_empty());
    }

    fn reply(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
        parse_reply(buf, &Limits::default())
    }

    #[test]
    fn replies_of_every_type() {
        assert_eq!(reply(b"+OK\r\n"), Ok(Some((Frame::ok(), 5))));
        assert_eq!(reply(b"-ERR no\r\n"), Ok(Some((Frame::error("ERR no"), 9))));
        assert_eq!(reply(b":-42\r\n"), Ok(Some((Frame::Integer(-42), 6))));
        assert_eq!(reply(b":-9223372036854775808\r\n"), Ok(Some((Frame::Integer(i64::MIN), 23))));
        assert_eq!(reply(b"$5\r\na\r\nb\0\r\n+x"), Ok(Some((Frame::Bulk(b"a\r\nb\0".to_vec()), 11))));
        assert_eq!(reply(b"$0\r\n\r\n"), Ok(Some((Frame::Bulk(vec![]), 6))));
        assert_eq!(reply(b"$-1\r\n"), Ok(Some((Frame::Null, 5))));
        assert_eq!(reply(b"*-1\r\n"), Ok(Some((Frame::Null, 5))));
        assert_eq!(reply(b"_\r\n"), Ok(Some((Frame::Null3, 3))));
        assert_eq!(reply(b"_x\r\n"), Err(ProtocolError::UnknownReplyType(b'_')));
        assert_eq!(reply(b"*0\r\n"), Ok(Some((Frame::Array(vec![]), 4))));
        assert_eq!(
            reply(b"*2\r\n*1\r\n:1\r\n$-1\r\n"),
            Ok(Some((Frame::Array(vec![Frame::Array(vec![Frame::Integer(1)]), Frame::Null]), 17)))
        );
    }

    #[test]
    fn reply_prefixes_are_incomplete() {
        let full = b"*3\r\n+OK\r\n*2\r\n$3\r\na\r\n\r\n:7\r\n-E\r\n";
        let expected = Frame::Array(vec![
            Frame::ok(),
            Frame::Array(vec![Frame::Bulk(b"a\r\n".to_vec()), Frame::Integer(7)]),
            Frame::error("E"),
        ]);
        for cut in 0..full.len() {
            assert_eq!(reply(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(reply(full), Ok(Some((expected, full.len()))));
    }

    #[test]
    fn reply_nesting_depth() {
        let nested = |levels: usize| {
            let mut buf = b"*1\r\n".repeat(levels);
            buf.extend_from_slice(b":1\r\n");
            buf
        };
        let ok = nested(32);
        let mut frame = Frame::Integer(1);
        for _ in 0..32 {
            frame = Frame::Array(vec![frame]);
        }
        assert_eq!(reply(&ok), Ok(Some((frame, ok.len()))));
        assert_eq!(reply(&nested(33)), Err(E::TooDeep { max: 32 }));
        assert_eq!(reply(&nested(10_000)), Err(E::TooDeep { max: 32 }));
    }

    #[test]
    fn reply_errors_and_bounds() {
        let l = small();
        assert_eq!(reply(b"?x\r\n"), Err(E::UnknownReplyType(b'?')));
        assert_eq!(E::UnknownReplyType(b'?').to_string(), "unknown reply type '?'");
        assert_eq!(reply(b":1a\r\n"), Err(E::InvalidInteger));
        assert_eq!(reply(b":\r\n"), Err(E::InvalidInteger));
        assert_eq!(reply(b"$-2\r\n"), Err(E::InvalidBulkLength));
        assert_eq!(reply(b"*-2\r\n"), Err(E::InvalidMultibulkLength));
        assert_eq!(reply(b"$3\r\nabcd"), Err(E::MissingCrlf));
        assert_eq!(reply(b"+\xff\r\n"), Err(E::InvalidUtf8));
        assert_eq!(parse_reply(b"$5\r\n", &l), Err(E::BulkTooLong { len: 5, max: 4 }));
        assert_eq!(parse_reply(b"*4\r\n", &l), Err(E::ArrayTooLong { len: 4, max: 3 }));
        let mut line = vec![b'+'];
        line.extend_from_slice(&[b'a'; 17]);
        assert_eq!(parse_reply(&line, &l), Ok(None));
        line.push(b'a');
        assert_eq!(parse_reply(&line, &l), Err(E::ReplyLineTooLong { max: 16 }));
        let mut line = vec![b':'];
        line.extend_from_slice(&[b'1'; 34]);
        assert_eq!(reply(&line), Err(E::LengthLineTooLong { max: 32 }));
    }
}
