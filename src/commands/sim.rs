//! `clawdbot sim serve|inject|outbox`: runs the DingTalk simulator ([`crate::sim`]) or
//! talks to a running one.

use std::time::Duration;

use serde_json::{json, Value};

use super::output::Output;
use crate::cli::sim::{InjectArgs, OutboxArgs, ServeArgs, SimArgs, SimCommand};
use crate::exit::{CliError, CmdResult, Code};
use crate::sim::{SimClient, SimOptions, SimServer};

pub(crate) fn command(args: &SimArgs, out: &Output) -> CmdResult {
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

async fn serve(a: &ServeArgs, out: &Output) -> CmdResult {
    let demo = SimOptions::default();
    let client_id = a.client_id.clone().unwrap_or(demo.client_id);
    let opts = SimOptions {
        listen: a.listen.clone(),
        client_id: client_id.clone(),
        client_secret: a.client_secret.clone().unwrap_or(demo.client_secret),
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
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, format!("{base}\n"))
            .and_then(|_| std::fs::rename(&tmp, p))
            .map_err(|e| {
                CliError::failure(format!("sim: cannot write port file {}: {e}", p.display()))
            })?;
    }
    let doc = json!({"base_url": base, "api_base": base, "model_base_url": format!("{base}/demo/v1"),
        "client_id": client_id});
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

async fn inject(a: &InjectArgs, out: &Output) -> CmdResult {
    let mut req = json!({"text": a.text, "msgtype": a.msgtype,
        "conversation_type": if a.group { "group" } else { "direct" }});
    let opt = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    req["conversation_id"] = opt(&a.conversation);
    req["sender_staff_id"] = opt(&a.sender_staff_id);
    req["sender_nick"] = opt(&a.nick);
    let v = SimClient::new(&a.sim).inject(&req).await?;
    let msg_id = v["msgId"].as_str().unwrap_or_default().to_string();
    // The simulator's HTTP answer speaks DingTalk's camelCase; the CLI's document is
    // snake_case like every other `--json` document (the raw payload stays out).
    let doc = json!({"msg_id": v["msgId"], "message_id": v["messageId"],
        "conversation_id": v["conversationId"], "session_webhook": v["sessionWebhook"]});
    out.result(doc, &msg_id);
    Ok(Code::Ok)
}

async fn outbox(a: &OutboxArgs, out: &Output) -> CmdResult {
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
