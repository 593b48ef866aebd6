//! RESP2, the Redis wire protocol: parsing client requests and encoding replies.
//! It does no IO, so the connection code owns buffering and the codec can be tested byte by byte.

mod frame;
mod parse;

pub use frame::Frame;
pub use parse::{discard, parse_reply, parse_request, Discard, Limits, Oversized, Parsed, ProtocolError};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_survives_encode_then_parse_reply() {
        let frames = [
            Frame::ok(),
            Frame::error("ERR unknown command 'foo'"),
            Frame::Integer(i64::MIN),
            Frame::Bulk(b"\x00\r\n\xff".to_vec()),
            Frame::Bulk(Vec::new()),
            Frame::Null,
            Frame::Array(Vec::new()),
            Frame::Array(vec![
                Frame::Array(vec![Frame::Null, Frame::Integer(3)]),
                Frame::Bulk(b"v".to_vec()),
                Frame::Array(vec![Frame::Array(vec![Frame::Simple("deep".into())])]),
            ]),
            Frame::Map(vec![
                (Frame::Bulk(b"proto".to_vec()), Frame::Integer(3)),
                (Frame::Bulk(b"modules".to_vec()), Frame::Array(Vec::new())),
            ]),
        ];
        let mut stream = Vec::new();
        for frame in &frames {
            frame.encode(&mut stream);
        }
        let mut pos = 0;
        for frame in &frames {
            let (got, used) = parse_reply(&stream[pos..], &Limits::default()).unwrap().unwrap();
            assert_eq!(&got, frame);
            pos += used;
        }
        assert_eq!(pos, stream.len());
    }

    #[test]
    fn sanitised_status_reads_back_as_one_line() {
        let mut out = Vec::new();
        Frame::error("ERR a\r\n+OK").encode(&mut out);
        assert_eq!(parse_reply(&out, &Limits::default()), Ok(Some((Frame::error("ERR a  +OK"), out.len()))));
    }
}
