//! The resolved settings of one daemon launch, remembered in the state folder so that
//! `restart` and `logs` know the config and log paths of the last start. The command line
//! turns flags into a [`Launch`] (`commands::launch`); the daemon only reads it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exit::CliError;
use crate::logging::LogTarget;
use crate::paths::{write_private, DaemonPaths};

/// Everything needed to run a daemon, with absolute paths.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Launch {
    pub(crate) name: String,
    /// The bot's config (for `--exec` model services: optional).
    pub(crate) config: Option<PathBuf>,
    /// Where the log goes (saved as the path, or `-` for stderr).
    pub(crate) log: LogTarget,
    /// A supervised command line instead of the bot.
    pub(crate) exec: Option<String>,
    pub(crate) health_url: Option<String>,
}

impl Launch {
    /// The last saved launch, if any and readable. Read only from a state folder that
    /// passes [`DaemonPaths::check_state_dir`]: a launch file another user could have
    /// written (it names a command to run) is never believed.
    pub(crate) fn load(paths: &DaemonPaths) -> Option<Launch> {
        if !matches!(paths.check_state_dir(), Ok(true)) {
            return None;
        }
        let bytes = crate::fsutil::read_nofollow(&paths.launch_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Saves this launch for later `restart` and `logs`.
    pub(crate) fn save(&self, paths: &DaemonPaths) -> Result<(), CliError> {
        paths.ensure_state_dir()?;
        let body = serde_json::to_vec_pretty(self).expect("launch settings serialize");
        Ok(write_private(&paths.launch_file(), &body)?)
    }

    /// The log to read for `logs`, even when the daemon never started.
    pub(crate) fn log_target(paths: &DaemonPaths) -> LogTarget {
        Launch::load(paths)
            .map(|l| l.log)
            .unwrap_or_else(|| LogTarget::File(paths.default_log.clone()))
    }
}
