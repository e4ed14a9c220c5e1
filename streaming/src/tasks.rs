//! The background tasks of one run of a source (pollers, keepers, cache writers),
//! stopped together. Dropping the group aborts every task in it, however the run
//! ends (returned, panicked, or aborted by its supervisor), so a restarted source
//! never leaves the old instance's tasks running beside the new one's.

use std::future::Future;

use tokio::task::JoinSet;

#[derive(Debug, Default)]
pub struct TaskGroup {
    set: JoinSet<()>,
}

impl TaskGroup {
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.set.spawn(task);
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn aborting_the_run_stops_its_tasks() {
        let ticks = Arc::new(AtomicU32::new(0));
        let t = ticks.clone();
        let run = tokio::spawn(async move {
            let mut group = TaskGroup::default();
            group.spawn(async move {
                loop {
                    t.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            std::future::pending::<()>().await;
        });
        tokio::time::sleep(Duration::from_millis(3500)).await;
        run.abort();
        let _ = run.await;
        let seen = ticks.load(Ordering::SeqCst);
        assert!(seen >= 3);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), seen, "no orphan left ticking");
    }
}
