//! Logs a repeating Redis failure once per change of state, not once per retry: a loop
//! that retries every second while Redis is down would otherwise fill the log with one
//! WARN a second on every replica.

/// Whether a retrying loop is in an outage already reported.
#[derive(Debug, Default)]
pub(crate) struct OutageLog {
    reported: bool,
}

impl OutageLog {
    /// A try failed: true when this starts an outage (log it at WARN), false while the
    /// outage was reported already (log at DEBUG at most).
    pub(crate) fn failed(&mut self) -> bool {
        !std::mem::replace(&mut self.reported, true)
    }

    /// A try worked: true when it ends a reported outage (log the recovery once).
    pub(crate) fn worked(&mut self) -> bool {
        std::mem::replace(&mut self.reported, false)
    }
}

#[cfg(test)]
mod tests {
    use super::OutageLog;

    #[test]
    fn one_warning_per_outage_and_one_recovery_note() {
        let mut log = OutageLog::default();
        assert!(!log.worked(), "nothing to recover from");
        let warned: Vec<bool> = (0..60).map(|_| log.failed()).collect();
        assert_eq!(warned.iter().filter(|w| **w).count(), 1, "{warned:?}");
        assert!(warned[0], "the first failure is the one reported");
        assert!(log.worked(), "the recovery is noted");
        assert!(!log.worked(), "once");
        assert!(log.failed(), "a new outage is reported again");
    }
}
