//! `clawdbot onboard --channel dingtalk --config PATH`: writes a config and checks that the
//! DingTalk credentials obtain a token and the model endpoint answers.
//!
//! Interactive when `--non-interactive` is not given: prompts on stderr with defaults
//! (secrets hidden on a terminal; plain lines when stdin is a pipe, so it can be scripted).
//! The file is written with mode 0600 and never overwritten without `--force`.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::output::Output;
use crate::cli::OnboardArgs;
use crate::exit::{CliError, CmdResult, Code};
use crate::ipc::proto::CheckStatus;
use crate::paths::{absolute, io_error, Layout};

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
    oapi_base: Option<String>,
}

pub fn onboard(_layout: &Layout, args: &OnboardArgs, out: &Output) -> CmdResult {
    let path = absolute(&args.config);
    if path.exists() && !args.force {
        return Err(CliError::failure(format!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        )));
    }
    let answers = if args.non_interactive {
        from_flags(args)?
    } else {
        ask(args)?
    };
    if let (Some(var), Some(secret)) = (&answers.client_secret_env, &args.client_secret) {
        // The config refers to ${VAR}; make it resolvable for the checks below.
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, secret);
        }
    }
    write_config(&path, &render(&answers))?;
    out.note(&format!("wrote {} (mode 0600)", path.display()));

    let config = crate::config::load(&path)?;
    let checks = if args.skip_checks {
        Vec::new()
    } else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
        rt.block_on(crate::bot::preflight_checks(
            &config,
            Duration::from_secs(10),
        ))
        .checks
    };
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    let mut human: Vec<String> = checks
        .iter()
        .map(|c| {
            let mut l = format!(
                "{:4}  {}: {}",
                format!("{:?}", c.status).to_lowercase(),
                c.name,
                c.detail
            );
            if let Some(f) = &c.fix {
                l.push_str(&format!("\n      fix: {f}"));
            }
            l
        })
        .collect();
    let cfg = path.display().to_string();
    let next = vec![
        format!("clawdbot daemon start --name dingtalk-bot --config {cfg}"),
        "clawdbot send --name dingtalk-bot --to test-group --text ping".to_string(),
        "clawdbot healthcheck --name dingtalk-bot".to_string(),
    ];
    human.push(String::new());
    human.push(if failed {
        "Fix the failed checks, then:".into()
    } else {
        "Next:".into()
    });
    human.extend(next.iter().map(|c| format!("  {c}")));
    out.result(
        json!({"ok": !failed, "config": cfg, "checks": checks, "next": next}),
        &human.join("\n"),
    );
    Ok(if failed { Code::Failure } else { Code::Ok })
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
    })
}

/// Prompts for every value not given as a flag.
fn ask(args: &OnboardArgs) -> Result<Answers, CliError> {
    let mut p = Prompter::new();
    let client_id = p.ask(
        "DingTalk Client ID (AppKey)",
        args.client_id.as_deref(),
        false,
    )?;
    let client_secret = match &args.client_secret_env {
        Some(_) => None,
        None => Some(p.ask(
            "DingTalk Client Secret (AppSecret)",
            args.client_secret.as_deref(),
            true,
        )?),
    };
    let model_base_url = p.ask(
        "Model base URL",
        Some(
            args.model_base_url
                .as_deref()
                .unwrap_or("http://127.0.0.1:8000/v1"),
        ),
        false,
    )?;
    let model = p.ask(
        "Model name",
        Some(args.model.as_deref().unwrap_or("local-chat")),
        false,
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
    })
}

/// Reads answers from a terminal (secrets hidden) or, when piped, one line each from stdin.
struct Prompter {
    tty: bool,
    lines: std::io::Lines<std::io::StdinLock<'static>>,
}

impl Prompter {
    fn new() -> Prompter {
        Prompter {
            tty: std::io::stdin().is_terminal(),
            lines: std::io::stdin().lock().lines(),
        }
    }

    fn ask(
        &mut self,
        question: &str,
        default: Option<&str>,
        secret: bool,
    ) -> Result<String, CliError> {
        let shown = match default {
            Some(d) if secret && !d.is_empty() => " [keep the given value]".to_string(),
            Some(d) if !d.is_empty() => format!(" [{d}]"),
            _ => String::new(),
        };
        eprint!("{question}{shown}: ");
        let _ = std::io::stderr().flush();
        let answer = if self.tty && secret {
            console::Term::stderr()
                .read_secure_line()
                .map_err(|e| CliError::failure(format!("cannot read the answer: {e}")))?
        } else {
            match self.lines.next() {
                Some(Ok(l)) => l,
                Some(Err(e)) => {
                    return Err(CliError::failure(format!("cannot read the answer: {e}")))
                }
                None => String::new(),
            }
        };
        if !self.tty {
            eprintln!();
        }
        let answer = answer.trim().to_string();
        match (answer.is_empty(), default) {
            (false, _) => Ok(answer),
            (true, Some(d)) if !d.is_empty() => Ok(d.to_string()),
            _ => Err(CliError::usage(format!("{question}: an answer is needed"))),
        }
    }
}

/// A YAML double-quoted scalar (JSON strings are valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn render(a: &Answers) -> String {
    let secret = match (&a.client_secret_env, &a.client_secret) {
        (Some(var), _) => format!("${{{var}}}"),
        (None, Some(s)) => q(s),
        (None, None) => "\"\"".into(),
    };
    let mut y = String::from(
        "# Written by `clawdbot onboard`. Every key is described in config-templates/dingtalk.yaml.\n",
    );
    y.push_str("models:\n  local_chat:\n    kind: openai_compatible\n");
    y.push_str(&format!("    base_url: {}\n", q(&a.model_base_url)));
    if let Some(var) = &a.model_api_key_env {
        y.push_str(&format!("    api_key: ${{{var}}}\n"));
    }
    y.push_str(&format!(
        "    model: {}\n    timeout_ms: 12000\n",
        q(&a.model)
    ));
    y.push_str("routing:\n  defaults:\n    model: local_chat\n");
    y.push_str("limits:\n  max_concurrency_per_model:\n    local_chat: 4\n");
    y.push_str("channel:\n  dingtalk:\n");
    y.push_str(&format!(
        "    client_id: {}\n    client_secret: {secret}\n",
        q(&a.client_id)
    ));
    if let Some(rc) = &a.robot_code {
        y.push_str(&format!("    robot_code: {}\n", q(rc)));
    }
    if let Some(b) = &a.api_base {
        y.push_str(&format!("    api_base: {}\n", q(b)));
    }
    if let Some(b) = &a.oapi_base {
        y.push_str(&format!("    oapi_base: {}\n", q(b)));
    }
    y.push_str("    targets: {}\n");
    y
}

fn write_config(path: &Path, text: &str) -> Result<(), CliError> {
    crate::paths::ensure_parent(path)?;
    let tmp = path.with_extension("yaml.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error("create", &tmp, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io_error("write", &tmp, e))?;
    f.sync_all().map_err(|e| io_error("sync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error("replace", path, e))
}
