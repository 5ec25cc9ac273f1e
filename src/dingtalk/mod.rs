//! The DingTalk channel: Stream mode and HTTP callback ingress, replies through session
//! webhooks and the OpenAPI, AI card streaming. Faithful to docs/dingtalk-protocol.md.
