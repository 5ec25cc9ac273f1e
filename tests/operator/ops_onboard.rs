//! `clawdbot onboard --channel dingtalk`: the real binary against the real simulator (as
//! DingTalk) and an in-test fake model, over loopback. Non-interactive, piped-stdin and
//! TTY runs; every failure names what and where and exits with the contract's code.

use crate::support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawdbot_testkit::fake_model::{FakeBehavior, FakeConfig, FakeMode};
use support::stack::{Stack, CLIENT_ID, CLIENT_SECRET};
use support::{check, dead_url, wait_until, Run};

/// `onboard --non-interactive` with the simulator's credentials and the fake model.
fn onboard_args(stack: &Stack, config: &Path) -> Vec<String> {
    [
        "onboard",
        "--channel",
        "dingtalk",
        "--config",
        config.to_str().unwrap(),
        "--non-interactive",
        "--client-id",
        CLIENT_ID,
        "--api-base",
        &stack.sim_url,
        "--model-base-url",
        &stack.fake.base_url,
        "--model",
        "local-chat",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs the binary with DingTalk variables cleared (plus `env`).
fn run(stack: &Stack, args: &[String], env: &[(&str, &str)]) -> Run {
    let mut c = stack
        .home
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    c.env_remove("DINGTALK_CLIENT_ID")
        .env_remove("DINGTALK_CLIENT_SECRET")
        .env_remove("DT_SECRET");
    for (k, v) in env {
        c.env(k, v);
    }
    run_command(c)
}

fn run_command(mut c: Command) -> Run {
    let o = c.output().expect("run clawdbot");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn non_interactive_writes_a_0600_config_with_the_secret_as_a_variable() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("conf/dingtalk.yaml");
    let mut args = onboard_args(&stack, &cfg);
    args.splice(
        0..0,
        ["--json"].iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    args.extend(
        [
            "--client-secret-env",
            "DT_SECRET",
            "--target",
            "test-group=cidOpsGroup==",
            "--target",
            "ops-lead=user:0423001",
            // Deprecated: still accepted, with a warning, and not written.
            "--oapi-base",
            stack.sim_url.as_str(),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let r = run(&stack, &args, &[("DT_SECRET", CLIENT_SECRET)]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("--oapi-base is deprecated and ignored"),
        "{r:?}"
    );
    let doc = r.json();
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["schema_version"], 2);
    crate::json_schemas::assert_matches_schema("onboard", &doc);
    assert_eq!(check(&doc, "dingtalk credentials")["status"], "ok");
    let model = check(&doc, "model local_chat");
    assert_eq!(model["status"], "ok", "{doc}");
    assert!(
        model["detail"].as_str().unwrap().contains("completion"),
        "{model}"
    );
    // The model check made exactly one tiny completion (and the credentials a token).
    let stats = stack.fake_stats();
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert_eq!(stats.recent[0].body["max_tokens"], 8);
    let tokens = stack
        .rt
        .block_on(stack.sim.get("/_sim/tokens"))
        .expect("tokens");
    assert!(tokens["issued"].as_u64().unwrap() >= 1, "{tokens}");
    let next: Vec<&str> = doc["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        next.iter().any(|c| c.contains("daemon start --name")),
        "{next:?}"
    );
    assert!(
        next.iter().any(|c| c.contains("--to test-group")),
        "{next:?}"
    );

    let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "config mode {mode:o}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("${DT_SECRET}"), "{text}");
    assert!(
        !text.contains(CLIENT_SECRET),
        "the literal secret is in the file"
    );
    assert!(text.contains("cidOpsGroup=="), "{text}");
    assert!(text.contains("user:0423001"), "{text}");
    assert!(!text.contains("oapi_base"), "{text}");
    for out in [&r.stdout, &r.stderr] {
        assert!(!out.contains(CLIENT_SECRET), "secret printed: {r:?}");
    }
    // The file loads as a config (with the variable set), and not without it.
    let mut c = stack
        .home
        .command(&["config", "check", "--config", cfg.to_str().unwrap()]);
    c.env("DT_SECRET", CLIENT_SECRET);
    let ok = run_command(c);
    assert_eq!(ok.code, 0, "{ok:?}");
    let mut c = stack
        .home
        .command(&["config", "check", "--config", cfg.to_str().unwrap()]);
    c.env_remove("DT_SECRET");
    let unset = run_command(c);
    assert_eq!(unset.code, 2, "{unset:?}");
    assert!(unset.stderr.contains("DT_SECRET"), "{unset:?}");
}

#[test]
fn an_inline_secret_is_written_and_the_checks_pass() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("inline.yaml");
    let mut args = onboard_args(&stack, &cfg);
    args.extend(["--client-secret".to_string(), CLIENT_SECRET.to_string()]);
    let r = run(&stack, &args, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("Next:"), "{r:?}");
    // The next commands work as typed: they keep the --home this onboard was given.
    let home_flag = format!("--home {}", stack.home.path().display());
    let next: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| *l != "Next:")
        .skip(1)
        .collect();
    assert_eq!(next.len(), 4, "{r:?}");
    for line in next {
        assert!(line.contains(&format!("clawdbot {home_flag} ")), "{line}");
    }
    assert!(!r.stdout.contains(CLIENT_SECRET) && !r.stderr.contains(CLIENT_SECRET));
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("targets: {}"), "{text}");
    let check = stack
        .home
        .run(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(check.code, 0, "{check:?}");
}

#[test]
fn bad_credentials_fail_with_a_fix_line() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("bad.yaml");
    let mut args = onboard_args(&stack, &cfg);
    args.extend(["--client-secret".into(), "not-the-secret".into()]);
    let r = run(&stack, &args, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("FAIL") || r.stdout.contains("fail"),
        "{r:?}"
    );
    assert!(r.stdout.contains("dingtalk credentials"), "{r:?}");
    assert!(r.stdout.contains("fix: "), "{r:?}");
    assert!(r.stdout.contains("Fix the failed checks"), "{r:?}");
    assert!(!r.stdout.contains("not-the-secret") && !r.stderr.contains("not-the-secret"));

    let json = {
        let mut a = vec!["--json".to_string()];
        a.extend(args);
        a.push("--force".into());
        run(&stack, &a, &[])
    };
    assert_eq!(json.code, 1, "{json:?}");
    let doc = json.json();
    crate::json_schemas::assert_matches_schema("onboard", &doc);
    assert_eq!(doc["error"]["kind"], "check_failed", "{doc}");
    let c = check(&doc, "dingtalk credentials");
    assert_eq!(c["status"], "fail", "{doc}");
    assert_eq!(
        doc["error"]["fix"], c["fix"],
        "the failed check's fix: {doc}"
    );
    assert!(
        c["fix"].as_str().unwrap().contains("Client Secret"),
        "{doc}"
    );
    assert!(
        c["detail"].as_str().unwrap().contains(&stack.sim_url),
        "{doc}"
    );
}

#[test]
fn a_model_server_that_is_down_fails_naming_the_url() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("down.yaml");
    let dead = dead_url();
    let mut args = onboard_args(&stack, &cfg);
    let at = args.iter().position(|a| a == "--model-base-url").unwrap();
    args[at + 1] = dead.clone();
    args.extend([
        "--json".into(),
        "--client-secret".into(),
        CLIENT_SECRET.into(),
    ]);
    let r = run(&stack, &args, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc = r.json();
    let c = check(&doc, "model local_chat");
    assert_eq!(c["status"], "fail", "{doc}");
    assert!(c["detail"].as_str().unwrap().contains(&dead), "{doc}");
    assert!(c["fix"].as_str().unwrap().contains(&dead), "{doc}");
    assert_eq!(check(&doc, "dingtalk credentials")["status"], "ok");
}

#[test]
fn a_model_that_lists_but_cannot_answer_fails_the_completion_check() {
    // `/models` answers, but every completion is a 404 "model not found".
    let fake = FakeConfig::from(FakeBehavior {
        mode: FakeMode::Status,
        status: 404,
        body:
            r#"{"error":{"message":"model not found","type":"invalid_request_error","code":404}}"#
                .into(),
        ..Default::default()
    });
    let stack = Stack::new(fake, &[]);
    let cfg = stack.home.path().join("nomodel.yaml");
    let mut args = onboard_args(&stack, &cfg);
    args.extend([
        "--json".into(),
        "--client-secret".into(),
        CLIENT_SECRET.into(),
    ]);
    let r = run(&stack, &args, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    let doc = r.json();
    let c = check(&doc, "model local_chat");
    assert_eq!(c["status"], "fail", "{doc}");
    assert!(
        c["detail"].as_str().unwrap().contains("chat/completions"),
        "{doc}"
    );
    assert!(c["fix"]
        .as_str()
        .unwrap()
        .contains("models.local_chat.model"));
    assert_eq!(stack.fake_stats().requests, 1);
}

#[test]
fn an_existing_config_is_kept_without_force() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.write("existing.yaml", "# mine\n");
    let mut args = onboard_args(&stack, &cfg);
    args.extend(["--client-secret".into(), CLIENT_SECRET.into()]);
    let r = run(&stack, &args, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("--force"), "{r:?}");
    assert!(r.stderr.contains(cfg.to_str().unwrap()), "{r:?}");
    let mut json_args = vec!["--json".to_string()];
    json_args.extend(args.iter().cloned());
    let j = run(&stack, &json_args, &[]);
    assert!(support::error_fix(&j.json()).contains("--force"), "{j:?}");
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "# mine\n");

    args.extend(["--force".into(), "--skip-checks".into()]);
    let forced = run(&stack, &args, &[]);
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(std::fs::read_to_string(&cfg)
        .unwrap()
        .contains("client_id: \"dingstacktest\""));
    let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "an overwritten file is 0600 too ({mode:o})");
    assert_eq!(stack.fake_stats().requests, 0, "--skip-checks made a call");
}

#[test]
fn non_interactive_usage_errors_exit_2_naming_the_flag() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("usage.yaml");
    let base = |drop_flag: &str| {
        let mut a = onboard_args(&stack, &cfg);
        if let Some(i) = a.iter().position(|x| x == drop_flag) {
            a.drain(i..i + 2);
        }
        a
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (base("--client-id"), "--client-id"),
        (base("--nothing"), "--client-secret"),
        (
            {
                let mut a = base("--model-base-url");
                a.extend(["--client-secret".into(), "x".into()]);
                a
            },
            "--model-base-url",
        ),
        (
            {
                let mut a = base("--nothing");
                a.extend(["--client-secret-env".into(), "DT_SECRET".into()]);
                a
            },
            "DT_SECRET",
        ),
        (
            {
                let mut a = base("--nothing");
                a.extend([
                    "--client-secret".into(),
                    "x".into(),
                    "--target".into(),
                    "nonsense".into(),
                ]);
                a
            },
            "--target",
        ),
        (
            {
                let mut a = base("--nothing");
                a.extend([
                    "--client-secret".into(),
                    "x".into(),
                    "--target".into(),
                    "g=123".into(),
                ]);
                a
            },
            "cid",
        ),
    ];
    for (args, named) in cases {
        let r = run(&stack, &args, &[]);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(named),
            "{args:?} should name {named}: {r:?}"
        );
        assert!(!cfg.exists(), "{args:?} wrote a config");
    }
}

#[test]
fn interactive_answers_can_be_piped_line_by_line() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("piped.yaml");
    let mut c = stack.home.command(&[
        "onboard",
        "--channel",
        "dingtalk",
        "--config",
        cfg.to_str().unwrap(),
        "--api-base",
        &stack.sim_url,
    ]);
    c.env_remove("DINGTALK_CLIENT_ID")
        .env_remove("DINGTALK_CLIENT_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Client ID, secret, model URL, then an empty line: the model name's default.
    let answers = format!("{CLIENT_ID}\n{CLIENT_SECRET}\n{}\n\n", stack.fake.base_url);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let r = Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert_eq!(r.code, 0, "{r:?}");
    for prompt in [
        "DingTalk Client ID",
        "Client Secret",
        "Model base URL [http://127.0.0.1:8000/v1]",
        "Model name [local-chat]",
    ] {
        assert!(
            r.stderr.contains(prompt),
            "prompt {prompt:?} missing: {r:?}"
        );
    }
    assert!(!r.stdout.contains("Client ID"), "prompts belong on stderr");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains(&stack.fake.base_url), "{text}");
    assert!(text.contains("model: \"local-chat\""), "{text}");
    assert!(
        text.contains(&format!("client_id: \"{CLIENT_ID}\"")),
        "{text}"
    );

    // Stdin that ends before a needed answer: a usage error, nothing written.
    let cfg2 = stack.home.path().join("short.yaml");
    let mut c = stack.home.command(&[
        "onboard",
        "--config",
        cfg2.to_str().unwrap(),
        "--skip-checks",
    ]);
    c.env_remove("DINGTALK_CLIENT_ID")
        .env_remove("DINGTALK_CLIENT_SECRET");
    let short = run_command(c);
    assert_eq!(short.code, 2, "{short:?}");
    assert!(short.stderr.contains("Client ID"), "{short:?}");
    assert!(!cfg2.exists());
}

/// A real terminal (a pty): the secret is read with echo off, so it never appears in
/// what the terminal shows, while ordinary answers are echoed.
#[test]
fn on_a_terminal_the_secret_is_not_echoed() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("tty.yaml");
    let mut term = Terminal::run(stack.home.command(&[
        "onboard",
        "--config",
        cfg.to_str().unwrap(),
        "--api-base",
        &stack.sim_url,
    ]));
    term.answer("Client ID", CLIENT_ID, false);
    term.answer("Client Secret", CLIENT_SECRET, true);
    term.answer("Model base URL", &stack.fake.base_url, false);
    term.answer("Model name", "", false);
    term.answer("Send target", "", false);
    let (code, screen) = term.finish();
    assert_eq!(code, Some(0), "screen: {screen}");
    assert!(
        screen.contains(CLIENT_ID),
        "ordinary answers are echoed: {screen}"
    );
    assert!(
        !screen.contains(CLIENT_SECRET),
        "the secret was echoed: {screen}"
    );
    assert!(screen.contains("Next:"), "{screen}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains(CLIENT_SECRET),
        "inline secret expected: {text}"
    );
}

/// Onboarding forgives, on a terminal: an empty required answer and a URL without a
/// scheme are refused at their own prompt with the reason and asked again (the error
/// names the prompt, not a flag nobody typed); a bad target is re-asked too; the
/// optional target is written; the output shows how to learn conversation ids.
#[test]
fn on_a_terminal_bad_answers_are_asked_again_with_the_reason() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("forgiving.yaml");
    let mut term = Terminal::run(stack.home.command(&[
        "onboard",
        "--config",
        cfg.to_str().unwrap(),
        "--api-base",
        &stack.sim_url,
    ]));
    term.answer("Client ID", "", false);
    term.answer("Client ID", CLIENT_ID, false);
    term.answer("Client Secret", CLIENT_SECRET, true);
    let without_scheme = stack
        .fake
        .base_url
        .trim_start_matches("http://")
        .to_string();
    term.answer("Model base URL", &without_scheme, false);
    term.answer("Model base URL", &stack.fake.base_url, false);
    term.answer("Model name", "", false);
    term.answer("Send target", "ops-room=notacid", false);
    term.answer("Send target", "ops-room=cidOpsRoom==", false);
    let (code, screen) = term.finish();
    assert_eq!(code, Some(0), "screen: {screen}");
    assert!(
        screen.contains("DingTalk Client ID (AppKey): an answer is needed; please answer again"),
        "{screen}"
    );
    assert!(
        screen.contains("Model base URL: must be an http:// or https:// URL"),
        "{screen}"
    );
    assert!(
        screen.contains("the id must be a conversation id"),
        "{screen}"
    );
    assert!(
        !screen.contains("--model-base-url"),
        "names a flag: {screen}"
    );
    assert!(
        screen.contains("conversations --name dingtalk-bot"),
        "{screen}"
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("\"ops-room\": \"cidOpsRoom==\""), "{text}");
    assert!(text.contains(&stack.fake.base_url), "{text}");
}

/// Onboarding on a pseudo-terminal: what the program shows, and typing answers.
struct Terminal {
    child: KillOnDrop,
    master: std::fs::File,
    screen: Arc<Mutex<String>>,
    /// The screen up to here has been answered (a prompt shown again is found after it).
    answered: usize,
}

impl Terminal {
    fn run(mut c: Command) -> Terminal {
        use nix::pty::openpty;
        let pty = openpty(None, None).expect("openpty");
        // Only the onboard child may hold the terminal (tests run in parallel and spawn).
        for fd in [&pty.master, &pty.slave] {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            use std::os::fd::AsRawFd;
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
        }
        c.env_remove("DINGTALK_CLIENT_ID")
            .env_remove("DINGTALK_CLIENT_SECRET")
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
        let child = KillOnDrop(c.spawn().unwrap());
        drop(c); // the Command holds copies of the terminal too
        drop(pty.slave);
        let master = std::fs::File::from(pty.master);
        let screen = support::record_screen(&master);
        Terminal {
            child,
            master,
            screen,
            answered: 0,
        }
    }

    /// Waits for `prompt` after the last answered one, then types `text` and Enter
    /// (a `hidden` answer only once the program turned echo off).
    fn answer(&mut self, prompt: &str, text: &str, hidden: bool) {
        use nix::sys::termios::{tcgetattr, LocalFlags};
        use std::os::fd::AsFd;
        let mut at = None;
        let shown = wait_until(Duration::from_secs(30), || {
            let screen = self.screen.lock().unwrap();
            at = screen[self.answered..]
                .find(prompt)
                .map(|i| self.answered + i + prompt.len());
            at.is_some()
        });
        assert!(
            shown,
            "no prompt {prompt:?}; screen: {}",
            self.screen.lock().unwrap()
        );
        if hidden {
            assert!(
                wait_until(Duration::from_secs(30), || tcgetattr(self.master.as_fd())
                    .map(|t| !t.local_flags.contains(LocalFlags::ECHO))
                    .unwrap_or(false)),
                "echo was never turned off for the secret"
            );
        }
        self.answered = at.unwrap();
        self.master.write_all(text.as_bytes()).unwrap();
        self.master.write_all(b"\n").unwrap();
    }

    /// Waits (bounded) for the program to end; its exit code and the whole screen.
    fn finish(mut self) -> (Option<i32>, String) {
        let mut status = None;
        let exited = wait_until(Duration::from_secs(30), || {
            status = self.child.0.try_wait().unwrap();
            status.is_some()
        });
        if !exited {
            panic!(
                "onboard did not finish; screen: {}",
                self.screen.lock().unwrap()
            );
        }
        // The reader thread is left to end on its own; the last output is in the screen
        // once the summary is there.
        wait_until(Duration::from_secs(30), || {
            self.screen.lock().unwrap().contains("healthcheck --name")
        });
        let screen = self.screen.lock().unwrap().clone();
        (status.unwrap().code(), screen)
    }
}

/// Kills a child still running when the test ends (a failed assertion included).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A simulator whose app secret is `secret` (a child process, killed on drop).
struct SimWithSecret {
    child: std::process::Child,
    url: String,
}

impl SimWithSecret {
    fn start(stack: &Stack, secret: &str, tag: &str) -> SimWithSecret {
        let port_file = stack.home.path().join(format!("sim-{tag}.url"));
        let port = port_file.to_str().unwrap();
        let child = stack
            .home
            .command(&[
                "sim",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--port-file",
                port,
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                secret,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sim");
        assert!(
            wait_until(Duration::from_secs(10), || port_file.exists()),
            "simulator did not start"
        );
        let url = std::fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .to_string();
        SimWithSecret { child, url }
    }
}

impl Drop for SimWithSecret {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Secrets holding `${HOME}` or a lone `${` are written escaped, load back unchanged
/// (the simulator accepts only the exact secret) and pass `config check`.
#[test]
fn secrets_with_dollar_braces_round_trip() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    for (i, secret) in ["ab${HOME}cd", "x${y", "$${Z}$"].into_iter().enumerate() {
        let sim = SimWithSecret::start(&stack, secret, &i.to_string());
        let cfg = stack.home.path().join(format!("dollar{i}.yaml"));
        let mut args = onboard_args(&stack, &cfg);
        let at = args.iter().position(|a| a == "--api-base").unwrap();
        args[at + 1] = sim.url.clone();
        args.extend(["--json".into(), "--client-secret".into(), secret.into()]);
        let r = run(&stack, &args, &[]);
        assert_eq!(r.code, 0, "{secret}: {r:?}");
        let doc = r.json();
        assert_eq!(check(&doc, "dingtalk credentials")["status"], "ok", "{doc}");
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.contains("$${"), "{secret} not escaped: {text}");
        let loads = stack
            .home
            .run(&["config", "check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(loads.code, 0, "{secret}: {loads:?}");
    }
}

/// Every flag value is checked before the file is written: exit 2 naming the flag,
/// the value not echoed, no file.
#[test]
fn bad_flag_values_exit_2_before_anything_is_written() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("never.yaml");
    let replaced = |flag: &str, value: &str| {
        let mut a = onboard_args(&stack, &cfg);
        let at = a.iter().position(|x| x == flag).unwrap();
        a[at + 1] = value.into();
        a.extend(["--client-secret".into(), "s".into()]);
        a
    };
    let added = |extra: &[&str]| {
        let mut a = onboard_args(&stack, &cfg);
        a.extend(["--client-secret".into(), "s".into()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            replaced("--model-base-url", "not a url"),
            "--model-base-url",
            "not a url",
        ),
        (
            replaced("--model-base-url", "ftp://host/v1"),
            "--model-base-url",
            "ftp://host",
        ),
        (replaced("--api-base", "nohost"), "--api-base", "nohost"),
        (
            added(&["--oapi-base", "http://"]),
            "--oapi-base",
            "\"http://\"",
        ),
        (replaced("--model", " "), "--model", "\" \""),
        (replaced("--client-id", "id\nline2"), "--client-id", "line2"),
        (added(&["--robot-code", "rc\tX"]), "--robot-code", "rc\tX"),
        (added(&["--target", "g=cid"]), "--target g", "g=cid"),
        (added(&["--target", "g=user: "]), "--target g", "user: "),
    ];
    for (args, flag, value) in cases {
        let r = run(&stack, &args, &[]);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(flag),
            "{args:?} should name {flag}: {r:?}"
        );
        assert!(
            !r.stderr.contains(value),
            "{args:?} echoed the value: {r:?}"
        );
        assert!(!cfg.exists(), "{args:?} wrote a config");
    }

    // Piped answers are checked the same way, at their own prompt: a bad one is refused
    // with the reason and asked again; when the input ends there, exit 2 naming the prompt.
    let mut c = stack.home.command(&[
        "onboard",
        "--config",
        cfg.to_str().unwrap(),
        "--skip-checks",
    ]);
    c.env_remove("DINGTALK_CLIENT_ID")
        .env_remove("DINGTALK_CLIENT_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"dingid\nsecret\nnot a url\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Model base URL: must be an http:// or https:// URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: Model base URL: no answer (the input ended)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("--model-base-url"),
        "names a flag: {stderr}"
    );
    assert!(!cfg.exists(), "piped answers wrote a config");
}

/// Without `--config` the file goes where `daemon start --name NAME` looks for it
/// (CONFIG_DIR/NAME.yaml), so the README's commands work for root and for other users
/// alike; each check is announced on stderr as it starts.
#[test]
fn without_config_it_writes_the_daemons_default_config_and_announces_each_check() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let mut args: Vec<String> = onboard_args(&stack, Path::new("unused"))
        .into_iter()
        .filter(|a| a != "--config" && a != "unused")
        .collect();
    args.extend(["--name", "desk-bot", "--client-secret", CLIENT_SECRET].map(String::from));
    let r = run(&stack, &args, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let written = stack.home.path().join("config/desk-bot.yaml");
    let mode = std::fs::metadata(&written).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "config mode {mode:o}");
    assert!(r.stderr.contains(written.to_str().unwrap()), "{r:?}");
    let started = r.stderr.find("....  dingtalk credentials: asking");
    let ended = r.stderr.find("ok    dingtalk credentials");
    assert!(started.is_some() && started < ended, "{r:?}");
    assert!(r.stderr.contains("....  model local_chat:"), "{r:?}");

    let start = stack.home.run(&["daemon", "start", "--name", "desk-bot"]);
    assert_eq!(start.code, 0, "{start:?}");
    let status = stack
        .home
        .run(&["--json", "daemon", "status", "--name", "desk-bot"]);
    assert_eq!(
        status.json()["config_path"].as_str(),
        written.to_str(),
        "{status:?}"
    );
}

/// The config's folder is checked before the first question: nobody answers every
/// prompt only to learn the file cannot be written.
#[test]
fn an_unwritable_config_folder_is_refused_before_any_question() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let not_a_folder = stack.home.write("plain-file", "x");
    let cfg = not_a_folder.join("dingtalk.yaml");
    let r = run(
        &stack,
        &["onboard", "--config", cfg.to_str().unwrap()].map(String::from),
        &[],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(not_a_folder.to_str().unwrap()), "{r:?}");
    assert!(!r.stderr.contains("Client ID"), "asked first: {r:?}");
}

/// A failed check leaves `daemon start --name NAME` as it was, and says so: the broken
/// file is not what the daemon will start with.
#[test]
fn a_failed_check_does_not_point_the_daemon_at_the_new_file() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let cfg = stack.home.path().join("elsewhere/broken.yaml");
    let mut args = onboard_args(&stack, &cfg);
    let url_at = args.iter().position(|a| a == "--model-base-url").unwrap() + 1;
    args[url_at] = format!("{}/v1", dead_url());
    args.extend(["--name", "fresh-bot", "--client-secret", CLIENT_SECRET].map(String::from));
    let r = run(&stack, &args, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(cfg.exists(), "the file stays written so it can be edited");
    assert!(
        r.stderr.contains("was NOT pointed at") && r.stderr.contains("--config"),
        "{r:?}"
    );
    let start = stack.home.run(&["daemon", "start", "--name", "fresh-bot"]);
    assert_eq!(start.code, 2, "started with the broken file: {start:?}");
    assert!(
        !start.stderr.contains("broken.yaml"),
        "the daemon was pointed at the broken file: {start:?}"
    );

    // Once the checks pass, the file is recorded for the daemon.
    args[url_at] = stack.fake.base_url.clone();
    args.push("--force".into());
    let fixed = run(&stack, &args, &[]);
    assert_eq!(fixed.code, 0, "{fixed:?}");
    assert!(fixed.stderr.contains("will use this config"), "{fixed:?}");
}
