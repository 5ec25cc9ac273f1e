//! The supervised command line: split like a POSIX shell would split words, then the
//! program resolved to an executable file.
//!
//! No shell is ever run. Quotes (`'...'`, `"..."`) and backslash escapes group words the
//! way `sh` does; there is no expansion of any kind (`$VAR`, `~`, globs stay literal).
//! Unquoted shell operators (`| & ; < >` and backticks) are refused with a hint to use
//! `sh -c '...'`, because silently passing them as arguments would surprise everyone.
//!
//! Invariant: the text of a command line appears in no error and no report; what may be
//! shown is [`CommandLine::display`] (secret flag values masked by [`redact`]).

pub(crate) mod redact;

use std::ffi::OsString;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Characters that only mean something to a shell; refused when unquoted.
const SHELL_OPERATORS: &[char] = &['|', '&', ';', '<', '>', '`'];

/// Why a command line cannot be run. Every message names what was wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("--exec: the command is empty")]
    Empty,
    #[error("--exec: unterminated {quote} quote (opened at character {at})")]
    UnterminatedQuote { quote: &'static str, at: usize },
    #[error("--exec: the command ends with a lone backslash")]
    TrailingBackslash,
    #[error(
        "--exec: unquoted shell operator `{op}` at character {at}: no shell runs the command; \
         quote it, or wrap the whole command in sh -c '...'"
    )]
    ShellOperator { op: char, at: usize },
    #[error(
        "--exec: the first word ({name}=...) looks like an environment assignment, which needs \
         a shell; use `env {name}=... PROGRAM ...` instead"
    )]
    EnvAssignment { name: String },
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
pub(crate) struct CommandLine {
    /// The command as the operator wrote it, with the values of secret-looking flags
    /// masked: the only form that may be shown or logged.
    pub(crate) display: String,
    /// The program's path as resolved (absolute when found through PATH).
    pub(crate) program: PathBuf,
    /// argv[1..], unquoted.
    pub(crate) args: Vec<String>,
}

impl CommandLine {
    /// Splits `text` into words and resolves the program against `PATH` from the
    /// environment.
    pub(crate) fn parse(text: &str) -> Result<CommandLine, CommandError> {
        let words = split_words(text)?;
        let (first, rest) = words
            .split_first()
            .filter(|(first, _)| !first.is_empty())
            .ok_or(CommandError::Empty)?;
        if let Some(name) = assignment_name(first) {
            return Err(CommandError::EnvAssignment { name: name.into() });
        }
        let program = resolve_program(first, std::env::var_os("PATH"))?;
        Ok(CommandLine {
            display: redact::redact(text),
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
            display: redact::redact(script),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        }
    }
}

/// Splits a command line into words the way `sh` does, without any expansion.
pub(crate) fn split_words(text: &str) -> Result<Vec<String>, CommandError> {
    scan_words(text, Operators::Refuse).map(|words| words.into_iter().map(|w| w.value).collect())
}

/// One word of a command line: its value with quotes and escapes removed, and the bytes
/// of the text it was written in (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) span: Range<usize>,
    pub(crate) value: String,
}

/// What [`scan_words`] does with an unquoted shell operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operators {
    /// An error: the command would need a shell.
    Refuse,
    /// An ordinary character (for reading a script passed to `sh -c`).
    Literal,
}

/// Splits `text` into [`Word`]s the way `sh` does, without any expansion. Positions in
/// errors are 1-based character numbers.
pub(crate) fn scan_words(text: &str, ops: Operators) -> Result<Vec<Word>, CommandError> {
    let mut words = Vec::new();
    // `Some((start, value))` while inside a word (even an empty quoted one, like '').
    let mut word: Option<(usize, String)> = None;
    let mut chars = text.char_indices();
    let char_number = |at: usize| text[..at].chars().count() + 1;
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some((start, value)) = word.take() {
                    words.push(Word {
                        span: start..at,
                        value,
                    });
                }
            }
            '\\' => {
                let (_, next) = chars.next().ok_or(CommandError::TrailingBackslash)?;
                // A backslash-newline is a line continuation, as in sh.
                if next != '\n' {
                    word.get_or_insert_with(|| (at, String::new())).1.push(next);
                }
            }
            '\'' | '"' => {
                let quote = if c == '\'' { "single" } else { "double" };
                let unterminated = || CommandError::UnterminatedQuote {
                    quote,
                    at: char_number(at),
                };
                let w = &mut word.get_or_insert_with(|| (at, String::new())).1;
                loop {
                    match chars.next().ok_or_else(unterminated)?.1 {
                        ch if ch == c => break,
                        // Inside double quotes a backslash only escapes these, as in sh.
                        '\\' if c == '"' => match chars.next().ok_or_else(unterminated)?.1 {
                            ch @ ('"' | '\\' | '$' | '`') => w.push(ch),
                            '\n' => {}
                            ch => {
                                w.push('\\');
                                w.push(ch);
                            }
                        },
                        ch => w.push(ch),
                    }
                }
            }
            c if ops == Operators::Refuse && SHELL_OPERATORS.contains(&c) => {
                return Err(CommandError::ShellOperator {
                    op: c,
                    at: char_number(at),
                });
            }
            c => word.get_or_insert_with(|| (at, String::new())).1.push(c),
        }
    }
    words.extend(word.map(|(start, value)| Word {
        span: start..text.len(),
        value,
    }));
    Ok(words)
}

/// `word` as one shell word that [`split_words`] (and `sh`) reads back unchanged: as is
/// when it holds only plain characters, else single-quoted.
pub(crate) fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+,".contains(c));
    if plain {
        word.to_string()
    } else {
        single_quoted(word)
    }
}

/// `word` single-quoted for `sh` (an inner `'` written as `'\''`).
pub(crate) fn single_quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The `NAME` of a `NAME=value` word whose name is a valid shell variable name.
fn assignment_name(word: &str) -> Option<&str> {
    let (name, _) = word.split_once('=')?;
    let mut cs = name.chars();
    let valid = cs
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

/// Finds the program: a word with a `/` is a path; otherwise the first executable file
/// of that name in `path_var`.
pub(crate) fn resolve_program(
    program: &str,
    path_var: Option<OsString>,
) -> Result<PathBuf, CommandError> {
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
            Err(CommandError::TrailingBackslash)
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
        let e = CommandLine::parse("API_KEY=hunter2 sh").unwrap_err();
        assert!(matches!(e, CommandError::EnvAssignment { .. }));
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = split_words("run --token 'hunter2").unwrap_err();
        assert!(e.to_string().contains("character 13"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(shell_quote("/tmp/cb1"), "/tmp/cb1");
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
        for w in ["/tmp/a b", "it's", "", "a=b", "$HOME"] {
            assert_eq!(split(&shell_quote(w)), [w]);
        }
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
