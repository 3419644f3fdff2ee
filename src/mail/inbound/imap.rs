//! `imaps://` (TLS from the first byte) and `imap://` (STARTTLS), LOGIN: the mailbox's
//! UIDVALIDITY and the last processed UID are kept in the database (`imap_state`). A pass fetches
//! the sizes of the UIDs above the last one, then the bodies (`BODY.PEEK[]`, so nothing is marked
//! read before it is processed) in batches; each batch, once ingested, is `UID MOVE`d to the
//! processed folder (created when missing; without MOVE: COPY, `\Seen \Deleted` and UID EXPUNGE
//! where UIDPLUS allows) and the last UID recorded. Between passes the connection IDLEs; IDLE is
//! ended and a pass is run on any server notification and at least every
//! [`SWEEP_EVERY`](super::SWEEP_EVERY) (the sweep that catches what a silent connection missed;
//! IDLE is thereby re-issued far more often than the 30 min after which servers drop it).
//!
//! A mail whose ingestion failed stays in the mailbox, and the last UID recorded stays below the
//! first such UID of the pass, so the next pass reads it again (everything after it is moved
//! meanwhile).
use std::{
    path::PathBuf,
    sync::{Arc, Once},
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures_util::TryStreamExt;
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tokio_util::sync::CancellationToken;

use super::{
    Content, FETCH_BATCH, FETCH_BATCH_BYTES, Fetched, ImapTls, InboundSource, MAX_INBOUND_BYTES,
    MailSource, SWEEP_EVERY,
};
use crate::store::{Store, imap_state::ImapState};

/// No single IMAP command or connection step may take longer (a hung server must not stall the
/// reader forever: the error path reconnects).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

type ImapSession = async_imap::Session<TlsStream<TcpStream>>;

/// An IMAP mailbox as a [`MailSource`].
#[derive(Debug)]
pub struct ImapSource {
    /// Always [`InboundSource::Imap`].
    url: InboundSource,
    processed_folder: String,
    ca_file: Option<PathBuf>,
    store: Store,
    /// The logged-in connection, between `open` and `close`.
    session: Option<Session>,
    pass: Pass,
}

/// A logged-in connection and what its server can do.
struct Session {
    imap: ImapSession,
    /// The `imap_state` key: `user@host:port/FOLDER`.
    key: String,
    folder: String,
    has_move: bool,
    uidplus: bool,
    idle: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("key", &self.key)
            .field("has_move", &self.has_move)
            .field("uidplus", &self.uidplus)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// Where a pass is.
#[derive(Debug)]
struct Pass {
    state: ImapState,
    /// UID and size of every new message, ascending; `next` is the first not yet fetched.
    sizes: Vec<(u32, u32)>,
    next: usize,
    /// The first UID whose ingestion failed in this pass: the last UID recorded stays below it.
    held: Option<u32>,
    pending: Pending,
}

impl Pass {
    fn new(state: ImapState) -> Self {
        Self {
            state,
            sizes: Vec::new(),
            next: 0,
            held: None,
            pending: Pending::None,
        }
    }
}

/// The batch handed out last, waiting for [`MailSource::settle`].
#[derive(Debug, Default)]
enum Pending {
    #[default]
    None,
    /// Bodies: the batch's UIDs, and those fetched (the order of the mails handed out).
    Bodies { uids: Vec<u32>, fetched: Vec<u32> },
    /// An oversized message (its header handed out, or nothing when it vanished).
    TooLarge { uid: u32 },
}

impl ImapSource {
    /// `url` must be an [`InboundSource::Imap`]; `open` says so otherwise.
    pub fn new(
        url: InboundSource,
        processed_folder: &str,
        ca_file: Option<PathBuf>,
        store: Store,
    ) -> Self {
        Self {
            url,
            processed_folder: processed_folder.to_string(),
            ca_file,
            store,
            session: None,
            pass: Pass::new(ImapState {
                uid_validity: 0,
                last_uid: 0,
            }),
        }
    }

    fn session(&mut self) -> anyhow::Result<&mut Session> {
        self.session.as_mut().context("the IMAP source is not open")
    }

    async fn connect(&self) -> anyhow::Result<Session> {
        let InboundSource::Imap {
            tls,
            host,
            port,
            user,
            password,
            folder,
        } = &self.url
        else {
            bail!("not an IMAP source");
        };
        static PROVIDER: Once = Once::new();
        PROVIDER.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        // The mail trust: system roots plus mail.ca_file, whose certificates are also pinned
        // (a server's self-signed certificate is trusted as itself).
        let config = crate::delivery::trust::client_config(self.ca_file.as_deref())?;
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
            let mut imap = client
                .login(user, password)
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("IMAP LOGIN as {user} at {host}:{port}"))?;
            let caps = imap.capabilities().await.context("CAPABILITY")?;
            let (has_move, uidplus, idle) = (
                caps.has_str("MOVE"),
                caps.has_str("UIDPLUS"),
                caps.has_str("IDLE"),
            );
            // Create the processed folder; "already exists" (or any NO) is fine here: a folder
            // that really is missing makes the first MOVE fail, which is reported.
            if let Err(e) = imap.create(&self.processed_folder).await {
                tracing::debug!(folder = %self.processed_folder, error = %e, "CREATE (the folder probably exists)");
            }
            anyhow::Ok(Session {
                imap,
                key: format!("{user}@{host}:{port}/{folder}"),
                folder: folder.clone(),
                has_move,
                uidplus,
                idle,
            })
        };
        timed(connect, "connecting to the IMAP server").await
    }

    /// The header of an oversized message (`BODY.PEEK[HEADER]`, nothing marked read); None when
    /// the message vanished meanwhile.
    async fn fetch_header(&mut self, uid: u32) -> anyhow::Result<Option<Vec<u8>>> {
        let session = self.session()?;
        let fetches: Vec<_> = timed(
            async {
                let fetches: Vec<_> = session
                    .imap
                    .uid_fetch(uid.to_string(), "(UID BODY.PEEK[HEADER])")
                    .await?
                    .try_collect()
                    .await?;
                anyhow::Ok(fetches)
            },
            "UID FETCH BODY.PEEK[HEADER]",
        )
        .await?;
        drain_unsolicited(&session.imap);
        Ok(fetches
            .iter()
            .find(|f| f.uid == Some(uid))
            .and_then(|f| f.header())
            .map(<[u8]>::to_vec))
    }

    /// The bodies of `uids` (`BODY.PEEK[]`), ascending by UID; UIDs that vanished are missing.
    async fn fetch_bodies(&mut self, uids: &[u32]) -> anyhow::Result<Vec<(u32, Vec<u8>)>> {
        let session = self.session()?;
        let set = uid_set(uids);
        let fetches: Vec<_> = timed(
            async {
                let fetches: Vec<_> = session
                    .imap
                    .uid_fetch(&set, "(UID BODY.PEEK[])")
                    .await?
                    .try_collect()
                    .await?;
                anyhow::Ok(fetches)
            },
            "UID FETCH BODY.PEEK[]",
        )
        .await?;
        drain_unsolicited(&session.imap);
        let mut bodies: Vec<(u32, Vec<u8>)> = fetches
            .iter()
            .filter_map(|f| Some((f.uid?, f.body()?.to_vec())))
            .collect();
        bodies.sort_by_key(|(uid, _)| *uid);
        Ok(bodies)
    }

    /// Moves `set` to the processed folder (MOVE; else COPY + `\Seen \Deleted` + UID EXPUNGE
    /// where UIDPLUS allows it, otherwise left flagged).
    async fn move_processed(&mut self, set: &str, seen: bool) -> anyhow::Result<()> {
        let folder = self.processed_folder.clone();
        let session = self.session()?;
        let imap = &mut session.imap;
        if seen {
            timed(
                async {
                    let _: Vec<_> = imap
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
        if session.has_move {
            timed(
                async { anyhow::Ok(imap.uid_mv(set, &folder).await?) },
                "UID MOVE",
            )
            .await
            .with_context(|| format!("moving to {folder:?}"))?;
        } else {
            let uidplus = session.uidplus;
            timed(
                async {
                    imap.uid_copy(set, &folder).await?;
                    let _: Vec<_> = imap
                        .uid_store(set, "+FLAGS.SILENT (\\Seen \\Deleted)")
                        .await?
                        .try_collect()
                        .await?;
                    if uidplus {
                        let _: Vec<_> = imap.uid_expunge(set).await?.try_collect().await?;
                    }
                    anyhow::Ok(())
                },
                "UID COPY/STORE/EXPUNGE",
            )
            .await
            .with_context(|| format!("copying to {folder:?}"))?;
        }
        drain_unsolicited(imap);
        Ok(())
    }

    /// Records `last` as the last UID processed, when it is further than the state says.
    async fn advance(&mut self, last: i64) -> anyhow::Result<()> {
        if last > self.pass.state.last_uid {
            self.pass.state.last_uid = last;
            let key = self.session()?.key.clone();
            self.store.save_imap_state(&key, self.pass.state).await?;
        }
        Ok(())
    }

    fn origin(&self, uid: u32) -> String {
        let key = self.session.as_ref().map_or("", |s| s.key.as_str());
        format!("{key} uid {uid}")
    }
}

#[tonic::async_trait]
impl MailSource for ImapSource {
    fn transport(&self) -> &'static str {
        "imap"
    }

    async fn open(&mut self) -> anyhow::Result<()> {
        self.close().await;
        let session = self.connect().await?;
        tracing::info!(mailbox = %session.key, "IMAP connected");
        self.session = Some(session);
        Ok(())
    }

    async fn begin_pass(&mut self) -> anyhow::Result<()> {
        let store = self.store.clone();
        let session = self.session()?;
        let mailbox = timed(session.imap.select(&session.folder), "SELECT").await?;
        drain_unsolicited(&session.imap);
        let key = session.key.clone();
        let uid_validity = i64::from(mailbox.uid_validity.unwrap_or(0));
        let state = match store.imap_state(&key).await? {
            Some(s) if s.uid_validity == uid_validity => s,
            previous => {
                if previous.is_some() {
                    tracing::warn!(mailbox = %key, uid_validity, "UIDVALIDITY changed: reading the mailbox again from the start (duplicates are recognised)");
                }
                ImapState {
                    uid_validity,
                    last_uid: 0,
                }
            }
        };
        if mailbox.exists == 0 {
            self.pass = Pass::new(state);
            return Ok(());
        }
        // Sizes first: `N:*` always answers the highest UID too, so filter.
        let imap = &mut session.imap;
        let mut sizes: Vec<(u32, u32)> = timed(
            async {
                let fetches: Vec<_> = imap
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
        sizes.sort_unstable();
        sizes.dedup();
        drain_unsolicited(imap);
        self.pass = Pass::new(state);
        self.pass.sizes = sizes;
        Ok(())
    }

    async fn next_batch(&mut self) -> anyhow::Result<Option<Vec<Fetched>>> {
        self.pass.pending = Pending::None;
        let Some(&(uid, size)) = self.pass.sizes.get(self.pass.next) else {
            return Ok(None);
        };
        if u64::from(size) > MAX_INBOUND_BYTES as u64 {
            self.pass.next += 1;
            let header = match self.fetch_header(uid).await {
                Ok(header) => header,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), origin = %self.origin(uid), "fetching the header of an oversized mail failed: it stays for the next pass");
                    self.pass.held.get_or_insert(uid);
                    return Ok(Some(Vec::new()));
                }
            };
            self.pass.pending = Pending::TooLarge { uid };
            let origin = self.origin(uid);
            return Ok(Some(
                header
                    .map(|header| Fetched {
                        origin,
                        content: Content::TooLarge {
                            header,
                            size: u64::from(size),
                        },
                    })
                    .into_iter()
                    .collect(),
            ));
        }
        let mut uids = Vec::new();
        let mut bytes = 0u64;
        while let Some(&(uid, size)) = self.pass.sizes.get(self.pass.next) {
            if u64::from(size) > MAX_INBOUND_BYTES as u64
                || (!uids.is_empty()
                    && (uids.len() >= FETCH_BATCH || bytes + u64::from(size) > FETCH_BATCH_BYTES))
            {
                break;
            }
            uids.push(uid);
            bytes += u64::from(size);
            self.pass.next += 1;
        }
        let bodies = self.fetch_bodies(&uids).await?;
        let fetched = bodies.iter().map(|(uid, _)| *uid).collect();
        let mails = bodies
            .into_iter()
            .map(|(uid, raw)| Fetched {
                origin: self.origin(uid),
                content: Content::Mail(raw),
            })
            .collect();
        self.pass.pending = Pending::Bodies { uids, fetched };
        Ok(Some(mails))
    }

    async fn settle(&mut self, handled: &[bool]) -> anyhow::Result<()> {
        match std::mem::take(&mut self.pass.pending) {
            Pending::None => Ok(()),
            Pending::TooLarge { uid } => {
                if handled.first() == Some(&false) {
                    self.pass.held.get_or_insert(uid);
                    return Ok(());
                }
                self.move_processed(&uid.to_string(), true).await?;
                if self.pass.held.is_none() {
                    self.advance(i64::from(uid)).await?;
                }
                Ok(())
            }
            Pending::Bodies { uids, fetched } => {
                let failed: Vec<u32> = fetched
                    .iter()
                    .zip(handled)
                    .filter(|(_, ok)| !**ok)
                    .map(|(uid, _)| *uid)
                    .collect();
                // Handled: every UID but the failed ones (UIDs that vanished between the two
                // FETCHes, expunged by another client, count as handled).
                let done: Vec<u32> = uids
                    .iter()
                    .copied()
                    .filter(|uid| !failed.contains(uid))
                    .collect();
                if let Some(&first) = failed.iter().min() {
                    self.pass.held = Some(self.pass.held.map_or(first, |h| h.min(first)));
                }
                let max = uids.iter().max().map_or(0, |&uid| i64::from(uid));
                let last = self.pass.held.map_or(max, |h| max.min(i64::from(h) - 1));
                if !done.is_empty() {
                    failpoint("inbound-before-move");
                    self.move_processed(&uid_set(&done), false).await?;
                }
                self.advance(last).await
            }
        }
    }

    async fn end_pass(&mut self) -> anyhow::Result<()> {
        let key = self.session()?.key.clone();
        if self.store.imap_state(&key).await?.is_none() {
            self.store.save_imap_state(&key, self.pass.state).await?;
        }
        Ok(())
    }

    async fn wait(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let Some(session) = self.session.take() else {
            bail!("the IMAP source is not open");
        };
        if !session.idle {
            self.session = Some(session);
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            return Ok(());
        }
        let Session {
            imap,
            key,
            folder,
            has_move,
            uidplus,
            idle,
        } = session;
        // IDLE takes the session and gives it back on DONE; on an error the connection is gone.
        let mut handle = imap.idle();
        timed(handle.init(), "IDLE").await?;
        {
            let (wait, stop) = handle.wait_with_timeout(SWEEP_EVERY);
            tokio::pin!(wait);
            tokio::select! {
                r = &mut wait => {
                    r.context("IDLE")?;
                }
                () = shutdown.cancelled() => {
                    drop(stop);
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut wait).await;
                }
            }
        }
        let imap = timed(handle.done(), "IDLE DONE").await?;
        drain_unsolicited(&imap);
        self.session = Some(Session {
            imap,
            key,
            folder,
            has_move,
            uidplus,
            idle,
        });
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(mut session) = self.session.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), session.imap.logout()).await;
        }
    }
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
    fn uid_sets_collapse_ranges() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 7, 8, 3]), "1:3,5,7:8");
        assert_eq!(uid_set(&[42]), "42");
    }
}
