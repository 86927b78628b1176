//! The SQL tokenizer on untrusted client text, and the SET statement sluice builds from reported
//! settings.
//!
//! Input: `[options][bytes…]`. Options bit 7 clear: the bytes are SQL text for `sql::analyze`,
//! `sql::tokens` and `sql::rewrite_connection_id` under all four `Modes`. Bit 7 set: the bytes are
//! settings for `state::plan`: NUL-separated fields `fresh charset, fresh collation`, then
//! triples `(where, name, value)`, where the first byte of `where` says which side gets the
//! change: `c` current, `w` wanted, `C`/`W` the schema (the name is the schema), anything else
//! both sides with the value to `wanted` and the name's own text to `current`. Changes go through
//! `Settings::apply`, as the server's reports do. Bit 0: the backend has NO_BACKSLASH_ESCAPES.
//!
//! Asserts for plan: the SET statement re-tokenizes (under the same escaping mode) into exactly
//! `SET @@SESSION.name = value` assignments for the variables that differ, in order, each value a
//! single token that carries the intended value (a string literal that unescapes to it, a number
//! as written, NULL or DEFAULT) — so no value can end its literal early and inject SQL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::codec::packets::SessionChange;
use sluice::session::sql::{analyze, rewrite_connection_id, tokens, Modes, Tok};
use sluice::session::state::{plan, FreshCharset, Settings, VarCatalog};

const MODES: [Modes; 4] = [
    Modes {
        ansi_quotes: false,
        no_backslash_escapes: false,
    },
    Modes {
        ansi_quotes: true,
        no_backslash_escapes: false,
    },
    Modes {
        ansi_quotes: false,
        no_backslash_escapes: true,
    },
    Modes {
        ansi_quotes: true,
        no_backslash_escapes: true,
    },
];

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn check_sql(sql: &[u8], id: u32) {
    for m in MODES {
        let toks = tokens(sql, m);
        assert!(toks.len() <= sql.len());
        let e = analyze(sql, m);
        assert!(e.statements <= toks.len());
        // Every history read points into the text, in order, without overlap (they are
        // rewritten in place).
        let mut at = 0;
        for h in e.history.iter().filter(|h| !h.at.is_empty()) {
            assert!(h.at.start >= at && h.at.end <= sql.len(), "{:?}", e.history);
            at = h.at.end;
        }
        let out = rewrite_connection_id(sql, id, m);
        if !contains_ci(sql, b"connection_id") {
            assert_eq!(out, sql, "rewritten without a CONNECTION_ID() call");
        }
        // Rewriting is idempotent: the digits it writes contain no further call.
        assert_eq!(rewrite_connection_id(&out, id, m), out);
    }
}

fn is_numeric(v: &str) -> bool {
    let d = v.strip_prefix('-').unwrap_or(v);
    !d.is_empty()
        && d.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && d.bytes().filter(|&b| b == b'.').count() <= 1
        && !d.starts_with('.')
        && !d.ends_with('.')
}

/// The value a variable must end with: the wanted one, or for a variable only the backend has,
/// the fresh charset value or DEFAULT.
fn expected(
    current: &Settings,
    wanted: &Settings,
    fresh: &FreshCharset,
) -> Vec<(String, Option<String>)> {
    let mut names: Vec<&str> = current
        .vars
        .iter()
        .chain(&wanted.vars)
        .map(|(n, _)| n.as_ref())
        .collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for n in names {
        let (c, w) = (current.var(n), wanted.var(n));
        if c == w {
            continue;
        }
        let v = match w {
            Some(w) => Some(w.to_string()),
            None => match n {
                "collation_connection" => Some(fresh.collation.clone()),
                "character_set_client" | "character_set_connection" | "character_set_results" => {
                    Some(fresh.charset.clone())
                }
                _ => None,
            },
        };
        out.push((n.to_string(), v));
    }
    // Setting max_join_size turns sql_big_selects off on the server: the plan sets it again to
    // the session's value (last), even when both connections agreed on it.
    if out.iter().any(|(n, _)| n == "max_join_size")
        && !out.iter().any(|(n, _)| n == "sql_big_selects")
    {
        out.push((
            "sql_big_selects".to_string(),
            wanted.var("sql_big_selects").map(str::to_string),
        ));
    }
    out
}

/// The bytes of a hex literal's digits (which `plan` writes in pairs of upper-case digits).
fn unhex(digits: &[u8]) -> Vec<u8> {
    assert!(digits.len() % 2 == 0, "odd hex literal");
    digits
        .chunks(2)
        .map(|p| {
            let d = |c: u8| match c {
                b'0'..=b'9' => c - b'0',
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("not an upper-case hex digit: {c}"),
            };
            d(p[0]) * 16 + d(p[1])
        })
        .collect()
}

fn check_plan(data: &[u8], nbe: bool) {
    let mut fields = data.split(|&b| b == 0);
    let text = |f: Option<&[u8]>| String::from_utf8_lossy(f.unwrap_or_default()).into_owned();
    let fresh = FreshCharset {
        charset: text(fields.next()),
        collation: text(fields.next()),
    };
    let (mut current, mut wanted) = (Settings::default(), Settings::default());
    // A server whose variable table was not read: every reported variable is replayed but the
    // read-only ones sluice knows of (the most permissive catalog for `plan`).
    let cat = VarCatalog::default();
    while let Some(w) = fields.next() {
        let name = fields.next().unwrap_or_default();
        let value = fields.next().unwrap_or_default();
        let var = SessionChange::SystemVariable { name, value };
        match w.first() {
            Some(b'c') => {
                current.apply([var], &cat, &[]);
            }
            Some(b'w') => {
                wanted.apply([var], &cat, &[]);
            }
            Some(b'C') => {
                current.apply([SessionChange::Schema(name)], &cat, &[]);
            }
            Some(b'W') => {
                wanted.apply([SessionChange::Schema(name)], &cat, &[]);
            }
            _ => {
                wanted.apply([var], &cat, &[]);
                current.apply(
                    [SessionChange::SystemVariable { name, value: name }],
                    &cat,
                    &[],
                );
            }
        }
    }
    for s in [&current, &wanted] {
        assert!(
            s.vars.windows(2).all(|p| p[0].0 < p[1].0),
            "vars not sorted and unique"
        );
    }
    let p = plan(&current, &wanted, &fresh);
    // Schema.
    match (&current.schema, &wanted.schema) {
        (c, Some(w)) if c.as_ref() != Some(w) => assert_eq!(p.schema.as_ref(), Some(w)),
        (Some(_), None) => assert!(p.clear_schema && p.schema.is_none()),
        _ => assert!(p.schema.is_none() && !p.clear_schema),
    }
    let want = expected(&current, &wanted, &fresh);
    let Some(set) = p.set else {
        assert!(want.is_empty(), "differences but no SET: {want:?}");
        return;
    };
    assert!(!want.is_empty());
    for ansi_quotes in [false, true] {
        let toks = tokens(
            set.as_bytes(),
            Modes {
                ansi_quotes,
                no_backslash_escapes: nbe,
            },
        );
        let mut it = toks.iter().peekable();
        assert_eq!(it.next(), Some(&Tok::Word(b"SET")), "{set}");
        for (i, (name, value)) in want.iter().enumerate() {
            if i > 0 {
                assert_eq!(it.next(), Some(&Tok::Punct(b',')), "{set}");
            }
            let sysvar = format!("SESSION.{name}");
            assert_eq!(it.next(), Some(&Tok::SysVar(sysvar.as_bytes())), "{set}");
            assert_eq!(it.next(), Some(&Tok::Punct(b'=')), "{set}");
            match value.as_deref() {
                None => assert_eq!(it.next(), Some(&Tok::Word(b"DEFAULT")), "{set}"),
                Some(v) if is_numeric(v) => {
                    let digits = v.strip_prefix('-').map(|d| {
                        assert_eq!(it.next(), Some(&Tok::Punct(b'-')), "{set}");
                        d
                    });
                    let digits = digits.unwrap_or(v);
                    assert_eq!(it.next(), Some(&Tok::Number(digits.as_bytes())), "{set}");
                }
                Some("") if name.starts_with("character_set_") => {
                    assert_eq!(it.next(), Some(&Tok::Word(b"NULL")), "{set}")
                }
                // Either a quoted literal of printable ASCII without backslashes (the same in
                // every charset), or a hex literal X'…' of the value's bytes.
                Some(v) => match it.next() {
                    Some(Tok::Str(s)) => {
                        assert!(
                            s.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\'),
                            "a quoted literal a multi-byte charset could misread: {set:?}"
                        );
                        assert_eq!(
                            s.as_slice(),
                            v.as_bytes(),
                            "literal does not round-trip in {set:?}"
                        )
                    }
                    Some(Tok::Word(b"X")) => match it.next() {
                        Some(Tok::Str(hex)) => assert_eq!(
                            unhex(hex),
                            v.as_bytes(),
                            "hex literal does not round-trip in {set:?}"
                        ),
                        other => panic!("expected hex digits for {v:?}, got {other:?} in {set:?}"),
                    },
                    other => panic!("expected the literal {v:?}, got {other:?} in {set:?}"),
                },
            }
        }
        assert_eq!(it.next(), None, "trailing tokens in {set:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else {
        return;
    };
    if opts & 0x80 == 0 {
        let id = u32::from(opts).wrapping_mul(0x0101_0101);
        check_sql(rest, id);
    } else {
        check_plan(rest, opts & 1 != 0);
    }
});
