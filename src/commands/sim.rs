//! `clawdbot sim serve|inject|outbox`: runs the DingTalk simulator ([`crate::sim`]) or
//! talks to a running one: the one `--sim` names, else the one `quickstart` runs (said
//! on stderr).

use std::time::Duration;

use serde_json::{json, Value};

use super::output::Output;
use crate::cli::sim::{InjectArgs, OutboxArgs, ServeArgs, SimArgs, SimCommand};
use crate::exit::{CliError, CmdResult, Code};
use crate::paths::Layout;
use crate::sim::{SimClient, SimOptions, SimServer};

pub(crate) fn command(layout: &Layout, args: &SimArgs, out: &Output) -> CmdResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("sim: cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        match &args.command {
            SimCommand::Serve(a) => serve(a, out).await,
            SimCommand::Inject(a) => inject(a, sim_client(layout, &a.sim, out)?, out).await,
            SimCommand::Outbox(a) => outbox(a, sim_client(layout, &a.sim, out)?, out).await,
        }
    })
}

async fn serve(a: &ServeArgs, out: &Output) -> CmdResult {
    let demo = SimOptions::default();
    let client_id = a.client_id.clone().unwrap_or(demo.client_id);
    let from_file = a.secret_file.as_deref().map(read_secret_file).transpose()?;
    let opts = SimOptions {
        listen: a.listen.clone(),
        client_id: client_id.clone(),
        client_secret: (a.client_secret.clone())
            .or(from_file.clone())
            .unwrap_or(demo.client_secret),
        admin_token: from_file,
        robot_code: a.robot_code.clone().unwrap_or_else(|| client_id.clone()),
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
        // Often in a shared /tmp: written through a new private file, never through a
        // file or link someone else left at the temporary name.
        crate::paths::write_private(p, format!("{base}\n").as_bytes())
            .map_err(|e| CliError::failure(format!("sim: cannot write the port file: {e}")))?;
    }
    if let Some(warning) = exposure_warning(server.addr) {
        out.note(&warning);
    }
    // The secret is shown only when it is the demo's (public) one, never one given by flag.
    let given = a.client_secret.is_some() || a.secret_file.is_some();
    let secret_shown = match (&a.client_secret, &a.secret_file) {
        (_, Some(file)) => format!("(the one in {}; it also guards /_sim/...)", file.display()),
        (Some(_), None) => "(the one given by --client-secret)".to_string(),
        (None, None) => SimOptions::default().client_secret,
    };
    let doc = json!({"base_url": base, "api_base": base, "model_base_url": format!("{base}/demo/v1"),
        "client_id": client_id, "demo_client_secret": (!given).then_some(&secret_shown)});
    out.result(
        doc,
        &format!(
            "clawdbot sim listening on {base}\n  api_base:      {base}\n  demo model:    {base}/demo/v1\n  client_id:     {client_id}\n  client_secret: {secret_shown}"
        ),
    );
    wait_for_signal().await;
    server.shutdown().await;
    Ok(Code::Ok)
}

/// The secret in `--secret-file` (a regular file, its text trimmed; not empty).
fn read_secret_file(path: &std::path::Path) -> Result<String, CliError> {
    let bytes = crate::fsutil::read_regular(path).map_err(|e| {
        CliError::usage(format!(
            "sim: cannot read --secret-file {}: {e}",
            path.display()
        ))
    })?;
    let secret = String::from_utf8_lossy(&bytes).trim().to_string();
    if secret.is_empty() {
        return Err(CliError::usage(format!(
            "sim: --secret-file {} is empty",
            path.display()
        )));
    }
    Ok(secret)
}

/// The warning for a simulator reachable beyond this machine (`None` on loopback): it
/// takes well-known demo credentials and shows whatever the bot sends.
fn exposure_warning(addr: std::net::SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "warning: the simulator listens on {addr}, beyond this machine: anyone who can \
             reach it can use its credentials and read what the bot sends (use 127.0.0.1:PORT)"
        )
    })
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

/// The simulator to talk to: `--sim`, else the one `quickstart` runs (said on stderr).
/// The quickstart simulator's admin token (in its state folder) goes with the client when
/// that simulator is the one talked to.
fn sim_client(
    layout: &Layout,
    given: &Option<String>,
    out: &Output,
) -> Result<SimClient, CliError> {
    let demo = super::quickstart::running_sim(layout)?;
    if let Some(url) = given {
        let token = demo
            .filter(|d| d.url.trim_end_matches('/') == url.trim_end_matches('/'))
            .and_then(|d| d.token);
        return Ok(SimClient::new(url).with_token(token));
    }
    match demo {
        Some(demo) => {
            out.note(&format!(
                "using the quickstart simulator at {} (recorded in {}); pass --sim URL for another",
                demo.url,
                demo.recorded_in.display()
            ));
            Ok(SimClient::new(&demo.url).with_token(demo.token))
        }
        None => Err(CliError::usage(format!(
            "no --sim given and no quickstart simulator is running; pass --sim URL (what \
             `sim serve` prints) or start the demo with `{} quickstart`",
            super::invocation(layout)
        ))),
    }
}

async fn inject(a: &InjectArgs, client: SimClient, out: &Output) -> CmdResult {
    if a.msgtype == "text" && a.text.trim().is_empty() {
        return Err(CliError::usage(
            "sim inject: a text message needs --text TEXT (or pick another --msgtype)",
        ));
    }
    let mut req = json!({"text": a.text, "msgtype": a.msgtype,
        "conversation_type": if a.group { "group" } else { "direct" }});
    let opt = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    req["conversation_id"] = opt(&a.conversation);
    req["sender_staff_id"] = opt(&a.sender_staff_id);
    req["sender_nick"] = opt(&a.nick);
    let before = if a.wait {
        client.outbox().await?.len()
    } else {
        0
    };
    let v = client.inject(&req).await?;
    let msg_id = v["msgId"].as_str().unwrap_or_default().to_string();
    // The simulator's HTTP answer speaks DingTalk's camelCase; the CLI's document is
    // snake_case like every other `--json` document (the raw payload stays out).
    let mut doc = json!({"msg_id": v["msgId"], "message_id": v["messageId"],
        "conversation_id": v["conversationId"], "session_webhook": v["sessionWebhook"]});
    if !a.wait {
        out.result(doc, &msg_id);
        return Ok(Code::Ok);
    }
    let conversation = v["conversationId"].as_str().unwrap_or_default().to_string();
    out.note(&format!(
        "sent {msg_id}; waiting for the bot's reply in {conversation} (up to {} s)",
        a.wait_timeout
    ));
    let reply = wait_reply(&client, before, &conversation, a.wait_timeout)
        .await
        .map_err(|e| {
            let cause = CliError::from(e);
            CliError::new(
                cause.code,
                format!(
                    "no reply from the bot to {msg_id} within {} s ({}); is the bot \
                     connected? see `daemon status`",
                    a.wait_timeout, cause.message
                ),
            )
            .kind(cause.kind)
        })?;
    let text = reply["text"].as_str().unwrap_or_default().to_string();
    doc["reply_text"] = json!(text);
    out.result(doc, &format!("{msg_id}\nreply: {}", indent_lines(&text)));
    Ok(Code::Ok)
}

/// A message text on one entry's lines: its later lines indented, so they do not read as
/// entries of their own (a group reply ends with an `@staffid` line).
fn indent_lines(text: &str) -> String {
    text.replace('\n', "\n    ")
}

/// The first outbox entry after the first `before` that went to `conversation`.
async fn wait_reply(
    client: &SimClient,
    before: usize,
    conversation: &str,
    timeout_secs: u64,
) -> Result<Value, crate::sim::client::SimClientError> {
    let in_conversation = |v: &Value| -> Option<Value> {
        v["entries"]
            .as_array()?
            .iter()
            .skip(before)
            .find(|e| e["conversation_id"] == conversation)
            .cloned()
    };
    let v = client
        .wait_for("/_sim/outbox", Duration::from_secs(timeout_secs), |v| {
            in_conversation(v).is_some()
        })
        .await?;
    Ok(in_conversation(&v).unwrap_or_default())
}

async fn outbox(a: &OutboxArgs, c: SimClient, out: &Output) -> CmdResult {
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
                indent_lines(e["text"].as_str().unwrap_or(""))
            )
        })
        .collect();
    out.result(json!({"entries": entries}), &human.join("\n"));
    Ok(Code::Ok)
}

#[cfg(test)]
mod tests {
    use super::exposure_warning;

    #[test]
    fn only_a_listener_beyond_loopback_is_warned_about() {
        for quiet in ["127.0.0.1:9", "127.0.0.2:9", "[::1]:9"] {
            assert_eq!(exposure_warning(quiet.parse().unwrap()), None, "{quiet}");
        }
        for exposed in ["0.0.0.0:9", "192.168.1.4:9", "[::]:9"] {
            let w = exposure_warning(exposed.parse().unwrap()).expect(exposed);
            assert!(w.contains(exposed) && w.contains("127.0.0.1"), "{w}");
        }
    }
}
