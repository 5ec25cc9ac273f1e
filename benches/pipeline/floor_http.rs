//! The HTTP client's floor: what a turn's two HTTP requests (the model call and the reply)
//! cost through the daemon's HTTP client crate alone, with no bot around it.
//!
//! One thread runs a current-thread tokio runtime and `reqwest` with the daemon's client
//! settings (`src/http_client.rs`: `TCP_NODELAY`, no redirects, pooled keep-alive), and
//! makes per turn one POST to a "model" and one to a "webhook", two minimal blocking
//! HTTP/1.1 servers on loopback that answer after [`ECHO_THINKS`] (so the client sleeps
//! and is woken between them, as the daemon's worker is). Paced at the goal rate. Its
//! thread's CPU time (exact, `getrusage`) less what the same two exchanges cost bare (two
//! thirds of the loopback floor, measured just before) is what the crate itself costs a
//! turn: a part no code of the bot can go under while it uses a maintained HTTP client.
//! (`getrusage` also splits user from system time, but by sampling ticks, too coarsely
//! for 100 us a turn: one pass read 0.118 s user and 0.000 system, the next 0.055 and
//! 0.060.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::floor::{paced_at_goal_rate, ECHO_THINKS, EXCHANGE_TIMEOUT};
use crate::report::{Report, Spread};
use crate::scenarios::GOAL_RATE;
use crate::Params;

/// A model request's size: a short conversation's chat completion request.
const MODEL_REQUEST_BYTES: usize = 1024;
/// A reply's size: a session webhook's text message.
const REPLY_REQUEST_BYTES: usize = 320;
/// The model's answer: one non-streamed chat completion of a short answer.
const MODEL_ANSWER_BYTES: usize = 400;
/// A request head or body larger than this fails the floor (the client is ours, so this
/// only guards against a mistake here).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Requests a turn makes: the model call and the reply.
const REQUESTS_PER_TURN: usize = 2;

/// The HTTP client floor: `p.reps` runs of `GOAL_RATE x p.load_secs` turns of
/// [`REQUESTS_PER_TURN`] requests, paced at the goal rate; the client thread's CPU per
/// 1 000 turns, and that less `bare_exchange` (the loopback floor's CPU per 1 000 of one
/// bare exchange, if it was measured) per request, which it returns (the median).
pub fn http(p: &Params, bare_exchange: Option<f64>, report: &mut Report) -> Result<Option<f64>> {
    let turns = (GOAL_RATE as u64 * p.load_secs) as usize;
    let mut runs = Vec::new();
    for rep in 0..p.reps() {
        let cpu = timed_requests(turns).context("the HTTP client floor")?;
        eprintln!("  HTTP client pass {rep}: {cpu:.3} CPU s/1000 turns");
        runs.push(cpu);
    }
    let Some(cpu) = Spread::of(runs.iter().copied()) else {
        return Ok(None);
    };
    let bare = bare_exchange.map(|one| one * REQUESTS_PER_TURN as f64);
    let beyond = bare.and_then(|bare| Spread::of(runs.iter().map(|c| c - bare)));
    report.add(
        "floor.http",
        format!(
            "floor: a turn's {REQUESTS_PER_TURN} HTTP requests through reqwest (the daemon's client) @ {GOAL_RATE}/s, no bot"
        ),
        match beyond {
            Some(beyond) => format!(
                "{} CPU s/1000; {} beyond the same exchanges bare",
                cpu.show(3),
                beyond.show(3)
            ),
            None => format!("{} CPU s/1000", cpu.show(3)),
        },
        "-",
        None,
        json!({"cpu_s_per_1000": cpu.json(), "beyond_bare_cpu_s_per_1000": beyond.map(|s| s.json()),
               "requests_per_turn": REQUESTS_PER_TURN}),
    );
    Ok(beyond.map(|b| b.median))
}

/// Runs `turns` paced turns against two fresh servers; the client thread's CPU seconds
/// per 1 000 turns.
fn timed_requests(turns: usize) -> Result<f64> {
    let model_answer = format!(
        r#"{{"choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}}}}]}}"#,
        "a".repeat(MODEL_ANSWER_BYTES - 64)
    );
    let (model_url, model) = serve(model_answer)?;
    let (webhook_url, webhook) = serve(r#"{"errcode":0,"errmsg":"ok"}"#.to_owned())?;
    let outcome = (|| -> Result<_> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Built by the daemon's own builder, so the floor has its settings.
        let client = clawdbot::http_client::builder()
            .timeout(EXCHANGE_TIMEOUT)
            .build()?;
        let model_body = format!(
            r#"{{"messages":"{}"}}"#,
            "m".repeat(MODEL_REQUEST_BYTES - 16)
        );
        let reply_body = format!(r#"{{"text":"{}"}}"#, "r".repeat(REPLY_REQUEST_BYTES - 12));
        let post = |url: &str, body: &str| {
            let sent = client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send();
            async move {
                let answer = sent.await?.error_for_status()?.bytes().await?;
                reqwest::Result::Ok(answer.len())
            }
        };
        let cpu = paced_at_goal_rate(turns, |_| {
            rt.block_on(async {
                post(&model_url, &model_body).await?;
                post(&webhook_url, &reply_body).await
            })
            .map(drop)
            .map_err(std::io::Error::other)
        })?;
        Ok(cpu)
    })();
    for (name, server) in [("model", model), ("webhook", webhook)] {
        server
            .join()
            .map_err(|_| anyhow::anyhow!("the {name} server panicked"))?
            .with_context(|| format!("the {name} server"))?;
    }
    Ok(outcome?.as_secs_f64() * 1000.0 / turns as f64)
}

/// A server thread that answers every request on its one connection with `answer` after
/// [`ECHO_THINKS`], until the client closes it; its URL and its thread. The client's
/// requests are sequential, so it keeps one connection alive. The thread fails if no
/// client connects within [`EXCHANGE_TIMEOUT`] or a read waits longer than that.
fn serve(answer: String) -> Result<(String, std::thread::JoinHandle<Result<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/", listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let server = std::thread::spawn(move || -> Result<()> {
        let began = std::time::Instant::now();
        let peer = loop {
            match listener.accept() {
                Ok((peer, _)) => break peer,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    anyhow::ensure!(began.elapsed() < EXCHANGE_TIMEOUT, "no client connected");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e.into()),
            }
        };
        peer.set_nonblocking(false)?;
        answer_connection(peer, &answer)
    });
    Ok((url, server))
}

/// Serves one keep-alive connection until the client closes it.
fn answer_connection(peer: TcpStream, answer: &str) -> Result<()> {
    peer.set_nodelay(true)?;
    peer.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
    let mut writer = peer.try_clone()?;
    let mut reader = BufReader::new(peer);
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
        answer.len()
    );
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        let mut length = 0usize;
        let mut head_bytes = 0usize;
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 {
                return Ok(()); // the client closed its connection
            }
            head_bytes += n;
            anyhow::ensure!(head_bytes <= MAX_REQUEST_BYTES, "a request head too large");
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().context("a content-length")?;
                }
            }
        }
        anyhow::ensure!(length <= MAX_REQUEST_BYTES, "a request body too large");
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
        std::thread::sleep(ECHO_THINKS);
        writer.write_all(response.as_bytes())?;
    }
}
