//! Moving a Firebase project in and documents out: `nimbus import
//! firebase-auth` (the file `firebase auth:export --format=json` writes:
//! users keep their ids, emails, verification, names, disabled flags, custom
//! claims and passwords — Firebase's scrypt hashes verify until the first
//! sign-in rehashes them), and `nimbus import|export firestore` (one JSON
//! document per line, `{"path", "data"}`, data in the wire form). Imports go
//! through `Accounts` and `Documents`, so validation, the change log and
//! triggers apply as for any write; nothing here speaks SQL.

use std::io::{BufRead, Write as _};
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::accounts::{Accounts, NewAccount};
use crate::auth::password::FirebaseHash;
use crate::auth::{AuthError, Caller};
use crate::documents::path::DocPath;
use crate::documents::{DocumentError, Documents, Precondition, WriteOp, WriteRequest, MAX_BATCH_WRITES};

/// The project's password hash parameters (Firebase console → Authentication → password hash parameters).
#[derive(Debug, Clone)]
pub struct HashParameters {
    pub signer_key: String,
    pub salt_separator: String,
    pub rounds: u32,
    pub mem_cost: u32,
}

/// What a document import does with a document that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Replace,
    /// Keep it and count it as skipped (seeding).
    Skip,
}

/// What an import did, printed by the command.
#[derive(Debug, Default)]
pub struct Report {
    pub imported: usize,
    pub skipped: usize,
    /// `where: why` for every entry that was refused.
    pub refused: Vec<String>,
}

impl Report {
    pub fn summary(&self, what: &str) -> String {
        format!(
            "{} {what} imported, {} skipped (already there), {} refused",
            self.imported,
            self.skipped,
            self.refused.len()
        )
    }
}

/// One user of a Firebase Auth export (unknown fields are ignored: providers, metadata …).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportedUser {
    local_id: String,
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
    password_hash: Option<String>,
    salt: Option<String>,
    display_name: Option<String>,
    #[serde(default)]
    disabled: bool,
    /// Custom claims as a JSON text.
    custom_attributes: Option<String>,
    /// Milliseconds since the epoch, as a string.
    created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AuthExport {
    users: Vec<Value>,
}

/// Imports the users of a `firebase auth:export --format=json` file.
pub async fn firebase_auth(accounts: &Accounts, file: &Path, parameters: &HashParameters) -> Result<Report, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let export: AuthExport =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a Firebase Auth export: {e}", file.display()))?;
    let mut report = Report::default();
    for (index, raw) in export.users.into_iter().enumerate() {
        let at = || format!("users[{index}]");
        let user: ExportedUser = match serde_json::from_value(raw) {
            Ok(user) => user,
            Err(e) => {
                report.refused.push(format!("{}: {e}", at()));
                continue;
            }
        };
        let id = user.local_id.clone();
        let account = match new_account(user, parameters) {
            Ok(account) => account,
            Err(why) => {
                report.refused.push(format!("{} (localId {id}): {why}", at()));
                continue;
            }
        };
        match accounts.create_account(account).await {
            Ok(_) => report.imported += 1,
            Err(AuthError::UserIdTaken) => report.skipped += 1,
            Err(e) => report.refused.push(format!("{} (localId {id}): {e}", at())),
        }
    }
    Ok(report)
}

fn new_account(user: ExportedUser, parameters: &HashParameters) -> Result<NewAccount, String> {
    let password_hash = match (user.password_hash, user.salt) {
        (Some(hash), Some(salt)) => Some(
            FirebaseHash {
                hash,
                salt,
                salt_separator: parameters.salt_separator.clone(),
                signer_key: parameters.signer_key.clone(),
                rounds: parameters.rounds,
                mem_cost: parameters.mem_cost,
            }
            .stored(),
        ),
        _ => None,
    };
    let claims = user
        .custom_attributes
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        .map_err(|e| format!("customAttributes is not JSON: {e}"))?;
    Ok(NewAccount {
        id: Some(user.local_id),
        email: user.email,
        password: None,
        password_hash,
        email_verified: user.email_verified,
        display_name: user.display_name,
        claims,
        disabled: user.disabled,
        created_at: user.created_at.and_then(|ms| ms.parse::<i64>().ok()).map(|ms| ms.saturating_mul(1000)),
    })
}

/// Imports `{"path", "data"}` lines through the documents layer, up to
/// `MAX_BATCH_WRITES` documents per atomic batch. A batch that fails is
/// written again line by line so each refused line is reported with its
/// number and the rest still land.
pub async fn firestore(documents: &Documents, file: &Path, existing: Existing) -> Result<Report, String> {
    let reader = std::io::BufReader::new(std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?);
    let mut report = Report::default();
    let mut batch: Vec<(usize, WriteRequest)> = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| format!("{}: {e}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line, existing) {
            Ok(request) => batch.push((number, request)),
            Err(why) => report.refused.push(format!("line {number}: {why}")),
        }
        if batch.len() == MAX_BATCH_WRITES {
            write_batch(documents, std::mem::take(&mut batch), &mut report).await;
        }
    }
    write_batch(documents, batch, &mut report).await;
    Ok(report)
}

fn parse_line(line: &str, existing: Existing) -> Result<WriteRequest, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let path = value["path"].as_str().ok_or("no \"path\"")?;
    let path = DocPath::parse(path.trim_matches('/')).map_err(|e| format!("path: {}", e.0))?;
    let data = value.get("data").cloned().ok_or("no \"data\"")?;
    let precondition = match existing {
        Existing::Replace => Precondition::None,
        Existing::Skip => Precondition::MustNotExist,
    };
    Ok(WriteRequest { path, op: WriteOp::Set(data), precondition })
}

async fn write_batch(documents: &Documents, batch: Vec<(usize, WriteRequest)>, report: &mut Report) {
    if batch.is_empty() {
        return;
    }
    let requests: Vec<WriteRequest> = batch.iter().map(|(_, r)| r.clone()).collect();
    if documents.write(&Caller::Service, requests).await.is_ok() {
        report.imported += batch.len();
        return;
    }
    for (number, request) in batch {
        match documents.write(&Caller::Service, vec![request]).await {
            Ok(_) => report.imported += 1,
            Err(DocumentError::AlreadyExists(_)) => report.skipped += 1,
            Err(e) => report.refused.push(format!("line {number}: {e}")),
        }
    }
}

/// Writes every document, in collection and id order, as `{"path", "data"}` lines.
pub async fn export_firestore(documents: &Documents, file: &Path) -> Result<usize, String> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).map_err(|e| format!("{}: {e}", file.display()))?);
    let mut after: Option<(String, String)> = None;
    let mut written = 0;
    loop {
        let page = documents.store().all_documents(after.as_ref(), 1000).await.map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        after = Some((last.collection.clone(), last.id.clone()));
        for doc in &page {
            let data: Value = serde_json::from_str(&doc.data).map_err(|e| format!("stored document: {e}"))?;
            let line = json!({"path": format!("{}/{}", doc.collection, doc.id), "data": data});
            writeln!(out, "{line}").map_err(|e| format!("{}: {e}", file.display()))?;
            written += 1;
        }
    }
    out.flush().map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(written)
}
