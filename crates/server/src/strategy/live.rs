//! Counting the sessions a strategy has handed to a pool it does not join one by one (`rayon`,
//! `async`), so that its `finish` can wait for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::core::shared::Shared;

/// Sessions spawned and not yet ended (queued or running), for strategies that hand sessions to
/// a pool they do not join one by one (`rayon`, `async`), so `finish` can wait for them.
#[derive(Debug, Default)]
pub(crate) struct LiveSessions(Arc<AtomicUsize>);

impl LiveSessions {
    /// Counts one session until the returned guard is dropped (when its job or task ends, or is
    /// dropped unrun).
    pub(crate) fn guard(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        LiveGuard(Arc::clone(&self.0))
    }

    /// Waits until no session is live, or the drain timeout plus a margin has passed (the
    /// server's drain cuts sessions that outlive it, so they end well before).
    pub(crate) fn wait_for_none(&self, shared: &Shared) {
        let limit = Instant::now() + shared.config.drain_timeout + Duration::from_secs(10);
        while self.0.load(Ordering::Acquire) > 0 && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One live session; see [`LiveSessions::guard`].
pub(crate) struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
