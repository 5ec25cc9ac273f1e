//! `daemon start --exec`: a supervised gateway through the real binary. Start, status,
//! restart after the child is killed, stop (no process left), startup errors, output in
//! the log.

use crate::support;

use std::time::Duration;

use clawdbot::ipc::client::Client;
use clawdbot::ipc::proto::ErrorKind;
use clawdbot::ipc::{Request, Response};
use serde_json::Value;
use support::{wait_until, Home};

/// Bound for every wait on the daemon or its child.
const WAIT: Duration = Duration::from_secs(15);

/// The `gateway` section of `daemon status --json`, when the daemon answers.
fn gateway(home: &Home, name: &str) -> Option<Value> {
    let run = home.run(&["--json", "daemon", "status", "--name", name]);
    if run.code != 0 {
        return None;
    }
    run.json().get("gateway").filter(|g| !g.is_null()).cloned()
}

fn child_pid(g: &Value) -> Option<u32> {
    g["child_pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

use clawdbot::daemon::pidfile::is_running as alive;

fn start(home: &Home, name: &str, exec: &str) -> support::Run {
    home.run(&[
        "daemon",
        "start",
        "--name",
        name,
        "--exec",
        exec,
        "--timeout",
        "15",
    ])
}

#[test]
fn killed_child_is_restarted_and_stop_leaves_no_process() {
    let home = Home::new();
    let marker = home.path().join("bg.pid");
    // A leader and a background member of its process group.
    let script = format!(
        "sh -c 'sleep 600 & echo $! > {}; exec sleep 600'",
        marker.display()
    );
    let run = start(&home, "gw", &script);
    assert_eq!(run.code, 0, "{run:?}");

    let g = gateway(&home, "gw").expect("status shows the gateway");
    assert_eq!(g["command"], script.as_str());
    assert_eq!(g["restarts"], 0);
    let first = child_pid(&g).expect("a child pid");
    assert!(alive(first));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the child");
    let mut restarted = None;
    assert!(
        wait_until(WAIT, || {
            restarted =
                gateway(&home, "gw").filter(|g| g["restarts"] == 1 && child_pid(g).is_some());
            restarted.is_some()
        }),
        "no restart after kill -9"
    );
    let g = restarted.unwrap_or_default();
    let second = child_pid(&g).expect("new child pid");
    assert_ne!(second, first);
    assert_eq!(g["last_exit"], "killed by SIGKILL");
    assert!(alive(second));

    let mut bg = None;
    assert!(wait_until(WAIT, || {
        bg = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        bg.is_some_and(alive)
    }));
    let bg = bg.unwrap_or_default();

    let stop = home.run(&["daemon", "stop", "--name", "gw"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(
        wait_until(WAIT, || !alive(second) && !alive(bg)),
        "child or its group member outlived stop"
    );
    let status = home.run(&["--json", "daemon", "status", "--name", "gw"]);
    assert_eq!(status.code, 3, "{status:?}");
    assert_eq!(status.json()["state"], "stopped");
}

#[test]
fn missing_program_fails_start_naming_it() {
    let home = Home::new();
    let run = start(&home, "gw", "no-such-runtime-xyz --port 1");
    // Checked before the fork: a usage error naming --exec.
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--exec"), "{run:?}");
    assert!(run.stderr.contains("no-such-runtime-xyz"), "{run:?}");
    assert!(run.stderr.contains("not found"), "{run:?}");
    assert_eq!(home.run(&["daemon", "status", "--name", "gw"]).code, 3);
}

#[test]
fn unparsable_command_fails_start() {
    let home = Home::new();
    let run = start(&home, "gw", "sh -c 'echo unterminated");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unterminated single quote"), "{run:?}");
    let run = start(&home, "gw", "sleep 5 | cat");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("sh -c"), "{run:?}");
}

#[test]
fn child_output_lines_land_in_the_daemon_log() {
    let home = Home::new();
    let run = start(
        &home,
        "gw",
        "sh -c 'echo out-canary-1; echo err-canary-2 >&2; exec sleep 600'",
    );
    assert_eq!(run.code, 0, "{run:?}");
    let log = home.log_path("gw");
    assert!(
        wait_until(WAIT, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .any(|l| l.contains("gateway_output") && l.contains("out-canary-1"))
                && text
                    .lines()
                    .any(|l| l.contains("gateway_output") && l.contains("err-canary-2"))
        }),
        "child output not in {}:\n{}",
        log.display(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(home.run(&["daemon", "stop", "--name", "gw"]).code, 0);
}

#[test]
fn send_to_a_gateway_is_refused_as_unsupported() {
    let home = Home::new();
    assert_eq!(start(&home, "gw", "sleep 600").code, 0);
    let socket = home.run_dir("gw").join("control.sock");
    let mut client = Client::connect(&socket, WAIT).expect("connect to the control socket");
    let answer = client
        .request(&Request::Send {
            to: "cid1".into(),
            text: "hi".into(),
            markdown: false,
        })
        .expect("an answer");
    assert!(
        matches!(
            answer,
            Response::Error {
                kind: ErrorKind::Unsupported,
                ..
            }
        ),
        "{answer:?}"
    );
}

#[test]
fn term_ignoring_child_is_killed_after_the_drain() {
    let home = Home::new();
    assert_eq!(
        start(&home, "gw", "sh -c \"trap '' TERM; exec sleep 600\"").code,
        0
    );
    let pid = gateway(&home, "gw")
        .as_ref()
        .and_then(child_pid)
        .expect("a child pid");
    let stop = home.run(&["--json", "daemon", "stop", "--name", "gw", "--timeout", "1"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(
        stop.json()["how"],
        "drained",
        "the daemon itself drained in time: {stop:?}"
    );
    assert!(
        wait_until(WAIT, || !alive(pid)),
        "child {pid} survived stop"
    );
    let log = std::fs::read_to_string(home.log_path("gw")).unwrap_or_default();
    assert!(log.contains("sending SIGKILL"), "{log}");
}

#[test]
fn child_does_not_outlive_a_killed_daemon() {
    let home = Home::new();
    assert_eq!(start(&home, "gw", "sleep 600").code, 0);
    let status = home
        .run(&["--json", "daemon", "status", "--name", "gw"])
        .json();
    let daemon = status["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .expect("daemon pid");
    let child = status
        .get("gateway")
        .and_then(child_pid)
        .expect("child pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the daemon");
    assert!(
        wait_until(WAIT, || !alive(child)),
        "child {child} outlived its daemon"
    );
}

/// The child's argv, one word a line, once the script wrote it.
fn wait_argv(path: &std::path::Path) -> Vec<String> {
    let mut words = Vec::new();
    assert!(
        wait_until(WAIT, || {
            words = std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect();
            words.last().is_some_and(|w| w == "8000")
        }),
        "the child never wrote its argv to {}",
        path.display()
    );
    words
}

#[test]
fn secret_flag_values_are_masked_in_status_and_log_but_reach_the_child() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let argv = home.path().join("argv.txt");
    let exec = format!(
        "sh -c 'printf \"%s\\n\" \"$@\" > {}; exec sleep 600' gw --api-key GWSECRET1 \
         --Auth-Token=GWSECRET2 --port 8000",
        argv.display()
    );
    let run = start(&home, "gw", &exec);
    assert_eq!(run.code, 0, "{run:?}");
    let real = [
        "--api-key",
        "GWSECRET1",
        "--Auth-Token=GWSECRET2",
        "--port",
        "8000",
    ];
    assert_eq!(wait_argv(&argv), real);

    let status = home.run(&["--json", "daemon", "status", "--name", "gw"]);
    let command = status.json()["gateway"]["command"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        command.ends_with("gw --api-key *** --Auth-Token=*** --port 8000"),
        "{command}"
    );
    let human = home.run(&["daemon", "status", "--name", "gw"]);
    for shown in [&run.stdout, &run.stderr, &status.stdout, &human.stdout] {
        assert!(!shown.contains("GWSECRET"), "secret shown: {shown}");
    }

    // The launch settings keep the real command (for restart), readable by the owner only.
    let launch = home.path().join("state/gw/launch.json");
    let mode = std::fs::metadata(&launch).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "launch.json mode {mode:o}");
    std::fs::remove_file(&argv).unwrap();
    let restart = home.run(&["daemon", "restart", "--name", "gw"]);
    assert_eq!(restart.code, 0, "{restart:?}");
    assert_eq!(
        wait_argv(&argv),
        real,
        "the restarted child lost its arguments"
    );

    assert_eq!(home.run(&["daemon", "stop", "--name", "gw"]).code, 0);
    let logs = home.all_logs();
    assert!(logs.contains("--api-key ***"), "{logs}");
    assert!(!logs.contains("GWSECRET"), "secret in the log:\n{logs}");
}

/// The daemon process of `daemon start --exec "... --api-key K"` is a fork of that CLI
/// call, so its argv held the key for `ps` to show. Its /proc cmdline (and environment)
/// must not: the command there is masked, while the child still gets the key (the
/// child's own argv is the runtime's business, outside our control).
#[test]
fn the_daemon_process_shows_no_secret_in_its_cmdline_or_environment() {
    let home = Home::new();
    let argv = home.path().join("argv.txt");
    let exec = |secret: &str| {
        format!(
            "sh -c 'printf \"%s\\n\" \"$@\" > {}; exec sleep 600' gw --api-key {secret} --port 8000",
            argv.display()
        )
    };
    let daemon_pid = || -> u32 {
        let status = home.run(&["--json", "daemon", "status", "--name", "gw"]);
        status.json()["pid"].as_u64().expect("status names the pid") as u32
    };
    let proc_text = |pid: u32, what: &str| -> String {
        let bytes = std::fs::read(format!("/proc/{pid}/{what}")).expect("read /proc");
        String::from_utf8_lossy(&bytes).replace('\0', " ")
    };

    let run = start(&home, "gw", &exec("sekrit-123"));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        wait_argv(&argv),
        ["--api-key", "sekrit-123", "--port", "8000"]
    );
    let pid = daemon_pid();
    let cmdline = proc_text(pid, "cmdline");
    assert!(!cmdline.contains("sekrit-123"), "daemon cmdline: {cmdline}");
    assert!(
        cmdline.contains("daemon start") && cmdline.contains("--api-key ***"),
        "the cmdline still says what runs: {cmdline}"
    );
    assert!(!proc_text(pid, "environ").contains("sekrit-123"));

    // The `--exec=CMD` form, through `restart`.
    std::fs::remove_file(&argv).unwrap();
    let flag = format!("--exec={}", exec("sekrit-456"));
    let restart = home.run(&["daemon", "restart", "--name", "gw", &flag]);
    assert_eq!(restart.code, 0, "{restart:?}");
    assert_eq!(
        wait_argv(&argv),
        ["--api-key", "sekrit-456", "--port", "8000"]
    );
    let pid = daemon_pid();
    let cmdline = proc_text(pid, "cmdline");
    assert!(!cmdline.contains("sekrit-456"), "daemon cmdline: {cmdline}");
    assert!(cmdline.contains("--api-key ***"), "{cmdline}");
    assert_eq!(home.run(&["daemon", "stop", "--name", "gw"]).code, 0);
}

/// `daemon install --exec "... --api-key K"` keeps the command out of the unit (any local
/// user can read a unit): it goes to a 0600 file the unit loads as a systemd credential,
/// and `--exec-file` runs it with the real arguments while the daemon's argv names only
/// the file.
#[test]
fn an_installed_gateway_keeps_its_secret_in_a_private_file_that_exec_file_runs() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let units = home.path().join("units");
    let argv = home.path().join("argv.txt");
    let exec = format!(
        "sh -c 'printf \"%s\\n\" \"$@\" > {}; exec sleep 600' gw --api-key SEKRET-M5 --port 8000",
        argv.display()
    );
    // The health URL's password and query token stay out of the unit, argv and output too.
    let health_port = support::free_port();
    let health_url = format!("http://hu:HPASS-M5@127.0.0.1:{health_port}/health?token=HTOKEN-M5");
    let install = home.run(&[
        "--json",
        "daemon",
        "install",
        "--name",
        "gw",
        "--unit-dir",
        units.to_str().unwrap(),
        "--exec",
        &exec,
        "--health-url",
        &health_url,
    ]);
    assert_eq!(install.code, 0, "{install:?}");
    assert!(!install.stdout.contains("SEKRET"), "{install:?}");
    let unit = std::fs::read_to_string(units.join("clawdbot-gateway@gw.service")).unwrap();
    for secret in ["SEKRET", "HPASS", "HTOKEN"] {
        assert!(!unit.contains(secret), "{secret} in the unit:\n{unit}");
    }
    let file = units.join("gw.exec");
    assert_eq!(install.json()["exec_file"], file.display().to_string());
    assert!(
        unit.contains(&format!("LoadCredential=exec:{}\n", file.display()))
            && unit.contains("daemon run --name %i --exec-file %d/exec"),
        "{unit}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "exec file mode {mode:o}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{exec}\nhealth-url {health_url}\n")
    );

    let run = home.run(&[
        "daemon",
        "start",
        "--name",
        "gw",
        "--exec-file",
        file.to_str().unwrap(),
        "--timeout",
        "15",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        wait_argv(&argv),
        ["--api-key", "SEKRET-M5", "--port", "8000"]
    );
    assert!(
        wait_until(WAIT, || home
            .all_logs()
            .contains("model service is not healthy")),
        "the health URL from the file is never polled:\n{}",
        home.all_logs()
    );
    let status = home.run(&["--json", "daemon", "status", "--name", "gw"]);
    assert_eq!(
        status.json()["gateway"]["health_url"],
        format!("http://hu:***@127.0.0.1:{health_port}/health?token=***"),
        "{status:?}"
    );
    let human = home.run(&["daemon", "status", "--name", "gw"]);
    let check = home.run(&["healthcheck", "--name", "gw"]);
    for shown in [&status.stdout, &human.stdout, &check.stdout, &check.stderr] {
        assert!(
            !shown.contains("HPASS") && !shown.contains("HTOKEN"),
            "the health URL's secrets are shown: {shown}"
        );
    }
    let command = status.json()["gateway"]["command"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        command.ends_with("gw --api-key *** --port 8000"),
        "{command}"
    );
    let pid = status.json()["pid"].as_u64().expect("status names the pid");
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    for secret in ["SEKRET", "HPASS", "HTOKEN"] {
        assert!(!cmdline.contains(secret), "daemon cmdline: {cmdline}");
    }
    assert!(cmdline.contains("--exec-file"), "{cmdline}");
    assert_eq!(home.run(&["daemon", "stop", "--name", "gw"]).code, 0);
    let logs = home.all_logs();
    for secret in ["SEKRET", "HPASS", "HTOKEN"] {
        assert!(!logs.contains(secret), "{secret} in the log:\n{logs}");
    }

    // A file others can read is refused, naming it and not what it holds.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = home.run(&[
        "daemon",
        "start",
        "--name",
        "gw2",
        "--exec-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(loose.code, 2, "{loose:?}");
    assert!(
        loose.stderr.contains("chmod 600") && !loose.stderr.contains("SEKRET"),
        "{loose:?}"
    );

    // uninstall takes the command file with the unit.
    let gone = home.run(&[
        "daemon",
        "uninstall",
        "--name",
        "gw",
        "--unit-dir",
        units.to_str().unwrap(),
    ]);
    assert_eq!(gone.code, 0, "{gone:?}");
    assert!(!file.exists(), "the command file outlived its unit");
}

/// A `--health-url` with a password in its user-info is polled with it, but `status`,
/// `daemon start`'s output and the log show it masked.
#[test]
fn health_url_passwords_are_masked_in_status_and_log() {
    let home = Home::new();
    let port = support::free_port();
    let url = format!("http://probe:pw-77120@127.0.0.1:{port}/health?token=tk-77120");
    let run = home.run(&[
        "daemon",
        "start",
        "--name",
        "gw",
        "--exec",
        "sleep 600",
        "--health-url",
        &url,
        "--timeout",
        "15",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        wait_until(WAIT, || home
            .all_logs()
            .contains("model service is not healthy")),
        "the probe never reported:\n{}",
        home.all_logs()
    );
    let g = gateway(&home, "gw").expect("status shows the gateway");
    assert_eq!(
        g["health_url"],
        format!("http://probe:***@127.0.0.1:{port}/health?token=***"),
        "{g}"
    );
    let human = home.run(&["daemon", "status", "--name", "gw"]);
    // The daemon's own argv (`ps`) shows the URL masked too.
    let pid = home
        .run(&["--json", "daemon", "status", "--name", "gw"])
        .json()["pid"]
        .as_u64()
        .expect("status names the pid");
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert_eq!(home.run(&["daemon", "stop", "--name", "gw"]).code, 0);
    let logs = home.all_logs();
    assert!(logs.contains("probe:***@"), "{logs}");
    for shown in [
        &run.stdout,
        &run.stderr,
        &human.stdout,
        &human.stderr,
        &g.to_string(),
        &logs,
        &cmdline,
    ] {
        assert!(
            !shown.contains("pw-77120") && !shown.contains("tk-77120"),
            "the password is shown: {shown}"
        );
    }
}

#[test]
fn a_child_that_keeps_exiting_is_failing_in_status_and_healthcheck() {
    let home = Home::new();
    let run = start(&home, "flaky", "sh -c 'exit 3'");
    assert_eq!(run.code, 0, "{run:?}");
    // 0.5 s, 1 s, 2 s of backoff: the third exit comes after about 3.5 s.
    let mut last = None;
    let failing = wait_until(Duration::from_secs(30), || {
        last = gateway(&home, "flaky");
        last.as_ref().is_some_and(|g| g["state"] == "failing")
    });
    assert!(failing, "never failing: {last:?}");
    let g = last.unwrap();
    assert!(g["recent_exits"].as_u64().unwrap() >= 3, "{g}");
    assert_eq!(g["last_exit"], "exit code 3", "{g}");
    assert!(g["last_exit_at_ms"].as_u64().is_some(), "{g}");

    let human = home.run(&["daemon", "status", "--name", "flaky"]);
    assert!(human.stdout.contains("model service: FAILING"), "{human:?}");
    assert!(
        human
            .stdout
            .contains("model service last exit: exit code 3"),
        "{human:?}"
    );

    let check = home.run(&["healthcheck", "--name", "flaky"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(check.stdout.contains("FAIL  gateway process"), "{check:?}");
    assert!(check.stdout.contains("fix: "), "{check:?}");
    home.run(&["daemon", "stop", "--name", "flaky"]);
}
