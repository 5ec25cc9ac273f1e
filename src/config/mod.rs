//! Loading and checking the config file.
//!
//! [`load`] reads YAML, expands `${VAR}` in string values, rejects unknown keys, checks
//! each value as it is read (URLs, addresses, send targets, levels, minimums: [`checks`],
//! reported with key path, line and column) and then checks references between sections
//! (a route naming a model that does not exist, a limit for an unknown model...). Every
//! error names the file; none shows a value that could be a secret.

mod bounds;
pub mod checks;
mod de;
mod env;
mod hints;
mod locate;
mod no_values;
mod schema;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use bounds::BoundsError;
pub use env::{escape, expand, ExpandError, Secret};
pub use schema::*;

/// A config file that cannot be used, with the path and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config {}: {problem}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub problem: ConfigProblem,
}

/// What is wrong with a config, with where: the key path and, for what the YAML loader
/// finds, the line and column. No message shows a value that could be a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error("{0}, not a regular file (only a regular file can be a config)")]
    NotRegular(&'static str),
    #[error("file is {0} bytes, over the 1 MiB limit")]
    TooLarge(u64),
    #[error("cannot read: not UTF-8 text (byte {0})")]
    NotUtf8(usize),
    #[error(transparent)]
    Bounds(#[from] bounds::BoundsError),
    /// serde_yaml's message as `line L, column C: key.path: problem`.
    #[error("{0}")]
    Yaml(String),
    /// A value that is wrong given the rest of the file (a route to an unknown model...),
    /// with the line and column of `key` when it could be found ([`locate`]).
    #[error("{}{key}: {problem}", at.map_or(String::new(), |(l, c)| format!("line {l}, column {c}: ")))]
    Invalid {
        key: String,
        problem: String,
        at: Option<(usize, usize)>,
    },
}

impl ConfigProblem {
    /// The same problem without the file's values: the loader quotes a value of the wrong
    /// type as it is (`invalid type: string "hunter2"`), which [`no_values`] replaces by its
    /// type; URLs left in the text (a key, a check's words) are redacted too
    /// ([`crate::redact_url`]: a URL may hold a password or a token), and control
    /// characters a key may hold (escape sequences, newlines that would fake more error
    /// lines) are shown escaped.
    fn redacted(self) -> ConfigProblem {
        let redact = |text: String| {
            let text =
                crate::redact_url::redact_url(&no_values::without_values(&text)).into_owned();
            crate::control_chars::escape_controls(&text).into_owned()
        };
        match self {
            ConfigProblem::Yaml(message) => ConfigProblem::Yaml(redact(message)),
            ConfigProblem::Invalid { key, problem, at } => ConfigProblem::Invalid {
                key: redact(key),
                problem: redact(problem),
                at,
            },
            other => other,
        }
    }

    fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigProblem {
        ConfigProblem::Invalid {
            key: key.into(),
            problem: problem.into(),
            at: None,
        }
    }
}

/// Largest config file accepted; anything bigger is certainly not a config.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    read_and_parse(path).map_err(|problem| ConfigError {
        path: path.to_path_buf(),
        problem,
    })
}

fn read_and_parse(path: &Path) -> Result<Config, ConfigProblem> {
    parse(&read_text(path)?)
}

/// The text of the config file at `path`, read safely: a regular file only (a FIFO or a
/// device is refused, never waited on or read without end), at most [`MAX_CONFIG_BYTES`],
/// UTF-8. Everything that reads a config file (the loader, shell completion) goes here.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigProblem> {
    // Opened without waiting (`O_NONBLOCK`: a FIFO with no writer would block the open
    // forever), then checked on the descriptor: only a regular file is a config, so a
    // FIFO or device (`/dev/zero`) is refused by name instead of read without end.
    let file = open_config(path).map_err(ConfigProblem::Read)?;
    let meta = file.metadata().map_err(ConfigProblem::Read)?;
    if !meta.is_file() {
        return Err(ConfigProblem::NotRegular(crate::fsutil::kind_of(&meta)));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigProblem::TooLarge(meta.len()));
    }
    // Read at most one byte past the cap: a file that grew since is refused.
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ConfigProblem::Read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigProblem::TooLarge(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| ConfigProblem::NotUtf8(e.utf8_error().valid_up_to()))
}

/// Opens a config for reading without blocking on a FIFO. A link to a config is
/// followed (configs are read, never written, here).
fn open_config(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// Parses and checks config text (no file involved). Nesting depth and alias expansion
/// are bounded before the document is deserialized ([`bounds`]).
pub fn parse(text: &str) -> Result<Config, ConfigProblem> {
    parse_unredacted(text).map_err(ConfigProblem::redacted)
}

fn parse_unredacted(text: &str) -> Result<Config, ConfigProblem> {
    bounds::check(text)?;
    let config: Config = serde_yaml::from_str(text)
        .map_err(|e| ConfigProblem::Yaml(with_all_unset_variables(yaml_error(e, text), text)))?;
    check_references(&config).map_err(|problem| match problem {
        ConfigProblem::Invalid { key, problem, .. } => ConfigProblem::Invalid {
            at: locate::locate_or_parent(text, &key),
            key,
            problem,
        },
        other => other,
    })?;
    Ok(config)
}

/// A loader error as `line L, column C: key.path: problem` (the location first, so it
/// does not read as part of the problem); errors without a location stay as they are.
/// A [`hints`] hint (tab indentation, "did you mean") is added when one applies.
fn yaml_error(e: serde_yaml::Error, doc: &str) -> String {
    // A document that is not a mapping at all: name what a config is.
    let text = e.to_string().replace(
        "expected struct Config",
        "expected a mapping of config keys (models:, channel:, ...)",
    );
    let Some(at) = e.location() else {
        return hints::with_hint(text, doc, None);
    };
    let suffix = format!(" at line {} column {}", at.line(), at.column());
    let message = match text.strip_suffix(&suffix) {
        Some(problem) => format!("line {}, column {}: {problem}", at.line(), at.column()),
        None => text,
    };
    hints::with_hint(message, doc, Some(at.index()))
}

/// `message` plus every environment variable the document needs that is not set (the
/// loader stops at its first error; a second pass collects them all, so an operator fixes
/// them in one go). Names already in `message` are not repeated.
fn with_all_unset_variables(message: String, text: &str) -> String {
    let (_, names) = env::collect_unset(|| serde_yaml::from_str::<Config>(text));
    if names
        .iter()
        .all(|n| message.contains(&format!("variable {n} ")))
    {
        return message;
    }
    format!(
        "{message}; environment variables not set: {} (set them, or write ${{NAME:-}} where \
         empty is fine)",
        names.join(", ")
    )
}

/// Warnings that do not stop the daemon: a file holding secrets readable by others.
pub fn permission_warnings(path: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let has_inline_secret = text.lines().any(|l| {
            let l = l.trim_start();
            // `$${` is an escaped literal, not a reference to a variable.
            (l.starts_with("client_secret:") || l.starts_with("api_key:"))
                && !l.replace("$${", "").contains("${")
        });
        if mode & 0o077 != 0 && has_inline_secret {
            warnings.push(format!(
                "config {} holds secrets and is readable by others (mode {:o}): run chmod 600 {}, \
                 or use ${{ENV}} references",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    warnings
}

/// Warnings about keys that still load but should go, each naming the key and what to
/// do instead (no values: they may hold credentials).
pub fn deprecation_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let dingtalk = config.channel.as_ref().map(|c| &c.dingtalk);
    if dingtalk.is_some_and(|d| d.oapi_base.is_some()) {
        warnings.push(
            "channel.dingtalk.oapi_base is deprecated: the bot makes no call on DingTalk's old \
             API host. Its origin is still allowed for session webhooks; list it in \
             channel.dingtalk.webhook_hosts instead (https://oapi.dingtalk.com needs no \
             entry) and remove oapi_base"
                .to_string(),
        );
    }
    warnings
}

/// A non-loopback ops address needs `ops.allow_remote: true` (the page and metrics show
/// figures an operator may not want on the network).
fn check_ops(ops: Option<&OpsConfig>) -> Result<(), ConfigProblem> {
    let Some(ops) = ops else { return Ok(()) };
    let addr: std::net::SocketAddr = ops.listen.trim().parse().map_err(|_| {
        ConfigProblem::invalid("ops.listen", checks::InvalidValue::SocketAddr.to_string())
    })?;
    for (i, host) in ops.allowed_hosts.iter().enumerate() {
        let name = host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n);
        let port_ok = host
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_ok());
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !name_ok || !port_ok {
            return Err(ConfigProblem::invalid(
                format!("ops.allowed_hosts[{i}]"),
                format!("{host:?} is not a host name or name:port"),
            ));
        }
    }
    if !addr.ip().is_loopback() && !ops.allow_remote {
        return Err(ConfigProblem::invalid(
            "ops.listen",
            format!(
                "{addr} is not a loopback address; set ops.allow_remote: true to serve \
                 the ops endpoint beyond this host, or listen on 127.0.0.1"
            ),
        ));
    }
    Ok(())
}

/// `state:`: a `redis:` section exactly when the backend is Redis, with a `redis://` URL
/// (checked without ever quoting it: it may hold a password).
fn check_state(state: &StateConfig) -> Result<(), ConfigProblem> {
    match (state.backend, &state.redis) {
        (StateBackend::Local, None) => Ok(()),
        (StateBackend::Local, Some(_)) => Err(ConfigProblem::invalid(
            "state.redis",
            "is only used with `backend: redis` (the backend is local)",
        )),
        (StateBackend::Redis, None) => Err(ConfigProblem::invalid(
            "state.redis",
            "missing: `backend: redis` needs `redis: {url: \"redis://HOST:6379/0\"}`",
        )),
        (StateBackend::Redis, Some(r)) => {
            let url = r.url.expose();
            if !url.starts_with("redis://") {
                return Err(ConfigProblem::invalid(
                    "state.redis.url",
                    "must start with redis:// (rediss:// and unix sockets are not supported)",
                ));
            }
            redis::IntoConnectionInfo::into_connection_info(url).map_err(|_| {
                ConfigProblem::invalid(
                    "state.redis.url",
                    "is not a valid redis://[user:password@]host[:port][/db] URL",
                )
            })?;
            Ok(())
        }
    }
}

fn check_references(c: &Config) -> Result<(), ConfigProblem> {
    check_ops(c.ops.as_ref())?;
    check_state(&c.state)?;
    if c.models.is_empty() {
        return Err(ConfigProblem::invalid(
            "models",
            "at least one model is needed",
        ));
    }
    // First: the messages below quote model names raw.
    for name in c.models.keys() {
        checks::model_name(name).map_err(|e| {
            ConfigProblem::invalid("models", format!("the model name {name:?} {e}"))
        })?;
    }
    let known = |name: &str| c.models.contains_key(name);
    let names = || c.models.keys().cloned().collect::<Vec<_>>().join(", ");
    if !known(&c.routing.defaults.model) {
        return Err(ConfigProblem::invalid(
            "routing.defaults.model",
            format!(
                "{:?} is not a model under models: (known: {})",
                c.routing.defaults.model,
                names()
            ),
        ));
    }
    for (i, rule) in c.routing.rules.iter().enumerate() {
        if !known(&rule.model) {
            return Err(ConfigProblem::invalid(
                format!("routing.rules[{i}].model"),
                format!(
                    "{:?} is not a model under models: (known: {})",
                    rule.model,
                    names()
                ),
            ));
        }
    }
    for name in c.limits.max_concurrency_per_model.keys() {
        if !known(name) {
            return Err(ConfigProblem::invalid(
                format!("limits.max_concurrency_per_model.{name}"),
                format!("no model named {name:?} (known: {})", names()),
            ));
        }
    }
    for (name, m) in &c.models {
        let at = format!("models.{name}");
        let model_limit = c
            .limits
            .max_concurrency_per_model
            .get(name)
            .copied()
            .unwrap_or(1);
        for (i, replica) in m.replicas.iter().enumerate() {
            if let Some(own) = replica.max_concurrency.filter(|own| *own > model_limit) {
                return Err(ConfigProblem::invalid(
                    format!("{at}.replicas[{i}].max_concurrency"),
                    format!(
                        "{own} is above the model's limit of {model_limit} \
                         (limits.max_concurrency_per_model.{name}); a replica never gets more \
                         than its model"
                    ),
                ));
            }
        }
        for (key, v) in [
            ("connect_timeout_ms", m.connect_timeout_ms),
            ("first_token_timeout_ms", m.first_token_timeout_ms),
            ("idle_timeout_ms", m.idle_timeout_ms),
        ] {
            if let Some(v) = v {
                if v == 0 || v > m.timeout_ms {
                    return Err(ConfigProblem::invalid(
                        format!("{at}.{key}"),
                        format!("{v} must be between 1 and timeout_ms ({})", m.timeout_ms),
                    ));
                }
            }
        }
        if let Some(fb) = &m.fallback {
            if fb == name {
                return Err(ConfigProblem::invalid(
                    format!("{at}.fallback"),
                    "a model cannot fall back to itself",
                ));
            }
            if !known(fb) {
                return Err(ConfigProblem::invalid(
                    format!("{at}.fallback"),
                    format!("no model named {fb:?} (known: {})", names()),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
models:
  local_chat:
    kind: openai_compatible
    base_url: "http://127.0.0.1:8000/v1"
    api_key: ${CLAWDBOT_TEST_UNSET_KEY:-none}
    model: "local-chat"
    timeout_ms: 12000
routing:
  defaults:
    model: local_chat
limits:
  max_concurrency_per_model:
    local_chat: 4
"#;

    #[test]
    fn seed_shape_loads() {
        let c = parse(SEED).unwrap();
        assert_eq!(c.models["local_chat"].timeout_ms, 12000);
        assert_eq!(c.limits.max_concurrency_per_model["local_chat"], 4);
        assert_eq!(
            c.models["local_chat"].api_key.as_ref().unwrap().expose(),
            "none"
        );
    }

    #[test]
    fn the_state_backend_is_local_unless_redis_is_configured() {
        assert_eq!(parse(SEED).unwrap().state.backend, StateBackend::Local);
        let redis = format!(
            "{SEED}state:\n  backend: redis\n  redis:\n    url: \"redis://u:pw@127.0.0.1:6379/0\"\n"
        );
        let c = parse(&redis).unwrap();
        let r = c.state.redis.unwrap();
        assert_eq!((r.key_prefix.as_str(), r.lease_ms), ("clawdbot", 10_000));
        for (text, key) in [
            (format!("{SEED}state:\n  backend: redis\n"), "state.redis"),
            (
                redis.replace("redis://u:pw@", "http://u:pw@"),
                "state.redis.url",
            ),
            (
                redis.replace("backend: redis", "backend: local"),
                "state.redis",
            ),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(key) && !e.contains("pw@"), "{e}");
            assert!(e.contains("line "), "names where: {e}");
        }
    }

    #[test]
    fn a_key_with_control_characters_is_shown_escaped() {
        let text = format!("{SEED}\"\\e[31mRED\\nfake ok\\a\": 1\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(!e.contains(['\u{1b}', '\n', '\u{7}']), "{e:?}");
        assert!(e.contains("RED"), "{e}");
    }

    #[test]
    fn unknown_keys_report_line_and_column() {
        let text = SEED.replace("timeout_ms: 12000", "timeout_ms: 12000\n    timeuot: 5");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("timeuot") && e.contains("line 9"), "{e}");
    }

    #[test]
    fn every_unset_variable_is_named_at_once() {
        let text = SEED
            .replace(":-none", "")
            .replace("\"local-chat\"", "${CLAWDBOT_TEST_UNSET_MODEL}")
            .replace("8000/v1", "${CLAWDBOT_TEST_UNSET_PORT}/v1");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("line 5"), "the first keeps its place: {e}");
        for name in ["UNSET_KEY", "UNSET_MODEL", "UNSET_PORT"] {
            assert!(e.contains(&format!("CLAWDBOT_TEST_{name}")), "{e}");
        }
        let e = parse(&SEED.replace(":-none", "")).unwrap_err().to_string();
        assert_eq!(e.matches("UNSET_KEY").count(), 1, "no repeat: {e}");
    }

    #[test]
    fn tabs_and_misspelt_keys_get_hints() {
        let e = parse(&SEED.replace("    timeout_ms", "\ttimeout_ms"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 8 is indented with a tab"), "{e}");
        let e = parse(&SEED.replace("timeout_ms:", "timeuot_ms:"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `timeout_ms`?"), "{e}");
    }

    #[test]
    fn dangling_references_are_named() {
        let e = parse(&SEED.replace("model: local_chat", "model: nope"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("routing.defaults.model") && e.contains("nope"),
            "{e}"
        );
        let e = parse(&SEED.replace("local_chat: 4", "other: 4"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_concurrency_per_model.other"), "{e}");
    }

    #[test]
    fn redelivery_settings_are_bounded() {
        let with = |extra: &str| parse(&format!("{SEED}reply:\n{extra}"));
        let ok = with("  redelivery_attempts: 20\n  redelivery_delay_ms: 60000\n").unwrap();
        assert_eq!(ok.reply.redelivery_attempts, 20);
        let e = with("  redelivery_attempts: 21\n").unwrap_err().to_string();
        assert!(
            e.contains("reply.redelivery_attempts") && e.contains("maximum of 20"),
            "{e}"
        );
        let e = with("  redelivery_delay_ms: 60001\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("reply.redelivery_delay_ms") && e.contains("maximum of 60000"),
            "{e}"
        );
        let e = with("  redelivery_delay_ms: 5\n").unwrap_err().to_string();
        assert!(
            e.contains("redelivery_delay_ms") && e.contains("minimum of 10"),
            "{e}"
        );
        let e = with("  redelivery_attempts: -1\n").unwrap_err().to_string();
        assert!(e.contains("redelivery_attempts"), "{e}");
    }

    /// A negative or huge `max_waiting` is refused in words, naming the key (serde said
    /// "invalid type: an integer, expected usize" for -1).
    #[test]
    fn queue_depth_is_bounded() {
        let with = |v: &str| parse(&format!("{SEED}  queue:\n    max_waiting: {v}\n"));
        assert_eq!(with("0").unwrap().limits.queue.max_waiting, 0);
        for (v, says) in [
            ("-1", "minimum of 0"),
            ("1000001", "maximum of 1000000"),
            ("1180591620717411303424", "maximum of 1000000"),
            ("-1180591620717411303424", "minimum of 0"),
        ] {
            let e = with(v).unwrap_err().to_string();
            assert!(
                e.contains("limits.queue.max_waiting") && e.contains(says),
                "{v}: {e}"
            );
        }
    }

    /// Issue 14: `base_url` alone stays one replica; `replicas:` lists several; both, or
    /// neither, is an error naming the model and its line; a replica's own limit is
    /// bounded by the model's.
    #[test]
    fn model_replicas_shape_and_errors() {
        let one = parse(SEED).unwrap();
        let endpoints = one.models["local_chat"].endpoints();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].base_url, "http://127.0.0.1:8000/v1");
        assert_eq!(endpoints[0].max_concurrency, None);
        let replicas = "replicas:\n      - base_url: http://127.0.0.1:8001/v1\n        \
                        max_concurrency: 2\n      - base_url: http://127.0.0.1:8002/v1";
        let two = parse(&SEED.replace("base_url: \"http://127.0.0.1:8000/v1\"", replicas)).unwrap();
        let endpoints = two.models["local_chat"].endpoints();
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[0].max_concurrency, Some(2));
        assert_eq!(endpoints[1].base_url, "http://127.0.0.1:8002/v1");

        let both = SEED.replace(
            "    model: \"local-chat\"",
            &format!("    {replicas}\n    model: \"local-chat\""),
        );
        let e = parse(&both).unwrap_err().to_string();
        assert!(
            e.contains("line 4")
                && e.contains("models.local_chat")
                && e.contains("base_url and replicas are both set"),
            "{e}"
        );
        // The seed with its `base_url` line replaced by `runtimes`: the error text.
        let refused = |runtimes: &str| {
            parse(&SEED.replace("base_url: \"http://127.0.0.1:8000/v1\"", runtimes))
                .unwrap_err()
                .to_string()
        };
        for (runtimes, wanted) in [
            (
                "replicas: []".to_string(),
                ["models.local_chat", "neither base_url nor replicas"],
            ),
            (
                replicas.replace("max_concurrency: 2", "max_concurrency: 5"),
                [
                    "line 7, column 9: models.local_chat.replicas[0].max_concurrency",
                    "above the model's limit of 4",
                ],
            ),
            (
                replicas.replace("max_concurrency: 2", "max_concurrency: 0"),
                ["replicas[0].max_concurrency", "minimum of 1"],
            ),
            (
                replicas.replace("8002/v1", "8002/v1\n        colour: red"),
                ["colour", "line 9"],
            ),
        ] {
            let e = refused(&runtimes);
            assert!(wanted.iter().all(|w| e.contains(w)), "{wanted:?}: {e}");
        }
    }

    /// Issue 14 red team: a limit near `usize::MAX` passed `config check` and panicked the
    /// daemon at start (an overflowing sum). Limits are bounded at 100 000, the error
    /// naming the key and its line.
    #[test]
    fn concurrency_limits_are_bounded() {
        let huge = SEED.replace("    local_chat: 4", "    local_chat: 18446744073709551615");
        let e = parse(&huge).unwrap_err().to_string();
        assert!(
            e.contains("limits.max_concurrency_per_model.local_chat")
                && e.contains("line ")
                && e.contains("maximum of 100000"),
            "{e}"
        );
        let zero = SEED.replace("    local_chat: 4", "    local_chat: 0");
        let e = parse(&zero).unwrap_err().to_string();
        assert!(
            e.contains("local_chat") && e.contains("minimum of 1"),
            "{e}"
        );
        let top = SEED.replace("    local_chat: 4", "    local_chat: 100000");
        assert_eq!(
            parse(&top).unwrap().limits.max_concurrency_per_model["local_chat"],
            100_000
        );
        let replica = SEED.replace(
            "base_url: \"http://127.0.0.1:8000/v1\"",
            "replicas:\n      - base_url: http://127.0.0.1:8001/v1\n        max_concurrency: 18446744073709551615",
        );
        let e = parse(&replica).unwrap_err().to_string();
        assert!(
            e.contains("replicas[0].max_concurrency") && e.contains("maximum of 100000"),
            "{e}"
        );
    }

    /// Issue 14 red team: the loader quotes a value of the wrong type as it is, and a
    /// replica URL may hold a password or token: no shape of mistake shows them.
    #[test]
    fn config_errors_never_show_a_url_secret() {
        let url = "http://u:s3cretSTR@127.0.0.1:18002/v1?token=T0KEN#frag";
        for runtimes in [
            // A string where a replica map belongs.
            format!("replicas:\n      - \"{url}\""),
            format!("replicas: \"{url}\""),
            // A list where the URL string belongs.
            format!("base_url: [\"{url}\"]"),
            format!("replicas:\n      - base_url: [\"{url}\", 2]"),
            // A map where the URL string belongs.
            format!("base_url: {{\"{url}\": 1}}"),
            // A URL as an unknown key.
            format!("replicas:\n      - base_url: http://127.0.0.1:1/v1\n        \"{url}\": 1"),
        ] {
            let e = parse(&SEED.replace("base_url: \"http://127.0.0.1:8000/v1\"", &runtimes))
                .unwrap_err()
                .to_string();
            for secret in ["s3cretSTR", "T0KEN"] {
                assert!(!e.contains(secret), "{runtimes}: {e}");
            }
            assert!(!e.contains("ReplicaConfig"), "no internal type name: {e}");
        }
        let e = parse(&SEED.replace(
            "base_url: \"http://127.0.0.1:8000/v1\"",
            "replicas:\n      - \"http://127.0.0.1:8001/v1\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("a map with base_url"), "{e}");
    }

    #[test]
    fn missing_env_var_is_named_with_location() {
        let e = parse(&SEED.replace(":-none", "")).unwrap_err().to_string();
        assert!(e.contains("CLAWDBOT_TEST_UNSET_KEY is not set"), "{e}");
        assert!(e.contains("line"), "{e}");
    }
}
