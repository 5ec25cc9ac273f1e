//! What the Stream client does with one downstream text frame (docs/dingtalk-protocol.md
//! §1.3–§1.5): a pure function from the frame's text to the ACK to write, whether the
//! server asked to reconnect, and the robot message to hand over, so it can be fuzzed
//! without a socket.
//!
//! Invariants: every frame that parses is ACKed with code 200 and its own `messageId`
//! (a ping's ACK echoes the ping's `data`); a robot message (CALLBACK on the bot topics)
//! whose `data` is JSON is handed over and its ACK waits for the hand-over; a frame that
//! does not parse gets no ACK and does nothing.

use serde_json::{json, Value};

use super::wire::{self, Ack, Frame};

/// What one text frame asks of the client.
#[derive(Debug, Clone, Default)]
pub struct Handled {
    /// The ACK: written at once, or for a robot message once it is durable.
    pub ack: Option<String>,
    /// The server announced `disconnect`: open a new connection, then drop this one.
    pub disconnect: bool,
    /// A robot message to hand over: (frame messageId, payload).
    pub robot_message: Option<(Option<String>, Value)>,
}

/// Reads one downstream frame and says what to do about it (see the module invariants).
pub fn handle_frame(text: &str) -> Handled {
    let frame: Frame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, bytes = text.len(), "ignored an unreadable stream frame");
            return Handled::default();
        }
    };
    let id = frame.message_id();
    let topic = frame.topic();
    let (data, disconnect) = ack_data(&frame, &topic);
    let ack = Ack::new(200, id.clone(), "OK", data);
    let is_bot = frame.kind == wire::TYPE_CALLBACK
        && (topic == wire::TOPIC_BOT_MESSAGE || topic == wire::TOPIC_BOT_DELEGATE);
    let robot_message = if is_bot {
        match serde_json::from_str::<Value>(&frame.data) {
            Ok(payload) => Some((id, payload)),
            Err(e) => {
                tracing::warn!(error = %e, "robot message frame data is not JSON");
                None
            }
        }
    } else {
        None
    };
    Handled {
        ack: serde_json::to_string(&ack).ok(),
        disconnect,
        robot_message,
    }
}

/// The ACK's `data` for a frame of this kind and topic, and whether it is a `disconnect`.
fn ack_data(frame: &Frame, topic: &str) -> (String, bool) {
    match (frame.kind.as_str(), topic) {
        (wire::TYPE_SYSTEM, wire::TOPIC_PING) => (frame.data.clone(), false),
        (wire::TYPE_SYSTEM, wire::TOPIC_DISCONNECT) => ("{}".into(), true),
        (wire::TYPE_SYSTEM, _) => ("{}".into(), false),
        (wire::TYPE_EVENT, _) => (
            json!({"status": "SUCCESS", "message": "OK"}).to_string(),
            false,
        ),
        (_, wire::TOPIC_CARD_CALLBACK) => (r#"{"response":{}}"#.into(), false),
        _ => (r#"{"response":null}"#.into(), false),
    }
}
