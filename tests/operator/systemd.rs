//! systemd, as an operator deploys with it: the folders a unit makes are the ones used
//! (per instance), sd_notify STATUS= lines and watchdog pings from the real `daemon run`,
//! root's `daemon status` finding a service that runs as another user, `daemon install`
//! and `uninstall`, and the units' `systemd-analyze security` score.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{seed_config, Run, BIN};

/// The systemd folder variables, for clearing them from a command.
const SERVICE_VARS: [&str; 4] = [
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
];

/// A command for the binary with no home and none of the systemd variables inherited.
fn bare(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("CLAWDBOT_HOME")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("NO_COLOR", "1")
        .env("LOCAL_MODEL_API_KEY", "test-key")
        .stdin(Stdio::null());
    for var in SERVICE_VARS {
        c.env_remove(var);
    }
    c
}

fn run(c: &mut Command) -> Run {
    let o = c.output().expect("run clawdbot");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The folders systemd would make for instance `name` of a unit, under `base`.
struct ServiceFolders {
    run: PathBuf,
    state: PathBuf,
    logs: PathBuf,
    config: PathBuf,
}

impl ServiceFolders {
    fn under(base: &Path, name: &str) -> ServiceFolders {
        let f = ServiceFolders {
            run: base.join("run/clawdbot").join(name),
            state: base.join("lib/clawdbot").join(name),
            logs: base.join("log/clawdbot"),
            config: base.join("etc/clawdbot"),
        };
        for dir in [&f.run, &f.state, &f.logs, &f.config] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        std::fs::write(
            f.config.join(format!("{name}.yaml")),
            seed_config("http://127.0.0.1:9/v1"),
        )
        .unwrap();
        f
    }

    fn apply(&self, c: &mut Command) {
        c.env("RUNTIME_DIRECTORY", &self.run)
            .env("STATE_DIRECTORY", &self.state)
            .env("LOGS_DIRECTORY", &self.logs)
            .env("CONFIGURATION_DIRECTORY", &self.config);
    }
}

/// A fake `$NOTIFY_SOCKET`: the datagrams a daemon sends to systemd.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Receives until `done(seen)` holds; false after `limit`.
    fn until(&mut self, limit: Duration, done: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while !done(&self.seen) {
            if Instant::now() > deadline {
                return false;
            }
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        true
    }
}

/// Kills a `daemon run` child when the test ends, even a failed one.
struct Foreground(Child);

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two instances run side by side, each in exactly the folders systemd made for it
/// (`RuntimeDirectory=clawdbot/%i`...): socket, pid record and log land there, the config
/// comes from the configuration folder, and nothing is shared. Each tells systemd
/// READY=1, then a STATUS= line, then WATCHDOG=1 pings at half of `WATCHDOG_USEC`.
#[test]
fn each_instance_uses_its_unit_folders_and_reports_status_and_watchdog() {
    let base = tempfile::Builder::new()
        .prefix("cbsd")
        .tempdir_in("/tmp")
        .unwrap();
    let mut daemons = Vec::new();
    for name in ["alpha", "beta"] {
        let folders = ServiceFolders::under(base.path(), name);
        let notify_dir = base.path().join(format!("notify-{name}"));
        std::fs::create_dir_all(&notify_dir).unwrap();
        let notify = NotifySocket::bind(&notify_dir);
        let mut c = bare(&["daemon", "run", "--name", name]);
        folders.apply(&mut c);
        c.env("HOME", base.path().join("home"))
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "400000")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = Foreground(c.spawn().unwrap());
        daemons.push((name, folders, notify, child));
    }
    for (name, folders, notify, child) in &mut daemons {
        assert!(
            notify.until(Duration::from_secs(20), |seen| {
                seen.iter().any(|m| m == "READY=1")
                    && seen.iter().any(|m| m.starts_with("STATUS="))
                    && seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2
            }),
            "{name}: READY=1, a STATUS= line and two WATCHDOG=1 pings within 20 s; got {:?}",
            notify.seen
        );
        assert_eq!(notify.seen[0], "READY=1", "{:?}", notify.seen);
        let status = notify
            .seen
            .iter()
            .find(|m| m.starts_with("STATUS="))
            .unwrap();
        assert!(status.contains("in flight"), "{status}");
        let socket = folders.run.join("control.sock");
        assert!(
            socket.exists(),
            "{name}: no socket in {}",
            folders.run.display()
        );
        let record = std::fs::read_to_string(folders.state.join("pid")).unwrap();
        assert!(
            record.starts_with(&format!("{} ", child.0.id()))
                && record.contains(&*socket.to_string_lossy()),
            "{name}: pid record {record:?}"
        );
        assert!(folders.logs.join(format!("{name}.log")).exists());
        // A command run with the unit's environment (ExecReload=, a shell in the unit's
        // namespace) finds this instance.
        let mut c = bare(&["--json", "daemon", "status", "--name", name]);
        folders.apply(&mut c);
        c.env("HOME", base.path().join("home"));
        let r = run(&mut c);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.json()["pid"], child.0.id(), "{r:?}");
    }
    // Nothing of one instance is in the other's folders.
    let alpha = &daemons[0].1;
    assert!(!alpha.run.join("beta").exists() && !alpha.state.join("beta").exists());
}

/// A bad folder variable is a usage error naming it, not a daemon in some other folder.
#[test]
fn a_relative_service_folder_is_refused_by_name() {
    let r =
        run(bare(&["daemon", "status", "--name", "x"]).env("STATE_DIRECTORY", "lib/clawdbot/x"));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("STATE_DIRECTORY"), "{r:?}");
}

/// `sudo clawdbot daemon status --name N` finds the daemon of a system service running as
/// `User=` another user: root reads the service user's state folder under
/// /var/lib/clawdbot/N and the daemon answers root on its socket. Root refuses to stop it
/// from that record (which its user could forge), naming systemctl, and signals nothing.
#[test]
#[ignore = "needs root to set up the system layout and a service user: run by .ci/run"]
fn root_status_finds_a_system_service_running_as_another_user() {
    support::require_root("set up the system layout and a service user");
    let name = format!("sdtest{}", std::process::id());
    let run_dir = PathBuf::from("/run/clawdbot").join(&name);
    let state_dir = PathBuf::from("/var/lib/clawdbot").join(&name);
    /// Removes the instance folders, then their parents when this test made them and
    /// they are empty (`remove_dir` never removes a folder in use by anything else).
    struct Cleanup(Vec<PathBuf>, Vec<PathBuf>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for dir in &self.0 {
                let _ = std::fs::remove_dir_all(dir);
            }
            for parent in &self.1 {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
    let mut cleanup = Cleanup(vec![run_dir.clone(), state_dir.clone()], Vec::new());
    // What systemd does for RuntimeDirectory=clawdbot/%i, StateDirectory=clawdbot/%i:
    // root-owned parents (0755), the instance folder owned by the service user.
    let other = tempfile::Builder::new()
        .prefix("cbsd")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(other.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&run_dir, &state_dir] {
        let parent = dir.parent().unwrap();
        if !parent.exists() {
            std::fs::create_dir_all(parent).unwrap();
            cleanup.1.push(parent.to_path_buf());
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let logs = other.path().join("logs");
    let home = other.path().join("home");
    for dir in [&logs, &home] {
        std::fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let config = other.path().join(format!("{name}.yaml"));
    std::fs::write(&config, seed_config("http://127.0.0.1:9/v1")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let notify = NotifySocket::bind(other.path());
    std::fs::set_permissions(&notify.path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut notify = notify;

    use std::os::unix::process::CommandExt;
    let mut c = bare(&["daemon", "run", "--name", &name]);
    c.env("RUNTIME_DIRECTORY", &run_dir)
        .env("STATE_DIRECTORY", &state_dir)
        .env("LOGS_DIRECTORY", &logs)
        .env("CONFIGURATION_DIRECTORY", other.path())
        .env("HOME", &home)
        .env("NOTIFY_SOCKET", &notify.path)
        .current_dir(other.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .uid(65534)
        .gid(65534);
    let daemon = Foreground(c.spawn().unwrap());
    assert!(
        notify.until(Duration::from_secs(20), |s| s
            .iter()
            .any(|m| m == "READY=1")),
        "the service did not become ready: {:?}",
        notify.seen
    );

    let r = run(&mut bare(&["--json", "daemon", "status", "--name", &name]));
    assert_eq!(
        r.code, 0,
        "root's status must see the service's daemon: {r:?}"
    );
    assert_eq!(r.json()["pid"], daemon.0.id(), "{r:?}");
    let all = run(&mut bare(&["daemon", "status"]));
    assert!(
        all.stdout.contains(&name) || all.stderr.contains(&name),
        "{all:?}"
    );

    let stop = run(&mut bare(&[
        "daemon",
        "stop",
        "--name",
        &name,
        "--timeout",
        "1",
    ]));
    assert_eq!(stop.code, 2, "{stop:?}");
    assert!(stop.stderr.contains("systemctl"), "{stop:?}");
    let start = run(&mut bare(&[
        "daemon",
        "start",
        "--name",
        &name,
        "--config",
        &config.display().to_string(),
    ]));
    assert_eq!(start.code, 2, "{start:?}");
    let mut daemon = daemon;
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the service's daemon was stopped"
    );
}

fn unit_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cbunit")
        .tempdir_in("/tmp")
        .unwrap()
}

/// `daemon install` writes the instance unit, refuses to overwrite it without --force,
/// and `daemon uninstall` removes only a file it wrote. --user units leave out what a
/// user manager cannot apply. --now without a running systemd fails naming what is
/// missing and writes nothing.
#[test]
fn install_writes_the_unit_and_uninstall_removes_it() {
    let dir = unit_dir();
    let d = dir.path().display().to_string();
    let bot = dir.path().join("clawdbot@bot.service");
    let r = run(&mut bare(&[
        "daemon",
        "install",
        "--name",
        "bot",
        "--unit-dir",
        &d,
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("systemctl daemon-reload && systemctl enable --now clawdbot@bot.service"),
        "{r:?}"
    );
    let text = std::fs::read_to_string(&bot).unwrap();
    let exe = std::fs::canonicalize(BIN).unwrap();
    for want in [
        format!("ExecStart=\"{}\" daemon run --name %i\n", exe.display()),
        "RuntimeDirectory=clawdbot/%i\n".into(),
        "StateDirectory=clawdbot/%i\n".into(),
        "Type=notify\n".into(),
        "WatchdogSec=".into(),
        "User=clawdbot\n".into(),
        "WantedBy=multi-user.target\n".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }

    std::fs::write(&bot, format!("{text}# local edit\n")).unwrap();
    let again = run(&mut bare(&[
        "daemon",
        "install",
        "--name",
        "bot",
        "--unit-dir",
        &d,
    ]));
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stderr.contains("--force") && again.stderr.contains(&*bot.to_string_lossy()),
        "{again:?}"
    );
    assert!(
        std::fs::read_to_string(&bot)
            .unwrap()
            .ends_with("# local edit\n"),
        "overwritten"
    );
    let forced = run(&mut bare(&[
        "daemon",
        "install",
        "--name",
        "bot",
        "--unit-dir",
        &d,
        "--force",
    ]));
    assert_eq!(forced.code, 0, "{forced:?}");
    assert_eq!(std::fs::read_to_string(&bot).unwrap(), text);

    // A gateway unit loads its command and health URL from a private file as a credential
    // (nothing of them in the unit).
    let gw = run(&mut bare(&[
        "daemon",
        "install",
        "--name",
        "llm",
        "--unit-dir",
        &d,
        "--exec",
        "/bin/sleep 100% --api-key SEKRET-U",
        "--health-url",
        "http://127.0.0.1:8080/health",
    ]));
    assert_eq!(gw.code, 0, "{gw:?}");
    let gw_text = std::fs::read_to_string(dir.path().join("clawdbot-gateway@llm.service")).unwrap();
    assert!(
        gw_text.contains("--exec-file %d/exec\n")
            && !gw_text.contains("8080/health")
            && gw_text.contains(&format!("LoadCredential=exec:{d}/llm.exec\n"))
            && !gw_text.contains("SEKRET"),
        "{gw_text}"
    );
    let exec_file = dir.path().join("llm.exec");
    assert_eq!(
        std::fs::read_to_string(&exec_file).unwrap(),
        "/bin/sleep 100% --api-key SEKRET-U\nhealth-url http://127.0.0.1:8080/health\n"
    );
    assert_eq!(
        std::fs::metadata(&exec_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bad = run(&mut bare(&[
        "daemon",
        "install",
        "--name",
        "x",
        "--unit-dir",
        &d,
        "--exec",
        "/bin/true\nExecStartPre=/bin/sh",
    ]));
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(!dir.path().join("clawdbot-gateway@x.service").exists());

    let user_dir = unit_dir();
    let u = user_dir.path().display().to_string();
    let user = run(&mut bare(&[
        "daemon",
        "install",
        "--name",
        "bot",
        "--user",
        "--unit-dir",
        &u,
    ]));
    assert_eq!(user.code, 0, "{user:?}");
    assert!(
        user.stdout.contains("systemctl --user daemon-reload"),
        "{user:?}"
    );
    let user_text = std::fs::read_to_string(user_dir.path().join("clawdbot@bot.service")).unwrap();
    assert!(
        user_text.contains("WantedBy=default.target\n"),
        "{user_text}"
    );
    assert!(
        !user_text.contains("User=") && !user_text.contains("ProtectSystem="),
        "{user_text}"
    );

    if !Path::new("/run/systemd/system").exists() {
        let now_dir = unit_dir();
        let n = now_dir.path().display().to_string();
        let now = run(&mut bare(&[
            "daemon",
            "install",
            "--name",
            "bot",
            "--now",
            "--unit-dir",
            &n,
        ]));
        assert_eq!(now.code, 1, "{now:?}");
        assert!(
            now.stderr.contains("/run/systemd/system")
                || now.stderr.contains("systemctl is not on PATH"),
            "{now:?}"
        );
        assert!(
            std::fs::read_dir(now_dir.path()).unwrap().next().is_none(),
            "--now wrote a unit"
        );
    }

    let foreign = dir.path().join("clawdbot@mine.service");
    std::fs::write(&foreign, "[Service]\nExecStart=/bin/true\n").unwrap();
    let refuse = run(&mut bare(&[
        "daemon",
        "uninstall",
        "--name",
        "mine",
        "--unit-dir",
        &d,
    ]));
    assert_eq!(refuse.code, 1, "{refuse:?}");
    assert!(
        foreign.exists(),
        "a unit clawdbot did not write was removed"
    );

    for name in ["bot", "llm"] {
        let r = run(&mut bare(&[
            "--json",
            "daemon",
            "uninstall",
            "--name",
            name,
            "--unit-dir",
            &d,
        ]));
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.json()["removed"].as_array().unwrap().len(), 1, "{r:?}");
    }
    assert!(!bot.exists());
    let none = run(&mut bare(&[
        "daemon",
        "uninstall",
        "--name",
        "bot",
        "--unit-dir",
        &d,
    ]));
    assert_eq!(none.code, 0, "{none:?}");
}

/// The shipped units (config-templates/) and freshly installed ones score at most 2.5
/// ("OK") in `systemd-analyze security --offline=true`, and `systemd-analyze verify`
/// accepts the installed ones.
#[test]
#[ignore = "needs systemd-analyze (Debian package systemd): run by .ci/run"]
fn system_units_score_ok_in_systemd_analyze_security() {
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is not installed (apt-get install systemd)"
    );
    let dir = unit_dir();
    let d = dir.path().display().to_string();
    assert_eq!(
        run(&mut bare(&[
            "daemon",
            "install",
            "--name",
            "bot",
            "--unit-dir",
            &d
        ]))
        .code,
        0
    );
    assert_eq!(
        run(&mut bare(&[
            "daemon",
            "install",
            "--name",
            "llm",
            "--unit-dir",
            &d,
            "--exec",
            "/bin/sleep 1"
        ]))
        .code,
        0
    );
    // systemd accepts the installed units as they are (syntax, quoting, the executable).
    let units_in = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "service"))
            .collect()
    };
    let installed = units_in(dir.path());
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&installed)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-templates");
    let mut units = units_in(dir.path());
    for template in ["clawdbot@.service", "clawdbot-gateway@.service"] {
        // A template is analysed as an instance of itself.
        let copy = dir.path().join(template.replace("@.", "@example."));
        std::fs::copy(repo.join(template), &copy).unwrap();
        units.push(copy);
    }
    assert_eq!(units.len(), 4);
    for unit in units {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no score for {}:\n{text}\n{}",
                    unit.display(),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        eprintln!("{}: {score}", unit.display());
        assert!(score <= 2.5, "{} scores {score}:\n{text}", unit.display());
    }
}
