//! `INFO [section…]`: the server section (and `loading:0`, which some
//! clients wait for) by default; other sections are empty.

use crate::resp::Frame;
use crate::session::{Reply, Session};

use super::bulk;
use super::parse::Args;

pub(crate) struct Info {
    /// Lower case; empty for the default sections.
    sections: Vec<Vec<u8>>,
}

impl Info {
    pub(crate) fn parse(args: &[Vec<u8>]) -> Info {
        let mut args = Args::new("info", args);
        Info { sections: std::iter::from_fn(|| args.next_word()).collect() }
    }

    fn wants(&self, name: &[u8]) -> bool {
        self.sections.is_empty()
            || self.sections.iter().any(|s| s == name || s == b"all" || s == b"default" || s == b"everything")
    }

    pub(crate) fn apply(self) -> Frame {
        let mut text = String::new();
        if self.wants(b"server") {
            text += &format!(
                "# Server\r\nserver_name:databus\r\ndatabus_version:{}\r\nredis_mode:standalone\r\narch_bits:{}\r\nprocess_id:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                usize::BITS,
                std::process::id()
            );
        }
        if self.wants(b"persistence") {
            text += "\r\n# Persistence\r\nloading:0\r\n";
        }
        bulk(text)
    }
}

pub(crate) fn run(_: &mut Session, args: &[Vec<u8>]) -> Reply {
    Reply::Now(Info::parse(args).apply())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn the_server_section_and_loading() {
        let Frame::Bulk(text) = Info::parse(&args(&["INFO"])).apply() else { panic!() };
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("# Server\r\nserver_name:databus\r\ndatabus_version:0.1.0\r\n"), "{text}");
        assert!(text.contains("loading:0"), "{text}");
        assert_eq!(Info::parse(&args(&["INFO", "keyspace"])).apply(), bulk(""));
        assert_eq!(
            Info::parse(&args(&["INFO", "Server", "ALL"])).sections,
            [b"server".to_vec(), b"all".to_vec()]
        );
    }
}
