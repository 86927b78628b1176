//! Frame scanning on an arbitrary byte stream, fed whole and in arbitrary chunks.
//!
//! Input: `[limit selector][k][k chunk sizes][stream…]`.
//! Asserts: a Complete span lies within the buffer and its fields agree with each other; the taken
//! payload re-encodes to exactly the bytes it was taken from and re-scans to the same payload;
//! the bytes consumed plus the bytes left add up to the input; chunked arrival yields the same
//! packets and the same final outcome as arrival in one piece; `need` is never 0 and never
//! overshoots (a stream that stops being Incomplete does so no earlier than promised).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice::codec::frame::{encode_packet, scan_packet, take_packet, Scan, HEADER_LEN, MAX_FRAME};

const LIMITS: [usize; 8] = [0, 1, 7, 64, 255, 4096, 1 << 20, 64 << 20];

#[derive(Debug, PartialEq)]
enum End {
    /// The stream ended on a packet boundary or inside an incomplete packet, `left` bytes buffered.
    Incomplete {
        left: usize,
    },
    Error,
}

/// Drains every complete packet from `buf`, checking invariants; returns the payloads (with
/// their first sequence ids) and whether it stopped on an error.
fn drain(
    buf: &mut BytesMut,
    max: usize,
    out: &mut Vec<(u8, Bytes)>,
    consumed: &mut usize,
) -> Option<End> {
    loop {
        let before = buf.len();
        match scan_packet(buf, max) {
            Ok(Scan::Complete(span)) => {
                assert!(span.wire_len <= buf.len(), "span beyond the buffer");
                assert!(span.frames >= 1);
                assert_eq!(span.wire_len, span.payload_len + HEADER_LEN * span.frames);
                assert!(span.payload_len <= max);
                assert_eq!(
                    span.last_seq,
                    span.first_seq.wrapping_add((span.frames - 1) as u8)
                );
                let wire = buf[..span.wire_len].to_vec();
                let payload = take_packet(buf, span);
                assert_eq!(payload.len(), span.payload_len);
                assert_eq!(buf.len() + span.wire_len, before);
                *consumed += span.wire_len;
                // Re-encoding gives the same frames byte for byte, and re-scanning the same payload.
                let mut again = Vec::new();
                let next = encode_packet(&mut again, span.first_seq, &payload);
                assert_eq!(next, span.last_seq.wrapping_add(1));
                assert_eq!(again, wire, "re-encoded frames differ");
                match scan_packet(&again, max) {
                    Ok(Scan::Complete(s2)) => {
                        assert_eq!(s2, span);
                        let mut b2 = BytesMut::from(&again[..]);
                        assert_eq!(take_packet(&mut b2, s2), payload);
                        assert!(b2.is_empty());
                    }
                    other => panic!("re-scan of a re-encoded packet: {other:?}"),
                }
                out.push((span.first_seq, payload));
            }
            Ok(Scan::Incomplete { need }) => {
                assert!(need >= 1, "Incomplete with need 0");
                // A frame header alone never asks for more than one frame (plus a header).
                assert!(need <= MAX_FRAME + HEADER_LEN);
                return None;
            }
            Err(_) => return Some(End::Error),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = LIMITS[usize::from(data[0]) % LIMITS.len()];
    let k = usize::from(data[1] % 16);
    if data.len() < 2 + k {
        return;
    }
    let sizes: Vec<usize> = data[2..2 + k].iter().map(|&b| usize::from(b)).collect();
    let stream = &data[2 + k..];

    // Whole.
    let mut whole = Vec::new();
    let mut buf = BytesMut::from(stream);
    let mut consumed = 0;
    let whole_end = match drain(&mut buf, max, &mut whole, &mut consumed) {
        Some(e) => e,
        None => End::Incomplete { left: buf.len() },
    };
    if let End::Incomplete { left } = whole_end {
        assert_eq!(
            consumed + left,
            stream.len(),
            "consumed bytes do not add up"
        );
    }

    // Chunked: sizes cycle; 0 means "scan again without new bytes".
    let mut chunked = Vec::new();
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    let mut pos = 0;
    let mut i = 0;
    let mut promised: Option<usize> = None;
    let mut chunked_end = None;
    let mut steps = 0;
    while pos < stream.len() && chunked_end.is_none() {
        steps += 1;
        if steps > 4 * stream.len() + 64 {
            break;
        }
        let n = if sizes.is_empty() {
            stream.len()
        } else {
            sizes[i % sizes.len()]
        };
        i += 1;
        let n = n.min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        let got_before = chunked.len();
        let len_before = buf.len();
        chunked_end = drain(&mut buf, max, &mut chunked, &mut consumed);
        if let Some(p) = promised {
            // Fewer bytes than promised arrived since: nothing may have completed.
            if len_before < p && chunked_end.is_none() {
                assert_eq!(
                    chunked.len(),
                    got_before,
                    "packet completed before `need` bytes arrived"
                );
            }
        }
        promised = match scan_packet(&buf, max) {
            Ok(Scan::Incomplete { need }) => Some(buf.len() + need),
            _ => None,
        };
        if sizes.iter().all(|&s| s == 0) && !sizes.is_empty() {
            // A pattern of empty chunks only: deliver the rest at once.
            buf.extend_from_slice(&stream[pos..]);
            pos = stream.len();
            chunked_end = drain(&mut buf, max, &mut chunked, &mut consumed);
        }
    }
    if pos < stream.len() && chunked_end.is_none() {
        buf.extend_from_slice(&stream[pos..]);
        chunked_end = drain(&mut buf, max, &mut chunked, &mut consumed);
    }
    let chunked_end = chunked_end.unwrap_or(End::Incomplete { left: buf.len() });
    if let End::Incomplete { left } = chunked_end {
        assert_eq!(
            consumed + left,
            stream.len(),
            "consumed bytes do not add up (chunked)"
        );
    }
    assert_eq!(whole, chunked, "chunked arrival changed the packets");
    assert_eq!(
        whole_end, chunked_end,
        "chunked arrival changed the outcome"
    );
});
