//! `ResponseTracker` for every `ResponseKind`, with and without DEPRECATE_EOF, fed an arbitrary
//! packet sequence.
//!
//! Input: `[options][frames…]`, frames as on the wire (length clamped to what is left, see
//! `sluice_fuzz::packets`). Options: `% 9` picks the kind, bit 7 sets deprecate_eof.
//! Each frame's sequence byte is a per-packet control: when the tracker says it does not need
//! the whole payload, the payload is cut to `1 + (seq & 0x3f) % len` bytes, and with bit 6 the
//! packet is presented as the first frame of a 16 MiB packet (frame length 0xFFFFFF).
//!
//! Asserts: never panics; when `needs_whole` is false, a clone fed the whole payload classifies
//! the packet identically and ends in the same state (so the prefix was really enough); an ERR
//! ends the response; packets after the end are refused; `status()` reports the status of the
//! last OK / terminator role; a LOCAL INFILE request waits for `infile_sent`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::codec::command::ResponseKind;
use sluice::codec::frame::MAX_FRAME;
use sluice::codec::response::{ResponseTracker, Role};

const KINDS: [ResponseKind; 9] = [
    ResponseKind::None,
    ResponseKind::OkErr,
    ResponseKind::Query,
    ResponseKind::Prepare,
    ResponseKind::Execute,
    ResponseKind::Fetch,
    ResponseKind::FieldList,
    ResponseKind::Statistics,
    ResponseKind::SetOption,
];

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(opts) % KINDS.len()];
    let deprecate_eof = opts & 0x80 != 0;
    let mut t = ResponseTracker::new(kind, deprecate_eof);
    if kind == ResponseKind::None {
        assert!(t.is_done());
    }
    for (seq, payload) in sluice_fuzz::packets(rest) {
        if t.is_done() {
            if let Some(&first) = payload.first() {
                assert!(!t.needs_whole(first, payload.len()));
            }
            assert!(
                t.on_packet(payload.len(), payload).is_err(),
                "packet accepted after the end"
            );
            break;
        }
        if t.awaiting_infile() {
            // The server may not talk while the client uploads; then the client's empty packet.
            if !payload.is_empty() {
                assert!(t.clone().on_packet(payload.len(), payload).is_err());
            }
            t.infile_sent();
            assert!(!t.awaiting_infile());
        }
        let Some(&first) = payload.first() else {
            assert!(t.clone().on_packet(0, payload).is_err());
            continue;
        };
        let long = seq & 0x40 != 0 && !t.needs_whole(first, MAX_FRAME);
        let len = if long { MAX_FRAME } else { payload.len() };
        let result = if t.needs_whole(first, len) {
            t.on_packet(len, payload)
        } else {
            let cut = 1 + usize::from(seq & 0x3f) % payload.len();
            let mut whole = t.clone();
            let r = t.on_packet(len, &payload[..cut]);
            let w = whole.on_packet(len, payload);
            assert_eq!(
                r, w,
                "a prefix classified differently from the whole payload"
            );
            assert_eq!(
                format!("{t:?}"),
                format!("{whole:?}"),
                "state differs after a prefix"
            );
            r
        };
        match result {
            Ok(Role::Err) => {
                assert!(t.is_done(), "ERR did not end the response");
            }
            Ok(Role::Ok { status, more }) => {
                assert_eq!(t.status(), Some(status));
                assert_eq!(t.is_done(), !more);
            }
            Ok(Role::RowsEnd { status, more, .. }) => {
                assert_eq!(t.status(), Some(status));
                assert_eq!(t.is_done(), !more);
            }
            Ok(Role::CursorOpened { status, .. }) => {
                assert_eq!(t.status(), Some(status));
                assert!(t.is_done());
            }
            Ok(Role::DefsEof { status }) => assert_eq!(t.status(), Some(status)),
            Ok(Role::LocalInfile) => assert!(t.awaiting_infile()),
            Ok(Role::ColumnCount(n)) => assert!(n > 0),
            Ok(Role::Statistics) => assert!(t.is_done()),
            Ok(Role::PrepareOk {
                params, columns, ..
            }) => {
                assert_eq!(t.is_done(), params == 0 && columns == 0);
            }
            Ok(Role::ColumnDef { .. }) | Ok(Role::Row { .. }) => {}
            Err(_) => break,
        }
    }
});
