//! Where inbound robot messages enter the bot, from either transport: parse, dedupe,
//! hand to the [`InboundSink`], and tell the transport when the frame may be ACKed (or the
//! callback answered) without ever blocking the caller (the socket reader or HTTP handler).
//!
//! Invariants: a robot message is ACKed only once its sink said it is safe (durable, or
//! already known); one that the sink could not take is not ACKed (DingTalk may redeliver
//! it) and is not remembered by the dedupe filter, so a redelivery is taken again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::mpsc;

use super::dedupe::Dedupe;
use super::message::{Inbound, ParseError};
use super::stats::Stats;

/// How long a message id is remembered, and how many at most.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(10 * 60);
pub const DEDUPE_CAPACITY: usize = 10_000;

/// What a sink did with a message it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    New,
    /// The sink knew the message already (pending or answered).
    Duplicate,
}

/// Why a sink could not take a message (the text names what failed and where).
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Where parsed robot messages go. The future resolves once the message is safe to ACK:
/// durable (for a durable sink) or known already; an error means "do not ACK".
pub trait InboundSink: Send + Sync + 'static {
    fn admit(&self, msg: Inbound) -> BoxFuture<'static, Result<Admitted, SinkError>>;
}

/// An in-memory hand-over without durability: the message is taken at once. (The bot
/// uses its durable journal; this serves library users and channel tests.)
impl InboundSink for mpsc::Sender<Inbound> {
    fn admit(&self, msg: Inbound) -> BoxFuture<'static, Result<Admitted, SinkError>> {
        match self.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let tx = self.clone();
                tokio::spawn(async move {
                    let _ = tx.send(msg).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("robot message arrived after the bot stopped listening");
            }
        }
        std::future::ready(Ok(Admitted::New)).boxed()
    }
}

pub struct Ingress {
    dedupe: Mutex<Dedupe>,
    stats: Arc<Stats>,
    sink: Box<dyn InboundSink>,
}

impl Ingress {
    pub fn new(stats: Arc<Stats>, sink: Box<dyn InboundSink>) -> Ingress {
        Ingress {
            dedupe: Mutex::new(Dedupe::new(DEDUPE_WINDOW, DEDUPE_CAPACITY)),
            stats,
            sink,
        }
    }

    /// Takes one robot message, as its transport parsed it (`parse_robot_message_str`).
    /// `frame_id` is the stream `messageId`, if any. Resolves to true when the frame may be
    /// ACKed: the message is safe with the sink, was a duplicate, or is unreadable (a
    /// redelivery would not help); false when the sink failed.
    pub fn admit(
        self: &Arc<Self>,
        frame_id: Option<&str>,
        parsed: Result<Inbound, ParseError>,
    ) -> BoxFuture<'static, bool> {
        let msg = match parsed {
            Ok(m) => Inbound {
                read_at: Some(std::time::Instant::now()),
                ..m
            },
            Err(e) => {
                tracing::warn!(error = %e, "dropped an unreadable robot message");
                self.stats.set_error(e.to_string());
                return std::future::ready(true).boxed();
            }
        };
        let keys = [frame_id.unwrap_or("").to_string(), msg.msg_id.clone()];
        let seen = {
            let mut d = self.dedupe.lock().unwrap_or_else(|p| p.into_inner());
            d.seen(&[&keys[0], &keys[1]])
        };
        if seen {
            Stats::bump(&self.stats.duplicates_dropped);
            tracing::info!(msg_id = %msg.msg_id, "dropped a duplicate robot message");
            return std::future::ready(true).boxed();
        }
        let (msg_id, conversation) = (msg.msg_id.clone(), msg.conversation_id.clone());
        let admitted = self.sink.admit(msg);
        let this = self.clone();
        async move {
            let result = admitted.await;
            if result.is_ok() {
                let mut d = this.dedupe.lock().unwrap_or_else(|p| p.into_inner());
                d.record(&[&keys[0], &keys[1]]);
            }
            match result {
                Ok(Admitted::New) => {
                    Stats::bump(&this.stats.messages_in);
                    tracing::info!(msg_id = %msg_id, conversation = %conversation, "robot message received");
                    true
                }
                Ok(Admitted::Duplicate) => {
                    Stats::bump(&this.stats.duplicates_dropped);
                    tracing::info!(msg_id = %msg_id, "dropped a duplicate robot message");
                    true
                }
                Err(e) => {
                    tracing::error!(msg_id = %msg_id, error = %e, "robot message not stored: not ACKed, so DingTalk may deliver it again");
                    this.stats.set_error(e.to_string());
                    false
                }
            }
        }
        .boxed()
    }
}
