//! Client authentication at sluice: the credentials users are configured with (password hashes,
//! not passwords) and the checks of what clients send.
//!
//! Two hash forms, both double hashes a client's scramble can be checked against without knowing
//! the password:
//! - `*` + 40 hex digits: `SHA1(SHA1(password))`, MySQL's `PASSWORD()` / `mysql.user` format, for
//!   `mysql_native_password`;
//! - `sha2:` + 64 hex digits: `SHA256(SHA256(password))`, for the `caching_sha2_password` fast path.
//!
//! A plaintext password (development) yields both.
//!
//! Unknown user names must not be told apart from known ones on the wire: [`Decoys`] gives each
//! unknown name an exchange (plugin, and whether a full-authentication request follows) chosen
//! by a keyed hash of the name, in the proportions the configured users have, so the answer for
//! a name is stable but says nothing about whether the name exists.

pub mod crypt;
pub mod guard;

use crate::codec::auth::{
    constant_time_eq, native_stage2, native_verify, sha2_stage2, sha2_verify,
    CACHING_SHA2_PASSWORD, NATIVE_PASSWORD,
};

/// The two password plugins sluice authenticates clients with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plugin {
    Native,
    CachingSha2,
}

impl Plugin {
    pub fn name(self) -> &'static [u8] {
        match self {
            Plugin::Native => NATIVE_PASSWORD,
            Plugin::CachingSha2 => CACHING_SHA2_PASSWORD,
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Plugin> {
        match name {
            NATIVE_PASSWORD => Some(Plugin::Native),
            CACHING_SHA2_PASSWORD => Some(Plugin::CachingSha2),
            _ => None,
        }
    }
}

/// How the authentication exchange for a login name runs, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Exchange {
    /// The plugin the client is switched to (when it used another).
    pub plugin: Plugin,
    /// A scramble that does not check out is followed by a caching_sha2 full-authentication
    /// request (users with a `$A$` crypt credential).
    pub full_auth: bool,
}

/// The exchanges unknown user names get, weighted like the configured users' (see the module
/// docs), and the stand-in credentials their responses are checked against so that a failure
/// costs the same work as a known user's.
#[derive(Debug, Clone)]
pub struct Decoys {
    /// Each exchange configured users have, with how many have it.
    weights: Vec<(Exchange, u64)>,
    total: u64,
    /// Checked instead of a real credential (it matches no scramble anyone can compute).
    pub stand_in: Credential,
    /// Checked instead of a real crypt hash after a decoy full-authentication request.
    pub stand_in_crypt: crypt::Sha2Crypt,
}

impl Decoys {
    /// From the credentials of every user who can log in; `db_users`: users are also loaded
    /// from the database (`mysql_native_password` ones).
    pub fn new<'a>(users: impl IntoIterator<Item = &'a Credential>, db_users: bool) -> Decoys {
        fn add(weights: &mut Vec<(Exchange, u64)>, e: Exchange) {
            match weights.iter_mut().find(|(x, _)| *x == e) {
                Some((_, n)) => *n += 1,
                None => weights.push((e, 1)),
            }
        }
        let mut weights: Vec<(Exchange, u64)> = Vec::new();
        let mut rounds = 5000;
        for c in users {
            add(&mut weights, c.exchange());
            if let Some(k) = &c.crypt {
                rounds = rounds.max(k.rounds);
            }
        }
        if db_users || weights.is_empty() {
            let native = Exchange {
                plugin: Plugin::Native,
                full_auth: false,
            };
            add(&mut weights, native);
        }
        // A fixed order, so every process weighs the same way whatever the configuration order.
        weights.sort_by_key(|(e, _)| (e.plugin == Plugin::CachingSha2, e.full_auth));
        let total = weights.iter().map(|(_, n)| n).sum();
        let mut noise = [0u8; 32];
        let _ = getrandom::getrandom(&mut noise);
        let stand_in = Credential {
            plugin: Plugin::Native,
            native: Some(noise[..20].try_into().unwrap_or([1; 20])),
            sha2: Some(noise),
            crypt: None,
            plaintext: false,
            empty: false,
        };
        let mut stand_in_crypt = crypt::Sha2Crypt::parse(&crypt::Sha2Crypt::generate(&noise))
            .expect("a generated crypt hash parses");
        stand_in_crypt.rounds = rounds;
        Decoys {
            weights,
            total,
            stand_in,
            stand_in_crypt,
        }
    }

    /// The exchange for an unknown name whose keyed hash is `hash`.
    pub fn pick(&self, hash: u64) -> Exchange {
        let mut at = hash % self.total.max(1);
        for (e, n) in &self.weights {
            if at < *n {
                return *e;
            }
            at -= n;
        }
        Exchange {
            plugin: Plugin::Native,
            full_auth: false,
        }
    }
}

/// What sluice knows about a user's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The plugin clients are switched to.
    pub plugin: Plugin,
    pub native: Option<[u8; 20]>,
    pub sha2: Option<[u8; 32]>,
    /// A MySQL-style `$A$005$…` hash: checks a password sent in full (over TLS), not a scramble.
    pub crypt: Option<crypt::Sha2Crypt>,
    /// Configured in plaintext (a warning is logged at start).
    pub plaintext: bool,
    /// The password is empty: clients send an empty response, and only that is accepted.
    pub empty: bool,
}

pub fn looks_like_hash(s: &str) -> bool {
    s.starts_with('*') || s.starts_with("sha2:") || s.starts_with("$A$")
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

impl Credential {
    /// Parses a configured password (hash or plaintext) and the optional plugin choice.
    pub fn parse(password: &str, plugin: Option<&str>) -> Result<Credential, String> {
        let mut c = if password.starts_with("$A$") {
            let crypt = crypt::Sha2Crypt::parse(password).ok_or(
                "a \"$A$\" hash must be MySQL's caching_sha2_password form: $A$005$, a 20-byte salt, 43 characters",
            )?;
            Credential {
                plugin: Plugin::CachingSha2,
                native: None,
                sha2: None,
                crypt: Some(crypt),
                plaintext: false,
                empty: false,
            }
        } else if let Some(h) = password.strip_prefix('*') {
            let native = parse_hex::<20>(h)
                .ok_or("a \"*\" hash must be followed by 40 hex digits (SHA1(SHA1(password)))")?;
            Credential {
                plugin: Plugin::Native,
                native: Some(native),
                sha2: None,
                crypt: None,
                plaintext: false,
                empty: false,
            }
        } else if let Some(h) = password.strip_prefix("sha2:") {
            let sha2 = parse_hex::<32>(h).ok_or(
                "a \"sha2:\" hash must be followed by 64 hex digits (SHA256(SHA256(password)))",
            )?;
            Credential {
                plugin: Plugin::CachingSha2,
                native: None,
                sha2: Some(sha2),
                crypt: None,
                plaintext: false,
                empty: false,
            }
        } else {
            let p = password.as_bytes();
            Credential {
                plugin: Plugin::Native,
                native: Some(native_stage2(p)),
                sha2: Some(sha2_stage2(p)),
                crypt: None,
                plaintext: true,
                empty: p.is_empty(),
            }
        };
        match plugin {
            None => {}
            Some("mysql_native_password") => {
                if c.native.is_none() {
                    return Err("auth_plugin mysql_native_password needs a \"*\" hash or a plaintext password".into());
                }
                c.plugin = Plugin::Native;
            }
            Some("caching_sha2_password") => {
                if c.sha2.is_none() && c.crypt.is_none() {
                    return Err("auth_plugin caching_sha2_password needs a \"sha2:\" hash or a plaintext password".into());
                }
                c.plugin = Plugin::CachingSha2;
            }
            Some(other) => {
                return Err(format!(
                    "auth_plugin {other:?} is not supported (mysql_native_password or caching_sha2_password)"
                ))
            }
        }
        Ok(c)
    }

    /// How this user's authentication runs on the wire.
    pub fn exchange(&self) -> Exchange {
        Exchange {
            plugin: self.plugin,
            full_auth: self.plugin == Plugin::CachingSha2 && self.crypt.is_some(),
        }
    }

    /// Checks a client's scramble, computed with `plugin` over `nonce`.
    pub fn verify(&self, plugin: Plugin, nonce: &[u8], response: &[u8]) -> bool {
        if self.empty || response.is_empty() {
            return self.empty && response.is_empty();
        }
        match plugin {
            Plugin::Native => self
                .native
                .is_some_and(|s| native_verify(&s, nonce, response)),
            Plugin::CachingSha2 => self.sha2.is_some_and(|s| sha2_verify(&s, nonce, response)),
        }
    }
}

/// The lines `sluice hash-password` prints for `password`.
pub fn hash_lines(password: &[u8]) -> String {
    format!(
        "mysql_native_password: *{}\ncaching_sha2_password: sha2:{}\ncaching_sha2_password (full authentication over TLS first): {}\n",
        hex_upper(&native_stage2(password)),
        hex_upper(&sha2_stage2(password)).to_lowercase(),
        crypt::Sha2Crypt::generate(password)
    )
}

impl Credential {
    /// Checks a password sent in full (caching_sha2_password's full authentication, over TLS).
    pub fn verify_clear(&self, password: &[u8]) -> bool {
        if self.empty || password.is_empty() {
            return self.empty && password.is_empty();
        }
        if let Some(c) = &self.crypt {
            return c.verify(password);
        }
        if let Some(s) = &self.sha2 {
            return constant_time_eq(&sha2_stage2(password), s);
        }
        self.native
            .is_some_and(|n| constant_time_eq(&native_stage2(password), &n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::auth::{native_scramble, sha2_scramble};

    #[test]
    fn hashes_from_hash_password_parse_back_and_verify() {
        let lines = hash_lines(b"s3cret");
        let native = lines.lines().next().unwrap().split(' ').nth(1).unwrap();
        let sha2 = lines.lines().nth(1).unwrap().split(' ').nth(1).unwrap();
        let nonce = [7u8; 20];
        let n = Credential::parse(native, None).unwrap();
        assert_eq!(n.plugin, Plugin::Native);
        assert!(n.verify(Plugin::Native, &nonce, &native_scramble(b"s3cret", &nonce)));
        assert!(!n.verify(Plugin::Native, &nonce, &native_scramble(b"wrong", &nonce)));
        assert!(!n.verify(
            Plugin::CachingSha2,
            &nonce,
            &sha2_scramble(b"s3cret", &nonce)
        ));
        let s = Credential::parse(sha2, None).unwrap();
        assert_eq!(s.plugin, Plugin::CachingSha2);
        assert!(s.verify(
            Plugin::CachingSha2,
            &nonce,
            &sha2_scramble(b"s3cret", &nonce)
        ));
        assert!(!s.plaintext);
    }

    #[test]
    fn plaintext_allows_both_plugins() {
        let c = Credential::parse("app", Some("caching_sha2_password")).unwrap();
        assert!(c.plaintext);
        assert_eq!(c.plugin, Plugin::CachingSha2);
        let nonce = [1u8; 20];
        assert!(c.verify(Plugin::Native, &nonce, &native_scramble(b"app", &nonce)));
        assert!(c.verify(Plugin::CachingSha2, &nonce, &sha2_scramble(b"app", &nonce)));
    }

    #[test]
    fn bad_hashes_and_plugins_are_explained() {
        assert!(Credential::parse("*12", None)
            .unwrap_err()
            .contains("40 hex digits"));
        assert!(Credential::parse("sha2:zz", None)
            .unwrap_err()
            .contains("64 hex digits"));
        let e = Credential::parse(
            "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3",
            Some("caching_sha2_password"),
        )
        .unwrap_err();
        assert!(e.contains("auth_plugin"), "{e}");
        assert!(Credential::parse("x", Some("dialog"))
            .unwrap_err()
            .contains("not supported"));
    }

    #[test]
    fn decoys_follow_the_configured_mix_and_are_stable() {
        let native = Credential::parse("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3", None).unwrap();
        let sha2 = Credential::parse(
            "sha2:0000000000000000000000000000000000000000000000000000000000000001",
            None,
        )
        .unwrap();
        let crypt = Credential::parse(&crypt::Sha2Crypt::generate(b"x"), None).unwrap();
        // Only native users: every unknown name gets the native exchange.
        let d = Decoys::new([&native, &native], false);
        assert!((0..1000).all(|h| d.pick(h) == native.exchange()));
        // A mix: unknown names spread over exactly the exchanges configured users have, in
        // their proportions (1 : 1 : 2).
        let d = Decoys::new([&native, &sha2, &crypt, &crypt], false);
        let mut seen = std::collections::HashMap::new();
        for h in 0..4000u64 {
            *seen
                .entry(d.pick(h.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3);
        assert!(seen[&crypt.exchange()] > 1800 && seen[&native.exchange()] > 800);
        assert_eq!(d.pick(12345), d.pick(12345));
        assert!(crypt.exchange().full_auth && !sha2.exchange().full_auth);
        // The stand-in credentials accept nothing a client could send.
        let nonce = [9u8; 20];
        assert!(!d.stand_in.verify(Plugin::Native, &nonce, &[0; 20]));
        assert!(!d.stand_in.verify(Plugin::Native, &nonce, b""));
        assert!(!d.stand_in_crypt.verify(b""));
    }

    #[test]
    fn empty_password_accepts_only_an_empty_response() {
        let c = Credential::parse("", None).unwrap();
        let nonce = [3u8; 20];
        assert!(c.verify(Plugin::Native, &nonce, b""));
        assert!(c.verify(Plugin::CachingSha2, &nonce, b""));
        assert!(!c.verify(Plugin::Native, &nonce, &[0; 20]));
        // And a user with a password never accepts an empty response.
        let c = Credential::parse("app", None).unwrap();
        assert!(!c.verify(Plugin::Native, &nonce, b""));
    }
}
