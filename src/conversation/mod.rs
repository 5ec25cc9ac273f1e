//! Per-conversation state and prompt building: memory, policy prompt, trimming, access.
