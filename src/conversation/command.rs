//! Chat commands the bot handles itself.

/// True for `/new` or `/reset` (any case, surrounding spaces, and leading `@mentions`
/// as group messages may carry), with nothing else in the message.
pub fn is_reset_command(text: &str) -> bool {
    let mut words = text.split_whitespace().skip_while(|w| w.starts_with('@'));
    match (words.next(), words.next()) {
        (Some(cmd), None) => cmd.eq_ignore_ascii_case("/new") || cmd.eq_ignore_ascii_case("/reset"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_commands() {
        for yes in ["/new", " /reset ", "/NEW", "@bot /reset", "@机器人 /new\n"] {
            assert!(is_reset_command(yes), "{yes:?}");
        }
        for no in ["", "new", "/newer", "/new please", "hello /reset", "@bot"] {
            assert!(!is_reset_command(no), "{no:?}");
        }
    }
}
