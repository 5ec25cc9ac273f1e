//! Serves an axum [`Router`] on a TCP listener under [`ListenLimits`]: hyper's
//! header-read timer bounds the wait for every request head (first and kept-alive), a
//! deadline bounds each request, and a semaphore caps open connections.
//!
//! Hand-written accept loop because `axum::serve` exposes none of these limits; the
//! connection handling itself is hyper's.
//!
//! Invariants: at most `max_connections` connections are served at once; at the cap a new
//! connection takes the slot of the oldest one still waiting for a request head (see
//! [`slots`](super::slots)), or is closed right after accept when all are busy; a client that sends no complete request head
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
use tokio::sync::watch;
use tokio::time::Instant;

use super::slots::{Slot, Slots};
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
    let slots = Slots::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
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
        let Some(held) = slots.claim().await else {
            if cap_warn.ready() {
                tracing::warn!(
                    listener = what,
                    max_connections = slots.max(),
                    "connection cap reached with every connection busy; closing new ones"
                );
            }
            drop(stream);
            continue;
        };
        if held.made_room && cap_warn.ready() {
            tracing::warn!(
                listener = what,
                max_connections = slots.max(),
                "connection cap reached; closing the oldest connections that sent no request"
            );
        }
        let _ = stream.set_nodelay(true);
        let service = deadline_service(app.clone(), limits.request_timeout, held.slot.clone());
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            // An async block captures only the fields it uses; moving the whole claim in
            // keeps its permit (the slot) held for as long as this task runs.
            let held = held;
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                // Dropping the connection closes it; the slot goes to a newcomer.
                _ = held.slot.evicted() => return,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
            drop(held);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    slots.drained(limits.request_timeout).await;
}

/// `app` as a hyper service whose every request must be answered within `deadline`
/// (reading the request body counts; streaming the response body does not), marking
/// `slot` busy meanwhile.
fn deadline_service(
    app: Router,
    deadline: Duration,
    slot: Arc<Slot>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    let app = TowerToHyperService::new(app);
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let answer = app.call(req);
        let busy = slot.busy();
        async move {
            let _busy = busy;
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

#[cfg(test)]
mod tests {
    //! Real loopback sockets on paused tokio time: every wait below ends on an event (the
    //! server closing the socket), and the paused clock shows when it happened.

    use std::net::SocketAddr;

    use axum::body::Bytes;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const LIMITS: ListenLimits = ListenLimits {
        header_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
        max_connections: 4,
    };
    /// No wait in these tests may take longer than this on the paused clock.
    const BOUND: Duration = Duration::from_secs(3600);

    struct Server {
        addr: SocketAddr,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(limits: ListenLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            post(|body: Bytes| async move { format!("got {}", body.len()) }),
        );
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(serve_http("test", listener, app, limits, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        Server { addr, stop, task }
    }

    /// Reads until the server closes the connection: what came, and how long (paused) it took.
    async fn read_until_closed(s: &mut (impl AsyncReadExt + Unpin)) -> (String, Duration) {
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(BOUND, s.read(&mut buf)).await {
                Err(_) => panic!("connection still open after {BOUND:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
        (
            String::from_utf8_lossy(&got).into_owned(),
            started.elapsed(),
        )
    }

    /// Writes `bytes` one per second, ignoring a closed socket; bounded by the byte count.
    fn trickle(mut w: tokio::net::tcp::OwnedWriteHalf, bytes: &'static [u8]) {
        tokio::spawn(async move {
            for b in bytes {
                if w.write_all(std::slice::from_ref(b)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn one_request(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
        )
        .await
        .unwrap();
        read_until_closed(&mut s).await.0
    }

    fn around(took: Duration, want: Duration) -> bool {
        took >= want && took < want + Duration::from_secs(1)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_at_the_header_timeout() {
        let srv = start(LIMITS).await;
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let (_, took) = read_until_closed(&mut s).await;
        assert!(around(took, LIMITS.header_timeout), "closed after {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_head_is_cut_at_the_header_timeout() {
        let srv = start(LIMITS).await;
        let s = TcpStream::connect(srv.addr).await.unwrap();
        let (mut r, w) = s.into_split();
        trickle(
            w,
            b"POST / HTTP/1.1\r\nhost: slowly-slowly-slowly-slowly-slowly\r\n",
        );
        let (got, took) = read_until_closed(&mut r).await;
        // hyper may answer 408 before closing; either way the request never ran.
        assert!(!got.contains("got"), "{got}");
        assert!(around(took, LIMITS.header_timeout), "closed after {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_kept_alive_connection_is_closed_at_the_header_timeout() {
        let srv = start(LIMITS).await;
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(BOUND, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("got 2"));
        let (rest, took) = read_until_closed(&mut s).await;
        assert_eq!(rest, "");
        assert!(around(took, LIMITS.header_timeout), "closed after {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_body_gets_408_at_the_request_timeout() {
        let srv = start(LIMITS).await;
        let s = TcpStream::connect(srv.addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        w.write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\n")
            .await
            .unwrap();
        let body: &'static [u8] = &[b'x'; 100];
        trickle(w, body);
        let started = Instant::now();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(BOUND, r.read_to_end(&mut got))
            .await
            .expect("closed in time");
        let took = started.elapsed();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(
            around(took, LIMITS.request_timeout),
            "answered after {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_a_newcomer_takes_the_oldest_idle_slot() {
        let srv = start(LIMITS).await;
        let mut held = Vec::new();
        for _ in 0..LIMITS.max_connections {
            held.push(TcpStream::connect(srv.addr).await.unwrap());
        }
        // Every slot is held by a silent client; a real request is still served at once,
        // and the oldest silent client is the one closed to make room.
        let started = Instant::now();
        assert!(one_request(srv.addr).await.contains("got 2"));
        assert!(started.elapsed() < LIMITS.header_timeout);
        let (_, took) = read_until_closed(&mut held[0]).await;
        assert!(took < LIMITS.header_timeout, "oldest closed after {took:?}");
        // The others keep their slots until their own header timeout.
        for s in held.iter_mut().skip(1) {
            let (_, took) = read_until_closed(s).await;
            assert!(took + started.elapsed() >= LIMITS.header_timeout);
        }
        let _ = srv.stop.send(true);
        tokio::time::timeout(BOUND, srv.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}
