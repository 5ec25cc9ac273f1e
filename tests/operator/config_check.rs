//! `config check` and config errors through the real binary.

use crate::support;

use support::{seed_config, Home};

#[test]
fn seed_config_checks_ok() {
    let home = Home::new();
    let cfg = home.write("c.yaml", &seed_config("http://127.0.0.1:8000/v1"));
    let r = home.run(&[
        "--json",
        "config",
        "check",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["models"][0], "local_chat");
}

#[test]
fn errors_name_what_and_where_with_exit_2() {
    let home = Home::new();
    let cases = [
        (
            seed_config("http://x/v1").replace(
                "    model: \"local-chat\"",
                "    model: \"m\"\n    colour: red",
            ),
            vec!["colour", "line 7"],
        ),
        (
            seed_config("http://x/v1").replace("LOCAL_MODEL_API_KEY", "CLAWDBOT_NOT_SET_VAR"),
            vec!["CLAWDBOT_NOT_SET_VAR is not set", "line"],
        ),
        (
            seed_config("http://x/v1").replace("model: local_chat", "model: ghost"),
            vec!["routing.defaults.model", "ghost"],
        ),
        (seed_config("ftp://x/v1"), vec!["base_url", "http://"]),
        (
            seed_config("http://x/v1").replace("timeout_ms: 12000", "timeout_ms: soon"),
            vec!["models.local_chat.timeout_ms", "line 7"],
        ),
        ("models: [\n".to_string(), vec!["line"]),
    ];
    for (text, needles) in cases {
        let cfg = home.write("bad.yaml", &text);
        let r = home.run(&["config", "check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            r.stderr.contains("bad.yaml"),
            "error must name the file: {r:?}"
        );
        for n in needles {
            assert!(r.stderr.contains(n), "missing {n:?} in {r:?}");
        }
    }
    let r = home.run(&["config", "check", "--config", "/nonexistent/c.yaml"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/c.yaml"), "{r:?}");
}

/// A tab in the indent is named as such (not the scanner's "cannot start any token"), a
/// misspelt key gets the closest known one, and every unset variable comes in one run.
#[test]
fn config_errors_say_tab_did_you_mean_and_every_unset_variable() {
    let home = Home::new();
    let seed = seed_config("http://x/v1");
    let cases = [
        (
            seed.replace("    timeout_ms: 12000", "\ttimeout_ms: 12000"),
            vec!["line 7 is indented with a tab", "spaces only"],
        ),
        (
            seed.replace("timeout_ms: 12000", "timeuot_ms: 12000"),
            vec!["did you mean `timeout_ms`?", "line 7"],
        ),
        (
            seed.replace("LOCAL_MODEL_API_KEY", "CLAWDBOT_UNSET_ONE")
                .replace("\"local-chat\"", "${CLAWDBOT_UNSET_TWO}"),
            vec![
                "CLAWDBOT_UNSET_ONE is not set",
                "CLAWDBOT_UNSET_TWO",
                "${NAME:-}",
            ],
        ),
    ];
    for (text, needles) in cases {
        let cfg = home.write("bad.yaml", &text);
        let r = home.run(&["config", "check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{r:?}");
        for n in needles {
            assert!(r.stderr.contains(n), "missing {n:?} in {r:?}");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let home = Home::new();
    assert_eq!(home.run(&["daemon", "frobnicate"]).code, 2);
    assert_eq!(home.run(&["daemon", "stop"]).code, 2);
}

/// The template's `api_key` says "empty = none": it must load with the variable unset.
#[test]
fn the_config_template_loads() {
    let home = Home::new();
    let template = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config-templates/dingtalk.yaml"
    );
    let r = home
        .command(&["--json", "config", "check", "--config", template])
        .env("DINGTALK_CLIENT_ID", "dingabc")
        .env("DINGTALK_CLIENT_SECRET", "s3cr3t")
        .env_remove("LOCAL_MODEL_API_KEY")
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

/// The seed config, a channel section (lines 14-19, `client_secret` on line 17) and
/// `extra` from line 20 on (inside `channel.dingtalk` when indented by 4).
/// Model names are shown raw by status, healthcheck and chat `/status`: a name with a line
/// break or other odd characters is refused at load, naming the key, its value escaped.
#[test]
fn model_names_are_plain_words_checked_at_load() {
    let home = Home::new();
    let long = "m".repeat(65);
    for (name_yaml, shown) in [
        (
            "\"evil\\nmodel ok: 0 in flight\"",
            r#""evil\nmodel ok: 0 in flight""#,
        ),
        ("\"tab\\there\"", r#""tab\there""#),
        ("\"has space\"", r#""has space""#),
        ("\"\"", r#""""#),
        (long.as_str(), long.as_str()),
    ] {
        let text = seed_config("http://x/v1")
            .replacen("\n  local_chat:\n", &format!("\n  {name_yaml}:\n"), 1)
            .replace("model: local_chat", &format!("model: {name_yaml}"))
            .replace("    local_chat: 4", &format!("    {name_yaml}: 4"));
        let cfg = home.write("names.yaml", &text);
        let r = home.run(&["config", "check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{name_yaml}: {r:?}");
        assert!(
            r.stderr.contains("models:")
                && r.stderr.contains(shown)
                && r.stderr.contains("letters, digits"),
            "{name_yaml}: {r:?}"
        );
        assert!(!r.stderr.contains("evil\nmodel"), "raw line break: {r:?}");
    }
    let ok = seed_config("http://x/v1").replace("local_chat", "Qwen2.5-7b_chat");
    let cfg = home.write("ok.yaml", &ok);
    let r = home.run(&["config", "check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
}

fn with_channel(client_secret: &str, extra: &str) -> String {
    format!(
        "{}channel:\n  dingtalk:\n    client_id: \"dingx\"\n    client_secret: {client_secret}\n    \
         mode: http\n    http_listen: \"127.0.0.1:8787\"\n{extra}",
        seed_config("http://127.0.0.1:8000/v1")
    )
}

/// Runs `config check` (text and JSON) on `text`; returns both runs.
fn check_both(home: &Home, text: &str) -> [support::Run; 2] {
    let cfg = home.write("c.yaml", text);
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let path = cfg.to_str().unwrap();
    [
        home.run(&["config", "check", "--config", path]),
        home.run(&["--json", "config", "check", "--config", path]),
    ]
}

#[test]
fn interpolation_errors_name_key_line_and_column_never_the_value() {
    let home = Home::new();
    let cases = [
        ("\"SECRETzz9${Qx7\"", vec!["unclosed", "character 10"]),
        (
            "\"SECRETzz9${a b}Qx7\"",
            vec!["variable name", "character 10"],
        ),
        ("\"SECRETzz9${}Qx7\"", vec!["variable name"]),
        (
            "\"SECRETzz9${CLAWDBOT_UNSET_X}\"",
            vec!["CLAWDBOT_UNSET_X is not set"],
        ),
        ("[\"SECRETzz9Qx7\"]", vec!["expected a string"]),
    ];
    for (secret, needles) in cases {
        for r in check_both(&home, &with_channel(secret, "")) {
            assert_eq!(r.code, 2, "{secret}: {r:?}");
            let all = format!("{}{}", r.stdout, r.stderr);
            assert!(
                !all.contains("SECRET") && !all.contains("Qx7"),
                "{secret}: {r:?}"
            );
            for n in needles
                .iter()
                .chain(&["channel.dingtalk.client_secret", "line 17, column 20"])
            {
                assert!(all.contains(n), "{secret}: missing {n:?} in {r:?}");
            }
        }
    }
}

/// A value of the wrong type or an unknown enum value is named by its key, line, column
/// and what was expected, never quoted (human and --json): a whole `KEY=secret` env file,
/// an unknown `mode`, a string or a number where a whole number or an enum goes, and a
/// file that is no config at all (`/etc/passwd`).
#[test]
fn config_errors_never_quote_the_files_values() {
    let home = Home::new();
    let seed = seed_config("http://127.0.0.1:8000/v1");
    let cases = [
        ("DINGTALK_CLIENT_SECRET=hunter2zz\n".to_string(), vec!["a string, expected a mapping of config keys"]),
        (
            with_channel("x", "").replace("mode: http", "mode: hunter2zz"),
            vec!["line 18, column 11: channel.dingtalk.mode: unknown value, expected `stream` or `http`"],
        ),
        (
            with_channel("x", "").replace("mode: http", "mode: 98765432"),
            vec!["channel.dingtalk.mode: unknown value"],
        ),
        (
            seed.replace("    model: \"local-chat\"", "    model: \"m\"\n    timeout_ms: hunter2zz"),
            vec!["timeout_ms", "line 7", "a string"],
        ),
    ];
    for (text, needles) in cases {
        for r in check_both(&home, &text) {
            assert_eq!(r.code, 2, "{text}: {r:?}");
            let all = format!("{}{}", r.stdout, r.stderr);
            assert!(
                !all.contains("hunter2") && !all.contains("98765432"),
                "a value was quoted: {r:?}"
            );
            for n in &needles {
                assert!(all.contains(n), "missing {n:?} in {r:?}");
            }
        }
    }
    for json in [false, true] {
        let mut args = vec!["config", "check", "--config", "/etc/passwd"];
        if json {
            args.insert(0, "--json");
        }
        let r = home.run(&args);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            !format!("{}{}", r.stdout, r.stderr).contains("root:"),
            "{r:?}"
        );
    }
}

#[test]
fn answer_caps_parts_and_send_rates_are_range_checked_at_load() {
    let home = Home::new();
    let reply = |k: &str, v: &str| format!("reply:\n  {k}: {v}\n");
    let rate = |k: &str, v: &str| format!("    send_rate:\n      {k}: {v}\n");
    let bad = [
        (
            reply("max_parts", "0"),
            "reply.max_parts",
            "below the minimum of 1",
        ),
        (
            reply("max_parts", "21"),
            "reply.max_parts",
            "above the maximum of 20",
        ),
        (
            reply("max_answer_chars", "99"),
            "reply.max_answer_chars",
            "minimum of 100",
        ),
        (
            reply("max_answer_chars", "100001"),
            "reply.max_answer_chars",
            "maximum of 100000",
        ),
        (
            reply("max_answer_chars", "-5"),
            "reply.max_answer_chars",
            "below the minimum of 100",
        ),
        (
            rate("per_robot", "0"),
            "channel.dingtalk.send_rate.per_robot",
            "minimum of 1",
        ),
        (
            rate("per_conversation", "10001"),
            "channel.dingtalk.send_rate.per_conversation",
            "maximum of 10000",
        ),
    ];
    for (extra, key, why) in bad {
        for r in check_both(&home, &with_channel("\"s\"", &extra)) {
            assert_eq!(r.code, 2, "{extra}: {r:?}");
            let all = format!("{}{}", r.stdout, r.stderr);
            assert!(
                all.contains(key) && all.contains(why) && all.contains("line 21"),
                "{extra}: {r:?}"
            );
        }
    }
    let good = reply("max_answer_chars", "100") + "  max_parts: 20\n";
    let good = rate("per_robot", "1000") + "      per_conversation: 1\n" + &good;
    for r in check_both(&home, &with_channel("\"s\"", &good)) {
        assert_eq!(r.code, 0, "{r:?}");
    }
}

#[test]
fn levels_listen_addresses_targets_and_prompt_budgets_are_checked_at_load() {
    let home = Home::new();
    let targets = |v: &str| format!("    targets:\n      test-group: {v}\n");
    let level = |v: &str| format!("logging:\n  level: {v}\n");
    let bad: Vec<(String, &str, &str)> = vec![
        (level("warning"), "logging.level", "line 21"),
        (level("bogus"), "logging.level", "line 21"),
        (level("\"\""), "logging.level", "line 21"),
        (
            targets("\"garbage\""),
            "channel.dingtalk.targets.test-group",
            "line 21",
        ),
        (
            targets("\"user:\""),
            "channel.dingtalk.targets.test-group",
            "line 21",
        ),
        (
            "prompt:\n  max_chars: 0\n".into(),
            "prompt.max_chars",
            "line 21",
        ),
        (
            "prompt:\n  max_chars: 5\n".into(),
            "prompt.max_chars",
            "line 21",
        ),
    ];
    for (extra, key, line) in bad {
        let text = with_channel("\"s\"", &extra);
        for r in check_both(&home, &text) {
            assert_eq!(r.code, 2, "{extra}: {r:?}");
            let all = format!("{}{}", r.stdout, r.stderr);
            assert!(all.contains(key) && all.contains(line), "{extra}: {r:?}");
        }
    }
    let text = with_channel("\"s\"", "").replace("127.0.0.1:8787", "notanaddr");
    let [r, _] = check_both(&home, &text);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("channel.dingtalk.http_listen") && r.stderr.contains("line 19"),
        "{r:?}"
    );
    assert!(r.stderr.contains("IP:PORT"), "{r:?}");
    let text = with_channel("\"s\"", "").replace("127.0.0.1:8787", "localhost:8787");
    let [r, _] = check_both(&home, &text);
    assert_eq!(r.code, 0, "localhost is loopback by definition: {r:?}");
    let text = with_channel("\"s\"", "").replace("127.0.0.1:8787", "example.com:8787");
    let [r, _] = check_both(&home, &text);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("is a host name") && r.stderr.contains("localhost:8787"),
        "{r:?}"
    );
    let [r, _] = check_both(&home, &with_channel("\"s\"", "prompt:\n  max_chars: 5\n"));
    assert!(r.stderr.contains("minimum of 200"), "{r:?}");

    let good = [
        level("TRACE"),
        level("Warn"),
        targets("\"cidAbc==\"") + "logging:\n  level: info\n",
        targets("\"user:0423001\""),
        "prompt:\n  max_chars: 200\n".into(),
    ];
    for extra in good {
        let [r, _] = check_both(&home, &with_channel("\"s\"", &extra));
        assert_eq!(r.code, 0, "{extra}: {r:?}");
    }
}

/// Hostile documents of about 200 KB: deep flow and block nesting and an alias bomb. Each
/// is refused with exit 2, the file, the line and column and the limit named (before the
/// fix the flow one took 15 s of CPU in libyaml's scanner, quadratic in the depth).
#[test]
fn deep_nesting_and_alias_bombs_are_refused_quickly_naming_the_limit() {
    let home = Home::new();
    let deep = 100_000;
    let mut bomb = String::from("models:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("  a{i}: &a{i} [{refs}]\n"));
    }
    let cases = [
        (
            "flow sequences",
            format!("models: {}{}\n", "[".repeat(deep), "]".repeat(deep)),
            "nesting is deeper than 64 levels",
        ),
        (
            "flow mappings",
            format!(
                "models: {}1{}\n",
                "{a: ".repeat(deep / 2),
                "}".repeat(deep / 2)
            ),
            "nesting is deeper than 64 levels",
        ),
        (
            "compact block sequences",
            format!("models:\n{}x\n", "- ".repeat(deep)),
            "nesting is deeper than 64 levels",
        ),
        (
            "indented block mappings",
            (0..600).map(|i| format!("{}a:\n", " ".repeat(i))).collect(),
            "nesting is deeper than 64 levels",
        ),
        (
            "alias bomb",
            bomb,
            "aliases expand the document past 1000000 nodes",
        ),
    ];
    for (what, text, expected) in cases {
        let cfg = home.write("hostile.yaml", &text);
        let started = std::time::Instant::now();
        let r = home.run(&["config", "check", "--config", cfg.to_str().unwrap()]);
        let took = started.elapsed();
        assert_eq!(r.code, 2, "{what}: {r:?}");
        assert!(
            r.stderr.contains("hostile.yaml") && r.stderr.contains(expected),
            "{what}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("line "), "{what}: {}", r.stderr);
        // Generous: a regression to quadratic scanning takes seconds per case.
        assert!(
            took < std::time::Duration::from_secs(10),
            "{what}: {took:?}"
        );
    }
}

/// A config path that is a device without a size is refused, not read forever.
#[test]
fn a_config_without_end_is_refused() {
    let home = Home::new();
    let r = home.run(&["config", "check", "--config", "/dev/zero"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("/dev/zero") && r.stderr.contains("not a regular file"),
        "{}",
        r.stderr
    );
}

/// Red-team F4: a FIFO config (nobody writing) is refused at once with exit 2 naming the
/// path, by `config check` and by `daemon start`, instead of waiting forever for a writer.
#[test]
fn a_fifo_config_is_refused_at_once() {
    let home = Home::new();
    let fifo = home.path().join("c.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo_s = fifo.to_str().unwrap();
    for args in [
        &["config", "check", "--config", fifo_s][..],
        &["daemon", "start", "--name", "f", "--config", fifo_s][..],
    ] {
        let mut child = home
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let done = support::wait_until(std::time::Duration::from_secs(10), || {
            child.try_wait().unwrap().is_some()
        });
        if !done {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} hung on a FIFO config");
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(fifo_s) && stderr.contains("not a regular file"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn webhook_hosts_must_be_http_urls_and_errors_name_the_key() {
    let home = Home::new();
    let good = with_channel(
        "\"s\"",
        "    webhook_hosts: [\"https://hooks.corp.example\"]\n",
    );
    for r in check_both(&home, &good) {
        assert_eq!(r.code, 0, "{r:?}");
    }
    let bad = with_channel(
        "\"s\"",
        "    webhook_hosts: [\"https://ok.example\", \"169.254.169.254\"]\n",
    );
    for r in check_both(&home, &bad) {
        assert_eq!(r.code, 2, "{r:?}");
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(all.contains("channel.dingtalk.webhook_hosts"), "{r:?}");
        assert!(all.contains("http:// or https:// URL"), "{r:?}");
    }
}

/// `oapi_base` named a host the bot never calls (it makes no call on DingTalk's old API).
/// A file that still has it loads, with a warning naming the key and what to use
/// instead; the value is still checked, and a file without it gets no warning.
#[test]
fn the_deprecated_oapi_base_still_loads_with_a_warning() {
    let home = Home::new();
    let old = with_channel("\"s\"", "    oapi_base: \"https://oapi.dingtalk.com\"\n");
    let [text, json] = check_both(&home, &old);
    assert_eq!(text.code, 0, "{text:?}");
    let shown = format!("{}{}", text.stdout, text.stderr);
    assert!(
        shown.contains("channel.dingtalk.oapi_base") && shown.contains("deprecated"),
        "{text:?}"
    );
    assert!(shown.contains("webhook_hosts"), "{text:?}");
    assert_eq!(json.code, 0, "{json:?}");
    let warnings = json.json()["warnings"].to_string();
    assert!(warnings.contains("channel.dingtalk.oapi_base"), "{json:?}");

    let [text, json] = check_both(&home, &with_channel("\"s\"", ""));
    assert_eq!(text.code, 0, "{text:?}");
    assert!(!text.stderr.contains("deprecated"), "{text:?}");
    assert_eq!(json.json()["warnings"], serde_json::json!([]), "{json:?}");

    let bad = with_channel("\"s\"", "    oapi_base: \"not a url\"\n");
    for r in check_both(&home, &bad) {
        assert_eq!(r.code, 2, "{r:?}");
        assert!(
            format!("{}{}", r.stdout, r.stderr).contains("channel.dingtalk.oapi_base"),
            "{r:?}"
        );
    }
}
