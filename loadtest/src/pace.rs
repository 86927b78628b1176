//! Open-loop rate pacing without drift or coordinated omission.
//!
//! Operation `n` is *intended* to start at `start + n / rate`. When every connection is busy the
//! operation waits (the pacer simply is not asked for it yet), and its latency is still measured
//! from its intended start: a slow server cannot hide its stalls by slowing the generator down
//! (the "coordinated omission" that closed-loop measurement suffers from). No queue of pending
//! operations is kept: the pacer's position *is* the backlog.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    /// Operations per second; `None` = unlimited (closed loop).
    rate: Option<f64>,
    issued: u64,
}

impl Pacer {
    pub fn new(start: Instant, rate: f64) -> Pacer {
        Pacer {
            start,
            rate: (rate > 0.0).then_some(rate),
            issued: 0,
        }
    }

    #[cfg(test)]
    pub fn unlimited(&self) -> bool {
        self.rate.is_none()
    }

    /// The intended start of operation `n`.
    pub fn intended(&self, n: u64) -> Instant {
        match self.rate {
            Some(r) => self.start + Duration::from_secs_f64(n as f64 / r),
            None => self.start,
        }
    }

    /// When the next operation is due (`None` if unlimited: always due).
    pub fn next_due(&self) -> Option<Instant> {
        self.rate.map(|_| self.intended(self.issued))
    }

    /// Operations due by `now` and not yet taken.
    #[cfg(test)]
    pub fn due(&self, now: Instant) -> u64 {
        match self.rate {
            None => u64::MAX,
            Some(r) => {
                if now < self.start {
                    return 0;
                }
                let elapsed = now.duration_since(self.start).as_secs_f64();
                // Operations 0..=floor(elapsed * rate) are due; guard against float error by
                // checking the boundary operation exactly.
                let mut n = (elapsed * r).floor() as u64 + 1;
                while n > 0 && self.intended(n - 1) > now {
                    n -= 1;
                }
                while self.intended(n) <= now {
                    n += 1;
                }
                n.saturating_sub(self.issued)
            }
        }
    }

    /// Takes the next operation if it is due, returning its intended start.
    pub fn take(&mut self, now: Instant) -> Option<Instant> {
        let t = match self.rate {
            None => now,
            Some(_) => {
                let t = self.intended(self.issued);
                if t > now {
                    return None;
                }
                t
            }
        };
        self.issued += 1;
        Some(t)
    }

    /// Operations intended to start before `end` that never started (the target rate was not
    /// met).
    pub fn missed(&self, end: Instant) -> u64 {
        match self.rate {
            None => 0,
            Some(_) => {
                let mut n = self.issued;
                while self.intended(n) < end {
                    n += 1;
                }
                n - self.issued
            }
        }
    }
}

/// A share of a total rate for one of `parts` workers (0 stays 0 = unlimited).
pub fn share(rate: f64, parts: usize) -> f64 {
    if rate <= 0.0 || parts == 0 {
        0.0
    } else {
        rate / parts as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_has_no_drift() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 1000.0);
        assert_eq!(p.due(t0), 1); // operation 0 is due at once
        assert_eq!(p.due(t0 + Duration::from_micros(999)), 1);
        assert_eq!(p.due(t0 + Duration::from_millis(1)), 2);
        assert_eq!(p.due(t0 + Duration::from_millis(10)), 11);
        // Take them late: intended times are still on the 1 ms grid.
        let now = t0 + Duration::from_millis(10);
        let mut got = Vec::new();
        while let Some(t) = p.take(now) {
            got.push(t.duration_since(t0));
        }
        assert_eq!(got.len(), 11);
        assert_eq!(got[5], Duration::from_millis(5));
        assert_eq!(p.due(now), 0);
        assert_eq!(p.next_due(), Some(t0 + Duration::from_millis(11)));
        // After 100 s at 1,000/s exactly 100,001 operations have been due.
        assert_eq!(p.due(t0 + Duration::from_secs(100)), 100_001 - 11);
    }

    #[test]
    fn fractional_rates() {
        let t0 = Instant::now();
        let p = Pacer::new(t0, 2000.0 / 3.0);
        // 666.67/s: one operation every 1.5 ms.
        assert_eq!(p.due(t0 + Duration::from_micros(2999)), 2);
        assert_eq!(p.due(t0 + Duration::from_micros(3000)), 3);
        assert_eq!(p.due(t0 + Duration::from_secs(3)), 2001);
    }

    #[test]
    fn backlog_is_counted_as_missed() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 100.0);
        let end = t0 + Duration::from_secs(1);
        for _ in 0..40 {
            p.take(end).unwrap();
        }
        // 100 operations had intended times before the end (0..99 at 0..990 ms); 40 ran.
        assert_eq!(p.missed(end), 60);
        assert_eq!(p.missed(end + Duration::from_nanos(1)), 61);
    }

    #[test]
    fn unlimited_is_always_due() {
        let t0 = Instant::now();
        let mut p = Pacer::new(t0, 0.0);
        assert!(p.unlimited());
        assert_eq!(p.next_due(), None);
        let now = t0 + Duration::from_millis(3);
        assert_eq!(p.take(now), Some(now));
        assert_eq!(p.missed(now), 0);
        assert_eq!(share(0.0, 3), 0.0);
        assert_eq!(share(2000.0, 4), 500.0);
    }
}
