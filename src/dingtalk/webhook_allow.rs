//! Which session webhook URLs the bot may POST answers to. A robot message names its own
//! `sessionWebhook`; trusting it blindly lets whoever shapes a payload aim the bot's answer
//! (and the model's words) at any URL, cloud metadata addresses included.
//!
//! Invariant: an allowlist of origins (scheme, host, port), never a denylist: DingTalk's
//! own webhook origins, the origin of the configured `api_base` (how a simulator is
//! configured), the deprecated `oapi_base` when a file still has it, and
//! `channel.dingtalk.webhook_hosts`. Anything else —
//! another host, another port, plain http to a DingTalk host, an IP literal — is refused.

use reqwest::Url;

use crate::config::DingTalkConfig;

/// DingTalk's session webhook origins (docs/dingtalk-protocol.md §2:
/// `https://oapi.dingtalk.com/robot/sendBySession`).
pub const DINGTALK_WEBHOOK_ORIGINS: &[&str] =
    &["https://oapi.dingtalk.com", "https://api.dingtalk.com"];

/// Why a session webhook URL is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefused {
    #[error("session webhook is not a URL with a host")]
    NotUrl,
    #[error("session webhook origin {0} is not an allowed DingTalk host (channel.dingtalk.webhook_hosts)")]
    Origin(String),
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

/// A configured origin or a message's webhook, parsed the one way both are read.
fn parse_url(url: &str) -> Option<Url> {
    Url::parse(url.trim()).ok()
}

impl Origin {
    fn of(url: &Url) -> Option<Origin> {
        let host = url.host_str().filter(|h| !h.is_empty())?;
        Some(Origin {
            scheme: url.scheme().to_string(),
            host: host.to_ascii_lowercase(),
            port: url.port_or_known_default(),
        })
    }

    fn parse(url: &str) -> Option<Origin> {
        parse_url(url).as_ref().and_then(Origin::of)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// The origins session webhooks may point at.
#[derive(Debug, Clone)]
pub struct WebhookAllowlist {
    origins: Vec<Origin>,
}

impl WebhookAllowlist {
    /// DingTalk's origins, the configured API bases and `webhook_hosts`.
    pub fn from_config(cfg: &DingTalkConfig) -> WebhookAllowlist {
        let configured = [Some(cfg.api_base.as_str()), cfg.oapi_base.as_deref()]
            .into_iter()
            .flatten()
            .chain(cfg.webhook_hosts.iter().map(String::as_str));
        let mut origins: Vec<Origin> = Vec::new();
        for origin in DINGTALK_WEBHOOK_ORIGINS
            .iter()
            .copied()
            .chain(configured)
            .filter_map(Origin::parse)
        {
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        WebhookAllowlist { origins }
    }

    /// The parsed `url` when it is on an allowed origin: the caller POSTs to that very
    /// value, so the URL checked is the URL used, parsed once. The error names the origin
    /// only, never the path or query (they carry the session token).
    pub fn check(&self, url: &str) -> Result<Url, WebhookRefused> {
        let parsed = parse_url(url).ok_or(WebhookRefused::NotUrl)?;
        let origin = Origin::of(&parsed).ok_or(WebhookRefused::NotUrl)?;
        if self.origins.contains(&origin) {
            Ok(parsed)
        } else {
            Err(WebhookRefused::Origin(origin.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DingTalkMode, Secret};

    fn cfg(api_base: &str, extra: &[&str]) -> DingTalkConfig {
        DingTalkConfig {
            client_id: "id".into(),
            client_secret: Secret::new("s"),
            robot_code: None,
            mode: DingTalkMode::Stream,
            api_base: api_base.into(),
            oapi_base: None,
            http_listen: "127.0.0.1:0".into(),
            card_template_id: None,
            card_content_key: "k".into(),
            targets: Default::default(),
            send_rate: Default::default(),
            webhook_hosts: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_dingtalk_and_configured_origins_pass() {
        let allow = WebhookAllowlist::from_config(&cfg(
            "http://127.0.0.1:7001",
            &["https://hooks.corp.example"],
        ));
        for ok in [
            "https://oapi.dingtalk.com/robot/sendBySession?session=ab",
            "https://OAPI.dingtalk.com:443/robot/sendBySession?session=ab",
            "http://127.0.0.1:7001/robot/sendBySession?session=ab",
            "https://hooks.corp.example/x",
        ] {
            assert_eq!(
                allow.check(ok).map(String::from),
                Ok(Url::parse(ok).unwrap().into()),
                "{ok}"
            );
        }
        for bad in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/x",
            "http://oapi.dingtalk.com/robot/sendBySession?session=ab",
            "https://oapi.dingtalk.com.evil.example/robot/sendBySession",
            "https://evil.example/?https://oapi.dingtalk.com/",
            "https://oapi.dingtalk.com:8443/robot/sendBySession",
            "http://127.0.0.1:7002/robot/sendBySession",
            "http://127.0.0.2:7001/robot/sendBySession",
            "http://localhost:7001/robot/sendBySession",
            "https://hooks.corp.example:444/x",
        ] {
            assert!(
                matches!(allow.check(bad), Err(WebhookRefused::Origin(_))),
                "{bad}"
            );
        }
        assert_eq!(allow.check("not a url"), Err(WebhookRefused::NotUrl));
        assert_eq!(
            allow.check("file:///etc/passwd"),
            Err(WebhookRefused::NotUrl)
        );
    }

    #[test]
    fn refusal_names_the_origin_but_not_the_session_token() {
        let allow = WebhookAllowlist::from_config(&cfg("https://api.dingtalk.com", &[]));
        let e = allow
            .check("http://collector.example:9/robot?session=SECRETTOKEN")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://collector.example:9"), "{e}");
        assert!(!e.contains("SECRETTOKEN"), "{e}");
    }
}
