//! `clawdbot quickstart`: the whole path on one machine with no account and no model.
//!
//! 1. the simulator runs as a managed daemon (`quickstart-sim`, a supervised `sim serve`
//!    on a fixed loopback port, which also serves the demo echo model under `/demo/v1`);
//! 2. a demo config is written (mode 0600: it holds the demo secret);
//! 3. the bot daemon (`quickstart-bot`) starts and connects to the simulator;
//! 4. a simulated group message that @-mentions the bot is injected, and the bot's reply
//!    is read back from the simulator's outbox;
//! 5. the healthcheck runs, and the commands that stop everything are printed.
//!
//! Both daemons are forked before any async runtime or thread exists in this process.
//!
//! Invariant: the demo keeps to its own folder ([`demo_folder`], announced first): its
//! config, state, logs and sockets are never in the production folders (`/etc/clawdbot`,
//! `/var/lib/clawdbot`... for root), and `quickstart --stop --clean` removes all of it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::output::Output;
use crate::cli::{HealthcheckArgs, LaunchArgs, QuickstartArgs};
use crate::exit::{CliError, CmdResult, Code, ErrorKind};
use crate::paths::{io_error, Layout};
use crate::sim::client::SimClient;

const SIM_NAME: &str = "quickstart-sim";
const BOT_NAME: &str = "quickstart-bot";
const CONVERSATION: &str = "cidQuickstartDemo==";
const CLIENT_ID: &str = "dingquickstart";
/// How long the bot may take to connect to the simulator.
const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// How long the bot may take to answer the demo message (the demo model's 12 s timeout
/// and the fallback reply fit in it).
const REPLY_WAIT: Duration = Duration::from_secs(20);

pub(crate) fn quickstart(user_layout: &Layout, args: &QuickstartArgs, out: &Output) -> CmdResult {
    if args.clean {
        return stop_and_clean(user_layout, out);
    }
    let demo = demo_folder(user_layout)?;
    out.note(&format!(
        "demo folder {} (stop and remove it with: {} quickstart --stop --clean)",
        demo.display(),
        super::invocation(user_layout)
    ));
    let layout = &Layout::resolve(Some(&demo))?;
    let me = super::invocation(layout);
    let sim_url = start_simulator(layout, &me, out)?;
    let config_path = write_demo_config(layout, &sim_url, args, out)?;
    start_bot(layout, &config_path, out)?;
    let sim = SimClient::new(&sim_url).with_token(Some(demo_secret(layout)?));
    let reply = ask_the_bot(sim, &args.text, &me, out)?;
    let health_code = check_health(layout, out)?;
    if args.stop {
        stop_both(layout, out)?;
    }
    let stop = vec![
        format!("{me} daemon stop --name {BOT_NAME}"),
        format!("{me} daemon stop --name {SIM_NAME}"),
    ];
    let human = if args.stop {
        "Stopped the bot and the simulator.".to_string()
    } else {
        format!(
            "The bot and the simulator keep running. Try:\n  {me} sim inject --group --conversation {CONVERSATION} --text \"hi\" --wait\n  {me} sim outbox\n  {me} conversations --name {BOT_NAME}\n  {me} daemon status\nStop everything with:\n  {}\n  {}",
            stop[0], stop[1]
        )
    };
    let fields = json!({"sim_url": sim_url, "config_path": config_path.display().to_string(),
               "demo_folder": demo.display().to_string(), "removed": false,
               "question": args.text, "reply": reply, "healthy": health_code == Code::Ok,
               "stopped": args.stop, "stop_commands": stop});
    if health_code == Code::Ok {
        out.result(fields, &human);
        return Ok(Code::Ok);
    }
    let failure = CliError::new(health_code, "the demo bot's healthcheck did not pass")
        .kind(ErrorKind::CheckFailed)
        .fix(format!("{me} healthcheck --name {BOT_NAME}"));
    Ok(out.failed_result(fields, &human, &failure))
}

/// Step 1: the simulator as a managed daemon, reused when a previous quickstart left it
/// running; returns its base URL once it listens.
fn start_simulator(layout: &Layout, me: &str, out: &Output) -> Result<String, CliError> {
    let sim_paths = layout.daemon(SIM_NAME)?;
    sim_paths.ensure_state_dir()?;
    demo_secret(layout)?;
    let url_file = sim_paths.state.join("url");
    let reused = std::fs::read_to_string(&url_file)
        .ok()
        .filter(|_| running(layout, SIM_NAME));
    let sim_url = match reused {
        Some(url) => {
            let url = url.trim().to_string();
            out.note(&format!("reusing the simulator already running on {url}"));
            url
        }
        None => {
            fresh_demo_secret(layout)?;
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let exe = std::env::current_exe()
                .map_err(|e| CliError::failure(format!("cannot find this program: {e}")))?;
            let exec = format!(
                "'{}' sim serve --listen 127.0.0.1:{port} --client-id {CLIENT_ID} --secret-file '{}' --ping-interval-ms 30000",
                exe.display(),
                secret_file(layout)?.display()
            );
            let launch = LaunchArgs {
                name: SIM_NAME.into(),
                exec: Some(exec),
                health_url: Some(format!("{url}/_sim/health")),
                ..Default::default()
            };
            out.note(&format!("starting the DingTalk simulator on {url}"));
            let silent = out.silent();
            super::stop_daemon(layout, SIM_NAME, Duration::from_secs(5), &silent, true)?;
            super::start_daemon(layout, &launch, Duration::from_secs(20), true, &silent)?;
            std::fs::write(&url_file, &url).map_err(|e| io_error("write", &url_file, e))?;
            url
        }
    };
    wait_listening(&sim_url, Duration::from_secs(15), me)?;
    Ok(sim_url)
}

/// Step 2: the demo config under the config folder; returns its path.
fn write_demo_config(
    layout: &Layout,
    sim_url: &str,
    args: &QuickstartArgs,
    out: &Output,
) -> Result<PathBuf, CliError> {
    let model_base = args
        .model_base_url
        .clone()
        .unwrap_or_else(|| format!("{sim_url}/demo/v1"));
    let config_path = layout.config_dir.join(format!("{BOT_NAME}.yaml"));
    crate::paths::ensure_parent(&config_path)?;
    crate::paths::write_private(
        &config_path,
        demo_config(sim_url, &model_base, &args.model, &demo_secret(layout)?).as_bytes(),
    )?;
    out.note(&format!(
        "wrote the demo config {} (mode 0600)",
        config_path.display()
    ));
    Ok(config_path)
}

/// Step 3: the bot daemon, restarted so it picks up the demo config.
fn start_bot(layout: &Layout, config_path: &Path, out: &Output) -> Result<(), CliError> {
    let silent = out.silent();
    super::stop_daemon(layout, BOT_NAME, Duration::from_secs(10), &silent, true)?;
    let launch = LaunchArgs {
        name: BOT_NAME.into(),
        config: Some(config_path.to_path_buf()),
        ..Default::default()
    };
    out.note("starting the bot daemon");
    super::start_daemon(layout, &launch, Duration::from_secs(20), true, &silent)?;
    Ok(())
}

/// Step 4: one message and the bot's reply, printed as an exchange (the async part of
/// this process starts only now, after both daemons were forked).
fn ask_the_bot(sim: SimClient, text: &str, me: &str, out: &Output) -> Result<String, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    let reply = rt.block_on(converse(sim, text, me, out))?;
    if !out.json {
        let exchange = format!(
            "\n  Li Lei in group \"Quickstart demo\": @bot {}\n  bot's reply (session webhook):     {}\n\n",
            text,
            reply.lines().next().unwrap_or_default()
        );
        super::output::write_stdout(exchange.as_bytes());
    }
    Ok(reply)
}

/// Step 5: the bot's healthcheck (its lines on stderr, or nothing with `--json`).
fn check_health(layout: &Layout, out: &Output) -> CmdResult {
    let health = HealthcheckArgs {
        name: Some(BOT_NAME.into()),
        config: None,
        timeout: 10,
    };
    let (quiet, silent) = (out.without_spinners(), out.silent());
    super::healthcheck::healthcheck(layout, &health, if out.json { &silent } else { &quiet })
}

/// `--stop --clean`: stops both demo daemons and removes the demo folder; runs no demo
/// (and creates nothing when there is no demo folder).
fn stop_and_clean(user_layout: &Layout, out: &Output) -> CmdResult {
    let demo = demo_folder_path(user_layout)?;
    if !demo.exists() {
        out.result(
            json!({"ok": true, "demo_folder": demo.display().to_string(), "removed": false,
                   "stopped": false}),
            &format!(
                "No demo folder at {}: nothing to stop or remove.",
                demo.display()
            ),
        );
        return Ok(Code::Ok);
    }
    let layout = Layout::resolve(Some(&demo))?;
    refuse_foreign_daemons(&layout, &demo)?;
    let stopped = [BOT_NAME, SIM_NAME].iter().any(|n| running(&layout, n));
    stop_both(&layout, out)?;
    std::fs::remove_dir_all(&demo).map_err(|e| io_error("remove", &demo, e))?;
    let what = match stopped {
        true => "Stopped the bot and the simulator",
        false => "Nothing was running",
    };
    out.result(
        json!({"ok": true, "demo_folder": demo.display().to_string(), "removed": true,
               "stopped": stopped}),
        &format!("{what}; removed {}.", demo.display()),
    );
    Ok(Code::Ok)
}

/// Refuses to clean a demo folder that holds a daemon that is not the demo's (made there
/// by hand with `--home DEMO`), running or stopped: removing the folder would pull its
/// config, journal and log from under it, or delete them. Nothing is stopped or removed
/// then.
fn refuse_foreign_daemons(layout: &Layout, demo: &Path) -> Result<(), CliError> {
    let foreign: Vec<String> = layout
        .daemon_names()?
        .into_iter()
        .filter(|n| n != BOT_NAME && n != SIM_NAME)
        .collect();
    let Some(first) = foreign.first() else {
        return Ok(());
    };
    let me = super::invocation(layout);
    let (what, fix) = match foreign.iter().find(|n| running(layout, n)) {
        Some(live) => (
            "runs daemons that are not the demo's",
            format!("{me} daemon stop --name {live}"),
        ),
        None => (
            "holds stopped daemons that are not the demo's (their files would be removed \
             with the folder; `daemon rm` forgets one, then the clean removes its files too)",
            format!("{me} daemon rm --name {first}"),
        ),
    };
    Err(CliError::failure(format!(
        "{} also {what} ({}): nothing stopped or removed",
        demo.display(),
        foreign.join(", ")
    ))
    .fix(fix))
}

/// `--stop`: both daemons, the bot first.
fn stop_both(layout: &Layout, out: &Output) -> Result<(), CliError> {
    let silent = out.silent();
    super::stop_daemon(layout, BOT_NAME, Duration::from_secs(10), &silent, true)?;
    super::stop_daemon(layout, SIM_NAME, Duration::from_secs(10), &silent, true)?;
    Ok(())
}

/// The demo's own folder, made private (0700): `quickstart` under `--home DIR`, else under
/// the user's data folder (`~/.local/share/clawdbot/quickstart`, for root too): never the
/// folders a production bot uses.
fn demo_folder(layout: &Layout) -> Result<PathBuf, CliError> {
    let folder = demo_folder_path(layout)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&folder)
        .map_err(|e| io_error("create folder", &folder, e))?;
    Ok(folder)
}

/// Where [`demo_folder`] is, without creating it.
pub(crate) fn demo_folder_path(layout: &Layout) -> Result<PathBuf, CliError> {
    match &layout.home {
        Some(home) => Ok(home.join("quickstart")),
        None => directories::ProjectDirs::from("", "", "clawdbot")
            .map(|d| d.data_dir().join("quickstart"))
            .ok_or_else(|| {
                CliError::usage(
                    "quickstart: no home folder to keep the demo in (HOME is not set); pass --home DIR",
                )
            }),
    }
}

/// How to reach the quickstart demo from a home that is not the demo's own: when daemon
/// `name` (with `None`: any daemon) is unknown in `layout` but known in the demo folder
/// under it, this program's invocation with the demo's `--home` (what a command the user
/// typed without it should have been); `None` otherwise.
pub(crate) fn demo_invocation_for(layout: &Layout, name: Option<&str>) -> Option<String> {
    let demo = demo_folder_path(layout).ok()?;
    if layout.home.as_deref() == Some(demo.as_path()) || !demo.is_dir() {
        return None;
    }
    let here = layout.daemon_names().unwrap_or_default();
    let demo_layout = Layout::resolve(Some(&demo)).ok()?;
    let there = demo_layout.daemon_names().unwrap_or_default();
    let found = match name {
        Some(name) => !here.iter().any(|n| n == name) && there.iter().any(|n| n == name),
        None => here.is_empty() && !there.is_empty(),
    };
    found.then(|| super::invocation(&demo_layout))
}

/// The simulator a quickstart left running.
pub(crate) struct DemoSim {
    pub(crate) url: String,
    /// The file that records the URL.
    pub(crate) recorded_in: PathBuf,
    /// Its admin token (the demo secret), when this user can read it.
    pub(crate) token: Option<String>,
}

/// The file holding the demo's secret: the app secret the simulator takes and its admin
/// token, in the simulator's state folder (mode 0600, inside the 0700 demo folder), read
/// by the simulator through `--secret-file` (never on a command line, where `ps` shows it).
fn secret_file(layout: &Layout) -> Result<PathBuf, CliError> {
    Ok(layout.daemon(SIM_NAME)?.state.join("secret"))
}

/// The demo folder's secret: the one its file holds, else a new one
/// ([`fresh_demo_secret`]).
fn demo_secret(layout: &Layout) -> Result<String, CliError> {
    if let Ok(bytes) = crate::fsutil::read_regular(&secret_file(layout)?) {
        let secret = String::from_utf8_lossy(&bytes).trim().to_string();
        if !secret.is_empty() {
            return Ok(secret);
        }
    }
    fresh_demo_secret(layout)
}

/// Writes and returns a new random demo secret (128 bits from the OS's generator, as 32
/// hex digits). Called for every new simulator: a bot left reconnecting to a dead
/// simulator's port sends its secret to whoever listens there next (another local user),
/// so a secret never outlives the simulator it was made for.
fn fresh_demo_secret(layout: &Layout) -> Result<String, CliError> {
    let secret = crate::random_hex::random_hex(16);
    crate::paths::write_private(&secret_file(layout)?, secret.as_bytes())?;
    Ok(secret)
}

/// The simulator a quickstart left running (URL, the file recording it, its token):
/// looked for in `layout` itself (the commands quickstart prints carry `--home DEMO`), then
/// in the demo folder under it (a plain `clawdbot sim ...`); `None` when neither runs one.
pub(crate) fn running_sim(layout: &Layout) -> Result<Option<DemoSim>, CliError> {
    let demo = demo_folder_path(layout)?;
    let mut layouts = vec![layout.clone()];
    if demo.is_dir() {
        layouts.push(Layout::resolve(Some(&demo))?);
    }
    for layout in &layouts {
        let url_file = layout.daemon(SIM_NAME)?.state.join("url");
        let url = std::fs::read_to_string(&url_file)
            .ok()
            .filter(|_| running(layout, SIM_NAME));
        if let Some(url) = url {
            let token = crate::fsutil::read_regular(&secret_file(layout)?)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).trim().to_string());
            return Ok(Some(DemoSim {
                url: url.trim().to_string(),
                recorded_in: url_file,
                token,
            }));
        }
    }
    Ok(None)
}

fn running(layout: &Layout, name: &str) -> bool {
    layout
        .daemon(name)
        .map(|p| {
            matches!(
                crate::daemon::probe(&p),
                crate::daemon::Probe::Running { .. }
            )
        })
        .unwrap_or(false)
}

/// A loopback port that is free right now.
fn free_port() -> Result<u16, CliError> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| CliError::failure(format!("cannot find a free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| CliError::failure(format!("cannot find a free port: {e}")))
}

/// Polls the simulator's port until it accepts connections.
fn wait_listening(url: &str, limit: Duration, me: &str) -> Result<(), CliError> {
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| CliError::failure(format!("bad simulator address {url}: {e}")))?;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CliError::failure(format!(
        "the simulator at {url} is not listening after {} s; see `{me} daemon logs --name {SIM_NAME}`",
        limit.as_secs()
    )))
}

fn demo_config(sim_url: &str, model_base: &str, model: &str, secret: &str) -> String {
    format!(
        r#"# Written by `clawdbot quickstart`: the bot talks to the local simulator.
models:
  demo:
    kind: openai_compatible
    base_url: "{model_base}"
    model: "{model}"
    timeout_ms: 12000
routing:
  defaults:
    model: demo
limits:
  max_concurrency_per_model:
    demo: 2
channel:
  dingtalk:
    client_id: "{CLIENT_ID}"
    client_secret: "{secret}"
    api_base: "{sim_url}"
    targets:
      test-group: "{CONVERSATION}"
"#
    )
}

/// Waits for the bot's channel, injects one group message, returns the reply text.
async fn converse(sim: SimClient, text: &str, me: &str, out: &Output) -> Result<String, CliError> {
    out.note(&format!(
        "waiting for the bot to connect to the simulator (up to {} s)",
        CONNECT_WAIT.as_secs()
    ));
    sim.wait_for("/_sim/connections", CONNECT_WAIT, |v| {
        v["connections"].as_array().is_some_and(|c| c.iter().any(|c| c["live"] == true))
    })
    .await
    .map_err(|e| CliError::failure(format!("the bot did not connect to the simulator: {e}; see `{me} daemon logs --name {BOT_NAME}`")))?;
    let before = sim.outbox().await?.len();
    let injected = sim
        .inject(&json!({"text": text, "conversation_type": "group", "conversation_id": CONVERSATION,
                        "conversation_title": "Quickstart demo", "sender_nick": "Li Lei", "sender_staff_id": "0423001"}))
        .await?;
    let msg_id = injected["msgId"].as_str().unwrap_or_default().to_string();
    out.note(&format!(
        "sent a group message that @-mentions the bot; waiting for its reply (up to {} s)",
        REPLY_WAIT.as_secs()
    ));
    let entries = sim.wait_outbox(before + 1, REPLY_WAIT).await.map_err(|e| {
        CliError::failure(format!(
            "no reply from the bot for {msg_id}: {e}; see `{me} daemon logs --name {BOT_NAME}`"
        ))
    })?;
    let reply: Option<&Value> = entries
        .iter()
        .skip(before)
        .find(|e| e["conversation_id"] == CONVERSATION);
    Ok(reply
        .and_then(|r| r["text"].as_str())
        .unwrap_or_default()
        .to_string())
}
