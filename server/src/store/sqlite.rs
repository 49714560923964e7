//! SQLite specifics: WAL mode, one writer connection, a small pool of
//! read-only connections, and the SQLite flavour of every dialect-specific query.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use tokio::sync::{mpsc, oneshot};

use super::documents::{apply_writes, now_micros, record_changes, Commit, CommitError, Committed, WriteSql};
use super::jobs::{record_jobs, NewJob};
use super::query::{Dialect, FieldPath, Param, Scalar};
use super::StoreError;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

const READERS: u32 = 4;

pub(super) struct SqlitePools {
    pub writer: SqlitePool,
    pub readers: SqlitePool,
    pub queue: WriteQueue,
}

impl SqlitePools {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        let readers = SqlitePoolOptions::new().max_connections(READERS).connect_with(options.read_only(true)).await?;
        let queue = WriteQueue::start(writer.clone());
        Ok(SqlitePools { writer, readers, queue })
    }

    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// SQLite reads JSON fields with `json_type` / `json_extract`.
pub(super) struct SqliteDialect;

fn json_path(field: &FieldPath) -> String {
    format!("'$.{}'", field.segments().join("."))
}

impl Dialect for SqliteDialect {
    fn rank(&self, field: &FieldPath) -> String {
        format!(
            "(CASE json_type(data, {}) WHEN 'null' THEN 0 WHEN 'true' THEN 1 WHEN 'false' THEN 1 \
             WHEN 'integer' THEN 2 WHEN 'real' THEN 2 WHEN 'text' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 END)",
            json_path(field)
        )
    }

    fn num(&self, field: &FieldPath) -> String {
        let p = json_path(field);
        format!(
            "(CASE json_type(data, {p}) WHEN 'true' THEN 1.0 WHEN 'false' THEN 0.0 \
             WHEN 'integer' THEN CAST(json_extract(data, {p}) AS REAL) WHEN 'real' THEN json_extract(data, {p}) ELSE 0.0 END)"
        )
    }

    fn text(&self, field: &FieldPath) -> String {
        let p = json_path(field);
        format!("(CASE json_type(data, {p}) WHEN 'text' THEN json_extract(data, {p}) ELSE '' END)")
    }

    fn array_contains(&self, field: &FieldPath, value: &Scalar, param: &str) -> String {
        let p = json_path(field);
        let element = match value {
            Scalar::Null => "je.type = 'null'".to_owned(),
            Scalar::Bool(true) => "je.type = 'true'".to_owned(),
            Scalar::Bool(false) => "je.type = 'false'".to_owned(),
            Scalar::Number(_) => format!("je.type IN ('integer', 'real') AND je.value = {param}"),
            Scalar::String(_) => format!("je.type = 'text' AND je.value = {param}"),
        };
        format!(
            "(json_type(data, {p}) = 'array' AND EXISTS (SELECT 1 FROM json_each(documents.data, {p}) AS je WHERE {element}))"
        )
    }

    fn array_element_param(&self, value: &Scalar) -> Option<Param> {
        match value {
            Scalar::Null | Scalar::Bool(_) => None,
            Scalar::Number(n) => Some(Param::Real(*n)),
            Scalar::String(s) => Some(Param::Text(s.clone())),
        }
    }

    fn data_text(&self) -> &'static str {
        "data"
    }
}

pub(super) static WRITE_SQL: WriteSql = WriteSql {
    select_current:
        "SELECT id, data, version, create_time, update_time FROM documents WHERE collection = $1 AND id = $2",
    insert:
        "INSERT INTO documents (collection, id, data, version, create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4)",
    update: "UPDATE documents SET data = $3, version = version + 1, update_time = $4 WHERE collection = $1 AND id = $2",
    delete: "DELETE FROM documents WHERE collection = $1 AND id = $2",
    json_param: "",
};

/// Most commits one writer transaction takes in at once.
const GROUP_MAX: usize = 256;

type Reply = oneshot::Sender<Result<Vec<Committed>, CommitError>>;

/// The single writer: commits arrive on a channel, and whatever is waiting is
/// committed together in one transaction (group commit), each commit inside
/// its own savepoint so a rejected one leaves the others intact.
pub(super) struct WriteQueue {
    sender: mpsc::Sender<(Commit, Reply)>,
}

impl WriteQueue {
    fn start(writer: SqlitePool) -> WriteQueue {
        let (sender, receiver) = mpsc::channel(4096);
        tokio::spawn(run_writer(writer, receiver));
        WriteQueue { sender }
    }

    pub async fn commit(&self, commit: Commit) -> Result<Vec<Committed>, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((commit, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }
}

async fn run_writer(writer: SqlitePool, mut receiver: mpsc::Receiver<(Commit, Reply)>) {
    let mut group = Vec::with_capacity(GROUP_MAX);
    while receiver.recv_many(&mut group, GROUP_MAX).await > 0 {
        let results = commit_group(&writer, &group).await;
        let replies = group.drain(..).map(|(_, reply)| reply);
        match results {
            Ok(results) => replies.zip(results).for_each(|(reply, result)| {
                let _ = reply.send(result);
            }),
            Err(e) => {
                let message = e.to_string();
                replies.for_each(|reply| {
                    let _ = reply.send(Err(StoreError::Internal(message.clone()).into()));
                });
            }
        }
    }
}

/// Commits a group in one transaction. Optimistically without savepoints;
/// when any commit of the group is rejected (rare), the transaction is rolled
/// back and the group runs again with one savepoint per commit, so a rejected
/// commit leaves the others intact. Mutations are pure, so re-running is safe.
async fn commit_group(writer: &SqlitePool, group: &[(Commit, Reply)]) -> Result<CommitResults, StoreError> {
    match run_group(writer, group, Savepoints::No).await? {
        Some(results) => Ok(results),
        None => Ok(run_group(writer, group, Savepoints::Yes).await?.unwrap_or_default()),
    }
}

type CommitResults = Vec<Result<Vec<Committed>, CommitError>>;

#[derive(PartialEq)]
enum Savepoints {
    No,
    Yes,
}

/// One attempt at a group; `None` when, without savepoints, a commit was rejected.
async fn run_group(
    writer: &SqlitePool,
    group: &[(Commit, Reply)],
    savepoints: Savepoints,
) -> Result<Option<CommitResults>, StoreError> {
    let now = now_micros();
    let mut tx = writer.begin().await?;
    let mut results = Vec::with_capacity(group.len());
    for (commit, _) in group {
        let result = if savepoints == Savepoints::Yes {
            let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
            let result = apply_writes!(savepoint, &WRITE_SQL, commit.writes, now);
            match result {
                Ok(_) => savepoint.commit().await?,
                Err(_) => savepoint.rollback().await?,
            }
            result
        } else {
            let result = apply_writes!(tx, &WRITE_SQL, commit.writes, now);
            if result.is_err() {
                tx.rollback().await?;
                return Ok(None);
            }
            result
        };
        results.push(result);
    }
    record_changes!(tx, &WRITE_SQL, committed_writes(&results), now)?;
    record_jobs!(tx, &group_jobs(group, &results, now), now)?;
    tx.commit().await?;
    Ok(Some(results))
}

/// The trigger jobs of every successful commit of the group.
fn group_jobs(group: &[(Commit, Reply)], results: &[Result<Vec<Committed>, CommitError>], now: i64) -> Vec<NewJob> {
    group
        .iter()
        .zip(results)
        .filter_map(|((commit, _), result)| Some(commit.jobs.as_ref()?(result.as_ref().ok()?, now)))
        .flatten()
        .collect()
}

fn committed_writes(results: &[Result<Vec<Committed>, CommitError>]) -> impl Iterator<Item = &Committed> {
    results.iter().filter_map(|r| r.as_ref().ok()).flatten()
}
