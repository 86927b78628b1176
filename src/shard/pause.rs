//! PAUSE / RESUME on one shard: while paused, a session's next command that needs a backend
//! waits at a gate before it is served (before its checkout, as it would wait for a free pool
//! slot), unless the session is inside a transaction: that one runs so the transaction can end.
//! Logins are still accepted and nobody is dropped. The console's PAUSE waits until every shard
//! of every process reports nothing in flight (see [`Progress`]); RESUME opens the gates.
//!
//! Decisions here are pure functions ([`waits`], [`classify`], [`progress`]) with table tests;
//! the shard keeps its flag in a `Cell` and counts its sessions with [`classify`].
//!
//! A paused client waits without a deadline, as PgBouncer's do: `pool.queue_timeout_ms` starts
//! only after RESUME, at the checkout (a pause is the operator's decision, not a starved pool,
//! and failing every client after a few seconds would defeat a pause meant to outlast a
//! server restart). KILL QUERY ends a waiting command with ERR 1317 (as the server ends an
//! interrupted statement); KILL ends the client.

use super::table::{ActiveCtl, SlotState};
use super::Shard;
use crate::codec::command::{self, com, Disposition, ResponseKind};
use std::future::poll_fn;
use std::task::Poll;
use tracing::info;

/// One shard's (or a process's, summed) answer to PAUSE, RESUME and their status request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PauseStatus {
    pub paused: bool,
    /// Sessions serving a command now (a statement running, or waiting for a backend).
    pub running: u32,
    /// Sessions between commands inside an open transaction.
    pub in_transaction: u32,
    /// Sessions whose command waits at the pause gate.
    pub waiting: u32,
    /// The connection ids of the first [`BUSY_IDS`] sessions running or in a transaction (what
    /// a PAUSE that timed out names).
    #[serde(default)]
    pub busy_ids: Vec<u32>,
}

/// How many busy sessions a status names.
pub const BUSY_IDS: usize = 10;

impl PauseStatus {
    /// In-flight work the pause still waits for.
    pub fn busy(&self) -> u32 {
        self.running + self.in_transaction
    }

    /// Sums shards or processes: paused only if every one is.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a PauseStatus>) -> PauseStatus {
        let mut out = PauseStatus {
            paused: true,
            ..PauseStatus::default()
        };
        let mut any = false;
        for s in all {
            any = true;
            out.paused &= s.paused;
            out.running += s.running;
            out.in_transaction += s.in_transaction;
            out.waiting += s.waiting;
            let room = BUSY_IDS.saturating_sub(out.busy_ids.len());
            out.busy_ids.extend(s.busy_ids.iter().take(room));
        }
        out.paused &= any;
        out
    }

    pub fn describe(&self) -> String {
        let mut d = format!(
            "{} statement(s) running, {} transaction(s) open, {} client(s) waiting",
            self.running, self.in_transaction, self.waiting
        );
        if !self.busy_ids.is_empty() {
            let ids: Vec<String> = self.busy_ids.iter().map(u32::to_string).collect();
            let more = if (self.busy() as usize) > self.busy_ids.len() {
                ", …"
            } else {
                ""
            };
            d.push_str(&format!(" (busy: client {}{more})", ids.join(", ")));
        }
        d
    }
}

/// Does a command wait at the gate? Only while paused, never inside a transaction (it must be
/// able to end), and never for what needs no backend: COM_QUIT (the client leaves), COM_PING
/// and KILL (answered by sluice: a driver's statement timeout sends `KILL QUERY` for a statement
/// that may be the one waiting), and commands sluice refuses anyway.
pub fn waits(paused: bool, payload: &[u8], in_transaction: bool) -> bool {
    let Some(&code) = payload.first() else {
        return false;
    };
    if !paused || in_transaction {
        return false;
    }
    let needs_no_backend = matches!(code, com::QUIT | com::PING | com::PROCESS_KILL)
        || matches!(command::disposition(code), Disposition::Refuse)
        || (code == com::QUERY && is_kill(&payload[1..]));
    !needs_no_backend
}

/// Does the statement start with `KILL` (after comments and spaces)? Only its first bytes are
/// looked at.
fn is_kill(sql: &[u8]) -> bool {
    let head = &sql[..sql.len().min(64)];
    matches!(
        crate::session::sql::tokens(head, Default::default()).first(),
        Some(crate::session::sql::Tok::Word(w)) if w.eq_ignore_ascii_case(b"KILL")
    )
}

/// Does a command get an answer (so a waiting one ended by KILL QUERY is answered ERR 1317)?
/// COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA do not: released from the gate by a KILL QUERY,
/// they run.
pub fn answered(code: u8) -> bool {
    !matches!(
        command::disposition(code),
        Disposition::Forward(ResponseKind::None) | Disposition::Intercept(ResponseKind::None)
    )
}

/// What one session counts as for a PAUSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Nothing in flight: parked, lingering between commands, or still logging in.
    Quiet,
    Running,
    InTransaction,
    /// Its command waits at the gate (not in flight: it has no backend).
    Waiting,
}

/// A session's part in a pause, from what its shard knows of it: `serving` a command,
/// `in_transaction` (the server's status flag after its last command), `gated` (waiting at the
/// gate).
pub fn classify(serving: bool, in_transaction: bool, gated: bool) -> Busy {
    match (gated, serving, in_transaction) {
        (true, _, _) => Busy::Waiting,
        (false, true, _) => Busy::Running,
        (false, false, true) => Busy::InTransaction,
        (false, false, false) => Busy::Quiet,
    }
}

/// Where a PAUSE stands, given every process's status (`None`: it did not answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Everything paused and nothing in flight.
    Quiet,
    /// Still waiting for this much.
    Busy(PauseStatus),
    /// Some process is not paused any more: a RESUME came (the PAUSE is cancelled).
    Resumed,
    /// This process did not answer.
    Unreachable(usize),
}

pub fn progress(statuses: &[Option<PauseStatus>]) -> Progress {
    if let Some(i) = statuses.iter().position(Option::is_none) {
        return Progress::Unreachable(i);
    }
    let all: Vec<PauseStatus> = statuses.iter().flatten().cloned().collect();
    if all.iter().any(|s| !s.paused) {
        return Progress::Resumed;
    }
    let sum = PauseStatus::sum(&all);
    if sum.busy() == 0 {
        Progress::Quiet
    } else {
        Progress::Busy(sum)
    }
}

/// Waits while `paused()` says so (the shard's flag), or until the session is interrupted
/// (KILL, shutdown) or its command cancelled (KILL QUERY: `ctl.gate_cancelled`). Marks the session gated meanwhile, for SHOW CLIENTS and the counts; the
/// shard wakes gated sessions through their `ctl.waker` when it resumes.
pub async fn gate(paused: impl Fn() -> bool, ctl: &ActiveCtl) {
    if !paused() {
        return;
    }
    ctl.gated.set(true);
    poll_fn(|cx| {
        if !paused() || ctl.interrupted() || ctl.gate_cancelled.get() {
            return Poll::Ready(());
        }
        ctl.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    })
    .await;
    ctl.gated.set(false);
}

/// The shard's side: its flag and its sessions counted.
impl Shard {
    /// Is PAUSE in effect on this shard (commands that need a backend wait at the gate)?
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.get()
    }

    /// Sets (or, with `None`, only reads) the pause; counts what the sessions are doing. On
    /// RESUME, wakes every session waiting at the gate.
    pub(super) fn pause(&self, set: Option<bool>) -> PauseStatus {
        if let Some(on) = set {
            if self.paused.replace(on) != on {
                info!(shard = self.id, paused = on, "pause changed");
            }
        }
        let mut st = PauseStatus {
            paused: self.paused.get(),
            ..Default::default()
        };
        let table = self.table.borrow();
        for t in table.tokens() {
            let Some(slot) = table.get(t) else { continue };
            let busy = match &slot.state {
                SlotState::Parked(s) => classify(
                    false,
                    s.status & crate::codec::caps::status::IN_TRANS != 0,
                    false,
                ),
                SlotState::Active(ctl) => {
                    if !self.paused.get() && ctl.gated.get() {
                        // Resumed: let it go.
                        if let Some(w) = ctl.waker.take() {
                            w.wake();
                        }
                    }
                    classify(ctl.serving.get(), ctl.in_transaction.get(), ctl.gated.get())
                }
                SlotState::Free => Busy::Quiet,
            };
            match busy {
                Busy::Quiet => {}
                Busy::Running => st.running += 1,
                Busy::InTransaction => st.in_transaction += 1,
                Busy::Waiting => st.waiting += 1,
            }
            if matches!(busy, Busy::Running | Busy::InTransaction) && st.busy_ids.len() < BUSY_IDS {
                st.busy_ids.push(slot.conn_id);
            }
        }
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_commands_wait() {
        let q = |sql: &str| [&[com::QUERY][..], sql.as_bytes()].concat();
        #[rustfmt::skip]
        let table: Vec<(bool, Vec<u8>, bool, bool)> = vec![
            // paused, command, in a transaction, waits
            (false, q("SELECT 1"), false, false),
            (true, q("SELECT 1"), false, true),
            (true, q("SELECT 1"), true, false),
            (true, q("kill query 12"), false, false),
            (true, q(" /* x */ KILL 12"), false, false),
            (true, q("SELECT 'KILL'"), false, true),
            (true, q("KILLER()"), false, true),
            (true, q(""), false, true),
            (true, vec![com::STMT_EXECUTE, 1, 0, 0, 0], false, true),
            (true, vec![com::STMT_PREPARE], false, true),
            (true, vec![com::INIT_DB], false, true),
            (true, vec![com::QUIT], false, false),
            (true, vec![com::PING], false, false),
            (true, vec![com::PROCESS_KILL, 1, 0, 0, 0], false, false),
            (true, vec![0x1d], false, false), // COM_DAEMON: refused anyway
            (true, vec![], false, false),
            (true, vec![com::STMT_EXECUTE], true, false),
        ];
        for (paused, payload, trx, want) in table {
            assert_eq!(
                waits(paused, &payload, trx),
                want,
                "{paused} {payload:?} {trx}"
            );
        }
        #[rustfmt::skip]
        let answers: &[(u8, bool)] = &[
            (com::QUERY, true), (com::STMT_EXECUTE, true), (com::INIT_DB, true),
            (com::STMT_CLOSE, false), (com::STMT_SEND_LONG_DATA, false),
        ];
        for &(code, want) in answers {
            assert_eq!(answered(code), want, "{code}");
        }
    }

    #[test]
    fn sessions_are_classified() {
        #[rustfmt::skip]
        let table: &[(bool, bool, bool, Busy)] = &[
            // serving, in a transaction, gated
            (false, false, false, Busy::Quiet),
            (true, false, false, Busy::Running),
            (true, true, false, Busy::Running),
            (false, true, false, Busy::InTransaction),
            (true, false, true, Busy::Waiting),
            (false, false, true, Busy::Waiting),
        ];
        for &(serving, trx, gated, want) in table {
            assert_eq!(
                classify(serving, trx, gated),
                want,
                "{serving} {trx} {gated}"
            );
        }
    }

    #[test]
    fn progress_over_processes() {
        let s = |paused, running, in_transaction| {
            Some(PauseStatus {
                paused,
                running,
                in_transaction,
                waiting: 1,
                busy_ids: (0..running + in_transaction).collect(),
            })
        };
        let busy = PauseStatus {
            paused: true,
            running: 1,
            in_transaction: 2,
            waiting: 2,
            busy_ids: vec![0, 0, 1],
        };
        #[rustfmt::skip]
        let table: Vec<(Vec<Option<PauseStatus>>, Progress)> = vec![
            (vec![s(true, 0, 0)], Progress::Quiet),
            (vec![s(true, 0, 0), s(true, 0, 0)], Progress::Quiet),
            (vec![s(true, 1, 0), s(true, 0, 2)], Progress::Busy(busy)),
            (vec![s(true, 1, 0), s(false, 0, 0)], Progress::Resumed),
            (vec![s(true, 0, 0), None], Progress::Unreachable(1)),
            (vec![None, s(false, 0, 0)], Progress::Unreachable(0)),
        ];
        for (statuses, want) in table {
            assert_eq!(progress(&statuses), want, "{statuses:?}");
        }
    }

    #[test]
    fn sums_are_paused_only_when_all_are() {
        let p = PauseStatus {
            paused: true,
            ..PauseStatus::default()
        };
        let r = PauseStatus::default();
        assert!(PauseStatus::sum(&[p.clone(), p.clone()]).paused);
        assert!(!PauseStatus::sum(&[p, r]).paused);
        assert!(!PauseStatus::sum(&[]).paused);
    }

    #[test]
    fn a_status_names_the_first_busy_clients() {
        let one = |ids: Vec<u32>| PauseStatus {
            paused: true,
            running: ids.len() as u32,
            busy_ids: ids,
            ..PauseStatus::default()
        };
        let sum = PauseStatus::sum(&[one((1..=8).collect()), one((20..=25).collect())]);
        assert_eq!(sum.busy_ids, [1, 2, 3, 4, 5, 6, 7, 8, 20, 21]);
        assert_eq!(sum.running, 14);
        assert!(sum
            .describe()
            .ends_with("(busy: client 1, 2, 3, 4, 5, 6, 7, 8, 20, 21, …)"));
        let d = one(vec![7]).describe();
        assert_eq!(
            d,
            "1 statement(s) running, 0 transaction(s) open, 0 client(s) waiting (busy: client 7)"
        );
        assert!(!PauseStatus::default().describe().contains("busy"));
    }
}
