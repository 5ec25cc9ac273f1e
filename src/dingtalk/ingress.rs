//! Where inbound robot messages enter the bot, from either transport: parse, dedupe,
//! count, and hand over without ever blocking the caller (the socket reader or HTTP handler).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::dedupe::Dedupe;
use super::message::{parse_robot_message, Inbound};
use super::stats::Stats;

/// How long a message id is remembered, and how many at most.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(10 * 60);
pub const DEDUPE_CAPACITY: usize = 10_000;

pub struct Ingress {
    dedupe: Mutex<Dedupe>,
    stats: Arc<Stats>,
    tx: mpsc::Sender<Inbound>,
}

impl Ingress {
    pub fn new(stats: Arc<Stats>, tx: mpsc::Sender<Inbound>) -> Ingress {
        Ingress {
            dedupe: Mutex::new(Dedupe::new(DEDUPE_WINDOW, DEDUPE_CAPACITY)),
            stats,
            tx,
        }
    }

    /// Accepts one robot message payload. `frame_id` is the stream `messageId`, if any.
    /// Returns true when it was new and handed to the bot.
    pub fn accept(&self, frame_id: Option<&str>, payload: &Value) -> bool {
        let msg = match parse_robot_message(payload, super::now_ms()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "dropped an unreadable robot message");
                self.stats.set_error(e.to_string());
                return false;
            }
        };
        let first = {
            let mut d = self.dedupe.lock().unwrap_or_else(|p| p.into_inner());
            d.first_time(&[frame_id.unwrap_or(""), &msg.msg_id])
        };
        if !first {
            Stats::bump(&self.stats.duplicates_dropped);
            tracing::info!(msg_id = %msg.msg_id, "dropped a duplicate robot message");
            return false;
        }
        Stats::bump(&self.stats.messages_in);
        tracing::info!(msg_id = %msg.msg_id, conversation = %msg.conversation_id, "robot message received");
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(msg).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("robot message arrived after the bot stopped listening");
            }
        }
        true
    }
}
