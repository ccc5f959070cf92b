//! The coordinator's registry of workers: who registered, where they listen, when they
//! were last heard from.

use std::time::{Duration, Instant};

pub(crate) struct WorkerEntry {
    pub id: String,
    pub address: String,
    pub last_seen: Instant,
}

/// Forgets workers silent for ten heartbeat timeouts (at least a minute): they are gone,
/// and a restarted worker registers under a new id. Shorter silences stay listed as
/// unhealthy, so `distgat workers` shows who went quiet.
pub(crate) fn prune_departed(workers: &mut Vec<WorkerEntry>, heartbeat_timeout: Duration) {
    let gone = (heartbeat_timeout * 10).max(Duration::from_secs(60));
    workers.retain(|w| w.last_seen.elapsed() < gone);
}
