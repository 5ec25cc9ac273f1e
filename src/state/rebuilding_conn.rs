//! A Redis connection that recovers from an authentication failure by itself.
//!
//! The `redis` crate's `ConnectionManager` (0.32) reconnects after I/O errors only: when
//! a reconnection fails for another reason, typically `AUTH` refused while an operator
//! briefly changed `requirepass`, it keeps that failed connection attempt and answers
//! every later command with the same error, forever (no I/O error ever comes to wake
//! it). [`RebuildingManager`] watches every answer of the connections it hands out and,
//! on such an error, builds a fresh manager in the background (one attempt at a time, at
//! most one per [`REBUILD_EVERY`]), so the daemon recovers as soon as the password works
//! again, without a restart.
//!
//! Invariant: callers never hold a manager across a rebuild: [`RebuildingManager::conn`]
//! hands out a clone of the current one per use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, Value};

/// The shortest time between two rebuilds (a bounded backoff while the password is wrong).
const REBUILD_EVERY: Duration = Duration::from_secs(1);

/// The current manager, and what it takes to build another one.
pub(crate) struct RebuildingManager {
    current: RwLock<ConnectionManager>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// True while a rebuild (and its backoff) runs: at most one at a time.
    rebuilding: AtomicBool,
    /// `host:port`, for logs (never the URL).
    server: String,
}

impl RebuildingManager {
    /// Connects once (bounded by `config`'s timeouts and retries).
    pub(crate) async fn connect(
        client: redis::Client,
        config: ConnectionManagerConfig,
        server: String,
    ) -> redis::RedisResult<Arc<RebuildingManager>> {
        let first = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        Ok(Arc::new(RebuildingManager {
            current: RwLock::new(first),
            client,
            config,
            rebuilding: AtomicBool::new(false),
            server,
        }))
    }

    /// A connection for one or more commands on the current manager.
    pub(crate) fn conn(self: &Arc<Self>) -> RebuildingConn {
        let manager = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        RebuildingConn {
            manager,
            owner: self.clone(),
        }
    }

    /// Starts a rebuild when `error` is one the manager never recovers from by itself.
    fn noticed(self: &Arc<Self>, error: &redis::RedisError) {
        if !is_stuck_error(error) || self.rebuilding.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.rebuilding.store(false, Ordering::SeqCst);
            return;
        };
        let me = self.clone();
        runtime.spawn(async move {
            match ConnectionManager::new_with_config(me.client.clone(), me.config.clone()).await {
                Ok(fresh) => {
                    *me.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    tracing::info!(server = %me.server, "redis connection rebuilt after an authentication failure");
                }
                Err(e) => {
                    tracing::debug!(server = %me.server, error = %e, "redis connection rebuild failed; trying again on the next failure");
                }
            }
            tokio::time::sleep(REBUILD_EVERY).await;
            me.rebuilding.store(false, Ordering::SeqCst);
        });
    }
}

/// Errors a `ConnectionManager` keeps answering with until it is replaced: a refused
/// `AUTH` at reconnection, or a connection left unauthenticated.
fn is_stuck_error(error: &redis::RedisError) -> bool {
    error.kind() == ErrorKind::AuthenticationFailed || error.code() == Some("NOAUTH")
}

/// One use of the current manager; reports its errors to its [`RebuildingManager`].
pub(crate) struct RebuildingConn {
    manager: ConnectionManager,
    owner: Arc<RebuildingManager>,
}

impl ConnectionLike for RebuildingConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let answer = self.manager.req_packed_command(cmd).await;
            if let Err(e) = &answer {
                self.owner.noticed(e);
            }
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let answer = self.manager.req_packed_commands(cmd, offset, count).await;
            if let Err(e) = &answer {
                self.owner.noticed(e);
            }
            answer
        })
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}
