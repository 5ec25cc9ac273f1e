//! The replies of the chat commands (`/help`, `/status`, `/whoami`, `/new`, `/reset`).
//!
//! Invariant: a command reply never calls the model and never shows a secret, a URL,
//! message text or another user's data: only model names and figures, the channel's
//! mode and state, and the asker's own ids.

use super::Shared;
use crate::config::{Config, ConversationKind};
use crate::conversation::command::{help_text, ChatCommand};
use crate::dingtalk::Inbound;

/// The reply to `cmd` from `msg`. A reset's reply only: the caller forgets the
/// conversation once its earlier turns are done (see `pipeline::run_command`).
pub(crate) fn run(shared: &Shared, cfg: &Config, cmd: ChatCommand, msg: &Inbound) -> String {
    match cmd {
        ChatCommand::Help => help_text(&cfg.commands),
        ChatCommand::Status => status_text(shared),
        ChatCommand::WhoAmI => whoami_text(msg),
        ChatCommand::Reset => cfg.reply.reset_text.clone(),
    }
}

/// Models (in flight / limit, queued), channel state, and whether the bot takes work.
fn status_text(shared: &Shared) -> String {
    let mut out = String::from("Bot status:");
    for m in shared.router.reports() {
        let health = if m.last_error.is_some() {
            "last request failed"
        } else {
            "ok"
        };
        out.push_str(&format!(
            "\nmodel {}: {} in flight / {} limit, {} queued, {} served, {} failed ({health})",
            m.name, m.in_flight, m.limit, m.queued, m.served, m.failures
        ));
    }
    match shared.channel.as_ref().map(|c| c.report()) {
        Some(ch) => out.push_str(&format!(
            "\nchannel: {} {} (reconnects {})",
            ch.mode, ch.state, ch.reconnects
        )),
        None => out.push_str("\nchannel: none"),
    }
    out.push_str(&format!("\nturns in progress: {}", shared.inflight.count()));
    out
}

/// The asker's staff id and the conversation's id and kind (ids only).
fn whoami_text(msg: &Inbound) -> String {
    let kind = match msg.conversation_kind {
        ConversationKind::Group => "group",
        ConversationKind::Direct => "direct",
    };
    format!(
        "staff id: {}\nconversation: {} ({kind})",
        msg.sender_staff_id.as_deref().unwrap_or("unknown"),
        msg.conversation_id
    )
}
