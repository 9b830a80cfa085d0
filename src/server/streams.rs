//! The running streams and every change made to them while the server runs: the admin
//! API's add, replace and delete, and a config reload (SIGHUP or `POST /admin/reload`).
//! Changes are made one at a time. A stream whose settings did not change is never
//! touched, so its viewers keep playing and its media names (its epoch) stay; a changed
//! stream is started anew beside the old one and takes its name when it is ready; a
//! removed one stops, and its held reloads are answered 503 at once. What leaves is
//! retired in the [`StreamRegistry`]: its names are served until its window has passed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use crate::config::{ConfigError, Overrides, Settings, StreamSettings};
use crate::http::admin::{AdminError, ControlFuture, StreamControl};
use crate::http::auth::Access;
use crate::ingest::SourceSpec;
use crate::ingest::push::PushPoints;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::stream::{LiveStream, MULTIVARIANT_PLAYLIST, StreamError, StreamHandle, StreamRegistry};

/// Where a running stream's settings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The config file (or the command line): a reload may change or remove it.
    Config,
    /// The admin API: a reload leaves it alone unless the file names it.
    Api,
}

struct Running {
    live: LiveStream,
    settings: StreamSettings,
    origin: Origin,
}

/// The config file a reload reads again, with the command line's overrides and the
/// stream the command line names when the file has no `[[streams]]`.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The file.
    pub path: PathBuf,
    /// What the command line set over it.
    pub overrides: Overrides,
    /// The command line's stream (`--name`, `--source`).
    pub default_stream: StreamSettings,
}

/// What changes are made against: the settings in force.
struct InForce {
    /// The settings in force: the file's, but for the sections that take a restart,
    /// which keep their running values (so every later reload still reports them).
    settings: Settings,
    /// What the file said when last applied, for a watcher to see a change.
    loaded: Settings,
    file: Option<ConfigFile>,
}

/// The running streams, and the one way to change them.
pub struct StreamSet {
    registry: Arc<StreamRegistry>,
    metrics: Arc<Metrics>,
    store: Store,
    /// Who may watch each stream: its policy is set as it starts or is kept.
    auth: Arc<Access>,
    /// Where `publish` streams meet their publishers: keys are set as streams start.
    push: Arc<PushPoints>,
    running: Mutex<HashMap<String, Running>>,
    /// Held for the whole of a change, so that changes never interleave.
    in_force: tokio::sync::Mutex<InForce>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server was started without `--config`.
    #[error("the server was started without a config file")]
    NoConfigFile,
    /// The file cannot be read or is invalid (the field is named).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What a reload did, by stream name.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReloadSummary {
    /// Unchanged: still playing, same names.
    pub kept: Vec<String>,
    /// New in the file.
    pub started: Vec<String>,
    /// Changed: started anew.
    pub restarted: Vec<String>,
    /// Gone from the file.
    pub stopped: Vec<String>,
    /// Streams that could not start, with why (the rest of the file applies).
    pub failed: Vec<(String, String)>,
    /// Settings that changed in the file but take a restart of the process.
    pub needs_restart: Vec<&'static str>,
}

impl StreamSet {
    /// The set of `started` streams (from the config file or command line), serving
    /// through `registry`.
    pub(super) fn new(
        started: Vec<(LiveStream, StreamSettings)>,
        settings: &Settings,
        registry: Arc<StreamRegistry>,
        metrics: Arc<Metrics>,
        store: Store,
        auth: Arc<Access>,
        push: Arc<PushPoints>,
    ) -> Arc<Self> {
        let running = started
            .into_iter()
            .map(|(live, settings)| {
                let running = Running {
                    live,
                    settings,
                    origin: Origin::Config,
                };
                (running.settings.name.clone(), running)
            })
            .collect();
        Arc::new(Self {
            registry,
            metrics,
            store,
            auth,
            push,
            running: Mutex::new(running),
            in_force: tokio::sync::Mutex::new(InForce {
                settings: settings.clone(),
                loaded: settings.clone(),
                file: None,
            }),
        })
    }

    /// From now on a reload reads `file`.
    pub async fn reload_from(&self, file: ConfigFile) {
        self.in_force.lock().await.file = Some(file);
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops stream `name`'s media thread without taking it out of service (tests of
    /// what a stopped source does to held requests). False when there is none.
    pub fn stop_media(&self, name: &str) -> bool {
        self.running().get(name).map(|r| r.live.stop()).is_some()
    }

    /// Stops every stream, waiting for their threads (the server is going away).
    pub fn stop_all(&self) {
        let all: Vec<Running> = self.running().drain().map(|(_, r)| r).collect();
        for running in &all {
            running.live.stop();
        }
        drop(all);
    }

    /// How long a stream taken out of service keeps its names: its window and the
    /// three target durations RFC 8216bis 6.2.2 asks for after it.
    fn retire_for(settings: &Settings) -> Duration {
        let target = settings.cmaf.segment_target().max(Duration::from_secs(1));
        target * (u32::try_from(settings.server.window_segments).unwrap_or(1000) + 3)
    }

    /// Starts `stream` with `settings` and serves it under its name, replacing (and
    /// retiring) whatever was there.
    async fn start(
        &self,
        stream: StreamSettings,
        settings: &Settings,
        origin: Origin,
    ) -> Result<(), StreamError> {
        super::push::check_publishable(&self.push, &stream)?;
        self.rebalance_store(Some(&stream.name));
        let options = super::push::options_for(settings, &self.push, &stream.name, Some(&stream));
        let store = self.store.clone();
        let to_start = stream.clone();
        let started = tokio::task::spawn_blocking(move || {
            let spec = SourceSpec::parse(&to_start.source);
            LiveStream::start(&to_start.name, &spec, &to_start.renditions, &options, store)
        })
        .await
        .map_err(|e| StreamError::Start {
            stream: stream.name.clone(),
            reason: e.to_string(),
        })??;
        let replacing = self.running().contains_key(&stream.name);
        // A stream encoders push to cannot have media before the old one lets its
        // publisher go (retiring it closes the source; the publisher then hands over
        // to the new one): it takes the name at once.
        let pushed = SourceSpec::parse(&stream.source) == SourceSpec::Publish;
        if replacing && !pushed {
            // The old stream serves until the new one has media: a camera URL that does
            // not answer must not take a working stream's place.
            let within = settings.source.open_timeout() + settings.cmaf.segment_target() * 3;
            if let Err(reason) = until_publishing(started.handle(), within).await {
                retire(Some(Running {
                    live: started,
                    settings: stream.clone(),
                    origin,
                }));
                return Err(StreamError::Start {
                    stream: stream.name,
                    reason,
                });
            }
        }
        self.metrics.watch_stream(started.handle());
        // The stream it replaces keeps its policy for its retiring names; the new one's
        // applies before it is served.
        if replacing {
            self.auth.retire(&stream.name, Self::retire_for(settings));
        }
        self.auth.set_policy(&stream.name, stream.policy);
        self.registry
            .insert(started.handle().clone(), Self::retire_for(settings));
        let replaced = self.running().insert(
            stream.name.clone(),
            Running {
                live: started,
                settings: stream,
                origin,
            },
        );
        retire(replaced);
        Ok(())
    }

    /// Stops `name` and takes it out of service. False when it was not running.
    fn remove(&self, name: &str, settings: &Settings) -> bool {
        let removed = self.running().remove(name);
        let known = removed.is_some();
        self.push.remove(name);
        self.auth.retire(name, Self::retire_for(settings));
        self.registry.remove(name, Self::retire_for(settings));
        retire(removed);
        self.rebalance_store(None);
        known
    }

    /// Shares the store's budget between the streams served, those retiring, and
    /// `adding`.
    fn rebalance_store(&self, adding: Option<&str>) {
        let mut names = self.registry.names();
        names.extend(self.registry.retiring_names());
        names.extend(adding.map(str::to_string));
        names.sort();
        names.dedup();
        self.store.rebalance(&names);
    }

    fn describe(&self, name: &str, running: &Running) -> serde_json::Value {
        let mut value = running.settings.redacted_json();
        value["origin"] = serde_json::to_value(running.origin).unwrap_or_default();
        value["url"] = format!("/{name}/{MULTIVARIANT_PLAYLIST}").into();
        value["status"] = serde_json::to_value(running.live.status()).unwrap_or_default();
        value
    }

    /// Applies `new` settings (a reloaded file): see the module doc.
    async fn apply(&self, in_force: &mut InForce, new: Settings) -> ReloadSummary {
        let old = &in_force.settings;
        let mut summary = ReloadSummary {
            needs_restart: needs_restart(old, &new),
            ..ReloadSummary::default()
        };
        let options_changed = old.stream_options_differ(&new);
        let wanted = match &in_force.file {
            Some(file) if new.streams.is_empty() => vec![file.default_stream.clone()],
            _ => new.streams.clone(),
        };
        let current: Vec<(String, StreamSettings, Origin)> = self
            .running()
            .iter()
            .map(|(name, r)| (name.clone(), r.settings.clone(), r.origin))
            .collect();
        for (name, settings, origin) in &current {
            let in_file = wanted.iter().any(|w| &w.name == name);
            if *origin == Origin::Config && !in_file {
                self.remove(name, &new);
                summary.stopped.push(name.clone());
            } else if *origin == Origin::Api && !in_file && options_changed {
                match self.start(settings.clone(), &new, Origin::Api).await {
                    Ok(()) => summary.restarted.push(name.clone()),
                    Err(e) => summary.failed.push((name.clone(), e.to_string())),
                }
            }
        }
        for stream in wanted {
            let name = stream.name.clone();
            let same = current
                .iter()
                .find(|(n, ..)| n == &name)
                .map(|(_, settings, _)| settings.same_media(&stream));
            match same {
                // Its media unchanged: kept, and its policy and publishing credentials
                // (which may have changed) apply from the next request or publisher.
                Some(true) if !options_changed => {
                    if let Some(running) = self.running().get_mut(&name) {
                        running.origin = Origin::Config;
                        running.settings.policy = stream.policy;
                        running.settings.publish_key = stream.publish_key.clone();
                        running.settings.publish_key_sha256 = stream.publish_key_sha256.clone();
                        running.settings.srt_passphrase = stream.srt_passphrase.clone();
                    }
                    self.auth.set_policy(&name, stream.policy);
                    super::push::update_credentials(&self.push, &stream);
                    summary.kept.push(name);
                }
                existed => match self.start(stream, &new, Origin::Config).await {
                    Ok(()) if existed.is_some() => summary.restarted.push(name),
                    Ok(()) => summary.started.push(name),
                    Err(e) => summary.failed.push((name, e.to_string())),
                },
            }
        }
        in_force.loaded = new.clone();
        in_force.settings = with_running_sections(new, &in_force.settings);
        summary
    }

    /// Reads the config file again and applies it. An unreadable or invalid file
    /// changes nothing; the error names the field.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        self.reload_when(|_, _| true)
            .await
            .map(Option::unwrap_or_default)
    }

    /// Reads the config file again and applies it if what it says differs from the
    /// settings in force (a watcher of the file: comparing what it says, not when it was
    /// written, sees every change and makes no change of its own).
    pub async fn reload_if_changed(&self) -> Result<Option<ReloadSummary>, ReloadError> {
        self.reload_when(|in_force, new| in_force != new).await
    }

    async fn reload_when(
        &self,
        wanted: impl FnOnce(&Settings, &Settings) -> bool,
    ) -> Result<Option<ReloadSummary>, ReloadError> {
        let mut in_force = self.in_force.lock().await;
        let Some(file) = in_force.file.clone() else {
            return Err(ReloadError::NoConfigFile);
        };
        let new = Settings::load(Some(&file.path), &file.overrides)?;
        if !wanted(&in_force.loaded, &new) {
            return Ok(None);
        }
        let summary = self.apply(&mut in_force, new).await;
        tracing::info!(
            kept = ?summary.kept,
            started = ?summary.started,
            restarted = ?summary.restarted,
            stopped = ?summary.stopped,
            failed = ?summary.failed,
            needs_restart = ?summary.needs_restart,
            "config reloaded"
        );
        Ok(Some(summary))
    }
}

/// Waits until `stream` has published media, at most `within`; else why not.
async fn until_publishing(stream: &StreamHandle, within: Duration) -> Result<(), String> {
    let mut snapshots = stream.subscribe();
    let published = tokio::time::timeout(within, async {
        loop {
            if snapshots.borrow_and_update().has_media {
                return true;
            }
            if snapshots.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    if published == Ok(true) {
        return Ok(());
    }
    let status = stream.status();
    Err(format!(
        "it published no media within {within:?}, so the running one stays ({}{})",
        status.state.as_str(),
        status
            .last_error
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    ))
}

/// Stops a stream taken out of service. Its thread is joined off the runtime: a
/// source may take a moment to notice.
fn retire(running: Option<Running>) {
    if let Some(running) = running {
        running.live.stop();
        tokio::task::spawn_blocking(move || drop(running));
    }
}

/// `new` with the sections a reload cannot apply taken from `running`.
fn with_running_sections(mut new: Settings, running: &Settings) -> Settings {
    let (server, old) = (&mut new.server, &running.server);
    server.listen = old.listen;
    server.http_listen = old.http_listen;
    server.cert.clone_from(&old.cert);
    server.key.clone_from(&old.key);
    server.certs_dir.clone_from(&old.certs_dir);
    server.store_bytes = old.store_bytes;
    server.hls_js.clone_from(&old.hls_js);
    server.watch_config = old.watch_config;
    new.limits = running.limits.clone();
    new.log = running.log.clone();
    new.admin = running.admin.clone();
    new.auth = running.auth.clone();
    new
}

/// The sections a reload cannot apply to a running process, when they changed.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let (a, b) = (&old.server, &new.server);
    for (field, changed) in [
        ("server.listen", a.listen != b.listen),
        ("server.http_listen", a.http_listen != b.http_listen),
        (
            "server.cert",
            a.cert != b.cert || a.key != b.key || a.certs_dir != b.certs_dir,
        ),
        ("server.store_bytes", a.store_bytes != b.store_bytes),
        ("server.hls_js", a.hls_js != b.hls_js),
        ("server.watch_config", a.watch_config != b.watch_config),
        ("limits", old.limits != new.limits),
        ("log", old.log != new.log),
        ("admin", old.admin != new.admin),
        ("auth", old.auth != new.auth),
        ("push", old.push != new.push),
    ] {
        if changed {
            fields.push(field);
        }
    }
    fields
}

/// An admin API error for a stream's settings that failed `ConfigError`'s checks: the
/// field as the JSON names it (`streams.renditions.width` is `renditions.width`).
fn invalid(error: ConfigError) -> AdminError {
    match error {
        ConfigError::Field { field, reason } => AdminError::Invalid { field, reason },
        ConfigError::Invalid { field, reason } => AdminError::Invalid {
            field: field.trim_start_matches("streams.").to_string(),
            reason,
        },
        other => AdminError::Invalid {
            field: String::new(),
            reason: other.to_string(),
        },
    }
}

/// An admin API error for a stream that could not start.
fn cannot_start(error: StreamError) -> AdminError {
    let field = match &error {
        StreamError::Source { .. } => Some("source".to_string()),
        StreamError::Encoder { .. } => Some("renditions".to_string()),
        _ => None,
    };
    AdminError::CannotStart {
        field,
        reason: error.to_string(),
    }
}

impl StreamControl for StreamSet {
    fn list(&self) -> Vec<serde_json::Value> {
        let running = self.running();
        let mut names: Vec<&String> = running.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|name| self.describe(name, &running[name]))
            .collect()
    }

    fn get(&self, name: &str) -> Option<serde_json::Value> {
        let running = self.running();
        running.get(name).map(|r| self.describe(name, r))
    }

    fn add(&self, body: Bytes) -> ControlFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let stream = StreamSettings::from_json(&body).map_err(invalid)?;
            let in_force = self.in_force.lock().await;
            let name = stream.name.clone();
            {
                let running = self.running();
                if running.contains_key(&name) {
                    return Err(AdminError::Exists(name));
                }
                if running.len() >= in_force.settings.admin.max_streams {
                    return Err(AdminError::TooManyStreams(running.len()));
                }
            }
            self.start(stream, &in_force.settings, Origin::Api)
                .await
                .map_err(cannot_start)?;
            self.get(&name).ok_or(AdminError::NoSuchStream(name))
        })
    }

    fn replace(&self, name: String, body: Bytes) -> ControlFuture<'_, (bool, serde_json::Value)> {
        Box::pin(async move {
            let stream = StreamSettings::from_json(&body).map_err(invalid)?;
            if stream.name != name {
                return Err(AdminError::Invalid {
                    field: "name".into(),
                    reason: format!(
                        "{:?} is not the stream of this path ({name:?})",
                        stream.name
                    ),
                });
            }
            let in_force = self.in_force.lock().await;
            let existed = {
                let running = self.running();
                let existed = running.contains_key(&name);
                if !existed && running.len() >= in_force.settings.admin.max_streams {
                    return Err(AdminError::TooManyStreams(running.len()));
                }
                existed
            };
            self.start(stream, &in_force.settings, Origin::Api)
                .await
                .map_err(cannot_start)?;
            let described = self.get(&name).ok_or(AdminError::NoSuchStream(name))?;
            Ok((!existed, described))
        })
    }

    fn delete(&self, name: String) -> ControlFuture<'_, ()> {
        Box::pin(async move {
            let in_force = self.in_force.lock().await;
            if self.remove(&name, &in_force.settings) {
                Ok(())
            } else {
                Err(AdminError::NoSuchStream(name))
            }
        })
    }

    fn reload(&self) -> ControlFuture<'_, serde_json::Value> {
        Box::pin(async move {
            match StreamSet::reload(self).await {
                Ok(summary) => Ok(serde_json::to_value(summary).unwrap_or_default()),
                Err(ReloadError::NoConfigFile) => Err(AdminError::NoConfigFile),
                Err(ReloadError::Config(error)) => {
                    Err(AdminError::BadConfigFile(error.to_string()))
                }
            }
        })
    }
}
