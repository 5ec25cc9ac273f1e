//! The ops endpoint answers only requests whose `Host` names it, against DNS rebinding: a
//! web page whose domain is re-pointed at 127.0.0.1 could otherwise read `/status.json`
//! and `/metrics` from a browser on this host (the request would carry that domain).
//!
//! Invariants: a request is served when its Host is an IP literal (a rebinding page cannot
//! send one: its Host is its own domain) that equals the listen address (any IP for an
//! unspecified listen address such as 0.0.0.0) with the listen port; or `localhost` with no
//! port or the listen port; or a name listed in `ops.allowed_hosts` (`name` for any port,
//! `name:port` for one). Names compare case-insensitively. Others get 421 Misdirected
//! Request, never the figures. An absolute-form target's authority
//! (`GET http://host/path`) is checked the same way, as well as the Host header. An
//! HTTP/1.1 request must carry exactly one Host (else 400, as RFC 9112 asks); an HTTP/1.0
//! request without Host (old tools) is no browser's and is served.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, Request, StatusCode, Version};
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

/// Why a request is refused before it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// 400: no Host in an HTTP/1.1 (or later) request, or more than one.
    BadHost,
    /// 421: a Host or absolute-form authority the endpoint does not answer for.
    NotOurs,
}

/// Whether `request` may be served: its Host headers and, for an absolute-form target
/// (`GET http://host/path`), the target's authority, each checked against `allowed`.
fn judge<B>(allowed: &AllowedHosts, request: &Request<B>) -> Result<(), Refusal> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::BadHost);
    }
    let authority = request.uri().authority().map(|a| a.as_str());
    if host.is_none() && authority.is_none() && request.version() >= Version::HTTP_11 {
        return Err(Refusal::BadHost);
    }
    let host = host.map(|v| v.to_str().unwrap_or("\u{0}"));
    if host.into_iter().chain(authority).all(|h| allowed.allows(h)) {
        Ok(())
    } else {
        Err(Refusal::NotOurs)
    }
}

/// Middleware: refuses a request whose Host is missing (HTTP/1.1), repeated or not
/// allowed.
pub(crate) async fn require_allowed_host(
    axum::extract::State(allowed): axum::extract::State<std::sync::Arc<AllowedHosts>>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    match judge(&allowed, &request) {
        Ok(()) => next.run(request).await,
        Err(Refusal::BadHost) => (
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs exactly one Host header\n",
        )
            .into_response(),
        Err(Refusal::NotOurs) => (
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not one the ops endpoint answers for; add it to ops.allowed_hosts\n",
        )
            .into_response(),
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

    #[test]
    fn host_headers_and_absolute_targets_are_judged() {
        let a = AllowedHosts::new("127.0.0.1:9464".parse().unwrap(), &[]);
        let req = |uri: &str, version: Version, hosts: &[&str]| {
            let mut b = Request::builder().uri(uri).version(version);
            for h in hosts {
                b = b.header(header::HOST, *h);
            }
            b.body(()).unwrap()
        };
        let ours = "127.0.0.1:9464";
        let v11 = Version::HTTP_11;
        assert_eq!(judge(&a, &req("/", v11, &[ours])), Ok(()));
        assert_eq!(judge(&a, &req("/", Version::HTTP_10, &[])), Ok(()));
        assert_eq!(judge(&a, &req("/", v11, &[])), Err(Refusal::BadHost));
        assert_eq!(
            judge(&a, &req("/", v11, &[ours, ours])),
            Err(Refusal::BadHost)
        );
        assert_eq!(
            judge(&a, &req("http://evil.example/x", v11, &[ours])),
            Err(Refusal::NotOurs)
        );
        assert_eq!(judge(&a, &req("http://127.0.0.1:9464/x", v11, &[])), Ok(()));
    }
}
