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

/// Runs `run` `warmup` times, then times `samples` runs of it, in µs.
pub fn measure(warmup: usize, samples: usize, mut run: impl FnMut()) -> Stats {
    for _ in 0..warmup {
        run();
    }
    Stats::of(
        (0..samples)
            .map(|_| {
                let started = Instant::now();
                run();
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    )
}
