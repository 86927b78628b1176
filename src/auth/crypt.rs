//! SHA-256-crypt (Ulrich Drepper's "Unix crypt using SHA-256"), in the form MySQL stores
//! caching_sha2_password credentials: `$A$` + 3-digit rounds/1000 + `$` + 20-byte salt + 43-char
//! hash. Unlike `SHA256(SHA256(password))`, such a hash cannot check a fast-path scramble: the
//! first login must send the password itself (over TLS), after which the double hash is cached
//! and later logins take the fast path — what MySQL does.

use sha2::{Digest, Sha256};

const B64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn repeat_to(out: &mut Sha256, block: &[u8; 32], len: usize) {
    let mut left = len;
    while left >= 32 {
        out.update(block);
        left -= 32;
    }
    out.update(&block[..left]);
}

/// The 43-character SHA-256-crypt hash of `password` with `salt` (any length) and `rounds`.
pub fn sha256_crypt(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 43] {
    let b: [u8; 32] = Sha256::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize()
        .into();
    let mut a = Sha256::new();
    a.update(password);
    a.update(salt);
    repeat_to(&mut a, &b, password.len());
    let mut n = password.len();
    while n > 0 {
        if n & 1 == 1 {
            a.update(b);
        } else {
            a.update(password);
        }
        n >>= 1;
    }
    let a: [u8; 32] = a.finalize().into();
    let mut dp = Sha256::new();
    for _ in 0..password.len() {
        dp.update(password);
    }
    let dp: [u8; 32] = dp.finalize().into();
    let mut p = Vec::with_capacity(password.len());
    for i in 0..password.len() {
        p.push(dp[i % 32]);
    }
    let mut ds = Sha256::new();
    for _ in 0..16 + usize::from(a[0]) {
        ds.update(salt);
    }
    let ds: [u8; 32] = ds.finalize().into();
    let s: Vec<u8> = (0..salt.len()).map(|i| ds[i % 32]).collect();
    let mut c = a;
    for i in 0..rounds {
        let mut h = Sha256::new();
        if i % 2 == 1 {
            h.update(&p);
        } else {
            h.update(c);
        }
        if i % 3 != 0 {
            h.update(&s);
        }
        if i % 7 != 0 {
            h.update(&p);
        }
        if i % 2 == 1 {
            h.update(c);
        } else {
            h.update(&p);
        }
        c = h.finalize().into();
    }
    // The byte order of the spec's final encoding.
    const ORDER: [(usize, usize, usize); 10] = [
        (0, 10, 20),
        (21, 1, 11),
        (12, 22, 2),
        (3, 13, 23),
        (24, 4, 14),
        (15, 25, 5),
        (6, 16, 26),
        (27, 7, 17),
        (18, 28, 8),
        (9, 19, 29),
    ];
    let mut out = [0u8; 43];
    let mut o = 0;
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out[o] = B64[(v & 63) as usize];
            o += 1;
            v >>= 6;
        }
    };
    for (x, y, z) in ORDER {
        put(
            u32::from(c[x]) << 16 | u32::from(c[y]) << 8 | u32::from(c[z]),
            4,
        );
    }
    put(u32::from(c[31]) << 8 | u32::from(c[30]), 3);
    out
}

/// A MySQL caching_sha2_password stored credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha2Crypt {
    pub rounds: u32,
    pub salt: Vec<u8>,
    pub hash: [u8; 43],
}

impl Sha2Crypt {
    /// Parses `$A$005$` + 20-byte salt + 43-char hash.
    pub fn parse(s: &str) -> Option<Sha2Crypt> {
        let b = s.as_bytes();
        if b.len() != 7 + 20 + 43 || &b[..3] != b"$A$" || b[6] != b'$' {
            return None;
        }
        let count: u32 = std::str::from_utf8(&b[3..6]).ok()?.parse().ok()?;
        if count == 0 || count > 999 {
            return None;
        }
        let mut hash = [0u8; 43];
        hash.copy_from_slice(&b[27..]);
        Some(Sha2Crypt {
            rounds: count * 1000,
            salt: b[7..27].to_vec(),
            hash,
        })
    }

    pub fn verify(&self, password: &[u8]) -> bool {
        crate::codec::auth::constant_time_eq(
            &sha256_crypt(password, &self.salt, self.rounds),
            &self.hash,
        )
    }

    /// A new credential for `password` (salt from the OS's random source).
    pub fn generate(password: &[u8]) -> String {
        let mut salt = [0u8; 20];
        let _ = getrandom::getrandom(&mut salt);
        for b in &mut salt {
            *b = B64[usize::from(*b) % 64];
        }
        let hash = sha256_crypt(password, &salt, 5000);
        format!(
            "$A$005${}{}",
            String::from_utf8_lossy(&salt),
            String::from_utf8_lossy(&hash)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_glibc_crypt() {
        // Python's crypt.crypt (glibc) for the same inputs.
        assert_eq!(
            &sha256_crypt(b"Hello world!", b"saltstring", 5000),
            b"5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
        );
        assert_eq!(
            &sha256_crypt(b"Hello world!", b"saltstringsaltst", 10000),
            b"3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"
        );
        assert_eq!(
            &sha256_crypt(b"app", b"0123456789abcdef", 5000),
            b"D5T0PZrER2MHOi15TMnhitkmdCvPKjljt.1jcsuSky/"
        );
        assert_eq!(
            &sha256_crypt(
                b"a much longer password that exceeds thirty-two bytes",
                b"ABCDEFGHIJKLMNOP",
                5000
            ),
            b"O3sV1xlAFHnUz3MlOydxPAqXOzFcInjLlPvsoNx/9RB"
        );
    }

    #[test]
    fn mysql_format_round_trip() {
        let s = Sha2Crypt::generate(b"s3cret");
        let c = Sha2Crypt::parse(&s).unwrap();
        assert_eq!(c.rounds, 5000);
        assert!(c.verify(b"s3cret"));
        assert!(!c.verify(b"s3creT"));
        assert!(Sha2Crypt::parse("$A$005$short").is_none());
        assert!(Sha2Crypt::parse(&s.replace("$A$005", "$A$000")).is_none());
    }
}
