//! systemd's `sd_notify` protocol (Type=notify): one datagram to `$NOTIFY_SOCKET`.
//!
//! Besides `READY=1`/`STOPPING=1`, a running daemon reports (see [`report_loop`]):
//! - `STATUS=` a one-line summary (channel state, turns in flight), sent when it changes,
//!   at most once per [`STATUS_MIN_GAP`] (the newest text is sent once the gap has passed);
//! - `WATCHDOG=1` every half of `$WATCHDOG_USEC` when the unit sets `WatchdogSec=` and
//!   `$WATCHDOG_PID` (if set) is this process: a wedged runtime stops pinging and systemd
//!   restarts it.
//!
//! Hand-written on `std`: the protocol is one datagram, the `@` abstract-socket form
//! included, not worth a dependency.

use std::ffi::OsString;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::control::ControlState;
use crate::status::DaemonReport;

/// The least time between two `STATUS=` lines.
pub(crate) const STATUS_MIN_GAP: Duration = Duration::from_secs(5);

/// How often the status text is recomputed (a change is sent at most this late after
/// the gap allows it).
const STATUS_POLL: Duration = Duration::from_secs(1);

/// Sends `state` (e.g. `READY=1`) when running under systemd; silently does nothing otherwise.
pub(crate) fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let addr = match target.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&target),
    };
    if let Ok(addr) = addr {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}

/// The watchdog ping period: half of `WATCHDOG_USEC`, when it is set, positive, and
/// `WATCHDOG_PID` is absent or equals `pid` (systemd's `sd_watchdog_enabled` rules).
pub(crate) fn watchdog_period(
    env: &dyn Fn(&str) -> Option<OsString>,
    pid: u32,
) -> Option<Duration> {
    let usec: u64 = env("WATCHDOG_USEC")?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(target) = env("WATCHDOG_PID") {
        if target.to_str()?.trim().parse::<u32>().ok()? != pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// The `STATUS=` text for a report: the channel's state and the turns in flight and
/// queued across models, or the supervised model service's state. Never message text.
pub(crate) fn status_text(r: &DaemonReport) -> String {
    let mut parts = Vec::new();
    if let Some(channel) = &r.channel {
        parts.push(channel.state.clone());
    }
    if r.channel.is_some() || !r.models.is_empty() {
        let in_flight: usize = r.models.iter().map(|m| m.in_flight).sum();
        let queued: usize = r.models.iter().map(|m| m.queued).sum();
        parts.push(format!("{in_flight} in flight"));
        if queued > 0 {
            parts.push(format!("{queued} queued"));
        }
    }
    if let Some(g) = &r.model_service {
        parts.push(match g.child_pid {
            Some(pid) => format!("model service pid {pid}"),
            None => "model service not running".into(),
        });
        parts.push(match g.healthy {
            Some(true) => "healthy".into(),
            Some(false) => "unhealthy".into(),
            None => "health unknown".into(),
        });
        parts.push(format!("{} restarts", g.restarts));
    }
    if parts.is_empty() {
        parts.push(r.workload.clone());
    }
    parts.join(", ")
}

/// Decides when a changed status text is sent: at once when the last line is at least
/// [`STATUS_MIN_GAP`] old, else once it is (the newest text wins); unchanged text never.
#[derive(Debug, Default)]
pub(crate) struct StatusThrottle {
    last: Option<(Instant, String)>,
}

impl StatusThrottle {
    /// The text to send now, if any; remembers it as sent.
    pub(crate) fn offer(&mut self, now: Instant, text: &str) -> Option<String> {
        if let Some((at, sent)) = &self.last {
            if sent == text || now.duration_since(*at) < STATUS_MIN_GAP {
                return None;
            }
        }
        self.last = Some((now, text.to_string()));
        Some(text.to_string())
    }
}

/// Sends `STATUS=` lines and watchdog pings for as long as it runs (the daemon aborts it
/// when it stops). Returns at once when not run by systemd (`NOTIFY_SOCKET` unset).
pub(crate) async fn report_loop(state: Arc<ControlState>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let env = |var: &str| std::env::var_os(var);
    let watchdog = watchdog_period(&env, std::process::id());
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(STATUS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut throttle = StatusThrottle::default();
    loop {
        tokio::select! {
            _ = ping.tick(), if watchdog.is_some() => notify("WATCHDOG=1"),
            _ = poll.tick() => {
                if let Some(text) = throttle.offer(Instant::now(), &status_text(&state.report())) {
                    notify(&format!("STATUS={text}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment holding exactly `pairs`.
    fn env_of<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |var| {
            pairs
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_watchdog_pings_at_half_its_timeout_only_for_its_own_pid() {
        let half = watchdog_period(&env_of(&[("WATCHDOG_USEC", "20000000")]), 7);
        assert_eq!(half, Some(Duration::from_secs(10)));
        let mine = [("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "7")];
        assert_eq!(
            watchdog_period(&env_of(&mine), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_period(&env_of(&mine), 8),
            None,
            "another pid's watchdog"
        );
        for bad in [
            &[][..],
            &[("WATCHDOG_USEC", "0")][..],
            &[("WATCHDOG_USEC", "soon")][..],
            &[("WATCHDOG_USEC", "1000"), ("WATCHDOG_PID", "x")][..],
        ] {
            assert_eq!(watchdog_period(&env_of(bad), 7), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn status_lines_follow_changes_at_most_every_five_seconds() {
        let mut t = StatusThrottle::default();
        assert_eq!(
            t.offer(Instant::now(), "connecting").as_deref(),
            Some("connecting")
        );
        assert_eq!(t.offer(Instant::now(), "connecting"), None, "unchanged");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            t.offer(Instant::now(), "connected, 1 in flight"),
            None,
            "too soon"
        );
        tokio::time::advance(Duration::from_millis(3_999)).await;
        assert_eq!(
            t.offer(Instant::now(), "connected, 2 in flight"),
            None,
            "still too soon"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            t.offer(Instant::now(), "connected, 2 in flight").as_deref(),
            Some("connected, 2 in flight"),
            "the newest text, once the gap has passed"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(t.offer(Instant::now(), "connected, 2 in flight"), None);
    }

    #[test]
    fn the_status_text_names_channel_state_and_turns_in_flight() {
        let mut r = DaemonReport {
            workload: "bot".into(),
            channel: Some(crate::status::ChannelReport {
                state: "connected".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        for (in_flight, queued) in [(2, 0), (1, 4)] {
            r.models.push(crate::status::ModelReport {
                in_flight,
                queued,
                ..Default::default()
            });
        }
        assert_eq!(status_text(&r), "connected, 3 in flight, 4 queued");
        let model_service = DaemonReport {
            workload: "gateway".into(),
            model_service: Some(crate::status::ModelServiceReport {
                child_pid: Some(42),
                healthy: Some(false),
                restarts: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            status_text(&model_service),
            "model service pid 42, unhealthy, 2 restarts"
        );
    }
}
