//! Per-worker connections: each HTTP worker thread that asks drives a cluster connection of its
//! own, so a request's round trips stay on its thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::cluster_async::ClusterConnection;

use super::{read, ClusterCache, MIN_REBUILD_INTERVAL};

/// A worker thread's own connection to one cluster (one [`Inner`]), by state.
enum Local {
    /// Being opened, for this generation.
    Opening(u64),
    /// Open, driven by a task of this thread.
    Open(u64, ClusterConnection),
    /// The last attempt failed at this instant; the next waits [`MIN_REBUILD_INTERVAL`].
    Failed(u64, Instant),
}

thread_local! {
    /// The connections this thread drives, by cluster; `None` on a thread that did not ask for
    /// them (see [`drive_connections_on_this_thread`]).
    static LOCAL: RefCell<Option<HashMap<usize, Local>>> = const { RefCell::new(None) };
}

/// Lets this thread (an HTTP worker: one single-threaded runtime with a `LocalSet`, as actix's)
/// open and drive Redis connections of its own, so that its requests' round trips never hop to
/// the thread that drives the shared connection and back. Call it once on the thread.
pub fn drive_connections_on_this_thread() {
    LOCAL.with_borrow_mut(|locals| {
        locals.get_or_insert_with(HashMap::new);
    });
}

impl ClusterCache {
    /// The connection to send a call on: this worker thread's own when it has one for the
    /// current generation, else the shared one (while the worker's opens in the background).
    pub(super) fn connection(&self) -> Option<ClusterConnection> {
        let shared = read(&self.inner.connection).clone()?;
        if !self.inner.per_worker {
            return Some(shared);
        }
        Some(self.local_connection().unwrap_or(shared))
    }

    pub(super) fn local_connection(&self) -> Option<ClusterConnection> {
        let key = Arc::as_ptr(&self.inner) as usize;
        let generation = self.inner.generation.load(Ordering::Acquire);
        let open = LOCAL.with_borrow_mut(|locals| {
            let locals = locals.as_mut()?;
            match locals.get(&key) {
                Some(Local::Open(seen, connection)) if *seen == generation => {
                    return Some(Ok(connection.clone()));
                }
                Some(Local::Opening(seen)) if *seen == generation => return None,
                Some(Local::Failed(seen, at))
                    if *seen == generation && at.elapsed() < MIN_REBUILD_INTERVAL =>
                {
                    return None;
                }
                _ => {}
            }
            locals.insert(key, Local::Opening(generation));
            Some(Err(()))
        })?;
        match open {
            Ok(connection) => Some(connection),
            Err(()) => {
                let inner = Arc::clone(&self.inner);
                let tasks = inner.tasks.clone();
                tasks.spawn_local(async move {
                    let opened = inner.open().await;
                    LOCAL.with_borrow_mut(|locals| {
                        let Some(locals) = locals.as_mut() else { return };
                        let state = match opened {
                            Ok(connection) => Local::Open(generation, connection),
                            Err(error) => {
                                tracing::debug!(%error, "a worker's own Redis connection did not open; using the shared one");
                                Local::Failed(generation, Instant::now())
                            }
                        };
                        locals.insert(key, state);
                    });
                });
                None
            }
        }
    }
}
