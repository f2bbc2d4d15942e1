//! Hot reload of policies: validate the new set in full, then swap it in atomically. A
//! bad edit keeps the last good set in force and is reported (log and `/readyz`).
//!
//! The config file is read again too, for its `sources` and `lookups` (other sections
//! take effect at a restart): the information sources are rebuilt and put in force
//! together with the policies validated against them, so a policy never calls a source
//! that is not there. A source whose configuration and files are unchanged is taken over
//! with its cache and circuit ([`SourceSet::rebuild`]).
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
use sluis_core::policy::{Diagnostic, DiagnosticKind, LoadError, PolicySet};
use sluis_core::sources::SourceSet;

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
    /// The config the server started with.
    config: Config,
    /// That config with the `sources` and `lookups` in force.
    in_force: Mutex<Config>,
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
            in_force: Mutex::new(config.clone()),
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
        // Checked against the sources in force (it never calls them).
        let mut config = config.clone();
        {
            let in_force = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
            config.sources = in_force.sources.clone();
            config.lookups = in_force.lookups.clone();
        }
        load(
            SetKind {
                config: &config,
                status: &self.candidate_status,
                current,
                loaded: "candidate policy set loaded",
                recovered: "candidate policy set loads again after a failed reload",
                warning: "candidate: ",
                failed: "candidate policy set failed to load, keeping the last good candidate (the enforced set is not affected)",
            },
            false,
            |set| self.engine.swap_candidate(set),
        )
    }

    /// Loads the policies again, with the sources the config file declares now, and swaps
    /// both in if they are valid. Returns whether the policy set or the sources changed.
    pub fn reload(&self) -> Result<bool, Vec<LoadError>> {
        let kind = SetKind {
            config: &self.config,
            status: &self.status,
            current: Some(self.engine.policies().version.clone()),
            loaded: "policies reloaded",
            recovered: "policies load again after a failed reload",
            warning: "",
            failed: "policy reload failed, keeping the last good set",
        };
        let rebuilt = self.read_config().and_then(|config| {
            let sources = self.rebuild_sources(&config)?;
            Ok((config, sources))
        });
        let (config, sources) = match rebuilt {
            Ok(rebuilt) => rebuilt,
            Err(errors) => return refuse(&kind, errors),
        };
        let changed = sources.changed;
        let kind = SetKind {
            config: &config,
            ..kind
        };
        let result = load(kind, changed, |set| {
            if changed {
                tracing::info!(
                    sources = sources.names.join(", "),
                    kept = sources.kept.join(", "),
                    "information sources rebuilt; those kept have their cache and circuit"
                );
            }
            self.engine.swap_policies_and_sources(set, sources.set)
        });
        if result.is_ok() {
            *self.in_force.lock().unwrap_or_else(|p| p.into_inner()) = config;
        }
        result
    }

    /// The config this server started with, with `sources` and `lookups` as the config
    /// file has them now.
    fn read_config(&self) -> Result<Config, Vec<LoadError>> {
        let mut config = self
            .in_force
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(path) = self.config.path.clone() else {
            return Ok(config);
        };
        let read = Config::load(&path).map_err(|e| {
            let message = match e {
                sluis_config::ConfigError::Read { cause, .. } => format!("cannot read: {cause}"),
                sluis_config::ConfigError::Invalid { message, .. } => message,
                sluis_config::ConfigError::InvalidAt {
                    line,
                    column,
                    message,
                    ..
                } => format!("{line}:{column}: {message}"),
            };
            vec![Diagnostic::in_file(
                DiagnosticKind::InvalidValue,
                &path,
                message,
            )]
        })?;
        config.sources = read.sources;
        config.lookups = read.lookups;
        Ok(config)
    }

    /// The sources `config` declares: the ones in force when nothing changed, else a new
    /// set taking over the unchanged sources.
    fn rebuild_sources(&self, config: &Config) -> Result<Rebuilt, Vec<LoadError>> {
        let previous = self.engine.sources();
        let before = self
            .in_force
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if config.sources.is_empty() {
            return Ok(Rebuilt {
                changed: previous.is_some(),
                set: None,
                names: Vec::new(),
                kept: Vec::new(),
            });
        }
        let (set, kept) = SourceSet::rebuild(
            previous.as_deref(),
            &config.source_settings(),
            self.engine.metrics().clone(),
        )
        .map_err(|message| {
            let file = self.config.path.clone().unwrap_or_default();
            vec![Diagnostic::in_file(
                DiagnosticKind::InvalidValue,
                &file,
                message,
            )]
        })?;
        let names: Vec<String> = set.names().map(str::to_owned).collect();
        let unchanged = previous.is_some()
            && kept.len() == names.len()
            && previous
                .as_ref()
                .is_some_and(|p| p.names().count() == names.len())
            && format!("{:?}", before.lookups) == format!("{:?}", config.lookups);
        Ok(Rebuilt {
            changed: !unchanged,
            set: if unchanged {
                previous
            } else {
                Some(Arc::new(set))
            },
            names,
            kept,
        })
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
        // The config file's directory, when it is watched for the config file alone: other
        // files there (a log beside it) trigger nothing.
        let config_only = self.config.path.as_deref().and_then(|path| {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = path.file_name()?.to_owned();
            let watched = self.watched_dirs().into_iter().any(|(d, _)| d == dir);
            (!watched).then_some((dir, name))
        });
        let filter = config_only.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !matches!(event.kind, notify::EventKind::Access(_))
                    && relevant(&event.paths, filter.as_ref())
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
        if let Some((dir, _)) = &config_only {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch `{}`: {e}", dir.display()))?;
            watching.push(dir.clone());
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

/// Whether an event on `paths` may change what is loaded: not when every path is a file
/// other than the config file in the directory watched for the config file alone
/// (`config_only`). A Kubernetes ConfigMap swaps its `..data` link: that counts.
fn relevant(paths: &[PathBuf], config_only: Option<&(PathBuf, std::ffi::OsString)>) -> bool {
    let Some((dir, name)) = config_only else {
        return true;
    };
    paths.is_empty()
        || paths.iter().any(|path| {
            path.parent() != Some(dir.as_path())
                || path.file_name() == Some(name.as_os_str())
                || path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        })
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

/// What a reload does with the information sources.
struct Rebuilt {
    /// Whether the set differs from the one in force.
    changed: bool,
    set: Option<Arc<SourceSet>>,
    names: Vec<String>,
    /// The sources taken over with their cache and circuit.
    kept: Vec<String>,
}

/// A reload refused before its policies were loaded: logged and counted as a failed one.
fn refuse(kind: &SetKind, errors: Vec<LoadError>) -> Result<bool, Vec<LoadError>> {
    let mut status = kind.status.lock().unwrap_or_else(|p| p.into_inner());
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for error in &text {
        tracing::error!("{}: {error}", kind.failed);
    }
    status.last_error = Some(text.join("\n"));
    status.failures += 1;
    Err(errors)
}

/// Loads a policy set and hands it to `swap` when it is valid and not the one in place (or
/// `also_changed`: what it is swapped in with changed); a broken set is logged and
/// counted, and the one in place stays.
fn load(
    kind: SetKind,
    also_changed: bool,
    swap: impl FnOnce(PolicySet),
) -> Result<bool, Vec<LoadError>> {
    let result = PolicySet::load(&kind.config.policy_settings());
    let mut status = kind.status.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(set) => {
            let changed = also_changed || kind.current.as_ref() != Some(&set.version);
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
            drop(status);
            refuse(&kind, errors)
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
