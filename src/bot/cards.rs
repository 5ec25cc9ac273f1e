//! Keeping AI cards from staying "typing": every opened card is recorded in
//! [`OpenCards`] until it is finalized; a card whose finalization failed, and every card
//! a previous run left open (a crash, `kill -9`), is failed in the background with a
//! bounded number of tries on the redelivery schedule.
//!
//! Invariants: a record is cleared only after DingTalk took the card's final state; the
//! file work runs on the blocking pool, never on the async workers; ids only in logs.

use std::sync::Arc;

use super::open_cards::{OpenCard, OpenCards};
use super::redelivery::RedeliveryPolicy;
use super::Shared;
use crate::dingtalk::CardRef;

async fn on_store<R: Send + 'static>(
    shared: &Shared,
    job: impl FnOnce(&OpenCards) -> R + Send + 'static,
) -> Option<R> {
    let store = shared.open_cards.clone()?;
    tokio::task::spawn_blocking(move || job(&store)).await.ok()
}

/// Records `card` (answering `msg_id`) as open. A failed write is logged: the card is
/// still finalized by this run, only a crash would leave it open.
pub(crate) async fn remember_open(shared: &Shared, msg_id: &str, card: &CardRef) {
    let (id, c) = (msg_id.to_string(), card.clone());
    if let Some(Err(e)) = on_store(shared, move |s| s.record(&id, &c)).await {
        tracing::error!(msg_id = %msg_id, card = %card.out_track_id, error = %e, "cannot record the open AI card");
    }
}

/// Forgets `card` once DingTalk took its final state.
pub(crate) async fn forget(shared: &Shared, card: &CardRef) {
    let id = card.out_track_id.clone();
    if let Some(Err(e)) = on_store(shared, move |s| s.clear(&id)).await {
        tracing::error!(card = %card.out_track_id, error = %e, "cannot clear the open AI card record");
    }
}

/// Fails `card` with `text` in the background: bounded tries with backoff; the record is
/// cleared once DingTalk took it, else kept for the next start.
pub(crate) fn close_later(shared: &Arc<Shared>, msg_id: &str, card: CardRef, text: &str) {
    let open = OpenCard {
        msg_id: msg_id.to_string(),
        card,
    };
    tokio::spawn(close(shared.clone(), open, text.to_string(), false));
}

/// Fails every card a previous run left open (with `reply.restart_sorry_text`); the
/// messages themselves are answered by the inbox replay.
pub(crate) fn close_left_open(shared: &Arc<Shared>) {
    let Some(store) = &shared.open_cards else {
        return;
    };
    let (left, bad) = store.left_open();
    for path in bad {
        tracing::error!(path = %path.display(), "unreadable open-card record set aside");
    }
    if left.is_empty() {
        return;
    }
    tracing::info!(
        count = left.len(),
        "AI cards left open by the last run; failing them"
    );
    let text = shared.config().reply.restart_sorry_text.clone();
    for open in left {
        tokio::spawn(close(shared.clone(), open, text.clone(), true));
    }
}

async fn close(shared: Arc<Shared>, open: OpenCard, text: String, after_restart: bool) {
    let Some(channel) = shared.channel.clone() else {
        return;
    };
    let policy = RedeliveryPolicy::from_config(&shared.config().reply);
    let tries = policy.attempts.saturating_add(1);
    for n in 0..tries {
        if n > 0 {
            tokio::time::sleep(policy.spread_delay(n - 1)).await;
        }
        match channel.fail_card(&open.card, &text).await {
            Ok(()) => {
                tracing::info!(msg_id = %open.msg_id, card = %open.card.out_track_id, after_restart, "AI card failed and closed");
                if after_restart {
                    shared.delivery.card_closed();
                }
                return forget(&shared, &open.card).await;
            }
            Err(e) => {
                tracing::warn!(msg_id = %open.msg_id, card = %open.card.out_track_id, attempt = n + 1, error = %e, "AI card not closed")
            }
        }
    }
    tracing::error!(msg_id = %open.msg_id, card = %open.card.out_track_id, "AI card still open after every try; the next start tries again");
}
