//! The daemon's log rotates by size and loses no line under a burst: a supervised child
//! prints 30,000 numbered lines, and every number appears exactly once across the files.

mod support;

use std::collections::HashSet;
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
    let exec = format!("sh -c 'seq 1 {LINES} | sed s/^/BURST-/; sleep 60'");
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
    assert!(
        wait_until(Duration::from_secs(60), || numbers_logged(&home).len()
            >= LINES),
        "only {} of {LINES} lines logged",
        numbers_logged(&home).len()
    );
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
