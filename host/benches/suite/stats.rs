//! Percentiles of timing samples.

use std::time::Instant;

/// Summary of a set of samples, in the unit they were taken in.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Stats {
    pub fn of(mut samples: Vec<f64>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            p50: at(0.50),
            p99: at(0.99),
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }
}

/// Times `a` and `b` in alternation, `samples` runs each (after `warmup` of each), in µs:
/// both see the same machine, so their ratio holds even when its load drifts.
pub fn measure_pair(
    warmup: usize,
    samples: usize,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (Stats, Stats) {
    for _ in 0..warmup {
        a();
        b();
    }
    let time = |run: &mut dyn FnMut()| {
        let started = Instant::now();
        run();
        started.elapsed().as_secs_f64() * 1e6
    };
    let (mut a_samples, mut b_samples) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        a_samples.push(time(&mut a));
        b_samples.push(time(&mut b));
    }
    (Stats::of(a_samples), Stats::of(b_samples))
}
