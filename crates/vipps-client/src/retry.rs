//! The retry policy: which outcomes are retried, how long to wait, and the one loop that applies it (on
//! [`backon`]).
//!
//! Retried: connection failures, timeouts, resets, 408, 423 (including the in-flight conflict, code 6160), 429
//! and 5xx. Never retried: any other status. Every write carries an idempotency key fixed before the first
//! attempt, so a retried POST is safe. The delay is exponential with jitter; a `Retry-After` (seconds or HTTP
//! date) raises it, up to [`RetryPolicy::max_retry_after`]; no retry starts if it could not finish before the
//! call's deadline.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};

use crate::clock::{Clock, Entropy};
use crate::error::{Error, ErrorKind};

/// How a call is retried.
///
/// ```
/// use std::time::Duration;
/// use vipps_client::RetryPolicy;
///
/// let fast = RetryPolicy::default()
///     .with_max_attempts(5)
///     .with_initial_backoff(Duration::from_millis(10))
///     .with_max_backoff(Duration::from_millis(100));
/// assert_eq!(fast.max_attempts(), 5);
/// assert_eq!(RetryPolicy::none().max_attempts(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    factor: f32,
    jitter: bool,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 200 ms doubling up to 5 s with jitter, `Retry-After` honoured up to 30 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            factor: 2.0,
            jitter: true,
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A single attempt, no retries.
    pub fn none() -> Self {
        RetryPolicy::default().with_max_attempts(1)
    }

    /// The most attempts per call, the first included (at least 1).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The delay before the first retry.
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// The largest delay between attempts (before jitter and `Retry-After`).
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// The growth factor of the delay (at least 1).
    pub fn with_factor(mut self, factor: f32) -> Self {
        self.factor = factor.max(1.0);
        self
    }

    /// Whether a random part is added to each delay (up to the delay itself).
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The longest `Retry-After` honoured; longer ones are cut to this.
    pub fn with_max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// The most attempts per call.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The longest `Retry-After` honoured.
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    fn backoff(&self, seed: u64) -> ExponentialBuilder {
        let b = ExponentialBuilder::new()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(self.factor)
            .with_max_times((self.max_attempts - 1) as usize);
        if self.jitter {
            b.with_jitter().with_jitter_seed(seed)
        } else {
            b
        }
    }
}

/// Whether an HTTP status is worth retrying: 408, 423, 429 and 5xx.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 423 | 429) || (500..=599).contains(&status)
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Stop and return the error.
    Stop,
    /// Retry, waiting at least this long if the server said so.
    Retry {
        /// The server's `Retry-After`, already capped.
        at_least: Option<Duration>,
    },
}

/// Classifies a failed attempt. Pure: the table in the module documentation.
pub fn classify(error: &Error) -> Decision {
    match error.kind() {
        ErrorKind::Api(api) if is_retryable_status(api.status) => Decision::Retry {
            at_least: api.retry_after,
        },
        ErrorKind::Connect { .. } | ErrorKind::Network { .. } => Decision::Retry { at_least: None },
        ErrorKind::Timeout { total: false, .. } => Decision::Retry { at_least: None },
        _ => Decision::Stop,
    }
}

/// Reads a `Retry-After` value: delay-seconds or an HTTP date (relative to `now`), capped at `cap`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use vipps_client::retry::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let cap = Duration::from_secs(30);
/// assert_eq!(parse_retry_after("2", now, cap), Some(Duration::from_secs(2)));
/// assert_eq!(parse_retry_after("3600", now, cap), Some(cap));
/// let date = httpdate::fmt_http_date(now + Duration::from_secs(5));
/// assert_eq!(parse_retry_after(&date, now, cap), Some(Duration::from_secs(5)));
/// assert_eq!(parse_retry_after("soon", now, cap), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(cap))
}

/// Runs `attempt` under the policy: the attempt number (from 1) is passed in; the delay between attempts comes
/// from backon's exponential backoff, raised to the server's `Retry-After`; no retry starts if its delay ends
/// past `deadline`. Returns the result and the number of attempts made.
pub(crate) fn run<'a, T, F, Fut>(
    policy: &RetryPolicy,
    clock: &Arc<dyn Clock>,
    entropy: &dyn Entropy,
    deadline: Option<Instant>,
    mut attempt: F,
) -> impl Future<Output = (Result<T, Error>, u32)> + Send + 'a
where
    T: Send + 'a,
    F: FnMut(u32) -> Fut + Send + 'a,
    Fut: Future<Output = Result<T, Error>> + Send + 'a,
{
    let attempts = Arc::new(AtomicU32::new(0));
    let backoff = policy.backoff(entropy.next_u64()).build();
    let sleep_clock = Arc::clone(clock);
    let adjust_clock = Arc::clone(clock);
    let counter = Arc::clone(&attempts);
    let retry = (move || {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        attempt(n)
    })
    .retry(backoff)
    .sleep(move |d: Duration| sleep_clock.sleep(d))
    .when(should_retry)
    .adjust(move |e: &Error, next: Option<Duration>| {
        let next = next?;
        let delay = match classify(e) {
            Decision::Retry {
                at_least: Some(min),
            } => next.max(min),
            _ => next,
        };
        match deadline {
            Some(d) if adjust_clock.now() + delay >= d => None,
            _ => Some(delay),
        }
    })
    .notify(notify);
    // Boxed here, outside any async block: the closures' higher-ranked signatures would otherwise defeat the
    // compiler's `Send` proof for callers' futures.
    let retry: Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>> = Box::pin(retry);
    async move {
        let result = retry.await;
        (result, attempts.load(Ordering::Relaxed))
    }
}

fn should_retry(e: &Error) -> bool {
    classify(e) != Decision::Stop
}

fn notify(e: &Error, delay: Duration) {
    tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "retrying");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SeededEntropy};
    use crate::error::ApiError;

    fn api(status: u16, retry_after: Option<u64>) -> Error {
        Error::new(ErrorKind::Api(ApiError::from_parts(
            status,
            b"",
            retry_after.map(Duration::from_secs),
            None,
        )))
    }

    #[test]
    fn classifier_table() {
        let retry = Decision::Retry { at_least: None };
        let table: Vec<(Error, Decision)> = vec![
            (api(400, None), Decision::Stop),
            (api(401, None), Decision::Stop),
            (api(403, None), Decision::Stop),
            (api(404, None), Decision::Stop),
            (api(409, None), Decision::Stop),
            (api(422, None), Decision::Stop),
            (api(408, None), retry),
            (
                api(423, Some(1)),
                Decision::Retry {
                    at_least: Some(Duration::from_secs(1)),
                },
            ),
            (
                api(429, Some(2)),
                Decision::Retry {
                    at_least: Some(Duration::from_secs(2)),
                },
            ),
            (api(500, None), retry),
            (api(502, None), retry),
            (api(503, None), retry),
            (api(504, None), retry),
            (
                Error::new(ErrorKind::Connect {
                    message: "refused".into(),
                }),
                retry,
            ),
            (
                Error::new(ErrorKind::Network {
                    message: "reset".into(),
                }),
                retry,
            ),
            (
                Error::new(ErrorKind::Timeout {
                    may_have_reached_server: true,
                    total: false,
                }),
                retry,
            ),
            (
                Error::new(ErrorKind::Timeout {
                    may_have_reached_server: true,
                    total: true,
                }),
                Decision::Stop,
            ),
            (
                Error::new(ErrorKind::Decode {
                    status: 200,
                    message: "x".into(),
                    body: None,
                }),
                Decision::Stop,
            ),
            (Error::invalid_request("production"), Decision::Stop),
        ];
        for (err, want) in table {
            assert_eq!(classify(&err), want, "{err}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cap = Duration::from_secs(30);
        assert_eq!(
            parse_retry_after(" 1 ", now, cap),
            Some(Duration::from_secs(1))
        );
        assert_eq!(parse_retry_after("0", now, cap), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("31", now, cap), Some(cap));
        assert_eq!(parse_retry_after("-1", now, cap), None);
        assert_eq!(parse_retry_after("1.5", now, cap), None);
        assert_eq!(parse_retry_after("", now, cap), None);
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(parse_retry_after(&past, now, cap), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(parse_retry_after(&later, now, cap), Some(cap));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now, cap),
            Some(Duration::ZERO)
        );
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
            .with_max_attempts(4)
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_millis(400))
            .with_jitter(false)
    }

    #[tokio::test]
    async fn backoff_grows_and_stops_at_max_attempts() {
        let clock = ManualClock::new();
        let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let (res, n) = run(
            &policy(),
            &dyn_clock,
            &SeededEntropy::new(1),
            None,
            |_| async { Err::<(), _>(api(503, None)) },
        )
        .await;
        assert_eq!(res.unwrap_err().status(), Some(503));
        assert_eq!(n, 4);
        let ms: Vec<u128> = clock.sleeps().iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400]);
    }

    #[tokio::test]
    async fn retry_after_raises_the_delay_and_4xx_stops_at_once() {
        let clock = ManualClock::new();
        let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let (res, n) = run(
            &policy(),
            &dyn_clock,
            &SeededEntropy::new(1),
            None,
            |n| async move {
                if n == 1 {
                    Err(api(429, Some(2)))
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(res.unwrap(), 2);
        assert_eq!(n, 2);
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(2)]);

        let (res, n) = run(
            &policy(),
            &dyn_clock,
            &SeededEntropy::new(1),
            None,
            |_| async { Err::<(), _>(api(400, None)) },
        )
        .await;
        assert_eq!(res.unwrap_err().status(), Some(400));
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn deadline_stops_retries_that_cannot_finish() {
        let clock = ManualClock::new();
        let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let deadline = clock.now() + Duration::from_millis(250);
        let (res, n) = run(
            &policy(),
            &dyn_clock,
            &SeededEntropy::new(1),
            Some(deadline),
            |_| async { Err::<(), _>(api(500, None)) },
        )
        .await;
        assert!(res.is_err());
        // 100 ms, then 200 ms would end at 300 ms > 250 ms.
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn jitter_is_seeded_and_bounded() {
        let jittered = policy().with_jitter(true);
        let mut runs = Vec::new();
        for _ in 0..2 {
            let clock = ManualClock::new();
            let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
            let _ = run(
                &jittered,
                &dyn_clock,
                &SeededEntropy::new(9),
                None,
                |_| async { Err::<(), _>(api(500, None)) },
            )
            .await;
            runs.push(clock.sleeps());
        }
        assert_eq!(runs[0], runs[1]);
        for (d, base) in runs[0].iter().zip([100u64, 200, 400]) {
            let base = Duration::from_millis(base);
            assert!(*d >= base && *d <= base * 2, "{d:?} vs {base:?}");
        }
    }
}
