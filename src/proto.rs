//! Protobuf messages of package `infra.databus` (`proto/databus.proto`),
//! written with prost's derive so the build needs no `protoc`.

use std::collections::HashMap;

/// Record metadata as HSET may send it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(map = "string, string", tag = "1")]
    pub metadata: HashMap<String, String>,
}

/// One message of an `MGET pb` reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessagePb {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(string, tag = "3")]
    pub topic: String,
    #[prost(int32, tag = "4")]
    pub partition: i32,
    #[prost(int64, tag = "5")]
    pub offset: i64,
    #[prost(int64, tag = "6")]
    pub timestamp: i64,
    #[prost(map = "string, string", tag = "7")]
    pub metadata: HashMap<String, String>,
    /// Every Kafka header but `color` and `metadata`; a name the record
    /// repeats has its last value.
    #[prost(map = "string, bytes", tag = "8")]
    pub headers: HashMap<String, Vec<u8>>,
}

/// Reads HSET metadata: a JSON object of string → string, or an encoded
/// [`Header`]. `None` when it is neither.
pub fn decode_metadata(bytes: &[u8]) -> Option<HashMap<String, String>> {
    if bytes.first() == Some(&b'{') {
        if let Ok(map) = serde_json::from_slice::<HashMap<String, String>>(bytes) {
            return Some(map);
        }
    }
    <Header as prost::Message>::decode(bytes).ok().map(|h| h.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn metadata_from_json_or_protobuf() {
        let json = decode_metadata(br#"{"trace":"abc","n":"1"}"#).unwrap();
        assert_eq!(json.get("trace").map(String::as_str), Some("abc"));
        assert_eq!(json.len(), 2);

        let header = Header { metadata: HashMap::from([("a".to_string(), "b".to_string())]) };
        let pb = decode_metadata(&header.encode_to_vec()).unwrap();
        assert_eq!(pb, header.metadata);

        assert_eq!(decode_metadata(b""), Some(HashMap::new()));
        assert_eq!(decode_metadata(br#"{"n":1}"#), None);
        assert_eq!(decode_metadata(b"\xff\xff\xff"), None);
    }
}
