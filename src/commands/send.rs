//! `clawdbot send --name N --to TARGET --text T [--markdown]`: a proactive message through
//! the running daemon's channel. Exit 0 only when DingTalk accepted it; 3 when the daemon
//! is not running, 4 when it cannot be reached (decided as `daemon status` decides).

use std::time::Duration;

use serde_json::json;

use super::output::Output;
use crate::cli::SendArgs;
use crate::exit::{CliError, CmdResult, Code};
use crate::ipc::client::ClientError;
use crate::ipc::proto::ErrorKind;
use crate::ipc::{Request, Response};
use crate::paths::Layout;

pub(crate) fn send(layout: &Layout, args: &SendArgs, out: &Output) -> CmdResult {
    if args.text.trim().is_empty() {
        return Err(CliError::usage("--text: the message is empty"));
    }
    let paths = layout.daemon(&args.name)?;
    let mut client = super::daemon_status::connect(layout, &paths)?;
    client.set_timeout(Duration::from_secs(args.timeout.max(1)));
    let req = Request::Send {
        to: args.to.clone(),
        text: args.text.clone(),
        markdown: args.markdown,
    };
    match client.request(&req)? {
        Response::Sent(o) => {
            out.result(
                json!({"name": args.name, "target": o.target, "route": o.route, "process_query_key": o.process_query_key}),
                &format!("sent to {} via {}", o.target, o.route),
            );
            Ok(Code::Ok)
        }
        // A target or text the daemon cannot use is the caller's mistake (exit 2);
        // anything else means DingTalk (or the daemon) did not take the message (exit 1).
        Response::Error {
            kind: ErrorKind::BadRequest,
            message,
        } => Err(CliError::usage(format!("send refused: {message}"))),
        Response::Error { kind, message } => Err(CliError::failure(format!(
            "send failed ({}): {message}",
            kind_name(kind)
        ))
        .kind(crate::exit::ErrorKind::Refused)),
        other => Err(ClientError::unexpected(&other).into()),
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest => "bad request",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Failed => "DingTalk did not accept it",
        ErrorKind::ShuttingDown => "the daemon is shutting down",
    }
}
