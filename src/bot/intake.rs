//! The bot's side of the channel's hand-over: robot messages go into the durable journal
//! (or, with `state.backend: redis`, the shared inbox), and the channel ACKs a frame only
//! once the journal says its message is on disk (or Redis said it took it).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::journal::{Admission, Journal};
use super::redis_inbox::RedisInbox;
use crate::dingtalk::ingress::{Admitted, InboundSink, SinkError};
use crate::dingtalk::Inbound;

/// An [`InboundSink`] writing to the journal (which hands new messages to the dispatcher
/// once they are durable).
pub(crate) struct JournalSink(pub(crate) Arc<Journal>);

impl InboundSink for JournalSink {
    fn admit(&self, msg: Inbound) -> BoxFuture<'static, Result<Admitted, SinkError>> {
        let committed = self.0.admit(msg);
        async move {
            match committed.await {
                Ok(Admission::New) => Ok(Admitted::New),
                Ok(Admission::Duplicate) => Ok(Admitted::Duplicate),
                Err(e) => Err(Box::new(e) as SinkError),
            }
        }
        .boxed()
    }
}

/// An [`InboundSink`] writing to the shared Redis inbox (dedupe, arrival number and stream
/// entry in one script; see `bot::redis_inbox`).
pub(crate) struct RedisSink(pub(crate) Arc<RedisInbox>);

impl InboundSink for RedisSink {
    fn admit(&self, msg: Inbound) -> BoxFuture<'static, Result<Admitted, SinkError>> {
        let inbox = self.0.clone();
        async move {
            inbox
                .admit(&msg)
                .await
                .map_err(|e| Box::new(e) as SinkError)
        }
        .boxed()
    }
}
