//! Table tests: every command kind against every legal response shape, with packets captured from
//! MariaDB 10.11 (with and without CLIENT_DEPRECATE_EOF).

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Feeds whole packets and returns the roles; asserts the response completes exactly at the end.
fn run(kind: ResponseKind, deprecate_eof: bool, packets: &[&str]) -> Vec<Role> {
    let mut t = ResponseTracker::new(kind, deprecate_eof);
    let mut roles = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        assert!(!t.is_done(), "done before packet {i} of {kind:?}");
        let p = hex(p);
        let role = t
            .on_packet(p.len(), &p)
            .unwrap_or_else(|e| panic!("packet {i}: {e}"));
        roles.push(role);
    }
    assert!(
        t.is_done(),
        "{kind:?} not done after {} packets: {roles:?}",
        packets.len()
    );
    roles
}

const COLDEF_ID: &str = "03646566036170700274310274310269640269640c3f000b000000030350000000";
const COLDEF_V: &str = "0364656603617070027431027431017601760c2d0028000000fd0000000000";
const COLDEF_1: &str = "036465660000000131000c3f0001000000038100000000";

#[test]
fn ok_and_err_for_simple_commands() {
    assert_eq!(
        run(ResponseKind::OkErr, true, &["00000002000000"]),
        vec![Role::Ok {
            status: 2,
            more: false
        }]
    );
    assert_eq!(
        run(ResponseKind::OkErr, true, &["ff7a042334325330325461626c6520276170702e6e6f737563682720646f65736e2774206578697374"]),
        vec![Role::Err]
    );
}

#[test]
fn text_result_set_deprecate_eof() {
    let roles = run(
        ResponseKind::Query,
        true,
        &["01", COLDEF_1, "0131", "fe000002000000"],
    );
    assert_eq!(
        roles,
        vec![
            Role::ColumnCount(1),
            Role::ColumnDef { last: true },
            Role::Row {
                first_after_defs: true
            },
            Role::RowsEnd {
                status: 2,
                warnings: 0,
                more: false,
                no_rows: false
            },
        ]
    );
}

#[test]
fn text_result_set_classic() {
    let roles = run(
        ResponseKind::Query,
        false,
        &["01", COLDEF_1, "fe00000200", "0131", "0132", "fe00000200"],
    );
    assert_eq!(roles[2], Role::DefsEof { status: 2 });
    assert_eq!(
        roles[3],
        Role::Row {
            first_after_defs: true
        }
    );
    assert_eq!(
        roles[4],
        Role::Row {
            first_after_defs: false
        }
    );
    assert_eq!(
        roles[5],
        Role::RowsEnd {
            status: 2,
            warnings: 0,
            more: false,
            no_rows: false
        }
    );
}

#[test]
fn empty_result_set_is_marked_no_rows() {
    let roles = run(
        ResponseKind::Query,
        true,
        &["01", COLDEF_1, "fe000002000000"],
    );
    assert_eq!(
        roles[2],
        Role::RowsEnd {
            status: 2,
            warnings: 0,
            more: false,
            no_rows: true
        }
    );
}

#[test]
fn multi_statement_results_continue_until_no_more_results() {
    // SELECT 1; SELECT 2 — captured.
    let roles = run(
        ResponseKind::Query,
        true,
        &[
            "01",
            COLDEF_1,
            "0131",
            "fe00000a000000",
            "01",
            COLDEF_1,
            "0132",
            "fe000002000000",
        ],
    );
    assert_eq!(
        roles[3],
        Role::RowsEnd {
            status: 0x0a,
            warnings: 0,
            more: true,
            no_rows: false
        }
    );
    assert_eq!(roles[4], Role::ColumnCount(1));
    // OK with more results, then a result set (e.g. INSERT ...; SELECT ...).
    let roles = run(
        ResponseKind::Query,
        true,
        &["0001000a000000", "01", COLDEF_1, "0131", "fe000002000000"],
    );
    assert_eq!(
        roles[0],
        Role::Ok {
            status: 0x0a,
            more: true
        }
    );
}

#[test]
fn error_in_the_middle_of_rows_ends_the_response() {
    let roles = run(
        ResponseKind::Query,
        true,
        &[
            "01",
            COLDEF_1,
            "0131",
            "ff2b05234830303030517565727920657865637574696f6e2077617320696e746572727570746564",
        ],
    );
    assert_eq!(roles[3], Role::Err);
}

#[test]
fn local_infile_request_waits_for_the_client_file() {
    let mut t = ResponseTracker::new(ResponseKind::Query, true);
    let p = hex("fb2f746d702f782e637376");
    assert!(t.needs_whole(p[0], p.len()));
    assert_eq!(t.on_packet(p.len(), &p).unwrap(), Role::LocalInfile);
    assert!(t.awaiting_infile());
    let ok = hex("000100020002002f5265636f7264733a2031202044656c657465643a20302020536b69707065643a203020205761726e696e67733a2032");
    assert!(
        t.on_packet(ok.len(), &ok).is_err(),
        "server packet during upload is a protocol error"
    );
    t.infile_sent();
    assert_eq!(
        t.on_packet(ok.len(), &ok).unwrap(),
        Role::Ok {
            status: 2,
            more: false
        }
    );
    assert!(t.is_done());
}

#[test]
fn prepare_deprecate_eof_and_classic() {
    // SELECT id, v FROM t1 WHERE id > ?  — 2 columns, 1 parameter.
    let param = "03646566000000013f000c3f0000000000068000000000";
    let roles = run(
        ResponseKind::Prepare,
        true,
        &["000200000002000100000000", param, COLDEF_ID, COLDEF_V],
    );
    assert_eq!(
        roles[0],
        Role::PrepareOk {
            statement_id: 2,
            columns: 2,
            params: 1,
            warnings: 0
        }
    );
    assert_eq!(roles[1], Role::ColumnDef { last: true });
    assert_eq!(roles[2], Role::ColumnDef { last: false });
    assert_eq!(roles[3], Role::ColumnDef { last: true });
    let roles = run(
        ResponseKind::Prepare,
        false,
        &[
            "000400000002000100000000",
            param,
            "fe00000200",
            COLDEF_ID,
            COLDEF_V,
            "fe00000200",
        ],
    );
    assert_eq!(roles[2], Role::DefsEof { status: 2 });
    assert_eq!(roles[5], Role::DefsEof { status: 2 });
    // No parameters, no columns (e.g. PREPARE of DO 1): the OK alone.
    let roles = run(ResponseKind::Prepare, true, &["000700000000000000000000"]);
    assert_eq!(roles.len(), 1);
}

#[test]
fn execute_with_and_without_cursor() {
    let roles = run(
        ResponseKind::Execute,
        true,
        &[
            "02",
            COLDEF_ID,
            COLDEF_V,
            "0000020000000162",
            "0000030000000163",
            "000804000000",
            "fe000002000000",
        ],
    );
    assert_eq!(
        roles[3],
        Role::Row {
            first_after_defs: true
        }
    );
    assert_eq!(
        roles[6],
        Role::RowsEnd {
            status: 2,
            warnings: 0,
            more: false,
            no_rows: false
        }
    );
    // Cursor: definitions, then a terminator with CURSOR_EXISTS and no rows.
    let roles = run(
        ResponseKind::Execute,
        true,
        &["02", COLDEF_ID, COLDEF_V, "fe000042000000"],
    );
    assert_eq!(
        roles[3],
        Role::CursorOpened {
            status: 0x42,
            warnings: 0
        }
    );
    let roles = run(
        ResponseKind::Execute,
        false,
        &["02", COLDEF_ID, COLDEF_V, "fe00004200"],
    );
    assert_eq!(roles[3], Role::DefsEof { status: 0x42 });
    // Execute of a DML statement: an OK.
    let roles = run(ResponseKind::Execute, true, &["00010002000000"]);
    assert_eq!(
        roles,
        vec![Role::Ok {
            status: 2,
            more: false
        }]
    );
}

#[test]
fn fetch_rows_from_a_cursor() {
    let roles = run(
        ResponseKind::Fetch,
        true,
        &["0000010000000161", "0000020000000162", "fe000042000000"],
    );
    assert_eq!(
        roles[0],
        Role::Row {
            first_after_defs: false
        }
    );
    assert_eq!(
        roles[2],
        Role::RowsEnd {
            status: 0x42,
            warnings: 0,
            more: false,
            no_rows: false
        }
    );
    let roles = run(
        ResponseKind::Fetch,
        false,
        &["0000030000000163", "fe00004200"],
    );
    assert_eq!(roles.len(), 2);
    let roles = run(
        ResponseKind::Fetch,
        true,
        &["ffdb04234859303030556e6b6e6f776e"],
    );
    assert_eq!(roles, vec![Role::Err]);
}

#[test]
fn field_list_statistics_and_set_option() {
    let roles = run(
        ResponseKind::FieldList,
        true,
        &[
            "03646566036170700274310274310269640269640c3f000b0000000303500000000130",
            "0364656603617070027431027431017601760c2d0028000000fd0000000000fb",
            "fe000002000000",
        ],
    );
    assert_eq!(
        roles[2],
        Role::RowsEnd {
            status: 2,
            warnings: 0,
            more: false,
            no_rows: false
        }
    );
    let roles = run(ResponseKind::Statistics, true, &["557074696d653a203733"]);
    assert_eq!(roles, vec![Role::Statistics]);
    let roles = run(ResponseKind::SetOption, true, &["fe000002000000"]);
    assert_eq!(
        roles,
        vec![Role::Ok {
            status: 2,
            more: false
        }]
    );
    let roles = run(ResponseKind::SetOption, false, &["fe00000200"]);
    assert_eq!(
        roles,
        vec![Role::Ok {
            status: 2,
            more: false
        }]
    );
}

#[test]
fn a_row_starting_with_0xfe_is_a_row_when_long_enough() {
    let mut t = ResponseTracker::new(ResponseKind::Query, true);
    for p in ["01", COLDEF_1] {
        let p = hex(p);
        t.on_packet(p.len(), &p).unwrap();
    }
    // First frame of a row whose first column is a >16 MiB string: 0xFE prefix, max-length frame.
    let len = crate::codec::frame::MAX_FRAME;
    assert!(!t.needs_whole(0xFE, len));
    assert_eq!(
        t.on_packet(len, &[0xFE, 0, 0, 0, 1]).unwrap(),
        Role::Row {
            first_after_defs: true
        }
    );
    // Classic protocol: a 9-byte packet starting with 0xFE is a row.
    let mut t = ResponseTracker::new(ResponseKind::Query, false);
    for p in ["01", COLDEF_1, "fe00000200"] {
        let p = hex(p);
        t.on_packet(p.len(), &p).unwrap();
    }
    assert_eq!(
        t.on_packet(9, &[0xFE, 1, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
        Role::Row {
            first_after_defs: true
        }
    );
}

#[test]
fn rows_and_definitions_never_need_their_payload() {
    let mut t = ResponseTracker::new(ResponseKind::Query, true);
    let p = hex("02");
    assert!(t.needs_whole(p[0], 1));
    t.on_packet(1, &p).unwrap();
    assert!(!t.needs_whole(0x03, 1 << 20));
    t.on_packet(1 << 20, &[0x03]).unwrap();
    t.on_packet(1 << 20, &[0x03]).unwrap();
    assert!(!t.needs_whole(0x05, 1 << 22));
    assert!(t.needs_whole(0xFE, 7));
    assert!(t.needs_whole(0xFF, 30));
}

#[test]
fn garbage_never_panics() {
    let kinds = [
        ResponseKind::OkErr,
        ResponseKind::Query,
        ResponseKind::Prepare,
        ResponseKind::Execute,
        ResponseKind::Fetch,
        ResponseKind::FieldList,
        ResponseKind::Statistics,
        ResponseKind::SetOption,
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for kind in kinds {
        for deprecate in [false, true] {
            for _ in 0..2000 {
                let mut t = ResponseTracker::new(kind, deprecate);
                for _ in 0..8 {
                    let n = (next() % 12) as usize;
                    let p: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    if p.is_empty() {
                        assert!(t.on_packet(0, &p).is_err());
                        continue;
                    }
                    if t.on_packet(p.len(), &p).is_err() || t.is_done() {
                        break;
                    }
                }
            }
        }
    }
}

#[test]
fn packets_after_the_end_are_rejected() {
    let mut t = ResponseTracker::new(ResponseKind::OkErr, true);
    let ok = hex("00000002000000");
    t.on_packet(ok.len(), &ok).unwrap();
    assert!(t.on_packet(ok.len(), &ok).is_err());
    let t = ResponseTracker::new(ResponseKind::None, true);
    assert!(t.is_done());
}

/// Frames `packets` (sequence ids from 1) into one server byte stream.
fn wire_of(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut seq = 1u8;
    for p in packets {
        seq = crate::codec::frame::encode_packet(&mut wire, seq, p);
    }
    wire
}

/// Delivers `wire` in chunks of the sizes `next_chunk` picks, framing and tracking as sluice does:
/// scan, take each complete packet, classify it. Returns the roles and the packet lengths.
fn track_in_chunks(
    kind: ResponseKind,
    wire: &[u8],
    mut next_chunk: impl FnMut() -> usize,
) -> Vec<(Role, usize)> {
    use crate::codec::frame::{scan_packet, take_packet, Scan, MAX_FRAME};
    let mut t = ResponseTracker::new(kind, true);
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < wire.len() {
        let n = next_chunk().clamp(1, wire.len() - pos);
        buf.extend_from_slice(&wire[pos..pos + n]);
        pos += n;
        while let Scan::Complete(span) = scan_packet(&buf, usize::MAX).unwrap() {
            let payload = take_packet(&mut buf, span);
            let first_frame = if span.frames > 1 {
                MAX_FRAME
            } else {
                span.payload_len
            };
            assert!(!t.is_done(), "packet after the end");
            out.push((t.on_packet(first_frame, &payload).unwrap(), payload.len()));
        }
    }
    assert!(buf.is_empty() && t.is_done(), "stream ended mid-response");
    out
}

#[test]
fn split_reads_byte_by_byte_and_in_random_chunks_track_the_same() {
    // SELECT 1; SELECT 2 (captured), then a result set whose single row is longer than one frame
    // and starts with 0xFE (an 8-byte length prefix): it must stay a row, not a terminator.
    let mut big_row = vec![0xfe];
    let big = crate::codec::frame::MAX_FRAME + 100;
    big_row.extend_from_slice(&(big as u64).to_le_bytes());
    big_row.resize(9 + big, b'x');
    let small: Vec<Vec<u8>> = [
        "01",
        COLDEF_1,
        "0131",
        "fe00000a000000",
        "01",
        COLDEF_1,
        "0132",
        "fe00000a000000",
    ]
    .iter()
    .map(|h| hex(h))
    .collect();
    let mut packets = small.clone();
    packets.extend([hex("01"), hex(COLDEF_V), big_row, hex("fe000002000000")]);
    let wire = wire_of(&packets);

    let whole = track_in_chunks(ResponseKind::Query, &wire, || usize::MAX);
    assert_eq!(whole.len(), packets.len());
    assert_eq!(
        whole[10],
        (
            Role::Row {
                first_after_defs: true
            },
            9 + big
        )
    );
    assert!(matches!(whole[11].0, Role::RowsEnd { more: false, .. }));

    // Byte by byte over the small results (the big row would take 16M steps).
    let mut small_wire = wire_of(&small);
    small_wire.extend(wire_of(&[
        hex("01"),
        hex(COLDEF_1),
        hex("0133"),
        hex("fe000002000000"),
    ]));
    let one = track_in_chunks(ResponseKind::Query, &small_wire, || 1);
    let all = track_in_chunks(ResponseKind::Query, &small_wire, || usize::MAX);
    assert_eq!(one, all);
    assert_eq!(one.len(), 12);

    // Random chunk sizes (a fixed xorshift seed per round), from 1 byte to 1 MiB.
    for seed in 1..=8u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let chunks = track_in_chunks(ResponseKind::Query, &wire, || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bits = (x % 21) as u32;
            1 + (x >> 32) as usize % (1usize << bits)
        });
        assert_eq!(chunks, whole, "seed {seed}");
    }
}
