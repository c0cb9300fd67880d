//! The checked cursor all binary parsers read through, and the byte order of
//! a stream. Endianness is decided once per stream (trace.dat header, or the
//! host for raw captures) and carried as a value; hot loops branch on it once
//! and then run monomorphised code (see `ring`).

use crate::{Error, Result};

/// Byte order of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    /// The byte order of the machine running this code: raw `trace_pipe_raw`
    /// pages are in it.
    pub const NATIVE: Endian = if cfg!(target_endian = "big") { Endian::Big } else { Endian::Little };

    #[inline]
    pub fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }
    #[inline]
    pub fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }
    #[inline]
    pub fn u64(self, b: [u8; 8]) -> u64 {
        match self {
            Endian::Little => u64::from_le_bytes(b),
            Endian::Big => u64::from_be_bytes(b),
        }
    }
    #[inline]
    pub fn put_u16(self, v: u16) -> [u8; 2] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }
    #[inline]
    pub fn put_u32(self, v: u32) -> [u8; 4] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }
    #[inline]
    pub fn put_u64(self, v: u64) -> [u8; 8] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }

    /// Reads an unsigned integer of 1, 2, 4 or 8 bytes; `None` for other sizes
    /// or short input.
    #[inline]
    pub fn uint(self, b: &[u8]) -> Option<u64> {
        Some(match b.len() {
            1 => b[0] as u64,
            2 => self.u16(b.try_into().ok()?) as u64,
            4 => self.u32(b.try_into().ok()?) as u64,
            8 => self.u64(b.try_into().ok()?),
            _ => return None,
        })
    }
}

/// A byte offset in an input file. Kept apart from in-memory indices so that
/// error messages always report file positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FileOffset(pub u64);

impl std::fmt::Display for FileOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A forward cursor over untrusted bytes. Every read is bounds-checked and a
/// short read is an [`Error::Truncated`] naming the file offset (the cursor's
/// `base` plus its position) and what was being read.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
    endian: Endian,
}

impl<'a> Reader<'a> {
    /// `base` is the file offset of `data[0]`, used only in errors.
    pub fn new(data: &'a [u8], endian: Endian, base: u64) -> Self {
        Reader { data, pos: 0, base, endian }
    }

    pub fn endian(&self) -> Endian {
        self.endian
    }
    pub fn set_endian(&mut self, endian: Endian) {
        self.endian = endian;
    }
    /// File offset of the next byte to be read.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    /// The unread bytes.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// Takes `n` bytes. `n` comes from files, so it is a u64 checked here.
    pub fn bytes(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(Error::Truncated { offset: self.offset(), needed: n, what });
        }
        let n = n as usize;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn skip(&mut self, n: u64, what: &'static str) -> Result<()> {
        self.bytes(n, what).map(|_| ())
    }

    /// Moves to `pos` bytes from the start of this cursor's data.
    pub fn seek(&mut self, pos: u64, what: &'static str) -> Result<()> {
        if pos > self.data.len() as u64 {
            return Err(Error::invalid(
                self.base.saturating_add(pos),
                format!("{what}: position {pos} is past the end ({} bytes)", self.data.len()),
            ));
        }
        self.pos = pos as usize;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let b = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        let a = self.array(what)?;
        Ok(self.endian.u16(a))
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        let a = self.array(what)?;
        Ok(self.endian.u32(a))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64> {
        let a = self.array(what)?;
        Ok(self.endian.u64(a))
    }
    /// A C `long` of the stream's long size (4 or 8).
    pub fn ulong(&mut self, long_size: u8, what: &'static str) -> Result<u64> {
        match long_size {
            4 => self.u32(what).map(u64::from),
            _ => self.u64(what),
        }
    }

    /// A NUL-terminated string; the NUL is consumed, not returned.
    pub fn cstr(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let rest = self.rest();
        match memchr::memchr(0, rest) {
            Some(n) => {
                let s = &rest[..n];
                self.pos += n + 1;
                Ok(s)
            }
            None => Err(Error::Truncated { offset: self.offset(), needed: rest.len() as u64 + 1, what }),
        }
    }

    /// A sub-cursor over the next `n` bytes, which this cursor skips.
    pub fn sub(&mut self, n: u64, what: &'static str) -> Result<Reader<'a>> {
        let base = self.offset();
        let b = self.bytes(n, what)?;
        Ok(Reader::new(b, self.endian, base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_name_offset_and_what() {
        let mut r = Reader::new(&[1, 2, 3], Endian::Little, 100);
        assert_eq!(r.u16("x").unwrap(), 0x0201);
        let e = r.u32("page header").unwrap_err().to_string();
        assert_eq!(e, "byte 102: truncated: expected 4 more bytes for page header");
    }

    #[test]
    fn both_byte_orders() {
        let mut r = Reader::new(&[0, 0, 0, 1], Endian::Big, 0);
        assert_eq!(r.u32("x").unwrap(), 1);
        assert_eq!(Endian::Big.uint(&[1, 0]), Some(256));
        assert_eq!(Endian::Little.uint(&[1, 0, 0]), None);
    }

    #[test]
    fn cstr_and_huge_lengths() {
        let mut r = Reader::new(b"ab\0c", Endian::Little, 0);
        assert_eq!(r.cstr("s").unwrap(), b"ab");
        assert!(r.cstr("s").is_err());
        assert!(r.bytes(u64::MAX, "huge").is_err());
    }
}
