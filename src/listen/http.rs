//! Serves an axum [`Router`] on a TCP listener under [`ListenLimits`]: hyper's
//! header-read timer bounds the wait for every request head (first and kept-alive), a
//! deadline bounds each request, and a semaphore caps open connections.
//!
//! Hand-written accept loop because `axum::serve` exposes none of these limits; the
//! connection handling itself is hyper's.
//!
//! Invariants: at most `max_connections` connections are served at once, and a connection
//! over the cap is closed right after accept; a client that sends no complete request head
//! within `header_timeout` (or sits idle that long between requests) is disconnected; a
//! request not answered within `request_timeout` gets 408 and the connection is closed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::ListenLimits;

/// Pause after a failed accept (descriptor exhaustion, aborted handshake) before retrying.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Repeated warnings about the same condition are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes, then asks every open connection
/// to finish its request and close, waiting at most `request_timeout` for them.
/// `what` names the listener in log lines.
pub async fn serve_http<F>(
    what: &'static str,
    listener: TcpListener,
    app: Router,
    limits: ListenLimits,
    shutdown: F,
) where
    F: Future<Output = ()> + Send,
{
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let service = deadline_service(app, limits.request_timeout);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_warn = Throttle::default();
    let mut cap_warn = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if accept_warn.ready() {
                        tracing::warn!(listener = what, error = %e, "accept failed");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if cap_warn.ready() {
                tracing::warn!(
                    listener = what,
                    max_connections = max,
                    "connection cap reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(stream), service.clone())
            .with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.request_timeout, permits.acquire_many(all)).await;
}

/// `app` as a hyper service whose every request must be answered within `deadline`
/// (reading the request body counts; streaming the response body does not).
fn deadline_service(
    app: Router,
    deadline: Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    let app = TowerToHyperService::new(app);
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let answer = app.call(req);
        async move {
            match tokio::time::timeout(deadline, answer).await {
                Ok(resp) => resp,
                Err(_) => Ok(request_timed_out()),
            }
        }
    })
}

fn request_timed_out() -> Response<Body> {
    let mut resp = Response::new(Body::from("request timed out"));
    *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// Lets one warning through per [`WARN_EVERY`].
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}
