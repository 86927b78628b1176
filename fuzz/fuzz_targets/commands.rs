//! Client command packets: `disposition`/`name`, `statement_id`, `execute_flags`, `kill_target`,
//! `set_option_value`, `ChangeUser::decode` under several capability sets, and
//! `stmts::rewrite_execute` and `stmts::bound_types` with arbitrary parameter counts and remembered
//! types.
//!
//! Input: `[params lo][params hi][flags][payload…]` where payload is a client command packet
//! (command byte first). `flags` bit 0: remembered types present; bit 1: remembered types of the
//! wrong length; bits 2-3: the params count is taken as is / as the low byte only / 0 / 0xFFFF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::codec::caps::cap;
use sluice::codec::command::{
    self, com, disposition, execute_flags, kill_target, name, set_option_value, statement_id,
    ChangeUser, Disposition,
};
use sluice::session::stmts::{bound_types, rewrite_execute};

const CAP_SETS: [u32; 6] = [
    0,
    cap::PROTOCOL_41,
    cap::PROTOCOL_41 | cap::SECURE_CONNECTION,
    cap::PROTOCOL_41 | cap::SECURE_CONNECTION | cap::PLUGIN_AUTH,
    cap::PROTOCOL_41 | cap::SECURE_CONNECTION | cap::PLUGIN_AUTH | cap::CONNECT_ATTRS,
    cap::PROTOCOL_41 | cap::PLUGIN_AUTH | cap::CONNECT_ATTRS,
];

fn check_change_user(payload: &[u8]) {
    for caps in CAP_SETS {
        let Ok(cu) = ChangeUser::decode(payload, caps) else {
            continue;
        };
        assert!(!cu.username.contains(&0));
        assert!(!cu.database.contains(&0));
        if caps & cap::SECURE_CONNECTION != 0 {
            assert!(cu.auth_response.len() <= 255);
        } else {
            assert!(!cu.auth_response.contains(&0));
        }
        let mut wire = Vec::new();
        cu.encode(&mut wire, caps);
        let back =
            ChangeUser::decode(&wire, caps).expect("re-decode of an encoded COM_CHANGE_USER");
        // The collation is always written (0 when absent), the plugin name whenever PLUGIN_AUTH.
        let mut want = cu.clone();
        want.collation = Some(cu.collation.unwrap_or(0));
        if caps & cap::PLUGIN_AUTH != 0 && want.auth_plugin.is_none() {
            want.auth_plugin = Some(Vec::new());
        }
        assert_eq!(
            back, want,
            "COM_CHANGE_USER round trip under caps {caps:#x}"
        );
        let mut wire2 = Vec::new();
        back.encode(&mut wire2, caps);
        assert_eq!(wire2, wire);
    }
}

fn check_fixed_fields(payload: &[u8]) {
    let id = statement_id(payload);
    assert_eq!(id.is_ok(), payload.len() >= 5);
    if let Ok(id) = id {
        assert_eq!(id.to_le_bytes(), payload[1..5]);
        let mut p = payload.to_vec();
        command::set_statement_id(&mut p, id.wrapping_add(1)).unwrap();
        assert_eq!(statement_id(&p), Ok(id.wrapping_add(1)));
        assert_eq!(p[5..], payload[5..]);
    } else {
        let mut p = payload.to_vec();
        assert!(command::set_statement_id(&mut p, 1).is_err());
        assert_eq!(p, payload);
    }
    let ef = execute_flags(payload);
    assert_eq!(ef.is_ok(), payload.len() >= 6);
    if let Ok((id, flags)) = ef {
        assert_eq!(Ok(id), statement_id(payload));
        assert_eq!(flags, payload[5]);
    }
    assert_eq!(kill_target(payload).is_ok(), payload.len() >= 5);
    assert_eq!(set_option_value(payload).is_ok(), payload.len() >= 3);
}

fn check_rewrite(payload: &[u8], params: u16, remembered: Option<&[u8]>) {
    let backend_id = 0xA1B2_C3D4u32;
    let Ok(out) = rewrite_execute(payload, backend_id, params, remembered) else {
        return;
    };
    let bound = bound_types(payload, params).expect("a rewritable execute's types read");
    assert!(payload.len() >= 10 && payload[0] == com::STMT_EXECUTE);
    assert_eq!(out[0], com::STMT_EXECUTE);
    assert_eq!(out[1..5], backend_id.to_le_bytes());
    assert_eq!(out[5..10], payload[5..10]);
    if params == 0 {
        assert_eq!(out[10..], payload[10..]);
        assert!(bound.is_none());
        return;
    }
    let nb = usize::from(params).div_ceil(8);
    let flag_at = 10 + nb;
    let types_len = 2 * usize::from(params);
    assert_eq!(out[10..flag_at], payload[10..flag_at]);
    match payload[flag_at] {
        1 => {
            let types = bound.expect("bound types of an execute with the flag set");
            assert_eq!(types.len(), types_len);
            assert_eq!(types[..], payload[flag_at + 1..flag_at + 1 + types_len]);
            assert_eq!(out[flag_at..], payload[flag_at..]);
        }
        0 if remembered.is_some_and(|t| t.len() == types_len) => {
            assert!(bound.is_none());
            assert_eq!(out.len(), payload.len() + types_len);
            assert_eq!(out[flag_at], 1);
            assert_eq!(
                out[flag_at + 1..flag_at + 1 + types_len],
                *remembered.unwrap()
            );
            assert_eq!(out[flag_at + 1 + types_len..], payload[flag_at + 1..]);
        }
        _ => {
            assert!(bound.is_none());
            assert_eq!(out[flag_at..], payload[flag_at..]);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let raw = u16::from_le_bytes([data[0], data[1]]);
    let flags = data[2];
    let payload = &data[3..];
    let params = match (flags >> 2) & 3 {
        0 => raw,
        1 => raw & 0xFF,
        2 => 0,
        _ => u16::MAX,
    };

    if let Some(&code) = payload.first() {
        let d = disposition(code);
        let n = name(code);
        assert!(n.starts_with("COM_"));
        if n == "COM_UNKNOWN" {
            assert_eq!(d, Disposition::Refuse);
        }
    }
    check_fixed_fields(payload);
    check_change_user(payload);

    // Remembered types: cut from a pattern so they are independent of the payload's length.
    let pattern: Vec<u8> = if flags & 1 != 0 {
        let len = 2 * usize::from(params) + usize::from(flags & 2 != 0);
        data.iter().copied().cycle().take(len).collect()
    } else {
        Vec::new()
    };
    check_rewrite(payload, params, (flags & 1 != 0).then_some(&pattern[..]));
    // The same packet as an execute for a statement with the payload's own idea of its size.
    if payload.len() >= 10 && payload[0] == com::STMT_EXECUTE {
        for p in [1u16, 8, 9, 255] {
            check_rewrite(payload, p, None);
        }
    }
});
