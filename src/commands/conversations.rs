//! `clawdbot conversations --name N [--limit N]`: the conversations a running bot has seen
//! recently (id, kind, group title, last activity, message count), so an operator can
//! write target aliases and allowlists. Never message text: the daemon does not keep it.
//! Exit codes as `send`: 3 when the daemon is not running, 4 when it cannot be reached.

use serde_json::json;

use super::output::Output;
use crate::cli::ConversationsArgs;
use crate::control_chars::escape_controls;
use crate::exit::{CliError, CmdResult, Code};
use crate::ipc::client::ClientError;
use crate::ipc::proto::{ErrorKind, SeenConversation};
use crate::ipc::{Request, Response};
use crate::paths::Layout;

pub(crate) fn list(layout: &Layout, args: &ConversationsArgs, out: &Output) -> CmdResult {
    let paths = layout.daemon(&args.name)?;
    let mut client = super::daemon_status::connect(layout, &paths)?;
    let answer = client.request(&Request::Conversations { limit: args.limit })?;
    let seen = match answer {
        Response::Conversations { seen } => seen,
        Response::Error {
            kind: ErrorKind::Unsupported,
            message,
        } => return Err(CliError::usage(format!("{}: {message}", args.name))),
        Response::Error { message, .. } => return Err(CliError::failure(message)),
        other => return Err(ClientError::unexpected(&other).into()),
    };
    out.result(
        json!({"name": args.name, "conversations": seen}),
        &table(&seen, crate::clock::now_ms()),
    );
    if !out.json {
        out.note(&hint(layout, &args.name, seen.is_empty()));
    }
    Ok(Code::Ok)
}

/// One line per conversation under a header; titles come from DingTalk users, so control
/// characters in them are escaped (they cannot drive the terminal).
fn table(seen: &[SeenConversation], now_ms: u64) -> String {
    if seen.is_empty() {
        return String::new();
    }
    let id_width = seen.iter().map(|s| s.id.len()).max().unwrap_or(2).max(2);
    let mut text = format!(
        "{:<id_width$}  {:<6}  {:>9}  {:>8}  TITLE\n",
        "ID", "KIND", "LAST SEEN", "MESSAGES"
    );
    for s in seen {
        let kind = match s.kind {
            crate::config::ConversationKind::Group => "group",
            crate::config::ConversationKind::Direct => "direct",
        };
        let title = s.title.as_deref().map(escape_controls).unwrap_or_default();
        text.push_str(&format!(
            "{:<id_width$}  {kind:<6}  {:>9}  {:>8}  {title}\n",
            escape_controls(&s.id),
            ago(now_ms.saturating_sub(s.last_activity_ms)),
            s.messages,
        ));
    }
    text
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`.
fn ago(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn hint(layout: &Layout, name: &str, empty: bool) -> String {
    let me = super::invocation(layout);
    if empty {
        return format!(
            "no conversation yet: @-mention the bot in a group (or message it directly), then run \
             `{me} conversations --name {name}` again"
        );
    }
    format!(
        "use an ID with `{me} send --name {name} --to ID --text ...`, as a target alias \
         (channel.dingtalk.targets: NAME: ID) or in the access allowlists"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConversationKind;

    #[test]
    fn table_escapes_titles_and_says_how_long_ago() {
        let seen = [SeenConversation {
            id: "cidA==".into(),
            kind: ConversationKind::Group,
            title: Some("Ops\u{1b}[2J room".into()),
            last_activity_ms: 1_000,
            messages: 3,
        }];
        let text = table(&seen, 1_000 + 125_000);
        assert!(text.starts_with("ID"), "{text}");
        assert!(text.contains("cidA==  group"), "{text}");
        assert!(text.contains("2m ago"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.contains("Ops\\u{1b}[2J room"), "{text}");
        assert_eq!(table(&[], 0), "");
    }
}
