//! The simulator's shared state: options, issued tickets and tokens, live connections,
//! injected messages, sessions, the outbox, ACKs, card states and pending faults.
//!
//! Invariant: everything the bot sent or answered is recorded here, so tests assert on
//! state instead of timing. All collections are bounded by what tests inject.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use crate::random_hex::random_hex;

/// Tunables of one simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub listen: String,
    pub client_id: String,
    pub client_secret: String,
    pub robot_code: String,
    /// SYSTEM ping period per connection (0 = never).
    pub ping_interval_ms: u64,
    /// Redeliver un-ACKed bot messages after this long (None = never).
    pub redeliver_unacked_ms: Option<u64>,
    /// Send `disconnect` this long after each connection opens (None = never).
    pub disconnect_every_ms: Option<u64>,
    /// Close a connection this long after its `disconnect`.
    pub disconnect_grace_ms: u64,
    pub session_ttl_ms: u64,
    pub ticket_ttl_ms: u64,
    pub token_ttl_secs: u64,
    /// Per-app per-API limit of the OpenAPI (calls per second).
    pub qps_limit: usize,
    /// When set, the admin API answers only requests carrying it ([`super::admin_token`]).
    pub admin_token: Option<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: "127.0.0.1:0".into(),
            client_id: DEFAULT_CLIENT_ID.into(),
            client_secret: DEFAULT_CLIENT_SECRET.into(),
            robot_code: DEFAULT_CLIENT_ID.into(),
            ping_interval_ms: 30_000,
            redeliver_unacked_ms: None,
            disconnect_every_ms: None,
            disconnect_grace_ms: 10_000,
            session_ttl_ms: 5_400_000,
            ticket_ttl_ms: 90_000,
            token_ttl_secs: 7_200,
            qps_limit: 20,
            admin_token: None,
        }
    }
}

pub const DEFAULT_CLIENT_ID: &str = "dingsimclient";
pub const DEFAULT_CLIENT_SECRET: &str = "sim-client-secret";

/// Errors to inject: each counter fails that many of the next matching calls.
///
/// Invariant: every field is a `u32` countdown; [`Faults::merge`] adds to all of them and
/// [`take`] is the only way one is consumed. Unknown names are refused on input, so a typo
/// in `POST /_sim/faults` cannot silently inject nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// 400 InvalidAuthentication on token-using calls (and all tokens are revoked).
    pub invalid_auth: u32,
    /// 403 Forbidden.AccessDenied.QpsLimitForAppkeyAndApi on token-using calls.
    pub qps_403: u32,
    /// HTTP 504 (the gateway's 3 s timeout, docs/dingtalk-protocol.md §4.4) on token-using calls.
    pub gateway_504: u32,
    /// errcode 300001 on session webhooks.
    pub session_300001: u32,
    /// errcode -1 系统繁忙 on session webhooks (retryable, docs/dingtalk-protocol.md §5).
    pub webhook_busy: u32,
    /// errcode 130101 on custom-robot webhooks.
    pub robot_130101: u32,
    /// `connections/open` hands out tickets the gateway will refuse.
    pub bad_ticket: u32,
    /// `connections/open` answers 500.
    pub open_500: u32,
    /// batchSend puts every user in `flowControlledStaffIdList`.
    pub flow_control: u32,
    /// batchSend puts every user in `invalidStaffIdList`.
    pub invalid_staff: u32,
}

impl Faults {
    /// Adds every counter of `more` to this one (POST /_sim/faults accumulates).
    pub fn merge(&mut self, more: &Faults) {
        let Faults {
            invalid_auth,
            qps_403,
            gateway_504,
            session_300001,
            webhook_busy,
            robot_130101,
            bad_ticket,
            open_500,
            flow_control,
            invalid_staff,
        } = more;
        // Destructuring above makes a new field a compile error until it is merged here.
        self.invalid_auth += invalid_auth;
        self.qps_403 += qps_403;
        self.gateway_504 += gateway_504;
        self.session_300001 += session_300001;
        self.webhook_busy += webhook_busy;
        self.robot_130101 += robot_130101;
        self.bad_ticket += bad_ticket;
        self.open_500 += open_500;
        self.flow_control += flow_control;
        self.invalid_staff += invalid_staff;
    }
}

/// Consumes one pending fault of `counter`: true (and one less pending) when any was set.
pub fn take(counter: &mut u32) -> bool {
    if *counter == 0 {
        return false;
    }
    *counter -= 1;
    true
}

/// One WebSocket connection.
pub struct Conn {
    pub id: u64,
    pub opened_ms: u64,
    pub closed_ms: Option<u64>,
    pub tx: Option<mpsc::UnboundedSender<OutFrame>>,
    pub silence: Arc<Notify>,
    pub disconnect: Arc<Notify>,
    pub pings_sent: u64,
    pub pings_echoed: u64,
    pub pending_pings: Vec<String>,
    pub disconnect_sent: bool,
    pub silent: bool,
}

/// A frame queued for one connection; `message` is the index of the injected message it
/// delivers (its send time is stamped when the frame is written to the socket).
pub struct OutFrame {
    pub text: String,
    pub message: usize,
}

/// One injected bot message.
pub struct Injected {
    pub message_id: String,
    pub msg_id: String,
    pub payload: Value,
    /// Connection id of each delivery.
    pub deliveries: Vec<u64>,
    /// When each delivery was written to its connection's socket (Unix microseconds).
    pub sent_us: Vec<u64>,
    pub last_sent: Option<Instant>,
    pub acked: bool,
    /// When the first ACK was read from the socket (Unix microseconds).
    pub acked_us: Option<u64>,
}

impl Injected {
    /// A message not yet delivered nor ACKed, under the stream frame id `message_id`.
    pub fn new(message_id: String, msg_id: String, payload: Value) -> Injected {
        Injected {
            message_id,
            msg_id,
            payload,
            deliveries: Vec::new(),
            sent_us: Vec::new(),
            last_sent: None,
            acked: false,
            acked_us: None,
        }
    }
}

/// A fresh stream frame id (the `messageId` header), shaped like DingTalk's.
pub fn frame_id() -> String {
    format!("{}_{}", random_hex(4), random_hex(6))
}

pub struct Session {
    pub conversation_id: String,
    pub expires_ms: u64,
}

#[derive(Default)]
pub struct State {
    pub tickets: HashMap<String, (Instant, bool)>,
    pub tickets_issued: u64,
    pub opens: Vec<Value>,
    pub conns: BTreeMap<u64, Conn>,
    pub next_id: u64,
    pub messages: Vec<Injected>,
    pub acks: Vec<Value>,
    pub sessions: HashMap<String, Session>,
    pub outbox: Vec<Value>,
    pub tokens: HashMap<String, u64>,
    pub tokens_issued: u64,
    pub faults: Faults,
    pub cards: BTreeMap<String, Value>,
    /// `(outTrackId, guid)` of every applied streaming update (docs/dingtalk-protocol.md §7.2:
    /// `guid` is an idempotency id, so a repeat is answered but not applied again).
    pub stream_guids: HashSet<(String, String)>,
    pub qps: HashMap<String, VecDeque<Instant>>,
    pub requests: VecDeque<Value>,
    pub robots: HashMap<String, Option<String>>,
    /// The title each group conversation was given, kept as DingTalk keeps a group's name
    /// (a later message that gives none is in the same group).
    pub group_titles: HashMap<String, String>,
}

/// Shared simulator: options, base URL, state.
pub struct Sim {
    pub opts: SimOptions,
    pub base_url: String,
    state: Mutex<State>,
}

impl Sim {
    pub fn new(opts: SimOptions, base_url: String) -> Sim {
        Sim {
            opts,
            base_url,
            state: Mutex::new(State::default()),
        }
    }

    /// Locks the state (a poisoned lock is recovered: the state stays usable).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_id(&self) -> u64 {
        let mut s = self.lock();
        s.next_id += 1;
        s.next_id
    }
}
