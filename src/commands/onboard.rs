//! `clawdbot onboard --channel dingtalk --config PATH`: writes a config and checks that the
//! DingTalk credentials obtain a token and the model endpoint answers.
//!
//! Interactive when `--non-interactive` is not given: prompts on stderr with defaults
//! (secrets hidden on a terminal; plain lines when stdin is a pipe, so it can be scripted).
//! The file is written with mode 0600 and never overwritten without `--force`.
//!
//! Invariant: nothing is written unless every value passed the loader's own checks
//! ([`crate::config::checks`]) and the rendered text loads as a config; a bad value exits 2
//! naming its flag (never showing the value). Values are written so that the loader reads
//! back exactly what was given (see [`render`]).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::output::Output;
use crate::cli::OnboardArgs;
use crate::config::checks::{self, InvalidValue};
use crate::config::Config;
use crate::daemon::launch::Launch;
use crate::exit::{CliError, CmdResult, Code};
use crate::ipc::proto::{Check, CheckStatus};
use crate::paths::{absolute, DaemonPaths, Layout};

/// The answers that make a config.
struct Answers {
    client_id: String,
    /// Inline secret, or `None` when written as `${VAR}`.
    client_secret: Option<String>,
    client_secret_env: Option<String>,
    robot_code: Option<String>,
    model_base_url: String,
    model: String,
    model_api_key_env: Option<String>,
    api_base: Option<String>,
    /// The deprecated `--oapi-base`: checked and warned about, never written.
    oapi_base: Option<String>,
    /// The secret given for a `${VAR}` config while VAR is unset: used for the checks only.
    secret_for_checks: Option<String>,
    /// Send target aliases, `(name, id)`.
    targets: Vec<(String, String)>,
}

pub(crate) fn onboard(layout: &Layout, args: &OnboardArgs, out: &Output) -> CmdResult {
    let daemon = layout.daemon(&args.name)?;
    let path = args
        .config
        .as_deref()
        .map_or_else(|| daemon.default_config.clone(), absolute);
    let targets = parse_targets(&args.targets)?;
    if path.exists() && !args.force {
        return Err(CliError::failure(format!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        ))
        .fix(format!(
            "run the same onboard command with --force (overwrites {}), or check the file: {} config check --config {}",
            path.display(),
            super::invocation(layout),
            path.display()
        )));
    }
    folder_takes_files(&path)?;
    // Every command shown names this binary and any --home, so it works as typed.
    let me = super::invocation(layout);
    let mut answers = if args.non_interactive {
        from_flags(args)?
    } else {
        ask(args)?
    };
    if targets.is_empty() && !args.non_interactive {
        answers.targets = ask_target(&me, &args.name)?;
    } else {
        answers.targets = targets;
    }
    let config = write_checked_config(&path, &answers, out)?;
    let checks = if args.skip_checks {
        Vec::new()
    } else {
        super::healthcheck::preflight(&config, Duration::from_secs(10), out)?
    };
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    record_for_daemon(&me, &daemon, &path, failed, out)?;
    report(&me, &path, &args.name, &answers, &checks, out)
}

/// Checks the answers, renders them, proves the text loads as a config, and only then
/// writes it (0600); returns the config as the daemon will load it.
fn write_checked_config(path: &Path, answers: &Answers, out: &Output) -> Result<Config, CliError> {
    if let (Some(var), Some(secret)) = (&answers.client_secret_env, &answers.secret_for_checks) {
        // The config refers to ${VAR}; make it resolvable for the checks below (this
        // process only; nothing is written or printed).
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, secret);
        }
    }
    check_answers(answers)?;
    if answers.oapi_base.is_some() {
        out.note(
            "warning: --oapi-base is deprecated and ignored (the bot makes no call on \
             DingTalk's old API host)",
        );
    }
    env_vars_resolvable(answers)?;
    let text = render(answers);
    crate::config::parse(&text).map_err(|e| {
        CliError::usage(format!(
            "the config for {} would not load ({e}); nothing was written",
            path.display()
        ))
    })?;
    write_config(path, &text)?;
    out.note(&format!("wrote {} (mode 0600)", path.display()));
    Ok(crate::config::load(path)?)
}

/// Prints the checks and the next commands; exit 1 when a check failed.
fn report(
    me: &str,
    path: &Path,
    name: &str,
    answers: &Answers,
    checks: &[Check],
    out: &Output,
) -> CmdResult {
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    let mut human: Vec<String> = Vec::new();
    if !checks.is_empty() {
        human.push(super::healthcheck::render_checks(out, checks));
    }
    let target = answers
        .targets
        .first()
        .map_or("cidXXXX", |(name, _)| name.as_str());
    let next = vec![
        format!("{me} daemon start --name {name}"),
        format!("{me} conversations --name {name}   # ids of the conversations it has seen"),
        format!("{me} send --name {name} --to {target} --text ping"),
        format!("{me} healthcheck --name {name}"),
    ];
    human.push(String::new());
    human.push(if failed {
        "Fix the failed checks, then:".into()
    } else {
        "Next:".into()
    });
    human.extend(next.iter().map(|c| format!("  {c}")));
    let fields = json!({"name": name, "config_path": path.display().to_string(), "checks": checks, "next": next});
    Ok(match super::healthcheck::failed_checks(checks) {
        Some(failure) => out.failed_result(fields, &human.join("\n"), &failure),
        None => {
            out.result(fields, &human.join("\n"));
            Code::Ok
        }
    })
}

/// Before any question: the config's folder exists (or can be made) and takes new files,
/// so nobody answers every prompt only to learn that the file cannot be written.
fn folder_takes_files(path: &Path) -> Result<(), CliError> {
    crate::paths::ensure_parent(path)?;
    let folder = path.parent().unwrap_or(Path::new("."));
    crate::fsutil::probe_writable(folder).map_err(|e| {
        CliError::failure(format!(
            "cannot write the config in {}: {e}; pass --config FILE in a folder you can write",
            folder.display()
        ))
    })
}

/// Points `daemon start --name NAME` at the new config only when no check failed: a
/// failed onboard leaves the daemon's config as it was, and says so.
fn record_for_daemon(
    me: &str,
    daemon: &DaemonPaths,
    path: &Path,
    failed: bool,
    out: &Output,
) -> Result<(), CliError> {
    let name = &daemon.name;
    if !failed {
        remember_config(daemon, path)?;
        out.note(&format!(
            "`{me} daemon start --name {name}` will use this config"
        ));
    } else if path == daemon.default_config {
        out.note(&format!(
            "a check failed; `{me} daemon start --name {name}` reads this file by default: fix it first"
        ));
    } else {
        out.note(&format!(
            "a check failed, so `{me} daemon start --name {name}` was NOT pointed at {}; \
             once fixed: `{me} daemon start --name {name} --config {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

fn from_flags(args: &OnboardArgs) -> Result<Answers, CliError> {
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| CliError::usage(format!("--non-interactive needs {flag}")))
    };
    let client_id = need(&args.client_id, "--client-id (or DINGTALK_CLIENT_ID)")?;
    let client_secret = match &args.client_secret_env {
        Some(_) => None,
        None => Some(need(
            &args.client_secret,
            "--client-secret (or DINGTALK_CLIENT_SECRET, or --client-secret-env VAR)",
        )?),
    };
    Ok(Answers {
        client_id,
        client_secret,
        client_secret_env: args.client_secret_env.clone(),
        robot_code: args.robot_code.clone(),
        model_base_url: need(&args.model_base_url, "--model-base-url")?,
        model: args.model.clone().unwrap_or_else(|| "local-chat".into()),
        model_api_key_env: args.model_api_key_env.clone(),
        api_base: args.api_base.clone(),
        oapi_base: args.oapi_base.clone(),
        secret_for_checks: args.client_secret.clone(),
        targets: Vec::new(),
    })
}

/// Checks every given value with the loader's rules; the error names the flag (the value
/// may be a secret, so it is not shown).
fn check_answers(a: &Answers) -> Result<(), CliError> {
    type Check = fn(&str) -> Result<(), checks::InvalidValue>;
    let given: [(&str, Option<&String>, Check); 7] = [
        ("--client-id", Some(&a.client_id), checks::name),
        ("--client-secret", a.client_secret.as_ref(), checks::name),
        ("--robot-code", a.robot_code.as_ref(), checks::name),
        (
            "--model-base-url",
            Some(&a.model_base_url),
            checks::http_url,
        ),
        ("--model", Some(&a.model), checks::name),
        ("--api-base", a.api_base.as_ref(), checks::http_url),
        ("--oapi-base", a.oapi_base.as_ref(), checks::http_url),
    ];
    for (flag, value, check) in given {
        if let Some(v) = value {
            check(v).map_err(|e| CliError::usage(format!("{flag}: {e}")))?;
        }
    }
    Ok(())
}

/// Before anything is written: variable names are valid, and every `${VAR}` the config
/// will hold is set, so the written file loads (exit 2 naming the variable otherwise).
fn env_vars_resolvable(a: &Answers) -> Result<(), CliError> {
    let vars = [
        ("--client-secret-env", &a.client_secret_env),
        ("--model-api-key-env", &a.model_api_key_env),
    ];
    for (flag, var) in vars {
        let Some(var) = var else { continue };
        let valid = var
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(CliError::usage(format!(
                "{flag} {var:?}: not a variable name (letters, digits and _)"
            )));
        }
        if std::env::var_os(var).is_none() {
            let hint = if flag == "--client-secret-env" {
                " (or pass --client-secret for the checks; the file keeps ${VAR})"
            } else {
                ""
            };
            return Err(CliError::usage(format!(
                "{flag} {var}: the variable {var} is not set; export it first{hint}"
            )));
        }
    }
    Ok(())
}

/// Prompts for every value not given as a flag.
fn ask(args: &OnboardArgs) -> Result<Answers, CliError> {
    let mut p = Prompter::new();
    let client_id = p.ask(
        "DingTalk Client ID (AppKey)",
        args.client_id.as_deref(),
        false,
        checks::name,
    )?;
    let (client_secret, secret_for_checks) = match &args.client_secret_env {
        Some(var) if std::env::var_os(var).is_none() => {
            let q = format!(
                "DingTalk Client Secret (used for the checks only; the file keeps ${{{var}}})"
            );
            (
                None,
                Some(p.ask(&q, args.client_secret.as_deref(), true, checks::name)?),
            )
        }
        Some(_) => (None, None),
        None => (
            Some(p.ask(
                "DingTalk Client Secret (AppSecret)",
                args.client_secret.as_deref(),
                true,
                checks::name,
            )?),
            None,
        ),
    };
    let model_base_url = p.ask(
        "Model base URL",
        Some(
            args.model_base_url
                .as_deref()
                .unwrap_or("http://127.0.0.1:8000/v1"),
        ),
        false,
        checks::http_url,
    )?;
    let model = p.ask(
        "Model name",
        Some(args.model.as_deref().unwrap_or("local-chat")),
        false,
        checks::name,
    )?;
    Ok(Answers {
        client_id,
        client_secret,
        client_secret_env: args.client_secret_env.clone(),
        robot_code: args.robot_code.clone(),
        model_base_url,
        model,
        model_api_key_env: args.model_api_key_env.clone(),
        api_base: args.api_base.clone(),
        oapi_base: args.oapi_base.clone(),
        secret_for_checks,
        targets: Vec::new(),
    })
}

/// Reads answers from a terminal (secrets hidden) or, when piped, one line each from stdin.
///
/// Invariant: stdin is never kept locked between questions. The hidden read on a terminal
/// (`console`) locks the process-wide stdin itself; holding a `StdinLock` here would
/// deadlock at the secret prompt.
struct Prompter {
    tty: bool,
}

impl Prompter {
    fn new() -> Prompter {
        Prompter {
            tty: std::io::stdin().is_terminal(),
        }
    }

    /// One line from stdin; `None` at the end of input.
    fn read_line() -> Result<Option<String>, CliError> {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(line)),
            Err(e) => Err(CliError::failure(format!(
                "cannot read the answer from stdin: {e}"
            ))),
        }
    }

    /// Asks until the answer passes `check` (an empty answer takes `default`): a bad or
    /// missing answer is refused at its own prompt, with the reason, and asked again, at
    /// most [`MAX_TRIES`] times. The end of piped input is an error naming the question.
    fn ask(
        &mut self,
        question: &str,
        default: Option<&str>,
        secret: bool,
        check: fn(&str) -> Result<(), InvalidValue>,
    ) -> Result<String, CliError> {
        let default = default.filter(|d| !d.is_empty());
        for _ in 0..MAX_TRIES {
            let Some(answer) = self.read_answer(question, default, secret)? else {
                return Err(CliError::usage(format!(
                    "{question}: no answer (the input ended)"
                )));
            };
            let answer = match (answer.is_empty(), default) {
                (true, Some(d)) => d.to_string(),
                (true, None) => {
                    self.refuse(question, "an answer is needed");
                    continue;
                }
                (false, _) => answer,
            };
            match check(&answer) {
                Ok(()) => return Ok(answer),
                Err(reason) => self.refuse(question, &reason.to_string()),
            }
        }
        Err(CliError::usage(format!(
            "{question}: no usable answer after {MAX_TRIES} tries"
        )))
    }

    /// Asks an optional question: an empty answer (or the end of input) is `None`;
    /// an answer `parse` refuses is asked again with the reason.
    fn ask_optional<T>(
        &mut self,
        question: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, CliError> {
        for _ in 0..MAX_TRIES {
            let answer = self.read_answer(question, None, false)?.unwrap_or_default();
            if answer.is_empty() {
                return Ok(None);
            }
            match parse(&answer) {
                Ok(v) => return Ok(Some(v)),
                Err(reason) => self.refuse(question, &reason.to_string()),
            }
        }
        Err(CliError::usage(format!(
            "{question}: no usable answer after {MAX_TRIES} tries"
        )))
    }

    /// Shows the question and reads one trimmed answer; `None` at the end of input.
    fn read_answer(
        &mut self,
        question: &str,
        default: Option<&str>,
        secret: bool,
    ) -> Result<Option<String>, CliError> {
        let shown = match default {
            Some(_) if secret => " [keep the given value]".to_string(),
            Some(d) => format!(" [{d}]"),
            None => String::new(),
        };
        // Prompts are best effort: a closed stderr must not turn into a panic.
        let _ = write!(std::io::stderr(), "{question}{shown}: ");
        let _ = std::io::stderr().flush();
        let answer = if self.tty && secret {
            Some(
                console::Term::stderr()
                    .read_secure_line()
                    .map_err(|e| CliError::failure(format!("cannot read the answer: {e}")))?,
            )
        } else {
            Self::read_line()?
        };
        if !self.tty {
            let _ = writeln!(std::io::stderr());
        }
        Ok(answer.map(|a| a.trim().to_string()))
    }

    /// Says why an answer was refused (never echoing it: it may be a secret).
    fn refuse(&self, question: &str, reason: &str) {
        let _ = writeln!(
            std::io::stderr(),
            "  {question}: {reason}; please answer again"
        );
    }
}

/// How often one question is asked before onboarding gives up.
const MAX_TRIES: usize = 5;

/// The optional send-target alias (only asked when no `--target` was given), with how to
/// learn a conversation id.
fn ask_target(me: &str, name: &str) -> Result<Vec<(String, String)>, CliError> {
    let _ = writeln!(
        std::io::stderr(),
        "A send target names a conversation for `{me} send --to NAME`. Its id \
         (cid...) is listed by `{me} conversations --name {name}` once the bot runs \
         and someone @-mentions it; you can add targets to the config later."
    );
    let target = Prompter::new().ask_optional(
        "Send target NAME=cid... or NAME=user:STAFFID (optional, Enter to skip)",
        parse_target,
    )?;
    Ok(target.into_iter().collect())
}

/// A YAML double-quoted scalar (JSON strings are valid YAML), read back literally.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A value for a key the loader interpolates: quoted, and `${` escaped as `$${`, so the
/// loader reads back exactly `s` (a secret like `ab${HOME}cd` is not expanded).
fn lit(s: &str) -> String {
    q(&crate::config::escape(s))
}

/// The config text. Invariant: every value the operator gave is written with [`lit`]
/// (all of them go to interpolated keys), except target names, which are map keys and
/// taken literally ([`q`]); `${VAR}` appears only where a `*-env` flag asked for it.
fn render(a: &Answers) -> String {
    let secret = match (&a.client_secret_env, &a.client_secret) {
        (Some(var), _) => format!("${{{var}}}"),
        (None, Some(s)) => lit(s),
        (None, None) => "\"\"".into(),
    };
    let mut y = String::from(
        "# Written by `clawdbot onboard`. Every key is described in config-templates/dingtalk.yaml.\n",
    );
    y.push_str("models:\n  local_chat:\n    kind: openai_compatible\n");
    y.push_str(&format!("    base_url: {}\n", lit(&a.model_base_url)));
    if let Some(var) = &a.model_api_key_env {
        y.push_str(&format!("    api_key: ${{{var}}}\n"));
    }
    y.push_str(&format!(
        "    model: {}\n    timeout_ms: 12000\n",
        lit(&a.model)
    ));
    y.push_str("routing:\n  defaults:\n    model: local_chat\n");
    y.push_str("limits:\n  max_concurrency_per_model:\n    local_chat: 4\n");
    y.push_str("channel:\n  dingtalk:\n");
    y.push_str(&format!(
        "    client_id: {}\n    client_secret: {secret}\n",
        lit(&a.client_id)
    ));
    if let Some(rc) = &a.robot_code {
        y.push_str(&format!("    robot_code: {}\n", lit(rc)));
    }
    if let Some(b) = &a.api_base {
        y.push_str(&format!("    api_base: {}\n", lit(b)));
    }
    if a.targets.is_empty() {
        y.push_str("    targets: {}\n");
    } else {
        y.push_str("    targets:\n");
        for (name, id) in &a.targets {
            y.push_str(&format!("      {}: {}\n", q(name), lit(id)));
        }
    }
    y
}

/// Records `path` as the config of daemon `name` (the launch settings `daemon start` and
/// `restart` read), keeping a remembered log path; a supervised `--exec` is dropped.
fn remember_config(paths: &DaemonPaths, path: &Path) -> Result<(), CliError> {
    let launch = match Launch::load(paths) {
        Some(previous) => Launch {
            config: Some(path.to_path_buf()),
            exec: None,
            health_url: None,
            ..previous
        },
        None => Launch {
            name: paths.name.clone(),
            config: Some(path.to_path_buf()),
            log: crate::logging::LogTarget::File(paths.default_log.clone()),
            exec: None,
            health_url: None,
        },
    };
    launch.save(paths)
}

/// Parses `--target NAME=ID` values; the id must be a conversation id (`cid...`) or
/// `user:STAFFID`, the forms `clawdbot send` accepts.
fn parse_targets(raw: &[String]) -> Result<Vec<(String, String)>, CliError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in raw {
        let (name, id) =
            split_target(item).map_err(|e| CliError::usage(format!("--target {item:?}: {e}")))?;
        // The id is not shown: only the name the operator chose.
        check_target(name, id).map_err(|e| CliError::usage(format!("--target {name}: {e}")))?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(CliError::usage(format!("--target {name} is given twice")));
        }
        out.push((name.to_string(), id.to_string()));
    }
    Ok(out)
}

/// `NAME=ID` split in two (trimmed, neither empty). Reasons name no flag: the prompt and
/// `--target` share them.
fn split_target(item: &str) -> Result<(&str, &str), String> {
    item.split_once('=')
        .map(|(n, i)| (n.trim(), i.trim()))
        .filter(|(n, i)| !n.is_empty() && !i.is_empty())
        .ok_or_else(|| {
            "expected NAME=ID, e.g. test-group=cidXXXX== or ops-lead=user:STAFFID".to_string()
        })
}

fn check_target(name: &str, id: &str) -> Result<(), String> {
    checks::name(name).map_err(|e| format!("the name {e}"))?;
    checks::target_id(id).map_err(|e| format!("the id {e}"))
}

/// One target typed at the prompt.
fn parse_target(item: &str) -> Result<(String, String), String> {
    let (name, id) = split_target(item)?;
    check_target(name, id)?;
    Ok((name.to_string(), id.to_string()))
}

/// Writes the config with mode 0600 (creating its folder).
fn write_config(path: &Path, text: &str) -> Result<(), CliError> {
    crate::paths::ensure_parent(path)?;
    Ok(crate::paths::write_private(path, text.as_bytes())?)
}
