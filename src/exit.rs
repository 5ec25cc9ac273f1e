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

/// What went wrong, as a stable word for scripts: the `error.kind` of every `--json`
/// failure document (README "JSON output"). Words are only ever added, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorKind {
    /// The command line is wrong (an unknown flag, a missing argument, a bad value).
    Usage,
    /// A config file does not load (syntax, an unknown key, a bad value, a missing variable).
    Config,
    /// The daemon is not running (exit 3).
    NotRunning,
    /// The daemon died and left its pid file behind.
    Dead,
    /// The daemon is there but does not answer, or its state cannot be read (exit 4).
    Unreachable,
    /// The operating system said no: a file, folder or socket of another user.
    Permission,
    /// The other side (the daemon, DingTalk, the simulator) refused the request.
    Refused,
    /// Reading or writing a file, folder, pipe or port failed.
    Io,
    /// A wait ran out.
    Timeout,
    /// The command ran, and one of its checks failed (healthcheck, onboard, quickstart).
    CheckFailed,
    /// The command could not do what it was asked; the message says why.
    Failed,
    /// Something that should not happen (an answer this version does not understand).
    Internal,
}

impl ErrorKind {
    /// The kind an exit code stands for when nothing more precise is known.
    pub(crate) fn of(code: Code) -> ErrorKind {
        match code {
            Code::Ok | Code::Failure => ErrorKind::Failed,
            Code::Usage => ErrorKind::Usage,
            Code::NotRunning => ErrorKind::NotRunning,
            Code::Unknown => ErrorKind::Unreachable,
        }
    }
}

/// An error that knows which exit code it maps to. Its message is printed on stderr
/// (and inside the JSON document with `--json`, with its kind and fix).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct CliError {
    pub(crate) code: Code,
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    /// The one next step for the user (a command to run), when there is one.
    pub(crate) fix: Option<String>,
}

impl CliError {
    /// An error whose kind follows from `code` (see [`ErrorKind::of`]).
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        CliError {
            code,
            kind: ErrorKind::of(code),
            message: message.into(),
            fix: None,
        }
    }
    pub(crate) fn failure(message: impl Into<String>) -> Self {
        Self::new(Code::Failure, message)
    }
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Code::Usage, message)
    }
    /// The same error with a more precise kind.
    pub(crate) fn kind(self, kind: ErrorKind) -> Self {
        CliError { kind, ..self }
    }
    /// The same error with the one next step to take.
    pub(crate) fn fix(self, fix: impl Into<String>) -> Self {
        self.fix_if(Some(fix))
    }
    /// The same error with `fix` as its next step when there is one (else unchanged).
    pub(crate) fn fix_if(self, fix: Option<impl Into<String>>) -> Self {
        match fix {
            Some(fix) => CliError {
                fix: Some(fix.into()),
                ..self
            },
            None => self,
        }
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::usage(e.to_string()).kind(ErrorKind::Config)
    }
}

/// A port we could not listen on is a failure of the start, not a usage error. (Here, not
/// in `listen`, so that module stays a leaf of the module graph.)
impl From<crate::listen::BindError> for CliError {
    fn from(e: crate::listen::BindError) -> Self {
        CliError::failure(e.to_string()).kind(ErrorKind::Io)
    }
}

/// A control-socket exchange that failed: exit 4 (cannot tell), the kind saying why.
impl From<crate::ipc::client::ClientError> for CliError {
    fn from(e: crate::ipc::client::ClientError) -> Self {
        use crate::ipc::client::ClientError;
        let kind = match &e {
            ClientError::NotListening(_) | ClientError::NoAnswer { .. } => ErrorKind::Unreachable,
            ClientError::PermissionDenied(_) => ErrorKind::Permission,
            ClientError::Unexpected(_) => ErrorKind::Internal,
        };
        CliError::new(Code::Unknown, e.to_string()).kind(kind)
    }
}

/// Result type of every CLI command: the exit code on success too (status may succeed
/// with "not running").
pub(crate) type CmdResult = Result<Code, CliError>;
