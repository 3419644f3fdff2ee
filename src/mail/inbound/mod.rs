//! The inbound edge: where received mail comes from (`mail.inbound`, DESIGN §9), behind one
//! [`MailSource`] trait, so that the reader in `workers/inbound.rs` is the same loop for every
//! source: fetch a batch of raw mails, have them ingested, then acknowledge each one (move it to
//! the processed folder) or leave it where it is for the next pass.
//!
//! - [`maildir`]: every file in `DIR/new` and `DIR/cur`, moved into `DIR/.<processed>/cur/`.
//! - [`imap`]: the UIDs above the last one processed (kept in `imap_state`), `BODY.PEEK[]`,
//!   `UID MOVE` to the processed folder; IDLE between passes.
//!
//! Mail larger than [`MAX_INBOUND_BYTES`] is not read: only its header is (IMAP
//! `BODY.PEEK[HEADER]`; Maildir: the first bytes of the file), handed on as [`Fetched::TooLarge`],
//! and acknowledged (IMAP: also flagged `\Seen`) like the rest.
//!
//! Quarantine is not the source's business: ingestion records a mail that keeps failing as
//! QUARANTINED after `mail.quarantine_after` attempts, after which it is acknowledged like any
//! judged mail.
use std::{fmt, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use percent_encoding::percent_decode_str;
use tokio_util::sync::CancellationToken;

pub mod imap;
pub mod maildir;

pub use crate::workflow::inbound::MAX_INBOUND_BYTES;

/// Bodies fetched per batch at most, and their total size at most.
const FETCH_BATCH: usize = 100;
const FETCH_BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// One message of a batch, as the source read it.
#[derive(Debug)]
pub struct Fetched {
    /// Where it was found, for the logs: a file name, or `mailbox uid N`.
    pub origin: String,
    /// The whole message, or the header of one too large to read.
    pub content: Content,
}

#[derive(Debug)]
pub enum Content {
    Mail(Vec<u8>),
    /// Over [`MAX_INBOUND_BYTES`]: the header block only, and the size.
    TooLarge {
        header: Vec<u8>,
        size: u64,
    },
}

/// A place received mail is read from; see the module documentation. A pass is
/// [`MailSource::begin_pass`], then [`MailSource::next_batch`] and [`MailSource::settle`] in turns
/// until no batch is left, then [`MailSource::end_pass`].
#[tonic::async_trait]
pub trait MailSource: Send + fmt::Debug {
    /// The `transport` recorded with each ingested mail: `maildir` or `imap`.
    fn transport(&self) -> &'static str;

    /// Makes the source ready for passes (IMAP: connect, TLS, LOGIN).
    async fn open(&mut self) -> anyhow::Result<()>;

    /// Looks at what is waiting (Maildir: lists the files; IMAP: SELECT, the sizes of the new
    /// UIDs).
    async fn begin_pass(&mut self) -> anyhow::Result<()>;

    /// The next batch of the pass, oldest first (either mails, or one [`Content::TooLarge`]);
    /// None when the pass is done. A batch may be empty (its mail vanished meanwhile); it is
    /// settled all the same.
    async fn next_batch(&mut self) -> anyhow::Result<Option<Vec<Fetched>>>;

    /// After the last batch was ingested (in one transaction, committed): `handled[i]` says
    /// whether its i-th mail was (acknowledged: moved to the processed folder) or failed (left
    /// where it is, read again by the next pass; the rest of the batch is moved all the same).
    async fn settle(&mut self, handled: &[bool]) -> anyhow::Result<()>;

    /// Records where the pass ended (IMAP: the first `imap_state` of a mailbox).
    async fn end_pass(&mut self) -> anyhow::Result<()>;

    /// Waits until mail may have come (Maildir: a poll interval; IMAP: IDLE, at most a sweep
    /// interval); returns early, Ok, when `shutdown` is cancelled.
    async fn wait(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()>;

    /// Lets go of the source (IMAP: LOGOUT); never fails.
    async fn close(&mut self);
}

/// Builds the source `url` names (None for `none`): see [`InboundSource`].
pub fn open_source(
    url: &InboundSource,
    processed_folder: &str,
    ca_file: Option<PathBuf>,
    store: crate::store::Store,
) -> Option<Box<dyn MailSource>> {
    match url {
        InboundSource::None => None,
        InboundSource::Maildir(dir) => Some(Box::new(maildir::MaildirSource::new(
            dir.clone(),
            processed_folder,
        ))),
        InboundSource::Imap { .. } => Some(Box::new(imap::ImapSource::new(
            url.clone(),
            processed_folder,
            ca_file,
            store,
        ))),
    }
}

/// TLS from the first byte (`imaps://`) or upgraded with STARTTLS (`imap://`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapTls {
    Starttls,
    Implicit,
}

/// Where replies come from, parsed from `mail.inbound`.
#[derive(Clone, PartialEq, Eq)]
pub enum InboundSource {
    None,
    Maildir(PathBuf),
    Imap {
        tls: ImapTls,
        host: String,
        port: u16,
        user: String,
        /// Never shown by Debug.
        password: String,
        folder: String,
    },
}

impl fmt::Debug for InboundSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Maildir(dir) => f.debug_tuple("Maildir").field(dir).finish(),
            Self::Imap {
                tls,
                host,
                port,
                user,
                folder,
                ..
            } => f
                .debug_struct("Imap")
                .field("tls", tls)
                .field("host", host)
                .field("port", port)
                .field("user", user)
                .field("password", &"<redacted>")
                .field("folder", folder)
                .finish(),
        }
    }
}

impl InboundSource {
    /// `none`, `maildir:DIR`, `imap://user:pass@host[:port]/FOLDER` (STARTTLS, port 143) or
    /// `imaps://...` (port 993); user, password and folder percent-decoded, the folder defaults
    /// to INBOX. Errors never quote the password.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let url = url.trim();
        if url.eq_ignore_ascii_case("none") {
            return Ok(Self::None);
        }
        if let Some(dir) = url.strip_prefix("maildir:") {
            let dir = dir.strip_prefix("//").unwrap_or(dir);
            if dir.is_empty() {
                bail!("mail.inbound: maildir: needs a directory (maildir:DIR)");
            }
            return Ok(Self::Maildir(PathBuf::from(dir)));
        }
        let (tls, rest) = if let Some(rest) = url.strip_prefix("imaps://") {
            (ImapTls::Implicit, rest)
        } else if let Some(rest) = url.strip_prefix("imap://") {
            (ImapTls::Starttls, rest)
        } else {
            let scheme = url.split(':').next().unwrap_or_default();
            bail!(
                "mail.inbound: unsupported scheme {scheme:?}; expected imap://, imaps://, maildir:DIR or none"
            );
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Some((userinfo, hostport)) = authority.rsplit_once('@') else {
            bail!("mail.inbound: an IMAP URL needs user:password@host");
        };
        let Some((user, password)) = userinfo.split_once(':') else {
            bail!("mail.inbound: an IMAP URL needs user:password@host (no password given)");
        };
        let decode = |what: &str, s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| anyhow::anyhow!("mail.inbound: the {what} is not valid UTF-8"))
        };
        let user = decode("user", user)?;
        let password = decode("password", password)?;
        let default_port = match tls {
            ImapTls::Implicit => 993,
            ImapTls::Starttls => 143,
        };
        let (host, port) = split_host_port(hostport, default_port)?;
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let folder = decode("folder", path)?;
        let folder = if folder.is_empty() {
            "INBOX".to_string()
        } else {
            folder
        };
        if user.is_empty() {
            bail!("mail.inbound: an IMAP URL needs a user name");
        }
        Ok(Self::Imap {
            tls,
            host,
            port,
            user,
            password,
            folder,
        })
    }
}

fn split_host_port(hostport: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        // [IPv6]:port
        let (host, after) = rest
            .split_once(']')
            .context("mail.inbound: unterminated [IPv6 address]")?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        bail!("mail.inbound: an IMAP URL needs a host");
    }
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("mail.inbound: port {p:?} is not a port number"))?,
        None => default_port,
    };
    Ok((host.to_string(), port))
}

/// How long [`MailSource::wait`] waits at most: the Maildir poll, and the IMAP sweep (an IDLE is
/// ended and the mailbox swept by UID at least this often).
pub const MAILDIR_POLL: Duration = Duration::from_secs(1);
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The first (topmost, i.e. final) `Delivered-To:` header's address, unfolded and without angle
/// brackets.
pub fn delivered_to(raw: &[u8]) -> Option<String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(raw.len());
    let headers = String::from_utf8_lossy(&raw[..end]);
    let mut lines = headers.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("delivered-to") || name.starts_with([' ', '\t']) {
            continue;
        }
        let mut value = value.trim().to_string();
        while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
            value.push_str(next.trim());
            lines.next();
        }
        let value = value.trim_matches(|c| c == '<' || c == '>').trim();
        return (!value.is_empty()).then(|| value.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_sources() {
        assert_eq!(
            InboundSource::from_url("none").unwrap(),
            InboundSource::None
        );
        assert_eq!(
            InboundSource::from_url("maildir:mail/inbox").unwrap(),
            InboundSource::Maildir(PathBuf::from("mail/inbox"))
        );
        assert_eq!(
            InboundSource::from_url("imaps://approvals%40x.test:s%3Acr%40t@mail.x.test:1993/INBOX")
                .unwrap(),
            InboundSource::Imap {
                tls: ImapTls::Implicit,
                host: "mail.x.test".into(),
                port: 1993,
                user: "approvals@x.test".into(),
                password: "s:cr@t".into(),
                folder: "INBOX".into(),
            }
        );
        let InboundSource::Imap {
            tls, port, folder, ..
        } = InboundSource::from_url("imap://u:p@host").unwrap()
        else {
            panic!("an IMAP source")
        };
        assert_eq!(
            (tls, port, folder.as_str()),
            (ImapTls::Starttls, 143, "INBOX")
        );
        let InboundSource::Imap { port, folder, .. } =
            InboundSource::from_url("imaps://u:p@host/Approvals%20In").unwrap()
        else {
            panic!("an IMAP source")
        };
        assert_eq!((port, folder.as_str()), (993, "Approvals In"));
    }

    #[test]
    fn errors_and_debug_never_show_the_password() {
        for url in [
            "imaps://u:hunter2@:993/INBOX",
            "imaps://u:hunter2@host:99999/INBOX",
            "imaps://u:hunter2@host:port/INBOX",
            "imaps://:hunter2@host/INBOX",
            "pop3://u:hunter2@host",
            "imaps://u:hunter2%FF@host",
        ] {
            let e = format!("{:#}", InboundSource::from_url(url).unwrap_err());
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
        let source = InboundSource::from_url("imaps://u:hunter2@host/INBOX").unwrap();
        let debug = format!("{source:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("redacted"),
            "{debug}"
        );
    }

    #[test]
    fn delivered_to_is_the_topmost_header() {
        let raw = b"Return-Path: <m@x>\r\nDelivered-To: <approvals+abc@x.test>\r\n\
            Delivered-To: approvals@x.test\r\nSubject: Re\r\n\r\nDelivered-To: body@x\r\n";
        assert_eq!(delivered_to(raw).as_deref(), Some("approvals+abc@x.test"));
        assert_eq!(delivered_to(b"Subject: x\n\nDelivered-To: a@b\n"), None);
        assert_eq!(
            delivered_to(b"delivered-to:\n  folded@x.test\nSubject: x\n\n").as_deref(),
            Some("folded@x.test")
        );
    }
}
