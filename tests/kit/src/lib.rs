//! The integration tests' kit: what the test crates in `tests/` share, by
//! concern:
//!
//! - `services`: where the real services are, from the environment
//!   (`DATABUS_BROKERS`, `DATABUS_MYSQL_URL`, `DATABUS_REDIS_ADDR`) as set
//!   by `make test` (the defaults match what `scripts/services.sh up`
//!   starts); unique names, free ports, temp dirs, the installer scripts;
//! - `database`: a MySQL database of a test's own, of `scripts/schema.sql`;
//! - `stores`: the three auth stores behind one interface;
//! - `topics`: topics of a test's own and an independent Kafka reader;
//! - `kafka`, `secure`: Apache Kafka brokers and clusters of a test's own
//!   (plain, TLS, SASL), started by `scripts/kafka.sh`;
//! - `config`, `server`, `daemon`: a databus config, a server in process
//!   and the common fixture, the `databus` binary as a process;
//! - `client`, `redis_cli`: a raw RESP client and the checks of what a
//!   consumer got; `redis-cli` as a user runs it;
//! - `chaos`: the fault suites' load, tally, relay and result rows;
//! - `process`: a child process killed on drop.
//!
//! A crate of its own (`databus-testkit`, a dev-dependency of databus only,
//! never in the server binary) rather than a `mod support;` in every test:
//! each `tests/*.rs` is a crate, so a shared module was compiled once per
//! test and warned of each helper that test did not use, which only a
//! blanket `allow(dead_code)` silenced — and that hid helpers no test used
//! at all. Here the helpers are the kit's `pub` interface, built once; a
//! test imports what it uses by name (`use testkit::server::Fixture;`), and
//! what the kit keeps private still warns when nothing uses it.
//!
//! A missing service fails the test with how to start it — never a skip.

pub mod chaos;
pub mod client;
pub mod config;
pub mod daemon;
pub mod database;
pub mod kafka;
pub mod process;
pub mod redis_cli;
pub mod secure;
pub mod server;
pub mod services;
pub mod stores;
pub mod topics;
