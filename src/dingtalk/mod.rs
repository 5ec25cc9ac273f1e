//! The DingTalk channel: Stream mode and HTTP callback ingress, replies through session
//! webhooks and the OpenAPI, AI card streaming. Faithful to docs/dingtalk-protocol.md.
//!
//! One job per module: [`wire`] (stream frames), [`frame`] (what a frame asks of the
//! client), [`message`] (payload → [`Inbound`]; [`usual_message`] its borrowed fast path), [`stream`] (WebSocket client),
//! [`callback`] (HTTP mode server), [`sign`] (HMAC signatures), [`token`] (access token
//! cache), [`api`] (authenticated OpenAPI calls), [`limiter`] (20 QPS per API), [`send`]
//! (group / 1:1 sends), [`shared_rate`] and [`shared_token`]: the send rate and token shared by replicas on Redis, [`webhook`] (session webhook replies), [`card`] (AI card),
//! [`split`] (long answers), [`outgoing`] (a reply's parts and delivery progress),
//! [`dedupe`], [`ingress`] (parse + dedupe + hand-over), [`durable`] (whether a taken
//! message is durable yet), [`replay`] (callback replay
//! guard), [`webhook_allow`] (which session webhook hosts may be POSTed to), [`stats`]
//! (report), [`channel`] (the facade). The parsers of DingTalk's answers are pure
//! functions ([`http::api_answer`], [`http::errcode_answer`], [`token::token_answer`],
//! [`stream::open_answer`], [`frame::handle_frame`]), fuzzed in `tests/fuzz_parsers.rs`.

pub mod api;
pub mod callback;
pub mod card;
pub mod channel;
pub mod dedupe;
pub mod durable;
pub mod error;
pub mod frame;
pub mod http;
pub mod ingress;
pub mod limiter;
pub mod message;
pub mod outgoing;
pub mod replay;
mod replay_file;
mod secret_mask;
pub mod send;
pub(crate) mod shared_rate;
pub(crate) mod shared_token;
pub mod sign;
pub mod split;
pub mod stats;
pub mod stream;
pub mod token;
mod usual_message;
pub mod webhook;
pub mod webhook_allow;
pub mod wire;

pub use card::{CardRef, CardStream};
pub use channel::{Channel, ChannelTuning};
pub use durable::Durable;
pub use error::{ChannelError, ChannelStartError, ChannelUnhealthy};
pub use message::{Inbound, InboundContent};
pub use outgoing::OutgoingReply;
pub use sign::{compute_sign, verify_callback_sign};
