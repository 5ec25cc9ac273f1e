//! The `--json` contract: every command's document has the one envelope (`ok`,
//! `exit_code`, `schema_version`, `error {kind, message, fix}` exactly when not ok) and
//! matches its published JSON Schema in `docs/json/` (draft 2020-12), checked with the
//! `jsonschema` crate, on success and on failure, through the real binary.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clawdbot_testkit::fake_model::FakeConfig;
use jsonschema::{Draft, Resource, Validator};
use serde_json::{json, Value};
use support::stack::{Stack, CLIENT_ID};
use support::{dead_url, wait_until, Home, Run};

/// Where the schemas live, and the base of their `$id`s.
const SCHEMA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json");
const ID_BASE: &str = "https://clawdbot.invalid/json/";

fn schema_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(SCHEMA_DIR)
        .expect("docs/json exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".schema.json"))
        .collect();
    files.sort();
    files
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The validator for `command`'s schema (`daemon-status`, `version`...), with every
/// schema of the folder registered so `$ref`s between them resolve offline.
fn validator(command: &str) -> Validator {
    let mut options = jsonschema::options().with_draft(Draft::Draft202012);
    for file in schema_files() {
        let doc = read_json(&file);
        let id = doc["$id"]
            .as_str()
            .expect("every schema has an $id")
            .to_string();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(id, format!("{ID_BASE}{name}"), "$id of {name}");
        options = options.with_resource(id, Resource::from_contents(doc).expect("a resource"));
    }
    let schema = read_json(&Path::new(SCHEMA_DIR).join(format!("{command}.schema.json")));
    options
        .build(&schema)
        .unwrap_or_else(|e| panic!("{command}.schema.json is not a valid schema: {e}"))
}

/// Asserts that `doc` (what `clawdbot ... --json` printed) matches `command`'s schema.
pub(crate) fn assert_matches_schema(command: &str, doc: &Value) {
    let v = validator(command);
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{command}: the document does not match docs/json/{command}.schema.json:\n  {}\n{doc:#}",
        errors.join("\n  ")
    );
}

/// The leaf commands of the CLI definition as schema names (`daemon status` is
/// `daemon-status`), plus `version` for `--version`.
fn commands() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut BTreeSet<String>) {
        let subs: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        if subs.is_empty() {
            out.insert(path.join("-"));
        }
        for sub in subs {
            path.push(sub.get_name().to_string());
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::from(["version".to_string()]);
    walk(&clawdbot::cli::command(), &mut Vec::new(), &mut out);
    out
}

#[test]
fn every_command_has_a_schema_and_every_schema_a_command() {
    let have: BTreeSet<String> = schema_files()
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.trim_end_matches(".schema.json").to_string()
        })
        .filter(|n| n != "envelope")
        .collect();
    let envelope = read_json(&Path::new(SCHEMA_DIR).join("envelope.schema.json"));
    assert_eq!(
        envelope["properties"]["schema_version"]["const"],
        clawdbot::status::SCHEMA_VERSION,
        "the published envelope names the version the binary prints"
    );
    let want = commands();
    assert!(want.len() > 15, "the CLI walk found too little: {want:?}");
    let missing: Vec<&String> = want.difference(&have).collect();
    let stale: Vec<&String> = have.difference(&want).collect();
    assert!(
        missing.is_empty(),
        "commands without a schema in docs/json: {missing:?}"
    );
    assert!(stale.is_empty(), "schemas for no command: {stale:?}");
    for command in &want {
        let schema = read_json(&Path::new(SCHEMA_DIR).join(format!("{command}.schema.json")));
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{command}"
        );
        assert_eq!(
            schema["unevaluatedProperties"], false,
            "{command}: top level is strict"
        );
        let v = validator(command);
        // Every command can fail on its command line; the schemas must refuse drift.
        let usage = json!({"ok": false, "exit_code": 2, "schema_version": 2,
            "error": {"kind": "usage", "message": "m", "fix": null}});
        assert!(v.is_valid(&usage), "{command}: a usage error is refused");
        let mut refused = vec![
            json!({"ok": false, "exit_code": 2, "schema_version": 2}),
            json!({"ok": true, "exit_code": 1, "schema_version": 2}),
            json!({"ok": false, "exit_code": 2, "schema_version": 1,
                "error": {"kind": "usage", "message": "m", "fix": null}}),
            json!({"ok": false, "exit_code": 2, "schema_version": 2,
                "error": {"kind": "oops", "message": "m", "fix": null}}),
            json!({"ok": false, "exit_code": 2, "schema_version": 2, "error": "m"}),
        ];
        let mut extra = usage.clone();
        extra["result"] = json!("stopped");
        refused.push(extra);
        for doc in refused {
            assert!(!v.is_valid(&doc), "{command}: accepts {doc}");
        }
    }
}

/// Every leaf command given `--json` and nothing else fails as a usage error (or runs):
/// each printed document matches that command's schema, and a missing argument keeps its
/// name in the message, human and JSON.
#[test]
fn usage_errors_of_every_command_match_its_schema_and_name_the_missing_argument() {
    let home = Home::new();
    let mut usage_errors = 0;
    for command in commands() {
        if [
            "version",
            "sim-serve",
            "quickstart",
            "daemon-logs",
            "completions",
        ]
        .contains(&command.as_str())
        {
            continue; // they run (or follow a log) without arguments: covered below
        }
        let mut args: Vec<&str> = vec!["--json"];
        args.extend(command.split('-'));
        let r = home.run(&args);
        let doc = r.json();
        assert_matches_schema(&command, &doc);
        assert_eq!(doc["exit_code"], r.code, "{command}: {r:?}");
        if r.code == 2 {
            usage_errors += 1;
            assert_eq!(doc["error"]["kind"], "usage", "{command}: {doc}");
            let message = doc["error"]["message"].as_str().unwrap();
            if message.contains("required arguments were not provided") {
                let missing = message.rsplit("provided: ").next().unwrap();
                assert!(
                    missing.starts_with("--") || missing.starts_with('<'),
                    "{command}: the message drops the argument's name: {message}"
                );
                let first = missing.split(' ').next().unwrap();
                assert!(r.stderr.contains(first), "{command}: {r:?}");
            }
        }
    }
    assert!(
        usage_errors >= 10,
        "too few usage errors seen: {usage_errors}"
    );

    let r = home.run(&["--json", "daemon", "start"]);
    assert_eq!(r.code, 2, "{r:?}");
    let doc = r.json();
    assert_eq!(
        doc["error"]["message"],
        "the following required arguments were not provided: --name <NAME>"
    );
    assert!(support::error_fix(&doc).contains("daemon start"), "{doc}");
    assert!(r.stderr.contains("--name <NAME>"), "{r:?}");
    // A misspelt flag: clap's "similar argument" tip is the fix.
    let r = home.run(&["--json", "daemon", "stop", "--nam", "bot"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(support::error_fix(&r.json()).contains("--name"), "{r:?}");
    let r = home.run(&["--json", "--version"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_matches_schema("version", &r.json());
    let r = home.run(&["--json", "completions", "nosh"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_matches_schema("completions", &r.json());
}

/// Runs `args` with `--json`, checks the exit code, and validates the document.
fn json_run(stack: &Stack, command: &str, args: &[&str], code: i32) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let r = stack.home.run(&all);
    assert_eq!(r.code, code, "{command} {args:?}: {r:?}");
    let doc = r.json();
    assert_matches_schema(command, &doc);
    assert_eq!(doc["ok"], code == 0, "{doc}");
    assert_eq!(doc["exit_code"], code, "{doc}");
    doc
}

/// The first JSON document `sim serve --json` prints (it then serves until killed).
fn sim_serve_document(home: &Home) -> Value {
    use std::io::BufRead;
    let mut child = home
        .command(&["--json", "sim", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sim serve");
    let mut text = String::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The document is pretty-printed: it ends at a `}` alone on its line (bounded count).
    for _ in 0..100 {
        match lines.next() {
            Some(Ok(line)) => {
                let end = line == "}";
                text.push_str(&line);
                text.push('\n');
                if end {
                    break;
                }
            }
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("sim serve --json printed {text:?}: {e}"))
}

/// One scenario through every command with a daemon: success and failure documents,
/// each validated against its command's schema, with the kinds scripts rely on.
#[test]
fn every_command_json_output_matches_its_schema() {
    let stack = Stack::new(FakeConfig::default(), &[]);
    let home = stack.home.path();
    let config = stack.config(2, 5_000, "");
    let config = config.to_str().unwrap();
    let sim = stack.sim_url.as_str();

    // No daemon yet.
    let doc = json_run(&stack, "daemon-status", &["daemon", "status"], 3);
    assert_eq!(doc["daemons"], serde_json::json!([]));
    assert_eq!(doc["error"]["kind"], "not_running");
    let doc = json_run(
        &stack,
        "daemon-status",
        &["daemon", "status", "--name", "bot"],
        3,
    );
    assert_eq!(
        (&doc["name"], &doc["state"]),
        (&"bot".into(), &"stopped".into())
    );
    assert_eq!(doc["error"]["kind"], "not_running");
    assert!(support::error_fix(&doc).contains("daemon start --name bot"));
    let doc = json_run(
        &stack,
        "send",
        &["send", "--name", "bot", "--to", "x", "--text", "t"],
        3,
    );
    assert_eq!(doc["error"]["kind"], "not_running");
    json_run(
        &stack,
        "conversations",
        &["conversations", "--name", "bot"],
        3,
    );
    json_run(
        &stack,
        "daemon-logs",
        &["daemon", "logs", "--name", "bot"],
        1,
    );
    let bad = stack.home.write("bad.yaml", "models: [\n");
    let doc = json_run(
        &stack,
        "config-check",
        &["config", "check", "--config", bad.to_str().unwrap()],
        2,
    );
    assert_eq!(doc["error"]["kind"], "config", "{doc}");
    let doc = json_run(
        &stack,
        "daemon-run",
        &[
            "daemon",
            "run",
            "--name",
            "bot",
            "--config",
            bad.to_str().unwrap(),
        ],
        2,
    );
    assert_eq!(doc["error"]["kind"], "config", "{doc}");
    let doc = json_run(
        &stack,
        "config-check",
        &["config", "check", "--config", config],
        0,
    );
    assert_eq!(doc["config_path"], config);

    // A model that is down: the pre-flight's failed check is the failure, with the checks.
    let down = stack.home.write(
        "down.yaml",
        &std::fs::read_to_string(config)
            .unwrap()
            .replace(&stack.fake.base_url, &dead_url()),
    );
    let doc = json_run(
        &stack,
        "healthcheck",
        &[
            "healthcheck",
            "--config",
            down.to_str().unwrap(),
            "--timeout",
            "5",
        ],
        1,
    );
    assert_eq!(doc["error"]["kind"], "check_failed", "{doc}");
    assert!(
        doc["checks"].as_array().is_some_and(|c| !c.is_empty()),
        "{doc}"
    );
    assert_eq!(doc["name"], Value::Null);

    // The daemon's life.
    let doc = json_run(
        &stack,
        "daemon-start",
        &["daemon", "start", "--name", "bot", "--config", config],
        0,
    );
    assert_eq!(doc["already_running"], false);
    stack.wait_connected();
    let doc = json_run(
        &stack,
        "daemon-start",
        &["daemon", "start", "--name", "bot"],
        0,
    );
    assert_eq!(doc["already_running"], true);
    let doc = json_run(
        &stack,
        "daemon-status",
        &["daemon", "status", "--name", "bot"],
        0,
    );
    assert_eq!(doc["state"], "running");
    let one = doc.clone();
    let doc = json_run(&stack, "daemon-status", &["daemon", "status"], 0);
    let listed = &doc["daemons"][0];
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    let envelope: BTreeSet<String> = ["ok", "exit_code", "schema_version"]
        .map(String::from)
        .into();
    assert_eq!(
        keys(listed),
        keys(&one).difference(&envelope).cloned().collect(),
        "the list's daemon has the shape of status --name"
    );
    let doc = json_run(
        &stack,
        "sim-inject",
        &[
            "sim",
            "inject",
            "--sim",
            sim,
            "--group",
            "--conversation",
            "cidJsonGroup==",
            "--text",
            "hi",
        ],
        0,
    );
    assert!(doc["msg_id"].as_str().unwrap().starts_with("msg"), "{doc}");
    let waited = json_run(
        &stack,
        "sim-inject",
        &[
            "sim",
            "inject",
            "--sim",
            sim,
            "--group",
            "--conversation",
            "cidJsonGroup==",
            "--text",
            "again",
            "--wait",
            "--wait-timeout",
            "30",
        ],
        0,
    );
    assert!(waited["reply_text"].is_string(), "{waited}");
    let mut seen = Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            seen = json_run(
                &stack,
                "conversations",
                &["conversations", "--name", "bot"],
                0,
            );
            seen["conversations"]
                .as_array()
                .is_some_and(|c| !c.is_empty())
        }),
        "the injected conversation was never listed: {seen}"
    );
    json_run(
        &stack,
        "sim-outbox",
        &[
            "sim",
            "outbox",
            "--sim",
            sim,
            "--wait",
            "1",
            "--timeout",
            "30",
        ],
        0,
    );
    let doc = json_run(
        &stack,
        "send",
        &[
            "send",
            "--name",
            "bot",
            "--to",
            "test-group",
            "--text",
            "ping",
        ],
        0,
    );
    assert_eq!(
        (&doc["name"], &doc["target"]),
        (&"bot".into(), &"cidStackGroup==".into())
    );
    let doc = json_run(&stack, "healthcheck", &["healthcheck", "--name", "bot"], 0);
    assert_eq!(doc["name"], "bot");
    json_run(
        &stack,
        "daemon-restart",
        &["daemon", "restart", "--name", "bot"],
        0,
    );
    let doc = json_run(&stack, "daemon-rm", &["daemon", "rm", "--name", "bot"], 1);
    assert!(
        support::error_message(&doc).contains("stop it first"),
        "{doc}"
    );
    assert!(
        support::error_fix(&doc).ends_with("daemon stop --name bot"),
        "{doc}"
    );
    let doc = json_run(
        &stack,
        "daemon-stop",
        &["daemon", "stop", "--name", "bot"],
        0,
    );
    assert_eq!(doc["state"], "stopped");
    let doc = json_run(
        &stack,
        "daemon-stop",
        &["daemon", "stop", "--name", "bot"],
        0,
    );
    assert_eq!(doc["how"], "was_not_running");
    // A listed daemon that is down: the list says which, with the worst one's kind and fix.
    let doc = json_run(&stack, "daemon-status", &["daemon", "status"], 3);
    assert_eq!(doc["daemons"][0]["state"], "stopped", "{doc}");
    assert_eq!(doc["error"]["kind"], "not_running", "{doc}");
    assert!(
        support::error_message(&doc).contains("bot (stopped)"),
        "{doc}"
    );
    let one = json_run(
        &stack,
        "daemon-status",
        &["daemon", "status", "--name", "bot"],
        3,
    );
    let error: BTreeSet<String> = ["error".to_string()].into();
    assert_eq!(
        keys(&doc["daemons"][0]),
        &(&keys(&one) - &envelope) - &error,
        "a stopped daemon has one shape too"
    );
    json_run(&stack, "daemon-rm", &["daemon", "rm", "--name", "bot"], 0);

    // Units, onboarding, the simulator's own document.
    let units = home.join("units");
    let units = units.to_str().unwrap();
    json_run(
        &stack,
        "daemon-install",
        &[
            "daemon",
            "install",
            "--name",
            "bot",
            "--unit-dir",
            units,
            "--config",
            config,
        ],
        0,
    );
    let doc = json_run(
        &stack,
        "daemon-install",
        &["daemon", "install", "--name", "bot", "--unit-dir", units],
        1,
    );
    assert!(support::error_message(&doc).contains("--force"), "{doc}");
    let doc = json_run(
        &stack,
        "daemon-uninstall",
        &["daemon", "uninstall", "--name", "bot", "--unit-dir", units],
        0,
    );
    assert_eq!(doc["removed"].as_array().map(Vec::len), Some(1), "{doc}");
    let onboarded = home.join("onboarded.yaml");
    let doc = json_run(
        &stack,
        "onboard",
        &[
            "onboard",
            "--channel",
            "dingtalk",
            "--config",
            onboarded.to_str().unwrap(),
            "--non-interactive",
            "--client-id",
            CLIENT_ID,
            "--client-secret-env",
            "LOCAL_MODEL_API_KEY",
            "--api-base",
            sim,
            "--model-base-url",
            &stack.fake.base_url,
            "--model",
            "local-chat",
            "--skip-checks",
        ],
        0,
    );
    assert_eq!(doc["config_path"], onboarded.to_str().unwrap());
    let doc = sim_serve_document(&stack.home);
    assert_matches_schema("sim-serve", &doc);
    assert_eq!(doc["ok"], true, "{doc}");

    // Output that is not a JSON document by design, said so in its schema.
    let r: Run = stack.home.run(&["--json", "completions", "bash"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(serde_json::from_str::<Value>(&r.stdout).is_err());
}
