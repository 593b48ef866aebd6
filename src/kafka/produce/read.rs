//! A cursor over a response's bytes for the responses databus reads
//! itself (Produce, Metadata, ApiVersions, SaslHandshake).
//!
//! Why not `kafka-protocol`'s decoder: it sizes an array's `Vec` from the
//! length the message declares before reading an element, so a few bytes
//! declaring 2^35 entries abort the process (`make fuzz` found it in a
//! Produce response; upstream pull requests #152, #161 and #200 are open).
//! Here every read checks what is left, and a declared length beyond the
//! bytes left is refused before anything is allocated.

use super::wire::WireError;

/// A response answers the request it is read for, or the stream is out of
/// step.
pub(super) fn expect_correlation(answered: i32, correlation: i32) -> Result<(), WireError> {
    if answered != correlation {
        return Err(WireError::Protocol(format!(
            "a response to request {answered} came where {correlation} was expected"
        )));
    }
    Ok(())
}

pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    /// Compact arrays and strings, tagged fields (KIP-482).
    flexible: bool,
    /// The response's name, for the errors.
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8], flexible: bool, what: &'static str) -> Reader<'a> {
        Reader { bytes, flexible, what }
    }

    /// The response header's correlation id, checked against the request's.
    pub(super) fn answers(&mut self, correlation: i32) -> Result<(), WireError> {
        expect_correlation(self.i32()?, correlation)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.bytes.len() {
            return Err(self.short(n));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn bool(&mut self) -> Result<bool, WireError> {
        let [b] = self.fixed()?;
        Ok(b != 0)
    }

    pub(super) fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.fixed()?))
    }

    pub(super) fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.fixed()?))
    }

    pub(super) fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }

    /// Bytes databus does not keep (a topic id, say).
    pub(super) fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.take(n).map(|_| ())
    }

    fn varint(&mut self) -> Result<u32, WireError> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let [b] = self.fixed()?;
            value |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Protocol(format!("a varint longer than five bytes in a {} response", self.what)))
    }

    /// An array's length; every element takes at least a byte, so a length
    /// beyond the bytes left is a lie, refused before any allocation. A
    /// null array counts as empty.
    pub(super) fn count(&mut self) -> Result<usize, WireError> {
        let declared = if self.flexible { i64::from(self.varint()?) - 1 } else { i64::from(self.i32()?) };
        let count = usize::try_from(declared.max(0)).unwrap_or(usize::MAX);
        if count > self.bytes.len() {
            return Err(WireError::Protocol(format!(
                "a {} response declares {count} entries with {} bytes left",
                self.what,
                self.bytes.len()
            )));
        }
        Ok(count)
    }

    /// An array of 32-bit integers.
    pub(super) fn i32s<T: From<i32>>(&mut self) -> Result<Vec<T>, WireError> {
        let count = self.count()?;
        (0..count).map(|_| self.i32().map(T::from)).collect()
    }

    /// A nullable string.
    pub(super) fn string(&mut self) -> Result<Option<String>, WireError> {
        let len = if self.flexible { i64::from(self.varint()?) - 1 } else { i64::from(self.i16()?) };
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// A string that may not be null.
    pub(super) fn text(&mut self) -> Result<String, WireError> {
        self.string()?.ok_or_else(|| {
            WireError::Protocol(format!("a null string where a {} response has none", self.what))
        })
    }

    /// Tagged fields: each known one (by `known`) read from its own bytes,
    /// the others skipped.
    pub(super) fn tags_with(
        &mut self,
        mut known: impl FnMut(u32, &mut Reader<'a>) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        if !self.flexible {
            return Ok(());
        }
        let fields = self.varint()? as usize;
        if fields > self.bytes.len() {
            return Err(self.short(fields));
        }
        for _ in 0..fields {
            let tag = self.varint()?;
            let size = self.varint()? as usize;
            let mut field = Reader::new(self.take(size)?, true, self.what);
            known(tag, &mut field)?;
        }
        Ok(())
    }

    /// Tagged fields, skipped (none of them is needed).
    pub(super) fn tags(&mut self) -> Result<(), WireError> {
        self.tags_with(|_, _| Ok(()))
    }

    fn short(&self, wanted: usize) -> WireError {
        WireError::Protocol(format!(
            "a {} response cut short: {wanted} bytes wanted, {} left",
            self.what,
            self.bytes.len()
        ))
    }
}
