//! `example_cli`: the example client of databus. With the sample grants it
//! publishes one JSON message, then consumes the topic forever: it prints each
//! message and commits what it printed. It is an ordinary Redis client (the
//! `redis` crate) speaking `AUTH`, `SET` and `MGET`.
//!
//! - `config.rs` — the command line and `config.toml`
//! - `client.rs` — the publish and consume loops, reconnecting with backoff
//! - `stop.rs` — Ctrl-C: exit at once, but never between printing a message
//!   and committing it

#![forbid(unsafe_code)]

mod client;
mod config;
mod stop;

use std::process::ExitCode;

use config::{parse_args, Command, Config};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example_cli: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let options = match parse_args(args)? {
        Command::Help(usage) => {
            print!("{usage}");
            return Ok(());
        }
        Command::Run(options) => options,
    };
    let config = Config::load(&options.conf)?;
    let stop = stop::Stop::install().map_err(|e| format!("installing the signal handler: {e}"))?;
    client::publish(&config, &stop)?;
    client::consume(&config, options.max_messages, &stop)
}
