//! Health checks, in the order an operator troubleshoots: channel, each model endpoint,
//! concurrency saturation, prompt sizes. Used by the daemon (`healthcheck --name`) and
//! without a daemon (`healthcheck --config`, `onboard`).

use std::time::Duration;

use super::Shared;
use crate::config::Config;
use crate::ipc::proto::{Check, CheckStatus, HealthReport};
use crate::model::endpoint_url::endpoint_url;
use crate::model::router::ReplicaProbe;
use crate::model::ModelRouter;
use crate::redact_url::redact_url;
use crate::status::ModelReport;

fn check(
    name: impl Into<String>,
    status: CheckStatus,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        name: name.into(),
        status,
        detail: detail.into(),
        fix,
    }
}

/// One PING with the configured Redis URL; the detail names `host:port`, never the URL.
async fn redis_check(cfg: &crate::config::RedisConfig, timeout: Duration) -> Check {
    match crate::state::redis::ping(cfg, timeout).await {
        Ok(server) => check(
            "redis",
            CheckStatus::Ok,
            format!("{server} answers PING"),
            None,
        ),
        Err(e) => check(
            "redis",
            CheckStatus::Fail,
            e.to_string(),
            Some("start Redis, or fix state.redis.url (host, port, password)".into()),
        ),
    }
}

/// The Redis settings when `state.backend: redis`.
fn shared_redis(config: &Config) -> Option<&crate::config::RedisConfig> {
    match (&config.state.backend, &config.state.redis) {
        (crate::config::StateBackend::Redis, Some(cfg)) => Some(cfg),
        _ => None,
    }
}

/// Live checks of a running bot.
pub(crate) async fn daemon_checks(shared: &Shared, timeout: Duration) -> HealthReport {
    let mut checks = Vec::new();
    if let Some(cfg) = shared_redis(&shared.config()) {
        checks.push(redis_check(cfg, timeout).await);
    }
    match &shared.channel {
        Some(channel) => {
            let result = tokio::time::timeout(timeout, channel.check()).await;
            checks.push(match result {
                Ok(Ok(detail)) => check("channel", CheckStatus::Ok, detail, None),
                Ok(Err(reason)) => check(
                    "channel",
                    CheckStatus::Fail,
                    reason.to_string(),
                    Some("see `clawdbot daemon logs` for the connection errors".into()),
                ),
                Err(_) => check(
                    "channel",
                    CheckStatus::Fail,
                    "the channel check timed out",
                    None,
                ),
            });
        }
        None => checks.push(check(
            "channel",
            CheckStatus::Fail,
            "no channel configured: the bot receives nothing",
            Some("add a channel.dingtalk section to the config".into()),
        )),
    }
    checks.extend(
        model_checks(&shared.router, timeout)
            .await
            .into_iter()
            .map(|(check, _)| check),
    );
    let reports = shared.router.reports();
    checks.extend(reports.iter().map(saturation_check));
    checks.extend(reports.iter().map(prompt_check));
    shown(checks)
}

/// The report as it may be shown: URL passwords masked in every detail and fix (the
/// checks quote configured URLs and errors that may quote them).
fn shown(checks: Vec<Check>) -> HealthReport {
    HealthReport {
        checks: checks.into_iter().map(shown_check).collect(),
    }
}

fn shown_check(mut c: Check) -> Check {
    c.detail = redact_url(&c.detail).into_owned();
    c.fix = c.fix.as_deref().map(|f| redact_url(f).into_owned());
    c
}

/// A pre-flight check starting or ending: the CLI prints these while the checks run, so a
/// model that never answers does not leave the terminal blank for the whole timeout.
pub(crate) enum CheckProgress<'a> {
    /// `name` is the check's name as in the report; `what` says what it waits for.
    Started { name: &'a str, what: String },
    /// The check as it will be reported (URL passwords masked).
    Finished(&'a Check),
}

/// Where [`preflight_checks`] reports progress.
pub(crate) type ProgressSink<'a> = &'a (dyn Fn(CheckProgress<'_>) + Sync);

fn finished(progress: ProgressSink<'_>, check: Check) -> Check {
    let check = shown_check(check);
    progress(CheckProgress::Finished(&check));
    check
}

/// Checks that need no daemon: model endpoints and DingTalk credentials. Each check is
/// reported to `progress` when it starts and when it ends.
pub(crate) async fn preflight_checks(
    config: &Config,
    timeout: Duration,
    progress: ProgressSink<'_>,
) -> HealthReport {
    let mut checks = Vec::new();
    let within = timeout.as_secs();
    if let Some(cfg) = shared_redis(config) {
        progress(CheckProgress::Started {
            name: "redis",
            what: format!("PING (up to {within} s)"),
        });
        checks.push(finished(progress, redis_check(cfg, timeout).await));
    }
    if let Some(ch) = &config.channel {
        progress(CheckProgress::Started {
            name: "dingtalk credentials",
            what: format!(
                "asking {} for an access token (up to {within} s)",
                redact_url(&ch.dingtalk.api_base)
            ),
        });
        let credentials = credentials_check(&ch.dingtalk, timeout).await;
        checks.push(finished(progress, credentials));
    } else {
        let no_channel = check(
            "channel",
            CheckStatus::Warn,
            "no channel section: `daemon start` will run a bot that receives nothing",
            Some("run `clawdbot onboard --channel dingtalk --config FILE`".into()),
        );
        checks.push(finished(progress, no_channel));
    }
    let router = ModelRouter::new(config);
    for (name, cfg) in &config.models {
        let endpoints = cfg.endpoints();
        for (i, replica) in endpoints.iter().enumerate() {
            progress(CheckProgress::Started {
                name: &model_check_name(name, (endpoints.len() > 1).then_some(i)),
                what: format!(
                    "{} lists its models (up to {within} s)",
                    redact_url(&endpoint_url(&replica.base_url, "models"))
                ),
            });
        }
    }
    for (mut check, probe) in model_checks(&router, timeout).await {
        let cfg = config.models.get(&probe.model);
        if let (Some(cfg), CheckStatus::Ok) = (cfg, check.status) {
            progress(CheckProgress::Started {
                name: &check.name,
                what: format!("one tiny completion of {:?} (up to {within} s)", cfg.model),
            });
            completion_check(&mut check, &probe.model, cfg, &probe.base_url, timeout).await;
        }
        checks.push(finished(progress, check));
    }
    shown(checks)
}

/// `max_tokens` of the one tiny completion `onboard` and the pre-flight make.
const PROBE_MAX_TOKENS: u32 = 8;
/// The probe's answer is read no further than this (a server ignoring max_tokens).
const PROBE_MAX_ANSWER_CHARS: usize = 1_000;

/// After `/models` answered: ONE tiny completion, so a wrong model name, a wrong API key
/// or a server that lists models but cannot answer fails here and not on the first
/// user. Updates `check` in place (the prompt is fixed; no user text is involved).
async fn completion_check(
    check: &mut Check,
    name: &str,
    cfg: &crate::config::ModelConfig,
    base_url: &str,
    timeout: Duration,
) {
    let mut cfg = cfg.clone();
    cfg.max_tokens = Some(PROBE_MAX_TOKENS);
    let client = match crate::model::client::ModelClient::new(&cfg, base_url) {
        Ok(c) => c,
        Err(e) => {
            check.status = CheckStatus::Fail;
            check.detail = e.to_string();
            return;
        }
    };
    let messages = [crate::model::ChatMessage::user("Reply with the word: ok")];
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let url = endpoint_url(base_url, "chat/completions");
    match client
        .complete(&messages, deadline, PROBE_MAX_ANSWER_CHARS, &mut |_| {})
        .await
    {
        // A few tokens may hold no visible text (a reasoning model): the server answered.
        Ok(_) | Err(crate::model::ModelError::EmptyAnswer) => {
            check.detail.push_str(&format!(
                "; a tiny completion (max_tokens {PROBE_MAX_TOKENS}) of {:?} answered in {} ms",
                cfg.model,
                started.elapsed().as_millis()
            ));
        }
        Err(e) => {
            check.status = CheckStatus::Fail;
            check.detail =
                format!("{url}: a tiny completion (max_tokens {PROBE_MAX_TOKENS}) failed: {e}");
            check.fix = Some(format!(
                "check that models.{name}.model ({:?}) is a model the server serves and that models.{name}.api_key is right; try: curl {}",
                cfg.model,
                endpoint_url(base_url, "models")
            ));
        }
    }
}

async fn credentials_check(cfg: &crate::config::DingTalkConfig, timeout: Duration) -> Check {
    let tokens = crate::dingtalk::token::TokenCache::new(
        crate::dingtalk::http::client(),
        &cfg.api_base,
        &cfg.client_id,
        cfg.client_secret.expose(),
    );
    match tokio::time::timeout(timeout, tokens.get()).await {
        Ok(Ok(_)) => check("dingtalk credentials", CheckStatus::Ok, format!("access token obtained from {}", cfg.api_base), None),
        Ok(Err(e)) => check(
            "dingtalk credentials",
            CheckStatus::Fail,
            format!("no access token from {}: {e}", cfg.api_base),
            Some("copy Client ID and Client Secret from the app's Credentials page into channel.dingtalk".into()),
        ),
        Err(_) => check(
            "dingtalk credentials",
            CheckStatus::Fail,
            format!("{} did not answer within {} s", cfg.api_base, timeout.as_secs()),
            Some("check network access to channel.dingtalk.api_base".into()),
        ),
    }
}

/// The check's name: `model NAME`, or `model NAME replica I` for `models.NAME.replicas[I]`.
fn model_check_name(model: &str, replica: Option<usize>) -> String {
    match replica {
        Some(i) => format!("model {model} replica {i}"),
        None => format!("model {model}"),
    }
}

/// One check per replica of every model (one line each), with the probe it came from.
async fn model_checks(router: &ModelRouter, timeout: Duration) -> Vec<(Check, ReplicaProbe)> {
    router
        .check(timeout)
        .await
        .into_iter()
        .map(|probe| {
            let name = model_check_name(&probe.model, probe.replica);
            let base = &probe.base_url;
            let key = match probe.replica {
                Some(i) => format!("models.{}.replicas[{i}].base_url", probe.model),
                None => format!("models.{}.base_url", probe.model),
            };
            let check = match &probe.result {
                Ok(ms) if probe.chat_failures_in_a_row == 0 => {
                    check(name, CheckStatus::Ok, format!("{base} answered in {ms} ms"), None)
                }
                // The probe alone would say ok, but the turns saw chat fail there.
                Ok(ms) => check(
                    name,
                    CheckStatus::Warn,
                    format!(
                        "{base}: ok (probe, {ms} ms) but {} chat failures in a row{}",
                        probe.chat_failures_in_a_row,
                        if probe.cooling_down { ", cooling down" } else { "" }
                    ),
                    Some(format!(
                        "the runtime answers /models but not chat: check that it serves the model, its key, and its log; see {key}"
                    )),
                ),
                Err(reason) => check(
                    name,
                    CheckStatus::Fail,
                    format!("{base}: {reason}"),
                    Some(format!(
                        "start the model server (or the managed model service) or fix {key}; try: curl {}",
                        endpoint_url(base, "models")
                    )),
                ),
            };
            (check, probe)
        })
        .collect()
}

fn saturation_check(m: &ModelReport) -> Check {
    let name = format!("load {}", m.name);
    let detail = format!(
        "{}/{} in flight, {} queued; served {}, timeouts {}, busy replies from its queue {}",
        m.in_flight, m.limit, m.queued, m.served, m.timeouts, m.busy_rejections
    );
    let saturated = m.queued > 0 && m.in_flight >= m.limit;
    if m.busy_rejections > 0 || m.timeouts > 0 || saturated {
        check(
            name,
            CheckStatus::Warn,
            detail,
            Some(format!(
                "if the server has free slots raise limits.max_concurrency_per_model.{}; else add a fallback model or a faster one",
                m.name
            )),
        )
    } else {
        check(name, CheckStatus::Ok, detail, None)
    }
}

fn prompt_check(m: &ModelReport) -> Check {
    let name = format!("prompts {}", m.name);
    let detail = format!(
        "largest prompt {} of {} chars",
        m.max_prompt_chars_seen, m.prompt_budget_chars
    );
    if m.prompt_budget_chars > 0 && m.max_prompt_chars_seen * 10 >= m.prompt_budget_chars * 9 {
        check(
            name,
            CheckStatus::Warn,
            detail,
            Some("prompts are being trimmed: raise prompt.max_chars if the model's context allows, or lower memory.max_turns".into()),
        )
    } else {
        check(name, CheckStatus::Ok, detail, None)
    }
}
