//! Hot reload of policies: validate the new set in full, then swap it in atomically. A
//! bad edit keeps the last good set in force and is reported (log and `/readyz`).
//!
//! The candidate policy set ([`sluis_core::engine::candidate`]), when configured, is reloaded
//! the same way and on the same triggers, but apart: its errors are reported and counted
//! on their own ([`Reloader::candidate_status`]) and never touch the enforced set.
//!
//! Triggers: changes in the directories holding the policy files and the query templates
//! they read, and SIGHUP. The watcher watches *directories*, not files: editors replace
//! files by rename and Kubernetes updates a mounted ConfigMap by swapping a `..data`
//! symlink, and neither is seen by a watch on the old file. A configured directory is
//! watched with its subdirectories (templates usually sit below the policies, and a new
//! one may appear in a new folder); a template elsewhere has its directory watched once a
//! set reading it is in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};

use sluis_config::Config;
use sluis_core::engine::Engine;
use sluis_core::policy::{LoadError, PolicySet};

/// Outcome of the most recent reloads, for readiness detail and operators.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub last_success: Option<SystemTime>,
    /// The errors of the last failed reload, cleared by a successful one.
    pub last_error: Option<String>,
    pub successes: u64,
    pub failures: u64,
}

pub struct Reloader {
    config: Config,
    /// The config with the candidate set's locations as its policies.
    candidate_config: Option<Config>,
    engine: Arc<Engine>,
    status: Mutex<ReloadStatus>,
    candidate_status: Mutex<ReloadStatus>,
}

impl Reloader {
    /// `config` must be the config `engine` was built from; its policy set counts as the
    /// first successful load.
    pub fn new(config: Config, engine: Arc<Engine>) -> Reloader {
        let status = ReloadStatus {
            last_success: Some(SystemTime::now()),
            successes: 1,
            ..Default::default()
        };
        Reloader {
            candidate_config: config.candidate_config(),
            config,
            engine,
            status: Mutex::new(status),
            candidate_status: Mutex::new(ReloadStatus::default()),
        }
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// How loading the candidate set went (the first load at start included); `None`
    /// when no candidate set is configured.
    pub fn candidate_status(&self) -> Option<ReloadStatus> {
        self.candidate_config.as_ref()?;
        Some(
            self.candidate_status
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
        )
    }

    /// Loads the candidate set again and puts it in place if it is valid; a broken one
    /// keeps the last good candidate (or none) and is logged and counted. Returns whether
    /// the candidate set changed; `Ok(false)` without a candidate.
    pub fn reload_candidate(&self) -> Result<bool, Vec<LoadError>> {
        let Some(config) = &self.candidate_config else {
            return Ok(false);
        };
        let current = self.engine.candidate_policies().map(|p| p.version.clone());
        load(
            SetKind {
                config,
                status: &self.candidate_status,
                current,
                loaded: "candidate policy set loaded",
                recovered: "candidate policy set loads again after a failed reload",
                warning: "candidate: ",
                failed: "candidate policy set failed to load, keeping the last good candidate (the enforced set is not affected)",
            },
            |set| self.engine.swap_candidate(set),
        )
    }

    /// Loads the policies again and swaps them in if they are valid. Returns whether the
    /// policy set changed.
    pub fn reload(&self) -> Result<bool, Vec<LoadError>> {
        load(
            SetKind {
                config: &self.config,
                status: &self.status,
                current: Some(self.engine.policies().version.clone()),
                loaded: "policies reloaded",
                recovered: "policies load again after a failed reload",
                warning: "",
                failed: "policy reload failed, keeping the last good set",
            },
            |set| self.engine.swap_policies(set),
        )
    }

    /// Directories to watch, and whether with their subdirectories: the configured
    /// directories (recursively), the parents of configured files, and the directories of
    /// the query templates of the sets in place.
    fn watched_dirs(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let mut dirs: Vec<(PathBuf, RecursiveMode)> = Vec::new();
        let mut add = |dir: &Path, mode: RecursiveMode| {
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_path_buf()
            };
            if !dirs.iter().any(|(d, _)| *d == dir) {
                dirs.push((dir, mode));
            }
        };
        let candidates = self.candidate_config.iter().flat_map(|c| c.policies.iter());
        for entry in self.config.policies.iter().chain(candidates) {
            let path = self.config.resolve(entry);
            if path.is_dir() {
                add(&path, RecursiveMode::Recursive);
            } else {
                add(
                    path.parent().unwrap_or(Path::new("")),
                    RecursiveMode::NonRecursive,
                );
            }
        }
        let sets = std::iter::once(self.engine.policies()).chain(self.engine.candidate_policies());
        for set in sets {
            for file in set.template_files() {
                add(
                    file.parent().unwrap_or(Path::new("")),
                    RecursiveMode::NonRecursive,
                );
            }
        }
        dirs
    }

    /// Adds a watch on each directory of [`Reloader::watched_dirs`] not in `watching` yet;
    /// returns the ones that could not be watched.
    fn watch_new(
        &self,
        watcher: &mut impl Watcher,
        watching: &mut Vec<PathBuf>,
    ) -> Vec<(PathBuf, notify::Error)> {
        let mut failed = Vec::new();
        for (dir, mode) in self.watched_dirs() {
            if watching.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, mode) {
                Ok(()) => watching.push(dir),
                Err(e) => failed.push((dir, e)),
            }
        }
        failed
    }

    /// Starts watching for changes and SIGHUP. Events are debounced: a burst of writes
    /// (an editor's save, a ConfigMap swap) gives one reload.
    pub fn spawn(self: Arc<Self>, debounce: Duration) -> Result<(), String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let file_tx = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !matches!(event.kind, notify::EventKind::Access(_))
                {
                    let _ = file_tx.send(());
                }
            })
            .map_err(|e| format!("cannot watch policy files: {e}"))?;
        let mut watching = Vec::new();
        if let Some((dir, e)) = self
            .watch_new(&mut watcher, &mut watching)
            .into_iter()
            .next()
        {
            return Err(format!("cannot watch `{}`: {e}", dir.display()));
        }
        #[cfg(unix)]
        {
            let hup_tx = tx.clone();
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading policies");
                    let _ = hup_tx.send(());
                }
            });
        }
        tokio::spawn(async move {
            let mut watcher = watcher;
            while rx.recv().await.is_some() {
                tokio::time::sleep(debounce).await;
                while rx.try_recv().is_ok() {}
                let reloader = self.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = reloader.reload();
                    let _ = reloader.reload_candidate();
                })
                .await;
                // A set now in place may read templates from a directory not watched yet.
                for (dir, e) in self.watch_new(&mut watcher, &mut watching) {
                    tracing::warn!(
                        "cannot watch `{}`: edits there need SIGHUP: {e}",
                        dir.display()
                    );
                }
            }
        });
        Ok(())
    }
}

/// What differs between reloading the enforced set and the candidate set: where the
/// policies and the status are, which version is in place, and how the log reads.
struct SetKind<'a> {
    config: &'a Config,
    status: &'a Mutex<ReloadStatus>,
    current: Option<String>,
    loaded: &'static str,
    /// Logged when a set loads after a failed reload, also when it is the set in place
    /// (a broken edit reverted), so the log says the trouble is over.
    recovered: &'static str,
    warning: &'static str,
    failed: &'static str,
}

/// Loads a policy set and hands it to `swap` when it is valid and not the one in place;
/// a broken set is logged and counted, and the one in place stays.
fn load(kind: SetKind, swap: impl FnOnce(PolicySet)) -> Result<bool, Vec<LoadError>> {
    let result = PolicySet::load(&kind.config.policy_settings());
    let mut status = kind.status.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(set) => {
            let changed = kind.current.as_ref() != Some(&set.version);
            let version = set.version.clone();
            if changed {
                tracing::info!(version = %set.version, policies = set.policies.len(), "{}", kind.loaded);
                for warning in load_warnings(kind.config, &set) {
                    tracing::warn!("{}{warning}", kind.warning);
                }
                swap(set);
            }
            if status.last_error.is_some() {
                tracing::info!(version = %version, "{}", kind.recovered);
            }
            status.last_success = Some(SystemTime::now());
            status.last_error = None;
            status.successes += 1;
            Ok(changed)
        }
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            for error in &text {
                tracing::error!("{}: {error}", kind.failed);
            }
            status.last_error = Some(text.join("\n"));
            status.failures += 1;
            Err(errors)
        }
    }
}

/// What an operator should hear about a loaded policy set (`sluis validate`, `serve`,
/// reloads): what the configured gateways cannot do, and which policies are only watched.
pub fn load_warnings(config: &Config, policies: &PolicySet) -> Vec<String> {
    let mut warnings = crate::doors::gateway::gateway_warnings(config, policies);
    warnings.extend(policies.shadow_warnings());
    warnings
}
