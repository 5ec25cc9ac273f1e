//! Completions in real shells: an interactive bash (and zsh) on a pseudo-terminal with the
//! script `clawdbot completions SHELL` prints, typing TAB TAB and reading what the shell
//! offers; fish through its own `complete -C`. The candidates come from the home the line
//! names: daemon names, `send --to` target aliases from the daemon's config, enum values.

use crate::support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{wait_until, Home};

/// A home with two daemons known (onboarded, checks skipped) and target aliases in the
/// first one's config, plus a folder whose `clawdbot` is this build (the scripts call
/// `clawdbot` from PATH) and a file that file-name completion would offer.
struct Fixture {
    home: Home,
    bin_dir: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let home = Home::new();
        for (name, targets) in [
            ("alpha-bot", ["ops-room=cidOps==", "dev-room=cidDev=="]),
            ("beta-bot", ["x=cidX==", "y=cidY=="]),
        ] {
            let mut args = vec![
                "onboard",
                "--non-interactive",
                "--skip-checks",
                "--name",
                name,
                "--client-id",
                "dingcompletion",
                "--client-secret",
                "completion-secret",
                "--model-base-url",
                "http://127.0.0.1:9/v1",
                "--model",
                "m",
            ];
            for t in targets.iter() {
                args.extend(["--target", t]);
            }
            let r = home.run(&args);
            assert_eq!(r.code, 0, "{r:?}");
        }
        let bin_dir = home.path().join("bin");
        std::fs::create_dir(&bin_dir).unwrap();
        std::os::unix::fs::symlink(support::BIN, bin_dir.join("clawdbot")).unwrap();
        home.write("zz-file-in-cwd", "");
        Fixture { home, bin_dir }
    }

    fn script(&self, shell: &str) -> String {
        let r = self.home.run(&["completions", shell]);
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout
    }

    /// PATH with this build's `clawdbot` first.
    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// A shell command with a clean environment: the home in CLAWDBOT_HOME, cwd the home.
    fn shell(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", self.path_var())
            .env("HOME", self.home.path())
            .env("TERM", "dumb")
            .env("CLAWDBOT_HOME", self.home.path())
            .current_dir(self.home.path());
        c
    }
}

/// An interactive shell on a pseudo-terminal; everything it shows is kept in `screen`.
struct Pty {
    child: std::process::Child,
    master: std::fs::File,
    screen: Arc<Mutex<String>>,
    /// The screen up to here was already looked at.
    seen: usize,
    /// Lines cleared so far (each clear waits for its own marker).
    cleared: usize,
}

impl Pty {
    fn spawn(mut c: Command) -> Pty {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        for fd in [&pty.master, &pty.slave] {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
        }
        let slave = std::fs::File::from(pty.slave);
        c.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // A session of its own with the terminal as its controlling one, as a login has.
        unsafe {
            c.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("spawn the shell");
        drop(c);
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let screen = support::record_screen(&master);
        Pty {
            child,
            master,
            screen,
            seen: 0,
            cleared: 0,
        }
    }

    fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Erases the line being edited (Ctrl-U: typed input, not a signal, so it waits for a
    /// completion still running), then runs a command whose output proves the shell is
    /// back at its prompt.
    fn clear_line(&mut self) {
        self.cleared += 1;
        let n = self.cleared;
        self.type_text(&format!("\x15echo cleared-$((1000+{n}))\r"));
        self.expect(&[&format!("cleared-{}", 1000 + n)]);
    }

    /// Waits (bounded, generous) until the screen after the last look shows all of
    /// `needles`; returns that part of the screen.
    fn expect(&mut self, needles: &[&str]) -> String {
        let mut part = String::new();
        let shown = wait_until(Duration::from_secs(30), || {
            part = self.screen.lock().unwrap()[self.seen..].to_string();
            needles.iter().all(|n| part.contains(n))
        });
        assert!(
            shown,
            "the shell never showed {needles:?}; it showed: {part:?}"
        );
        self.seen += part.len();
        part
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Types `line` then `tabs` (bash lists the candidates on the second TAB, zsh on the
/// first) and returns what the shell showed once it shows all of `shows`; then clears the
/// line (see [`Pty::clear_line`]).
fn complete(sh: &mut Pty, line: &str, tabs: &str, shows: &[&str]) -> String {
    sh.type_text(line);
    sh.type_text(tabs);
    let shown = sh.expect(shows);
    sh.clear_line();
    shown
}

/// `--name` offers the home's daemons and no file names; `send --name alpha-bot --to`
/// offers that daemon's aliases and not the other daemon's. `tabs`: what makes the shell
/// list candidates.
fn offers_daemon_names_and_aliases(sh: &mut Pty, tabs: &str) {
    let names = complete(
        sh,
        "clawdbot daemon status --name ",
        tabs,
        &["alpha-bot", "beta-bot"],
    );
    assert!(
        !names.contains("zz-file-in-cwd"),
        "file names offered: {names:?}"
    );
    let aliases = complete(
        sh,
        "clawdbot send --name alpha-bot --to ",
        tabs,
        &["ops-room", "dev-room"],
    );
    assert!(!aliases.contains("cidX"), "{aliases:?}");
}

/// An interactive bash with the script `clawdbot completions bash` prints sourced (after
/// the bash-completion package's loader when `with_package`).
fn bash_completes(with_package: bool) {
    let fx = Fixture::new();
    let rc = fx.home.write(
        "bashrc",
        &format!(
            "{}source {}\nPS1='READY> '\n",
            if with_package {
                "source /usr/share/bash-completion/bash_completion\n"
            } else {
                ""
            },
            fx.home.write("clawdbot.bash", &fx.script("bash")).display()
        ),
    );
    let mut bash = fx.shell("bash");
    bash.args(["--noprofile", "--rcfile", rc.to_str().unwrap(), "-i"]);
    let mut sh = Pty::spawn(bash);
    sh.expect(&["READY> "]);

    offers_daemon_names_and_aliases(&mut sh, "\t\t");
    // A unique prefix is completed in place.
    sh.type_text("clawdbot healthcheck --name al\t");
    sh.expect(&["--name alpha-bot "]);
    sh.clear_line();
    // The home given on the line wins over CLAWDBOT_HOME (an empty one here: nothing).
    let empty = fx.home.path().join("empty-home");
    std::fs::create_dir(&empty).unwrap();
    // No daemon there: nothing is offered (the bell), not even file names.
    let other_home = complete(
        &mut sh,
        &format!("clawdbot --home {} daemon stop --name ", empty.display()),
        "\t\t",
        &["\x07\x07"],
    );
    assert!(
        !other_home.contains("alpha-bot") && !other_home.contains("zz-file"),
        "{other_home:?}"
    );
    // Enum values.
    complete(
        &mut sh,
        "clawdbot completions ",
        "\t\t",
        &["bash", "fish", "zsh"],
    );
    complete(
        &mut sh,
        "clawdbot sim inject --msgtype ",
        "\t\t",
        &["richText", "picture"],
    );
    hostile_configs_neither_hang_nor_inject(&fx, &mut sh);
}

/// A config with aliases a shell would split or expand offers only the plain one (the
/// `$(touch ...)` alias never runs); a FIFO config (no writer) answers at once with nothing
/// instead of hanging the shell.
fn hostile_configs_neither_hang_nor_inject(fx: &Fixture, sh: &mut Pty) {
    let pwned = fx.home.path().join("pwned");
    let config = fx.home.write(
        "hostile.yaml",
        &format!(
            "channel:\n  dingtalk:\n    targets:\n      'with space': cidA==\n      \
             '$(touch {})': cidB==\n      plain-room: cidC==\n",
            pwned.display()
        ),
    );
    // `plain-room` is the only candidate, so one TAB inserts it.
    sh.type_text(&format!(
        "clawdbot send --config {} --to \t",
        config.display()
    ));
    let shown = sh.expect(&["--to plain-room "]);
    sh.clear_line();
    assert!(!shown.contains("with"), "{shown:?}");
    assert!(!pwned.exists(), "an alias ran a command substitution");
    let fifo = fx.home.path().join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let shown = complete(
        sh,
        &format!("clawdbot send --config {} --to ", fifo.display()),
        "\t\t",
        &["\x07\x07"],
    );
    assert!(!shown.contains("zz-file"), "{shown:?}");
}

#[test]
fn bash_completes_daemon_names_target_aliases_and_enum_values() {
    bash_completes(false);
}

#[test]
#[ignore = "needs the bash-completion package (apt-get install bash-completion; .ci/run installs it)"]
fn bash_with_the_bash_completion_package_completes_the_same() {
    assert!(
        Path::new("/usr/share/bash-completion/bash_completion").is_file(),
        "bash-completion is not installed"
    );
    bash_completes(true);
}

/// zsh, with the script installed as `_clawdbot` in a folder of `fpath` (as README says),
/// completes the same on a terminal.
#[test]
#[ignore = "needs zsh (apt-get install zsh; .ci/run installs it)"]
fn zsh_from_fpath_completes_daemon_names_and_aliases() {
    let fx = Fixture::new();
    let fdir = fx.home.path().join("zfunc");
    std::fs::create_dir(&fdir).unwrap();
    std::fs::write(fdir.join("_clawdbot"), fx.script("zsh")).unwrap();
    fx.home.write(
        ".zshrc",
        &format!(
            "fpath=({} $fpath)\nautoload -Uz compinit && compinit -u\nPS1='READY> '\n",
            fdir.display()
        ),
    );
    let mut zsh = fx.shell("zsh");
    // zsh turns its line editor off on a `dumb` terminal.
    zsh.env("ZDOTDIR", fx.home.path())
        .env("TERM", "xterm")
        .arg("-i");
    let mut sh = Pty::spawn(zsh);
    sh.expect(&["READY> "]);
    offers_daemon_names_and_aliases(&mut sh, "\t");
}

/// fish, with the script in its completions folder, answers `complete -C` (what it runs
/// on TAB) with the same candidates.
#[test]
#[ignore = "needs fish (apt-get install fish; .ci/run installs it)"]
fn fish_completes_daemon_names_and_aliases() {
    let fx = Fixture::new();
    let dir = fx.home.path().join(".config/fish/completions");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("clawdbot.fish"), fx.script("fish")).unwrap();
    for (line, want, not) in [
        (
            "clawdbot daemon status --name ",
            &["alpha-bot", "beta-bot"][..],
            "zz-file-in-cwd",
        ),
        (
            "clawdbot send --name alpha-bot --to ",
            &["ops-room", "dev-room"][..],
            "cidX",
        ),
    ] {
        let out = fx
            .shell("fish")
            .args(["--no-config", "-c"])
            .arg(format!(
                "source {}; complete -C '{line}'",
                dir.join("clawdbot.fish").display()
            ))
            .output()
            .expect("fish");
        let got = String::from_utf8_lossy(&out.stdout);
        for w in want {
            assert!(got.contains(w), "{line}: {got:?} {out:?}");
        }
        assert!(!got.contains(not), "{line}: {got:?}");
    }
}

/// The README's per-user install lines (`mkdir -p ...` and `clawdbot completions SHELL >
/// ~/...`), run as written by `sh` in a fresh HOME, leave each shell's script where that
/// shell looks for it.
#[test]
fn the_readme_install_lines_work_as_written() {
    let fx = Fixture::new();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let lines: Vec<&str> = readme
        .lines()
        .filter(|l| l.contains("~/") && (l.contains("completions") || l.contains(".zfunc")))
        .filter(|l| l.starts_with("mkdir") || l.starts_with("clawdbot completions"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let user_home = fx.home.path().join("user");
    std::fs::create_dir(&user_home).unwrap();
    for line in &lines {
        let code = line.split("  #").next().unwrap();
        let ran = fx
            .shell("sh")
            .args(["-c", code])
            .env("HOME", &user_home)
            .output()
            .unwrap();
        assert!(ran.status.success(), "{code}: {ran:?}");
    }
    for (file, shell) in [
        (".local/share/bash-completion/completions/clawdbot", "bash"),
        (".zfunc/_clawdbot", "zsh"),
        (".config/fish/completions/clawdbot.fish", "fish"),
    ] {
        let written = std::fs::read_to_string(user_home.join(file)).unwrap_or_default();
        assert_eq!(written, fx.script(shell), "{file}");
    }
}
