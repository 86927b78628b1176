//! An upgrade's session records and handover messages (`sluice::upgrade`): any bytes decode to a
//! record or an error, never a panic; a decoded record re-encodes to bytes that decode to the
//! same record (and encode again byte for byte); any bytes as a handover message of any kind
//! decode or are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::upgrade::{record, wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = record::decode(data) {
        let bytes = record::encode(&r);
        let again = record::decode(&bytes).expect("a re-encoded record decodes");
        assert_eq!(again, r);
        assert_eq!(record::encode(&again), bytes);
    }
    if let Some((&kind, payload)) = data.split_first() {
        if let Ok(m) = wire::decode(kind, payload) {
            let (k, p) = wire::encode(&m);
            assert_eq!(wire::decode(k, &p).as_ref(), Ok(&m));
        }
    }
});
