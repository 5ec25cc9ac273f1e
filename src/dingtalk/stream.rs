//! The Stream-mode client (docs/dingtalk-protocol.md §1): open a connection (fresh single-use
//! ticket each time), read frames, hand robot messages to [`Ingress`] and ACK them once it says
//! they are safe (durable), ACK every other frame at once, keep alive, and reconnect forever with
//! capped exponential backoff + jitter until shut down.
//!
//! Invariants: the socket reader never waits on the bot nor on the disk: a robot message's
//! ACK is written when its commit completes while later frames (pings included) are
//! read and answered meanwhile; a robot message that could not be made durable is never
//! ACKed; on `disconnect` the new connection is opened before the old one is closed (and
//! the old one is still read for the messages already on their way on it, and gets their
//! ACKs and those whose commits were under way), except that from the
//! second [`QUICK_DISCONNECT`] in a row the new one waits the backoff after the old one
//! is let go; a socket silent for `keepalive_idle + pong_timeout` is dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::error::ChannelError;
use super::frame::handle_frame;
use super::http::{api_answer, read_answer, transport};
use super::ingress::Ingress;
use super::message::parse_robot_message_str;
use super::stats::Stats;
use super::wire::{self, OpenRequest, OpenResponse};
use crate::config::DingTalkConfig;
use crate::status::channel_state;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const OPEN_API: &str = "/v1.0/gateway/connections/open";

/// The WebSocket read buffer. tungstenite zero-fills the buffer's free capacity before
/// every socket read (up to this size), so its 128 KiB default cost a 128 KiB `memset`
/// per frame read (0.8 % of the daemon's CPU at 1 000 msg/s, issue 12's perf). Stream
/// frames are a few KiB; a larger frame still arrives whole (the buffer grows to the
/// announced frame length), in reads of this size.
pub(crate) const WS_READ_BUFFER: usize = 8 * 1024;

/// Keepalive and backoff timings (tests shorten them).
#[derive(Debug, Clone)]
pub struct StreamTuning {
    /// Send a WebSocket ping after this long without any frame.
    pub keepalive_idle: Duration,
    /// Drop the connection when nothing arrives this long after a ping.
    pub pong_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt, plus up to 1 base of jitter.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for StreamTuning {
    fn default() -> Self {
        StreamTuning {
            keepalive_idle: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(15),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
        }
    }
}

/// Delay before reconnect attempt `attempt` (0-based): `min(base·2^n + U(0, base), cap)`.
pub fn backoff(t: &StreamTuning, attempt: u32) -> Duration {
    let exp = crate::backoff::capped_doubling(t.backoff_base, t.backoff_cap, attempt);
    let jitter = t.backoff_base.mul_f64(rand::rng().random::<f64>());
    (exp + jitter).min(t.backoff_cap)
}

pub struct StreamClient {
    pub cfg: Arc<DingTalkConfig>,
    pub http: reqwest::Client,
    pub ingress: Arc<Ingress>,
    pub stats: Arc<Stats>,
    pub tuning: StreamTuning,
}

/// ACKs waiting for their messages' commits: each yields the ACK to write with when its
/// frame was read, or None when the message must not be ACKed.
type PendingAcks = FuturesUnordered<BoxFuture<'static, Option<(String, Instant)>>>;

/// Longest time an old connection is kept after its `disconnect`, read for messages still
/// on their way and written the ACKs still under way. DingTalk closes it itself after
/// about 10 s of silence.
const OLD_CONNECTION_GRACE: Duration = Duration::from_secs(10);

/// A `disconnect` this soon after its connection opened is a quick one. DingTalk asks for a
/// new connection when it moves a gateway, hours apart; a server (or a gateway in front of
/// it) that asks again and again right away is not followed at its rate: from the second
/// quick `disconnect` in a row on, the next connection waits the reconnect backoff.
pub(crate) const QUICK_DISCONNECT: Duration = Duration::from_secs(10);

enum End {
    Shutdown,
    /// The server announced `disconnect`; the old socket (and the ACKs still under way on
    /// it) is handed back to be finished and closed later.
    Disconnect(Box<Ws>, PendingAcks),
    Lost(String),
}

impl StreamClient {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut attempt: u32 = 0;
        let mut quick_disconnects: u32 = 0;
        let mut ready: Option<Ws> = None;
        let mut first = true;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let ws = match ready.take() {
                Some(ws) => ws,
                None => {
                    self.stats.set_state(if first {
                        channel_state::CONNECTING
                    } else {
                        channel_state::RECONNECTING
                    });
                    match tokio::select! { r = self.connect() => Some(r), _ = shutdown.changed() => None }
                    {
                        None => break,
                        Some(Ok(ws)) => ws,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, attempt, "DingTalk stream connect failed");
                            if e.is_credentials_refused() {
                                self.stats.refused(e.to_string());
                            } else {
                                self.stats.set_error(e.to_string());
                            }
                            if !self.pause(attempt, &mut shutdown).await {
                                break;
                            }
                            attempt = attempt.saturating_add(1);
                            continue;
                        }
                    }
                }
            };
            if !first {
                Stats::bump(&self.stats.reconnects);
            }
            first = false;
            self.stats.authenticated();
            self.stats
                .set_connected(channel_state::CONNECTED, crate::clock::now_ms());
            tracing::info!("DingTalk stream connected");
            let connected_at = Instant::now();
            match self.session(ws, &mut attempt, &mut shutdown).await {
                End::Shutdown => break,
                End::Disconnect(old, acks) => {
                    quick_disconnects = if connected_at.elapsed() < QUICK_DISCONNECT {
                        quick_disconnects.saturating_add(1)
                    } else {
                        0
                    };
                    if quick_disconnects >= 2 {
                        tracing::warn!(
                            in_a_row = quick_disconnects,
                            "DingTalk asked to reconnect again right after connecting; waiting the backoff first"
                        );
                        tokio::spawn(drain_and_close(*old, acks, self.ingress.clone()));
                        self.stats.set_state(channel_state::RECONNECTING);
                        if !self.pause(quick_disconnects - 2, &mut shutdown).await {
                            break;
                        }
                        continue;
                    }
                    tracing::info!("DingTalk asked to reconnect; opening a new connection first");
                    match self.connect().await {
                        Ok(new) => ready = Some(new),
                        Err(e) => {
                            self.stats.set_error(e.to_string());
                            self.stats.set_state(channel_state::RECONNECTING);
                        }
                    }
                    tokio::spawn(drain_and_close(*old, acks, self.ingress.clone()));
                    if ready.is_none() && !self.pause(attempt, &mut shutdown).await {
                        break;
                    }
                }
                End::Lost(e) => {
                    tracing::warn!(error = %e, "DingTalk stream connection lost");
                    self.stats.set_error(e);
                    self.stats.set_state(channel_state::RECONNECTING);
                    if !self.pause(attempt, &mut shutdown).await {
                        break;
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        self.stats.set_state(channel_state::STOPPED);
    }

    /// Sleeps the backoff for `attempt`; false when shut down meanwhile.
    async fn pause(&self, attempt: u32, shutdown: &mut watch::Receiver<bool>) -> bool {
        let d = backoff(&self.tuning, attempt);
        tokio::select! {
            _ = tokio::time::sleep(d) => !*shutdown.borrow(),
            _ = shutdown.changed() => false,
        }
    }

    /// `connections/open` then the WebSocket handshake with the fresh ticket.
    pub async fn connect(&self) -> Result<Ws, ChannelError> {
        let body = OpenRequest {
            client_id: &self.cfg.client_id,
            client_secret: self.cfg.client_secret.expose(),
            subscriptions: wire::bot_subscriptions(),
            ua: concat!("clawdbot-rust/", env!("CARGO_PKG_VERSION")).to_string(),
            local_ip: None,
        };
        let open = open_stream(&self.http, &self.cfg.api_base, &body).await?;
        // TCP_NODELAY: ACKs are small frames written one at a time; with Nagle each one
        // waits for the previous one's TCP ACK (milliseconds of ACK latency at load).
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER);
        let connect =
            tokio_tungstenite::connect_async_with_config(stream_url(&open), Some(config), true);
        let failed = |detail: String| ChannelError::Transport {
            api: "stream WebSocket".into(),
            detail,
        };
        match tokio::time::timeout(Duration::from_secs(15), connect).await {
            Err(_) => Err(failed("handshake timed out".into())),
            Ok(Err(e)) => Err(failed(format!("handshake failed: {e}"))),
            Ok(Ok((ws, _))) => Ok(ws),
        }
    }

    async fn session(
        &self,
        mut ws: Ws,
        attempt: &mut u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let mut last_rx = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let tick = (self.tuning.keepalive_idle / 4).max(Duration::from_millis(50));
        let mut ticker = tokio::time::interval(tick);
        let mut acks: PendingAcks = FuturesUnordered::new();
        loop {
            tokio::select! {
                Some(ack) = acks.next(), if !acks.is_empty() => {
                    if let Some((ack, read_at)) = ack {
                        if let Err(e) = send_ack(&mut ws, ack, read_at).await {
                            return End::Lost(format!("ACK write failed: {e}"));
                        }
                    }
                }
                _ = shutdown.changed() => {
                    let _ = ws.close(None).await;
                    return End::Shutdown;
                }
                _ = ticker.tick() => {
                    if let Some(sent) = ping_sent {
                        if sent.elapsed() >= self.tuning.pong_timeout {
                            return End::Lost("no answer to WebSocket ping (silent connection)".into());
                        }
                    } else if last_rx.elapsed() >= self.tuning.keepalive_idle {
                        if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                            return End::Lost(format!("WebSocket ping failed: {e}"));
                        }
                        ping_sent = Some(Instant::now());
                    }
                }
                msg = ws.next() => {
                    last_rx = Instant::now();
                    ping_sent = None;
                    *attempt = 0;
                    if matches!(msg, Some(Ok(_))) {
                        self.stats.received(crate::clock::now_ms());
                    }
                    match msg {
                        None => return End::Lost("server closed the stream".into()),
                        Some(Err(e)) => return End::Lost(format!("stream read failed: {e}")),
                        Some(Ok(Message::Text(t))) => {
                            let (ack_now, disconnect) = take_frame(&self.ingress, t.as_str(), last_rx, &mut acks);
                            if let Some(ack) = ack_now {
                                if let Err(e) = send_ack(&mut ws, ack, last_rx).await {
                                    return End::Lost(format!("ACK write failed: {e}"));
                                }
                            }
                            if disconnect {
                                return End::Disconnect(Box::new(ws), acks);
                            }
                        }
                        Some(Ok(Message::Close(_))) => return End::Lost("server closed the stream".into()),
                        Some(Ok(_)) => {}
                    }
                }
            }
        }
    }
}

/// `connections/open` (docs/dingtalk-protocol.md §1.1) at `api_base` with `body`, asking
/// for JSON: the stream endpoint and its ticket. The time limit is `http`'s.
pub async fn open_stream(
    http: &reqwest::Client,
    api_base: &str,
    body: &OpenRequest<'_>,
) -> Result<OpenResponse, ChannelError> {
    let url = format!("{}{OPEN_API}", api_base.trim_end_matches('/'));
    let resp = http
        .post(url)
        .header("Accept", "application/json")
        .json(body)
        .send()
        .await
        .map_err(|e| transport(OPEN_API, e))?;
    let (status, text) = read_answer(OPEN_API, resp).await?;
    open_answer(status, &text, body.client_secret)
}

/// The WebSocket URL to connect to with an `open` answer: its endpoint with the ticket,
/// percent-encoded, as a query parameter.
pub fn stream_url(open: &OpenResponse) -> String {
    let sep = if open.endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let ticket =
        percent_encoding::utf8_percent_encode(&open.ticket, percent_encoding::NON_ALPHANUMERIC);
    format!("{}{sep}ticket={ticket}", open.endpoint)
}

/// What a `connections/open` answer (docs/dingtalk-protocol.md §1.1) means, from its HTTP
/// status and body alone: an endpoint and a ticket, both non-empty, or why not (with
/// `client_secret`, which the call carried, masked in a refusal).
pub fn open_answer(
    status: u16,
    body: &str,
    client_secret: &str,
) -> Result<OpenResponse, ChannelError> {
    let v = api_answer(OPEN_API, status, body, client_secret)?;
    let malformed = |detail: String| ChannelError::Unreadable {
        api: OPEN_API.into(),
        detail,
    };
    let open: OpenResponse =
        serde_json::from_value(v).map_err(|e| malformed(format!("answer is malformed: {e}")))?;
    if open.endpoint.is_empty() || open.ticket.is_empty() {
        return Err(malformed("answered an empty endpoint or ticket".into()));
    }
    Ok(open)
}

/// Does what one text frame asks: a robot message is parsed and handed to `ingress`, its
/// ACK pushed on `acks` to be written once the message is safe; any other frame's ACK is
/// returned, to be written at once. Also says whether the frame was a `disconnect`.
fn take_frame(
    ingress: &Arc<Ingress>,
    text: &str,
    read_at: Instant,
    acks: &mut PendingAcks,
) -> (Option<String>, bool) {
    let handled = handle_frame(text);
    match handled.robot_message {
        Some((id, data)) => {
            let parsed = parse_robot_message_str(&data, crate::clock::now_ms());
            let safe = ingress.admit(id.as_deref(), parsed);
            let ack = handled.ack;
            acks.push(
                async move { safe.await.then_some(ack).flatten().map(|a| (a, read_at)) }.boxed(),
            );
            (None, handled.disconnect)
        }
        None => (handled.ack, handled.disconnect),
    }
}

/// Writes one ACK and records how long after its frame was read it went out.
async fn send_ack(
    ws: &mut Ws,
    ack: String,
    read_at: Instant,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.send(Message::text(ack)).await?;
    crate::ops::metrics::observed().ack_written(read_at.elapsed());
    Ok(())
}

/// Keeps reading an old connection after its `disconnect`, for at most
/// [`OLD_CONNECTION_GRACE`]: robot messages already on their way on it (DingTalk does not
/// deliver a bot message again) are taken and ACKed like any other, the ACKs under way are
/// written, then the connection is closed. Ends early when the server closes it.
async fn drain_and_close(mut ws: Ws, mut acks: PendingAcks, ingress: Arc<Ingress>) {
    let drain = async {
        loop {
            tokio::select! {
                Some(ack) = acks.next(), if !acks.is_empty() => {
                    if let Some((ack, read_at)) = ack {
                        if send_ack(&mut ws, ack, read_at).await.is_err() {
                            return;
                        }
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let read_at = Instant::now();
                        let (ack_now, _) = take_frame(&ingress, t.as_str(), read_at, &mut acks);
                        if let Some(ack) = ack_now {
                            if send_ack(&mut ws, ack, read_at).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        // The server closed it: what is still under way has no socket to go to.
    };
    let _ = tokio::time::timeout(OLD_CONNECTION_GRACE, drain).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_grows() {
        let t = StreamTuning::default();
        let d0 = backoff(&t, 0);
        assert!(d0 >= Duration::from_secs(1) && d0 <= Duration::from_secs(2));
        let d3 = backoff(&t, 3);
        assert!(d3 >= Duration::from_secs(8) && d3 <= Duration::from_secs(9));
        assert_eq!(backoff(&t, 30), Duration::from_secs(60));
    }
}
