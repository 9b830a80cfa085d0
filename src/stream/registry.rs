//! The streams being served, by name: what the handler, `/streams`, `/readyz` and
//! `/metrics` read, and what the server's stream control (admin API, config reload)
//! writes when it adds, replaces or removes a stream while the server runs.
//!
//! Reads take an uncontended read lock and clone an `Arc`; writes are rare (an operator's
//! change), so the map is copied on write and readers never wait on a rebuild.
//!
//! A stream taken out of service (deleted, or replaced by a new one under its name) is
//! *retiring* for a while: its media names are still served from its last snapshot, so
//! that a player or cache finishing what it was fetching is not cut off, and then they
//! 404. Its held reloads were answered 503 when its media thread stopped.
//!
//! Never imports the HTTP layer or the configuration.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::StreamHandle;

/// The streams being served.
#[derive(Debug, Default)]
pub struct StreamRegistry {
    live: RwLock<Arc<HashMap<String, Arc<StreamHandle>>>>,
    retiring: RwLock<HashMap<String, Arc<StreamHandle>>>,
}

impl StreamRegistry {
    /// A registry serving `streams`.
    pub fn new(streams: impl IntoIterator<Item = StreamHandle>) -> Arc<Self> {
        let live = streams
            .into_iter()
            .map(|handle| (handle.name().to_string(), Arc::new(handle)))
            .collect();
        Arc::new(Self {
            live: RwLock::new(Arc::new(live)),
            retiring: RwLock::default(),
        })
    }

    /// The live stream `name`.
    pub fn get(&self, name: &str) -> Option<Arc<StreamHandle>> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The stream `name` that was taken out of service lately, while its names are still
    /// served.
    pub fn retiring(&self, name: &str) -> Option<Arc<StreamHandle>> {
        self.retiring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The names of the streams retiring now.
    pub fn retiring_names(&self) -> Vec<String> {
        self.retiring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Every live stream, as of now.
    pub fn all(&self) -> Arc<HashMap<String, Arc<StreamHandle>>> {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every live stream's name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.all().keys().cloned().collect();
        names.sort();
        names
    }

    /// Serves `handle` under its name from now on. A stream it replaces retires for
    /// `retire_for` (see the module doc).
    pub fn insert(self: &Arc<Self>, handle: StreamHandle, retire_for: Duration) {
        let name = handle.name().to_string();
        let replaced = self.write_live(|live| live.insert(name.clone(), Arc::new(handle)));
        if let Some(old) = replaced {
            self.retire(name, old, retire_for);
        }
    }

    /// Takes `name` out of service: it retires for `retire_for`. False when no such
    /// stream is live.
    pub fn remove(self: &Arc<Self>, name: &str, retire_for: Duration) -> bool {
        match self.write_live(|live| live.remove(name)) {
            Some(old) => {
                self.retire(name.to_string(), old, retire_for);
                true
            }
            None => false,
        }
    }

    fn write_live<T>(
        &self,
        change: impl FnOnce(&mut HashMap<String, Arc<StreamHandle>>) -> T,
    ) -> T {
        let mut live = self.live.write().unwrap_or_else(PoisonError::into_inner);
        let mut copy = HashMap::clone(&live);
        let out = change(&mut copy);
        *live = Arc::new(copy);
        out
    }

    fn retire(self: &Arc<Self>, name: String, old: Arc<StreamHandle>, retire_for: Duration) {
        self.retiring
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), old.clone());
        let registry = Arc::downgrade(self);
        let forget = async move {
            tokio::time::sleep(retire_for).await;
            if let Some(registry) = registry.upgrade() {
                let mut retiring = registry
                    .retiring
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                // Only this one: a stream retired again since then has its own timer.
                if retiring.get(&name).is_some_and(|r| Arc::ptr_eq(r, &old)) {
                    retiring.remove(&name);
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(forget);
            }
            // Outside a runtime (a unit test) nothing retires on a timer.
            Err(_) => tracing::debug!("no runtime: a retired stream stays listed as retiring"),
        }
    }
}
