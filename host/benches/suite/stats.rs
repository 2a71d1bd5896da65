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

/// Times each of `runs` in turn, `samples` rounds (after `warmup` rounds), in µs: all
/// see the same machine, so their ratios hold even when its load drifts.
pub fn measure_alternating<const N: usize>(
    warmup: usize,
    samples: usize,
    mut runs: [&mut dyn FnMut(); N],
) -> [Stats; N] {
    for _ in 0..warmup {
        for run in runs.iter_mut() {
            run();
        }
    }
    let mut timings: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(samples));
    for _ in 0..samples {
        for (run, timings) in runs.iter_mut().zip(timings.iter_mut()) {
            let started = Instant::now();
            run();
            timings.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    timings.map(Stats::of)
}
