//! The cursor every command parses its arguments with, as mini-redis's
//! `Parse`: the next argument as bytes, text or an integer, an option word
//! in any case, and `finish` (what is left over is an error). A missing
//! argument is Redis's "wrong number of arguments" for the command; each
//! command says which error a malformed one gets, since Redis's texts
//! differ (`value is not an integer`, `timeout is not an integer`, an
//! invalid stream ID). The stream commands' value types (IDs,
//! milliseconds, counts, consumer names) are parsed here too.

use std::str::FromStr;

use crate::queue::EntryId;
use crate::session::CommandError;

/// The arguments of one request after its command name, consumed in order.
#[derive(Debug, Clone)]
pub(crate) struct Args<'a> {
    /// The command as its wrong-arity error names it (`set`, `config|get`).
    command: &'static str,
    rest: &'a [Vec<u8>],
}

impl<'a> Args<'a> {
    /// The arguments of `request`, whose first element is the command's
    /// name (the table's `command`, whatever case the client used).
    pub(crate) fn new(command: &'static str, request: &'a [Vec<u8>]) -> Args<'a> {
        Args { command, rest: request.get(1..).unwrap_or_default() }
    }

    /// From here on a subcommand's: its wrong-arity error names `command`
    /// (Redis's `config|get`).
    pub(crate) fn naming(self, command: &'static str) -> Args<'a> {
        Args { command, ..self }
    }

    /// The error a missing or extra argument gets.
    pub(crate) fn wrong_arity(&self) -> CommandError {
        CommandError::WrongArgs(self.command)
    }

    /// How many arguments are left.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next argument, left in place.
    pub(crate) fn peek(&self) -> Option<&'a [u8]> {
        self.rest.first().map(Vec::as_slice)
    }

    /// The next argument, if there is one.
    pub(crate) fn next_optional(&mut self) -> Option<&'a [u8]> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first)
    }

    /// The next argument; missing, the wrong number of arguments.
    pub(crate) fn next_bytes(&mut self) -> Result<&'a [u8], CommandError> {
        let wrong = self.wrong_arity();
        self.next_optional().ok_or(wrong)
    }

    /// The next argument as text, invalid UTF-8 replaced (names a client
    /// chooses, such as a stream consumer's).
    pub(crate) fn next_string(&mut self) -> Result<String, CommandError> {
        self.next_bytes().map(|raw| String::from_utf8_lossy(raw).into_owned())
    }

    /// The next argument as a decimal integer; `invalid` when it is not one
    /// (or out of `T`'s range).
    pub(crate) fn next_integer<T: FromStr>(&mut self, invalid: CommandError) -> Result<T, CommandError> {
        integer(self.next_bytes()?).ok_or(invalid)
    }

    /// The next argument, lower case: a subcommand or an option word.
    pub(crate) fn next_word(&mut self) -> Option<Vec<u8>> {
        self.next_optional().map(<[u8]>::to_ascii_lowercase)
    }

    /// Takes the next argument if it is `word`, in any case.
    pub(crate) fn next_is(&mut self, word: &str) -> bool {
        let found = self.peek().is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()));
        if found {
            self.rest = &self.rest[1..];
        }
        found
    }

    /// The value after an option word (`COUNT <n>`); missing, Redis's
    /// syntax error.
    pub(crate) fn option_value(&mut self) -> Result<&'a [u8], CommandError> {
        self.next_optional().ok_or(CommandError::Syntax)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [Vec<u8>] {
        std::mem::take(&mut self.rest)
    }

    /// Nothing may be left.
    pub(crate) fn finish(&self) -> Result<(), CommandError> {
        match self.rest {
            [] => Ok(()),
            _ => Err(self.wrong_arity()),
        }
    }
}

/// A decimal integer of type `T`.
pub(crate) fn integer<T: FromStr>(raw: &[u8]) -> Option<T> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// A stream entry ID argument; Redis's error for a malformed one.
pub(crate) fn stream_id(raw: &[u8]) -> Result<EntryId, CommandError> {
    EntryId::parse(raw, 0).ok_or(CommandError::BadStreamId)
}

/// A range bound of `XPENDING` and `XAUTOCLAIM` (`-`, `+`, `(ID`), the
/// range's `start` or end.
pub(crate) fn stream_bound(raw: &[u8], start: bool) -> Result<EntryId, CommandError> {
    EntryId::parse_bound(raw, start).ok_or(CommandError::BadStreamId)
}

/// Milliseconds (`min-idle-time`, `IDLE`, `BLOCK`): a non-negative integer.
pub(crate) fn millis(raw: &[u8]) -> Result<u64, CommandError> {
    integer(raw).ok_or(CommandError::BadTimeout)
}

/// A `COUNT`: a non-negative integer.
pub(crate) fn count(raw: &[u8]) -> Result<usize, CommandError> {
    integer(raw).ok_or(CommandError::NotAnInteger)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::cmd::args;

    #[test]
    fn takes_the_arguments_in_order_and_nothing_more() {
        let request = args(&["CMD", "a", "300", "opt", "x"]);
        let mut a = Args::new("cmd", &request);
        assert_eq!((a.remaining(), a.peek()), (4, Some(&b"a"[..])));
        assert_eq!(a.next_bytes(), Ok(&b"a"[..]));
        assert_eq!(a.clone().next_integer::<u16>(CommandError::NotAnInteger), Ok(300));
        assert_eq!(a.clone().next_integer::<i8>(CommandError::BadTimeout), Err(CommandError::BadTimeout));
        assert_eq!(a.next_string().as_deref(), Ok("300"));
        assert!(!a.next_is("other"));
        assert!(a.next_is("OPT"));
        assert_eq!(a.finish(), Err(CommandError::WrongArgs("cmd")));
        assert_eq!(a.clone().naming("cmd|sub").finish(), Err(CommandError::WrongArgs("cmd|sub")));
        assert_eq!(a.next_word(), Some(b"x".to_vec()));
        assert!(a.is_empty());
        assert_eq!(a.finish(), Ok(()));
        assert_eq!(a.next_bytes(), Err(CommandError::WrongArgs("cmd")));
        assert_eq!(a.next_integer::<i64>(CommandError::NotAnInteger), Err(CommandError::WrongArgs("cmd")));
        assert_eq!(a.option_value(), Err(CommandError::Syntax));
        assert_eq!(a.next_word(), None);
    }

    #[test]
    fn words_are_case_insensitive_and_text_is_lossy() {
        let request = vec![b"c".to_vec(), b"CoUnT".to_vec(), b"\xffname".to_vec(), b"1".to_vec()];
        let mut a = Args::new("c", &request);
        assert_eq!(a.next_word(), Some(b"count".to_vec()));
        assert_eq!(a.next_string().as_deref(), Ok("\u{fffd}name"));
        assert_eq!(a.rest(), &[b"1".to_vec()][..]);
        assert!(a.is_empty());
    }

    #[test]
    fn stream_values() {
        assert_eq!(stream_id(b"3-4"), Ok(EntryId::of(3, 4)));
        assert_eq!(stream_id(b"x"), Err(CommandError::BadStreamId));
        assert_eq!(stream_bound(b"-", true), Ok(EntryId::MIN));
        assert_eq!(stream_bound(b"(x", false), Err(CommandError::BadStreamId));
        assert_eq!(millis(b"15"), Ok(15));
        assert_eq!(millis(b"-1"), Err(CommandError::BadTimeout));
        assert_eq!(count(b"7"), Ok(7));
        assert_eq!(count(b"-7"), Err(CommandError::NotAnInteger));
    }
}
