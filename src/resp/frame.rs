//! Reply values and their RESP2 encoding, so handlers build typed replies and never
//! hand-assemble protocol bytes.

use std::io::Write;

/// One RESP2 reply value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+text`; CR and LF are replaced by spaces when encoded.
    Simple(String),
    /// `-text`, given without the leading `-`; CR and LF are replaced by spaces when encoded.
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$len` followed by the raw bytes.
    Bulk(Vec<u8>),
    /// The RESP2 null bulk string, `$-1`.
    Null,
    /// RESP3's null, `_`: what a connection that chose protocol 3 gets where
    /// Redis answers null (a RESP3 parser reads `$-1` as a bulk string).
    Null3,
    /// `*n` followed by n frames, which may themselves be arrays.
    Array(Vec<Frame>),
    /// RESP3's `%n` followed by n key/value pairs; only HELLO 3 replies with one.
    Map(Vec<(Frame, Frame)>),
}

impl Frame {
    /// `+OK`, the reply to most successful writes.
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    /// An error reply; by convention `msg` starts with a code such as `ERR`.
    pub fn error(msg: impl Into<String>) -> Frame {
        Frame::Error(msg.into())
    }

    /// Appends the wire form to `out`, leaving what is already there untouched so replies
    /// to pipelined commands can share one buffer.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Simple(text) => push_line(out, b'+', text),
            Frame::Error(text) => push_line(out, b'-', text),
            Frame::Integer(n) => push_header(out, b':', *n),
            Frame::Bulk(data) => {
                push_header(out, b'$', data.len());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Null => out.extend_from_slice(b"$-1\r\n"),
            Frame::Null3 => out.extend_from_slice(b"_\r\n"),
            Frame::Array(items) => {
                push_header(out, b'*', items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Frame::Map(pairs) => {
                push_header(out, b'%', pairs.len());
                for (key, value) in pairs {
                    key.encode(out);
                    value.encode(out);
                }
            }
        }
    }
}

/// A CR or LF inside a status line would end it early and let the rest be read as a
/// separate reply, so they are flattened to spaces rather than trusted.
fn push_line(out: &mut Vec<u8>, kind: u8, text: &str) {
    out.push(kind);
    out.extend(text.bytes().map(|b| match b {
        b'\r' | b'\n' => b' ',
        other => other,
    }));
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, kind: u8, n: impl std::fmt::Display) {
    write!(out, "{}{n}\r\n", char::from(kind)).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::Frame;

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        out
    }

    #[test]
    fn resp3_map() {
        let map = Frame::Map(vec![(Frame::Bulk(b"proto".to_vec()), Frame::Integer(3))]);
        assert_eq!(encoded(&map), b"%1\r\n$5\r\nproto\r\n:3\r\n");
    }

    #[test]
    fn simple_and_error() {
        assert_eq!(encoded(&Frame::Simple("PONG".into())), b"+PONG\r\n");
        assert_eq!(encoded(&Frame::ok()), b"+OK\r\n");
        assert_eq!(encoded(&Frame::Simple(String::new())), b"+\r\n");
        assert_eq!(encoded(&Frame::error("ERR unknown command 'foo'")), b"-ERR unknown command 'foo'\r\n");
        assert_eq!(Frame::error("ERR x"), Frame::Error("ERR x".to_owned()));
    }

    #[test]
    fn integers() {
        assert_eq!(encoded(&Frame::Integer(0)), b":0\r\n");
        assert_eq!(encoded(&Frame::Integer(42)), b":42\r\n");
        assert_eq!(encoded(&Frame::Integer(i64::MIN)), b":-9223372036854775808\r\n");
        assert_eq!(encoded(&Frame::Integer(i64::MAX)), b":9223372036854775807\r\n");
    }

    #[test]
    fn bulk_and_null() {
        assert_eq!(encoded(&Frame::Bulk(b"foo".to_vec())), b"$3\r\nfoo\r\n");
        assert_eq!(encoded(&Frame::Bulk(Vec::new())), b"$0\r\n\r\n");
        // Bulk data is length-prefixed, so CR/LF and NUL must pass through untouched.
        assert_eq!(encoded(&Frame::Bulk(b"a\r\nb\0".to_vec())), b"$5\r\na\r\nb\0\r\n");
        assert_eq!(encoded(&Frame::Null), b"$-1\r\n");
    }

    #[test]
    fn arrays_flat_empty_and_nested() {
        assert_eq!(encoded(&Frame::Array(Vec::new())), b"*0\r\n");
        let flat = Frame::Array(vec![Frame::Bulk(b"k".to_vec()), Frame::Null, Frame::Integer(-3)]);
        assert_eq!(encoded(&flat), b"*3\r\n$1\r\nk\r\n$-1\r\n:-3\r\n");
        let nested = Frame::Array(vec![
            Frame::Array(vec![Frame::ok(), Frame::Array(Vec::new())]),
            Frame::Array(vec![Frame::Array(vec![Frame::Bulk(b"x".to_vec())])]),
            Frame::error("E"),
        ]);
        assert_eq!(encoded(&nested), b"*3\r\n*2\r\n+OK\r\n*0\r\n*1\r\n*1\r\n$1\r\nx\r\n-E\r\n");
    }

    #[test]
    fn cr_and_lf_are_flattened_in_status_lines() {
        assert_eq!(encoded(&Frame::Simple("a\r\nb".into())), b"+a  b\r\n");
        assert_eq!(encoded(&Frame::error("ERR bad\nkey\r")), b"-ERR bad key \r\n");
        let nested = Frame::Array(vec![Frame::Array(vec![Frame::Simple("\n".into())])]);
        assert_eq!(encoded(&nested), b"*1\r\n*1\r\n+ \r\n");
    }

    #[test]
    fn encode_appends() {
        let mut out = b"+earlier\r\n".to_vec();
        Frame::Integer(7).encode(&mut out);
        Frame::Null.encode(&mut out);
        assert_eq!(out, b"+earlier\r\n:7\r\n$-1\r\n");
    }
}
