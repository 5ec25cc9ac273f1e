//! `clawdbot sim`: a faithful local DingTalk (docs/dingtalk-protocol.md §9): the
//! Stream gateway, OpenAPI, session and custom-robot webhooks, AI cards, an admin API under
//! `/_sim/...`, and the demo model at `/demo/v1`. Loopback only by default.

// Helpers return ready-made axum error `Response`s on the (cold) rejection path; boxing
// them would only add noise.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod cards;
pub mod client;
pub mod gateway;
pub mod openapi;
pub mod reply;
pub mod server;
pub mod sign;
pub mod state;
pub mod webhooks;

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

pub use client::SimClient;
pub use server::SimServer;
pub use state::SimOptions;

use crate::exit::{CliError, CmdResult, Code};

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the simulator until interrupted (prints its base URL).
    Serve(ServeArgs),
    /// Send a message to the bot as a simulated user (prints the msgId).
    Inject(InjectArgs),
    /// Print what the bot sent (every message, with route and body).
    Outbox(OutboxArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: String,
    /// Write the base URL to this file once listening.
    #[arg(long, value_name = "FILE")]
    pub port_file: Option<std::path::PathBuf>,
    #[arg(long, default_value = state::DEFAULT_CLIENT_ID, value_name = "ID")]
    pub client_id: String,
    #[arg(long, default_value = state::DEFAULT_CLIENT_SECRET, value_name = "SECRET")]
    pub client_secret: String,
    /// Robot code (defaults to the client id).
    #[arg(long, value_name = "CODE")]
    pub robot_code: Option<String>,
    /// SYSTEM ping period per connection (0 = never).
    #[arg(long, default_value_t = 30_000, value_name = "MS", value_parser = sim_millis())]
    pub ping_interval_ms: u64,
    /// Redeliver bot messages not ACKed after this long.
    #[arg(long, value_name = "MS", value_parser = sim_millis())]
    pub redeliver_unacked_ms: Option<u64>,
    /// Send `disconnect` this long after each connection opens.
    #[arg(long, value_name = "MS", value_parser = sim_millis())]
    pub disconnect_every_ms: Option<u64>,
    /// Close a connection this long after its `disconnect`.
    #[arg(long, default_value_t = 10_000, value_name = "MS", value_parser = sim_millis())]
    pub disconnect_grace_ms: u64,
    /// Session webhook lifetime.
    #[arg(long, default_value_t = 5_400_000, value_name = "MS", value_parser = sim_millis())]
    pub session_ttl_ms: u64,
    /// Stream ticket lifetime (single use; DingTalk's last 90 s).
    #[arg(long, default_value_t = 90_000, value_name = "MS", value_parser = sim_millis())]
    pub ticket_ttl_ms: u64,
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Simulator base URL.
    #[arg(long, value_name = "URL")]
    pub sim: String,
    #[arg(long, default_value = "", value_name = "TEXT")]
    pub text: String,
    /// Conversation id (default: one per chat kind / sender).
    #[arg(long, value_name = "CID")]
    pub conversation: Option<String>,
    /// A group chat (the bot was @-mentioned).
    #[arg(long, conflicts_with = "direct")]
    pub group: bool,
    /// A 1:1 chat (default).
    #[arg(long)]
    pub direct: bool,
    #[arg(long, value_name = "ID")]
    pub sender_staff_id: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub nick: Option<String>,
    /// text, audio, richText, picture, video, file, unknownMsgType.
    #[arg(long, default_value = "text", value_name = "TYPE")]
    pub msgtype: String,
}

#[derive(Debug, Args)]
pub struct OutboxArgs {
    #[arg(long, value_name = "URL")]
    pub sim: String,
    /// Wait until at least N messages are in the outbox.
    #[arg(long, value_name = "N")]
    pub wait: Option<usize>,
    /// Longest wait, seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=crate::cli::MAX_TIMEOUT_SECS))]
    pub timeout: u64,
}

/// Milliseconds from 0 to a day: larger values would overflow the simulator's deadlines.
fn sim_millis() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=crate::cli::MAX_TIMEOUT_SECS * 1000)
}

pub fn command(
    args: &SimArgs,
    _layout: &crate::paths::Layout,
    out: &crate::commands::output::Output,
) -> CmdResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("sim: cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        match &args.command {
            SimCommand::Serve(a) => serve(a, out).await,
            SimCommand::Inject(a) => inject(a, out).await,
            SimCommand::Outbox(a) => outbox(a, out).await,
        }
    })
}

async fn serve(a: &ServeArgs, out: &crate::commands::output::Output) -> CmdResult {
    let opts = SimOptions {
        listen: a.listen.clone(),
        client_id: a.client_id.clone(),
        client_secret: a.client_secret.clone(),
        robot_code: a.robot_code.clone().unwrap_or_else(|| a.client_id.clone()),
        ping_interval_ms: a.ping_interval_ms,
        redeliver_unacked_ms: a.redeliver_unacked_ms,
        disconnect_every_ms: a.disconnect_every_ms,
        disconnect_grace_ms: a.disconnect_grace_ms,
        session_ttl_ms: a.session_ttl_ms,
        ticket_ttl_ms: a.ticket_ttl_ms,
        ..SimOptions::default()
    };
    let server = SimServer::start(opts).await?;
    let base = server.base_url().to_string();
    if let Some(p) = &a.port_file {
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, format!("{base}\n"))
            .and_then(|_| std::fs::rename(&tmp, p))
            .map_err(|e| {
                CliError::failure(format!("sim: cannot write port file {}: {e}", p.display()))
            })?;
    }
    let doc = json!({"base_url": base, "api_base": base, "model_base_url": format!("{base}/demo/v1"),
        "client_id": a.client_id});
    out.result(
        doc,
        &format!(
            "clawdbot sim listening on {base}\n  api_base: {base}\n  demo model: {base}/demo/v1"
        ),
    );
    wait_for_signal().await;
    server.shutdown().await;
    Ok(Code::Ok)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn inject(a: &InjectArgs, out: &crate::commands::output::Output) -> CmdResult {
    let mut req = json!({"text": a.text, "msgtype": a.msgtype,
        "conversation_type": if a.group { "group" } else { "direct" }});
    let opt = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    req["conversation_id"] = opt(&a.conversation);
    req["sender_staff_id"] = opt(&a.sender_staff_id);
    req["sender_nick"] = opt(&a.nick);
    let v = SimClient::new(&a.sim).inject(&req).await?;
    let msg_id = v["msgId"].as_str().unwrap_or_default().to_string();
    out.result(v, &msg_id);
    Ok(Code::Ok)
}

async fn outbox(a: &OutboxArgs, out: &crate::commands::output::Output) -> CmdResult {
    let c = SimClient::new(&a.sim);
    let entries = match a.wait {
        Some(n) => c.wait_outbox(n, Duration::from_secs(a.timeout)).await?,
        None => c.outbox().await?,
    };
    let human: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "#{} {} {}",
                e["seq"],
                e["route"].as_str().unwrap_or("?"),
                e["text"].as_str().unwrap_or("")
            )
        })
        .collect();
    out.result(json!({"entries": entries}), &human.join("\n"));
    Ok(Code::Ok)
}
