//! Chat commands the bot answers itself, without the model.
//!
//! Invariant: a message is a command only when, after leading `@mentions` (group messages
//! may carry them), it is exactly one known `/word` (any case) and that command is enabled
//! in `commands:`; anything else, a disabled command included, is ordinary text for the
//! model.

use crate::config::CommandsConfig;

/// A chat command the bot answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChatCommand {
    /// `/help`: the enabled commands.
    Help,
    /// `/status`: models, queue and channel health (no secrets).
    Status,
    /// `/whoami`: the sender's staff id and the conversation.
    WhoAmI,
    /// `/new` or `/reset`: forget the conversation's memory.
    Reset,
}

/// Every command word, with the command it names and a one-line description for `/help`.
const COMMANDS: &[(&str, ChatCommand, &str)] = &[
    ("/help", ChatCommand::Help, "this list"),
    (
        "/status",
        ChatCommand::Status,
        "the bot's models, queue and health",
    ),
    (
        "/whoami",
        ChatCommand::WhoAmI,
        "your staff id and this conversation's id",
    ),
    (
        "/new",
        ChatCommand::Reset,
        "start a new conversation (forget earlier messages)",
    ),
    ("/reset", ChatCommand::Reset, "same as /new"),
];

impl ChatCommand {
    /// The command `text` is, when it is exactly one enabled command word.
    pub(crate) fn parse(text: &str, enabled: &CommandsConfig) -> Option<ChatCommand> {
        let mut words = text.split_whitespace().skip_while(|w| w.starts_with('@'));
        let (Some(word), None) = (words.next(), words.next()) else {
            return None;
        };
        COMMANDS
            .iter()
            .find(|(name, _, _)| word.eq_ignore_ascii_case(name))
            .map(|&(_, cmd, _)| cmd)
            .filter(|cmd| cmd.enabled(enabled))
    }

    fn enabled(self, cfg: &CommandsConfig) -> bool {
        match self {
            ChatCommand::Help => cfg.help,
            ChatCommand::Status => cfg.status,
            ChatCommand::WhoAmI => cfg.whoami,
            ChatCommand::Reset => cfg.reset,
        }
    }

    /// The outcome label its reply is completed under (metrics and logs).
    pub(crate) fn label(self) -> &'static str {
        match self {
            ChatCommand::Help => "command_help",
            ChatCommand::Status => "command_status",
            ChatCommand::WhoAmI => "command_whoami",
            ChatCommand::Reset => "reset",
        }
    }
}

/// The `/help` text: one line per enabled command.
pub(crate) fn help_text(enabled: &CommandsConfig) -> String {
    let mut out = String::from("Commands:");
    for (name, cmd, what) in COMMANDS {
        if cmd.enabled(enabled) {
            out.push_str(&format!("\n{name} - {what}"));
        }
    }
    out.push_str("\nAnything else is answered by the model.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/new` or `/reset` (any case, surrounding spaces, and leading `@mentions` as group
    /// messages may carry), with nothing else in the message.
    fn is_reset_command(text: &str) -> bool {
        ChatCommand::parse(text, &CommandsConfig::default()) == Some(ChatCommand::Reset)
    }

    #[test]
    fn reset_commands() {
        for yes in ["/new", " /reset ", "/NEW", "@bot /reset", "@机器人 /new\n"] {
            assert!(is_reset_command(yes), "{yes:?}");
        }
        for no in ["", "new", "/newer", "/new please", "hello /reset", "@bot"] {
            assert!(!is_reset_command(no), "{no:?}");
        }
    }

    #[test]
    fn commands_parse_only_when_enabled_and_alone() {
        let all = CommandsConfig::default();
        assert_eq!(ChatCommand::parse("/help", &all), Some(ChatCommand::Help));
        assert_eq!(
            ChatCommand::parse("@bot /WhoAmI", &all),
            Some(ChatCommand::WhoAmI)
        );
        assert_eq!(
            ChatCommand::parse(" /status\n", &all),
            Some(ChatCommand::Status)
        );
        assert_eq!(ChatCommand::parse("/status please", &all), None);
        assert_eq!(ChatCommand::parse("/statusx", &all), None);
        let none = CommandsConfig {
            help: false,
            status: false,
            whoami: false,
            reset: false,
        };
        for word in ["/help", "/status", "/whoami", "/new", "/reset"] {
            assert_eq!(ChatCommand::parse(word, &none), None, "{word}");
        }
    }

    #[test]
    fn help_lists_only_enabled_commands() {
        let some = CommandsConfig {
            help: true,
            status: false,
            whoami: true,
            reset: false,
        };
        let text = help_text(&some);
        assert!(text.contains("/help") && text.contains("/whoami"), "{text}");
        assert!(
            !text.contains("/status") && !text.contains("/reset"),
            "{text}"
        );
    }
}
