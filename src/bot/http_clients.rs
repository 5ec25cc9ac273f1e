//! Tests of the bot's two HTTP clients together, the model client and the DingTalk client
//! (here because only the bot depends on both): neither follows a redirect, and neither
//! keeps more than `crate::http_client::IDLE_CONNECTIONS_PER_HOST` idle connections.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::config::ModelConfig;
use crate::model::client::ModelClient;

/// Answers every connection on a loopback port with `answer` (after reading the
/// request head), until the test ends; returns the port.
fn serve_fixed(answer: String) -> (u16, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let serving = listener.try_clone().expect("clone");
    std::thread::spawn(move || {
        for stream in serving.incoming().take(8) {
            let Ok(mut stream) = stream else { return };
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, listener)
}

/// Neither the model client nor the DingTalk client follows a redirect: the 307 is
/// the answer, and the host it names is never contacted.
#[tokio::test]
async fn no_http_client_follows_a_redirect() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    elsewhere.set_nonblocking(true).expect("nonblocking");
    let target = format!(
        "http://127.0.0.1:{}/v1/chat/completions",
        elsewhere.local_addr().expect("addr").port()
    );
    let (port, _redirector) = serve_fixed(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n"
    ));
    let base = format!("http://127.0.0.1:{port}/v1");

    let cfg: ModelConfig = serde_yaml::from_str(&format!(
        "{{kind: openai_compatible, base_url: \"{base}\", model: m, timeout_ms: 5000, stream: false}}"
    ))
    .expect("model config");
    let model = ModelClient::new(&cfg, &base).expect("client");
    let deadline = Instant::now() + Duration::from_secs(5);
    let asked = model.complete(&[], deadline, 100, &mut |_| {}).await;
    let err = asked.expect_err("a redirected request succeeded");
    assert!(err.to_string().contains("redirect"), "{err}");

    let dingtalk = crate::dingtalk::http::client()
        .post(format!("{base}/robot/send"))
        .body("{}")
        .send()
        .await
        .expect("an answer");
    assert_eq!(dingtalk.status().as_u16(), 307);

    // Both calls have returned: a redirect followed would have connected by now.
    assert!(
        elsewhere.accept().is_err(),
        "a client followed the redirect to {target}"
    );
}

/// Requests a burst sends at once, each on a connection of its own: twice the idle bound.
const BURST: usize = 2 * crate::http_client::IDLE_CONNECTIONS_PER_HOST;

/// Connections a [`serve_held_burst`] server has open right now, and the most it ever had.
#[derive(Default)]
struct OpenConnections {
    now: AtomicUsize,
    most: AtomicUsize,
}

/// Serves `answer` (a whole HTTP/1.1 response, keep-alive) on a loopback port, holding the
/// first request of every connection until [`BURST`] of them are in, so a client must open
/// that many connections at once. Bounded: it accepts at most 2 x BURST connections and
/// each connection serves at most 4 requests.
async fn serve_held_burst(answer: String) -> (u16, Arc<OpenConnections>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let open = Arc::new(OpenConnections::default());
    let all_in = Arc::new(tokio::sync::Barrier::new(BURST));
    let counted = open.clone();
    tokio::spawn(async move {
        for _ in 0..2 * BURST {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let now = counted.now.fetch_add(1, Ordering::SeqCst) + 1;
            counted.most.fetch_max(now, Ordering::SeqCst);
            let (counted, all_in, answer) = (counted.clone(), all_in.clone(), answer.clone());
            tokio::spawn(async move {
                for served in 0..4 {
                    if !read_request(&mut conn).await {
                        break;
                    }
                    if served == 0 {
                        all_in.wait().await;
                    }
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
                counted.now.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open)
}

/// Reads one request (head, then a `Content-Length` body); false at EOF or on an error.
async fn read_request(conn: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return false;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < body_len {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => have += n,
        }
    }
    true
}

/// Asserts that the burst had BURST connections open at once, and that within 5 s at
/// most the idle bound are left open.
async fn the_burst_was_concurrent_and_the_pool_shrank(open: &OpenConnections) {
    let most = open.most.load(Ordering::SeqCst);
    assert_eq!(most, BURST, "the burst was not concurrent");
    let idle = crate::http_client::IDLE_CONNECTIONS_PER_HOST;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = open.now.load(Ordering::SeqCst);
    while left > idle && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = open.now.load(Ordering::SeqCst);
    }
    assert!(
        left <= idle,
        "{left} connections kept open after the burst (bound {idle})"
    );
}

fn keep_alive_answer(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// After a burst of BURST requests in flight at once, the model client closes every
/// connection beyond its idle bound instead of keeping them all until the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_client_keeps_a_bounded_idle_pool_after_a_burst() {
    let (port, open) = serve_held_burst(keep_alive_answer(
        r#"{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#,
    ))
    .await;
    let base = format!("http://127.0.0.1:{port}/v1");
    let cfg: ModelConfig = serde_yaml::from_str(&format!(
        "{{kind: openai_compatible, base_url: \"{base}\", model: m, timeout_ms: 10000, stream: false}}"
    ))
    .expect("model config");
    let model = ModelClient::new(&cfg, &base).expect("client");
    let burst = (0..BURST).map(|_| {
        let model = model.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            model.complete(&[], deadline, 100, &mut |_| {}).await
        })
    });
    for answered in futures_util::future::join_all(burst).await {
        let answer = answered.expect("task").expect("an answer");
        assert_eq!(answer.text, "ok");
    }
    the_burst_was_concurrent_and_the_pool_shrank(&open).await;
}

/// The same for the DingTalk client (webhook replies, OpenAPI calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dingtalk_client_keeps_a_bounded_idle_pool_after_a_burst() {
    let (port, open) = serve_held_burst(keep_alive_answer(r#"{"errcode":0}"#)).await;
    let client = crate::dingtalk::http::client();
    let url = format!("http://127.0.0.1:{port}/robot/send");
    let burst = (0..BURST).map(|_| async {
        // Read to the end: only a connection whose answer was read whole goes back to the
        // pool (one dropped half-read is closed, which would pass this test on its own).
        let answer = client
            .post(&url)
            .body("{}")
            .send()
            .await
            .expect("an answer");
        let status = answer.status().as_u16();
        (status, answer.text().await.expect("a body"))
    });
    for (status, body) in futures_util::future::join_all(burst).await {
        assert_eq!((status, body.as_str()), (200, r#"{"errcode":0}"#));
    }
    the_burst_was_concurrent_and_the_pool_shrank(&open).await;
}
