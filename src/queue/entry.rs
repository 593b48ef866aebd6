//! A stream entry and its ID: what the book holds of one Kafka record, and
//! how Redis writes, parses and orders the IDs that name them.

use std::fmt;

/// A stream entry ID as Redis writes it, `<ms>-<seq>`; databus's entries are
/// `<partition>-<offset>`. Ordered as Redis orders IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub(crate) const MIN: EntryId = EntryId { ms: 0, seq: 0 };
    pub(crate) const MAX: EntryId = EntryId { ms: u64::MAX, seq: u64::MAX };

    pub(crate) fn of(partition: i32, offset: i64) -> EntryId {
        EntryId { ms: partition as u64, seq: offset as u64 }
    }

    /// The partition and offset, if the ID can name a record.
    pub(crate) fn record(self) -> Option<(i32, i64)> {
        Some((i32::try_from(self.ms).ok()?, i64::try_from(self.seq).ok()?))
    }

    /// `<ms>-<seq>`, or `<ms>` alone (`seq` then `missing_seq`), as Redis
    /// parses an ID argument.
    pub(crate) fn parse(raw: &[u8], missing_seq: u64) -> Option<EntryId> {
        let text = std::str::from_utf8(raw).ok()?;
        let number =
            |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?;
        match text.split_once('-') {
            Some((ms, seq)) => Some(EntryId { ms: number(ms)?, seq: number(seq)? }),
            None => Some(EntryId { ms: number(text)?, seq: missing_seq }),
        }
    }

    /// A range bound: `-` and `+`, an ID, or `(ID` for an exclusive one
    /// (then the next or previous ID); `None` when malformed or when an
    /// exclusive bound leaves nothing.
    pub(crate) fn parse_bound(raw: &[u8], start: bool) -> Option<EntryId> {
        match raw {
            b"-" => return Some(EntryId::MIN),
            b"+" => return Some(EntryId::MAX),
            _ => {}
        }
        let (exclusive, raw) = match raw.strip_prefix(b"(") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let id = EntryId::parse(raw, if start { 0 } else { u64::MAX })?;
        match (exclusive, start) {
            (false, _) => Some(id),
            (true, true) => id.next(),
            (true, false) => id.previous(),
        }
    }

    pub(crate) fn next(self) -> Option<EntryId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(EntryId { seq, ..self }),
            None => Some(EntryId { ms: self.ms.checked_add(1)?, seq: 0 }),
        }
    }

    fn previous(self) -> Option<EntryId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(EntryId { seq, ..self }),
            None => Some(EntryId { ms: self.ms.checked_sub(1)?, seq: u64::MAX }),
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One record as a stream entry: its key, value and headers, owned, since a
/// pending entry may be handed out again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: EntryId,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The record's headers but `color`, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// The entry's fields as `XREADGROUP` shows them: `key` when the record
    /// has one, `value` when it is not empty (or nothing else would be
    /// shown), then each header.
    pub(crate) fn fields(&self) -> Vec<(&[u8], &[u8])> {
        let mut fields = Vec::with_capacity(self.headers.len() + 2);
        if !self.key.is_empty() {
            fields.push((&b"key"[..], self.key.as_slice()));
        }
        if !self.value.is_empty() || (self.key.is_empty() && self.headers.is_empty()) {
            fields.push((&b"value"[..], self.value.as_slice()));
        }
        fields.extend(self.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())));
        fields
    }

    pub(crate) fn partition(&self) -> i32 {
        self.id.ms as i32
    }

    /// The bytes it holds.
    pub(crate) fn size(&self) -> usize {
        self.key.len() + self.value.len() + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    pub(crate) fn offset(&self) -> i64 {
        self.id.seq as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::book::test_support::{entry, id};

    #[test]
    fn ids_parse_as_redis_parses_them() {
        assert_eq!(EntryId::parse(b"3-17", 0), Some(EntryId { ms: 3, seq: 17 }));
        assert_eq!(EntryId::parse(b"3", 9), Some(EntryId { ms: 3, seq: 9 }));
        assert_eq!(EntryId::parse(b"18446744073709551615-0", 0), Some(EntryId { ms: u64::MAX, seq: 0 }));
        for bad in [&b""[..], b"-", b"1-", b"-1", b"a-1", b"1-2-3", b"+1", b" 1", b"18446744073709551616"] {
            assert_eq!(EntryId::parse(bad, 0), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(EntryId::parse_bound(b"-", true), Some(EntryId::MIN));
        assert_eq!(EntryId::parse_bound(b"+", false), Some(EntryId::MAX));
        assert_eq!(EntryId::parse_bound(b"(2-5", true), Some(EntryId { ms: 2, seq: 6 }));
        assert_eq!(EntryId::parse_bound(b"(2-0", false), Some(EntryId { ms: 1, seq: u64::MAX }));
        assert_eq!(EntryId::parse_bound(b"2", false), Some(EntryId { ms: 2, seq: u64::MAX }));
        assert_eq!(EntryId::of(2, 40).to_string(), "2-40");
        assert_eq!(id("2-40").record(), Some((2, 40)));
        assert_eq!(id("99999999999-0").record(), None);
    }

    #[test]
    fn fields_show_key_value_and_headers() {
        let mut e = entry(0, 0);
        e.headers = vec![("a".into(), b"1".to_vec())];
        assert_eq!(e.fields(), vec![(&b"key"[..], &b"k"[..]), (b"value", b"v"), (b"a", b"1")]);
        let e = Entry { key: Vec::new(), value: Vec::new(), ..e };
        assert_eq!(e.fields(), vec![(&b"a"[..], &b"1"[..])]);
        let e = Entry { headers: Vec::new(), ..e };
        assert_eq!(e.fields(), vec![(&b"value"[..], &b""[..])]);
    }
}
