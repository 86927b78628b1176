//! CPU cost of the per-command work sluice does in user space: framing, response tracking and
//! the SQL tokenizer, on the shapes of a point select (the B3 workload). Benchmark B3 measures
//! sluice's whole CPU per query (mostly the kernel's socket work); this isolates the part that is
//! ours, so a regression in the codec shows here before it drowns in B3's noise.
//!
//! `cargo bench --bench codec` prints nanoseconds per operation (best of several rounds) and
//! writes target/bench/codec.json.

use bytes::{BufMut, BytesMut};
use sluice::codec::command::ResponseKind;
use sluice::codec::frame::{encode_packet, scan_packet, take_packet, Scan};
use sluice::codec::response::{ResponseTracker, Role};
use sluice::session::sql::{analyze, Modes};
use std::hint::black_box;
use std::time::Instant;

const ROUNDS: usize = 7;

/// Runs `f` (which performs `ops` operations) for ROUNDS rounds of about 0.2 s, returns the best
/// nanoseconds per operation.
fn measure(ops: u64, mut f: impl FnMut()) -> f64 {
    // Calibrate: repetitions per round so one round takes ~0.2 s (bounded).
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-7);
    let reps = ((0.2 / once) as u64).clamp(1, 1_000_000);
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / (reps * ops) as f64);
    }
    best
}

fn lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

fn column_def(name: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    for part in [&b"def"[..], b"sbtest", b"sbtest1", b"sbtest1", name, name] {
        lenenc_str(&mut p, part);
    }
    p.push(0x0c);
    p.extend_from_slice(&[
        0x08, 0x00, 0x78, 0x00, 0x00, 0x00, 0xfe, 0x00, 0x00, 0x00, 0x00, 0x00,
    ]);
    p
}

/// The packets of sysbench's point-select answer, one CHAR(120) column and one row, as a server
/// with CLIENT_DEPRECATE_EOF sends them (column count, definition, row, OK terminator).
fn point_select_response() -> Vec<Vec<u8>> {
    let mut row = Vec::new();
    lenenc_str(
        &mut row,
        b"83868641912-28773972837-60736120486-75162659906-27563526494-20381887404-41576422241-93426793964-56405065102-33518432330",
    );
    vec![
        vec![1],
        column_def(b"c"),
        row,
        vec![0xfe, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00],
    ]
}

fn main() {
    let mut results: Vec<(&str, f64)> = Vec::new();

    // Framing: scan and split off 64 packets of the point-select response's sizes.
    let response = point_select_response();
    let mut wire = BytesMut::new();
    for _ in 0..16 {
        for (seq, p) in response.iter().enumerate() {
            encode_packet(&mut wire, seq as u8 + 1, p);
        }
    }
    let frozen = wire.freeze();
    let mut buf = BytesMut::with_capacity(frozen.len());
    results.push((
        "frame: scan + take, per packet",
        measure(64, || {
            buf.clear();
            buf.put_slice(&frozen);
            while let Ok(Scan::Complete(span)) = scan_packet(&buf, 1 << 24) {
                black_box(take_packet(&mut buf, span));
            }
        }),
    ));

    // Response tracking: one whole point-select response (4 packets).
    results.push((
        "tracker: point-select response",
        measure(1, || {
            let mut t = ResponseTracker::new(ResponseKind::Query, true);
            for p in &response {
                let role = t.on_packet(p.len(), black_box(p)).expect("valid response");
                black_box(matches!(role, Role::Row { .. }));
            }
            assert!(t.is_done());
        }),
    ));

    // A 1,000-row result set: the tracker's per-row cost (rows are peeked, not parsed).
    let mut rows = vec![vec![1u8], column_def(b"c")];
    rows.extend(std::iter::repeat_n(response[2].clone(), 1000));
    rows.push(response[3].clone());
    results.push((
        "tracker: per row of a 1,000-row result",
        measure(1002, || {
            let mut t = ResponseTracker::new(ResponseKind::Query, true);
            for p in &rows {
                let first = p[0];
                let whole = t.needs_whole(first, p.len());
                let seen = if whole { &p[..] } else { &p[..1] };
                black_box(t.on_packet(p.len(), seen).expect("valid response"));
            }
        }),
    ));

    // The SQL tokenizer on statements of sysbench's oltp_read_only, as COM_QUERY text.
    let statements: [&[u8]; 4] = [
        b"SELECT c FROM sbtest1 WHERE id=5014",
        b"SELECT c FROM sbtest1 WHERE id BETWEEN 5014 AND 5113 ORDER BY c",
        b"SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 5014 AND 5113 ORDER BY c",
        b"SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 5014 AND 5113",
    ];
    results.push((
        "sql::analyze: oltp_read_only statement",
        measure(statements.len() as u64, || {
            for s in statements {
                black_box(analyze(black_box(s), Modes::default()));
            }
        }),
    ));
    let mut long = b"INSERT INTO t (a, b, c) VALUES ".to_vec();
    for i in 0..100 {
        long.extend_from_slice(format!("({i}, 'text {i} with ''quotes''', NULL),").as_bytes());
    }
    long.extend_from_slice(b"(0, '', NULL)");

    results.push((
        "sql::analyze: per byte of a 3 KB INSERT",
        measure(long.len() as u64, || {
            black_box(analyze(black_box(&long), Modes::default()));
        }),
    ));

    println!("{:<44}{:>12}", "operation", "ns/op");
    for (name, ns) in &results {
        println!("{name:<44}{ns:>12.1}");
    }
    let json = format!(
        "{{{}}}\n",
        results
            .iter()
            .map(|(n, ns)| format!("\"{n}\": {ns:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("codec.json"), json);
    }
}
