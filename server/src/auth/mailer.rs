//! Outgoing email for auth (verification and password reset): through SMTP
//! (lettre) when `NIMBUS_SMTP_URL` is set, otherwise the dev mailer, which
//! writes each message as a file under `<data dir>/mail/` so developers and
//! tests can follow the links. Message bodies hold secrets and are never logged.

use std::path::PathBuf;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

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
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Box<Mailbox>,
    },
}

impl Mailer {
    /// SMTP when a URL is given, else the folder mailer.
    pub fn from_config(smtp_url: Option<&SecretString>, from: &str, folder: PathBuf) -> Result<Mailer, String> {
        let Some(url) = smtp_url else { return Ok(Mailer::Folder(folder)) };
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|e| format!("NIMBUS_SMTP_URL: {e}"))?
            .build();
        let from = from.parse::<Mailbox>().map_err(|e| format!("NIMBUS_MAIL_FROM: {e}"))?;
        Ok(Mailer::Smtp { transport: Box::new(transport), from: Box::new(from) })
    }

    pub async fn send(&self, mail: Mail) -> Result<(), AuthError> {
        match self {
            Mailer::Folder(dir) => write_to_folder(dir, mail).await,
            Mailer::Smtp { transport, from } => {
                let to = mail.to.parse::<Mailbox>().map_err(|_| AuthError::invalid("email", "cannot receive mail"))?;
                let message = Message::builder()
                    .from(Mailbox::clone(from))
                    .to(to)
                    .subject(mail.subject.clone())
                    .body(mail.body)
                    .map_err(|e| AuthError::Internal(format!("building mail: {e}")))?;
                transport.send(message).await.map_err(|e| AuthError::Internal(format!("sending mail: {e}")))?;
                tracing::info!(subject = %mail.subject, "mail sent");
                Ok(())
            }
        }
    }
}

async fn write_to_folder(dir: &std::path::Path, mail: Mail) -> Result<(), AuthError> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| AuthError::Internal(format!("mail folder: {e}")))?;
    let path = dir.join(format!("{}-{}.eml", crate::clock::now_micros(), crate::ids::random_id(6)));
    let text = format!("To: {}\nSubject: {}\n\n{}\n", mail.to, mail.subject, mail.body);
    tokio::fs::write(&path, text).await.map_err(|e| AuthError::Internal(format!("writing mail: {e}")))?;
    tracing::info!(file = %path.display(), subject = %mail.subject, "mail written");
    Ok(())
}
