//! Primitive wire types: fixed-width little-endian integers, length-encoded integers and strings,
//! NUL-terminated strings. [`Reader`] decodes from a slice; the `put_*` functions append to any
//! [`BufMut`].

use super::{CodecError, Result};
use bytes::BufMut;

/// A cursor over an untrusted byte slice. Every accessor checks bounds and returns
/// [`CodecError::truncated`] instead of panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn peek_u8(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// `int<1>`
    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    /// `int<2>`
    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// `int<3>`
    pub fn u24(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(3, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    /// `int<4>`
    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `int<8>`
    pub fn u64(&mut self, what: &'static str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// `int<lenenc>`. The NULL marker 0xFB and the ERR marker 0xFF are not integers here.
    pub fn lenenc_int(&mut self, what: &'static str) -> Result<u64> {
        match self.u8(what)? {
            n @ 0..=0xFA => Ok(u64::from(n)),
            0xFC => Ok(u64::from(self.u16(what)?)),
            0xFD => Ok(u64::from(self.u24(what)?)),
            0xFE => self.u64(what),
            _ => Err(CodecError::invalid(what)),
        }
    }

    /// `string<lenenc>`: the length is checked against the bytes present before anything is taken.
    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let n = self.lenenc_int(what)?;
        let n = usize::try_from(n).map_err(|_| CodecError::truncated(what))?;
        self.take(n, what)
    }

    /// `string<NUL>`: the bytes before the next NUL; the NUL is consumed.
    pub fn nul_bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(CodecError::truncated(what))?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    /// `string<fix>`
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(CodecError::truncated(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// `string<EOF>`: everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<()> {
        self.take(n, what).map(|_| ())
    }
}

/// Bytes `int<lenenc>` takes for `n`.
pub fn lenenc_int_len(n: u64) -> usize {
    match n {
        0..=0xFA => 1,
        0xFB..=0xFFFF => 3,
        0x1_0000..=0xFF_FFFF => 4,
        _ => 9,
    }
}

pub fn put_lenenc_int(out: &mut impl BufMut, n: u64) {
    match n {
        0..=0xFA => out.put_u8(n as u8),
        0xFB..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(n as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_uint_le(n, 3);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(n);
        }
    }
}

pub fn put_lenenc_bytes(out: &mut impl BufMut, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.put_slice(s);
}

pub fn put_nul_bytes(out: &mut impl BufMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trip_at_every_width_boundary() {
        for n in [
            0u64,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut v = Vec::new();
            put_lenenc_int(&mut v, n);
            assert_eq!(v.len(), lenenc_int_len(n), "width of {n}");
            let mut r = Reader::new(&v);
            assert_eq!(r.lenenc_int("n").unwrap(), n);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn lenenc_rejects_null_and_err_markers() {
        assert_eq!(
            Reader::new(&[0xFB]).lenenc_int("x"),
            Err(CodecError::invalid("x"))
        );
        assert_eq!(
            Reader::new(&[0xFF]).lenenc_int("x"),
            Err(CodecError::invalid("x"))
        );
    }

    #[test]
    fn huge_announced_string_is_truncated_not_allocated() {
        // A lenenc string announcing 1 GiB with 3 bytes behind it.
        let mut v = vec![0xFD];
        v.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
        v.extend_from_slice(b"abc");
        assert_eq!(
            Reader::new(&v).lenenc_bytes("s"),
            Err(CodecError::truncated("s"))
        );
        let v = [0xFE, 0, 0, 0, 0x40, 0, 0, 0, 0, 1, 2];
        assert!(Reader::new(&v).lenenc_bytes("s").is_err());
    }

    #[test]
    fn nul_string_needs_its_terminator() {
        let mut r = Reader::new(b"abc\0def");
        assert_eq!(r.nul_bytes("a").unwrap(), b"abc");
        assert_eq!(r.nul_bytes("b"), Err(CodecError::truncated("b")));
        assert_eq!(r.rest(), b"def");
    }
}
