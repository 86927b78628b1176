//! MariaDB GTID positions, compared: `domain-server-seq` lists as `@@gtid_binlog_pos`,
//! `@@gtid_slave_pos` and `@@last_gtid` give them. With `gtid_strict_mode` a domain's sequence
//! numbers only grow, so a replica has applied a GTID when its position's sequence for that
//! domain is at least the GTID's. Pure; never panics.

/// One GTID of a list (`d-s-n`, trimmed): its domain, its server id as written, and its
/// sequence number; `None` unless it has three parts and the first and last are numbers.
pub fn split(part: &str) -> Option<(u32, &str, u64)> {
    let mut f = part.split('-');
    let (Some(d), Some(server), Some(n), None) = (f.next(), f.next(), f.next(), f.next()) else {
        return None;
    };
    Some((d.parse().ok()?, server, n.parse().ok()?))
}

/// A position: the highest sequence number seen per replication domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pos(Vec<(u32, u64)>);

impl Pos {
    /// Parses `d-s-n[,d-s-n…]` (spaces ignored); `None` for anything malformed. Empty text is
    /// the empty position.
    pub fn parse(text: &str) -> Option<Pos> {
        let mut out: Vec<(u32, u64)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (d, _server, n) = split(part)?;
            match out.iter_mut().find(|(x, _)| *x == d) {
                Some(e) => e.1 = e.1.max(n),
                None => out.push((d, n)),
            }
        }
        Some(Pos(out))
    }

    /// Has a server at this position applied everything of `other`?
    pub fn covers(&self, other: &Pos) -> bool {
        other
            .0
            .iter()
            .all(|(d, n)| self.0.iter().any(|(e, m)| e == d && m >= n))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each replication domain's highest sequence number.
    pub fn domains(&self) -> &[(u32, u64)] {
        &self.0
    }

    /// The position with these domains' highest sequence numbers.
    pub fn from_domains(domains: Vec<(u32, u64)>) -> Pos {
        Pos(domains)
    }

    /// Raises each of this position's domains to `other`'s where `other` is ahead (a domain
    /// only `other` has is added): what a server that reached both has reached.
    pub fn merge(&mut self, other: &Pos) {
        for &(d, n) in &other.0 {
            match self.0.iter_mut().find(|(e, _)| *e == d) {
                Some((_, m)) => *m = (*m).max(n),
                None => self.0.push((d, n)),
            }
        }
    }
}

/// Two GTID lists (`d-s-n[,…]`) as one that a server has applied once it has applied both: per
/// domain the GTID with the highest sequence number, in order of first appearance (text fit for
/// `MASTER_GTID_WAIT`, which takes one GTID per domain). Malformed parts are left out.
pub fn merge_text(a: &str, b: &str) -> String {
    let mut out: Vec<(u32, u64, &str)> = Vec::new();
    for part in a.split(',').chain(b.split(',')).map(str::trim) {
        let Some(Pos(parsed)) = Pos::parse(part) else {
            continue;
        };
        let Some(&(d, n)) = parsed.first() else {
            continue;
        };
        match out.iter_mut().find(|(x, ..)| *x == d) {
            Some(e) if e.1 >= n => {}
            Some(e) => *e = (d, n, part),
            None => out.push((d, n, part)),
        }
    }
    out.iter().map(|e| e.2).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_merge_per_domain() {
        let p = |s: &str| Pos::parse(s).unwrap();
        // (known, reached, merged)
        let cases = [
            ("0-1-10", "0-1-12", "0-1-12"),
            ("0-1-12", "0-1-10", "0-1-12"),
            ("0-1-10", "1-3-5", "0-1-10,1-3-5"),
            ("0-1-10,1-3-5", "1-3-9", "0-1-10,1-3-9"),
            ("", "0-1-1", "0-1-1"),
            ("0-1-4", "", "0-1-4"),
        ];
        for (known, reached, merged) in cases {
            let mut k = p(known);
            k.merge(&p(reached));
            assert!(
                k.covers(&p(merged)) && p(merged).covers(&k),
                "{known} + {reached}"
            );
            assert!(k.covers(&p(reached)) && k.covers(&p(known)));
        }
    }

    #[test]
    fn positions_compare_per_domain() {
        let p = |s: &str| Pos::parse(s).unwrap();
        let cases = [
            ("0-1-10", "0-1-10", true),
            ("0-1-11", "0-1-10", true),
            ("0-1-9", "0-1-10", false),
            // Another server id in the same domain (after a failover): the sequence decides.
            ("0-2-12", "0-1-10", true),
            ("0-1-10,1-3-5", "1-3-5", true),
            ("0-1-10", "1-3-5", false),
            ("0-1-10", "", true),
            ("", "0-1-1", false),
            (" 0-1-7 , 0-1-3 ", "0-1-6", true),
        ];
        for (have, want, covered) in cases {
            assert_eq!(p(have).covers(&p(want)), covered, "{have} covers {want}");
        }
        for bad in ["x", "0-1", "0-1-2-3", "0-1-x", "-1-2"] {
            assert_eq!(Pos::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn gtid_lists_merge_as_text() {
        // (a, b, merged)
        let cases = [
            ("", "", ""),
            ("0-1-5", "", "0-1-5"),
            ("", "0-1-5", "0-1-5"),
            ("0-1-5", "0-1-9", "0-1-9"),
            ("0-1-9", "0-1-5", "0-1-9"),
            // Another server id in the same domain (after a failover): the sequence decides.
            ("0-1-9", "0-2-10", "0-2-10"),
            ("0-1-9", "1-3-2", "0-1-9,1-3-2"),
            ("0-1-9,1-3-2", "1-3-4, 0-1-3", "0-1-9,1-3-4"),
            ("x", "0-1-2", "0-1-2"),
        ];
        for (a, b, merged) in cases {
            assert_eq!(merge_text(a, b), merged, "{a} + {b}");
        }
    }
}
