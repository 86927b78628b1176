//! Packet framing: every packet travels as one or more frames of `int<3>` payload length,
//! `int<1>` sequence id and the payload. A payload of 0xFFFFFF bytes or more is split into
//! 0xFFFFFF-byte frames followed by a shorter (possibly empty) last frame; all frames of one logical
//! packet carry consecutive sequence ids.

use super::{CodecError, Result};
use bytes::{BufMut, Bytes, BytesMut};

pub const HEADER_LEN: usize = 4;
/// The largest frame payload; a frame this long is continued by the next one.
pub const MAX_FRAME: usize = 0xFF_FFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// `int<3>` payload length of this frame.
    pub len: usize,
    /// `int<1>` sequence id.
    pub seq: u8,
}

impl FrameHeader {
    /// Decodes a header from the first four bytes of `b`; `None` if fewer are present.
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(FrameHeader {
            len: usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16,
            seq: b[3],
        })
    }

    /// A frame of the maximum length is followed by another frame of the same packet.
    pub fn is_continued(&self) -> bool {
        self.len == MAX_FRAME
    }
}

pub fn put_header(out: &mut impl BufMut, len: usize, seq: u8) {
    debug_assert!(len <= MAX_FRAME);
    out.put_uint_le(len as u64, 3);
    out.put_u8(seq);
}

/// Appends `payload` as one logical packet starting at sequence id `seq`, split into frames as the
/// protocol requires. Returns the sequence id of the packet that follows.
pub fn encode_packet(out: &mut impl BufMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_FRAME);
        put_header(out, n, seq);
        out.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_FRAME {
            return seq;
        }
    }
}

/// What [`scan_packet`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A whole logical packet is present.
    Complete(PacketSpan),
    /// At least `need` more bytes must arrive before the packet is complete.
    Incomplete { need: usize },
}

/// The extent of a complete logical packet at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSpan {
    /// Bytes the packet occupies in the buffer, headers included.
    pub wire_len: usize,
    /// Payload bytes, headers excluded.
    pub payload_len: usize,
    pub frames: usize,
    pub first_seq: u8,
    pub last_seq: u8,
}

/// Finds the first logical packet in `buf`. `max_payload` bounds the payload: the check is made
/// on each frame header as soon as it is visible, so an oversized packet is refused before its
/// bytes are buffered.
pub fn scan_packet(buf: &[u8], max_payload: usize) -> Result<Scan> {
    let mut pos = 0usize;
    let mut payload = 0usize;
    let mut frames = 0usize;
    let mut first_seq = 0u8;
    loop {
        let Some(h) = FrameHeader::parse(&buf[pos..]) else {
            return Ok(Scan::Incomplete {
                need: pos + HEADER_LEN - buf.len(),
            });
        };
        if frames == 0 {
            first_seq = h.seq;
        } else if h.seq != first_seq.wrapping_add(frames as u8) {
            return Err(CodecError::invalid("sequence id of continuation frame"));
        }
        payload += h.len;
        if payload > max_payload {
            return Err(CodecError::too_large("packet"));
        }
        frames += 1;
        let end = pos + HEADER_LEN + h.len;
        if end > buf.len() {
            return Ok(Scan::Incomplete {
                need: end - buf.len(),
            });
        }
        pos = end;
        if !h.is_continued() {
            return Ok(Scan::Complete(PacketSpan {
                wire_len: pos,
                payload_len: payload,
                frames,
                first_seq,
                last_seq: h.seq,
            }));
        }
    }
}

/// Removes the packet described by `span` from the front of `buf` and returns its payload. A
/// single-frame packet is split off without copying; a multi-frame one is reassembled.
pub fn take_packet(buf: &mut BytesMut, span: PacketSpan) -> Bytes {
    let mut wire = buf.split_to(span.wire_len);
    if span.frames == 1 {
        let _ = wire.split_to(HEADER_LEN);
        return wire.freeze();
    }
    let mut out = BytesMut::with_capacity(span.payload_len);
    let mut rest = &wire[..];
    while let Some(h) = FrameHeader::parse(rest) {
        out.extend_from_slice(&rest[HEADER_LEN..HEADER_LEN + h.len]);
        rest = &rest[HEADER_LEN + h.len..];
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(payload_len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let next = encode_packet(&mut out, 3, &payload);
        let frames = payload_len / MAX_FRAME + 1;
        assert_eq!(next, 3u8.wrapping_add(frames as u8));
        out
    }

    #[test]
    fn splits_at_the_16_mib_boundary() {
        for len in [0, 1, MAX_FRAME - 1, MAX_FRAME, MAX_FRAME + 1, 2 * MAX_FRAME] {
            let wire = frames_of(len);
            let frames = len / MAX_FRAME + 1;
            assert_eq!(wire.len(), len + HEADER_LEN * frames, "len {len}");
            let Scan::Complete(span) = scan_packet(&wire, usize::MAX).unwrap() else {
                panic!("incomplete at {len}")
            };
            assert_eq!(span.payload_len, len);
            assert_eq!(span.frames, frames);
            assert_eq!(span.first_seq, 3);
            let mut buf = BytesMut::from(&wire[..]);
            let payload = take_packet(&mut buf, span);
            assert!(buf.is_empty());
            assert_eq!(payload.len(), len);
            assert!(payload
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 251) as u8));
        }
    }

    #[test]
    fn byte_by_byte_arrival_completes_exactly_at_the_end() {
        let mut wire = Vec::new();
        encode_packet(&mut wire, 0, b"\x03SELECT 1");
        encode_packet(&mut wire, 0, b"\x0e");
        for cut in 0..wire.len() {
            match scan_packet(&wire[..cut], 1 << 20).unwrap() {
                Scan::Incomplete { need } => assert!(need >= 1 && cut < 13),
                Scan::Complete(span) => {
                    assert!(cut >= 13);
                    assert_eq!(span.wire_len, 13);
                }
            }
        }
    }

    #[test]
    fn oversized_packet_is_refused_from_its_header_alone() {
        // Only the header of a 16 MiB frame is present; the limit is 1 MiB.
        let header = [0xFF, 0xFF, 0xFF, 0];
        assert_eq!(
            scan_packet(&header, 1 << 20),
            Err(CodecError::too_large("packet"))
        );
        // Continuation frames add up: two full frames exceed a 20 MiB limit before the second
        // frame's payload arrives.
        let mut wire = vec![0xFF, 0xFF, 0xFF, 0];
        wire.resize(HEADER_LEN + MAX_FRAME, 0);
        wire.extend_from_slice(&[0xFF, 0xFF, 0xFF, 1]);
        assert_eq!(
            scan_packet(&wire, 20 << 20),
            Err(CodecError::too_large("packet"))
        );
    }

    #[test]
    fn continuation_with_wrong_sequence_is_rejected() {
        let mut wire = vec![0xFF, 0xFF, 0xFF, 0];
        wire.resize(HEADER_LEN + MAX_FRAME, 0);
        wire.extend_from_slice(&[0, 0, 0, 7]);
        assert!(scan_packet(&wire, usize::MAX).is_err());
    }
}
