//! The daemon's [`WorkloadFactory`]: a launch with `--exec` supervises a model service,
//! any other runs the bot. The one place that names both workloads, so `daemon/` knows
//! neither.

use std::sync::Arc;

use crate::bot::Bot;
use crate::config::Config;
use futures_util::future::BoxFuture;

use crate::daemon::workload::{Workload, WorkloadFactory};
use crate::daemon::Launch;
use crate::exit::CliError;
use crate::model_service::ModelService;
use crate::paths::DaemonPaths;

/// The workloads this binary runs.
pub(crate) struct Workloads;

impl WorkloadFactory for Workloads {
    fn start<'a>(
        &'a self,
        paths: &'a DaemonPaths,
        launch: &'a Launch,
        config: Option<Config>,
    ) -> BoxFuture<'a, Result<Arc<dyn Workload>, CliError>> {
        Box::pin(async move {
            match &launch.exec {
                Some(cmd) => {
                    let service =
                        ModelService::start(&launch.name, cmd, launch.health_url.clone()).await?;
                    let service = if runs_our_simulator(cmd) {
                        service.labelled("sim")
                    } else {
                        service
                    };
                    Ok(Arc::new(service) as Arc<dyn Workload>)
                }
                None => {
                    let no_config = || CliError::usage("a bot needs a config file");
                    let config = config.ok_or_else(no_config)?;
                    let config_path = launch.config.clone().ok_or_else(no_config)?;
                    let bot = Bot::start(config, config_path, paths.clone()).await?;
                    Ok(Arc::new(bot) as Arc<dyn Workload>)
                }
            }
        })
    }
}

/// Whether `--exec` runs this program's `sim serve` (as `quickstart` starts its simulator):
/// such a daemon is the DingTalk simulator, not a model gateway.
fn runs_our_simulator(cmd: &str) -> bool {
    let Ok(words) = crate::cmdline::split_words(cmd) else {
        return false;
    };
    let same_program = |word: &String| {
        let ours = std::env::current_exe().and_then(|e| e.canonicalize());
        let theirs = std::path::Path::new(word).canonicalize();
        matches!((ours, theirs), (Ok(a), Ok(b)) if a == b)
    };
    matches!(words.as_slice(), [program, sim, serve, ..]
        if sim == "sim" && serve == "serve" && same_program(program))
}
