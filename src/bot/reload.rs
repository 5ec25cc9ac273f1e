//! What a SIGHUP reload changes: which new values the running bot takes at once and which
//! only take effect on the next start.
//!
//! Invariants:
//! - Sections are compared by value (`PartialEq`), never by their `Debug` text: a secret
//!   prints as `***` there, so a rotated `api_key` or `client_secret` would look unchanged.
//! - A plan names key paths only (`models.local_chat.api_key`), never a value, so it can be
//!   logged as is.
//! - A model's new `api_key` is applied live only when nothing else of that model changed;
//!   with other changes the model keeps its old client (and key) until a restart, so a key
//!   is never sent to an endpoint it was not configured with.

use std::collections::BTreeSet;

use crate::config::{Config, DingTalkConfig, ModelConfig, Secret};

/// The outcome of comparing the running config with a newly loaded one.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ReloadPlan {
    /// Models whose only change is their `api_key`, with the new key (applied at once).
    pub(crate) rotated_api_keys: Vec<(String, Option<Secret>)>,
    /// Key paths whose new values take effect on the next start only.
    pub(crate) needs_restart: Vec<String>,
}

/// Compares `old` (running) with `new` (just loaded).
pub(crate) fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    plan_models(old, new, &mut plan);
    plan_channel(old, new, &mut plan);
    let fixed_at_start = [
        ("routing", old.routing != new.routing),
        ("limits", old.limits != new.limits),
        (
            "reply.max_answer_chars",
            old.reply.max_answer_chars != new.reply.max_answer_chars,
        ),
        ("logging", old.logging != new.logging),
        ("ops", old.ops != new.ops),
        ("state", old.state != new.state),
    ];
    plan.needs_restart.extend(
        fixed_at_start
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| key.to_string()),
    );
    plan
}

fn plan_models(old: &Config, new: &Config, plan: &mut ReloadPlan) {
    let names: BTreeSet<&String> = old.models.keys().chain(new.models.keys()).collect();
    for name in names {
        match (old.models.get(name), new.models.get(name)) {
            (Some(was), Some(now)) if was == now => {}
            (Some(was), Some(now)) if without_api_key(was) == without_api_key(now) => {
                plan.rotated_api_keys
                    .push((name.clone(), now.api_key.clone()));
            }
            _ => plan.needs_restart.push(format!("models.{name}")),
        }
    }
}

fn without_api_key(model: &ModelConfig) -> ModelConfig {
    ModelConfig {
        api_key: None,
        ..model.clone()
    }
}

fn plan_channel(old: &Config, new: &Config, plan: &mut ReloadPlan) {
    let (was, now) = match (&old.channel, &new.channel) {
        (Some(was), Some(now)) => (&was.dingtalk, &now.dingtalk),
        (None, None) => return,
        _ => return plan.needs_restart.push("channel".to_string()),
    };
    if was.client_secret != now.client_secret {
        plan.needs_restart
            .push("channel.dingtalk.client_secret".to_string());
    }
    if without_secret(was) != without_secret(now) {
        plan.needs_restart.push("channel.dingtalk".to_string());
    }
}

fn without_secret(dingtalk: &DingTalkConfig) -> DingTalkConfig {
    DingTalkConfig {
        client_secret: Secret::default(),
        ..dingtalk.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(api_key: &str, client_secret: &str, extra: &str) -> Config {
        crate::config::parse(&format!(
            r#"models:
  local_chat:
    kind: openai_compatible
    base_url: "http://127.0.0.1:9/v1"
    api_key: "{api_key}"
    model: "m"
routing:
  defaults:
    model: local_chat
channel:
  dingtalk:
    client_id: "id"
    client_secret: "{client_secret}"
{extra}"#
        ))
        .expect("test config parses")
    }

    #[test]
    fn an_unchanged_config_plans_nothing() {
        let c = config("k1", "s1", "");
        assert_eq!(plan(&c, &c.clone()), ReloadPlan::default());
    }

    #[test]
    fn a_rotated_api_key_is_applied_live_and_a_rotated_secret_is_named_for_restart() {
        let p = plan(&config("k1", "s1", ""), &config("k2", "s2", ""));
        assert_eq!(
            p.rotated_api_keys,
            vec![("local_chat".to_string(), Some(Secret::new("k2")))]
        );
        assert_eq!(p.needs_restart, vec!["channel.dingtalk.client_secret"]);
        let shown = format!("{p:?}");
        assert!(!shown.contains("k2") && !shown.contains("s2"), "{shown}");
    }

    #[test]
    fn a_key_rotated_with_other_model_changes_waits_for_the_restart() {
        let old = config("k1", "s1", "");
        let mut new = config("k2", "s1", "");
        new.models.get_mut("local_chat").unwrap().base_url = Some("http://127.0.0.1:8/v1".into());
        let p = plan(&old, &new);
        assert!(p.rotated_api_keys.is_empty());
        assert_eq!(p.needs_restart, vec!["models.local_chat"]);
    }

    /// The red team's SIGHUP: a changed `state.*` key (backend, Redis URL) is named as
    /// kept until restart, never silently ignored.
    #[test]
    fn a_changed_state_section_is_named_for_restart() {
        let old = config("k", "s", "");
        let mut new = old.clone();
        new.state.backend = crate::config::StateBackend::Redis;
        assert_eq!(plan(&old, &new).needs_restart, vec!["state"]);
    }

    #[test]
    fn sections_fixed_at_start_are_named() {
        let old = config("k", "s", "");
        let new = config(
            "k",
            "s",
            "    mode: http\nlimits:\n  queue:\n    max_waiting: 3\nreply:\n  max_answer_chars: 900\n",
        );
        assert_eq!(
            plan(&old, &new).needs_restart,
            vec!["channel.dingtalk", "limits", "reply.max_answer_chars"]
        );
    }
}
