//! The command line: `databus [check|keys] [-c|--conf PATH]`, plus the seed's
//! single-dash `-conf=PATH` and `-conf PATH`, `-h` and `-V`.

use std::path::PathBuf;

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        conf: PathBuf,
    },
    /// `databus check`: validate the config, the auth store and the
    /// clusters, then exit.
    Check {
        conf: PathBuf,
    },
    /// `databus keys`: print the configuration reference.
    Keys,
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
        let brief = "Usage: databus [-c|--conf PATH]          serve\n       \
                     databus check [-c|--conf PATH]    check the config, the auth store and the \
                     clusters, then exit (0: ok, 1: what is wrong)\n       \
                     databus keys                      print every key of databus.toml with its \
                     default, what it accepts and what it does";
        return Ok(Command::Help(opts.usage(brief)));
    }
    if m.opt_present("V") {
        return Ok(Command::Version);
    }
    let conf = PathBuf::from(m.opt_str("c").unwrap_or_else(|| "databus.toml".into()));
    match m.free.as_slice() {
        [] => Ok(Command::Run { conf }),
        [check] if check == "check" => Ok(Command::Check { conf }),
        [keys] if keys == "keys" => Ok(Command::Keys),
        [extra, ..] => Err(format!("unexpected argument `{extra}`")),
    }
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
        let check = |p: &str| Ok(Command::Check { conf: PathBuf::from(p) });
        assert_eq!(parse_args(&args(&["check"])), check("databus.toml"));
        assert_eq!(parse_args(&args(&["check", "-c", "f.toml"])), check("f.toml"));
        assert_eq!(parse_args(&args(&["-conf=g.toml", "check"])), check("g.toml"));
        assert!(parse_args(&args(&["check", "now"])).is_err());
        assert_eq!(parse_args(&args(&["keys"])), Ok(Command::Keys));
    }
}
