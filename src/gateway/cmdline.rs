//! The supervised command line: split like a POSIX shell would split words, then the
//! program resolved to an executable file.
//!
//! No shell is ever run. Quotes (`'...'`, `"..."`) and backslash escapes group words the
//! way `sh` does; there is no expansion of any kind (`$VAR`, `~`, globs stay literal).
//! Unquoted shell operators (`| & ; < >` and backticks) are refused with a hint to use
//! `sh -c '...'`, because silently passing them as arguments would surprise everyone.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Characters that only mean something to a shell; refused when unquoted.
const SHELL_OPERATORS: &[char] = &['|', '&', ';', '<', '>', '`'];

/// Why a command line cannot be run. Every message names what was wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("--exec: the command is empty")]
    Empty,
    #[error("--exec: unterminated {quote} quote in {command:?}")]
    UnterminatedQuote {
        quote: &'static str,
        command: String,
    },
    #[error("--exec: the command ends with a lone backslash: {command:?}")]
    TrailingBackslash { command: String },
    #[error(
        "--exec: unquoted shell operator `{op}` in {command:?}: no shell runs the command; \
         quote it, or wrap the whole command in sh -c '...'"
    )]
    ShellOperator { op: char, command: String },
    #[error(
        "--exec: {word:?} looks like an environment assignment, which needs a shell; \
         use `env {word} PROGRAM ...` instead"
    )]
    EnvAssignment { word: String },
    #[error("--exec: program {program:?} not found in PATH ({path})")]
    NotFound { program: String, path: String },
    #[error(
        "--exec: program {program:?} not found (a detached daemon runs in /, so give an \
         absolute path)"
    )]
    RelativeNotFound { program: String },
    #[error("--exec: program {program:?} not found")]
    PathNotFound { program: String },
    #[error("--exec: {program:?} is not an executable file")]
    NotExecutable { program: String },
}

/// A parsed, resolved command line.
///
/// Invariant: `program` named an existing executable regular file when this was built
/// (it may vanish later; the supervisor then records a failed restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The command as the operator wrote it (for reports and logs).
    pub text: String,
    /// The program's path as resolved (absolute when found through PATH).
    pub program: PathBuf,
    /// argv[1..], unquoted.
    pub args: Vec<String>,
}

impl CommandLine {
    /// Splits `text` into words and resolves the program against `PATH` from the
    /// environment.
    pub fn parse(text: &str) -> Result<CommandLine, CommandError> {
        let words = split_words(text)?;
        let (first, rest) = words
            .split_first()
            .filter(|(first, _)| !first.is_empty())
            .ok_or(CommandError::Empty)?;
        if looks_like_assignment(first) {
            return Err(CommandError::EnvAssignment {
                word: first.clone(),
            });
        }
        let program = resolve_program(first, std::env::var_os("PATH"))?;
        Ok(CommandLine {
            text: text.to_string(),
            program,
            args: rest.to_vec(),
        })
    }
}

#[cfg(test)]
impl CommandLine {
    /// `/bin/sh -c script`, unresolved (for tests of the child and the supervisor).
    pub(crate) fn sh(script: &str) -> CommandLine {
        CommandLine {
            text: script.into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        }
    }
}

/// Splits a command line into words the way `sh` does, without any expansion.
pub fn split_words(text: &str) -> Result<Vec<String>, CommandError> {
    let mut words = Vec::new();
    // `Some` while inside a word (even an empty quoted one, like '').
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\\' => {
                let next = chars
                    .next()
                    .ok_or_else(|| CommandError::TrailingBackslash {
                        command: text.into(),
                    })?;
                // A backslash-newline is a line continuation, as in sh.
                if next != '\n' {
                    word.get_or_insert_with(String::new).push(next);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => w.push(ch),
                        None => {
                            return Err(CommandError::UnterminatedQuote {
                                quote: "single",
                                command: text.into(),
                            })
                        }
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        // Inside double quotes a backslash only escapes these, as in sh.
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => w.push(ch),
                            Some('\n') => {}
                            Some(ch) => {
                                w.push('\\');
                                w.push(ch);
                            }
                            None => {
                                return Err(CommandError::UnterminatedQuote {
                                    quote: "double",
                                    command: text.into(),
                                })
                            }
                        },
                        Some(ch) => w.push(ch),
                        None => {
                            return Err(CommandError::UnterminatedQuote {
                                quote: "double",
                                command: text.into(),
                            })
                        }
                    }
                }
            }
            c if SHELL_OPERATORS.contains(&c) => {
                return Err(CommandError::ShellOperator {
                    op: c,
                    command: text.into(),
                });
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// `NAME=value` with a valid shell variable name before the `=`.
fn looks_like_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            let mut cs = name.chars();
            cs.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// Finds the program: a word with a `/` is a path; otherwise the first executable file
/// of that name in `path_var`.
pub fn resolve_program(program: &str, path_var: Option<OsString>) -> Result<PathBuf, CommandError> {
    if program.contains('/') {
        let p = Path::new(program);
        return match executable(p) {
            Some(true) => Ok(p.to_path_buf()),
            Some(false) => Err(CommandError::NotExecutable {
                program: program.into(),
            }),
            None if p.is_relative() => Err(CommandError::RelativeNotFound {
                program: program.into(),
            }),
            None => Err(CommandError::PathNotFound {
                program: program.into(),
            }),
        };
    }
    let path_var = path_var.unwrap_or_default();
    let mut non_executable = false;
    for dir in std::env::split_paths(&path_var) {
        // An empty PATH entry means the current folder in sh; a daemon's is /, so skip it.
        if dir.as_os_str().is_empty() {
            continue;
        }
        let candidate = dir.join(program);
        match executable(&candidate) {
            Some(true) => return Ok(candidate),
            Some(false) => non_executable = true,
            None => {}
        }
    }
    if non_executable {
        return Err(CommandError::NotExecutable {
            program: program.into(),
        });
    }
    Err(CommandError::NotFound {
        program: program.into(),
        path: path_var.to_string_lossy().into_owned(),
    })
}

/// `None` when `p` is not a regular file (or does not exist); otherwise whether any
/// execute bit is set.
fn executable(p: &Path) -> Option<bool> {
    let meta = std::fs::metadata(p).ok()?;
    meta.is_file()
        .then(|| meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<String> {
        split_words(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn splits_like_sh() {
        assert_eq!(
            split("  llama-server  -m /m.gguf --port 8080 "),
            ["llama-server", "-m", "/m.gguf", "--port", "8080"]
        );
        assert_eq!(
            split(r#"sh -c 'echo "hi there"; exit 3'"#),
            ["sh", "-c", r#"echo "hi there"; exit 3"#]
        );
        assert_eq!(
            split(r#"a "b c" d\ e '' "x\"y" "p\q""#),
            ["a", "b c", "d e", "", "x\"y", "p\\q"]
        );
        assert_eq!(split("a'b'\"c\"d"), ["abcd"]);
        assert_eq!(split("a \\\n b"), ["a", "b"]);
        assert_eq!(split("echo $HOME ~"), ["echo", "$HOME", "~"]);
        assert!(split(" \t ").is_empty());
    }

    #[test]
    fn refuses_what_needs_a_shell() {
        assert!(matches!(
            split_words("a 'b"),
            Err(CommandError::UnterminatedQuote {
                quote: "single",
                ..
            })
        ));
        assert!(matches!(
            split_words("a \"b"),
            Err(CommandError::UnterminatedQuote {
                quote: "double",
                ..
            })
        ));
        assert!(matches!(
            split_words("a \\"),
            Err(CommandError::TrailingBackslash { .. })
        ));
        assert!(matches!(
            split_words("a | b"),
            Err(CommandError::ShellOperator { op: '|', .. })
        ));
        assert!(matches!(
            split_words("a > log"),
            Err(CommandError::ShellOperator { op: '>', .. })
        ));
        assert_eq!(split("a '|' \">\" \\;"), ["a", "|", ">", ";"]);
        assert!(matches!(CommandLine::parse("  "), Err(CommandError::Empty)));
        assert!(matches!(
            CommandLine::parse("'' x"),
            Err(CommandError::Empty)
        ));
        assert!(matches!(
            CommandLine::parse("FOO=1 sh"),
            Err(CommandError::EnvAssignment { .. })
        ));
    }

    #[test]
    fn resolves_programs() {
        let path = Some(OsString::from("/nonexistent-dir::/bin:/usr/bin"));
        let sh = resolve_program("sh", path.clone()).expect("sh is in /bin or /usr/bin");
        assert!(sh.is_absolute() && sh.ends_with("sh"));
        let err = resolve_program("no-such-program-xyz", path).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"no-such-program-xyz\" not found in PATH"),
            "{err}"
        );
        assert!(matches!(
            resolve_program("./nope", None),
            Err(CommandError::RelativeNotFound { .. })
        ));
        assert!(matches!(
            resolve_program("/nope/x", None),
            Err(CommandError::PathNotFound { .. })
        ));
        let plain = tempfile::NamedTempFile::new().expect("temp file");
        let plain = plain.path().to_string_lossy().into_owned();
        assert!(matches!(
            resolve_program(&plain, None),
            Err(CommandError::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve_program("/tmp/", None),
            Err(CommandError::PathNotFound { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in ".{0,64}") {
            let _ = split_words(&s);
        }

        #[test]
        fn quoted_words_round_trip(words in proptest::collection::vec("[^']{0,12}", 1..5)) {
            let line = words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ");
            proptest::prop_assert_eq!(split_words(&line).unwrap(), words);
        }
    }
}
