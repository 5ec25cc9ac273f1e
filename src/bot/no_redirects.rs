//! Test: no HTTP client of the bot follows a redirect (here because it checks the model
//! client and the DingTalk client together, and only the bot depends on both).

use std::io::{Read, Write};
use std::time::Duration;

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
