//! The flags of `clawdbot sim` (run by `commands::sim`).

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    #[command(subcommand)]
    pub(crate) command: SimCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SimCommand {
    /// Serve the simulator until interrupted (prints its base URL).
    Serve(ServeArgs),
    /// Send a message to the bot as a simulated user (prints the msgId).
    Inject(InjectArgs),
    /// Print what the bot sent (every message, with route and body).
    Outbox(OutboxArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (loopback by default; port 0 = any free port). Any other
    /// address is warned about: the simulator accepts its demo credentials from anyone
    /// who can reach it.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub(crate) listen: String,
    /// Write the base URL to this file once listening.
    #[arg(long, value_name = "FILE")]
    pub(crate) port_file: Option<std::path::PathBuf>,
    /// The app's client id (default: the simulator's demo app).
    #[arg(long, value_name = "ID")]
    pub(crate) client_id: Option<String>,
    /// The app's client secret (default: the demo app's).
    #[arg(long, value_name = "SECRET")]
    pub(crate) client_secret: Option<String>,
    /// Read the app's client secret from FILE instead (not on the command line, where
    /// `ps` shows it to every user); that secret then also guards the admin API
    /// (`/_sim/...`: inject, outbox), which answers only `Authorization: Bearer SECRET`.
    #[arg(long, value_name = "FILE", conflicts_with = "client_secret")]
    pub(crate) secret_file: Option<std::path::PathBuf>,
    /// Robot code (defaults to the client id).
    #[arg(long, value_name = "CODE")]
    pub(crate) robot_code: Option<String>,
    /// SYSTEM ping period per connection (0 = never).
    #[arg(long, default_value_t = 30_000, value_name = "MS", value_parser = sim_millis())]
    pub(crate) ping_interval_ms: u64,
    /// Redeliver bot messages not ACKed after this long.
    #[arg(long, value_name = "MS", value_parser = sim_millis())]
    pub(crate) redeliver_unacked_ms: Option<u64>,
    /// Send `disconnect` this long after each connection opens.
    #[arg(long, value_name = "MS", value_parser = sim_millis())]
    pub(crate) disconnect_every_ms: Option<u64>,
    /// Close a connection this long after its `disconnect`.
    #[arg(long, default_value_t = 10_000, value_name = "MS", value_parser = sim_millis())]
    pub(crate) disconnect_grace_ms: u64,
    /// Session webhook lifetime.
    #[arg(long, default_value_t = 5_400_000, value_name = "MS", value_parser = sim_millis())]
    pub(crate) session_ttl_ms: u64,
    /// Stream ticket lifetime (single use; DingTalk's last 90 s).
    #[arg(long, default_value_t = 90_000, value_name = "MS", value_parser = sim_millis())]
    pub(crate) ticket_ttl_ms: u64,
}

#[derive(Debug, Args)]
pub(crate) struct InjectArgs {
    /// Simulator base URL (or HOST:PORT); default: the simulator `quickstart` runs.
    #[arg(long, value_name = "URL", value_parser = crate::sim::client::parse_sim_url)]
    pub(crate) sim: Option<String>,
    #[arg(long, default_value = "", value_name = "TEXT")]
    pub(crate) text: String,
    /// Conversation id (default: one per chat kind / sender).
    #[arg(long, value_name = "CID")]
    pub(crate) conversation: Option<String>,
    /// A group chat (the bot was @-mentioned).
    #[arg(long, conflicts_with = "direct")]
    pub(crate) group: bool,
    /// A 1:1 chat (default).
    #[arg(long)]
    pub(crate) direct: bool,
    #[arg(long, value_name = "ID")]
    pub(crate) sender_staff_id: Option<String>,
    #[arg(long, value_name = "NAME")]
    pub(crate) nick: Option<String>,
    /// text, audio, richText, picture, video, file, unknownMsgType.
    #[arg(long, default_value = "text", value_name = "TYPE", value_parser = SIM_MSGTYPES)]
    pub(crate) msgtype: String,
    /// Wait for the bot's reply in this conversation and print it (exit 1 when none
    /// comes within --wait-timeout).
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: the longest wait for the reply, seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS", requires = "wait",
          value_parser = clap::value_parser!(u64).range(1..=super::MAX_TIMEOUT_SECS))]
    pub(crate) wait_timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct OutboxArgs {
    /// Simulator base URL (or HOST:PORT); default: the simulator `quickstart` runs.
    #[arg(long, value_name = "URL", value_parser = crate::sim::client::parse_sim_url)]
    pub(crate) sim: Option<String>,
    /// Wait until at least N messages are in the outbox.
    #[arg(long, value_name = "N")]
    pub(crate) wait: Option<usize>,
    /// Longest wait, seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=super::MAX_TIMEOUT_SECS))]
    pub(crate) timeout: u64,
}

/// The message types the simulator builds (`sim inject --msgtype`); clap refuses others
/// and completes these.
const SIM_MSGTYPES: [&str; 7] = [
    "text",
    "audio",
    "richText",
    "picture",
    "video",
    "file",
    "unknownMsgType",
];

/// Milliseconds from 0 to a day: larger values would overflow the simulator's deadlines.
fn sim_millis() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(0..=super::MAX_TIMEOUT_SECS * 1000)
}
