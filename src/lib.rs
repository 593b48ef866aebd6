//! databus: Kafka behind the Redis protocol.
//!
//! A client connects with any Redis client, `AUTH`s with
//! `key:secret@group/topic=T&role=pub|sub`, then publishes with `SET`/`HSET`
//! or consumes with `MGET` and commits with `SET partition offset`.
//!
//! - [`resp`]: the RESP2 wire format, pure parsing and encoding.
//! - [`session`]: one connection — its state, the per-role dispatch table,
//!   the publisher and subscriber commands, buffered IO.
//! - [`auth`]: the AUTH string, the grant cache and the stores it is read from.
//! - [`kafka`]: producers per cluster (databus's own, `kafka::produce`, or
//!   librdkafka's) and librdkafka consumers.
//! - [`queue`]: queue mode's shared group members and their pending
//!   entries (Redis Streams consumer groups over Kafka).
//! - [`config`]: `databus.toml`, validated into the settings each module owns.
//! - `limits`: per-app publish rates and connection counts.
//! - [`cli`]: the command line.
//! - [`check`]: `databus check`, the config, store and cluster check before a restart.
//! - [`server`]: the listener, the worker pool, graceful shutdown.
//! - [`admin`]: the optional admin HTTP port: metrics, health, HTTP publish.
//! - [`metrics`]: the Prometheus collectors every module counts into.
//! - [`tls`]: the optional TLS listener for clients (rustls), reloadable.
//! - [`proto`]: the protobuf messages of `proto/databus.proto`.
//! - [`secret`]: the type of every password, app secret and URL that may
//!   hold one, redacted wherever it is printed.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod kafka;
pub(crate) mod keys;
pub(crate) mod limits;
pub mod metrics;
pub mod proto;
pub(crate) mod queue;
pub mod resp;
pub mod secret;
pub mod server;
pub mod session;
pub mod tls;
