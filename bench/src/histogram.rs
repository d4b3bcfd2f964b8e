//! A mergeable log-linear latency histogram.

/// Microsecond latencies in log-linear buckets: exact below 64 µs, then 32 buckets per
/// power of two (at most ~3 % error), mergeable across tasks.
pub struct Histogram {
    pub counts: Vec<u64>,
    pub total: u64,
    pub sum: u128,
    pub max: u64,
}

pub const EXACT: usize = 64;
pub const PER_OCTAVE: usize = 32;

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; EXACT + (64 - 6) * PER_OCTAVE],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    pub fn index(v: u64) -> usize {
        if v < EXACT as u64 {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros() as usize; // ≥ 6
        let mantissa = (v >> (exp - 5)) as usize; // 32..64
        EXACT + (exp - 6) * PER_OCTAVE + (mantissa - PER_OCTAVE)
    }

    /// The smallest value of bucket `i`.
    pub fn lower(i: usize) -> u64 {
        if i < EXACT {
            return i as u64;
        }
        let j = i - EXACT;
        let exp = j / PER_OCTAVE + 6;
        ((j % PER_OCTAVE + PER_OCTAVE) as u64) << (exp - 5)
    }

    pub fn record(&mut self, micros: u64) {
        let i = Self::index(micros).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.sum += u128::from(micros);
        self.max = self.max.max(micros);
    }

    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.sum as f64 / self.total as f64
    }

    /// The value at quantile `q`: the middle of the bucket holding that rank (the maximum
    /// for the last rank).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = (Self::lower(i), Self::lower(i + 1));
                return ((lo + hi.saturating_sub(1)) / 2).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub fn histogram_buckets_are_contiguous_and_tight() {
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1_000,
            12_345,
            1 << 20,
            u64::MAX >> 2,
        ] {
            let i = Histogram::index(v);
            assert!(
                Histogram::lower(i) <= v && v < Histogram::lower(i + 1),
                "{v}"
            );
            assert!(
                (Histogram::lower(i + 1) - Histogram::lower(i)) as f64 <= 1.0 + v as f64 / 32.0
            );
        }
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.03, "{p50}");
        assert_eq!(h.quantile(1.0), 1000);
    }
}
