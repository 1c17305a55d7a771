//! Retrying what failed for a reason that may pass (a store or broker outage), and only that.
//!
//! The schedule is backon's exponential backoff with jitter, so replicas that lost the same
//! dependency do not come back in lockstep. The loop around it is ours because every retry here
//! must also stop at once on shutdown, and the caller wants to hear each failure (to report
//! itself not ready).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// Whether an error may go away by itself. Permanent errors (bad input, corrupt data, a bug) are
/// never retried.
pub trait Transience {
    fn is_transient(&self) -> bool;
}

/// Bounds of the exponential backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the second attempt.
    pub initial: Duration,
    /// The delay doubles up to this.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delays between attempts, without end.
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Why [`retry_transient`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub enum RetryStopped<E> {
    /// The token was cancelled (shutdown) before an attempt succeeded.
    Cancelled,
    /// An attempt failed with an error that retrying will not fix.
    Permanent(E),
}

/// The delays of one retried operation, and the wait that shutdown cuts short. For loops that
/// cannot hand their attempt to [`retry_transient`] (one that needs `&mut` state each time).
pub struct RetrySchedule {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    max: Duration,
}

impl RetrySchedule {
    pub fn new(policy: &RetryPolicy) -> RetrySchedule {
        RetrySchedule {
            delays: Box::new(policy.delays()),
            max: policy.max,
        }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Sleeps `delay`; `false` at once if `cancelled` fires first (the caller gives up).
    pub async fn sleep(delay: Duration, cancelled: &CancellationToken) -> bool {
        tokio::select! {
            () = cancelled.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or `cancelled` fires while waiting.
/// `on_failure` hears every transient failure with the delay before the next attempt.
pub async fn retry_transient<T, E, Attempt>(
    policy: &RetryPolicy,
    cancelled: &CancellationToken,
    mut attempt: impl FnMut() -> Attempt,
    mut on_failure: impl FnMut(&E, Duration),
) -> Result<T, RetryStopped<E>>
where
    E: Transience,
    Attempt: std::future::Future<Output = Result<T, E>>,
{
    let mut schedule = RetrySchedule::new(policy);
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if !error.is_transient() => return Err(RetryStopped::Permanent(error)),
            Err(error) => error,
        };
        let delay = schedule.next_delay();
        on_failure(&error, delay);
        if !RetrySchedule::sleep(delay, cancelled).await {
            return Err(RetryStopped::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Failure {
        Outage,
        Corrupt,
    }

    impl Transience for Failure {
        fn is_transient(&self) -> bool {
            *self == Failure::Outage
        }
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let mut attempts = 0;
        let mut heard = Vec::new();
        let result = retry_transient(
            &quick(),
            &CancellationToken::new(),
            || {
                attempts += 1;
                let attempt = attempts;
                async move {
                    if attempt < 4 {
                        Err(Failure::Outage)
                    } else {
                        Ok(attempt)
                    }
                }
            },
            |error, delay| heard.push((format!("{error:?}"), delay)),
        )
        .await;
        assert_eq!(result, Ok(4));
        assert_eq!(heard.len(), 3);
        assert!(heard
            .iter()
            .all(|(_, delay)| *delay <= Duration::from_millis(8)));
    }

    #[tokio::test]
    async fn a_permanent_failure_is_not_retried() {
        let mut attempts = 0;
        let result: Result<(), _> = retry_transient(
            &quick(),
            &CancellationToken::new(),
            || {
                attempts += 1;
                async { Err(Failure::Corrupt) }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(result, Err(RetryStopped::Permanent(Failure::Corrupt)));
        assert_eq!(attempts, 1);
    }

    #[tokio::test]
    async fn cancellation_ends_the_wait_between_attempts() {
        let cancelled = CancellationToken::new();
        let policy = RetryPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
        };
        let canceller = cancelled.clone();
        let result: Result<(), _> = retry_transient(
            &policy,
            &cancelled,
            || async { Err(Failure::Outage) },
            move |_, _| canceller.cancel(),
        )
        .await;
        assert_eq!(result, Err(RetryStopped::Cancelled));
    }

    #[test]
    fn delays_grow_to_the_maximum_and_stay_there() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        let delays: Vec<Duration> = policy.delays().take(12).collect();
        assert_eq!(delays.len(), 12, "the schedule never ends");
        // Jitter adds at most the current delay, so no delay exceeds twice the maximum.
        assert!(delays
            .iter()
            .all(|delay| *delay <= Duration::from_millis(200)));
        assert!(delays[11] >= Duration::from_millis(100));
    }
}
