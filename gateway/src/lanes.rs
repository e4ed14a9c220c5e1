//! One command at a time per sub-account, in parallel across them; in each
//! account's lane, waiting kill switches (closes, cancels, admin actions) go before
//! waiting starts. A command that panics is answered 500 and the lane goes on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::reply::Reply;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a command's work in its lane gives back: its reply, or — for work that waits
/// on the venue after its last write (a trade waiting for its fill) — the rest, run
/// outside the lane so the account's next command does not wait for it.
pub(super) enum Step {
    Done(Reply),
    Then(Pin<Box<dyn Future<Output = Reply> + Send>>),
}

impl From<Reply> for Step {
    fn from(r: Reply) -> Self {
        Step::Done(r)
    }
}

#[derive(Clone)]
struct Lane {
    kill: mpsc::UnboundedSender<Job>,
    start: mpsc::UnboundedSender<Job>,
}

#[derive(Clone, Default)]
pub(super) struct Lanes {
    lanes: Arc<Mutex<HashMap<String, Lane>>>,
}

impl Lanes {
    /// Runs `work` in `account`'s lane and returns its reply (a [`Step::Then`] is run
    /// after the lane is free).
    pub(super) async fn run<S: Into<Step> + Send + 'static>(
        &self,
        account: &str,
        kill: bool,
        work: impl Future<Output = S> + Send + 'static,
    ) -> Reply {
        let failed = |e: tokio::task::JoinError| {
            tracing::error!(error = %e, "a command failed inside the engine");
            Reply::error("INTERNAL", "Internal error")
        };
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::pin(async move {
            let step = match tokio::spawn(work).await {
                Ok(s) => s.into(),
                Err(e) => Step::Done(failed(e)),
            };
            let _ = tx.send(step);
        });
        let lane = self.lane(account);
        let sent = if kill {
            lane.kill.send(job)
        } else {
            lane.start.send(job)
        };
        if sent.is_err() {
            return Reply::error("INTERNAL", "Internal error: the account's lane stopped");
        }
        match rx.await {
            Ok(Step::Done(r)) => r,
            Ok(Step::Then(rest)) => tokio::spawn(rest).await.unwrap_or_else(failed),
            Err(_) => Reply::error("INTERNAL", "Internal error"),
        }
    }

    fn lane(&self, account: &str) -> Lane {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        if let Some(l) = lanes.get(account) {
            return l.clone();
        }
        let (kill, mut kill_rx) = mpsc::unbounded_channel::<Job>();
        let (start, mut start_rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            loop {
                let job = tokio::select! {
                    biased;
                    Some(j) = kill_rx.recv() => j,
                    Some(j) = start_rx.recv() => j,
                    else => return,
                };
                job.await;
            }
        });
        let lane = Lane { kill, start };
        lanes.insert(account.to_owned(), lane.clone());
        lane
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn waiting_kill_switches_go_before_waiting_starts_and_panics_are_answered() {
        let lanes = Lanes::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        let log = |name: &'static str, o: Arc<Mutex<Vec<&'static str>>>| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            o.lock().unwrap().push(name);
            Reply::ok(200, json!({}))
        };
        let busy = tokio::spawn({
            let l = lanes.clone();
            let o = order.clone();
            async move { l.run("a", false, log("first", o)).await }
        });
        tokio::task::yield_now().await;
        let start = tokio::spawn({
            let l = lanes.clone();
            let o = order.clone();
            async move { l.run("a", false, log("start", o)).await }
        });
        tokio::task::yield_now().await;
        let kill = tokio::spawn({
            let l = lanes.clone();
            let o = order.clone();
            async move { l.run("a", true, log("kill", o)).await }
        });
        let other = lanes.run("b", false, log("other", order.clone())).await;
        for h in [busy, start, kill] {
            assert_eq!(h.await.unwrap().status, 200);
        }
        assert_eq!(other.status, 200);
        let seen = order.lock().unwrap().clone();
        let pos = |n| seen.iter().position(|s| *s == n).unwrap();
        assert!(
            pos("first") < pos("kill") && pos("kill") < pos("start"),
            "{seen:?}"
        );
        let boom = async {
            if std::hint::black_box(true) {
                panic!("boom")
            }
            Reply::ok(200, json!({}))
        };
        let r = lanes.run("a", false, boom).await;
        assert_eq!((r.status, r.code), (500, Some("INTERNAL")));
        assert_eq!(
            lanes
                .run("a", false, log("after", order.clone()))
                .await
                .status,
            200
        );
    }
}
