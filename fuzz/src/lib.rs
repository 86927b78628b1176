//! Helpers shared by the fuzz targets.

/// Splits `data` into packets with MySQL framing: `int<3>` length, `int<1>` "sequence id", payload.
/// A length longer than what is left takes the rest; a trailing stub shorter than a header is
/// dropped. The sequence byte is returned with each payload: targets use it as a per-packet
/// control byte (captured traffic has small, increasing values there).
pub fn packets(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = usize::from(data[0]) | usize::from(data[1]) << 8 | usize::from(data[2]) << 16;
        let seq = data[3];
        let rest = &data[4..];
        let n = len.min(rest.len());
        out.push((seq, &rest[..n]));
        data = &rest[n..];
    }
    out
}
