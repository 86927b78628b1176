//! An upgrade's session records and handover messages (`sluice::upgrade`): any bytes decode to a
//! record or an error, never a panic; a decoded record re-encodes to bytes that decode to the
//! same record (and encode again byte for byte), written as version 2 exactly when it carries a
//! backend connection (its nested fields, pins and backend statements included: seed
//! `session_record_with_backend`); any bytes as a handover message of any kind decode or are
//! refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::upgrade::{record, wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = record::decode(data) {
        let bytes = record::encode(&r);
        let want = if r.backend_conn.is_some() {
            record::VERSION_BACKEND
        } else {
            record::VERSION
        };
        assert_eq!(bytes[0], want);
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
