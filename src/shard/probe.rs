//! The active health probe: one task per backend, on shard 0 of each process, feeding
//! [`crate::backend::health::Tracker`] and publishing what it decides (and `read_only`) in the
//! process's registry, where every shard's router reads it.
//!
//! A probe keeps one connection to its backend (as `health.user`, by default the first account) and, every
//! `health.interval_ms`, reads `@@global.read_only` over it (a round trip through the server's
//! SQL layer: a frozen server fails it, a killed one resets it). A failed probe drops the
//! connection; the next one reconnects, and a refused connect is certain evidence. After a
//! failure the next probe comes sooner (a quarter of the interval), so a dead backend is down
//! well within a second: kill -9 (reset, then refused) in about one interval; SIGSTOP (no answer)
//! after two probe timeouts. Failures live traffic saw ([`Backend::note_failure`]) are taken as
//! evidence at the next turn.
//!
//! With worker processes, only worker 0 probes: it publishes on the instance's health board and
//! the other workers follow it (see [`crate::backend::board`]), probing for themselves only
//! while its heartbeat is stale (worker 0 restarting).
//!
//! The first good probe of a backend, and the first after each reconnect (a restart may have
//! upgraded it; a name may point elsewhere), also learns the backend's catalog the way start-up
//! does ([`crate::bootstrap::probe`], on a helper thread: it is blocking code) and compares it
//! with what the instance runs with ([`crate::backend::compat`]). A backend that differs in a
//! way that matters is published `incompatible` (never served) with the differences as its
//! reason, and logged once at WARN; one whose catalog cannot be read counts as a failed probe
//! (not admitted unchecked). It is checked again at its next reconnect.

use super::Shard;
use crate::backend::compat;
use crate::backend::conn::BackendConn;
use crate::backend::health::{Evidence, Health, Tracker};
use crate::backend::registry::Backend;
use crate::backend::router::Admin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Watches the registry for backends to probe (the configured ones at once, added ones as they
/// come). Runs on shard 0 until shutdown.
pub async fn run(shard: Rc<Shard>) {
    let mut probing = 0usize;
    let started = Instant::now();
    while !shard.shared.is_shutting_down() {
        let all = shard.shared.backends.snapshot();
        for b in &all[probing..] {
            // A backend listed at start was checked by the start-up; one added later is down
            // until its probes show it works.
            let added = started.elapsed() > Duration::from_millis(shard.cfg().health.interval_ms);
            glommio::spawn_local(probe_backend(shard.clone(), b.clone(), added)).detach();
        }
        probing = all.len();
        glommio::timer::sleep(Duration::from_millis(shard.cfg().health.interval_ms)).await;
    }
}

async fn probe_backend(shard: Rc<Shard>, b: Arc<Backend>, added: bool) {
    let mut t = shard.cfg().health.thresholds();
    let mut tracker = if added {
        Tracker::unknown(&t)
    } else {
        Tracker::new(&t)
    };
    b.set_health(tracker.health());
    let mut conn: Option<BackendConn> = None;
    // With worker processes, worker 0 probes for all (see `backend::board`); the others follow
    // what it publishes while its heartbeat is fresh.
    let board = shard.shared.board.as_ref();
    let publisher = board.filter(|_| shard.shared.worker == 0);
    let follower = board.filter(|_| shard.shared.worker != 0);
    let mut seen_gen = b.addr_gen();
    // The catalog is checked at the next good probe (the first, and after each reconnect).
    let mut check_due = true;
    // The refusal last logged (a WARN once per distinct refusal, not per probe).
    let mut warned: Option<Arc<str>> = None;
    let mut check_failed_warned = false;
    loop {
        if shard.shared.is_shutting_down() || b.admin() == Admin::Removed {
            return;
        }
        // `[health]` may be reloaded.
        let live = shard.cfg();
        t = live.health.thresholds();
        let interval = Duration::from_millis(live.health.interval_ms);
        let timeout = Duration::from_millis(live.health.timeout_ms);
        let fresh_ms = (interval * 4 + timeout).as_millis() as u64 + 500;
        if let Some(board) = follower {
            if let Some(p) = board.read(b.id, &b.address, fresh_ms) {
                conn = None;
                for _ in 0..b.take_passive().0 {
                    board.note_passive(b.id);
                }
                b.set_health(p.health);
                if p.health != Health::Incompatible {
                    b.set_refusal(None);
                }
                // Worker 0 checks catalogs; when this worker probes for itself again, it
                // checks at its first good probe.
                check_due = true;
                if let Some(w) = p.writable {
                    b.set_writable(w);
                }
                b.set_read_ok(p.read_ok);
                b.set_lag_ms(p.lag_ms);
                if let Some(pos) = board.read_pos(b.id) {
                    b.set_pos(pos, p.writable == Some(true), Instant::now());
                }
                glommio::timer::sleep(interval / 4).await;
                continue;
            }
        }
        let began = Instant::now();
        let gen = b.addr_gen();
        if gen != seen_gen {
            // The backend's name moved: what was seen of the old address says nothing of the
            // new one (down, it comes back after its good probes, without a backoff).
            seen_gen = gen;
            if tracker.health() == Health::Down {
                tracker = Tracker::unknown(&t);
            }
        }
        let (mut passive, refused) = b.take_passive();
        if let Some(board) = publisher {
            passive += board.take_passive(b.id) as u32;
        }
        if passive > 0 {
            let e = if refused {
                Evidence::Refused
            } else {
                Evidence::Failed
            };
            tracker.observe(e, began, &t);
        }
        let outcome = glommio::timer::timeout(timeout, async {
            Ok(probe_once(&shard, &b, &mut conn, timeout).await)
        })
        .await;
        let mut reconnected = false;
        let mut evidence = match outcome {
            Ok(Ok(seen)) => {
                reconnected = seen.reconnected;
                b.set_writable(!seen.read_only);
                let now = Instant::now();
                if let Some(pos) = seen.pos {
                    b.set_pos(pos, !seen.read_only, now);
                }
                b.set_read_ok(seen.read_only && seen.replicating && within_lag(&shard, &b, now));
                b.set_lag_ms(if seen.read_only {
                    lag_of(&shard, &b, now)
                } else {
                    0
                });
                b.set_last_error(None);
                Evidence::ProbeOk
            }
            Ok(Err((refused, why))) => {
                conn = None;
                b.set_read_ok(false);
                b.set_last_error(Some(Arc::from(why)));
                if refused {
                    Evidence::Refused
                } else {
                    Evidence::Failed
                }
            }
            Err(_) => {
                conn = None;
                b.set_read_ok(false);
                b.set_last_error(Some(Arc::from(format!(
                    "no answer to the probe within {} ms",
                    timeout.as_millis()
                ))));
                Evidence::Failed
            }
        };
        // An instance that learned no server at start (it presents a default identity) has
        // nothing to compare a catalog with: every backend is admitted unchecked.
        if evidence == Evidence::ProbeOk
            && (check_due || reconnected)
            && !shard.shared.server.is_fallback()
        {
            check_due = true;
            // A catalog read only in part (a query timed out under load, say) is not judged:
            // its defaults would look like differences. Checked again at the next probe.
            let learned = learn_catalog(&shard, &b).await.and_then(|t| {
                if t.unread.is_empty() {
                    Ok(t)
                } else {
                    Err(format!("read only in part: no {}", t.unread.join(", no ")))
                }
            });
            match learned {
                Ok(theirs) => {
                    check_due = false;
                    check_failed_warned = false;
                    let diffs = compat::compare(&shard.shared.server, &theirs);
                    let refusal = (!diffs.is_empty()).then(|| Arc::from(compat::summary(&diffs)));
                    if refusal != warned {
                        match &refusal {
                            Some(r) => warn!(
                                backend = %b.address,
                                version = %String::from_utf8_lossy(&theirs.version),
                                instance = %String::from_utf8_lossy(&shard.shared.server.version),
                                reason = %r,
                                "backend incompatible with the server sluice learned at start: not admitted"
                            ),
                            None => info!(backend = %b.address, "backend compatible again"),
                        }
                        warned = refusal.clone();
                    }
                    b.set_refusal(refusal);
                }
                Err(e) => {
                    // Not checked, not admitted: a failed probe (checked again at the next).
                    if !check_failed_warned {
                        warn!(backend = %b.address, error = %e, "cannot read the backend's catalog to check it");
                        check_failed_warned = true;
                    }
                    conn = None;
                    evidence = Evidence::Failed;
                }
            }
        }
        b.probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if evidence != Evidence::ProbeOk {
            // A named backend that fails may have moved: resolve it again at once.
            b.evict.store(true, std::sync::atomic::Ordering::Relaxed);
            b.probe_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let before = b.health();
        let tracked = tracker.observe(evidence, Instant::now(), &t);
        // A refused backend that answers is `incompatible`; down, it is down.
        let now = if tracked != Health::Down && b.refusal().is_some() {
            Health::Incompatible
        } else {
            tracked
        };
        b.set_health(now);
        if let Some(board) = publisher {
            board.publish(
                b.id,
                &b.address,
                crate::backend::board::Published {
                    health: now,
                    writable: b.writable(),
                    read_ok: b.read_ok(),
                    lag_ms: b.lag_ms(),
                },
            );
            board.publish_pos(b.id, b.pos().as_ref());
        }
        if now != before {
            match now {
                Health::Up => {
                    info!(backend = %b.address, "backend up")
                }
                // Logged when the check found it.
                Health::Incompatible => {}
                h => {
                    warn!(backend = %b.address, state = h.name(), evidence = ?evidence, "backend {}", h.name())
                }
            }
        }
        let next = if evidence == Evidence::ProbeOk {
            interval
        } else {
            interval / 4
        };
        let spent = began.elapsed();
        if spent < next {
            glommio::timer::sleep(next - spent).await;
        }
    }
}

/// What one probe saw.
struct Seen {
    /// The probe opened a new connection (the first, or after a failure, a move, a RECONNECT).
    reconnected: bool,
    read_only: bool,
    /// `@@gtid_current_pos`.
    pos: Option<crate::backend::gtid::Pos>,
    /// A read-only server replicating (Slave_running ON).
    replicating: bool,
}

/// Is replica `b` (at its position just probed) within `routing.max_replication_lag_ms` of every
/// writable backend? It must have applied the newest position each had that long ago.
fn within_lag(shard: &Shard, b: &Backend, now: Instant) -> bool {
    let Some(pos) = b.pos() else {
        return false;
    };
    let max = Duration::from_millis(shard.cfg().routing.max_replication_lag_ms);
    writable_others(shard, b)
        .iter()
        .all(|p| p.pos_as_of(max, now).is_none_or(|then| pos.covers(&then)))
}

/// The writable backends replica `b` is measured against.
fn writable_others(shard: &Shard, b: &Backend) -> Vec<std::sync::Arc<Backend>> {
    let mut all = shard.shared.backends.snapshot();
    all.retain(|p| p.writable() == Some(true) && p.id != b.id);
    all
}

/// How far behind every writable backend this replica is, in milliseconds (`u32::MAX`: not
/// known, or behind everything kept).
fn lag_of(shard: &Shard, b: &Backend, now: Instant) -> u32 {
    let Some(pos) = b.pos() else {
        return u32::MAX;
    };
    writable_others(shard, b)
        .iter()
        .map(|p| {
            p.applied_age(&pos, now).map_or(u32::MAX, |d| {
                u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
            })
        })
        .max()
        .unwrap_or(0)
}

/// One probe: (re)connects if needed and reads `read_only`, the GTID position and, on a
/// read-only server, whether it replicates. `Err((refused, why))` on failure.
async fn probe_once(
    shard: &Rc<Shard>,
    b: &Backend,
    conn: &mut Option<BackendConn>,
    timeout: Duration,
) -> Result<Seen, (bool, String)> {
    if conn.as_ref().is_some_and(|c| c.gen != b.conn_gen()) {
        // The backend's name moved (probe the new address), or RECONNECT.
        *conn = None;
    }
    let reconnected = conn.is_none();
    if reconnected {
        let mut spec = shard
            .pool(shard.shared.users().first_current(), b.id)
            .spec()
            .clone();
        spec.timeout = timeout;
        let gen;
        (spec.address, gen) = b.addr();
        let live = shard.cfg();
        let h = &live.health;
        if let Some(user) = &h.user {
            spec.user = user.as_bytes().to_vec();
            spec.password = h.password.clone().unwrap_or_default().into_bytes();
        }
        match BackendConn::connect(&spec, shard.fresh.clone()).await {
            Ok(mut c) => {
                c.gen = gen;
                *conn = Some(c)
            }
            Err(e) => return Err((e.is_refused(), e.to_string())),
        }
    }
    let c = conn.as_mut().expect("connected above");
    let row = c
        .query_row("SELECT @@global.read_only, @@global.gtid_current_pos")
        .await
        .map_err(|e| (false, e.to_string()))?;
    let read_only = row
        .first()
        .cloned()
        .flatten()
        .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("OFF"));
    let pos = row
        .get(1)
        .cloned()
        .flatten()
        .and_then(|p| crate::backend::gtid::Pos::parse(&p));
    let replicating = read_only
        && c.query_rows("SHOW GLOBAL STATUS LIKE 'Slave_running'")
            .await
            .map_err(|e| (false, e.to_string()))?
            .first()
            .and_then(|r| r.get(1).cloned().flatten())
            .is_some_and(|v| v.eq_ignore_ascii_case("ON"));
    Ok(Seen {
        reconnected,
        read_only,
        pos,
        replicating,
    })
}

/// Learns backend `b`'s catalog as start-up does ([`crate::bootstrap::probe`], blocking, so on a
/// helper thread; this task waits without blocking the shard), with the probe's account.
async fn learn_catalog(
    shard: &Rc<Shard>,
    b: &Backend,
) -> Result<crate::bootstrap::ServerInfo, String> {
    let spec = shard
        .pool(shard.shared.users().first_current(), b.id)
        .spec()
        .clone();
    let live = shard.cfg();
    let (user, password) = match &live.health.user {
        Some(u) => (u.clone(), live.health.password.clone().unwrap_or_default()),
        None => (
            String::from_utf8_lossy(&spec.user).into_owned(),
            String::from_utf8_lossy(&spec.password).into_owned(),
        ),
    };
    let address = b.addr().0.to_string();
    let timeout = Duration::from_millis(live.pool.connect_timeout_ms);
    let tls = b.tls.clone();
    let reply = super::Reply1::default();
    let r = reply.clone();
    std::thread::Builder::new()
        .name("sluice-catalog".into())
        .spawn(move || {
            r.send(crate::bootstrap::probe(
                &address, &user, &password, timeout, &tls,
            ))
        })
        .map_err(|e| format!("catalog thread: {e}"))?;
    reply.recv().await
}
