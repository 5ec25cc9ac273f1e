//! Whether a taken message is durable yet: the sink that took it (the bot's journal) may
//! hand it on while its sync still runs, so that the turn's own work (the prompt, the
//! model call) overlaps the disk's, and settles the message's [`Durable`] once the sync
//! ended.
//!
//! Invariants: a [`Durable`] resolves once, to `true` (the message is in a synced file)
//! or `false` (it never will be: its sync failed, or the sink went away without saying);
//! a message that never waited for a sync (parsed, replayed from the journal, taken from
//! the shared inbox) is durable from the start. Whoever holds a message must wait for
//! `true` before anything outside the process sees its turn (a reply, a card, a record
//! of it in the journal): a message whose sync failed is forgotten and delivered again.

use tokio::sync::watch;

/// Resolves when the message's sink settled it; cheap to clone (every clone sees the
/// same outcome). Not part of the message's identity: two messages compare equal
/// whatever their durability.
#[derive(Clone, Default)]
pub struct Durable {
    /// `None`: durable from the start. `Some`: settled by the [`DurableSetter`].
    pending: Option<watch::Receiver<Option<bool>>>,
}

/// The sink's side of a [`Durable`]: settled once; dropped unsettled, it settles `false`.
pub(crate) struct DurableSetter {
    tx: watch::Sender<Option<bool>>,
}

impl Durable {
    /// A message not durable yet, and the setter that settles it.
    pub(crate) fn pending() -> (Durable, DurableSetter) {
        let (tx, rx) = watch::channel(None);
        (Durable { pending: Some(rx) }, DurableSetter { tx })
    }

    /// Waits until the message is settled: `true` once it is durable, `false` when it
    /// never will be. Returns at once for a message that was durable from the start.
    pub async fn wait(&self) -> bool {
        let Some(rx) = &self.pending else {
            return true;
        };
        let mut rx = rx.clone();
        let settled = match rx.wait_for(Option::is_some).await {
            Ok(settled) => *settled,
            // The setter went away unsettled: nothing will make the message durable.
            Err(_) => None,
        };
        settled.unwrap_or(false)
    }
}

impl DurableSetter {
    /// Settles the message: durable (`true`) or not (`false`). No one waiting is fine.
    pub(crate) fn settle(self, durable: bool) {
        self.tx.send_replace(Some(durable));
    }
}

impl PartialEq for Durable {
    fn eq(&self, _: &Durable) -> bool {
        true
    }
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.pending {
            None => "durable",
            Some(rx) => match *rx.borrow() {
                None if rx.has_changed().is_err() => "failed",
                None => "pending",
                Some(true) => "durable",
                Some(false) => "failed",
            },
        };
        f.write_str(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_message_waits_for_its_settling_and_every_clone_sees_it() {
        assert!(Durable::default().wait().await, "durable from the start");
        for outcome in [true, false] {
            let (durable, setter) = Durable::pending();
            let clone = durable.clone();
            let waiting = tokio::spawn(async move { clone.wait().await });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished(), "resolved before it was settled");
            setter.settle(outcome);
            assert_eq!(waiting.await.unwrap(), outcome);
            assert_eq!(durable.wait().await, outcome, "a later wait");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_setter_dropped_unsettled_means_never_durable() {
        let (durable, setter) = Durable::pending();
        let waiting = tokio::spawn({
            let durable = durable.clone();
            async move { durable.wait().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(setter);
        let waited = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(!waited.expect("no hang").unwrap());
        assert!(!durable.wait().await);
        assert_eq!(format!("{durable:?}"), "failed");
    }
}
