//! A backend's health, decided from evidence: the active probe's outcomes and what live traffic
//! saw. Pure: the prober feeds it events with the time, it answers with the state to publish.
//!
//! States (what the router reads): `Up` (serve), `Suspect` (one failure seen: still served, but
//! ranked after every `Up` backend, and probed again at once), `Down` (not served),
//! `Incompatible` (it works, but it is another kind of server than the one sluice learned at
//! start: not served; the prober sets it over the tracker's verdict, see `backend::compat`). An operator's
//! intent (`Admin`: active, draining, maintenance) is separate: health says whether the server
//! works, intent whether sluice should use it.
//!
//! - A refused connection (nothing listens: a killed or stopped server) is certain: `Down` at once.
//! - Any other failure (a probe timing out — a frozen server accepts TCP in the kernel but never
//!   greets —, a lost connection, a server error) makes an `Up` backend `Suspect`; `down_after`
//!   failures in a row make it `Down`.
//! - A `Down` backend comes back after `up_after` good probes in a row *and* its re-admission
//!   backoff: a backend that goes down again soon after coming back waits twice as long each time
//!   (capped), so a flapping server is not handed clients on every good probe. A backend that stays
//!   up for `STABLE` has its backoff forgotten.

use std::time::{Duration, Instant};

/// What the router sees of a backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Health {
    Up = 0,
    Suspect = 1,
    Down = 2,
    /// Reachable, but its catalog differs from the instance's in a way that matters.
    Incompatible = 3,
}

impl Health {
    pub fn from_u8(v: u8) -> Health {
        match v {
            0 => Health::Up,
            1 => Health::Suspect,
            3 => Health::Incompatible,
            _ => Health::Down,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Suspect => "suspect",
            Health::Down => "down",
            Health::Incompatible => "incompatible",
        }
    }

    /// May the router hand this backend checkouts (and its pools keep idle connections)?
    pub fn serves(self) -> bool {
        matches!(self, Health::Up | Health::Suspect)
    }
}

/// One piece of evidence about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A probe connected, pinged and read the server's variables.
    ProbeOk,
    /// A connection was refused (nothing listens there): certain.
    Refused,
    /// A probe or live traffic failed otherwise: timed out, lost the connection, got an error.
    Failed,
}

/// Thresholds (from `[health]`).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub down_after: u32,
    pub up_after: u32,
    /// The first re-admission backoff; doubled for each quick relapse.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            down_after: 2,
            up_after: 2,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A backend up this long after its re-admission is stable again: its backoff starts over.
pub const STABLE: Duration = Duration::from_secs(60);

/// The health of one backend and the history its hysteresis needs.
#[derive(Debug, Clone)]
pub struct Tracker {
    health: Health,
    fails: u32,
    oks: u32,
    /// The backoff the next re-admission waits (after the backend went down).
    backoff: Duration,
    /// When the backend went down (re-admission waits `backoff` from here).
    down_since: Option<Instant>,
    /// When it was last re-admitted.
    up_since: Option<Instant>,
}

impl Tracker {
    /// A backend not probed yet is served (sluice checked every configured backend at start; one
    /// added later is probed before the router sees it as usable: see [`Tracker::unknown`]).
    pub fn new(t: &Thresholds) -> Tracker {
        Tracker {
            health: Health::Up,
            fails: 0,
            oks: 0,
            backoff: t.backoff,
            down_since: None,
            up_since: None,
        }
    }

    /// A backend nothing is known of yet: down until probes show it works (no backoff).
    pub fn unknown(t: &Thresholds) -> Tracker {
        Tracker {
            health: Health::Down,
            down_since: None,
            ..Tracker::new(t)
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Takes one piece of evidence; returns the health to publish.
    pub fn observe(&mut self, e: Evidence, now: Instant, t: &Thresholds) -> Health {
        match e {
            Evidence::ProbeOk => {
                self.fails = 0;
                match self.health {
                    Health::Up => {
                        if self
                            .up_since
                            .is_some_and(|u| now.duration_since(u) >= STABLE)
                        {
                            self.backoff = t.backoff;
                            self.up_since = None;
                        }
                    }
                    Health::Suspect => self.health = Health::Up,
                    // The tracker never holds `Incompatible` (the prober's overlay).
                    Health::Down | Health::Incompatible => {
                        self.oks += 1;
                        let waited = self
                            .down_since
                            .is_none_or(|d| now.duration_since(d) >= self.backoff);
                        if self.oks >= t.up_after && waited {
                            self.health = Health::Up;
                            self.oks = 0;
                            self.up_since = Some(now);
                        }
                    }
                }
            }
            Evidence::Refused | Evidence::Failed => {
                self.oks = 0;
                self.fails = self.fails.saturating_add(1);
                let certain = e == Evidence::Refused;
                match self.health {
                    Health::Down | Health::Incompatible => {}
                    _ if certain || self.fails >= t.down_after => self.go_down(now, t),
                    _ => self.health = Health::Suspect,
                }
            }
        }
        self.health
    }

    fn go_down(&mut self, now: Instant, t: &Thresholds) {
        // Relapsing soon after a re-admission doubles the next wait.
        if self
            .up_since
            .is_some_and(|u| now.duration_since(u) < STABLE)
        {
            self.backoff = (self.backoff * 2).min(t.max_backoff);
        }
        self.health = Health::Down;
        self.down_since = Some(now);
        self.up_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Evidence::*;
    use Health::*;

    const MS: Duration = Duration::from_millis(1);

    /// `(milliseconds since start, evidence, health expected after it)`.
    type Step = (u64, Evidence, Health);

    fn play(t: &Thresholds, start: Tracker, steps: &[Step]) -> Tracker {
        let t0 = Instant::now();
        let mut tr = start;
        for (i, &(at, e, want)) in steps.iter().enumerate() {
            let got = tr.observe(e, t0 + MS * at as u32, t);
            assert_eq!(got, want, "step {i}: {e:?} at {at} ms");
        }
        tr
    }

    #[test]
    fn failures_and_recoveries() {
        let t = Thresholds::default();
        let cases: &[(&str, &[Step])] = &[
            ("a refusal is certain", &[(0, Refused, Down)]),
            (
                "one failure is suspect",
                &[(0, Failed, Suspect), (250, ProbeOk, Up)],
            ),
            (
                "two in a row are down",
                &[(0, Failed, Suspect), (250, Failed, Down)],
            ),
            (
                "a success between failures starts the count over",
                &[
                    (0, Failed, Suspect),
                    (250, ProbeOk, Up),
                    (500, Failed, Suspect),
                ],
            ),
            (
                "back after two good probes once the first backoff passed",
                &[(0, Refused, Down), (250, ProbeOk, Down), (500, ProbeOk, Up)],
            ),
            (
                "good probes before the backoff do not re-admit",
                &[
                    (0, Refused, Down),
                    (100, ProbeOk, Down),
                    (200, ProbeOk, Down),
                    (300, ProbeOk, Down),
                    (500, ProbeOk, Up),
                ],
            ),
            (
                "a failure among the good probes starts them over",
                &[
                    (0, Refused, Down),
                    (600, ProbeOk, Down),
                    (700, Failed, Down),
                    (800, ProbeOk, Down),
                    (900, ProbeOk, Up),
                ],
            ),
            (
                "a quick relapse doubles the backoff (500 -> 1000 ms)",
                &[
                    (0, Refused, Down),
                    (500, ProbeOk, Down),
                    (600, ProbeOk, Up),
                    (700, Refused, Down),
                    (800, ProbeOk, Down),
                    (1500, ProbeOk, Down),
                    (1700, ProbeOk, Up),
                ],
            ),
        ];
        for (name, steps) in cases {
            eprintln!("case: {name}");
            play(&t, Tracker::new(&t), steps);
        }
    }

    #[test]
    fn backoff_is_capped_and_forgotten_after_a_stable_minute() {
        let t = Thresholds {
            max_backoff: Duration::from_secs(2),
            ..Thresholds::default()
        };
        let t0 = Instant::now();
        let mut tr = Tracker::new(&t);
        let mut now = t0;
        // Flap five times: the backoff doubles up to the cap.
        for _ in 0..5 {
            tr.observe(Refused, now, &t);
            now += Duration::from_secs(3);
            tr.observe(ProbeOk, now, &t);
            tr.observe(ProbeOk, now, &t);
            assert_eq!(tr.health(), Up);
            now += MS;
        }
        assert_eq!(tr.backoff, Duration::from_secs(2));
        // A stable minute forgets it.
        now += STABLE;
        tr.observe(ProbeOk, now, &t);
        assert_eq!(tr.backoff, t.backoff);
    }

    #[test]
    fn only_up_and_suspect_serve_and_every_state_survives_the_board() {
        for (h, serves) in [
            (Up, true),
            (Suspect, true),
            (Down, false),
            (Incompatible, false),
        ] {
            assert_eq!(h.serves(), serves, "{}", h.name());
            assert_eq!(Health::from_u8(h as u8), h);
        }
    }

    #[test]
    fn an_unknown_backend_needs_its_probes_but_no_backoff() {
        let t = Thresholds::default();
        let t0 = Instant::now();
        let mut tr = Tracker::unknown(&t);
        assert_eq!(tr.health(), Down);
        assert_eq!(tr.observe(ProbeOk, t0, &t), Down);
        assert_eq!(tr.observe(ProbeOk, t0 + MS, &t), Up);
    }
}
