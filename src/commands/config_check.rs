//! `clawdbot config check --config F`: exit 0 when the file loads, 2 with the reason when not.

use std::path::Path;

use serde_json::json;

use super::output::Output;
use crate::exit::{CmdResult, Code};

pub(crate) fn check(path: &Path, out: &Output) -> CmdResult {
    let config = crate::config::load(path)?;
    let mut warnings = crate::config::permission_warnings(path);
    warnings.extend(crate::config::deprecation_warnings(&config));
    for w in &warnings {
        out.note(&format!("warning: {w}"));
    }
    let models: Vec<&String> = config.models.keys().collect();
    out.result(
        json!({"config_path": path.display().to_string(), "models": models,
               "channel": config.channel.is_some(), "warnings": warnings}),
        &format!(
            "{}: ok ({} model(s), default {})",
            path.display(),
            models.len(),
            config.routing.defaults.model
        ),
    );
    Ok(Code::Ok)
}
