//! The daemon's log rotates by size and loses no line under a burst: a supervised child
//! prints 30,000 numbered lines, and every number appears exactly once across the files.
//! A device or FIFO log is never rotated; a log path is never followed through a link.

use crate::support;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{seed_config, wait_until, Home};

const LINES: usize = 30_000;
const MAX_BYTES: u64 = 256 * 1024;
const MAX_FILES: usize = 40;

fn log_files(home: &Home) -> Vec<std::path::PathBuf> {
    let base = home.log_path("burst");
    let mut files = vec![base.clone()];
    for n in 1..=MAX_FILES + 1 {
        let p = std::path::PathBuf::from(format!("{}.{n}", base.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files
}

/// True once the child's last line (`BURST-END`, printed after the numbers) is logged. The
/// log keeps the child's order, so every number was logged before it. Only the newest two
/// files are read: the line is the newest one, and one rotation may have moved it.
fn end_marker_logged(home: &Home) -> bool {
    log_files(home).iter().take(2).any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("gateway_output") && l.contains("BURST-END"))
    })
}

/// Every `BURST-N` number in the log files. Call it once nothing writes to them any more:
/// a file read while it is renamed to the next number could be counted twice.
fn numbers_logged(home: &Home) -> Vec<usize> {
    let mut seen = Vec::new();
    for f in log_files(home) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("gateway_output")) {
            if let Some(n) = line
                .split("BURST-")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .and_then(|t| t.parse::<usize>().ok())
            {
                seen.push(n);
            }
        }
    }
    seen
}

#[test]
fn a_burst_of_lines_rotates_by_size_and_loses_none() {
    let home = Home::new();
    let cfg = seed_config("http://127.0.0.1:9/v1")
        + &format!("logging:\n  max_bytes: {MAX_BYTES}\n  max_files: {MAX_FILES}\n");
    let cfg = home.write("burst.yaml", &cfg);
    let exec = format!("sh -c 'seq 1 {LINES} | sed s/^/BURST-/; echo BURST-END; sleep 60'");
    let r = home.run(&[
        "daemon",
        "start",
        "--name",
        "burst",
        "--config",
        cfg.to_str().unwrap(),
        "--exec",
        &exec,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    // Wait for the event that comes after every number (polling the newest files only),
    // then stop the daemon, so the files are counted once, at rest.
    let mut polls = 0;
    let ended = wait_until(Duration::from_secs(120), || {
        polls += 1;
        std::thread::sleep(Duration::from_millis(80));
        end_marker_logged(&home)
    });
    assert!(ended, "the last line was never logged ({polls} polls)");
    let stop = home.run(&["daemon", "stop", "--name", "burst"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    let seen = numbers_logged(&home);
    assert_eq!(seen.len(), LINES, "duplicated lines");
    let unique: HashSet<usize> = seen.iter().copied().collect();
    assert_eq!(unique, (1..=LINES).collect::<HashSet<_>>(), "lost lines");
    let files = log_files(&home);
    assert!(files.len() > 3, "no rotation happened: {files:?}");
    assert!(
        files.len() <= MAX_FILES + 1,
        "too many files kept: {}",
        files.len()
    );
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= MAX_BYTES, "{} is {len} bytes", f.display());
    }
}

/// Lines the child of [`start_burst`] prints: about 240 KB, several times a pipe's
/// buffer, so once the child is past them the daemon has read (and logged) most of them.
const BURST: usize = 20_000;

/// Starts a gateway daemon `name` logging to `log` whose child prints [`BURST`] numbered
/// lines and then creates `done`, with a 4 KiB rotation size (the smallest allowed).
fn start_burst(home: &Home, name: &str, log: &Path, done: &Path) -> support::Run {
    let cfg =
        seed_config("http://127.0.0.1:9/v1") + "logging:\n  max_bytes: 4096\n  max_files: 2\n";
    let cfg = home.write(&format!("{name}.yaml"), &cfg);
    let exec = format!(
        "sh -c 'seq 1 {BURST} | sed s/^/BURST-/; touch {}; sleep 60'",
        done.display()
    );
    home.run(&[
        "daemon",
        "start",
        "--name",
        name,
        "--config",
        cfg.to_str().unwrap(),
        "--exec",
        &exec,
        "--log",
        log.to_str().unwrap(),
    ])
}

/// Reads a FIFO into a shared buffer. Its read end is open when this returns (a log FIFO
/// nobody reads is refused); reads that find no writer yet, or nothing new, try again.
fn drain_fifo(path: PathBuf) -> Arc<Mutex<Vec<u8>>> {
    use std::os::unix::fs::OpenOptionsExt;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        // Bounded: at most about two minutes of polling.
        for _ in 0..120_000 {
            match fifo.read(&mut buf) {
                Ok(n @ 1..) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    seen
}

/// Distinct `BURST-N` numbers in what a reader received.
fn burst_numbers(seen: &Mutex<Vec<u8>>) -> HashSet<usize> {
    let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    text.split("BURST-")
        .skip(1)
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Item 8: a character device or FIFO log is written as is: never renamed, replaced or
/// rotated, whatever `max_bytes` says. The device is a node made here with the numbers
/// of `/dev/null` (1, 3): the same kind of file, but a broken build can only rename a
/// file in this test's home, never the machine's `/dev/null`. Its writes cannot be read
/// back, so the proof that far more than `max_bytes` went to it is the child's marker
/// (it is past a burst several pipe buffers long) followed by a stop, which flushes
/// every logged line before the daemon exits. The FIFO's reader sees every line.
#[test]
#[ignore = "needs root to make a device node (mknod): run by .ci/run"]
fn a_device_or_fifo_log_is_written_as_is_and_never_rotated() {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    support::require_root("make a device node (mknod)");
    let home = Home::new();
    let device = home.path().join("device.log");
    mknod(
        &device,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 3),
    )
    .unwrap();
    let fifo = home.path().join("fifo.log");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let from_fifo = drain_fifo(fifo.clone());

    let device_done = home.path().join("device.done");
    let r = start_burst(&home, "dev", &device, &device_done);
    assert_eq!(r.code, 0, "{r:?}");
    let r = start_burst(&home, "fifo", &fifo, &home.path().join("fifo.done"));
    assert_eq!(r.code, 0, "{r:?}");

    assert!(wait_until(Duration::from_secs(60), || device_done.exists()));
    let stop = home.run(&["daemon", "stop", "--name", "dev"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    let meta = std::fs::symlink_metadata(&device).unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "device replaced: {meta:?}"
    );
    assert_eq!(meta.rdev(), makedev(1, 3), "another device now");

    assert!(
        wait_until(Duration::from_secs(60), || burst_numbers(&from_fifo).len()
            >= BURST),
        "the fifo got {} of {BURST} lines",
        burst_numbers(&from_fifo).len()
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    for log in [&device, &fifo] {
        let rotated = PathBuf::from(format!("{}.1", log.display()));
        assert!(!rotated.exists(), "{} was rotated", log.display());
    }
}

/// Item 9: a log path that is a link planted in a sticky world-writable folder is refused
/// before anything starts (exit 2 naming the path and why); the link's target, a
/// root-only file, is not touched. A file planted there by another user is refused too.
#[test]
fn a_log_link_or_a_foreign_file_in_a_shared_folder_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let cfg = home.write("bot.yaml", &seed_config("http://127.0.0.1:9/v1"));
    let shared = home.path().join("tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let secret = home.write("root-only", "untouched\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = shared.join("bot.log");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let start = |log: &Path| {
        home.run(&[
            "daemon",
            "start",
            "--name",
            "bot",
            "--config",
            cfg.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ])
    };
    let r = start(&link);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(link.to_str().unwrap()) && r.stderr.contains("symbolic link"),
        "{r:?}"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "untouched\n");
    assert_eq!(home.run(&["daemon", "status", "--name", "bot"]).code, 3);

    if nix::unistd::geteuid().is_root() {
        let foreign = shared.join("foreign.log");
        std::fs::write(&foreign, "").unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        let r = start(&foreign);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains("belongs to uid 65534"), "{r:?}");
    }
    // A new log in the shared folder is created (exclusively) and used.
    let fresh = shared.join("fresh.log");
    let r = start(&fresh);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&fresh)
            .unwrap_or_default()
            .contains("daemon ready")
    }));
}

/// Red-team F1: a folder on the way to the log that is a symbolic link owned by another
/// user (planted in a sticky world-writable folder) is refused before anything starts
/// (exit 2 naming the link); the root-only files in the folder it points to are neither
/// appended to nor rotated away. The same holds for the default log folder under a shared
/// `--home` whose `logs` is such a link. Needs root (to give the link to uid 65534).
#[test]
#[ignore = "needs root to chown a link to uid 65534: run by .ci/run"]
fn a_folder_link_owned_by_another_user_is_refused_and_its_target_untouched() {
    use std::os::unix::fs::PermissionsExt;
    support::require_root("chown a link to uid 65534");
    let home = Home::new();
    let cfg =
        seed_config("http://127.0.0.1:9/v1") + "logging:\n  max_bytes: 4096\n  max_files: 2\n";
    let cfg = home.write("bot.yaml", &cfg);
    let victim = home.path().join("victimdir");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(victim.join("app.log"), "ROOT SECRET CONFIG\n").unwrap();
    std::fs::write(victim.join("app.log.1"), "OLD\n").unwrap();
    let sticky = home.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let link = sticky.join("tmpdir");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let log = link.join("app.log");
    let r = home.run(&[
        "daemon",
        "start",
        "--name",
        "sl2",
        "--config",
        cfg.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(link.to_str().unwrap()) && r.stderr.contains("uid 65534"),
        "{r:?}"
    );
    assert_eq!(home.run(&["daemon", "status", "--name", "sl2"]).code, 3);
    assert_eq!(
        std::fs::read_to_string(victim.join("app.log")).unwrap(),
        "ROOT SECRET CONFIG\n"
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("app.log.1")).unwrap(),
        "OLD\n"
    );
    assert!(!victim.join("app.log.2").exists());

    // The default log folder: `--home` is a sticky shared folder, its `logs` a planted link.
    let shared_home = Home::new();
    std::fs::set_permissions(shared_home.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let logs = shared_home.path().join("logs");
    std::os::unix::fs::symlink(&victim, &logs).unwrap();
    std::os::unix::fs::lchown(&logs, Some(65534), Some(65534)).unwrap();
    let r = shared_home.run(&[
        "daemon",
        "start",
        "--name",
        "app",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(logs.to_str().unwrap()) && r.stderr.contains("uid 65534"),
        "{r:?}"
    );
    assert!(!victim.join("app.log.2").exists());
    assert_eq!(
        std::fs::read_to_string(victim.join("app.log")).unwrap(),
        "ROOT SECRET CONFIG\n"
    );
}

/// Lines the child of the kill -9 test prints: far more than the logging worker may hold
/// (see [`a_kill_9_right_after_a_burst_loses_only_a_bounded_tail`]).
const KILL_BURST: usize = 100_000;

/// The logging worker's buffer (`src/logging/worker.rs`, `Settings::capacity`): a kill -9
/// loses at most that (records waiting) plus the batch being written, also at most that.
const WORKER_BUFFER_BYTES: usize = 1024 * 1024;

/// A kill -9 right after a burst: the log keeps whole records, the child's lines in order
/// from the first with no gap or duplicate, and loses only a tail bounded by memory: the
/// lines still in the pipe from the child (64 KiB) plus two worker buffers of records
/// (the batch being written and the records waiting during the worker's pause).
#[test]
fn a_kill_9_right_after_a_burst_loses_only_a_bounded_tail() {
    let home = Home::new();
    let done = home.path().join("done");
    let cfg =
        seed_config("http://127.0.0.1:9/v1") + "logging:\n  max_bytes: 67108864\n  max_files: 2\n";
    let cfg = home.write("kill.yaml", &cfg);
    let exec = format!(
        "sh -c 'seq 1 {KILL_BURST} | sed s/^/BURST-/; touch {}; sleep 60'",
        done.display()
    );
    let r = home.run(&[
        "--json",
        "daemon",
        "start",
        "--name",
        "kill",
        "--config",
        cfg.to_str().unwrap(),
        "--exec",
        &exec,
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let pid = r.json()["pid"].as_u64().unwrap() as i32;
    assert!(
        wait_until(Duration::from_secs(120), || done.exists()),
        "the child never got past its burst"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(30), || {
        !clawdbot::daemon::pidfile::is_running(pid as u32)
    }));
    let text = std::fs::read_to_string(home.log_path("kill")).unwrap();
    assert!(
        text.ends_with('\n'),
        "a record was cut: {:?}",
        text.lines().last()
    );
    let burst: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("gateway_output"))
        .collect();
    let numbers: Vec<usize> = burst
        .iter()
        .map(|l| {
            let n = l
                .split("BURST-")
                .nth(1)
                .and_then(|t| t.split_whitespace().next());
            n.and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("not a whole record: {l:?}"))
        })
        .collect();
    let kept = numbers.len();
    assert!(
        numbers.iter().copied().eq(1..=kept),
        "lines lost or reordered before the tail"
    );
    let shortest_record = burst.iter().map(|l| l.len() + 1).min().unwrap_or(1);
    let in_pipe = 64 * 1024 / "BURST-1\n".len();
    let in_worker = 2 * WORKER_BUFFER_BYTES / shortest_record;
    let lost = KILL_BURST - kept;
    assert!(
        lost <= in_pipe + in_worker,
        "lost {lost} lines, more than the pipe ({in_pipe}) and the worker's memory ({in_worker})"
    );
}
