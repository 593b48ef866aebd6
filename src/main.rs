//! The `databus` binary: parse the command line, load the config, start the
//! server, and stop it gracefully on SIGINT or SIGTERM; or, as `databus
//! check`, report on the config, the auth store and the clusters and exit.

use std::process::ExitCode;

use databus::cli::{parse_args, Command};
use databus::config::Settings;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("databus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let conf = match parse_args(args)? {
        Command::Help(usage) => {
            print!("{usage}");
            return Ok(());
        }
        Command::Version => {
            println!("databus {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Command::Keys => {
            print!("{}", databus::config::reference());
            return Ok(());
        }
        Command::Run { conf } => conf,
        Command::Check { conf } => {
            // No logger: the report says everything, once.
            let ok = databus::check::run(&conf, &mut std::io::stdout().lock())?;
            return if ok { Ok(()) } else { Err("check failed".into()) };
        }
    };
    let settings = Settings::load(&conf)?;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&settings.log_level)).init();
    // Register before starting so a signal during startup is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let running = databus::server::start(settings)?;
    for signal in signals.forever() {
        if signal == SIGHUP {
            log::info!("SIGHUP: re-reading the auth store and the TLS files");
            running.reload();
            continue;
        }
        log::info!("signal {signal} received, shutting down");
        break;
    }
    running.shutdown();
    Ok(())
}
