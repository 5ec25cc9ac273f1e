//! Process exit codes. Scripts depend on these numbers: never change them.
//!
//! The error style: a module's boundary returns its own `thiserror` enum (or struct) whose
//! text names what failed and where (a config key, a path, an address), never a secret or
//! a message text: `ConfigError`, `PathError`, `BindError`, `ChannelStartError`,
//! `BotStartError`, `WorkError`... Each one a command can end with has a
//! `From<_> for CliError` that picks its exit code, so commands use `?`. [`CliError`] is the
//! edge's type (commands and the daemon's start), not a module's.

/// The exit code contract (see README "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Code {
    /// Success (for `status`: the daemon is running).
    Ok = 0,
    /// Generic failure (for `status`: dead with a stale pid file).
    Failure = 1,
    /// Bad usage or a bad config file.
    Usage = 2,
    /// The daemon is not running.
    NotRunning = 3,
    /// Cannot tell: the socket answers nothing, or permission was denied.
    Unknown = 4,
}

/// An error that knows which exit code it maps to. Its message is printed on stderr
/// (or inside the JSON document with `--json`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct CliError {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl CliError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }
    pub(crate) fn failure(message: impl Into<String>) -> Self {
        Self::new(Code::Failure, message)
    }
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Code::Usage, message)
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::usage(e.to_string())
    }
}

/// A port we could not listen on is a failure of the start, not a usage error. (Here, not
/// in `listen`, so that module stays a leaf of the module graph.)
impl From<crate::listen::BindError> for CliError {
    fn from(e: crate::listen::BindError) -> Self {
        CliError::failure(e.to_string())
    }
}

/// Result type of every CLI command: the exit code on success too (status may succeed
/// with "not running").
pub(crate) type CmdResult = Result<Code, CliError>;
