//! AI card streaming (docs/dingtalk-protocol.md §7.1–7.3): create+deliver with `flowStatus` 1,
//! switch to 2 before the first chunk, stream the full text (`isFull`) at most every
//! [`MIN_UPDATE_INTERVAL`], and always finalize with `flowStatus` 3 (FINISHED) or 5 (FAILED).
//!
//! Invariant: a [`CardStream`] dropped without `finish`/`fail` is failed in the background,
//! so no card is left "typing".

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::OpenApi;
use super::error::ChannelError;
use super::message::Inbound;
use crate::config::ConversationKind;
use crate::random_hex::random_hex;

pub const CREATE_AND_DELIVER: &str = "/v1.0/card/instances/createAndDeliver";
pub const INSTANCES: &str = "/v1.0/card/instances";
pub const STREAMING: &str = "/v1.0/card/streaming";
/// Fewest ms between two streaming updates.
pub const MIN_UPDATE_INTERVAL: Duration = Duration::from_millis(300);

/// `flowStatus` values (sent as strings).
pub const FLOW_PROCESSING: &str = "1";
pub const FLOW_INPUTING: &str = "2";
pub const FLOW_FINISHED: &str = "3";
pub const FLOW_FAILED: &str = "5";

/// What names an opened card across restarts: its `outTrackId` and the template key its
/// text goes to (kept, because the config may change before the card is finalized).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CardRef {
    pub out_track_id: String,
    pub content_key: String,
}

/// An AI card being streamed into.
pub struct CardStream {
    api: Arc<OpenApi>,
    out_track_id: String,
    key: String,
    last_push: Option<Instant>,
    inputing: bool,
    finalized: bool,
}

/// The createAndDeliver body for `to` (group: `IM_GROUP.<cid>` mentioning the asker;
/// 1:1: `IM_ROBOT.<staffId>`). Fails for a 1:1 chat whose sender has no staff id.
pub fn create_body(
    template_id: &str,
    key: &str,
    robot_code: &str,
    out_track_id: &str,
    to: &Inbound,
) -> Result<Value, ChannelError> {
    let mut body = json!({
        "cardTemplateId": template_id, "outTrackId": out_track_id,
        "cardData": {"cardParamMap": {"flowStatus": FLOW_PROCESSING, key: ""}},
        "callbackType": "STREAM", "userIdType": 1,
        "imGroupOpenSpaceModel": {"supportForward": true},
        "imRobotOpenSpaceModel": {"supportForward": true},
    });
    match to.conversation_kind {
        ConversationKind::Group => {
            body["openSpaceId"] = json!(format!("dtv1.card//IM_GROUP.{}", to.conversation_id));
            let mut deliver = json!({"robotCode": robot_code});
            if let Some(staff) = &to.sender_staff_id {
                deliver["atUserIds"] = json!({ staff.as_str(): to.sender_nick });
            }
            body["imGroupOpenDeliverModel"] = deliver;
        }
        ConversationKind::Direct => {
            let staff = to.sender_staff_id.as_deref().ok_or_else(|| {
                ChannelError::Unsupported(
                    "cannot deliver an AI card: the sender has no staff id".into(),
                )
            })?;
            body["openSpaceId"] = json!(format!("dtv1.card//IM_ROBOT.{staff}"));
            body["imRobotOpenDeliverModel"] =
                json!({"spaceType": "IM_ROBOT", "robotCode": robot_code});
        }
    }
    Ok(body)
}

impl CardStream {
    /// Creates and delivers the card in state PROCESSING.
    pub async fn open(
        api: Arc<OpenApi>,
        template_id: &str,
        key: &str,
        robot_code: &str,
        to: &Inbound,
    ) -> Result<CardStream, ChannelError> {
        let out_track_id = random_hex(16);
        let body = create_body(template_id, key, robot_code, &out_track_id, to)?;
        api.post(CREATE_AND_DELIVER, &body).await?;
        Ok(CardStream {
            api,
            out_track_id,
            key: key.to_string(),
            last_push: None,
            inputing: false,
            finalized: false,
        })
    }

    /// Takes over a card opened earlier (by a previous run), to finalize it. Its state is
    /// unknown, so the first push switches it to INPUTING again (a no-op for DingTalk).
    pub fn resume(api: Arc<OpenApi>, card: &CardRef) -> CardStream {
        CardStream {
            api,
            out_track_id: card.out_track_id.clone(),
            key: card.content_key.clone(),
            last_push: None,
            inputing: false,
            finalized: false,
        }
    }

    pub fn out_track_id(&self) -> &str {
        &self.out_track_id
    }

    /// The durable name of this card.
    pub fn card_ref(&self) -> CardRef {
        CardRef {
            out_track_id: self.out_track_id.clone(),
            content_key: self.key.clone(),
        }
    }

    /// Shows `full_text` (the whole answer so far). Calls closer than
    /// [`MIN_UPDATE_INTERVAL`] to the previous push are skipped; errors are logged only.
    pub async fn update(&mut self, full_text: &str) {
        if self
            .last_push
            .is_some_and(|t| t.elapsed() < MIN_UPDATE_INTERVAL)
        {
            return;
        }
        if let Err(e) = self.push(full_text, false, false).await {
            tracing::warn!(error = %e, "AI card update failed");
        }
    }

    /// Final text and FINISHED.
    pub async fn finish(mut self, full_text: &str) -> Result<(), ChannelError> {
        self.finalized = true;
        let streamed = self.push(full_text, true, false).await;
        let status = set_status(
            &self.api,
            &self.out_track_id,
            &self.key,
            FLOW_FINISHED,
            full_text,
        )
        .await;
        streamed.and(status)
    }

    /// Shows `text` and FAILED.
    pub async fn fail(mut self, text: &str) -> Result<(), ChannelError> {
        self.finalized = true;
        let _ = self.push(text, true, true).await;
        set_status(&self.api, &self.out_track_id, &self.key, FLOW_FAILED, text).await
    }

    async fn push(
        &mut self,
        content: &str,
        finalize: bool,
        error: bool,
    ) -> Result<(), ChannelError> {
        if !self.inputing {
            self.inputing = true;
            set_status(&self.api, &self.out_track_id, &self.key, FLOW_INPUTING, "").await?;
        }
        self.last_push = Some(Instant::now());
        let body = json!({"outTrackId": self.out_track_id, "guid": random_hex(16), "key": self.key,
            "content": content, "isFull": true, "isFinalize": finalize, "isError": error});
        self.api.put(STREAMING, &body).await.map(|_| ())
    }
}

async fn set_status(
    api: &OpenApi,
    out_track_id: &str,
    key: &str,
    flow: &str,
    text: &str,
) -> Result<(), ChannelError> {
    let mut params = json!({"flowStatus": flow});
    if flow != FLOW_INPUTING {
        params[key] = json!(text);
    }
    let body = json!({"outTrackId": out_track_id, "cardData": {"cardParamMap": params},
        "cardUpdateOptions": {"updateCardDataByKey": true, "updatePrivateDataByKey": false}});
    api.put(INSTANCES, &body).await.map(|_| ())
}

impl Drop for CardStream {
    fn drop(&mut self) {
        if self.finalized {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (api, id, key) = (
                self.api.clone(),
                self.out_track_id.clone(),
                self.key.clone(),
            );
            rt.spawn(async move {
                if let Err(e) = set_status(&api, &id, &key, FLOW_FAILED, "").await {
                    tracing::warn!(error = %e, "could not fail an abandoned AI card");
                }
            });
        }
    }
}
