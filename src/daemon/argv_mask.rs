//! Keeping secrets out of the daemon's own command line.
//!
//! `daemon start --exec "llama-server --api-key K"` forks the daemon from that CLI call
//! without an exec, so the daemon inherits its argv and `ps` (any user, through
//! /proc/PID/cmdline) would show the key for the daemon's whole life. [`hide_secrets`]
//! rewrites the daemon's argv in place, the way `setproctitle` does: the `--exec`
//! command is replaced by its redacted display ([`crate::cmdline::redact::redact`]) and
//! URL passwords in any argument are masked.
//!
//! Chosen over a re-exec (which would need the binary path, the home and the ready pipe
//! handed through a new argv) and over keeping `--exec` out of argv (the operator types
//! it): the rewrite is local to the daemon and keeps its cmdline telling what runs.
//!
//! Invariants: the kernel shows `[arg_start, arg_end)` of the process's memory (fields
//! 48-49 of /proc/self/stat) as its cmdline; that area is overwritten with the masked
//! arguments, NUL-separated, cut to the area's size and NUL-padded (its last byte stays
//! NUL, so the kernel reads no further). Nothing is written unless the area holds
//! exactly what /proc/self/cmdline shows. `std::env::args` reads this same memory, so it
//! returns the masked words afterwards: the daemon reads its arguments only at startup,
//! before this runs. The supervised child's own argv is outside this process and keeps
//! the key (the runtime needs it there).
//!
//! Why this module keeps one `unsafe`: the argument area is memory no Rust value owns,
//! found only by the address the kernel reports; no safe API writes it
//! (`prctl(PR_SET_MM_ARG_START)` needs `CAP_SYS_RESOURCE`, and writing through
//! /proc/self/mem would be the same raw write hidden from the compiler).

use std::io;

use crate::cmdline::redact::redact;
use crate::redact_url::redact_url;

/// Why the command line could not be rewritten (the daemon runs on regardless).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ArgvMaskError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: &'static str,
        source: io::Error,
    },
    #[error("/proc/self/stat has no argument area (fields 48-49)")]
    NoArgArea,
    #[error("the argument area does not hold the command line /proc shows; left as it is")]
    Mismatch,
}

/// Masks secrets in this process's command line as `ps` shows it. `Ok(false)` when
/// nothing needed masking.
pub(crate) fn hide_secrets() -> Result<bool, ArgvMaskError> {
    let read = |path: &'static str| {
        std::fs::read(path).map_err(|source| ArgvMaskError::Read { path, source })
    };
    let cmdline = read("/proc/self/cmdline")?;
    let stat = read("/proc/self/stat")?;
    let (start, end) = arg_area(&String::from_utf8_lossy(&stat)).ok_or(ArgvMaskError::NoArgArea)?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let masked = mask_args(&args);
    if masked == args {
        return Ok(false);
    }
    let len = end
        .checked_sub(start)
        .filter(|&n| n > 0)
        .ok_or(ArgvMaskError::NoArgArea)?;
    let area = start as *mut u8;
    // SAFETY: [start, end) is this process's argument area as the kernel reports it: a
    // mapped, writable part of the initial stack that lives as long as the process.
    // Nothing holds a Rust reference into it (std only keeps raw `argv` pointers, read
    // by `std::env::args`, which is not called after startup; see the module docs).
    // It is first compared with /proc/self/cmdline (the kernel's copy of the same bytes)
    // so a misread address is never written. The daemon does this once, at startup.
    unsafe {
        let current = std::slice::from_raw_parts(area, len);
        if cmdline.len() > len || current[..cmdline.len()] != cmdline[..] {
            return Err(ArgvMaskError::Mismatch);
        }
        let bytes = area_bytes(&masked, len);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, len);
    }
    Ok(true)
}

/// `arg_start` and `arg_end` from the text of /proc/self/stat.
fn arg_area(stat: &str) -> Option<(usize, usize)> {
    // Field 2 (the command name) is in parentheses and may hold spaces or `)`: fields
    // are counted from the last `)`, which ends it; field 3 comes first after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(48 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    Some((start, end))
}

/// The arguments as they may be shown: the `--exec` command (`--exec CMD` or
/// `--exec=CMD`) redacted, URL passwords masked everywhere.
fn mask_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut exec_next = false;
    for arg in args {
        let shown = if std::mem::take(&mut exec_next) {
            redact(arg)
        } else if let Some(cmd) = arg.strip_prefix("--exec=") {
            format!("--exec={}", redact(cmd))
        } else {
            exec_next = arg == "--exec";
            arg.clone()
        };
        out.push(redact_url(&shown).into_owned());
    }
    out
}

/// `args` NUL-separated, cut or NUL-padded to exactly `len` bytes, the last one NUL.
fn area_bytes(args: &[String], len: usize) -> Vec<u8> {
    let mut bytes = args.join("\0").into_bytes();
    bytes.resize(len.saturating_sub(1), 0);
    bytes.push(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn the_exec_command_and_url_passwords_are_masked() {
        let args = strings(&[
            "clawdbot",
            "daemon",
            "start",
            "--exec",
            "srv --api-key K1 --port 1",
            "--health-url",
            "http://u:K2@h/health",
        ]);
        let shown = mask_args(&args).join(" ");
        assert!(!shown.contains("K1") && !shown.contains("K2"), "{shown}");
        assert!(
            shown.contains("--exec srv --api-key *** --port 1"),
            "{shown}"
        );
        let eq = mask_args(&strings(&["x", "--exec=srv --token=K3"]));
        assert_eq!(eq, ["x", "--exec=srv --token=***"]);
        let plain = strings(&["clawdbot", "daemon", "run", "--name", "bot"]);
        assert_eq!(mask_args(&plain), plain);
    }

    #[test]
    fn the_area_is_filled_exactly_and_ends_with_nul() {
        let args = strings(&["ab", "c"]);
        assert_eq!(area_bytes(&args, 8), b"ab\0c\0\0\0\0");
        assert_eq!(area_bytes(&args, 3), b"ab\0");
    }

    #[test]
    fn the_area_is_read_after_the_command_name() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "1000".into();
        fields[49 - 3] = "1040".into();
        let stat = format!("42 (a) b) c) {}", fields.join(" "));
        assert_eq!(arg_area(&stat), Some((1000, 1040)));
        assert_eq!(arg_area("42 (x) S 1"), None);
    }
}
