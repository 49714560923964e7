//! Outgoing email for auth (verification and password reset). The dev mailer
//! (the default) writes each message as a file under `<data dir>/mail/`, so
//! developers and tests can follow the links; message bodies hold secrets and
//! are never logged.

use std::path::PathBuf;

use super::AuthError;

/// One message to send.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Where mail goes.
pub enum Mailer {
    /// Writes `<dir>/<time>-<id>.eml` files.
    Folder(PathBuf),
}

impl Mailer {
    pub async fn send(&self, mail: Mail) -> Result<(), AuthError> {
        match self {
            Mailer::Folder(dir) => {
                tokio::fs::create_dir_all(dir).await.map_err(|e| AuthError::Internal(format!("mail folder: {e}")))?;
                let micros =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
                let path = dir.join(format!("{micros}-{}.eml", crate::ids::random_id(6)));
                let text = format!("To: {}\nSubject: {}\n\n{}\n", mail.to, mail.subject, mail.body);
                tokio::fs::write(&path, text).await.map_err(|e| AuthError::Internal(format!("writing mail: {e}")))?;
                tracing::info!(file = %path.display(), subject = %mail.subject, "mail written");
                Ok(())
            }
        }
    }
}
