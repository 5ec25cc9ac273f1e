//! The ops endpoint answers only requests whose `Host` names it, against DNS rebinding: a
//! web page whose domain is re-pointed at 127.0.0.1 could otherwise read `/status.json`
//! and `/metrics` from a browser on this host (the request would carry that domain).
//!
//! Invariants: a request is served when its Host is an IP literal (a rebinding page cannot
//! send one: its Host is its own domain) that equals the listen address (any IP for an
//! unspecified listen address such as 0.0.0.0) with the listen port; or `localhost` with no
//! port or the listen port; or a name listed in `ops.allowed_hosts` (`name` for any port,
//! `name:port` for one). Names compare case-insensitively. Others get 421 Misdirected
//! Request, never the figures. A request without Host (HTTP/1.0 tools) is no browser's and
//! is served.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};

/// Which `Host` values the endpoint answers.
#[derive(Debug, Clone)]
pub(crate) struct AllowedHosts {
    listen: SocketAddr,
    /// `ops.allowed_hosts`, lower-cased.
    extra: Vec<String>,
}

impl AllowedHosts {
    pub(crate) fn new(listen: SocketAddr, extra: &[String]) -> AllowedHosts {
        AllowedHosts {
            listen,
            extra: extra
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request with this `Host` value is served.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        let port_is_ours = |default_ok: bool| match port {
            Some(p) => p == self.listen.port(),
            None => default_ok || self.listen.port() == 80,
        };
        if let Ok(ip) = name.parse::<IpAddr>() {
            let ours = self.listen.ip().is_unspecified() || ip == self.listen.ip();
            return ours && port_is_ours(false);
        }
        if name == "localhost" && port_is_ours(true) {
            return true;
        }
        self.extra.iter().any(|e| *e == name || *e == host)
    }
}

/// `name[:port]` or `[v6]:port` into the name (without brackets) and the port; `None` when
/// the value is not of that shape.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        return match after {
            "" => Some((ip, None)),
            _ => Some((ip, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match host.rsplit_once(':') {
        // A bare IPv6 literal has colons too; it has no port.
        Some((name, _)) if name.contains(':') => Some((host, None)),
        Some((name, port)) => Some((name, Some(port.parse().ok()?))),
        None => Some((host, None)),
    }
}

/// Middleware: refuses a request whose Host is not allowed.
pub(crate) async fn require_allowed_host(
    axum::extract::State(allowed): axum::extract::State<std::sync::Arc<AllowedHosts>>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    match host {
        Some(h) if !allowed.allows(h) => (
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not one the ops endpoint answers for; add it to ops.allowed_hosts\n",
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listen_address_localhost_and_listed_names_are_served() {
        let a = AllowedHosts::new(
            "127.0.0.1:9464".parse().unwrap(),
            &["Ops.Example:443".into(), "mon".into()],
        );
        for ok in [
            "127.0.0.1:9464",
            "LOCALHOST:9464",
            "localhost",
            "ops.example:443",
            "mon:1",
            "mon",
        ] {
            assert!(a.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:9464",
            "evil.example",
            "127.0.0.1",
            "127.0.0.2:9464",
            "127.0.0.1:9465",
            "localhost:80",
            "ops.example:9464",
            "localhost.evil.example:9464",
            "[::1]:9464",
            "127.0.0.1:x",
            "",
        ] {
            assert!(!a.allows(bad), "{bad}");
        }
        let any = AllowedHosts::new("0.0.0.0:80".parse().unwrap(), &[]);
        assert!(any.allows("10.1.2.3") && any.allows("10.1.2.3:80"));
        assert!(!any.allows("rebind.example"));
        let v6 = AllowedHosts::new("[::1]:9464".parse().unwrap(), &[]);
        assert!(v6.allows("[::1]:9464") && !v6.allows("[::2]:9464") && !v6.allows("::1"));
    }
}
