//! The first README command: quickstart shows the whole path and reports a healthy bot,
//! keeping to its own demo folder.

use crate::support;

use std::time::Duration;

use support::Home;

#[test]
fn quickstart_gets_a_reply_through_the_simulator_and_stops_cleanly() {
    let home = Home::new();
    let demo = home.path().join("quickstart");
    let _stop = StopDemo(None, home.path(), demo.clone());
    let r = home.run(&[
        "--json",
        "quickstart",
        "--text",
        "quickstart canary 7731",
        "--stop",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    crate::json_schemas::assert_matches_schema("quickstart", &doc);
    assert_eq!(doc["healthy"], true, "{doc}");
    assert_eq!(doc["demo_folder"].as_str(), demo.to_str(), "{doc}");
    let reply = doc["reply"].as_str().unwrap();
    assert!(reply.starts_with("echo: quickstart canary 7731"), "{doc}");
    for name in ["quickstart-bot", "quickstart-sim"] {
        let status = in_demo(home.path(), &demo, &["daemon", "status", "--name", name]);
        assert_eq!(status.code, 3, "{status:?}");
    }
    let logs: String = std::fs::read_dir(demo.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("daemon ready"), "no demo logs read: {logs}");
    assert!(
        !logs.contains("canary 7731"),
        "message text leaked into a log"
    );
}

/// A simulator that died is replaced by one with a NEW secret: the bot left reconnecting
/// to the dead one's port sent the old secret to whoever listened there next (another
/// local user, in a red team's run), so the old secret must open nothing.
#[test]
fn a_new_simulator_gets_a_new_secret() {
    let home = Home::new();
    let demo = home.path().join("quickstart");
    let _stop = StopDemo(None, home.path(), demo.clone());
    let first = home.run(&["--json", "quickstart"]);
    assert_eq!(first.code, 0, "{first:?}");
    let secret_file = demo.join("state/quickstart-sim/secret");
    let old = std::fs::read_to_string(&secret_file).unwrap();
    let demo_home = demo.to_str().unwrap();
    // A crash of the simulator daemon: the supervisor and its child, both SIGKILLed.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_clawdbot"))
        .args([
            "--home",
            demo_home,
            "--json",
            "daemon",
            "status",
            "--name",
            "quickstart-sim",
        ])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for pid in [&status["gateway"]["child_pid"], &status["pid"]] {
        let pid = nix::unistd::Pid::from_raw(pid.as_i64().expect("a pid") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        assert!(
            support::wait_until(Duration::from_secs(15), || {
                nix::sys::signal::kill(pid, None).is_err()
            }),
            "{pid} did not die"
        );
    }
    let second = home.run(&["--json", "quickstart"]);
    assert_eq!(second.code, 0, "{second:?}");
    let new = std::fs::read_to_string(&secret_file).unwrap();
    assert_ne!(
        old.trim(),
        new.trim(),
        "the new simulator kept the old secret"
    );
    let new_url = second.json()["sim_url"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status_with = |token: &str| {
        rt.block_on(
            reqwest::Client::new()
                .get(format!("{new_url}/_sim/outbox"))
                .bearer_auth(token)
                .send(),
        )
        .unwrap()
        .status()
        .as_u16()
    };
    assert_eq!(
        status_with(old.trim()),
        401,
        "the old secret still opens the outbox"
    );
    assert_eq!(status_with(new.trim()), 200, "the new secret opens it");
}

#[test]
fn quickstart_twice_reuses_the_running_simulator() {
    let home = Home::new();
    let demo = home.path().join("quickstart");
    let _stop = StopDemo(None, home.path(), demo.clone());
    let first = home.run(&["--json", "quickstart"]);
    assert_eq!(first.code, 0, "{first:?}");
    let second = home.run(&["--json", "quickstart"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(first.json()["sim_url"], second.json()["sim_url"]);
    let human = home.run(&["quickstart"]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(human.stdout.contains("bot's reply"), "{human:?}");
    assert!(
        human.stdout.contains("conversations --name quickstart-bot"),
        "{human:?}"
    );
    assert!(
        human.stdout.contains("daemon stop --name quickstart-sim"),
        "{human:?}"
    );
    // The `sim inject ... --wait` it suggests works as typed: no --sim (it finds the
    // quickstart simulator and says so), and it prints the bot's reply.
    let sim_url = second.json()["sim_url"].as_str().unwrap().to_string();
    let suggested = human
        .stdout
        .lines()
        .find(|l| l.contains("sim inject"))
        .expect("an inject line")
        .trim()
        .replace("\"hi\"", "'wait canary 5521'");
    let waited = sh(&suggested);
    assert_eq!(waited.code, 0, "{suggested}: {waited:?}");
    assert!(
        waited
            .stderr
            .contains(&format!("using the quickstart simulator at {sim_url}")),
        "{waited:?}"
    );
    assert!(
        waited.stdout.contains("reply: echo: wait canary 5521"),
        "{waited:?}"
    );
    // From the user's home too (the demo folder under it).
    let outbox = home.run(&["sim", "outbox"]);
    assert_eq!(outbox.code, 0, "{outbox:?}");
    assert!(
        outbox.stdout.contains("echo: wait canary 5521"),
        "{outbox:?}"
    );
    // Commands typed without the demo's --home say where the demo runs and give the
    // command with that --home (not "no daemons", not a `daemon start` that cannot work).
    let demo_home = format!("--home {}", demo.display());
    let status = home.run(&["daemon", "status"]);
    assert_eq!(status.code, 3, "{status:?}");
    assert!(
        status
            .stdout
            .contains("no daemons here; the quickstart demo runs under")
            && status
                .stdout
                .contains(&format!("{demo_home} daemon status")),
        "{status:?}"
    );
    for args in [
        &["healthcheck", "--name", "quickstart-bot"][..],
        &[
            "send",
            "--name",
            "quickstart-bot",
            "--to",
            "cidX==",
            "--text",
            "hi",
        ],
        &["--json", "daemon", "status", "--name", "quickstart-bot"],
    ] {
        let r = home.run(args);
        assert_eq!(r.code, 3, "{args:?}: {r:?}");
        let said = format!("{}{}", r.stdout, r.stderr);
        assert!(
            said.contains("the quickstart demo runs under")
                && said.contains(&format!("{demo_home} daemon status --name quickstart-bot"))
                && !said.contains("daemon start"),
            "{args:?}: {r:?}"
        );
    }
    demo_secret_is_private_and_guards_the_admin_api(&demo, &sim_url);
    // A reply's later lines (the group reply's @-mention) are indented under its entry.
    assert!(
        outbox
            .stdout
            .lines()
            .all(|l| l.starts_with('#') || l.starts_with("    ")),
        "{outbox:?}"
    );
    // The group keeps the title the demo gave it when a later message gives none.
    let seen = in_demo(
        home.path(),
        &demo,
        &["conversations", "--name", "quickstart-bot"],
    );
    assert!(
        seen.stdout.contains("Quickstart demo") && !seen.stdout.contains("Sim Group"),
        "{seen:?}"
    );
    // The simulator daemon is labelled as one, not as a model gateway.
    let status = in_demo(
        home.path(),
        &demo,
        &["daemon", "status", "--name", "quickstart-sim"],
    );
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains("(pid ") && status.stdout.contains(", sim v"),
        "{status:?}"
    );
    assert!(status.stdout.contains("  simulator: running"), "{status:?}");
    assert!(!status.stdout.contains("gateway"), "{status:?}");
    let status = in_demo(
        home.path(),
        &demo,
        &["--json", "daemon", "status", "--name", "quickstart-sim"],
    );
    assert_eq!(status.json()["workload"], "sim", "{status:?}");
    // The printed stop commands work as typed (they name this binary, not a `clawdbot`
    // that may not be on PATH).
    for cmd in second.json()["stop_commands"].as_array().unwrap() {
        let cmd = cmd.as_str().unwrap();
        let ran = sh(cmd);
        assert_eq!(ran.code, 0, "{cmd}: {ran:?}");
    }
    for name in ["quickstart-bot", "quickstart-sim"] {
        let status = in_demo(home.path(), &demo, &["daemon", "status", "--name", name]);
        assert_eq!(status.code, 3, "{status:?}");
    }
}

/// Runs the binary as `uid` (none: as the test runs) with a clean environment whose
/// `HOME` is `home` and no `--home`, as a user who types `clawdbot quickstart`.
fn as_user(uid: Option<u32>, home: &std::path::Path, args: &[&str]) -> support::Run {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new(support::BIN);
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .current_dir(home)
        .stdin(std::process::Stdio::null());
    if let Some(uid) = uid {
        c.uid(uid).gid(uid);
    }
    support::Run::from(c.output().expect("run clawdbot"))
}

/// Runs the binary as [`as_user`] does, on the demo folder (`--home DEMO`).
fn in_demo(home: &std::path::Path, demo: &std::path::Path, args: &[&str]) -> support::Run {
    let mut all = vec!["--home", demo.to_str().unwrap()];
    all.extend(args);
    as_user(None, home, &all)
}

/// Runs a printed command line as a user would type it (no CLAWDBOT_HOME).
fn sh(line: &str) -> support::Run {
    support::Run::from(
        std::process::Command::new("sh")
            .args(["-c", line])
            .env_remove("CLAWDBOT_HOME")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("sh"),
    )
}

/// Stops the demo's daemons when a test ends, even a failed one.
struct StopDemo<'a>(Option<u32>, &'a std::path::Path, std::path::PathBuf);

impl Drop for StopDemo<'_> {
    fn drop(&mut self) {
        let demo = self.2.to_str().unwrap_or_default().to_string();
        for name in ["quickstart-bot", "quickstart-sim"] {
            as_user(
                self.0,
                self.1,
                &[
                    "--home",
                    &demo,
                    "daemon",
                    "stop",
                    "--name",
                    name,
                    "--timeout",
                    "3",
                ],
            );
        }
    }
}

/// Every regular file below `dir` holding `needle`, with its mode.
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else if meta.is_file()
                && std::fs::read(entry.path())
                    .map(|b| String::from_utf8_lossy(&b).contains(needle))
                    .unwrap_or(false)
            {
                found.push((entry.path(), meta.permissions().mode() & 0o777));
            }
        }
    }
    found
}

/// The demo keeps to its own folder under the user's data folder (announced), writes
/// every file holding the demo secret 0600, says when it reuses the running simulator,
/// and `quickstart --stop --clean` stops both daemons and removes the folder.
fn demo_keeps_to_its_own_folder(uid: Option<u32>) {
    let home = tempfile::Builder::new()
        .prefix("cbq")
        .tempdir_in("/tmp")
        .unwrap();
    if let Some(uid) = uid {
        std::os::unix::fs::chown(home.path(), Some(uid), Some(uid)).unwrap();
    }
    let demo = home.path().join(".local/share/clawdbot/quickstart");
    let _stop = StopDemo(uid, home.path(), demo.clone());
    let etc_before = std::path::Path::new("/etc/clawdbot/quickstart-bot.yaml").exists();

    let first = as_user(uid, home.path(), &["--json", "quickstart"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first
            .stderr
            .contains(&format!("demo folder {}", demo.display())),
        "the folder is not announced: {first:?}"
    );
    let doc = first.json();
    assert!(
        doc["config_path"]
            .as_str()
            .unwrap()
            .starts_with(demo.to_str().unwrap()),
        "{doc}"
    );
    assert_eq!(doc["demo_folder"].as_str(), demo.to_str(), "{doc}");
    let secret = std::fs::read_to_string(demo.join("state/quickstart-sim/secret")).unwrap();
    assert_eq!(secret.trim().len(), 32, "a random secret: {secret:?}");
    let secrets = files_holding(home.path(), secret.trim());
    assert!(
        secrets.len() >= 2,
        "the demo config and the secret file: {secrets:?}"
    );
    for (path, mode) in &secrets {
        assert!(
            path.starts_with(&demo),
            "{} is outside the demo folder",
            path.display()
        );
        assert_eq!(*mode, 0o600, "{} is {mode:o}", path.display());
    }
    if !etc_before {
        assert!(!std::path::Path::new("/etc/clawdbot/quickstart-bot.yaml").exists());
    }
    let bot_log = std::fs::read_to_string(demo.join("logs/quickstart-bot.log")).unwrap();
    assert!(
        !bot_log.contains("readable by others"),
        "the daemon warned about its demo config: {bot_log}"
    );

    let second = as_user(uid, home.path(), &["quickstart"]);
    assert_eq!(second.code, 0, "{second:?}");
    let sim_url = doc["sim_url"].as_str().unwrap();
    assert!(
        second.stderr.contains(&format!(
            "reusing the simulator already running on {sim_url}"
        )),
        "{second:?}"
    );

    let clean = as_user(uid, home.path(), &["quickstart", "--stop", "--clean"]);
    assert_eq!(clean.code, 0, "{clean:?}");
    // It only stops and cleans: no demo message, no reply, no healthcheck first.
    for demo_step in [
        "reusing the simulator",
        "waiting for",
        "bot's reply",
        "healthcheck",
    ] {
        assert!(
            !clean.stdout.contains(demo_step) && !clean.stderr.contains(demo_step),
            "`quickstart --stop --clean` ran the demo ({demo_step}): {clean:?}"
        );
    }
    assert!(!demo.exists(), "the demo folder is left: {clean:?}");
    assert!(
        clean
            .stdout
            .contains(&format!("removed {}", demo.display())),
        "{clean:?}"
    );
    let demo_flag = demo.to_str().unwrap();
    for name in ["quickstart-bot", "quickstart-sim"] {
        let status = as_user(
            uid,
            home.path(),
            &["--home", demo_flag, "daemon", "status", "--name", name],
        );
        assert_eq!(status.code, 3, "{name}: {status:?}");
    }
    let _ = std::fs::remove_dir_all(&demo);
}

#[test]
fn the_demo_keeps_to_its_own_folder_as_this_user() {
    demo_keeps_to_its_own_folder(None);
}

/// The same walk as a user who is not root (uid 65534 when the suite runs as root, as on
/// CI; this user otherwise).
#[test]
fn the_demo_keeps_to_its_own_folder_as_a_user_who_is_not_root() {
    let uid = nix::unistd::geteuid().is_root().then_some(65534);
    demo_keeps_to_its_own_folder(uid);
}

/// With a model that never answers, quickstart says what it waits for while it waits.
#[test]
fn with_a_model_that_never_answers_quickstart_says_what_it_waits_for() {
    let home = Home::new();
    let demo = home.path().join("quickstart");
    let _stop = StopDemo(None, home.path(), demo.clone());
    let hang = support::silent_server();
    let mut child = home
        .command(&["quickstart", "--model-base-url", &format!("{hang}/v1")])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut seen = Vec::new();
    let line = support::wait_stderr_line(&mut child, Duration::from_secs(30), &mut seen, |l| {
        l.contains("waiting for its reply")
    });
    let still_running = child.try_wait().expect("try_wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.is_some(), "no progress line; stderr: {seen:?}");
    assert!(still_running, "the line came only at the end: {seen:?}");
    assert!(line.unwrap().contains("up to 20 s"), "{seen:?}");
}

/// `quickstart --stop --clean` does not remove a demo folder under a daemon that is not
/// the demo's (started there by hand): it refuses, naming it, and keeps the folder and the
/// daemon; once that daemon stopped, the folder goes, reporting that nothing was running
/// (`stopped: false`, also when there is no folder at all).
#[test]
fn clean_refuses_a_demo_folder_that_holds_another_daemon() {
    let home = Home::new();
    let demo = home.path().join("quickstart");
    let cfg = home.write("other.yaml", &support::seed_config("http://127.0.0.1:9/v1"));
    let demo_home = demo.to_str().unwrap();
    let r = under(
        demo_home,
        &[
            "daemon",
            "start",
            "--name",
            "other",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let _stop = StopOther(demo_home.to_string());
    let clean = home.run(&["--json", "quickstart", "--stop", "--clean"]);
    assert_eq!(clean.code, 1, "{clean:?}");
    let message = support::error_message(&clean.json()).to_string();
    assert!(message.contains("other"), "{clean:?}");
    assert!(support::error_fix(&clean.json()).contains("daemon stop --name other"));
    assert!(demo.join("config").exists() || demo.join("state/other").exists());
    let status = under(demo_home, &["daemon", "status", "--name", "other"]);
    assert_eq!(status.code, 0, "the other daemon was stopped: {status:?}");
    let stop = under(demo_home, &["daemon", "stop", "--name", "other"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    // Stopped, its files are still its own: kept until it is forgotten on purpose.
    let clean = home.run(&["--json", "quickstart", "--stop", "--clean"]);
    assert_eq!(clean.code, 1, "{clean:?}");
    assert!(
        support::error_fix(&clean.json()).contains("daemon rm --name other"),
        "{clean:?}"
    );
    assert!(demo.join("state/other").exists(), "{clean:?}");
    let rm = under(demo_home, &["daemon", "rm", "--name", "other"]);
    assert_eq!(rm.code, 0, "{rm:?}");
    let clean = home.run(&["--json", "quickstart", "--stop", "--clean"]);
    assert_eq!(clean.code, 0, "{clean:?}");
    assert_eq!(clean.json()["removed"], true, "{clean:?}");
    assert_eq!(clean.json()["stopped"], false, "{clean:?}");
    assert!(!demo.exists());
    let again = home.run(&["--json", "quickstart", "--stop", "--clean"]);
    assert_eq!(again.json()["stopped"], false, "{again:?}");
}

/// Stops daemon `other` under the demo home when the test ends, even a failed one.
struct StopOther(String);

impl Drop for StopOther {
    fn drop(&mut self) {
        under(
            &self.0,
            &["daemon", "stop", "--name", "other", "--timeout", "3"],
        );
    }
}

/// Runs the binary with `--home home` (as [`Home::run`] does for its own folder).
fn under(home: &str, args: &[&str]) -> support::Run {
    let mut c = std::process::Command::new(support::BIN);
    c.arg("--home").arg(home).args(args);
    c.env_remove("CLAWDBOT_HOME")
        .env("NO_COLOR", "1")
        .env("LOCAL_MODEL_API_KEY", "test-key")
        .stdin(std::process::Stdio::null());
    support::Run::from(c.output().expect("run clawdbot"))
}

/// The demo's secret is random per demo folder, in a 0600 file, and on no process's
/// command line; the simulator's admin API refuses whoever does not send it (another
/// home, as another local user would be: no inject, no outbox).
fn demo_secret_is_private_and_guards_the_admin_api(demo: &std::path::Path, sim_url: &str) {
    use std::os::unix::fs::PermissionsExt;
    let file = demo.join("state/quickstart-sim/secret");
    let secret = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_ne!(secret, "quickstart-secret");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let port = sim_url.rsplit(':').next().unwrap();
    let mut sim_seen = false;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(&secret),
            "the secret is on a command line: {cmdline}"
        );
        sim_seen |= cmdline.contains("sim serve") && cmdline.contains(port);
    }
    assert!(sim_seen, "no simulator process on port {port}");
    let stranger = Home::new();
    for args in [
        &["sim", "outbox", "--sim", sim_url][..],
        &[
            "sim",
            "inject",
            "--sim",
            sim_url,
            "--text",
            "injected by a stranger",
        ],
    ] {
        let r = stranger.run(args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("401") && !r.stderr.contains(&secret),
            "{r:?}"
        );
    }
}
