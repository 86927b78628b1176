//! Which backend serves a checkout: pure ranking of the candidates a shard sees now.
//!
//! Every checkout of a session that holds no backend asks [`rank`] for an ordered list, so a
//! transaction-mode client is served by whichever backend is best *now*, and a checkout whose
//! first choice cannot connect moves on to the next without the client noticing.
//!
//! Eligible (for the statements every client sends; reads on replicas are a later issue's):
//! - the operator's intent is `Active` (not draining, not in maintenance) and health is `Up` or
//!   `Suspect` (not `Down`, not `Incompatible`);
//! - a `primary` or `replica` backend only while it is writable (`read_only = OFF`, as the
//!   probe last saw it; not before its first probe): writes go only to a writable server, and
//!   when an orchestrator promotes a replica, it becomes eligible at the next probe;
//! - an `any` backend (equivalent peers: Galera nodes, SQL nodes) whatever `read_only` says,
//!   but writable ones first.
//!
//! Order: `Up` before `Suspect`; writable before not; then the least outstanding work per unit of
//! weight (connections in use on this shard ÷ weight); then not a backend whose idle connections
//! all have other settings (a replay); ties rotate (`turn`) so equal backends share evenly.

/// An operator's intent for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Admin {
    Active = 0,
    /// No new checkouts; what it holds finishes (then it is drained).
    Draining = 1,
    /// Out of service: no new checkouts, and not probed into use.
    Maintenance = 2,
    /// Removed from the configuration: never used again (its id is not reused).
    Removed = 3,
}

impl Admin {
    pub fn from_u8(v: u8) -> Admin {
        match v {
            0 => Admin::Active,
            1 => Admin::Draining,
            2 => Admin::Maintenance,
            _ => Admin::Removed,
        }
    }
}

/// A backend's configured role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Equivalent peers: any of them may serve anything.
    #[default]
    Any,
    Primary,
    Replica,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Any => "any",
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

use super::health::Health;

/// What the router knows of one backend at a checkout.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub id: u16,
    pub role: Role,
    pub weight: u32,
    pub admin: Admin,
    pub health: Health,
    /// `read_only = OFF` as last probed (None: not known yet).
    pub writable: Option<bool>,
    /// Connections of the checkout's pool in use on this shard.
    pub busy: usize,
    /// A replica that may answer routed reads (read-only, replicating, within the lag bound).
    pub read_ok: bool,
    /// Replication lag at the last probe, milliseconds (0 for a writable backend, `u32::MAX`
    /// not known): routed reads go to the freshest replicas first, by steps of
    /// [`LAG_STEP_MS`], then by load.
    pub lag_ms: u32,
    /// The pool has idle connections, but none with the session's settings (using one costs a
    /// replay). A pool with no idle connection is not penalised: a backend just added or back
    /// from a failure must warm up, or it would never get work while another has matching ones.
    pub mismatch: bool,
}

/// May this backend serve a checkout at all?
pub fn eligible(c: &Candidate) -> bool {
    c.admin == Admin::Active
        && c.health.serves()
        && (c.role == Role::Any || c.writable == Some(true))
}

/// May this backend serve a routed read (read routing to replicas)?
pub fn eligible_for_reads(c: &Candidate) -> bool {
    c.admin == Admin::Active && c.health.serves() && c.read_ok
}

/// Fills `out` with the replicas that may serve a routed read, best first (same order as
/// [`rank`]).
pub fn rank_reads(cands: &[Candidate], turn: usize, out: &mut Vec<u16>) {
    rank_with(cands, turn, out, eligible_for_reads)
}

/// Fills `out` with the eligible candidates' ids, best first. `turn` rotates ties. Allocates
/// nothing once `out` has grown to the number of backends (it is the caller's, reused).
pub fn rank(cands: &[Candidate], turn: usize, out: &mut Vec<u16>) {
    rank_with(cands, turn, out, eligible)
}

/// Should a session holding backend `current` for good (session mode) move to another between
/// its commands, so that a backend added under load takes its share? Yes when another eligible,
/// healthy backend, no less preferred by the ranking (writable when `current` is), would be
/// less loaded per unit of weight with the session than `current` is with it
/// (`(busy + 1) / weight` against `busy / weight`, `busy` counting the session on `current`):
/// the checkout that follows the move then ranks it first. Each move narrows the gap, so sessions
/// stop moving once loads are within one session of each other: about half of the difference
/// moves, never everyone. A `current` that is not eligible is the drain's business, not this.
pub fn better_elsewhere(cands: &[Candidate], current: u16) -> bool {
    let Some(cur) = cands.iter().find(|c| c.id == current) else {
        return false;
    };
    if !eligible(cur) || cur.busy == 0 {
        return false;
    }
    let load = |busy: usize, weight: u32| busy as u64 * 1_000_000 / u64::from(weight.max(1));
    let here = load(cur.busy, cur.weight);
    cands.iter().any(|c| {
        c.id != current
            && eligible(c)
            && c.health == Health::Up
            && (c.writable == Some(false)) <= (cur.writable == Some(false))
            && load(c.busy + 1, c.weight) < here
    })
}

/// Lags within one step are alike to the router (a probe's resolution is its interval).
pub const LAG_STEP_MS: u32 = 100;

fn rank_with(cands: &[Candidate], turn: usize, out: &mut Vec<u16>, ok: fn(&Candidate) -> bool) {
    out.clear();
    let n = cands.len().max(1);
    let key = |i: usize| {
        let c = &cands[i];
        // Busy per unit of weight (weights are 1..=1000), in millionths.
        let load = (c.busy as u64 + 1) * 1_000_000 / u64::from(c.weight.max(1));
        (
            c.health as u8,
            c.writable == Some(false),
            c.lag_ms / LAG_STEP_MS,
            load,
            c.mismatch,
            (i + n - turn % n) % n,
        )
    };
    out.extend(
        (0..cands.len())
            .filter(|&i| ok(&cands[i]))
            .map(|i| i as u16),
    );
    out.sort_unstable_by_key(|&i| key(usize::from(i)));
    for i in out.iter_mut() {
        *i = cands[usize::from(*i)].id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    fn c(id: u16) -> Candidate {
        Candidate {
            id,
            role: Role::Any,
            weight: 1,
            admin: Admin::Active,
            health: Up,
            writable: Some(true),
            busy: 0,
            mismatch: false,
            read_ok: false,
            lag_ms: 0,
        }
    }

    fn ranked(cands: &[Candidate], turn: usize) -> Vec<u16> {
        let mut out = Vec::new();
        rank(cands, turn, &mut out);
        out
    }

    #[test]
    fn reads_go_only_to_replicas_that_may_answer_them() {
        let replica = |id, read_ok, busy| Candidate {
            role: Role::Replica,
            writable: Some(false),
            read_ok,
            busy,
            ..c(id)
        };
        let mut out = Vec::new();
        rank_reads(
            &[
                c(0),
                replica(1, true, 3),
                replica(2, false, 0),
                replica(3, true, 1),
                Candidate {
                    health: Down,
                    ..replica(4, true, 0)
                },
            ],
            0,
            &mut out,
        );
        assert_eq!(out, vec![3, 1]);
    }

    #[test]
    fn reads_go_to_the_freshest_replica_first() {
        let replica = |id, lag_ms, busy| Candidate {
            role: Role::Replica,
            writable: Some(false),
            read_ok: true,
            lag_ms,
            busy,
            ..c(id)
        };
        let cases: &[(&str, Vec<Candidate>, Vec<u16>)] = &[
            (
                "a replica two seconds behind comes after a caught-up one, however idle",
                vec![replica(1, 2000, 0), replica(2, 0, 5)],
                vec![2, 1],
            ),
            (
                "lags within one step are alike: the less busy first",
                vec![replica(1, 30, 0), replica(2, 90, 5)],
                vec![1, 2],
            ),
            (
                "an unknown lag comes last",
                vec![replica(1, u32::MAX, 0), replica(2, 400, 9)],
                vec![2, 1],
            ),
        ];
        for (name, cands, want) in cases {
            let mut out = Vec::new();
            rank_reads(cands, 0, &mut out);
            assert_eq!(&out, want, "{name}");
        }
    }

    #[test]
    fn moving_for_balance() {
        let busy = |id, busy| Candidate { busy, ..c(id) };
        let cases: Vec<(&str, Vec<Candidate>, bool)> = vec![
            (
                "a backend just added, idle",
                vec![busy(0, 6), busy(1, 0)],
                true,
            ),
            (
                "within one session of each other",
                vec![busy(0, 3), busy(1, 2)],
                false,
            ),
            (
                "two apart: one move evens them",
                vec![busy(0, 3), busy(1, 1)],
                true,
            ),
            ("alone", vec![busy(0, 9)], false),
            (
                "the other is suspect",
                vec![
                    busy(0, 6),
                    Candidate {
                        health: Health::Suspect,
                        ..busy(1, 0)
                    },
                ],
                false,
            ),
            (
                "the other is draining",
                vec![
                    busy(0, 6),
                    Candidate {
                        admin: Admin::Draining,
                        ..busy(1, 0)
                    },
                ],
                false,
            ),
            (
                "weights: 4 on weight 1 against 7 on weight 2 (3.5): one more there would make it 4",
                vec![
                    busy(0, 4),
                    Candidate {
                        weight: 2,
                        ..busy(1, 7)
                    },
                ],
                false,
            ),
            (
                "weights: 4 on weight 1 against 5 on weight 2 (2.5)",
                vec![
                    busy(0, 4),
                    Candidate {
                        weight: 2,
                        ..busy(1, 5)
                    },
                ],
                true,
            ),
            (
                "not to a read-only peer from a writable one",
                vec![
                    busy(0, 6),
                    Candidate {
                        writable: Some(false),
                        ..busy(1, 0)
                    },
                ],
                false,
            ),
            (
                "a primary moves only to a writable backend",
                vec![
                    Candidate {
                        role: Role::Primary,
                        ..busy(0, 6)
                    },
                    Candidate {
                        role: Role::Replica,
                        writable: Some(false),
                        ..busy(1, 0)
                    },
                ],
                false,
            ),
        ];
        for (name, cands, want) in cases {
            assert_eq!(better_elsewhere(&cands, 0), want, "{name}");
        }
        // A current backend that is leaving, or unknown: not this decision's business.
        let leaving = [
            Candidate {
                admin: Admin::Draining,
                ..busy(0, 6)
            },
            busy(1, 0),
        ];
        assert!(!better_elsewhere(&leaving, 0));
        assert!(!better_elsewhere(&leaving, 7));
    }

    #[test]
    fn ranking() {
        let cases: Vec<(&str, Vec<Candidate>, usize, Vec<u16>)> = vec![
            (
                "equal backends rotate (turn 0)",
                vec![c(0), c(1), c(2)],
                0,
                vec![0, 1, 2],
            ),
            (
                "equal backends rotate (turn 1)",
                vec![c(0), c(1), c(2)],
                1,
                vec![1, 2, 0],
            ),
            (
                "equal backends rotate (turn 5)",
                vec![c(0), c(1), c(2)],
                5,
                vec![2, 0, 1],
            ),
            (
                "down, draining, maintenance and removed are not candidates",
                vec![
                    Candidate {
                        health: Down,
                        ..c(0)
                    },
                    Candidate {
                        admin: Admin::Draining,
                        ..c(1)
                    },
                    Candidate {
                        admin: Admin::Maintenance,
                        ..c(2)
                    },
                    Candidate {
                        admin: Admin::Removed,
                        ..c(3)
                    },
                    c(4),
                ],
                0,
                vec![4],
            ),
            (
                "suspect after every up, however idle",
                vec![
                    Candidate {
                        health: Suspect,
                        ..c(0)
                    },
                    Candidate { busy: 50, ..c(1) },
                ],
                0,
                vec![1, 0],
            ),
            (
                "least busy first",
                vec![Candidate { busy: 3, ..c(0) }, Candidate { busy: 1, ..c(1) }],
                0,
                vec![1, 0],
            ),
            (
                "weight divides the load (3 busy of weight 4 beats 1 busy of weight 1)",
                vec![
                    Candidate { busy: 1, ..c(0) },
                    Candidate {
                        busy: 3,
                        weight: 4,
                        ..c(1)
                    },
                ],
                0,
                vec![1, 0],
            ),
            (
                "idle connections all of other settings lose a tie before the rotation",
                vec![
                    Candidate {
                        mismatch: true,
                        ..c(0)
                    },
                    c(1),
                ],
                0,
                vec![1, 0],
            ),
            (
                "a read-only primary or replica is not a candidate; a read-only peer is, last",
                vec![
                    Candidate {
                        role: Role::Primary,
                        writable: Some(false),
                        ..c(0)
                    },
                    Candidate {
                        role: Role::Replica,
                        writable: Some(false),
                        ..c(1)
                    },
                    Candidate {
                        writable: Some(false),
                        ..c(2)
                    },
                    Candidate { busy: 9, ..c(3) },
                ],
                0,
                vec![3, 2],
            ),
            (
                "a promoted replica (now writable) is a candidate",
                vec![
                    Candidate {
                        role: Role::Primary,
                        health: Down,
                        ..c(0)
                    },
                    Candidate {
                        role: Role::Replica,
                        writable: Some(true),
                        ..c(1)
                    },
                ],
                0,
                vec![1],
            ),
            (
                "a primary not probed yet waits for its probe; a peer does not",
                vec![
                    Candidate {
                        role: Role::Primary,
                        writable: None,
                        ..c(0)
                    },
                    Candidate {
                        writable: None,
                        ..c(1)
                    },
                ],
                0,
                vec![1],
            ),
            (
                "nothing eligible: an empty list",
                vec![Candidate {
                    health: Down,
                    ..c(0)
                }],
                0,
                vec![],
            ),
        ];
        for (name, cands, turn, want) in cases {
            assert_eq!(ranked(&cands, turn), want, "{name}");
        }
    }
}
