//! The channel's error type. Messages name the API or endpoint involved and never contain
//! message text or secrets.

/// DingTalk's "session does not exist / expired" errcode on session webhooks.
pub const ERRCODE_SESSION_GONE: i64 = 300_001;

/// DingTalk's "system busy" errcode (`系统繁忙`): nothing was sent; retrying is right.
pub const ERRCODE_BUSY: i64 = -1;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelError {
    /// A new-API call answered non-2xx with DingTalk's `{code, message}` shape.
    #[error("DingTalk {api} refused the call: HTTP {status} {code}: {message}")]
    Api {
        api: String,
        status: u16,
        code: String,
        message: String,
    },
    /// A session webhook or old-API call answered `errcode != 0`.
    #[error("DingTalk {api} answered errcode {errcode}: {errmsg}")]
    Errcode {
        api: String,
        errcode: i64,
        errmsg: String,
    },
    /// No answer (connect error, timeout, a connection broken mid-answer).
    #[error("cannot reach DingTalk {api}: {detail}")]
    Transport { api: String, detail: String },
    /// An answer that says nothing readable about the call (not JSON, an errcode that is
    /// not a number, a field the call needs missing, longer than any DingTalk writes):
    /// never success.
    #[error("DingTalk {api} gave an answer that cannot be read: {detail}")]
    Unreadable { api: String, detail: String },
    #[error(
        "unknown send target `{0}`: use an alias from channel.dingtalk.targets, a conversation id (cid...) or user:STAFFID"
    )]
    UnknownTarget(String),
    /// DingTalk accepted the call but refused these users (invalid or still throttled).
    #[error("DingTalk did not deliver to {0} user(s): {1}")]
    Undelivered(usize, String),
    /// The request cannot be made (missing staff id, no card template...).
    #[error("{0}")]
    Unsupported(String),
    #[error("the DingTalk channel is shut down")]
    Shutdown,
    /// The reply did not finish within [`super::channel::REPLY_DELIVERY_LIMIT`] (waiting
    /// for a send slot under `send_rate`, or DingTalk answering slowly).
    #[error("not delivered within {0} ms (send rate limit or slow DingTalk)")]
    DeliveryLate(u64),
    /// A busy reply the send rate has no slot for within the delivery limit: refused at
    /// once when it could not get one in time, or given up at the limit.
    #[error("no send slot for a busy reply within {0} ms (the send rate is full)")]
    NoSlotForBusyReply(u64),
}

/// The channel could not start; the message names the config key or file involved.
#[derive(Debug, thiserror::Error)]
pub enum ChannelStartError {
    #[error("channel.dingtalk needs client_id and client_secret")]
    MissingCredentials,
    #[error("cannot open the callback replay record {}: {source}", path.display())]
    ReplayRecord {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    CallbackListen(#[from] crate::listen::BindError),
}

/// Why the channel's health check fails; each message ends with what to check.
#[derive(Debug, thiserror::Error)]
pub enum ChannelUnhealthy {
    #[error("cannot obtain a DingTalk access token: {0}; check channel.dingtalk.client_id/client_secret and api_base")]
    NoToken(ChannelError),
    #[error("DingTalk {mode} is {state} (last error: {last_error}); check network access to api_base and that Stream mode is enabled for the app")]
    NotConnected {
        mode: String,
        state: String,
        last_error: String,
    },
}

impl ChannelError {
    /// True for the session-webhook "session gone" answer that calls for the OpenAPI fallback.
    pub fn is_session_gone(&self) -> bool {
        matches!(self, ChannelError::Errcode { errcode, .. } if *errcode == ERRCODE_SESSION_GONE)
    }

    /// True when DingTalk refused the app's credentials (HTTP 401/403, or a code naming
    /// invalid credentials or authentication): retrying with the same config cannot help.
    pub fn is_credentials_refused(&self) -> bool {
        match self {
            ChannelError::Api { status, code, .. } => {
                let code = code.to_ascii_lowercase();
                matches!(status, 401 | 403) && !code.contains("qpslimit")
                    || code.contains("invalidclient")
                    || code.contains("invalidauthentication")
                    || code.contains("invalidappkey")
            }
            _ => false,
        }
    }

    /// True for an explicit errcode -1 ("system busy") answer.
    pub fn is_busy(&self) -> bool {
        matches!(self, ChannelError::Errcode { errcode, .. } if *errcode == ERRCODE_BUSY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> ChannelError {
        ChannelError::Api {
            api: "/v1.0/gateway/connections/open".into(),
            status,
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn only_credential_refusals_are_refused() {
        for refused in [
            api(401, "invalidClientIdOrSecret"),
            api(400, "invalidClientIdOrSecret"),
            api(400, "InvalidAuthentication"),
            api(403, "Forbidden.AccessDenied"),
        ] {
            assert!(refused.is_credentials_refused(), "{refused}");
        }
        for transient in [
            api(403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"),
            api(500, "ServiceUnavailable"),
            ChannelError::Transport {
                api: "x".into(),
                detail: "connection refused".into(),
            },
        ] {
            assert!(!transient.is_credentials_refused(), "{transient}");
        }
    }
}
