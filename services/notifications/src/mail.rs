//! Sending one email: over SMTP ([`SmtpMailer`], when `FLOTILLA_NOTIFICATIONS__SMTP` is
//! set) or into a maildir ([`Maildir`], the default under the data directory).
//!
//! Every message carries `Message-ID: <event id@notifications.flotilla>`: delivery is
//! at least once (a crash between the server accepting a message and the store
//! recording it sends it again on redelivery), and a duplicate is recognisable by its
//! Message-ID. The maildir writes the file under the event id too, so a redelivered
//! event replaces its own file instead of adding one.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kit::discovery::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// The domain part of every Message-ID.
pub const MESSAGE_ID_DOMAIN: &str = "notifications.flotilla";

/// One email, ready to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The event it answers; its Message-ID and maildir file name.
    pub event_id: String,
    /// Sender (`Flotilla <no-reply@flotilla.local>`).
    pub from: String,
    /// Recipient address.
    pub to: String,
    /// Recipient display name (may be empty).
    pub to_name: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

impl Email {
    /// `<event id@notifications.flotilla>`.
    pub fn message_id(&self) -> String {
        format!("<{}@{MESSAGE_ID_DOMAIN}>", self.event_id)
    }
}

/// Why an email was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The message cannot be built (an invalid address): retrying will not help.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The server refused or could not be reached; a later try may succeed.
    #[error("SMTP: {0}")]
    Smtp(String),
    /// Writing the maildir failed.
    #[error("maildir {path}: {source}")]
    Maildir {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Builds the RFC 5322 message for `email`.
pub fn build(email: &Email) -> Result<Message, MailError> {
    let from: Mailbox = email
        .from
        .parse()
        .map_err(|e| MailError::Invalid(format!("sender {:?}: {e}", email.from)))?;
    let address = email
        .to
        .parse()
        .map_err(|e| MailError::Invalid(format!("recipient {:?}: {e}", email.to)))?;
    let name = (!email.to_name.trim().is_empty()).then(|| email.to_name.clone());
    Message::builder()
        .message_id(Some(email.message_id()))
        .from(from)
        .to(Mailbox::new(name, address))
        .subject(email.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(email.body.clone())
        .map_err(|e| MailError::Invalid(e.to_string()))
}

/// Delivers emails somewhere.
pub trait Mailer: Send + Sync + std::fmt::Debug {
    /// Sends one; `Ok` once the server (or the disk) has it.
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>>;
    /// Where mail goes, for logs (no credentials).
    fn describe(&self) -> String;
}

/// Sends over SMTP with lettre (`smtp://host:port` plain, `smtp://…?tls=required`
/// STARTTLS, `smtps://…` TLS; `user:pass@` for AUTH).
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    url: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer for `url`. Nothing connects yet.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| {
                format!(
                    "{:?} is not an SMTP URL (smtp://host:port): {e}",
                    kit::store::redact(url)
                )
            })?
            .timeout(Some(timeout))
            .build();
        Ok(Self {
            transport,
            url: kit::store::redact(url),
        })
    }
}

impl Mailer for SmtpMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            let message = build(email)?;
            self.transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| MailError::Smtp(e.to_string()))
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// Writes each email as a `.eml` file into a maildir (`tmp/`, `new/`, `cur/`): written
/// and synced in `tmp/`, then renamed into `new/`, so a reader never sees half a message.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// A maildir at `root`, creating its three folders.
    pub fn create(root: &Path) -> Result<Self, MailError> {
        for sub in ["tmp", "new", "cur"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| MailError::Maildir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The maildir's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file name of the message for `event_id`: unique per event, so a redelivery
    /// replaces rather than duplicates (characters outside `[A-Za-z0-9-]` become `_`).
    pub fn file_name(event_id: &str) -> String {
        let safe: String = event_id
            .chars()
            .take(128)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{safe}.flotilla.eml")
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), MailError> {
        let tmp = self.root.join("tmp").join(name);
        let new = self.root.join("new").join(name);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| MailError::Maildir { path, source }
        };
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &new).map_err(io(&new))?;
        // The rename is durable once the directory is synced.
        if let Ok(dir) = std::fs::File::open(self.root.join("new")) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Mailer for Maildir {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            let bytes = build(email)?.formatted();
            let name = Self::file_name(&email.event_id);
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.write(&name, &bytes))
                .await
                .map_err(|e| MailError::Maildir {
                    path: self.root.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?
        })
    }

    fn describe(&self) -> String {
        format!("maildir {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email {
            event_id: "0190a0b0-0000-7000-8000-000000000001".into(),
            from: "Flotilla <no-reply@flotilla.local>".into(),
            to: "ada@example.com".into(),
            to_name: "Ada".into(),
            subject: "Order o1 confirmed".into(),
            body: "Hello Ada,\n".into(),
        }
    }

    #[test]
    fn the_event_id_is_the_message_id() {
        let text = String::from_utf8(build(&email()).unwrap().formatted()).unwrap();
        assert!(
            text.contains(
                "Message-ID: <0190a0b0-0000-7000-8000-000000000001@notifications.flotilla>"
            ),
            "{text}"
        );
        assert!(text.contains("To: Ada <ada@example.com>"), "{text}");
        assert!(text.contains("Subject: Order o1 confirmed"), "{text}");
    }

    #[test]
    fn an_invalid_address_is_refused() {
        let mut e = email();
        e.to = "not an address".into();
        assert!(matches!(build(&e), Err(MailError::Invalid(_))));
    }

    #[test]
    fn smtp_urls_are_checked() {
        let e = SmtpMailer::new("http://user:secret@x", Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("not an SMTP URL"), "{e}");
        assert!(!e.contains("secret"), "credentials stay out of errors: {e}");
        assert!(SmtpMailer::new("smtp://127.0.0.1:2525", Duration::from_secs(1)).is_ok());
    }

    #[tokio::test]
    async fn the_maildir_gets_one_file_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = Maildir::create(&dir.path().join("maildir")).unwrap();
        maildir.send(&email()).await.unwrap();
        maildir.send(&email()).await.unwrap(); // a redelivery
        let new: Vec<_> = std::fs::read_dir(maildir.root().join("new"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(new.len(), 1);
        assert_eq!(
            std::fs::read_dir(maildir.root().join("tmp"))
                .unwrap()
                .count(),
            0,
            "nothing left in tmp/"
        );
        let text = std::fs::read_to_string(new[0].path()).unwrap();
        assert!(text.contains("Hello Ada,"), "{text}");
        assert_eq!(
            Maildir::file_name("../x/y"),
            "___x_y.flotilla.eml",
            "no path tricks"
        );
    }
}
