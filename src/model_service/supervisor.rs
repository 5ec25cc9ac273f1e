//! The restart loop: run the child, and when it ends, wait out the backoff and start a
//! replacement, until a stop is requested.
//!
//! Invariants:
//! - at most one child of this model service exists at a time (a replacement is spawned only
//!   after the previous group was stopped);
//! - once the stop request is visible, no child is spawned, and the current one is
//!   stopped with the requested drain; the loop then returns;
//! - a dropped stop sender counts as a stop request (nothing is left unsupervised).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::child::{describe_exit, RunningChild};
use super::state::ModelServiceState;
use crate::backoff::{Backoff, BackoffPolicy};
use crate::cmdline::CommandLine;

/// Grace given to members a child left behind when it exited by itself.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// Drain used when the stop sender vanished without saying how long.
const FALLBACK_DRAIN: Duration = Duration::from_secs(5);

/// Requests a stop with a drain budget (`Some(drain)`); `None` means "keep running".
pub(crate) type StopSignal = watch::Receiver<Option<Duration>>;

/// Everything the restart loop needs.
pub(crate) struct Supervisor {
    pub(crate) cmd: CommandLine,
    pub(crate) state: Arc<ModelServiceState>,
    pub(crate) stop: StopSignal,
    pub(crate) policy: BackoffPolicy,
}

/// How one child's run ended.
enum Ended {
    /// It exited (or was killed) by itself after running this long.
    Exited(Duration),
    /// A stop was requested and the child has been stopped.
    Stopped,
}

impl Supervisor {
    /// Supervises `first` and its replacements until a stop is requested.
    pub(crate) async fn run(mut self, first: RunningChild) {
        let mut backoff = Backoff::new(self.policy);
        let mut child = Some(first);
        loop {
            let ran_for = match child.take() {
                Some(c) => match self.run_one(c).await {
                    Ended::Stopped => return,
                    Ended::Exited(ran_for) => ran_for,
                },
                // The last spawn failed: it "ran" for no time at all.
                None => Duration::ZERO,
            };
            let delay = backoff.after_run(ran_for);
            tracing::warn!(
                command = %self.cmd.display,
                delay_ms = delay.as_millis() as u64,
                "model service ended; restarting after the backoff delay"
            );
            if self.stop_within(delay).await.is_some() || stop_requested(&self.stop).is_some() {
                return;
            }
            self.state.restart_attempted();
            match RunningChild::spawn(&self.cmd) {
                Ok(c) => child = Some(c),
                Err(e) => {
                    let how = format!(
                        "restart failed: cannot run {}: {e}",
                        self.cmd.program.display()
                    );
                    tracing::error!(command = %self.cmd.display, "{how}");
                    self.state.child_ended(how, true);
                }
            }
        }
    }

    /// Runs one child until it ends or a stop is requested.
    async fn run_one(&mut self, mut child: RunningChild) -> Ended {
        let started = Instant::now();
        let pid = child.pid();
        self.state.child_started(pid);
        tracing::info!(pid, command = %self.cmd.display, "model service started");
        tokio::select! {
            status = child.wait() => {
                let ran_for = started.elapsed();
                let status = status.ok();
                // Clear whatever the leader left in its group before a replacement starts.
                child.stop(LEFTOVER_GRACE).await;
                let how = describe_exit(status);
                tracing::warn!(pid, ran_ms = ran_for.as_millis() as u64, "model service exited: {how}");
                self.state.child_ended(how, true);
                Ended::Exited(ran_for)
            }
            drain = wait_for_stop(&mut self.stop) => {
                tracing::info!(pid, drain_ms = drain.as_millis() as u64, "stopping the model service (SIGTERM to its process group)");
                let how = describe_exit(child.stop(drain).await);
                tracing::info!(pid, "model service stopped: {how}");
                self.state
                    .child_ended(format!("stopped by the daemon: {how}"), false);
                Ended::Stopped
            }
        }
    }

    /// Sleeps `delay` unless a stop arrives first; returns the stop's drain if it did.
    async fn stop_within(&mut self, delay: Duration) -> Option<Duration> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => None,
            drain = wait_for_stop(&mut self.stop) => Some(drain),
        }
    }
}

/// The current stop request, if any (a dropped sender counts as one).
fn stop_requested(stop: &StopSignal) -> Option<Duration> {
    match stop.has_changed() {
        Err(_) => Some(stop.borrow().unwrap_or(FALLBACK_DRAIN)),
        Ok(_) => *stop.borrow(),
    }
}

/// Resolves with the drain budget once a stop is requested (at once if it already was).
async fn wait_for_stop(stop: &mut StopSignal) -> Duration {
    match stop.wait_for(Option::is_some).await {
        Ok(value) => value.unwrap_or(FALLBACK_DRAIN),
        Err(_) => FALLBACK_DRAIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            stable_after: Duration::from_secs(60),
        }
    }

    async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !f() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    #[tokio::test]
    async fn restarts_a_crashing_child_then_stops_for_good() {
        let cmd = CommandLine::sh("exit 7");
        let state = Arc::new(ModelServiceState::default());
        let (tx, rx) = watch::channel(None);
        let first = RunningChild::spawn(&cmd).expect("spawn sh");
        let sup = Supervisor {
            cmd,
            state: state.clone(),
            stop: rx,
            policy: fast(),
        };
        let task = tokio::spawn(sup.run(first));
        assert!(until(Duration::from_secs(10), || state.snapshot().restarts >= 3).await);
        assert_eq!(state.snapshot().last_exit.as_deref(), Some("exit code 7"));
        tx.send_replace(Some(Duration::from_secs(1)));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("supervisor ends")
            .expect("no panic");
        assert_eq!(state.snapshot().child_pid, None);
    }

    /// A stop that arrives while the loop waits out its backoff ends the loop at once,
    /// without a replacement: the hour-long delay would outlast the test's 10 s wait, so
    /// the loop ending at all shows the stop cut the delay, and `restarts` shows nothing
    /// was spawned after it.
    #[tokio::test]
    async fn a_stop_during_the_backoff_delay_starts_no_replacement() {
        let cmd = CommandLine::sh("exit 7");
        let state = Arc::new(ModelServiceState::default());
        let (tx, rx) = watch::channel(None);
        let first = RunningChild::spawn(&cmd).expect("spawn sh");
        let hour = Duration::from_secs(3600);
        let policy = BackoffPolicy {
            initial: hour,
            max: hour,
            stable_after: hour,
        };
        let task = tokio::spawn(
            Supervisor {
                cmd,
                state: state.clone(),
                stop: rx,
                policy,
            }
            .run(first),
        );
        // The child's end is recorded just before the backoff delay starts.
        assert!(
            until(Duration::from_secs(10), || state
                .snapshot()
                .last_exit
                .is_some())
            .await,
            "the child never ended"
        );
        tx.send_replace(Some(Duration::from_secs(1)));
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the stop cut the backoff delay short")
            .expect("no panic");
        let after = state.snapshot();
        assert_eq!(
            after.restarts, 0,
            "a replacement was started after the stop"
        );
        assert_eq!(after.child_pid, None);
    }

    #[tokio::test]
    async fn a_dropped_stop_sender_stops_the_child() {
        let cmd = CommandLine::sh("sleep 600");
        let state = Arc::new(ModelServiceState::default());
        let (tx, rx) = watch::channel(None);
        let first = RunningChild::spawn(&cmd).expect("spawn sh");
        let task = tokio::spawn(
            Supervisor {
                cmd,
                state: state.clone(),
                stop: rx,
                policy: fast(),
            }
            .run(first),
        );
        assert!(
            until(Duration::from_secs(5), || state
                .snapshot()
                .child_pid
                .is_some())
            .await
        );
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("supervisor ends")
            .expect("no panic");
        let last = state.snapshot().last_exit.unwrap_or_default();
        assert!(
            last.starts_with("stopped by the daemon: killed by SIGTERM"),
            "{last}"
        );
    }
}
