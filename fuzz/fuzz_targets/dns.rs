//! DNS answers from a name server sluice was told to ask (`dns.nameserver`): any bytes parse
//! to an error or an answer, never a panic, and a query always round-trips its id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::backend::dns::{encode_query, parse_answer, TYPE_A};

fuzz_target!(|data: &[u8]| {
    let id = data
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    if let Ok(a) = parse_answer(data, id) {
        assert!(a.addrs.is_empty() || a.ttl <= u32::MAX);
    }
    // The same bytes as a name: a query is written or refused, and starts with its id.
    let name = String::from_utf8_lossy(data);
    if let Some(q) = encode_query(id, &name, TYPE_A) {
        assert_eq!(&q[..2], &id.to_be_bytes());
        assert!(q.len() <= 12 + 255 + 4);
    }
});
