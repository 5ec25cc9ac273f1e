//! `daemon logs [--follow] [--lines N]`: prints the log, following rotation.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use crate::cli::LogsArgs;
use crate::daemon::Launch;
use crate::exit::{CliError, CmdResult, Code};
use crate::paths::{io_error, Layout};

use super::daemon_start::last_lines;

pub fn logs(layout: &Layout, args: &LogsArgs) -> CmdResult {
    let paths = layout.daemon(&args.name)?;
    let path = Launch::log_path(&paths);
    if !path.exists() && !args.follow {
        return Err(CliError::failure(format!(
            "no log file at {} (has {} ever started?)",
            path.display(),
            args.name
        )));
    }
    let mut stdout = std::io::stdout().lock();
    for line in last_lines(&path, args.lines) {
        if writeln!(stdout, "{line}").is_err() {
            return Ok(Code::Ok);
        }
    }
    let _ = stdout.flush();
    if args.follow {
        follow(&path)?;
    }
    Ok(Code::Ok)
}

/// Prints what is appended to `path`, reopening it when it is rotated or truncated.
fn follow(path: &Path) -> Result<(), CliError> {
    let open = |p: &Path| -> Option<(File, u64)> {
        let mut f = File::open(p).ok()?;
        f.seek(SeekFrom::End(0)).ok()?;
        let ino = f.metadata().ok()?.ino();
        Some((f, ino))
    };
    let mut current = open(path);
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout = std::io::stdout();
    loop {
        if let Some((file, ino)) = current.as_mut() {
            loop {
                let n = file.read(&mut buf).map_err(|e| io_error("read", path, e))?;
                if n == 0 {
                    break;
                }
                if stdout.write_all(&buf[..n]).is_err() {
                    return Ok(());
                }
            }
            let _ = stdout.flush();
            let rotated = std::fs::metadata(path)
                .map(|m| m.ino() != *ino)
                .unwrap_or(false);
            if rotated {
                current = File::open(path)
                    .ok()
                    .and_then(|f| f.metadata().ok().map(|m| (f, m.ino())));
            }
        } else {
            current = File::open(path)
                .ok()
                .and_then(|f| f.metadata().ok().map(|m| (f, m.ino())));
        }
        sleep(Duration::from_millis(200));
    }
}
