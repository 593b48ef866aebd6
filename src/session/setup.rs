//! What a connection's setup commands (`cmd/`: `HELLO`, `CLIENT`, `SELECT`,
//! `ECHO`, `COMMAND`, `CONFIG GET`, `INFO`, which Redis clients send on
//! their own, before AUTH as well as after) set and read: the client's
//! name, library and protocol. They describe databus and this connection
//! only, never apps, groups, topics or other connections.

use crate::resp::Frame;

/// What a client told about itself, and the protocol it chose.
#[derive(Debug, Clone)]
pub(crate) struct ClientInfo {
    pub id: u64,
    pub peer: String,
    pub name: Option<Vec<u8>>,
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
    /// 2 or 3, as `HELLO` set it.
    pub protocol: i64,
}

impl ClientInfo {
    pub(crate) fn new(id: u64, peer: String) -> ClientInfo {
        ClientInfo { id, peer, name: None, lib_name: None, lib_ver: None, protocol: 2 }
    }

    /// A map in RESP3, the flat array of RESP2 otherwise.
    pub(crate) fn map(&self, pairs: Vec<(Frame, Frame)>) -> Frame {
        if self.protocol == 3 {
            Frame::Map(pairs)
        } else {
            Frame::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        }
    }
}
