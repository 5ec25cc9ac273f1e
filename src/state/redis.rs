//! The connection to Redis shared by every Redis-backed feature of one daemon.
//!
//! Uses the `redis` crate's `ConnectionManager` (a maintained client: it reconnects by
//! itself after Redis restarts or a network cut, so no feature keeps its own reconnect
//! loop), wrapped in [`RebuildingManager`] for the one failure it does not recover from
//! (a refused `AUTH` at reconnection). Every command has a response timeout, so a Redis that stops answering is seen as
//! an error within [`RESPONSE_TIMEOUT`], never a hang.
//!
//! Invariants:
//! - every key starts with `{key_prefix}:`; [`RedisState::key`] is the only place that
//!   names keys, so two bots with different prefixes never touch each other's state;
//! - the URL is a secret (it may hold a password): it is never logged, shown or put in an
//!   error; errors name the server as [`RedisState::server`] (host and port only);
//! - this replica's heartbeat is a member of the sorted set `{prefix}:replicas` scored by
//!   Redis's own clock (`TIME`), so replicas with skewed clocks agree on who is alive: a
//!   replica is alive while its last beat is younger than `lease_ms`;
//! - a replica id is held by one live process at a time: each heartbeat renews the claim
//!   `{prefix}:replica:{id}` (this process's random token, expiring after `lease_ms`), and
//!   a heartbeat that finds another live token fails with [`RedisError::ReplicaIdInUse`]
//!   (a start error), so two processes never share one id's leases and messages.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::{IntoConnectionInfo, Script};

use crate::random_hex::random_hex;

use super::rebuilding_conn::{RebuildingConn, RebuildingManager};

use crate::config::RedisConfig;

/// The longest wait for one Redis answer before the command counts as failed.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait for a TCP connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why Redis could not be used; never quotes the URL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    #[error("state.redis.url is not a valid redis:// URL")]
    BadUrl,
    #[error("redis at {server}: {source}")]
    Command {
        server: String,
        #[source]
        source: redis::RedisError,
    },
    /// A caller's deadline ended before Redis answered.
    #[error("redis did not answer in time")]
    TimedOut,
    /// Another live process holds this replica id.
    #[error("replica id \"{id}\" is in use by another live replica (its claim ends {lease_ms} ms after that replica stops); give each replica its own state.redis.replica_id")]
    ReplicaIdInUse { id: String, lease_ms: u64 },
}

/// One daemon's handle on Redis: cheap to clone (one multiplexed connection underneath).
#[derive(Clone)]
pub(crate) struct RedisState {
    conn: Arc<RebuildingManager>,
    /// For connections a multiplexed one cannot serve (pub/sub subscriptions).
    client: redis::Client,
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    replica_id: String,
    /// This process's claim on `replica_id` (random, never shown).
    claim_token: String,
    /// Set on a clean stop: the heartbeat stops and the id is free for a successor.
    released: std::sync::atomic::AtomicBool,
    lease: Duration,
    server: String,
}

impl RedisState {
    /// Connects (bounded by [`CONNECT_TIMEOUT`] and [`RESPONSE_TIMEOUT`]); fails when Redis
    /// cannot be reached now. Later outages are survived: the manager reconnects.
    pub(crate) async fn connect(cfg: &RedisConfig) -> Result<RedisState, RedisError> {
        let (client, server) = open_client(cfg)?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(1_000);
        let conn = RebuildingManager::connect(client.clone(), manager_cfg, server.clone())
            .await
            .map_err(|source| RedisError::Command {
                server: server.clone(),
                source,
            })?;
        let replica_id = cfg.replica_id.clone().unwrap_or_else(default_replica_id);
        Ok(RedisState {
            conn,
            client,
            inner: Arc::new(Inner {
                prefix: cfg.key_prefix.clone(),
                replica_id,
                claim_token: random_hex(6),
                released: std::sync::atomic::AtomicBool::new(false),
                lease: Duration::from_millis(cfg.lease_ms),
                server,
            }),
        })
    }

    /// The key `{prefix}:{parts joined by ':'}`.
    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let mut key = self.inner.prefix.clone();
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key
    }

    /// A connection for one or more commands (a clone of the shared multiplexed one).
    pub(crate) fn conn(&self) -> RebuildingConn {
        self.conn.conn()
    }

    /// A new pub/sub connection (subscriptions need a connection of their own), bounded
    /// by [`CONNECT_TIMEOUT`].
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(self.error(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            )))),
        }
    }

    /// This replica's id (unique among the live replicas of one prefix).
    pub(crate) fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    /// How long a dead replica's claims stay held.
    pub(crate) fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// `host:port` of the server, safe to show.
    pub(crate) fn server(&self) -> &str {
        &self.inner.server
    }

    /// Wraps a client error with the server's name.
    pub(crate) fn error(&self, source: redis::RedisError) -> RedisError {
        RedisError::Command {
            server: self.inner.server.clone(),
            source,
        }
    }

    /// Claims (or keeps) this replica's id, records one heartbeat and returns how many
    /// replicas (this one included) beat within the lease. Fails with
    /// [`RedisError::ReplicaIdInUse`] while another live process holds the id.
    pub(crate) async fn heartbeat(&self) -> Result<usize, RedisError> {
        let lease_ms = self.lease().as_millis() as u64;
        let alive: i64 = Script::new(HEARTBEAT_LUA)
            .key(self.key(&["replicas"]))
            .key(self.key(&["replica", self.replica_id()]))
            .arg(self.replica_id())
            .arg(lease_ms)
            .arg(&self.inner.claim_token)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.error(e))?;
        usize::try_from(alive).map_err(|_| RedisError::ReplicaIdInUse {
            id: self.replica_id().to_string(),
            lease_ms,
        })
    }

    /// On a clean stop: stops the heartbeat and frees the id (if this process still
    /// holds it) so a successor with the same id can start at once.
    pub(crate) async fn release_replica_id(&self) -> Result<(), RedisError> {
        self.inner
            .released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _: i64 = Script::new(RELEASE_ID_LUA)
            .key(self.key(&["replicas"]))
            .key(self.key(&["replica", self.replica_id()]))
            .arg(self.replica_id())
            .arg(&self.inner.claim_token)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Beats every third of the lease until the returned task is aborted; the last count
    /// of live replicas (0 while Redis does not answer) is kept in `alive`.
    pub(crate) fn spawn_heartbeat(
        &self,
        alive: Arc<std::sync::atomic::AtomicUsize>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut outage = super::outage_log::OutageLog::default();
            let mut tick = tokio::time::interval(me.lease() / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if me.inner.released.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let n = match me.heartbeat().await {
                    Ok(n) => {
                        if outage.worked() {
                            tracing::info!(server = %me.server(), "redis heartbeat works again");
                        }
                        n
                    }
                    Err(e) if outage.failed() => {
                        tracing::warn!(error = %e, "redis heartbeat failed (logged once until it works again)");
                        0
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "redis heartbeat failed");
                        0
                    }
                };
                alive.store(n, std::sync::atomic::Ordering::Relaxed);
            }
        })
    }
}

/// A client for `cfg`'s URL and the server's `host:port` (safe to show).
fn open_client(cfg: &RedisConfig) -> Result<(redis::Client, String), RedisError> {
    let info = cfg
        .url
        .expose()
        .into_connection_info()
        .map_err(|_| RedisError::BadUrl)?;
    let server = info.addr.to_string();
    let client = redis::Client::open(info).map_err(|_| RedisError::BadUrl)?;
    Ok((client, server))
}

/// One `PING` over a fresh connection made from `cfg` (so a wrong password fails as well
/// as an unreachable server), bounded by `timeout`; the server's `host:port` when it
/// answered. For health checks: the daemon's and the pre-flight's.
pub(crate) async fn ping(cfg: &RedisConfig, timeout: Duration) -> Result<String, RedisError> {
    let (client, server) = open_client(cfg)?;
    let ask = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    let answer = match tokio::time::timeout(timeout, ask).await {
        Ok(answer) => answer,
        Err(_) => Err(redis::RedisError::from(std::io::Error::from(
            std::io::ErrorKind::TimedOut,
        ))),
    };
    match answer {
        Ok(_) => Ok(server),
        Err(source) => Err(RedisError::Command { server, source }),
    }
}

/// KEYS[1] = replicas set, KEYS[2] = the id's claim; ARGV[1] = replica id, ARGV[2] =
/// lease ms, ARGV[3] = this process's claim token. Returns -1 when another live token
/// holds the id; else renews the claim, scores the beat by Redis's clock, drops members
/// older than the lease and returns the live count.
const HEARTBEAT_LUA: &str = r#"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[3] then return -1 end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"#;

/// KEYS[1] = replicas set, KEYS[2] = the id's claim; ARGV[1] = replica id, ARGV[2] =
/// claim token. Frees the id only when this token still holds it.
const RELEASE_ID_LUA: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"#;

/// `HOSTNAME-PID-RANDOM`: readable in status, and unique even where two hosts share a
/// name and a PID (two containers, both PID 1).
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    format!("{host}-{}-{}", std::process::id(), random_hex(3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use clawdbot_testkit::redis_server::RedisServer;

    fn config(url: &str, replica: &str) -> RedisConfig {
        RedisConfig {
            url: Secret::new(url),
            key_prefix: "t".into(),
            replica_id: Some(replica.into()),
            lease_ms: 1_000,
        }
    }

    /// Duplicates of this process's TCP sockets connected to `port`.
    fn sockets_to(port: u16) -> Vec<std::net::TcpStream> {
        use std::os::fd::BorrowedFd;
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            // SAFETY: the descriptor was listed as open in this process a moment ago and
            // is only duplicated here; a descriptor closed meanwhile fails the dup.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let Ok(owned) = borrowed.try_clone_to_owned() else {
                continue;
            };
            let stream = std::net::TcpStream::from(owned);
            if stream.peer_addr().is_ok_and(|a| a.port() == port) {
                found.push(stream);
            }
        }
        found
    }

    /// Commands and grants are small writes on one multiplexed connection: without
    /// TCP_NODELAY a write behind an unanswered one waits for the delayed ACK (about 25 ms
    /// per hand-off of the global model limit: 87-88 % slot utilization in the bench's
    /// replicas rows instead of 99 %).
    #[tokio::test]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn every_connection_to_redis_sets_tcp_nodelay() {
        let server = RedisServer::start();
        let state = RedisState::connect(&config(&server.url(), "nodelay"))
            .await
            .unwrap();
        state.heartbeat().await.unwrap();
        let _pubsub = state.pubsub().await.unwrap();
        let sockets = sockets_to(server.port());
        assert!(sockets.len() >= 2, "{} connections found", sockets.len());
        for socket in &sockets {
            assert!(
                socket.nodelay().unwrap(),
                "a Redis connection without TCP_NODELAY"
            );
        }
    }

    #[tokio::test]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn replicas_count_each_other_until_a_lease_passes() {
        let server = RedisServer::start();
        let a = RedisState::connect(&config(&server.url(), "a"))
            .await
            .unwrap();
        let b = RedisState::connect(&config(&server.url(), "b"))
            .await
            .unwrap();
        assert_eq!(a.heartbeat().await.unwrap(), 1);
        assert_eq!(b.heartbeat().await.unwrap(), 2);
        assert_eq!(a.key(&["inbox", "x"]), "t:inbox:x");
        // b stops beating: after the lease only a is alive (Redis's clock, so a real wait).
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(a.heartbeat().await.unwrap(), 1);
    }

    /// The red team's password flip: `requirepass` changed, every client killed, the old
    /// password back later. The replica's reconnection is refused meanwhile; once the old
    /// password works again its commands succeed without a restart.
    #[tokio::test]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn a_refused_password_during_a_reconnect_heals_once_the_password_works_again() {
        let server = RedisServer::start();
        server.cli(&["CONFIG", "SET", "requirepass", "old"]);
        let url = format!("redis://:old@127.0.0.1:{}/0", server.port());
        let state = RedisState::connect(&config(&url, "a")).await.unwrap();
        state
            .heartbeat()
            .await
            .expect("works with the old password");
        let as_new = |args: &[&str]| {
            let mut all = vec!["-a", "new", "--no-auth-warning"];
            all.extend_from_slice(args);
            server.cli(&all)
        };
        server.cli(&[
            "-a",
            "old",
            "--no-auth-warning",
            "CONFIG",
            "SET",
            "requirepass",
            "new",
        ]);
        as_new(&["CLIENT", "KILL", "TYPE", "normal"]);
        // Bounded: the reconnection with the old password is refused within a few tries.
        let mut refused = false;
        for _ in 0..50 {
            if let Err(e) = state.heartbeat().await {
                if format!("{e:?}").contains("AuthenticationFailed") {
                    refused = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(refused, "the wrong password is refused while it is changed");
        as_new(&["CONFIG", "SET", "requirepass", "old"]);
        // Generous: only a connection that never heals fails this.
        let healed = std::time::Instant::now();
        let mut last = None;
        while healed.elapsed() < Duration::from_secs(30) {
            match state.heartbeat().await {
                Ok(_) => return,
                Err(e) => last = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("still failing 30 s after the password came back: {last:?}");
    }

    /// Two processes configured with one replica id: the second is refused with an error
    /// naming the id while the first lives; the first keeps beating; after the first's
    /// clean stop the id is free at once. Default ids differ even in one process.
    #[tokio::test]
    #[ignore = "needs redis-server (Debian package redis-server); .ci/run installs it"]
    async fn a_replica_id_is_held_by_one_live_process_and_default_ids_never_clash() {
        let server = RedisServer::start();
        let first = RedisState::connect(&config(&server.url(), "same")).await;
        let second = RedisState::connect(&config(&server.url(), "same")).await;
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first.heartbeat().await.unwrap(), 1);
        let err = second.heartbeat().await.expect_err("the id is taken");
        assert!(
            matches!(&err, RedisError::ReplicaIdInUse { id, .. } if id == "same"),
            "{err}"
        );
        assert!(err.to_string().contains("\"same\""), "{err}");
        assert_eq!(first.heartbeat().await.unwrap(), 1, "the holder keeps it");
        first.release_replica_id().await.unwrap();
        assert_eq!(
            second.heartbeat().await.unwrap(),
            1,
            "free after a clean stop"
        );

        let mut unnamed = config(&server.url(), "-");
        unnamed.replica_id = None;
        let a = RedisState::connect(&unnamed).await.unwrap();
        let b = RedisState::connect(&unnamed).await.unwrap();
        let prefix = format!("-{}-", std::process::id());
        assert!(a.replica_id().contains(&prefix), "{}", a.replica_id());
        assert_ne!(a.replica_id(), b.replica_id(), "a random suffix");
        assert_eq!(a.heartbeat().await.unwrap(), 2);
        assert_eq!(b.heartbeat().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_naming_host_and_port_only() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://user:hunter2@127.0.0.1:{port}/0");
        let err = RedisState::connect(&config(&url, "a")).await.err().unwrap();
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
