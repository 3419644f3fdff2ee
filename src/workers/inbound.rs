//! The reply readers: bring received mail to [`Workflow::ingest_batch`], the one ingestion
//! function (DESIGN §5), from a Maildir directory or an IMAP mailbox (`mail.inbound`, DESIGN §9).
//!
//! Exactly once: a batch of messages (one IMAP FETCH, or up to [`FETCH_BATCH`] Maildir files) is
//! ingested first, in one transaction, and moved out of the way (to the processed folder) after
//! its commit. Ingestion is idempotent by Message-ID and content hash, so a crash between the two
//! only means the batch is read again on the next pass, logged DUPLICATE without any effect, and
//! then moved; a crash before the commit applied nothing of the batch. A message whose
//! ingestion fails (an error, not a verdict) is left where it is and logged, the rest of its
//! batch is moved and the pass goes on: it never holds up the mail behind it. The next pass
//! reads it again, and after `mail.quarantine_after` failures ingestion records it as
//! QUARANTINED, after which it is moved like any judged mail.
//!
//! - **Maildir**: every file in `DIR/new` and `DIR/cur` is read, ingested and renamed into
//!   `DIR/.<processed_folder>/cur/` (a Maildir++ sub-folder). The loop polls every second.
//! - **IMAP** (`imaps://` TLS from the first byte, `imap://` STARTTLS, LOGIN): the mailbox's
//!   UIDVALIDITY and the last processed UID are kept in the database (`imap_state`). A pass
//!   fetches the sizes of the UIDs above the last one, then the bodies (`BODY.PEEK[]`, so nothing
//!   is marked read before it is processed) in batches, ingests each, `UID MOVE`s the batch to
//!   the processed folder (created when missing; without MOVE: COPY, `\Seen \Deleted` and UID
//!   EXPUNGE where UIDPLUS allows) and records the last UID. Between passes the connection IDLEs;
//!   IDLE is ended and a pass is run on any server notification and at least every
//!   [`SWEEP_EVERY`] (the sweep that catches what a silent connection missed; IDLE is thereby
//!   re-issued far more often than the 30 min after which servers drop it). Any error drops the
//!   connection and reconnects after an exponential backoff with full jitter.
//!
//! Mail larger than [`MAX_INBOUND_BYTES`] is not read: only its header is (IMAP
//! `BODY.PEEK[HEADER]`; Maildir: the first bytes of the file), for a `too_large` row in the
//! inbound log and an answer telling the sender the limit ([`Workflow::ingest_too_large`]); then
//! it is flagged `\Seen` and moved to the processed folder like the rest.
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Once},
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures_util::TryStreamExt;
use percent_encoding::percent_decode_str;
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    store::imap_state::ImapState,
    workflow::{
        Workflow,
        inbound::{MAX_HEADER_BYTES, MAX_INBOUND_BYTES, ReceivedMail, header_block},
    },
};

/// The Maildir loop looks for new files this often.
pub const MAILDIR_POLL: Duration = Duration::from_secs(1);
/// An IDLE is ended and the mailbox swept by UID at least this often.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Reconnect backoff: the cap starts here and doubles per consecutive failure…
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// …up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Bodies fetched per command at most, and their total size at most.
const FETCH_BATCH: usize = 100;
const FETCH_BATCH_BYTES: u64 = 32 * 1024 * 1024;
/// No single IMAP command or connection step may take longer (a hung server must not stall the
/// worker forever: the error path reconnects).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

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

/// Reads replies from its source into the workflow; see the module documentation.
#[derive(Debug)]
pub struct InboundWorker {
    workflow: Arc<Workflow>,
    source: InboundSource,
    processed_folder: String,
    ca_file: Option<PathBuf>,
}

type ImapSession = async_imap::Session<TlsStream<TcpStream>>;

impl InboundWorker {
    pub fn new(
        workflow: Arc<Workflow>,
        source: InboundSource,
        processed_folder: String,
        ca_file: Option<PathBuf>,
    ) -> Self {
        Self {
            workflow,
            source,
            processed_folder,
            ca_file,
        }
    }

    /// One pass: Maildir — every file in new/ and cur/ is read, ingested, then moved to
    /// DIR/.<processed_folder>/cur/; IMAP — connect, log in, process the UIDs above the stored
    /// last one, log out. Returns how many messages were ingested.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        match &self.source {
            InboundSource::None => Ok(0),
            InboundSource::Maildir(dir) => self.maildir_pass(dir).await,
            InboundSource::Imap { .. } => {
                let (mut session, conn) = self.imap_connect().await?;
                let n = self.imap_pass(&mut session, &conn).await?;
                let _ = tokio::time::timeout(Duration::from_secs(5), session.logout()).await;
                Ok(n)
            }
        }
    }

    /// The loop (Maildir: a pass every second; IMAP: IDLE + sweeps, reconnecting with backoff);
    /// stops when `shutdown` is cancelled. Errors are logged and backed off, never kill the loop.
    pub fn spawn(self, shutdown: CancellationToken, tracker: &TaskTracker) {
        tracker.spawn(async move { self.run(shutdown).await });
    }

    async fn run(self, shutdown: CancellationToken) {
        tracing::info!(source = ?self.source, processed_folder = %self.processed_folder, "inbound reader started");
        match &self.source {
            InboundSource::None => {}
            InboundSource::Maildir(dir) => self.maildir_loop(dir, &shutdown).await,
            InboundSource::Imap { .. } => self.imap_loop(&shutdown).await,
        }
        tracing::info!("inbound reader stopped");
    }

    // ------------------------------------------------------------------------ Maildir

    async fn maildir_loop(&self, dir: &Path, shutdown: &CancellationToken) {
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            let wait = match self.maildir_pass(dir).await {
                Ok(_) => {
                    failures = 0;
                    MAILDIR_POLL
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures);
                    tracing::error!(error = %format!("{e:#}"), retry_in = ?wait, dir = %dir.display(), "maildir pass failed");
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn maildir_pass(&self, dir: &Path) -> anyhow::Result<usize> {
        for sub in ["new", "cur", "tmp"] {
            tokio::fs::create_dir_all(dir.join(sub))
                .await
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let processed = dir.join(format!(".{}", self.processed_folder));
        for sub in ["new", "cur", "tmp"] {
            tokio::fs::create_dir_all(processed.join(sub))
                .await
                .with_context(|| format!("creating {}", processed.join(sub).display()))?;
        }
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let mut entries = tokio::fs::read_dir(dir.join(sub))
                .await
                .with_context(|| format!("listing {}", dir.join(sub).display()))?;
            while let Some(entry) = entries.next_entry().await? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !entry.file_type().await?.is_file() {
                    continue;
                }
                files.push((name, entry.path()));
            }
        }
        // Maildir names start with the delivery time: roughly delivery order.
        files.sort();
        let mut ingested = 0;
        let mut batch = MaildirBatch::default();
        for (name, path) in files {
            let target = processed.join("cur").join(processed_name(&name));
            let size = match tokio::fs::metadata(&path).await {
                Ok(m) => m.len(),
                // Gone meanwhile (another reader, or the user's client): not ours any more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
            };
            if size > MAX_INBOUND_BYTES as u64 {
                // What is pending first, so files are handled in order.
                ingested += self.maildir_batch(&mut batch).await?;
                let header = match read_head(&path).await {
                    Ok(head) => head,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                };
                let header = header_block(&header);
                let record = match self
                    .workflow
                    .ingest_too_large(header, size, delivered_to(header).as_deref(), "maildir")
                    .await
                {
                    Ok(record) => record,
                    Err(e) => {
                        // Left for the next pass; the files behind it go on.
                        tracing::error!(error = %format!("{e:#}"), file = %path.display(), "ingesting the header of an oversized mail failed");
                        continue;
                    }
                };
                tracing::warn!(
                    file = %path.display(), size, limit = MAX_INBOUND_BYTES, inbound_id = %record.id,
                    "inbound mail larger than the limit: only its header was read (too_large)"
                );
                ingested += 1;
                move_file(&path, &target).await?;
                continue;
            }
            if !batch.files.is_empty()
                && (batch.files.len() >= FETCH_BATCH || batch.bytes + size > FETCH_BATCH_BYTES)
            {
                ingested += self.maildir_batch(&mut batch).await?;
            }
            let raw = match tokio::fs::read(&path).await {
                Ok(raw) => raw,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            batch.bytes += size;
            batch.files.push(MaildirFile {
                name,
                path,
                target,
                raw,
            });
        }
        ingested += self.maildir_batch(&mut batch).await?;
        Ok(ingested)
    }

    /// Ingests the pending files in one transaction, then moves those committed to the
    /// processed folder. A file whose ingestion failed stays (the next pass reads it again) and
    /// is logged; the others are moved all the same.
    async fn maildir_batch(&self, batch: &mut MaildirBatch) -> anyhow::Result<usize> {
        let files = std::mem::take(&mut batch.files);
        batch.bytes = 0;
        if files.is_empty() {
            return Ok(0);
        }
        let recipients: Vec<Option<String>> = files.iter().map(|f| delivered_to(&f.raw)).collect();
        let mails: Vec<ReceivedMail<'_>> = files
            .iter()
            .zip(&recipients)
            .map(|(f, to)| ReceivedMail {
                raw: &f.raw,
                delivered_to: to.as_deref(),
                transport: "maildir",
            })
            .collect();
        let results = self.workflow.ingest_batch(&mails).await;
        let mut ingested = 0;
        for (file, result) in files.iter().zip(results) {
            match result {
                Ok(record) => {
                    tracing::info!(
                        file = %file.name, inbound_id = %record.id, message_id = %record.message_id,
                        verdict = ?record.verdict, "inbound mail ingested (maildir)"
                    );
                    ingested += 1;
                    move_file(&file.path, &file.target).await?;
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), file = %file.path.display(), "ingesting a received mail failed: it stays for the next pass");
                }
            }
        }
        Ok(ingested)
    }

    // ------------------------------------------------------------------------ IMAP

    async fn imap_loop(&self, shutdown: &CancellationToken) {
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            let result = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.imap_connect() => r,
            };
            let error = match result {
                Ok((session, conn)) => {
                    tracing::info!(mailbox = %conn.key, "IMAP connected");
                    match self
                        .imap_session(session, &conn, shutdown, &mut failures)
                        .await
                    {
                        Ok(mut session) => {
                            let _ = tokio::time::timeout(Duration::from_secs(5), session.logout())
                                .await;
                            break;
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            failures = failures.saturating_add(1);
            let wait = backoff(failures);
            tracing::error!(error = %format!("{error:#}"), retry_in = ?wait, "IMAP reader failed; reconnecting");
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Passes and IDLEs on one connection until shutdown (`Ok`) or an error.
    async fn imap_session(
        &self,
        mut session: ImapSession,
        conn: &ImapConn,
        shutdown: &CancellationToken,
        failures: &mut u32,
    ) -> anyhow::Result<ImapSession> {
        loop {
            self.imap_pass(&mut session, conn).await?;
            *failures = 0;
            if shutdown.is_cancelled() {
                return Ok(session);
            }
            if !conn.idle {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(session),
                    () = tokio::time::sleep(SWEEP_EVERY) => {}
                }
                continue;
            }
            // IDLE takes the session and gives it back on DONE.
            let mut handle = session.idle();
            timed(handle.init(), "IDLE").await?;
            let stopped = {
                let (wait, stop) = handle.wait_with_timeout(SWEEP_EVERY);
                tokio::pin!(wait);
                tokio::select! {
                    r = &mut wait => {
                        r.context("IDLE")?;
                        false
                    }
                    () = shutdown.cancelled() => {
                        drop(stop);
                        let _ = tokio::time::timeout(Duration::from_secs(5), &mut wait).await;
                        true
                    }
                }
            };
            session = timed(handle.done(), "IDLE DONE").await?;
            drain_unsolicited(&session);
            if stopped {
                return Ok(session);
            }
        }
    }

    async fn imap_connect(&self) -> anyhow::Result<(ImapSession, ImapConn)> {
        let InboundSource::Imap {
            tls,
            host,
            port,
            user,
            password,
            folder,
        } = &self.source
        else {
            bail!("not an IMAP source");
        };
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        // The mail trust: system roots plus mail.ca_file, whose certificates are also pinned
        // (a server's self-signed certificate is trusted as itself).
        let config = crate::mail::trust::client_config(self.ca_file.as_deref())?;
        let server_name = ServerName::try_from(host.clone())
            .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
        let connect = async {
            let mut tcp = TcpStream::connect((host.as_str(), *port))
                .await
                .with_context(|| format!("connecting to IMAP server {host}:{port}"))?;
            if *tls == ImapTls::Starttls {
                starttls(&mut tcp).await?;
            }
            let stream = TlsConnector::from(Arc::new(config))
                .connect(server_name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {host}:{port}"))?;
            let mut client = async_imap::Client::new(stream);
            if *tls == ImapTls::Implicit {
                client
                    .read_response()
                    .await
                    .context("reading the IMAP greeting")?
                    .context("the IMAP server closed the connection before its greeting")?;
            }
            let mut session = client
                .login(user, password)
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("IMAP LOGIN as {user} at {host}:{port}"))?;
            let caps = session.capabilities().await.context("CAPABILITY")?;
            let (has_move, uidplus, idle) = (
                caps.has_str("MOVE"),
                caps.has_str("UIDPLUS"),
                caps.has_str("IDLE"),
            );
            // Create the processed folder; "already exists" (or any NO) is fine here: a folder
            // that really is missing makes the first MOVE fail, which is reported.
            if let Err(e) = session.create(&self.processed_folder).await {
                tracing::debug!(folder = %self.processed_folder, error = %e, "CREATE (the folder probably exists)");
            }
            anyhow::Ok((
                session,
                ImapConn {
                    key: format!("{user}@{host}:{port}/{folder}"),
                    folder: folder.clone(),
                    has_move,
                    uidplus,
                    idle,
                },
            ))
        };
        timed(connect, "connecting to the IMAP server").await
    }

    /// SELECTs the folder and processes every UID above the stored last one.
    async fn imap_pass(&self, session: &mut ImapSession, conn: &ImapConn) -> anyhow::Result<usize> {
        let store = self.workflow.store();
        let mailbox = timed(session.select(&conn.folder), "SELECT").await?;
        drain_unsolicited(session);
        let uid_validity = i64::from(mailbox.uid_validity.unwrap_or(0));
        let mut state = match store.imap_state(&conn.key).await? {
            Some(s) if s.uid_validity == uid_validity => s,
            previous => {
                if previous.is_some() {
                    tracing::warn!(mailbox = %conn.key, uid_validity, "UIDVALIDITY changed: reading the mailbox again from the start (duplicates are recognised)");
                }
                ImapState {
                    uid_validity,
                    last_uid: 0,
                }
            }
        };
        if mailbox.exists == 0 {
            if store.imap_state(&conn.key).await?.is_none() {
                store.save_imap_state(&conn.key, state).await?;
            }
            return Ok(0);
        }
        // Sizes first: `N:*` always answers the highest UID too, so filter.
        let sizes: Vec<(u32, u32)> = timed(
            async {
                let fetches: Vec<_> = session
                    .uid_fetch(format!("{}:*", state.last_uid + 1), "(UID RFC822.SIZE)")
                    .await?
                    .try_collect()
                    .await?;
                anyhow::Ok(fetches)
            },
            "UID FETCH sizes",
        )
        .await?
        .iter()
        .filter_map(|f| Some((f.uid?, f.size.unwrap_or(0))))
        .filter(|(uid, _)| i64::from(*uid) > state.last_uid)
        .collect();
        let mut sizes = sizes;
        sizes.sort_unstable();
        sizes.dedup();
        drain_unsolicited(session);

        let mut ingested = 0;
        let mut batch: Vec<u32> = Vec::new();
        let mut batch_bytes = 0u64;
        let mut i = 0;
        // The first UID whose ingestion failed in this pass: the last UID recorded stays below
        // it, so the next pass reads it again (everything after it is moved meanwhile).
        let mut held: Option<u32> = None;
        while i < sizes.len() {
            let (uid, size) = sizes[i];
            if u64::from(size) > MAX_INBOUND_BYTES as u64 {
                // Flush what is pending first, so UIDs are handled in order.
                if !batch.is_empty() {
                    ingested += self
                        .imap_batch(session, conn, &mut state, &batch, &mut held)
                        .await?;
                    batch.clear();
                    batch_bytes = 0;
                }
                match self.imap_too_large(session, conn, uid, size).await {
                    Ok(n) => {
                        ingested += n;
                        self.imap_move(session, conn, &uid.to_string(), true)
                            .await?;
                        if held.is_none() {
                            state.last_uid = i64::from(uid);
                            store.save_imap_state(&conn.key, state).await?;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), mailbox = %conn.key, uid, "ingesting the header of an oversized mail failed: it stays for the next pass");
                        held.get_or_insert(uid);
                    }
                }
                i += 1;
                continue;
            }
            if !batch.is_empty()
                && (batch.len() >= FETCH_BATCH || batch_bytes + u64::from(size) > FETCH_BATCH_BYTES)
            {
                ingested += self
                    .imap_batch(session, conn, &mut state, &batch, &mut held)
                    .await?;
                batch.clear();
                batch_bytes = 0;
            }
            batch.push(uid);
            batch_bytes += u64::from(size);
            i += 1;
        }
        if !batch.is_empty() {
            ingested += self
                .imap_batch(session, conn, &mut state, &batch, &mut held)
                .await?;
        }
        if store.imap_state(&conn.key).await?.is_none() {
            store.save_imap_state(&conn.key, state).await?;
        }
        Ok(ingested)
    }

    /// A message over the size cap: its header only (`BODY.PEEK[HEADER]`, nothing marked read),
    /// ingested as `too_large`. 1, or 0 when the message vanished meanwhile.
    async fn imap_too_large(
        &self,
        session: &mut ImapSession,
        conn: &ImapConn,
        uid: u32,
        size: u32,
    ) -> anyhow::Result<usize> {
        let fetches: Vec<_> = timed(
            async {
                let fetches: Vec<_> = session
                    .uid_fetch(uid.to_string(), "(UID BODY.PEEK[HEADER])")
                    .await?
                    .try_collect()
                    .await?;
                anyhow::Ok(fetches)
            },
            "UID FETCH BODY.PEEK[HEADER]",
        )
        .await?;
        drain_unsolicited(session);
        let Some(header) = fetches
            .iter()
            .find(|f| f.uid == Some(uid))
            .and_then(|f| f.header())
        else {
            return Ok(0);
        };
        let record = self
            .workflow
            .ingest_too_large(
                header,
                u64::from(size),
                delivered_to(header).as_deref(),
                "imap",
            )
            .await
            .with_context(|| format!("ingesting the header of UID {uid}"))?;
        tracing::warn!(
            mailbox = %conn.key, uid, size, limit = MAX_INBOUND_BYTES, inbound_id = %record.id,
            "inbound mail larger than the limit: only its header was read (too_large)"
        );
        Ok(1)
    }

    /// Fetches, ingests (one transaction), moves and records one batch of UIDs (ascending). When
    /// a message's ingestion fails, it is logged and left in the mailbox, the rest is still
    /// moved, and the last UID recorded stays below the first failed one of the pass (`held`),
    /// so the next pass reads it again; the pass goes on.
    async fn imap_batch(
        &self,
        session: &mut ImapSession,
        conn: &ImapConn,
        state: &mut ImapState,
        uids: &[u32],
        held: &mut Option<u32>,
    ) -> anyhow::Result<usize> {
        let set = uid_set(uids);
        let fetches: Vec<_> = timed(
            async {
                let fetches: Vec<_> = session
                    .uid_fetch(&set, "(UID BODY.PEEK[])")
                    .await?
                    .try_collect()
                    .await?;
                anyhow::Ok(fetches)
            },
            "UID FETCH BODY.PEEK[]",
        )
        .await?;
        drain_unsolicited(session);
        let mut bodies: Vec<(u32, &[u8])> = fetches
            .iter()
            .filter_map(|f| Some((f.uid?, f.body()?)))
            .collect();
        bodies.sort_by_key(|(uid, _)| *uid);
        let recipients: Vec<Option<String>> =
            bodies.iter().map(|(_, raw)| delivered_to(raw)).collect();
        let mails: Vec<ReceivedMail<'_>> = bodies
            .iter()
            .zip(&recipients)
            .map(|((_, raw), to)| ReceivedMail {
                raw,
                delivered_to: to.as_deref(),
                transport: "imap",
            })
            .collect();
        let results = self.workflow.ingest_batch(&mails).await;
        let mut done: Vec<u32> = Vec::new();
        let mut failed: Vec<u32> = Vec::new();
        for (&(uid, _), result) in bodies.iter().zip(results) {
            match result {
                Ok(record) => {
                    tracing::info!(
                        mailbox = %conn.key, uid, inbound_id = %record.id,
                        message_id = %record.message_id, verdict = ?record.verdict,
                        "inbound mail ingested (imap)"
                    );
                    done.push(uid);
                }
                Err(e) => {
                    tracing::error!(
                        error = %format!("{e:#}"), mailbox = %conn.key, uid,
                        "ingesting a received mail failed: it stays in the mailbox for the next pass"
                    );
                    failed.push(uid);
                }
            }
        }
        let n = done.len();
        // Handled: every UID but the failed ones (UIDs that vanished between the two FETCHes,
        // expunged by another client, count as handled).
        done = uids
            .iter()
            .copied()
            .filter(|uid| !failed.contains(uid))
            .collect();
        if let Some(&first) = failed.iter().min() {
            *held = Some(held.map_or(first, |h| h.min(first)));
        }
        let max = uids.iter().max().map_or(0, |&uid| i64::from(uid));
        let last = held.map_or(max, |h| max.min(i64::from(h) - 1));
        if !done.is_empty() {
            failpoint("inbound-before-move");
            self.imap_move(session, conn, &uid_set(&done), false)
                .await?;
        }
        if last > state.last_uid {
            state.last_uid = last;
            self.workflow
                .store()
                .save_imap_state(&conn.key, *state)
                .await?;
        }
        Ok(n)
    }

    /// Moves `set` to the processed folder (MOVE; else COPY + `\Seen \Deleted` + UID EXPUNGE
    /// where UIDPLUS allows it, otherwise left flagged).
    async fn imap_move(
        &self,
        session: &mut ImapSession,
        conn: &ImapConn,
        set: &str,
        seen: bool,
    ) -> anyhow::Result<()> {
        let folder = &self.processed_folder;
        if seen {
            timed(
                async {
                    let _: Vec<_> = session
                        .uid_store(set, "+FLAGS.SILENT (\\Seen)")
                        .await?
                        .try_collect()
                        .await?;
                    anyhow::Ok(())
                },
                "UID STORE \\Seen",
            )
            .await?;
        }
        if conn.has_move {
            timed(
                async { anyhow::Ok(session.uid_mv(set, folder).await?) },
                "UID MOVE",
            )
            .await
            .with_context(|| format!("moving to {folder:?}"))?;
        } else {
            timed(
                async {
                    session.uid_copy(set, folder).await?;
                    let _: Vec<_> = session
                        .uid_store(set, "+FLAGS.SILENT (\\Seen \\Deleted)")
                        .await?
                        .try_collect()
                        .await?;
                    if conn.uidplus {
                        let _: Vec<_> = session.uid_expunge(set).await?.try_collect().await?;
                    }
                    anyhow::Ok(())
                },
                "UID COPY/STORE/EXPUNGE",
            )
            .await
            .with_context(|| format!("copying to {folder:?}"))?;
        }
        drain_unsolicited(session);
        Ok(())
    }
}

/// Maildir files read and waiting to be ingested together.
#[derive(Debug, Default)]
struct MaildirBatch {
    files: Vec<MaildirFile>,
    bytes: u64,
}

#[derive(Debug)]
struct MaildirFile {
    name: String,
    path: PathBuf,
    /// Where it goes once ingested.
    target: PathBuf,
    raw: Vec<u8>,
}

/// Moves an ingested file into the processed folder; one already gone is fine.
async fn move_file(path: &Path, target: &Path) -> anyhow::Result<()> {
    match tokio::fs::rename(path, target).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("moving {} to {}", path.display(), target.display()))
        }
    }
}

/// What a logged-in IMAP connection is for and what its server can do.
struct ImapConn {
    /// The `imap_state` key: `user@host:port/FOLDER`.
    key: String,
    folder: String,
    has_move: bool,
    uidplus: bool,
    idle: bool,
}

/// The STARTTLS exchange on the plain connection, before TLS: greeting, `STARTTLS`, its OK.
/// Reads line by line and stops at the tagged answer: the server sends nothing more until the
/// TLS handshake, so no byte meant for TLS is consumed.
async fn starttls(tcp: &mut TcpStream) -> anyhow::Result<()> {
    let mut reader = BufReader::new(&mut *tcp);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .context("reading the IMAP greeting")?;
    if !line.starts_with("* OK") && !line.starts_with("* PREAUTH") {
        bail!("unexpected IMAP greeting: {:?}", line.trim_end());
    }
    reader
        .get_mut()
        .write_all(b"rf0 STARTTLS\r\n")
        .await
        .context("sending STARTTLS")?;
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .await
            .context("reading the STARTTLS answer")?
            == 0
        {
            bail!("the IMAP server closed the connection after STARTTLS");
        }
        if let Some(answer) = line.strip_prefix("rf0 ") {
            if answer.starts_with("OK") {
                break;
            }
            bail!("STARTTLS refused: {}", answer.trim_end());
        }
    }
    if !reader.buffer().is_empty() {
        bail!("the IMAP server sent data after its STARTTLS answer");
    }
    Ok(())
}

/// A UID set for a command: `1,2,5` (sorted, ranges collapsed: `1:3,5`).
fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// The first (topmost, i.e. final) `Delivered-To:` header's address, unfolded and without angle
/// brackets.
fn delivered_to(raw: &[u8]) -> Option<String> {
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

/// The first [`MAX_HEADER_BYTES`] of a file: enough for any header block, never the whole of
/// a huge mail.
async fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    let mut head = Vec::new();
    file.take(MAX_HEADER_BYTES as u64)
        .read_to_end(&mut head)
        .await?;
    Ok(head)
}

/// A file name in the processed folder's cur/: Maildir's info suffix with the Seen flag.
fn processed_name(name: &str) -> String {
    match name.split_once(":2,") {
        Some((base, flags)) if flags.contains('S') => format!("{base}:2,{flags}"),
        Some((base, flags)) => {
            let mut flags: Vec<char> = flags.chars().chain(['S']).collect();
            flags.sort_unstable();
            format!("{base}:2,{}", flags.into_iter().collect::<String>())
        }
        None => format!("{name}:2,S"),
    }
}

/// A crash on purpose, for the tests that prove a crash between ingestion and MOVE loses and
/// doubles nothing: aborts when `REPLYFLOW_FAILPOINT` (read once) names `name`.
fn failpoint(name: &str) {
    static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var("REPLYFLOW_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        tracing::error!(
            failpoint = name,
            "REPLYFLOW_FAILPOINT: aborting the process"
        );
        std::process::abort();
    }
}

/// Exponential backoff with full jitter: uniform in [cap/2, cap], cap doubling from 500 ms to
/// 60 s.
fn backoff(failures: u32) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let cap_ms = cap.as_millis() as u64;
    Duration::from_millis(rand::random_range(cap_ms / 2..=cap_ms))
}

/// `fut` with [`COMMAND_TIMEOUT`].
async fn timed<T, E>(fut: impl Future<Output = Result<T, E>>, what: &str) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
{
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(r) => r.map_err(Into::into).with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer within {COMMAND_TIMEOUT:?}"),
    }
}

/// Unilateral responses (EXISTS, EXPUNGE, ...) are not needed (every pass asks by UID); the
/// channel is bounded, so empty it.
fn drain_unsolicited(session: &ImapSession) {
    while session.unsolicited_responses.try_recv().is_ok() {}
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
    fn uid_sets_collapse_ranges() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 7, 8, 3]), "1:3,5,7:8");
        assert_eq!(uid_set(&[42]), "42");
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

    #[test]
    fn processed_files_are_flagged_seen() {
        assert_eq!(processed_name("1.2.host"), "1.2.host:2,S");
        assert_eq!(processed_name("1.2.host:2,RF"), "1.2.host:2,FRS");
        assert_eq!(processed_name("1.2.host:2,S"), "1.2.host:2,S");
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for failures in 1..30 {
            let cap = BACKOFF_BASE
                .saturating_mul(1 << (failures - 1).min(16))
                .min(BACKOFF_MAX);
            let d = backoff(failures);
            assert!(d >= cap / 2 && d <= cap, "{failures}: {d:?} vs {cap:?}");
        }
        assert!(backoff(100) <= BACKOFF_MAX);
    }
}
