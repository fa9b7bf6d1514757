//! Retrying a dependency (broker, ClickHouse) until it answers, with capped exponential backoff.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// First and largest wait between attempts.
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// Calls `attempt` until it succeeds, logging every failure with `what` and the next delay.
/// Returns `None` if `shutdown` is cancelled first.
pub async fn until_ok<T, E, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: impl FnMut() -> Fut,
) -> Option<T>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = FIRST_DELAY;
    loop {
        // An attempt can take seconds (a metadata request to unreachable brokers): shutdown
        // must not wait for it.
        let result = tokio::select! {
            _ = shutdown.cancelled() => return None,
            result = attempt() => result,
        };
        match result {
            Ok(value) => return Some(value),
            Err(err) => tracing::warn!(error = %err, retry_in = ?delay, "{what} is not ready"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}
