//! The command line: `databus [-c|--conf PATH]`, plus the seed's
//! single-dash `-conf=PATH` and `-conf PATH`, `-h` and `-V`.

use std::path::PathBuf;

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run { conf: PathBuf },
    Help(String),
    Version,
}

/// Parses the command line (without the program name). Accepts the seed's
/// single-dash `-conf=<path>` and `-conf <path>` besides `-c`/`--conf`.
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix("-conf") {
            Some(rest) if rest.is_empty() || rest.starts_with('=') => format!("--conf{rest}"),
            _ => a.clone(),
        })
        .collect();
    let mut opts = getopts::Options::new();
    opts.optopt("c", "conf", "configuration file (default ./databus.toml)", "PATH");
    opts.optflag("h", "help", "print this help");
    opts.optflag("V", "version", "print the version");
    let m = opts.parse(&args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        return Ok(Command::Help(opts.usage("Usage: databus [-c|--conf PATH]")));
    }
    if m.opt_present("V") {
        return Ok(Command::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument `{extra}`"));
    }
    let conf = m.opt_str("c").unwrap_or_else(|| "databus.toml".into());
    Ok(Command::Run { conf: PathBuf::from(conf) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_line_forms() {
        let run = |p: &str| Ok(Command::Run { conf: PathBuf::from(p) });
        assert_eq!(parse_args(&args(&[])), run("databus.toml"));
        assert_eq!(parse_args(&args(&["-c", "a.toml"])), run("a.toml"));
        assert_eq!(parse_args(&args(&["--conf", "b.toml"])), run("b.toml"));
        assert_eq!(parse_args(&args(&["--conf=c.toml"])), run("c.toml"));
        assert_eq!(parse_args(&args(&["-conf=d.toml"])), run("d.toml"));
        assert_eq!(parse_args(&args(&["-conf", "e.toml"])), run("e.toml"));
        assert_eq!(parse_args(&args(&["-V"])), Ok(Command::Version));
        assert!(matches!(parse_args(&args(&["--help"])), Ok(Command::Help(_))));
        assert!(parse_args(&args(&["--bogus"])).is_err());
        assert!(parse_args(&args(&["x.toml"])).is_err());
    }
}
