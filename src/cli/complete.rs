//! Dynamic shell completion (clap_complete's [`CompleteEnv`]): the shell's registration
//! script calls `COMPLETE=SHELL clawdbot -- WORDS...`, and this process answers with the
//! candidates for the word under the cursor, then exits.
//!
//! Candidates that depend on the machine: daemon names (the state folder of the home the
//! line names), `send --to` from the target aliases of the config the daemon uses, and
//! enum values and `sim inject --msgtype`'s known types come from clap itself.
//!
//! clap_complete hands a candidate function only the word being completed, not the rest of
//! the line, so [`answer_if_asked`] first reads `--home`, `--name` and `--config` from the
//! words itself (hand-written: no crate offers this) and keeps them in [`LINE`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap_complete::engine::CompletionCandidate;
use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use clap_complete::CompleteEnv;

use crate::paths::Layout;

/// The environment variable that asks for completions (clap_complete's default).
const VAR: &str = "COMPLETE";

/// What the line being completed says, for the candidate functions.
#[derive(Debug, Default, PartialEq, Eq)]
struct Line {
    home: Option<PathBuf>,
    name: Option<String>,
    config: Option<PathBuf>,
}

static LINE: OnceLock<Line> = OnceLock::new();

/// When the shell asks for completions (`COMPLETE` is set), prints them and returns `true`
/// (the caller exits 0); otherwise returns `false` and the program runs as usual.
pub(crate) fn answer_if_asked(args: &[OsString]) -> bool {
    if std::env::var_os(VAR).is_none_or(|v| v.is_empty() || v == "0") {
        return false;
    }
    let words = args
        .iter()
        .skip_while(|a| *a != "--")
        .skip(1)
        .filter_map(|a| a.to_str());
    let _ = LINE.set(read_line(words));
    let current_dir = std::env::current_dir().ok();
    // A completion that failed (a closed terminal) has nothing to offer: still answered.
    CompleteEnv::with_factory(super::command)
        .try_complete(args, current_dir.as_deref())
        .unwrap_or(true)
}

/// The registration script for `shell`: it calls `clawdbot` from PATH for candidates.
pub(crate) fn registration(shell: super::Shell) -> Vec<u8> {
    let completer: &dyn EnvCompleter = match shell {
        super::Shell::Bash => &Bash,
        super::Shell::Zsh => &Zsh,
        super::Shell::Fish => &Fish,
    };
    let mut out = Vec::new();
    completer
        .write_registration(VAR, "clawdbot", "clawdbot", "clawdbot", &mut out)
        .expect("writing into memory cannot fail");
    if let super::Shell::Zsh = shell {
        return loadable_from_fpath(out);
    }
    out
}

/// clap_complete's zsh script registers itself when sourced; installed as `_clawdbot` in
/// a folder of `fpath`, zsh autoloads it as the function `_clawdbot` on the first TAB, so
/// then it must also answer that TAB (the idiom of zsh's own completion files).
fn loadable_from_fpath(script: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&script);
    let register = "compdef _clap_dynamic_completer_clawdbot clawdbot";
    text.replacen(
        register,
        &format!(
            "if [ \"$funcstack[1]\" = \"_clawdbot\" ]; then\n    \
             _clap_dynamic_completer_clawdbot \"$@\"\nelse\n    {register}\nfi"
        ),
        1,
    )
    .into_bytes()
}

/// `--home`, `--name` and `--config` as the words give them (`--flag value` or
/// `--flag=value`; the last one wins, as clap takes it), `CLAWDBOT_HOME` for the home.
fn read_line<'a>(words: impl Iterator<Item = &'a str>) -> Line {
    let mut line = Line {
        home: std::env::var_os("CLAWDBOT_HOME").map(PathBuf::from),
        ..Line::default()
    };
    let mut pending: Option<&str> = None;
    for word in words {
        if let Some(flag) = pending.take() {
            line.set(flag, word);
            continue;
        }
        match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => line.set(flag, value),
            _ if ["--home", "--name", "--config"].contains(&word) => pending = Some(word),
            _ => {}
        }
    }
    line
}

impl Line {
    fn set(&mut self, flag: &str, value: &str) {
        match flag {
            "--home" => self.home = Some(PathBuf::from(value)),
            "--name" => self.name = Some(value.to_string()),
            "--config" => self.config = Some(PathBuf::from(value)),
            _ => {}
        }
    }

    fn layout(&self) -> Option<Layout> {
        Layout::resolve(self.home.as_deref()).ok()
    }
}

fn line() -> &'static Line {
    LINE.get_or_init(Line::default)
}

/// The daemons this home knows (`daemon status` lists them).
pub(crate) fn daemon_names() -> Vec<CompletionCandidate> {
    let Some(layout) = line().layout() else {
        return Vec::new();
    };
    known_daemons(&layout)
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

/// For `daemon start|run|restart|install`: the known daemons and the configs waiting in
/// CONFIG_DIR (`NAME.yaml` starts as daemon NAME without --config).
pub(crate) fn startable_names() -> Vec<CompletionCandidate> {
    let Some(layout) = line().layout() else {
        return Vec::new();
    };
    let mut names = known_daemons(&layout);
    let configs = std::fs::read_dir(&layout.config_dir).into_iter().flatten();
    names.extend(configs.flatten().filter_map(|e| {
        let file = e.file_name().into_string().ok()?;
        let name = file.strip_suffix(".yaml")?;
        crate::paths::validate_name(name)
            .is_ok()
            .then(|| name.to_string())
    }));
    names.sort();
    names.dedup();
    names.into_iter().map(CompletionCandidate::new).collect()
}

fn known_daemons(layout: &Layout) -> Vec<String> {
    layout.daemon_names().unwrap_or_default()
}

/// `send --to`: the target aliases (`channel.dingtalk.targets`) of the config daemon
/// `--name` uses: `--config` when the line has one, else the one its last start recorded,
/// else CONFIG_DIR/NAME.yaml.
pub(crate) fn target_aliases() -> Vec<CompletionCandidate> {
    let line = line();
    let config = line.config.clone().or_else(|| {
        let layout = line.layout()?;
        let paths = layout.daemon(line.name.as_deref()?).ok()?;
        crate::daemon::Launch::load(&paths)
            .and_then(|l| l.config)
            .or(Some(paths.default_config))
    });
    config
        .map(|c| aliases_in(&c))
        .unwrap_or_default()
        .into_iter()
        .map(|(alias, id)| CompletionCandidate::new(alias).help(Some(id.into())))
        .collect()
}

/// Most candidates offered for one word: a completion is something to read on a screen.
const MAX_CANDIDATES: usize = 200;

/// An alias the shell can take as one word exactly as written (no quoting needed, no
/// expansion, no word break). Others are left out: the shell would insert them raw (a
/// space splits the word, `$(...)` runs), and quoting differs between shells.
fn typable(alias: &str) -> bool {
    !alias.is_empty()
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@+".contains(c))
}

/// The `channel.dingtalk.targets` keys of the YAML at `path`, with their ids (read as
/// plain YAML: `${VAR}` secrets need not be set to complete an alias). The file is read
/// as the loader reads it ([`crate::config::read_text`]: no FIFO, no device, 1 MiB at
/// most); only [`typable`] aliases, at most [`MAX_CANDIDATES`] of them.
fn aliases_in(path: &Path) -> Vec<(String, String)> {
    let Ok(text) = crate::config::read_text(path) else {
        return Vec::new();
    };
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
        return Vec::new();
    };
    let Some(targets) = doc
        .get("channel")
        .and_then(|c| c.get("dingtalk"))
        .and_then(|d| d.get("targets"))
        .and_then(|t| t.as_mapping())
    else {
        return Vec::new();
    };
    targets
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?, v.as_str()?)))
        .filter(|(alias, id)| typable(alias) && crate::config::checks::target_id(id).is_ok())
        .take(MAX_CANDIDATES)
        .map(|(alias, id)| (alias.to_string(), id.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_gives_home_name_and_config_in_both_spellings() {
        let words = [
            "clawdbot",
            "--home",
            "/h1",
            "send",
            "--name=bot",
            "--config",
            "c.yaml",
            "--home=/h2",
            "--to",
            "",
        ];
        let line = read_line(words.into_iter());
        assert_eq!(line.home.as_deref(), Some(Path::new("/h2")));
        assert_eq!(line.name.as_deref(), Some("bot"));
        assert_eq!(line.config.as_deref(), Some(Path::new("c.yaml")));
    }

    #[test]
    fn aliases_are_read_without_resolving_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "channel:\n  dingtalk:\n    client_secret: ${UNSET_VAR}\n    targets:\n      ops: cidOps==\n      me: user:42\n",
        )
        .unwrap();
        assert_eq!(
            aliases_in(&path),
            [
                ("ops".to_string(), "cidOps==".to_string()),
                ("me".to_string(), "user:42".to_string())
            ]
        );
        assert!(aliases_in(&dir.path().join("missing.yaml")).is_empty());
    }

    /// A FIFO (no writer: a blocking open waits forever), a link to `/dev/zero` (endless)
    /// and a config past 1 MiB offer nothing, at once; a huge but valid targets map is cut
    /// to [`MAX_CANDIDATES`].
    #[test]
    fn hostile_config_files_are_refused_and_candidates_capped() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(aliases_in(&fifo).is_empty());
        let zero = dir.path().join("zero.yaml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(aliases_in(&zero).is_empty());
        let mut many = String::from("channel:\n  dingtalk:\n    targets:\n");
        for i in 0..5000 {
            many.push_str(&format!("      a{i}: cid{i}==\n"));
        }
        let capped = dir.path().join("many.yaml");
        std::fs::write(&capped, &many).unwrap();
        assert_eq!(aliases_in(&capped).len(), MAX_CANDIDATES);
        while many.len() <= 1024 * 1024 {
            many.push_str("# padding padding padding padding padding padding padding\n");
        }
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, &many).unwrap();
        assert!(aliases_in(&big).is_empty());
    }

    #[test]
    fn aliases_the_shell_would_split_or_expand_are_not_offered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "channel:\n  dingtalk:\n    targets:\n      'with space': cidA==\n      '$(touch /tmp/pwned)': cidB==\n      \"a;b\": cidC==\n      ok-room.1: cidD==\n",
        )
        .unwrap();
        assert_eq!(
            aliases_in(&path),
            [("ok-room.1".to_string(), "cidD==".to_string())]
        );
    }
}
