//! Timing loops shared by both sides, so Tether and the baseline are timed
//! by the same code.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::error::BenchError;

/// Runs `op` `warmup` times untimed, then `samples` times, timing each.
pub(crate) async fn latencies<F, Fut>(
    warmup: usize,
    samples: usize,
    mut op: F,
) -> Result<Vec<Duration>, BenchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), BenchError>>,
{
    for _ in 0..warmup {
        op().await?;
    }
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        op().await?;
        out.push(start.elapsed());
    }
    Ok(out)
}

/// Runs `op` `total` times with `concurrency` calls in flight (one task
/// each). Returns how many completed and the wall time.
pub(crate) async fn pipelined<F, Fut>(
    concurrency: usize,
    total: usize,
    op: F,
) -> Result<(usize, Duration), BenchError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), BenchError>> + Send + 'static,
{
    let claimed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(total) {
        let (op, claimed) = (op.clone(), claimed.clone());
        workers.spawn(async move {
            let mut done = 0usize;
            while claimed.fetch_add(1, Ordering::Relaxed) < total {
                op().await?;
                done += 1;
            }
            Ok::<_, BenchError>(done)
        });
    }
    let mut completed = 0;
    while let Some(done) = workers.join_next().await {
        completed += done??;
    }
    Ok((completed, start.elapsed()))
}

/// Events per second; 0 when nothing was timed.
pub(crate) fn per_second(count: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// The `p`-th percentile (0 < p <= 100, nearest rank) of `samples`, in
/// microseconds; sorts `samples`.
pub(crate) fn percentile_us(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    let index = rank.clamp(1, samples.len()) - 1;
    samples[index].as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&mut samples, 50.0), 50.0);
        assert_eq!(percentile_us(&mut samples, 99.0), 99.0);
        assert_eq!(percentile_us(&mut samples, 100.0), 100.0);
    }
}
