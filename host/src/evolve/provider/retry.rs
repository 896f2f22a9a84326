//! The one place calls are retried: rate limits (429), overload (529), server
//! errors (5xx), timeouts and failed connections, up to `max_retries` times,
//! waiting what the server's `retry-after` says (capped) or backing off
//! exponentially. Spend limits, billing, auth, refused requests, malformed
//! replies and the night's own budget are final.

use std::time::Duration;

use super::{Provider, ProviderError, Reply, Request};

/// How often and how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try; 0 never retries.
    pub max_retries: u32,
    /// The wait before the first retry when the server names none; doubled
    /// for each retry after it.
    pub base_backoff: Duration,
    /// The longest single wait, whatever the server asks.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base_backoff: Duration::from_secs(2),
            max_wait: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first) after `error`.
    pub fn wait(&self, error: &ProviderError, retry: u32) -> Duration {
        let wait = error.retry_after().unwrap_or_else(|| {
            self.base_backoff
                .saturating_mul(2u32.saturating_pow(retry.min(30)))
        });
        wait.min(self.max_wait)
    }
}

/// A provider whose retryable failures are retried under a `RetryPolicy`.
#[derive(Debug)]
pub struct Retrying<P> {
    inner: P,
    policy: RetryPolicy,
}

impl<P: Provider> Retrying<P> {
    pub fn new(inner: P, policy: RetryPolicy) -> Retrying<P> {
        Retrying { inner, policy }
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: Provider> Provider for Retrying<P> {
    fn label(&self) -> String {
        self.inner.label()
    }

    fn complete(&self, request: &Request) -> Result<Reply, ProviderError> {
        let mut retry = 0;
        loop {
            match self.inner.complete(request) {
                Ok(reply) => return Ok(reply),
                Err(error) if error.is_retryable() && retry < self.policy.max_retries => {
                    let wait = self.policy.wait(&error, retry);
                    tracing::warn!(
                        "{error}; retry {} of {} in {} ms",
                        retry + 1,
                        self.policy.max_retries,
                        wait.as_millis()
                    );
                    std::thread::sleep(wait);
                    retry += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(retry_after: Option<Duration>) -> ProviderError {
        ProviderError::RateLimited {
            provider: "p:m".into(),
            status: 429,
            message: String::new(),
            retry_after,
        }
    }

    #[test]
    fn backoff_doubles_and_retry_after_wins_but_both_are_capped() {
        let policy = RetryPolicy {
            max_retries: 5,
            base_backoff: Duration::from_secs(2),
            max_wait: Duration::from_secs(120),
        };
        let waits: Vec<u64> = (0..8)
            .map(|n| policy.wait(&limited(None), n).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 120, 120]);
        assert_eq!(
            policy.wait(&limited(Some(Duration::from_secs(7))), 4),
            Duration::from_secs(7)
        );
        assert_eq!(
            policy.wait(&limited(Some(Duration::from_secs(3600))), 0),
            Duration::from_secs(120)
        );
        assert_eq!(
            policy.wait(&limited(None), u32::MAX),
            Duration::from_secs(120)
        );
    }
}
