//! Latency histograms (µs) and their summaries.

use crate::ipc::HistData;
use hdrhistogram::Histogram;
use serde::Serialize;

/// 1 µs to one hour, three significant digits (~180 KiB per histogram).
pub fn new() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.max(1));
}

pub fn to_data(h: &Histogram<u64>) -> HistData {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub fn merge(into: &mut Histogram<u64>, data: &HistData) {
    for &(v, n) in data {
        let _ = into.record_n(v.clamp(1, into.high()), n);
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

pub fn summary(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    Summary {
        count: h.len(),
        min: h.min(),
        mean: (h.mean() * 10.0).round() / 10.0,
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_and_merges() {
        let mut a = new();
        let mut b = new();
        for v in 1..=1000u64 {
            record(&mut a, v);
            record(&mut b, v * 1000);
        }
        record(&mut a, 0); // counted as 1 µs
        let mut m = new();
        merge(&mut m, &to_data(&a));
        merge(&mut m, &to_data(&b));
        assert_eq!(m.len(), 2001);
        let s = summary(&m);
        assert_eq!(s.min, 1);
        assert!((999_000..=1_001_000).contains(&s.max), "{}", s.max);
        assert!((995..=1001).contains(&s.p50), "{}", s.p50);
        assert_eq!(summary(&new()), Summary::default());
    }
}
