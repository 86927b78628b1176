//! Backend names, resolved again and again: a backend address may be `name:port`. sluice
//! re-resolves each name every `dns.ttl_ms` (or sooner when the name server's own TTL is
//! shorter), at once after a connect to it failed, and moves the backend to the new address when
//! the old one is no longer among the answers (RDS/Aurora-style failover behind DNS: the name
//! moves, the port stays). Pooled connections to the old address are retired as they come back.
//!
//! Names resolve through the system resolver (`getaddrinfo`), or, with `dns.nameserver`, by
//! asking that server directly over UDP (A and AAAA), honouring the answers' TTL. The message
//! codec here is pure and never panics on any input (fuzzed: `fuzz/fuzz_targets/dns.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;

/// A DNS query for `name` (type `qtype`, class IN, recursion desired) with id `id`. `None` when
/// the name cannot be written as labels (an empty label, a label over 63 bytes, over 253 bytes).
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    Some(q)
}

/// What an answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    /// The smallest TTL of the address records (seconds); 0 without any.
    pub ttl: u32,
}

/// Reads a name at `pos` (following compression pointers, bounded); returns the position after
/// it in the message itself.
fn skip_name(m: &[u8], mut pos: usize) -> Result<usize, String> {
    let mut end = None;
    for _ in 0..128 {
        let len = *m.get(pos).ok_or("name runs past the message")?;
        match len {
            0 => return Ok(end.unwrap_or(pos + 1)),
            l if l & 0xc0 == 0xc0 => {
                let lo = *m.get(pos + 1).ok_or("pointer runs past the message")?;
                end.get_or_insert(pos + 2);
                pos = (usize::from(l & 0x3f) << 8) | usize::from(lo);
            }
            l if l & 0xc0 == 0 => pos += 1 + usize::from(l),
            _ => return Err("reserved label type".into()),
        }
    }
    Err("name with too many labels or a pointer loop".into())
}

fn u16_at(m: &[u8], pos: usize) -> Result<u16, String> {
    m.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| "message too short".into())
}

/// Parses the answer to query `id`: its A/AAAA records (CNAMEs are followed by the server; their
/// records are skipped). An error for a malformed message, another id, or an error code.
pub fn parse_answer(m: &[u8], id: u16) -> Result<Answer, String> {
    if m.len() < 12 {
        return Err("message too short".into());
    }
    if u16_at(m, 0)? != id {
        return Err("answer to another query".into());
    }
    let flags = u16_at(m, 2)?;
    if flags & 0x8000 == 0 {
        return Err("not an answer".into());
    }
    match flags & 0x000f {
        0 => {}
        3 => return Err("no such name (NXDOMAIN)".into()),
        rc => return Err(format!("name server error (rcode {rc})")),
    }
    let qd = u16_at(m, 4)?;
    let an = u16_at(m, 6)?;
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(m, pos)? + 4;
    }
    let mut out = Answer {
        addrs: Vec::new(),
        ttl: 0,
    };
    let mut ttl: Option<u32> = None;
    for _ in 0..an {
        pos = skip_name(m, pos)?;
        let ty = u16_at(m, pos)?;
        let class = u16_at(m, pos + 2)?;
        let t = m
            .get(pos + 4..pos + 8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("record runs past the message")?;
        let len = usize::from(u16_at(m, pos + 8)?);
        let data = m
            .get(pos + 10..pos + 10 + len)
            .ok_or("record data runs past the message")?;
        pos += 10 + len;
        let addr = match (ty, class, len) {
            (TYPE_A, 1, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (TYPE_AAAA, 1, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => continue,
        };
        out.addrs.push(addr);
        ttl = Some(ttl.map_or(t, |x| x.min(t)));
    }
    out.ttl = ttl.unwrap_or(0);
    Ok(out)
}

/// Asks `server` for the addresses of `name` (A, then AAAA when there is no A), waiting at most
/// `timeout` for each answer.
pub fn query(server: SocketAddr, name: &str, timeout: Duration) -> Result<Answer, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("dns socket: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| format!("dns socket: {e}"))?;
    sock.connect(server)
        .map_err(|e| format!("dns server {server}: {e}"))?;
    let mut last = Answer {
        addrs: Vec::new(),
        ttl: 0,
    };
    for qtype in [TYPE_A, TYPE_AAAA] {
        let id = (std::process::id() as u16) ^ (qtype << 8) ^ (name.len() as u16);
        let q =
            encode_query(id, name, qtype).ok_or_else(|| format!("{name:?} is not a DNS name"))?;
        sock.send(&q)
            .map_err(|e| format!("dns server {server}: {e}"))?;
        let mut buf = [0u8; 1500];
        // Answers to other ids (late ones) are skipped, a few times at most.
        let answer = (0..4)
            .find_map(|_| match sock.recv(&mut buf) {
                Ok(n) => match parse_answer(&buf[..n], id) {
                    Err(e) if e == "answer to another query" => None,
                    r => Some(r),
                },
                Err(e) => Some(Err(format!("dns server {server}: {e}"))),
            })
            .unwrap_or_else(|| Err("no answer to our query".into()))?;
        if !answer.addrs.is_empty() {
            return Ok(answer);
        }
        last = answer;
    }
    Ok(last)
}

/// The `(name, port)` of a backend address that needs resolving (not `unix:`, not an IP
/// literal).
pub fn name_of(address: &str) -> Option<(&str, u16)> {
    if address.starts_with("unix:") {
        return None;
    }
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!is_literal(host)).then_some((host, port))
}

/// Resolves a backend address now: `unix:/path` and `ip:port` as they are, `name:port` through
/// the configured name server or the system resolver. The addresses (the first preferred) and
/// how long they may be kept (the configured TTL, or the name server's when shorter).
pub fn resolve(
    address: &str,
    cfg: &crate::config::DnsConfig,
) -> Result<(Vec<super::conn::BackendAddr>, Duration), String> {
    use super::conn::BackendAddr;
    let keep = Duration::from_millis(cfg.ttl_ms);
    let Some((name, port)) = name_of(address) else {
        return Ok((vec![BackendAddr::resolve(address)?], keep));
    };
    if cfg.nameserver.is_empty() {
        return Ok((vec![BackendAddr::resolve(address)?], keep));
    }
    let server: SocketAddr = cfg
        .nameserver
        .parse()
        .map_err(|_| format!("dns.nameserver {:?} is not ip:port", cfg.nameserver))?;
    let a = query(server, name, Duration::from_secs(1))
        .map_err(|e| format!("cannot resolve {name}: {e}"))?;
    if a.addrs.is_empty() {
        return Err(format!("{name} resolves to no address"));
    }
    let keep = keep.min(Duration::from_secs(u64::from(a.ttl).max(1)));
    Ok((
        a.addrs
            .into_iter()
            .map(|ip| BackendAddr::Tcp(SocketAddr::new(ip, port)))
            .collect(),
        keep,
    ))
}

/// Re-resolves every named backend of the process on a thread of its own (blocking lookups never
/// touch a shard): when a name's TTL is up, or at once after a connect to it failed
/// ([`super::registry::Backend::evict`]). A backend moves when its current address is no longer
/// among the answers.
pub fn spawn_refresher(shared: std::sync::Arc<crate::shared::Shared>) {
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    let _ = std::thread::Builder::new()
        .name("sluice-dns".into())
        .spawn(move || {
            let mut next: HashMap<u16, Instant> = HashMap::new();
            while !shared.is_shutting_down() {
                std::thread::sleep(Duration::from_millis(100));
                for b in shared.backends.snapshot() {
                    if name_of(&b.address).is_none() {
                        continue;
                    }
                    let now = Instant::now();
                    let due = next.get(&b.id).is_none_or(|t| now >= *t);
                    if !b.evict.swap(false, Ordering::Relaxed) && !due {
                        continue;
                    }
                    match resolve(&b.address, &shared.live().dns) {
                        Ok((addrs, keep)) => {
                            let (current, _) = b.addr();
                            if !addrs.contains(&current) {
                                tracing::info!(backend = %b.address, from = %current, to = %addrs[0], "backend name moved");
                                b.move_to(addrs[0].clone());
                            }
                            next.insert(b.id, now + keep);
                        }
                        Err(e) => {
                            // The old address stays; asked again in a second.
                            if due {
                                tracing::warn!(backend = %b.address, error = %e, "backend name not resolved");
                            }
                            next.insert(b.id, now + Duration::from_secs(1));
                        }
                    }
                }
            }
        });
}

/// Is `host` an IP literal (nothing to resolve)?
pub fn is_literal(host: &str) -> bool {
    host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's answer to `q` with the given records (type, ttl, data), the question echoed,
    /// the first record's name a pointer to the question's.
    fn answer(q: &[u8], rcode: u8, records: &[(u16, u32, &[u8])]) -> Vec<u8> {
        let mut m = q.to_vec();
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (ty, ttl, data) in records {
            m.extend_from_slice(&[0xc0, 12]);
            m.extend_from_slice(&ty.to_be_bytes());
            m.extend_from_slice(&[0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(data.len() as u16).to_be_bytes());
            m.extend_from_slice(data);
        }
        m
    }

    #[test]
    fn queries_are_written_as_labels() {
        let q = encode_query(0x1234, "db.example.", TYPE_A).unwrap();
        assert_eq!(&q[..2], &[0x12, 0x34]);
        assert_eq!(&q[12..], b"\x02db\x07example\x00\x00\x01\x00\x01");
        for bad in ["", ".", "a..b", &"x".repeat(64), &"a.".repeat(130)] {
            assert_eq!(encode_query(1, bad, TYPE_A), None, "{bad:?}");
        }
    }

    #[test]
    fn answers_give_their_addresses_and_smallest_ttl() {
        let q = encode_query(7, "db.test", TYPE_A).unwrap();
        let cname: &[u8] = b"\x03foo\x00";
        let m = answer(
            &q,
            0,
            &[
                (5, 300, cname),
                (TYPE_A, 30, &[127, 0, 0, 2]),
                (TYPE_A, 10, &[127, 0, 0, 3]),
            ],
        );
        assert_eq!(
            parse_answer(&m, 7),
            Ok(Answer {
                addrs: vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()],
                ttl: 10
            })
        );
        assert!(parse_answer(&m, 8).is_err(), "another id");
        let nx = answer(&q, 3, &[]);
        assert!(parse_answer(&nx, 7).unwrap_err().contains("NXDOMAIN"));
        let aaaa = answer(
            &q,
            0,
            &[(
                TYPE_AAAA,
                60,
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            )],
        );
        assert_eq!(
            parse_answer(&aaaa, 7).unwrap().addrs,
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        // Every truncation and a pointer loop are errors, never a panic.
        for n in 0..m.len() {
            assert!(parse_answer(&m[..n], 7).is_err(), "prefix {n}");
        }
        let mut looped = m.clone();
        looped[12] = 0xc0;
        looped[13] = 12;
        assert!(parse_answer(&looped, 7).is_err());
    }

    #[test]
    fn literals_need_no_resolving() {
        assert!(is_literal("127.0.0.1"));
        assert!(is_literal("[::1]"));
        assert!(!is_literal("db.example"));
        assert_eq!(name_of("db.example:3306"), Some(("db.example", 3306)));
        assert_eq!(name_of("127.0.0.1:3306"), None);
        assert_eq!(name_of("[::1]:3306"), None);
        assert_eq!(name_of("unix:/run/my.sock"), None);
    }
}
