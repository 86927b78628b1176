//! Byte buffers for active connections, and the per-shard pool they come from.
//!
//! A parked client holds no buffer: when it wakes, its task takes a read and a write buffer from
//! its shard's pool and gives them back when it parks again. Buffers that grew for a large packet
//! are dropped instead of pooled, so one 20 MiB blob does not pin 20 MiB forever.

use bytes::BytesMut;
use std::cell::RefCell;

/// A linear read buffer: bytes `start..end` are unread data, `end..` is free space.
#[derive(Debug, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    pub fn with_capacity(n: usize) -> ReadBuf {
        ReadBuf {
            buf: vec![0; n],
            start: 0,
            end: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space for at least `min` more bytes (moving data to the front or growing).
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.buf.len() - self.end < min {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < min {
                let want = (self.end + min).max(self.buf.len() * 2).max(4096);
                self.buf.resize(want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of the spare space as filled.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Gives back memory beyond `cap` when the buffer is empty.
    pub fn shrink_if_idle(&mut self, cap: usize) {
        if self.is_empty() && self.buf.len() > cap {
            self.buf = vec![0; cap];
        }
    }
}

/// Buffers that grew past this are not kept in the pool.
const POOLED_MAX: usize = 16 << 10;
/// Size of a fresh buffer: enough for a handshake or a typical command; buffers grow on demand
/// (result sets are streamed through the write buffer in 64 KiB flushes).
pub const DEFAULT_BUF: usize = 4 << 10;

/// Per-shard free lists of read and write buffers.
#[derive(Default)]
pub struct BufPool {
    reads: RefCell<Vec<ReadBuf>>,
    writes: RefCell<Vec<Vec<u8>>>,
    /// Command payload buffers (`frontend::client`), one per active session as the others.
    payloads: RefCell<Vec<BytesMut>>,
    limit: usize,
}

impl BufPool {
    pub fn new(limit: usize) -> BufPool {
        BufPool {
            limit,
            ..BufPool::default()
        }
    }

    pub fn read_buf(&self) -> ReadBuf {
        self.reads
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| ReadBuf::with_capacity(DEFAULT_BUF))
    }

    pub fn write_buf(&self) -> Vec<u8> {
        self.writes
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(DEFAULT_BUF))
    }

    /// A command payload buffer: one from the pool, or an empty one (allocated at its first use).
    pub fn payload_buf(&self) -> BytesMut {
        self.payloads.borrow_mut().pop().unwrap_or_default()
    }

    /// Keeps a payload buffer whose whole memory is free again (no payload points into it any
    /// more) and no larger than [`PAYLOAD_BUF`](crate::frontend::client::PAYLOAD_BUF).
    pub fn give_payload(&self, mut b: BytesMut) {
        use crate::frontend::client::PAYLOAD_BUF;
        let mut payloads = self.payloads.borrow_mut();
        if b.is_empty()
            && b.try_reclaim(PAYLOAD_BUF)
            && b.capacity() == PAYLOAD_BUF
            && payloads.len() < self.limit
        {
            payloads.push(b);
        }
    }

    pub fn give_read(&self, mut b: ReadBuf) {
        let mut reads = self.reads.borrow_mut();
        if b.capacity() <= POOLED_MAX && reads.len() < self.limit {
            b.clear();
            reads.push(b);
        }
    }

    pub fn give_write(&self, mut b: Vec<u8>) {
        let mut writes = self.writes.borrow_mut();
        if b.capacity() <= POOLED_MAX && writes.len() < self.limit {
            b.clear();
            writes.push(b);
        }
    }

    /// Keeps at most `keep` buffers of each kind (the janitor calls this when the shard is
    /// quiet, so a connection storm's high-water mark does not stay resident).
    pub fn trim(&self, keep: usize) {
        self.reads.borrow_mut().truncate(keep);
        self.writes.borrow_mut().truncate(keep);
        self.payloads.borrow_mut().truncate(keep);
    }

    /// Read and write buffers waiting in the pool (for metrics; payload buffers, as many as the
    /// read buffers at most, are not counted).
    pub fn pooled(&self) -> usize {
        self.reads.borrow().len() + self.writes.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_buf_compacts_then_grows() {
        let mut b = ReadBuf::with_capacity(8);
        b.spare(8)[..8].copy_from_slice(b"abcdefgh");
        b.commit(8);
        b.consume(6);
        assert_eq!(b.data(), b"gh");
        let s = b.spare(6);
        assert!(s.len() >= 6);
        assert_eq!(b.capacity(), 8, "compaction was enough");
        b.spare(100);
        assert!(b.capacity() >= 102);
        assert_eq!(b.data(), b"gh");
        b.consume(2);
        assert!(b.is_empty());
        b.shrink_if_idle(16);
        assert_eq!(b.capacity(), 16);
    }

    #[test]
    fn payload_buffers_go_back_only_when_nothing_points_into_them() {
        use crate::frontend::client::PAYLOAD_BUF;
        let p = BufPool::new(4);
        let unused = p.payload_buf();
        assert_eq!(unused.capacity(), 0);
        p.give_payload(unused);
        assert!(
            p.payloads.borrow().is_empty(),
            "an empty buffer is not worth keeping"
        );
        let mut b = BytesMut::with_capacity(PAYLOAD_BUF);
        b.extend_from_slice(b"abc");
        let held = b.split().freeze();
        p.give_payload(b);
        assert!(
            p.payloads.borrow().is_empty(),
            "a payload still points into it"
        );
        let mut b = BytesMut::with_capacity(PAYLOAD_BUF);
        b.extend_from_slice(b"abc");
        drop(b.split());
        p.give_payload(b);
        assert_eq!(p.payloads.borrow().len(), 1);
        assert_eq!(p.payload_buf().capacity(), PAYLOAD_BUF);
        assert_eq!(&held[..], b"abc");
    }

    #[test]
    fn pool_drops_grown_buffers_and_respects_its_limit() {
        let p = BufPool::new(1);
        let mut big = p.read_buf();
        big.spare(1 << 20);
        p.give_read(big);
        assert_eq!(p.pooled(), 0);
        p.give_read(p.read_buf());
        p.give_read(ReadBuf::with_capacity(16));
        assert_eq!(p.pooled(), 1);
    }
}
