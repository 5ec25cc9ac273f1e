//! What the Stream client does with one downstream text frame (docs/dingtalk-protocol.md
//! §1.3–§1.5): a pure function from the frame's text to the ACK to write, whether the
//! server asked to reconnect, and the robot message to hand over, so it can be fuzzed
//! without a socket.
//!
//! Invariants: every frame that parses is ACKed with code 200 and its own `messageId`
//! (a ping's ACK echoes the ping's `data`); a robot message (CALLBACK on the bot topics)
//! is handed over as its `data` text and its ACK waits for the hand-over (which ACKs an
//! unreadable one at once); a frame that does not parse gets no ACK and does nothing.

use std::borrow::Cow;

use super::wire::{self, ack_text, Frame, FrameView};

/// What one text frame asks of the client.
#[derive(Debug, Clone, Default)]
pub struct Handled {
    /// The ACK: written at once, or for a robot message once it is durable.
    pub ack: Option<String>,
    /// The server announced `disconnect`: open a new connection, then drop this one.
    pub disconnect: bool,
    /// A robot message to hand over: (frame messageId, the frame's `data`: the robot
    /// message's JSON text, which the caller parses).
    pub robot_message: Option<(Option<String>, String)>,
}

/// Reads one downstream frame and says what to do about it (see the module invariants).
/// A frame of the usual shape is read borrowed ([`FrameView::read_usual`]); any other the
/// general way, with the same result.
pub fn handle_frame(text: &str) -> Handled {
    if let Some(view) = FrameView::read_usual(text) {
        return handle(view);
    }
    match serde_json::from_str::<Frame>(text) {
        Ok(frame) => handle(FrameView::from(&frame)),
        Err(e) => {
            tracing::warn!(error = %e, bytes = text.len(), "ignored an unreadable stream frame");
            Handled::default()
        }
    }
}

fn handle(frame: FrameView<'_>) -> Handled {
    let (data, disconnect) = ack_data(&frame);
    let id = frame.message_id.as_deref();
    let ack = ack_text(200, id, "OK", data);
    let is_bot = frame.kind == wire::TYPE_CALLBACK
        && (frame.topic == wire::TOPIC_BOT_MESSAGE || frame.topic == wire::TOPIC_BOT_DELEGATE);
    let robot_message = is_bot.then(|| {
        let id = frame.message_id.map(Cow::into_owned);
        (id, frame.data.into_owned())
    });
    Handled {
        ack: Some(ack),
        disconnect,
        robot_message,
    }
}

/// The ACK's `data` for a frame of this kind and topic, and whether it is a `disconnect`.
fn ack_data<'f>(frame: &'f FrameView<'_>) -> (&'f str, bool) {
    match (&*frame.kind, &*frame.topic) {
        (wire::TYPE_SYSTEM, wire::TOPIC_PING) => (&frame.data, false),
        (wire::TYPE_SYSTEM, wire::TOPIC_DISCONNECT) => ("{}", true),
        (wire::TYPE_SYSTEM, _) => ("{}", false),
        (wire::TYPE_EVENT, _) => (r#"{"message":"OK","status":"SUCCESS"}"#, false),
        (_, wire::TOPIC_CARD_CALLBACK) => (r#"{"response":{}}"#, false),
        _ => (r#"{"response":null}"#, false),
    }
}
