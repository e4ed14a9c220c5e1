//! Runs each source as its own task and restarts it with bounded, jittered backoff
//! if it panics or stops on its own, so one broker failing never stops another.

use std::future::Future;
use std::time::Duration;

use backoff::backoff::Backoff;
use tokio_util::sync::CancellationToken;

/// How long a cancelled run may take to clean up after itself.
pub const CLEANUP_GRACE: Duration = Duration::from_secs(5);

/// Runs `make()` until `cancel` fires. A run that ends by itself (or panics) is
/// restarted after a backoff; a run that lasted a minute resets the backoff.
pub async fn supervise<F, Fut>(name: &'static str, cancel: CancellationToken, make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = streaming::retry::task_restart();
    loop {
        let started = tokio::time::Instant::now();
        let mut run = tokio::spawn(make());
        let outcome = tokio::select! {
            res = &mut run => res,
            _ = cancel.cancelled() => {
                // The run watches the same token: let it run its own cleanup (Close
                // frames, the listen key's DELETE) before it is cut short.
                if tokio::time::timeout(CLEANUP_GRACE, &mut run).await.is_err() {
                    tracing::warn!(task = name, "did not stop within the cleanup grace; aborted");
                    run.abort();
                }
                return;
            }
        };
        if cancel.is_cancelled() {
            return;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            backoff.reset();
        }
        let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(30));
        match outcome {
            Ok(()) => tracing::warn!(
                task = name,
                restart_in_ms = wait.as_millis() as u64,
                "task stopped; restarting"
            ),
            Err(err) => {
                tracing::error!(task = name, error = %err, restart_in_ms = wait.as_millis() as u64, "task failed; restarting")
            }
        }
        metrics::counter!("greekstream_task_restarts_total", "task" => name).increment(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_run_gets_to_clean_up_and_one_that_hangs_is_cut_short() {
        let cleaned = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let c = cleaned.clone();
        let token = cancel.clone();
        let sup = tokio::spawn(supervise("polite", cancel.clone(), move || {
            let (c, token) = (c.clone(), token.clone());
            async move {
                token.cancelled().await;
                // e.g. DELETE the listen key
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.fetch_add(1, Ordering::SeqCst);
            }
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
        sup.await.unwrap();
        assert_eq!(cleaned.load(Ordering::SeqCst), 1, "cleanup ran");

        let cancel = CancellationToken::new();
        let sup = tokio::spawn(supervise("stuck", cancel.clone(), || async {
            std::future::pending::<()>().await;
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
        let started = tokio::time::Instant::now();
        sup.await.unwrap();
        assert!(started.elapsed() <= CLEANUP_GRACE + Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_until_cancelled() {
        let runs = Arc::new(AtomicU32::new(0));
        let cancel = CancellationToken::new();
        let r = runs.clone();
        let sup = tokio::spawn(supervise("flaky", cancel.clone(), move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 3 {
                    panic!("boom");
                }
                std::future::pending::<()>().await;
            }
        }));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three panics, then a run that stays up"
        );
        cancel.cancel();
        sup.await.unwrap();
    }
}
