//! One turn, from an accepted message to its reply.
//!
//! Invariants:
//! - every accepted message gets exactly one final reply (answer, busy, fallback,
//!   unsupported, denied or rate-limited), and it is marked answered in the journal right
//!   after DingTalk accepted that reply (never before); the one exception is a busy reply
//!   DingTalk did not take within the delivery limit (under a flood, the send rate cannot
//!   carry one per message): it is not retried, and the message is marked answered
//!   without it, counted in `busy_replies.not_sent`;
//! - an AI card, once opened, is always finalized (finished or failed), and recorded on
//!   disk until it is, so a card a killed daemon left open is failed on the next start;
//! - a reply DingTalk does not take (but a busy one) is retried in the background
//!   (bounded, with backoff) and then replaced by `reply.undelivered_text`: never parked
//!   until a restart;
//! - nothing here logs message text, prompts or answers unless
//!   `logging.log_message_text` is on (ids, lengths, hashes and figures only).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::busy::BusyCause;
use super::journal::RecordedReply;
use super::Shared;
use crate::config::Config;
use crate::conversation::command::ChatCommand;
use crate::dingtalk::limiter::AnswerComing;
use crate::dingtalk::{CardRef, CardStream, Channel, Inbound, InboundContent, OutgoingReply};
use crate::logging::text_for_log;
use crate::model::{ChatMessage, Turn, TurnHooks, TurnOutcome};

use super::conversations::Admission;
use super::line_cap::Place;
use super::order::Ticket;
use super::redelivery::{redeliver, LateReply, RedeliveryPolicy};

/// The outcome label of a busy reply (`reply.busy_text`, whichever wait caused it).
const BUSY: &str = "busy";

/// Receives messages once the journal wrote them (their sync may still run: a turn waits
/// for it before its first effect outside the process, see [`stored`]) and runs each turn
/// in its own task, with a ticket taken here, in arrival order, so a conversation's turns
/// run one after another (the ticket is the one mechanism that orders a conversation); the model
/// limiter bounds how many reach the model and keeps conversations fair.
pub(crate) async fn dispatch(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Inbound>) {
    while let Some(msg) = rx.recv().await {
        let arrived = Instant::now();
        shared.seen.record(&msg);
        if !shared.accepting.load(Ordering::SeqCst) {
            tracing::info!(msg_id = %msg.msg_id, "shutting down: message kept in the journal for the next start");
            continue;
        }
        let ticket = shared.order.ticket(&msg.conversation_id);
        let place = shared.line_cap.enter(&msg.conversation_id);
        let shared = shared.clone();
        tokio::spawn(run_turn_owned(shared, msg, arrived, ticket, place));
    }
}

/// [`run_turn`] owning its `Arc`, to be spawned.
async fn run_turn_owned(
    shared: Arc<Shared>,
    msg: Inbound,
    arrived: Instant,
    ticket: Ticket,
    place: Option<Place>,
) {
    run_turn(&shared, msg, arrived, ticket, place).await
}

/// Takes the shared inbox's deliveries (`state.backend: redis`): each is held (its reply
/// marker taken) and run as a turn on its own task, in its conversation's line across
/// the replicas (see `bot::redis_inbox`). Once shutdown began, deliveries are left in
/// Redis, pending, for the other replicas to take over after the lease.
pub(crate) async fn dispatch_shared(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<super::redis_inbox::Delivery>,
) {
    let Some(inbox) = shared.inbox.clone() else {
        return;
    };
    while let Some(delivery) = rx.recv().await {
        let arrived = Instant::now();
        if !shared.accepting.load(Ordering::SeqCst) {
            // Dropping the receiver stops the reads: what was read and not held stays
            // pending in Redis and is taken over after the lease.
            tracing::info!(msg_id = %delivery.msg.msg_id, "shutting down: message left in the shared inbox for another replica");
            break;
        }
        shared.seen.record(&delivery.msg);
        let place = shared.line_cap.enter(&delivery.msg.conversation_id);
        let shared = shared.clone();
        let inbox = inbox.clone();
        tokio::spawn(async move {
            if let Some(ticket) = inbox.hold(&delivery).await {
                let ticket = Ticket::Shared(ticket);
                run_turn(&shared, delivery.msg, arrived, ticket, place).await;
            }
        });
    }
}

/// Answers what a previous run accepted but did not answer (`pending`, oldest first, as
/// the journal recovered it: answered ids are never among them). A message whose session
/// webhook expired is told sorry (through the OpenAPI) instead of answered late.
///
/// A message whose multi-part reply was recorded before the stop is not asked of the model
/// again: the parts DingTalk had not accepted are sent (see [`resume`]).
pub(crate) fn replay(
    shared: &Arc<Shared>,
    pending: Vec<Inbound>,
    mut replies: HashMap<String, RecordedReply>,
) {
    if pending.is_empty() {
        return;
    }
    tracing::info!(
        count = pending.len(),
        "replaying messages accepted before the last stop"
    );
    for msg in pending {
        shared.seen.record(&msg);
        let ticket = shared.order.ticket(&msg.conversation_id);
        let place = shared.line_cap.enter(&msg.conversation_id);
        let shared = shared.clone();
        if let Some(recorded) = replies.remove(&msg.msg_id) {
            tokio::spawn(async move { resume(&shared, msg, recorded, ticket).await });
            continue;
        }
        tokio::spawn(async move {
            let expired = msg
                .session_webhook_expires_ms
                .is_some_and(|t| t <= crate::clock::now_ms());
            if expired {
                let cfg = shared.config();
                finish(
                    &shared,
                    &msg,
                    &cfg.reply.restart_sorry_text,
                    "restart_sorry",
                )
                .await;
            } else {
                run_turn(&shared, msg, Instant::now(), ticket, place).await;
            }
        });
    }
}

/// Sends the rest of a reply a previous run recorded (resuming after the parts it
/// recorded as sent), then completes the message. The conversation's later turns wait.
async fn resume(shared: &Arc<Shared>, msg: Inbound, recorded: RecordedReply, ticket: Ticket) {
    let _inflight = shared.inflight.enter();
    let Some(channel) = shared.channel.as_ref() else {
        return;
    };
    tracing::info!(
        msg_id = %msg.msg_id, sent = recorded.sent, parts = recorded.parts.len(),
        "resuming a reply recorded before the last stop"
    );
    let mut reply = OutgoingReply::resume(recorded.parts, recorded.markdown, recorded.sent);
    record_progress(shared, &msg, &mut reply);
    send_and_complete(shared, channel, &msg, reply, "resumed").await;
    drop(ticket);
}

/// A turn: holds its place in the conversation's line (`None`, taken by the dispatcher,
/// when `limits.queue.max_waiting` turns already waited there: busy at once, see
/// `bot::line_cap`), waits for the conversation's earlier turns, then answers (see
/// [`answer`]).
///
/// Invariant: while a turn waits in line its task holds only this function's small state
/// (the message, the ticket, its place, the wait; ~2 KiB in a debug build): the answering state,
/// ~7 KiB (the model call, the reply's delivery), is allocated once the turn's place in
/// line came. At most `limits.queue.max_waiting` turns of a conversation wait in its line
/// (64 by default), so a flood into one conversation holds that many waiting turns, not
/// every message of the last `limits.queue.max_wait_ms` (issue 12; tests:
/// `a_turn_waiting_in_line_holds_little_memory`,
/// `tests/bot/e2e_bot.rs::a_flood_into_one_conversation_waits_in_a_bounded_line`).
async fn run_turn(
    shared: &Arc<Shared>,
    msg: Inbound,
    arrived: Instant,
    mut ticket: Ticket,
    place: Option<Place>,
) {
    let _guard = shared.inflight.enter();
    let cfg = shared.config();
    let Some(channel) = shared.channel.as_ref() else {
        return;
    };
    let mut turn = Turn {
        conversation_id: msg.conversation_id.clone(),
        user_id: msg.sender_staff_id.clone(),
        kind: msg.conversation_kind,
        arrived,
        waited_in_line: Duration::ZERO,
    };
    // Held to the turn's end, or until its wait in line ran out: the turn being answered
    // counts in its line. Taken by the dispatcher, in arrival order (see `bot::line_cap`).
    let Some(place) = place else {
        // A message another replica ended is not told anything.
        if ticket.finished_elsewhere() {
            return;
        }
        tracing::info!(msg_id = %msg.msg_id, "the conversation's line is full");
        shared.busy.count(BusyCause::LineFull);
        busy_out_of_line(shared, &cfg, &msg, &mut ticket).await;
        return;
    };
    let Some(waited_in_line) = wait_in_line(shared, &msg, &turn, &mut ticket).await else {
        drop(place);
        busy_out_of_line(shared, &cfg, &msg, &mut ticket).await;
        return;
    };
    turn.waited_in_line = waited_in_line;
    if ticket.finished_elsewhere() {
        tracing::info!(msg_id = %msg.msg_id, "answered by another replica meanwhile; nothing to do");
        return;
    }
    Box::pin(answer(shared, &cfg, channel, msg, turn, ticket)).await;
}

/// Tells a turn the line will not answer that the bot is busy, after taking it out of its
/// conversation's line, so the turns behind it go on while its busy reply waits for a send
/// slot (up to `REPLY_DELIVERY_LIMIT`, 10 s). Holding the line for it had stopped a flooded
/// group's answers: the line reached a turn still sending its busy reply, every turn
/// behind ran out of time in turn, and the model idled (issue 12). A busy reply may thus
/// reach the group after a later message's answer. The ticket itself is held through the
/// reply, as for every reply: with the shared inbox, dropping it ends the message there.
async fn busy_out_of_line(shared: &Arc<Shared>, cfg: &Config, msg: &Inbound, ticket: &mut Ticket) {
    ticket.leave_line().await;
    // Boxed: a reply's delivery is ~2.6 KiB of state, which every waiting turn would
    // otherwise hold (see [`run_turn`]).
    Box::pin(finish(shared, msg, &cfg.reply.busy_text, BUSY)).await;
}

/// The turn once its place in line came: a chat command, or the question to the model and
/// the reply; the ticket is held to the end.
async fn answer(
    shared: &Arc<Shared>,
    cfg: &Config,
    channel: &Channel,
    msg: Inbound,
    turn: Turn,
    mut ticket: Ticket,
) {
    let arrived = turn.arrived;
    // A chat command waits its turn like any message (a `/reset` sent after a question
    // is answered after that question, and forgets it), then is answered without the
    // model (see [`run_command`]).
    if let InboundContent::Text(t) = &msg.content {
        if let Some(cmd) = ChatCommand::parse(t, &cfg.commands) {
            return run_command(shared, cfg, &msg, cmd, ticket).await;
        }
    }
    let Some(text) = question_text(shared, cfg, &msg).await else {
        return;
    };
    if !admitted(shared, cfg, &msg).await {
        return;
    }
    load_shared_memory(shared, &msg.conversation_id).await;
    let hooks = Hooks {
        shared,
        cfg,
        conversation: &msg.conversation_id,
        text: &text,
        progress: None,
        coming: None,
    };
    let use_card = cfg
        .channel
        .as_ref()
        .is_some_and(|c| c.dingtalk.card_template_id.is_some());
    // An AI card is visible once opened, before the model's answer: its message must be
    // durable and its reply confirmed before (text replies wait and are confirmed right
    // before they are sent).
    if use_card && !(stored(&msg).await && may_send(shared, &msg).await) {
        return;
    }
    let outcome = if use_card {
        answer_in_card(shared, channel, &msg, &turn, hooks, &mut ticket).await
    } else {
        answer_in_text(shared, channel, &msg, &turn, hooks, &mut ticket).await
    };
    if !msg.durable.wait().await {
        // Not stored (see [`stored`]): nothing was sent, nothing is logged as answered.
        return;
    }
    log_outcome(shared, cfg, &msg, &text, arrived, &outcome);
    store_shared_memory(shared, cfg, &msg).await;
    // The ticket (the conversation's place in line) is held to here, through any fallback
    // and the reply's delivery: the next turn of the conversation starts after this one
    // (when no model slot came, only until its busy reply was ready to send).
    drop(ticket);
}

/// With the shared memory, replaces this replica's memory of the conversation with the
/// one in Redis (the turn is the conversation's only one running, on any replica).
async fn load_shared_memory(shared: &Shared, conversation: &str) {
    let Some(memory) = &shared.shared_memory else {
        return;
    };
    match memory.load(conversation).await {
        Ok(exchanges) => shared.conversations.load_history(conversation, &exchanges),
        Err(e) => {
            tracing::warn!(conversation, error = %e, "shared memory not read; using this replica's")
        }
    }
}

/// With the shared memory, appends the exchange this turn answered, before the turn ends
/// (so the conversation's next turn, on any replica, sees it); not when this replica gave
/// the reply up to another.
async fn store_shared_memory(shared: &Shared, cfg: &Config, msg: &Inbound) {
    let Some(memory) = &shared.shared_memory else {
        return;
    };
    let gave_up = shared
        .inbox
        .as_ref()
        .is_some_and(|i| i.gave_up(&msg.msg_id));
    if gave_up {
        memory.flush_discard(&msg.conversation_id);
    } else {
        memory.flush(cfg, &msg.conversation_id).await;
    }
}

/// Waits for the conversation's earlier turns, at most `limits.queue.max_wait_ms` and at
/// most until the turn's own budget (`timeout_ms` from its arrival) leaves too little to
/// start the model call ([`crate::model::budget::last_useful_send`]); that wait
/// counts against the same bound as the wait for a model slot. `None` when it ran out
/// (counted and logged as busy behind its conversation: the model never saw it, so it is
/// no model timeout); the caller then tells the message so.
async fn wait_in_line(
    shared: &Arc<Shared>,
    msg: &Inbound,
    turn: &Turn,
    ticket: &mut Ticket,
) -> Option<Duration> {
    let since = tokio::time::Instant::now();
    // The bound the daemon started with, as for the model slot's wait: `limits` changed
    // by a reload apply at the next start (the reload says so).
    let max_wait = shared.router.max_wait();
    let time_to_start = || shared.router.time_to_start(turn);
    let limit = time_to_start().map_or(max_wait, |left| left.min(max_wait));
    let due = ticket.wait_turn(limit).await;
    // Due with no time left to start the model call (a race at the bound) is the same
    // wait that ran out; a message ended by another replica is not told anything.
    if ticket.finished_elsewhere() || (due && time_to_start() != Some(Duration::ZERO)) {
        return Some(since.elapsed());
    }
    tracing::info!(msg_id = %msg.msg_id, "earlier turns of the conversation took too long");
    shared.busy.count(BusyCause::BehindConversation);
    None
}

/// The text to ask the model; `None` when the message has none (it was then answered
/// with `reply.unsupported_text`).
async fn question_text(shared: &Arc<Shared>, cfg: &Config, msg: &Inbound) -> Option<String> {
    match &msg.content {
        InboundContent::Text(t) if !t.is_empty() => return Some(t.clone()),
        InboundContent::Text(_) => {
            finish(shared, msg, &cfg.reply.unsupported_text, "empty").await;
        }
        InboundContent::Unsupported { msgtype } => {
            tracing::info!(msg_id = %msg.msg_id, %msgtype, "unsupported message type");
            finish(shared, msg, &cfg.reply.unsupported_text, "unsupported").await;
        }
    }
    None
}

/// Applies access and rate limits; a refused message is answered here (false).
async fn admitted(shared: &Arc<Shared>, cfg: &Config, msg: &Inbound) -> bool {
    let (text, label) = match shared.conversations.admit(msg) {
        Admission::Allowed => return true,
        Admission::Denied => (&cfg.reply.denied_text, "denied"),
        Admission::RateLimited => (&cfg.reply.rate_limited_text, "rate_limited"),
    };
    finish(shared, msg, text, label).await;
    false
}

/// Logs and counts how a turn ended (figures and classes only, unless
/// `logging.log_message_text`). One line per turn besides the ingress's "robot message
/// received" (its arrival): the question's conversation, kind and text (length and keyed
/// hash) are logged here, with the outcome, not on a line of their own.
fn log_outcome(
    shared: &Shared,
    cfg: &Config,
    msg: &Inbound,
    question: &str,
    arrived: Instant,
    outcome: &TurnOutcome,
) {
    let ms = arrived.elapsed().as_millis() as u64;
    let show = |t| text_for_log(t, cfg.logging.log_message_text);
    let (conversation, kind) = (&msg.conversation_id, msg.conversation_kind);
    match outcome {
        TurnOutcome::Answer {
            model,
            fell_back,
            text: answer,
        } => {
            tracing::info!(
                msg_id = %msg.msg_id, %conversation, ?kind, text = %show(question),
                %model, fell_back, ms, answer = %show(answer), "answered"
            );
        }
        TurnOutcome::Busy => shared.busy.count(BusyCause::ModelQueue),
        TurnOutcome::Failed {
            reason,
            timed_out,
            unreachable,
        } => {
            tracing::warn!(
                msg_id = %msg.msg_id, %conversation, ?kind, text = %show(question),
                %reason, timed_out, unreachable, ms, "model failed; fallback reply sent"
            );
        }
    }
    crate::ops::metrics::observed().turn_finished(arrived.elapsed());
}

/// The label an outcome is completed under (logs only).
fn outcome_label(outcome: &TurnOutcome) -> &'static str {
    match outcome {
        TurnOutcome::Answer { .. } => "answer",
        TurnOutcome::Busy => BUSY,
        TurnOutcome::Failed { .. } => "fallback",
    }
}

/// The user-facing text for an outcome.
fn reply_text<'a>(cfg: &'a Config, outcome: &'a TurnOutcome) -> &'a str {
    match outcome {
        TurnOutcome::Answer { text, .. } if !text.trim().is_empty() => text,
        TurnOutcome::Failed {
            unreachable: true, ..
        } => &cfg.reply.unreachable_text,
        TurnOutcome::Answer { .. } | TurnOutcome::Failed { .. } => &cfg.reply.fallback_text,
        TurnOutcome::Busy => &cfg.reply.busy_text,
    }
}

fn markdown(cfg: &Config) -> bool {
    cfg.reply.format == crate::config::ReplyFormat::Markdown
}

/// Builds the prompt once the model slot is granted and records the answer in memory
/// before the slot is released, so a conversation's next turn sees this one.
struct Hooks<'a> {
    shared: &'a Shared,
    cfg: &'a Config,
    conversation: &'a str,
    text: &'a str,
    /// Where streamed text goes (AI cards).
    progress: Option<watch::Sender<String>>,
    /// From the model slot's grant until the hooks are dropped (after the reply's
    /// delivery): the answer is on its way, and busy replies leave it a send slot.
    coming: Option<AnswerComing<'a>>,
}

impl TurnHooks for Hooks<'_> {
    fn prepare(&mut self) -> Vec<ChatMessage> {
        if self.coming.is_none() {
            self.coming = self
                .shared
                .channel
                .as_ref()
                .map(|c| c.answer_coming(self.conversation));
        }
        self.shared
            .conversations
            .prompt(self.cfg, self.conversation, self.text)
    }
    fn progress(&mut self, full_text: &str) {
        if let Some(tx) = &self.progress {
            let _ = tx.send(full_text.to_string());
        }
    }
    fn answered(&mut self, answer: &str) {
        self.shared
            .conversations
            .remember(self.conversation, self.text, answer);
        if let Some(memory) = &self.shared.shared_memory {
            memory.stage(self.conversation, self.text, answer);
        }
    }
}

/// Longest wait for DingTalk to take the "thinking" notice.
const THINKING_NOTICE_SEND_LIMIT: Duration = Duration::from_secs(2);

/// Plain reply, with the optional "thinking" notice when the model is slow.
async fn answer_in_text(
    shared: &Arc<Shared>,
    channel: &Channel,
    msg: &Inbound,
    turn: &Turn,
    mut hooks: Hooks<'_>,
    ticket: &mut Ticket,
) -> TurnOutcome {
    let cfg = hooks.cfg;
    let model_asked = Instant::now();
    let answer = shared.router.answer_with(turn, &mut hooks);
    tokio::pin!(answer);
    let outcome = match cfg.reply.thinking_notice_ms {
        Some(ms) => {
            tokio::select! {
                o = &mut answer => o,
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                    // The model call keeps running while the notice is sent, and a slow send
                    // is cut short, so the notice never delays the answer.
                    let notice = tokio::time::timeout(THINKING_NOTICE_SEND_LIMIT, async {
                        // Not stored: no notice (the reply's `stored` says why, once).
                        if !msg.durable.wait().await {
                            return Ok(());
                        }
                        channel.reply(msg, &cfg.reply.thinking_text, false).await
                    });
                    let (sent, outcome) = tokio::join!(notice, &mut answer);
                    match sent {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(msg_id = %msg.msg_id, error = %e, "thinking notice not delivered"),
                        Err(_) => tracing::warn!(msg_id = %msg.msg_id, "thinking notice not delivered in time"),
                    }
                    outcome
                }
            }
        }
        None => answer.await,
    };
    let at_model = model_asked.elapsed();
    let label = outcome_label(&outcome);
    if matches!(outcome, TurnOutcome::Busy) {
        // No slot came: the model never saw it, so the next turn may go while its busy
        // reply waits for a send slot, as for a turn whose wait in line ran out (see
        // [`busy_out_of_line`]).
        ticket.leave_line().await;
    }
    deliver(
        shared,
        channel,
        msg,
        reply_text(cfg, &outcome),
        markdown(cfg),
        label,
    )
    .await;
    if let (TurnOutcome::Answer { .. }, Some(read_at), true) =
        (&outcome, msg.read_at, msg.durable.wait().await)
    {
        observe_overhead(read_at, turn.waited_in_line + at_model);
    }
    outcome
}

/// Records an answered turn's overhead: the time from its message's read to its reply's
/// end (DingTalk took it), less `waits` (for its conversation's earlier turns, for a model
/// slot, and the model call from building the request to the stream's end). What is left
/// is the bot's own: the journal's sync and hand-offs, the dispatch, the reply's send
/// (and any wait for DingTalk's send rate). Text replies only: a card's updates overlap
/// the model call.
fn observe_overhead(read_at: Instant, waits: Duration) {
    let own = read_at.elapsed().saturating_sub(waits);
    crate::ops::metrics::observed().turn_overhead(own);
}

/// Streams the answer into an AI card; falls back to a plain reply if no card opens.
/// The caller waited for the message to be durable (see [`stored`]).
async fn answer_in_card(
    shared: &Arc<Shared>,
    channel: &Channel,
    msg: &Inbound,
    turn: &Turn,
    mut hooks: Hooks<'_>,
    ticket: &mut Ticket,
) -> TurnOutcome {
    let cfg = hooks.cfg;
    let mut card = match channel.open_card(msg).await {
        Ok(card) => card,
        Err(e) => {
            tracing::warn!(msg_id = %msg.msg_id, error = %e, "AI card not opened; replying with text");
            return answer_in_text(shared, channel, msg, turn, hooks, ticket).await;
        }
    };
    let card_ref = card.card_ref();
    super::cards::remember_open(shared, &msg.msg_id, &card_ref).await;
    let (tx, mut rx) = watch::channel(String::new());
    let updater = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let text = rx.borrow_and_update().clone();
            card.update(&text).await;
        }
        card
    });
    hooks.progress = Some(tx);
    let outcome = shared.router.answer_with(turn, &mut hooks).await;
    drop(hooks);
    match updater.await {
        Ok(card) => finalize_card(shared, channel, msg, cfg, card, card_ref, &outcome).await,
        Err(e) => {
            tracing::error!(msg_id = %msg.msg_id, error = %e, "card updater failed; replying with text");
            let text = reply_text(cfg, &outcome);
            let label = outcome_label(&outcome);
            reply_instead_of_card(shared, channel, msg, cfg, card_ref, text, label).await;
        }
    }
    outcome
}

/// Finishes the card with the answer (or fails it with the fallback or busy text), then
/// completes the message; a card DingTalk does not finalize is replaced by a text reply.
async fn finalize_card(
    shared: &Arc<Shared>,
    channel: &Channel,
    msg: &Inbound,
    cfg: &Config,
    card: CardStream,
    card_ref: CardRef,
    outcome: &TurnOutcome,
) {
    let text = reply_text(cfg, outcome);
    let result = match outcome {
        TurnOutcome::Answer { .. } => card.finish(text).await,
        _ => card.fail(text).await,
    };
    let label = outcome_label(outcome);
    match result {
        Ok(()) => {
            // Marked answered first: the window before the mark stays as short as can be.
            complete(shared, msg, label, Instant::now());
            super::cards::forget(shared, &card_ref).await;
        }
        Err(e) => {
            tracing::warn!(msg_id = %msg.msg_id, error = %e, "card not finalized; replying with text");
            reply_instead_of_card(shared, channel, msg, cfg, card_ref, text, label).await;
        }
    }
}

/// Replies with text for a card that could not be finalized; the card is closed in the
/// background (and stays recorded until it is).
async fn reply_instead_of_card(
    shared: &Arc<Shared>,
    channel: &Channel,
    msg: &Inbound,
    cfg: &Config,
    card_ref: CardRef,
    text: &str,
    label: &'static str,
) {
    super::cards::close_later(shared, &msg.msg_id, card_ref, text);
    deliver(shared, channel, msg, text, markdown(cfg), label).await;
}

/// Delivers `text` to `msg`'s sender and completes the message. A reply of more than one
/// part is recorded in the journal before its first part, and each part after DingTalk
/// took it, so a crash resends at most the part in flight, never the whole reply (a reply
/// the journal has no room for is sent unrecorded). When DingTalk does not
/// take it (within the channel's delivery limit), a background task retries it (resuming after the parts
/// already sent), then sends `reply.undelivered_text`, and completes the message once
/// either went out; if neither did, the message stays in the journal for the next start.
async fn deliver(
    shared: &Arc<Shared>,
    channel: &Channel,
    msg: &Inbound,
    text: &str,
    markdown: bool,
    label: &'static str,
) {
    if !stored(msg).await {
        return;
    }
    let mut reply = channel.outgoing(text, markdown);
    if label == BUSY {
        // Sent only while no answer waits for a send slot: under a flood, DingTalk's send
        // rate cannot carry a reply per message, and the answers go first.
        reply = reply.yielding();
    }
    // With the shared inbox the local journal holds no message: nothing to record there.
    if reply.parts() > 1 && shared.inbox.is_none() {
        let recorded = shared
            .journal
            .reply(&msg.msg_id, reply.part_texts().to_vec(), markdown)
            .await;
        if recorded {
            record_progress(shared, msg, &mut reply);
        }
    }
    send_and_complete(shared, channel, msg, reply, label).await;
}

/// Waits until `msg` is durable (see [`crate::dingtalk::durable`]): the journal hands a
/// message on while its sync runs, so the turn's prompt and model call overlap the disk's
/// work, and every effect of the turn outside the process (a reply, a card, a command's
/// reset, a record in the journal) waits here. False when its sync failed: the journal
/// forgot it and did not ACK it, so DingTalk delivers it again and that delivery is
/// answered; this turn ends without a trace. Its exchange may stay in the conversation's
/// memory (the model had answered), so the redelivered question is asked after it.
async fn stored(msg: &Inbound) -> bool {
    if msg.durable.wait().await {
        return true;
    }
    tracing::warn!(msg_id = %msg.msg_id, "message not stored (its journal sync failed): its turn ends without a reply, and DingTalk delivers it again");
    false
}

/// Records in the journal each part of `reply` DingTalk accepts.
fn record_progress(shared: &Arc<Shared>, msg: &Inbound, reply: &mut OutgoingReply) {
    let shared = shared.clone();
    let id = msg.msg_id.clone();
    reply.on_sent(Arc::new(move |n| shared.journal.sent(&id, n)));
}

/// Sends what is left of `reply` and completes the message (see [`deliver`]).
async fn send_and_complete(
    shared: &Arc<Shared>,
    channel: &Channel,
    msg: &Inbound,
    mut reply: OutgoingReply,
    label: &'static str,
) {
    if !may_send(shared, msg).await {
        return;
    }
    let error = match channel.reply_parts(msg, &mut reply).await {
        Ok(()) => return complete(shared, msg, label, Instant::now()),
        Err(e) => e,
    };
    if label == BUSY {
        // Not retried: a busy reply minutes late tells nothing, and under a flood the
        // retries would hold every refused message for minutes and compete for the slots.
        tracing::info!(msg_id = %msg.msg_id, error = %error, "busy reply not sent; the message is marked answered without it");
        shared.busy.not_sent();
        mark_answered(shared, msg, Instant::now());
        return;
    }
    let cfg = shared.config();
    tracing::warn!(
        msg_id = %msg.msg_id, error = %error, sent = reply.sent(), parts = reply.parts(),
        "reply not delivered; retrying in the background"
    );
    let mut late = LateReply {
        channel: channel.clone(),
        msg: msg.clone(),
        answer: reply,
        sorry: channel.outgoing(&cfg.reply.undelivered_text, false),
    };
    let policy = RedeliveryPolicy::from_config(&cfg.reply);
    let shared = shared.clone();
    tokio::spawn(async move {
        if redeliver(policy, &shared.delivery, &mut late)
            .await
            .delivered()
        {
            complete(&shared, &late.msg, label, Instant::now());
        }
    });
}

/// Sends a fixed reply (no model) and completes the message (see [`deliver`]).
/// Answers a chat command whose turn came (the conversation's earlier turns ended, so
/// their replies went out first and their exchanges are recorded): `/new` and `/reset`
/// forget them all. Access and rate limits apply as to any message. The ticket is held
/// to the reply, so the conversation's next turn starts after it.
async fn run_command(
    shared: &Arc<Shared>,
    cfg: &Config,
    msg: &Inbound,
    cmd: ChatCommand,
    ticket: Ticket,
) {
    tracing::info!(
        msg_id = %msg.msg_id,
        conversation = %msg.conversation_id,
        kind = ?msg.conversation_kind,
        command = cmd.label(),
        "chat command received"
    );
    // A command's effects (a reset) come before its reply.
    if !stored(msg).await || !admitted(shared, cfg, msg).await {
        return;
    }
    let reply = super::chat_commands::run(shared, cfg, cmd, msg);
    if cmd == ChatCommand::Reset {
        shared.conversations.reset(&msg.conversation_id);
        if let Some(memory) = &shared.shared_memory {
            memory.reset(&msg.conversation_id).await;
        }
    }
    finish(shared, msg, &reply, cmd.label()).await;
    drop(ticket);
}

async fn finish(shared: &Arc<Shared>, msg: &Inbound, text: &str, label: &'static str) {
    let Some(channel) = shared.channel.as_ref() else {
        return;
    };
    deliver(shared, channel, msg, text, false, label).await;
}

/// With the shared inbox, whether this replica still holds `msg`'s reply (at most one
/// visible reply per message across replicas); always true with the local journal.
async fn may_send(shared: &Shared, msg: &Inbound) -> bool {
    match &shared.inbox {
        Some(inbox) => inbox.may_send(&msg.msg_id).await,
        None => true,
    }
}

/// Marks the message answered by its reply, labelled `label` (see [`mark_answered`]).
fn complete(shared: &Shared, msg: &Inbound, label: &'static str, replied_at: Instant) {
    mark_answered(shared, msg, replied_at);
    tracing::debug!(msg_id = %msg.msg_id, outcome = label, "turn complete");
    crate::ops::metrics::observed().replied(label);
}

/// Marks the message answered: at once in memory (never answered twice in this run), and
/// in the journal right after (a write error is retried there and shown in status).
fn mark_answered(shared: &Shared, msg: &Inbound, replied_at: Instant) {
    match &shared.inbox {
        Some(inbox) => inbox.replied(&msg.msg_id),
        None => shared.journal.done(&msg.msg_id, replied_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a five-argument async fn returns, without calling it.
    fn future_size<F, A, B, C, D, E, Fut>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D, E) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The same for six arguments.
    fn future_size6<F, A, B, C, D, E, G, Fut>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D, E, G) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// A flood queues thousands of turns behind their conversations' earlier ones: each
    /// waiting turn's task must hold a small part of what answering takes (see
    /// [`run_turn`]). With the answering state inline, the spawned future was 7.6 KiB
    /// (debug build); now it is ~2 KiB (1.9 before it carried its place in the line, see
    /// `bot::line_cap`), and the answering state is allocated later.
    #[test]
    fn a_turn_waiting_in_line_holds_little_memory() {
        let waiting = future_size(run_turn_owned);
        let answering = future_size6(answer);
        assert!(
            waiting <= 2304 && 3 * waiting <= answering,
            "a spawned turn's future is {waiting} bytes while it waits in line, answering takes {answering}"
        );
    }
}
