//! Security rules as the server holds them: loads `*.rules` files from the
//! rules folder into compiled `nimbus_rules_lang::Rules`, swaps them atomically
//! when the folder changes or the admin API replaces them (a broken file is
//! refused with `file:line:col` and the previous rules keep serving), and runs
//! described requests against rules (`cases`). Deciding live requests is
//! `documents`' job (it knows the data).
//!
//! Several instances share one set: rules the admin API replaces, or a folder
//! edit one instance sees, are deployed to the database (`store::deployments`),
//! and every instance polls the deployment's version and puts a newer set in
//! force (decision 0018). At start a deployment newer than every file of the
//! folder wins over the folder.

pub mod api;
pub mod cases;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::swap::Swap;

use nimbus_rules_lang::Rules;

use crate::error::{ApiFailure, ErrorCode};
use crate::store::Store;

/// The deployments row the rules are kept under.
const DEPLOYMENT: &str = "rules";
/// How often an instance looks for a newer deployment.
const DEPLOYMENT_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A rules file that does not compile: `file:line:col: message`.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
}

impl ApiFailure for RulesError {
    fn code(&self) -> ErrorCode {
        match self {
            RulesError::Invalid(_) => ErrorCode::InvalidArgument,
            RulesError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// A rules file: its name in the rules folder and its text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RulesFile {
    pub name: String,
    pub source: String,
}

/// Reads every `*.rules` file in `dir`, sorted by name. A missing folder holds none.
pub fn read_dir(dir: &Path) -> Result<Vec<RulesFile>, RulesError> {
    let io = |e: std::io::Error| RulesError::Io(format!("{}: {e}", dir.display()));
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "rules") {
            let source = std::fs::read_to_string(&path).map_err(io)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            files.push(RulesFile { name, source });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Compiles files; errors name the file under `dir` (`rules/app.rules:3:20: …`).
pub fn compile(dir: &Path, files: &[RulesFile]) -> Result<Rules, RulesError> {
    let named: Vec<(String, &str)> =
        files.iter().map(|f| (dir.join(&f.name).display().to_string(), f.source.as_str())).collect();
    let sources: Vec<(&str, &str)> = named.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    Rules::compile(&sources).map_err(|e| RulesError::Invalid(e.to_string()))
}

/// Reads and compiles the rules folder.
pub fn load_dir(dir: &Path) -> Result<Rules, String> {
    read_dir(dir).and_then(|files| compile(dir, &files)).map_err(|e| e.to_string())
}

/// The rules in force; cheap to clone, swapped atomically.
#[derive(Clone)]
pub struct RulesService {
    dir: PathBuf,
    store: Store,
    /// The version of the deployment in force (0: none yet).
    deployed: Arc<AtomicI64>,
    current: Swap<Rules>,
    files: Swap<Vec<RulesFile>>,
    /// Serializes replacements (admin API and folder watcher).
    replacing: Arc<tokio::sync::Mutex<()>>,
    /// How the last load from the folder went.
    status: Swap<LoadStatus>,
    /// Bumped each time new rules are put in force (realtime re-checks open subscriptions).
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

/// How the last load of the rules went, as the admin rules API shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadStatus {
    /// When rules were last put in force (RFC 3339).
    pub loaded_at: Option<String>,
    /// The last refused reload's error, `file:line:col: message`, until rules load again.
    pub error: Option<String>,
    /// When that reload was refused.
    pub error_at: Option<String>,
}

impl RulesService {
    /// Loads the folder, or the deployment in the database when it is newer
    /// than every file of the folder; a broken file is an error (the server
    /// does not start).
    pub async fn load(dir: &Path, store: Store) -> Result<RulesService, String> {
        let files = read_dir(dir).map_err(|e| e.to_string())?;
        let rules = compile(dir, &files).map_err(|e| e.to_string())?;
        let service = RulesService {
            dir: dir.to_path_buf(),
            store,
            deployed: Arc::new(AtomicI64::new(0)),
            current: Swap::new(rules),
            files: Swap::new(files),
            replacing: Arc::new(tokio::sync::Mutex::new(())),
            status: Swap::new(LoadStatus { loaded_at: Some(now_text()), error: None, error_at: None }),
            generation: Arc::new(tokio::sync::watch::Sender::new(0)),
        };
        let deployment = service.store.deployment(DEPLOYMENT).await.map_err(|e| format!("rules deployment: {e}"))?;
        match deployment {
            Some(deployment) if Some(deployment.updated_at) > newest_file_micros(dir) => {
                service.adopt(deployment).await
            }
            // The folder was edited since: it is the newest set, for every instance.
            Some(deployment) if deployment.content != serde_json::to_string(&service.files()).unwrap_or_default() => {
                service.deploy(&service.files()).await.map_err(|e| e.to_string())?
            }
            Some(deployment) => service.deployed.store(deployment.version, Ordering::Release),
            None => {}
        }
        Ok(service)
    }

    /// How the last load went (its time, or the error that kept the previous rules).
    pub fn status(&self) -> LoadStatus {
        self.status.load().as_ref().clone()
    }

    pub fn current(&self) -> Arc<Rules> {
        self.current.load()
    }

    pub fn files(&self) -> Vec<RulesFile> {
        self.files.load().as_ref().clone()
    }

    fn swap(&self, rules: Rules, files: Vec<RulesFile>) {
        self.current.store(rules);
        self.files.store(files);
        self.status.store(LoadStatus { loaded_at: Some(now_text()), error: None, error_at: None });
        self.generation.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes each time new rules are put in force.
    pub fn replacements(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Checks `files`, puts them in force, deploys them to every instance and
    /// writes them as the rules folder's contents (removing other `*.rules` files).
    pub async fn replace(&self, files: Vec<RulesFile>) -> Result<(), RulesError> {
        for file in &files {
            let valid = file.name.ends_with(".rules")
                && !file.name.contains(['/', '\\'])
                && !file.name.starts_with('.')
                && file.name.len() <= 128;
            if !valid {
                return Err(RulesError::Invalid(format!("{:?} is not a rules file name (name.rules)", file.name)));
            }
        }
        let rules = compile(&self.dir, &files)?;
        let _guard = self.replacing.lock().await;
        // The database keeps the deployment; the folder gets a copy when it can
        // (a read-only folder, as in the compose file, still serves).
        if let Err(e) = self.write_folder(&files) {
            tracing::warn!("the deployed rules are not copied into the rules folder: {e}");
        }
        self.swap(rules, files.clone());
        self.deploy(&files).await
    }

    /// Makes `files` the folder's `*.rules` files.
    fn write_folder(&self, files: &[RulesFile]) -> Result<(), RulesError> {
        let io = |e: std::io::Error| RulesError::Io(format!("{}: {e}", self.dir.display()));
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        for old in read_dir(&self.dir)? {
            if !files.iter().any(|f| f.name == old.name) {
                std::fs::remove_file(self.dir.join(&old.name)).map_err(io)?;
            }
        }
        for file in files {
            let temporary = self.dir.join(format!(".{}.tmp", file.name));
            std::fs::write(&temporary, &file.source).map_err(io)?;
            std::fs::rename(&temporary, self.dir.join(&file.name)).map_err(io)?;
        }
        Ok(())
    }

    /// Deploys `files` (in force here) to every instance.
    async fn deploy(&self, files: &[RulesFile]) -> Result<(), RulesError> {
        let content = serde_json::to_string(files).map_err(|e| RulesError::Io(e.to_string()))?;
        let version = self
            .store
            .deploy(DEPLOYMENT, &content, crate::clock::now_micros())
            .await
            .map_err(|e| RulesError::Io(format!("deploying the rules to the other instances: {e}")))?;
        self.deployed.store(version, Ordering::Release);
        Ok(())
    }

    /// Puts a deployment made by any instance in force here (without touching
    /// this instance's folder); one that does not compile is logged and skipped.
    async fn adopt(&self, deployment: crate::store::deployments::Deployment) {
        self.deployed.store(deployment.version, Ordering::Release);
        let compiled = serde_json::from_str::<Vec<RulesFile>>(&deployment.content)
            .map_err(|e| RulesError::Io(e.to_string()))
            .and_then(|files| compile(&self.dir, &files).map(|rules| (rules, files)));
        match compiled {
            Ok((rules, files)) if files != self.files() => {
                self.swap(rules, files);
                tracing::info!(version = deployment.version, "security rules deployed by an instance put in force");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(version = deployment.version, "a rules deployment cannot be used here: {e}");
                self.refused(e.to_string());
            }
        }
    }

    /// Looks for a newer deployment until the process ends.
    async fn follow_deployments(self) {
        loop {
            tokio::time::sleep(DEPLOYMENT_POLL).await;
            let newest = match self.store.deployment_version(DEPLOYMENT).await {
                Ok(newest) => newest.unwrap_or(0),
                Err(e) => {
                    tracing::warn!("reading the rules deployment failed (will retry): {e}");
                    continue;
                }
            };
            if newest <= self.deployed.load(Ordering::Acquire) {
                continue;
            }
            let _guard = self.replacing.lock().await;
            match self.store.deployment(DEPLOYMENT).await {
                Ok(Some(deployment)) if deployment.version > self.deployed.load(Ordering::Acquire) => {
                    self.adopt(deployment).await
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("reading the rules deployment failed (will retry): {e}"),
            }
        }
    }

    fn refused(&self, error: String) {
        let loaded_at = self.status.load().loaded_at.clone();
        self.status.store(LoadStatus { loaded_at, error: Some(error), error_at: Some(now_text()) });
    }

    /// Polls the folder and reloads when it changes; a file that fails to
    /// compile is logged with its position and the previous rules stay.
    pub fn watch(&self) {
        let service = self.clone();
        crate::watch::watch_folder("rules watcher", self.dir.clone(), "rules", move || service.clone().reload());
        let service = self.clone();
        crate::supervise::spawn_supervised("rules deployments", move || service.clone().follow_deployments());
    }

    /// Reads and compiles the folder again; a file that fails to compile is
    /// logged with its position and the previous rules stay.
    async fn reload(self) {
        let _guard = self.replacing.lock().await;
        match read_dir(&self.dir).and_then(|files| compile(&self.dir, &files).map(|r| (r, files))) {
            Ok((rules, files)) if files != self.files() => {
                self.swap(rules, files.clone());
                tracing::info!(dir = %self.dir.display(), "security rules reloaded");
                if let Err(e) = self.deploy(&files).await {
                    tracing::error!("{e}");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("security rules not reloaded, the previous rules stay: {e}");
                self.refused(e.to_string());
            }
        }
    }
}

/// When the newest `*.rules` file of `dir` was written (microseconds since the epoch).
fn newest_file_micros(dir: &Path) -> Option<i64> {
    crate::watch::fingerprint(dir, "rules")
        .into_iter()
        .filter_map(|(_, _, modified)| modified)
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_micros() as i64)
        .max()
}

fn now_text() -> String {
    crate::clock::format_time(crate::clock::now_micros())
}
