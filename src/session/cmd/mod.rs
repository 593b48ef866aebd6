//! databus's commands, one file each in the shape of mini-redis's `cmd/`:
//! a typed value parsed from the request's arguments with the cursor of
//! `parse.rs` (`parse`, unit-tested beside it) and applied to the
//! connection's session (`apply`). The table in `commands.rs` names each,
//! says who may use it and with how many arguments, and points at its
//! `run`; adding a command is one file here and one line there.

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod command;
pub(crate) mod config;
pub(crate) mod echo;
pub(crate) mod hello;
pub(crate) mod hset;
pub(crate) mod info;
pub(crate) mod mget;
pub(crate) mod parse;
pub(crate) mod ping;
pub(crate) mod quit;
pub(crate) mod select;
pub(crate) mod set;
pub(crate) mod xack;
pub(crate) mod xadd;
pub(crate) mod xautoclaim;
pub(crate) mod xclaim;
pub(crate) mod xgroup;
pub(crate) mod xinfo;
pub(crate) mod xpending;
pub(crate) mod xreadgroup;

use crate::resp::Frame;

/// A bulk string.
pub(crate) fn bulk(s: impl AsRef<[u8]>) -> Frame {
    Frame::Bulk(s.as_ref().to_vec())
}

#[cfg(test)]
pub(crate) fn args(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// A request that lives as long as the test run, so that what a command
/// parses from it may borrow it.
#[cfg(test)]
pub(crate) fn request(parts: &[&str]) -> &'static [Vec<u8>] {
    Box::leak(args(parts).into_boxed_slice())
}
