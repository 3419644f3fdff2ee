//! Delivering one rendered mail: the [`MailTransport`] trait and its two real implementations,
//! chosen by the `mail.outbound` URL (DESIGN §9).
//!
//! - `smtp://` and `smtps://`: lettre's SMTP client over rustls (STARTTLS or implicit TLS, an
//!   optional extra CA file, optional AUTH) in a pool of connections that are kept open and
//!   reused, which is what makes the outbox fast (a TLS handshake per mail would cost more than
//!   the mail). Timeouts (connect 30 s, one mail 60 s) stay far below the outbox lease, so a slow
//!   server cannot make two workers send the same mail.
//! - `file:DIR`: one `.eml` file per mail, named after its Message-ID, so that writing the same
//!   mail twice (a retry after a crash) leaves one file. The zero-configuration default.
//!
//! Every failure is sorted into [`SendError::Transient`] (retry later: 4xx replies, refused or
//! reset connections, timeouts, TLS trouble, an SMTP server we cannot log in to) or
//! [`SendError::Permanent`] (retrying cannot help: 5xx replies to this mail, a malformed address),
//! because that decides between a retry with backoff and a failure shown to the user. Permanent
//! errors carry the server's whole answer, since that answer is what an administrator needs.
//!
//! Credentials from the URL are percent-decoded, handed to lettre, and never printed: the
//! transports' `Debug` shows the user name at most. TLS trusts one store for all mail traffic
//! ([`super::trust`]): the system's CA bundle plus `mail.ca_file`, whose certificates are also
//! trusted as themselves (a mail server's self-signed certificate).
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use lettre::{
    Address,
    address::Envelope,
    transport::smtp::{
        self,
        authentication::{Credentials, DEFAULT_MECHANISMS},
        client::AsyncSmtpConnection,
        commands::Starttls,
        extension::ClientId,
        response::{Response, Severity},
    },
};
use sha2::{Digest, Sha256};
use tokio::{net::TcpStream, sync::Semaphore};

use super::smtp_tls::{SharedTcp, TlsClient, TlsTcp};

pub use super::trust::tls_roots;

/// Why a mail was not delivered, sorted by what the outbox should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again later (4xx, network, TLS, timeouts, server-side configuration trouble).
    Transient(String),
    /// Retrying cannot help (5xx for this mail, malformed address); the text is the server's answer.
    Permanent(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transient(e) => write!(f, "transient failure: {e}"),
            Self::Permanent(e) => write!(f, "permanent failure: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Delivers rendered RFC 822 messages. Implementations: SMTP (pooled), `.eml` files; tests may
/// add fakes.
#[tonic::async_trait]
pub trait MailTransport: Send + Sync + fmt::Debug {
    /// Delivers one message; Ok(server's answer, e.g. "250 2.0.0 Ok: queued as 4XyZ").
    ///
    /// `envelope_from` and `to` are addresses (`a@b`, or `Name <a@b>` whose address is used);
    /// `message_id` names the mail in logs and file names (with or without angle brackets).
    async fn send(
        &self,
        envelope_from: &str,
        to: &str,
        message_id: &str,
        raw: &[u8],
    ) -> Result<String, SendError>;
}

/// Builds the transport named by `mail.outbound`:
/// `smtp://[user:pass@]host[:port][?tls=required|opportunistic|none]` (STARTTLS; default
/// opportunistic; port 587 when omitted), `smtps://[user:pass@]host[:port]` (implicit TLS; port
/// 465 when omitted), `file:DIR` (created when missing). `ca_file`: extra PEM CA certificate(s)
/// trusted for SMTP. `pool_size`: SMTP connections kept open.
pub fn from_url(
    url: &str,
    ca_file: Option<&Path>,
    pool_size: u32,
) -> anyhow::Result<Arc<dyn MailTransport>> {
    match parse_outbound(url)? {
        Outbound::File { dir } => Ok(Arc::new(FileTransport::new(dir)?)),
        Outbound::Smtp(target) => Ok(Arc::new(SmtpTransport::new(target, ca_file, pool_size)?)),
    }
}

// ------------------------------------------------------------------------------------ the URL

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    /// Plain SMTP, never TLS (a trusted local relay).
    None,
    /// STARTTLS when offered, plain otherwise.
    Opportunistic,
    /// STARTTLS or fail.
    Required,
    /// TLS from the first byte (smtps).
    Implicit,
}

/// A password that stays out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SmtpTarget {
    host: String,
    port: u16,
    tls: TlsMode,
    credentials: Option<(String, Password)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outbound {
    Smtp(SmtpTarget),
    File { dir: PathBuf },
}

/// Parses `mail.outbound`. Errors never quote the URL (it may hold a password).
fn parse_outbound(url: &str) -> anyhow::Result<Outbound> {
    let url = url.trim();
    if let Some(rest) = url.strip_prefix("file:") {
        // `file:DIR`, and `file:///abs/dir` for those who write URLs.
        let dir = rest.strip_prefix("//").unwrap_or(rest);
        if dir.is_empty() {
            bail!("mail.outbound: file: needs a directory, e.g. file:mail/outbox");
        }
        return Ok(Outbound::File {
            dir: PathBuf::from(dir),
        });
    }
    let (implicit, rest) = if let Some(rest) = url.strip_prefix("smtps://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("smtp://") {
        (false, rest)
    } else {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        bail!(
            "mail.outbound: unknown scheme {scheme:?}: expected smtp://host:port, \
             smtps://host:port or file:DIR"
        );
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = match before_query.split_once('/') {
        Some((a, "")) => a,
        Some(_) => bail!("mail.outbound: an SMTP URL takes no path (only host:port and ?tls=...)"),
        None => before_query,
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let credentials = match userinfo {
        None => None,
        Some(u) => {
            let (user, pass) = u.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("mail.outbound: credentials must be user:password@")
            })?;
            let user = percent_decode(user).context("mail.outbound: the user name")?;
            let pass = percent_decode(pass).context("mail.outbound: the password")?;
            if user.is_empty() {
                bail!("mail.outbound: empty user name before ':' in the credentials");
            }
            Some((user, Password(pass)))
        }
    };
    let (host, port) = split_host_port(hostport)?;
    let port = match port {
        Some(p) => p,
        None if implicit => 465,
        None => 587,
    };
    let mut tls = if implicit {
        TlsMode::Implicit
    } else {
        TlsMode::Opportunistic
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("tls", value)) if !implicit => {
                tls = match value {
                    "required" => TlsMode::Required,
                    "opportunistic" => TlsMode::Opportunistic,
                    "none" => TlsMode::None,
                    other => bail!(
                        "mail.outbound: tls={other:?}: expected required, opportunistic or none"
                    ),
                }
            }
            Some(("tls", _)) => {
                bail!("mail.outbound: smtps:// is always TLS; ?tls= belongs to smtp:// URLs")
            }
            _ => bail!("mail.outbound: unknown parameter {pair:?} (only tls=... is known)"),
        }
    }
    Ok(Outbound::Smtp(SmtpTarget {
        host,
        port,
        tls,
        credentials,
    }))
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    Ok(percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .context("percent-decoded text is not UTF-8")?
        .into_owned())
}

/// `host:port`, `host`, `[v6]:port`, `[v6]`.
fn split_host_port(s: &str) -> anyhow::Result<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("mail.outbound: unclosed '[' in the host"))?;
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => bail!("mail.outbound: expected ':port' after ']'"),
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        bail!("mail.outbound: no host in the SMTP URL");
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        bail!("mail.outbound: {host:?} is not a host name");
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => Some(p),
            _ => bail!("mail.outbound: port {p:?} is not a number from 1 to 65535"),
        },
    };
    Ok((host.to_string(), port))
}

// ------------------------------------------------------------------------------------- SMTP

/// lettre's connection (the SMTP dialogue, STARTTLS, AUTH, reply parsing) over sockets we open
/// ourselves, in a small pool of our own. Why not lettre's `AsyncSmtpTransport`: its sockets keep
/// Nagle's algorithm on, and it writes a mail's final "." in a write of its own, which then waits
/// for the server's delayed ACK — 40 ms per mail, whatever the bandwidth (≈ 225 mails/s over 10
/// connections on loopback). With `TCP_NODELAY` the same code runs at network speed.
struct SmtpTransport {
    target: SmtpTarget,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    pool_size: u32,
    /// At most `pool_size` connections open at once; a send beyond that waits its turn.
    slots: Semaphore,
    idle: Mutex<Vec<IdleConnection>>,
}

enum Security {
    Plain,
    /// STARTTLS (when offered, or `required`), then TLS with `tls`.
    StartTls {
        tls: TlsClient,
        required: bool,
    },
    /// TLS from the first byte (smtps).
    Implicit(TlsClient),
}

struct IdleConnection {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// Connect, TLS, greeting, EHLO, STARTTLS and AUTH together may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One mail (MAIL, RCPT, DATA, the content, the answer) may take this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// An idle connection older than this is closed rather than reused: servers drop idle clients
/// (RFC 5321 suggests 5 min, many do it sooner), and a NOOP would only find out the slow way.
const MAX_IDLE: Duration = Duration::from_secs(50);

impl fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Our own Debug: nothing secret, nothing of lettre's internals.
        f.debug_struct("SmtpTransport")
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .field("tls", &self.target.tls)
            .field("user", &self.target.credentials.as_ref().map(|(u, _)| u))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl SmtpTransport {
    fn new(target: SmtpTarget, ca_file: Option<&Path>, pool_size: u32) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls_client = || TlsClient::new(&target.host, ca_file);
        let security = match target.tls {
            TlsMode::None => Security::Plain,
            TlsMode::Opportunistic | TlsMode::Required => Security::StartTls {
                tls: tls_client()?,
                required: target.tls == TlsMode::Required,
            },
            TlsMode::Implicit => Security::Implicit(tls_client()?),
        };
        let credentials = target
            .credentials
            .as_ref()
            .map(|(user, pass)| Credentials::new(user.clone(), pass.0.clone()));
        let pool_size = pool_size.max(1);
        Ok(Self {
            security,
            credentials,
            hello: ClientId::default(),
            pool_size,
            slots: Semaphore::new(pool_size as usize),
            idle: Mutex::new(Vec::new()),
            target,
        })
    }

    /// A new connection, greeted, encrypted as configured and logged in.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let (host, port) = (self.target.host.as_str(), self.target.port);
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| SendError::Transient(format!("connecting to {host}:{port}: {e}")))?;
        // The point of this pool: see the type's documentation.
        tcp.set_nodelay(true)
            .map_err(|e| SendError::Transient(format!("TCP_NODELAY: {e}")))?;
        let mut conn = match &self.security {
            Security::Plain => {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                    .await
                    .map_err(|e| classify(&e))?
            }
            Security::Implicit(tls) => {
                let stream = tls.handshake(tcp, host, port).await?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(TlsTcp::new(stream)),
                    &self.hello,
                )
                .await
                .map_err(|e| classify(&e))?
            }
            Security::StartTls { tls, required } => self.starttls(tcp, tls, *required).await?,
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(conn)
    }

    /// The greeting and EHLO in plain text; then, when the server offers STARTTLS (or `required`
    /// says it must), the STARTTLS command, our handshake and a new EHLO over TLS. lettre speaks
    /// SMTP on both sides of the handshake; the socket goes from the plain session to the TLS one
    /// through [`SharedTcp`].
    async fn starttls(
        &self,
        tcp: TcpStream,
        tls: &TlsClient,
        required: bool,
    ) -> Result<AsyncSmtpConnection, SendError> {
        let (host, port) = (self.target.host.as_str(), self.target.port);
        let shared = SharedTcp::new(tcp);
        let mut plain =
            AsyncSmtpConnection::connect_with_transport(Box::new(shared.clone()), &self.hello)
                .await
                .map_err(|e| classify(&e))?;
        if !plain.can_starttls() {
            if required {
                plain.abort().await;
                // Transient: a server's TLS setup is configuration, and may be fixed.
                return Err(SendError::Transient(format!(
                    "{host}:{port} does not offer STARTTLS (mail.outbound has tls=required)"
                )));
            }
            return Ok(plain);
        }
        plain.command(Starttls).await.map_err(|e| classify(&e))?;
        // Dropping the plain session also drops whatever it had read beyond the 220 answer: text
        // injected before the handshake must never count as said over TLS.
        drop(plain);
        let tcp = shared.into_inner().ok_or_else(|| {
            SendError::Transient("the plain SMTP session still holds the socket".into())
        })?;
        let stream = tls.handshake(tcp, host, port).await?;
        AsyncSmtpConnection::connect_with_transport(
            Box::new(TlsTcp::after_starttls(stream)),
            &self.hello,
        )
        .await
        .map_err(|e| classify(&e))
    }

    /// An idle connection that still answers, else a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let idle = self.idle.lock().expect("smtp pool lock").pop();
            let Some(IdleConnection { mut conn, since }) = idle else {
                return match tokio::time::timeout(CONNECT_TIMEOUT, self.connect()).await {
                    Ok(result) => result,
                    Err(_) => Err(SendError::Transient(format!(
                        "no SMTP session with {}:{} within {CONNECT_TIMEOUT:?}",
                        self.target.host, self.target.port
                    ))),
                };
            };
            if since.elapsed() < MAX_IDLE && conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    async fn checkin(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let surplus = {
            let mut idle = self.idle.lock().expect("smtp pool lock");
            if idle.len() < self.pool_size as usize {
                idle.push(IdleConnection {
                    conn,
                    since: Instant::now(),
                });
                None
            } else {
                Some(conn)
            }
        };
        if let Some(mut conn) = surplus {
            conn.abort().await;
        }
    }
}

#[tonic::async_trait]
impl MailTransport for SmtpTransport {
    async fn send(
        &self,
        envelope_from: &str,
        to: &str,
        _message_id: &str,
        raw: &[u8],
    ) -> Result<String, SendError> {
        let envelope = envelope(envelope_from, to)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let mut conn = self.checkout().await?;
        match tokio::time::timeout(SEND_TIMEOUT, conn.send(&envelope, raw)).await {
            Ok(Ok(response)) => {
                self.checkin(conn).await;
                Ok(answer(&response))
            }
            // lettre closes the connection after a negative reply; a broken one is dropped.
            Ok(Err(e)) => {
                self.checkin(conn).await;
                Err(classify(&e))
            }
            Err(_) => Err(SendError::Transient(format!(
                "no answer from {}:{} within {SEND_TIMEOUT:?} while sending",
                self.target.host, self.target.port
            ))),
        }
    }
}

/// The server's answer as it would appear in a log: "250 2.0.0 Ok: queued as 4XyZ".
fn answer(response: &Response) -> String {
    let text = response.message().collect::<Vec<_>>().join(" ");
    format!("{} {text}", response.code())
}

/// Reply codes that are about our session (authentication, TLS policy), not about the mail: a
/// wrong password or a missing STARTTLS must not throw the whole outbox away, so they are retried
/// like an outage, until the attempts run out. RFC 4954 §6 and RFC 3207.
const SESSION_CODES: &[&str] = &["530", "534", "535", "538"];

fn classify(e: &smtp::Error) -> SendError {
    let detail = std::error::Error::source(e).map(ToString::to_string);
    if let Some(code) = e.status() {
        let code_text = code.to_string();
        let text = match &detail {
            Some(d) => format!("{code_text} {d}"),
            None => code_text.clone(),
        };
        return match code.severity {
            Severity::PermanentNegativeCompletion
                if !SESSION_CODES.contains(&code_text.as_str()) =>
            {
                SendError::Permanent(text)
            }
            _ => SendError::Transient(text),
        };
    }
    // Connection refused or reset, timeouts, TLS handshakes, garbled replies, a transport shut
    // down: none of them says anything about the mail itself.
    SendError::Transient(error_chain(e))
}

/// `e` and its sources, joined, without the repetitions lettre's nesting produces
/// ("Connection error: Connection error: invalid peer certificate: UnknownIssuer").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        for part in err.to_string().split(": ") {
            if !parts.iter().any(|p| p == part) {
                parts.push(part.to_string());
            }
        }
        next = err.source();
    }
    parts.join(": ")
}

/// The bare address of `a@b` or `Name <a@b>`.
fn bare_address(s: &str) -> &str {
    let s = s.trim();
    match (s.rfind('<'), s.ends_with('>')) {
        (Some(start), true) => s[start + 1..s.len() - 1].trim(),
        _ => s,
    }
}

fn parse_address(role: &str, s: &str) -> Result<Address, SendError> {
    bare_address(s)
        .parse::<Address>()
        .map_err(|e| SendError::Permanent(format!("malformed {role} address {s:?}: {e}")))
}

fn envelope(from: &str, to: &str) -> Result<Envelope, SendError> {
    let from = parse_address("sender", from)?;
    let to = parse_address("recipient", to)?;
    Envelope::new(Some(from), vec![to]).map_err(|e| SendError::Permanent(e.to_string()))
}

// ------------------------------------------------------------------------------------- files

/// Writes each mail to `DIR/<message id>.eml` (write to a temp file, then rename: a reader never
/// sees half a mail, and a second write of the same mail replaces the first).
#[derive(Debug)]
struct FileTransport {
    dir: PathBuf,
}

impl FileTransport {
    fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("mail.outbound: cannot create {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// A file name from the Message-ID (angle brackets dropped, anything unusual in a file name
    /// replaced), or from the message's hash when it has none.
    fn file_name(message_id: &str, raw: &[u8]) -> String {
        let id = message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        let stem: String = if id.is_empty() {
            let digest = Sha256::digest(raw);
            digest[..16].iter().map(|b| format!("{b:02x}")).collect()
        } else {
            id.chars()
                .take(200)
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "@.-_+=".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        // A leading dot would hide the file, and ".." must never name a directory.
        let stem = stem.trim_start_matches('.');
        format!("{stem}.eml")
    }
}

#[tonic::async_trait]
impl MailTransport for FileTransport {
    async fn send(
        &self,
        envelope_from: &str,
        to: &str,
        message_id: &str,
        raw: &[u8],
    ) -> Result<String, SendError> {
        // Same rules as SMTP, so that switching transports changes no outcome.
        envelope(envelope_from, to)?;
        let name = Self::file_name(message_id, raw);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let io = |what: &str, e: std::io::Error| {
            SendError::Transient(format!("{what} {}: {e}", path.display()))
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io("creating the directory of", e))?;
        tokio::fs::write(&tmp, raw)
            .await
            .map_err(|e| io("writing", e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io("renaming into", e))?;
        Ok(format!("written to {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(url: &str) -> SmtpTarget {
        match parse_outbound(url).unwrap() {
            Outbound::Smtp(t) => t,
            other => panic!("{url}: expected SMTP, got {other:?}"),
        }
    }

    fn err(url: &str) -> String {
        format!("{:#}", parse_outbound(url).unwrap_err())
    }

    #[test]
    fn smtp_urls_default_to_opportunistic_starttls() {
        let t = smtp("smtp://mail.example.com:2525");
        assert_eq!(t.host, "mail.example.com");
        assert_eq!(t.port, 2525);
        assert_eq!(t.tls, TlsMode::Opportunistic);
        assert_eq!(t.credentials, None);
        assert_eq!(smtp("smtp://mail.example.com").port, 587);
        assert_eq!(smtp("smtp://127.0.0.1:25/").host, "127.0.0.1");
    }

    #[test]
    fn the_tls_parameter_picks_the_mode() {
        assert_eq!(smtp("smtp://h:25?tls=required").tls, TlsMode::Required);
        assert_eq!(
            smtp("smtp://h:25?tls=opportunistic").tls,
            TlsMode::Opportunistic
        );
        assert_eq!(smtp("smtp://h:25?tls=none").tls, TlsMode::None);
        assert_eq!(smtp("smtp://h:25/?tls=required").tls, TlsMode::Required);
    }

    #[test]
    fn smtps_is_implicit_tls() {
        let t = smtp("smtps://relay.example.com:4465");
        assert_eq!(t.tls, TlsMode::Implicit);
        assert_eq!(t.port, 4465);
        assert_eq!(smtp("smtps://relay.example.com").port, 465);
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let t = smtp("smtps://approvals%40replyflow.test:p%40ss%3Aw%2Fo%25rd@127.0.0.1:4465");
        let (user, pass) = t.credentials.unwrap();
        assert_eq!(user, "approvals@replyflow.test");
        assert_eq!(pass.0, "p@ss:w/o%rd");
        // An unencoded '@' in the user name still works: the host follows the last '@'.
        let t = smtp("smtp://a@b.test:secret@h:25?tls=required");
        assert_eq!(t.credentials.unwrap().0, "a@b.test");
        assert_eq!(t.host, "h");
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let t = smtp("smtp://[::1]:2525");
        assert_eq!((t.host.as_str(), t.port), ("::1", 2525));
        assert_eq!(smtp("smtps://[::1]").port, 465);
    }

    #[test]
    fn file_urls_name_a_directory() {
        assert_eq!(
            parse_outbound("file:mail/outbox").unwrap(),
            Outbound::File {
                dir: "mail/outbox".into()
            }
        );
        assert_eq!(
            parse_outbound("file:///var/spool/rf").unwrap(),
            Outbound::File {
                dir: "/var/spool/rf".into()
            }
        );
    }

    #[test]
    fn bad_urls_get_clear_errors() {
        assert!(
            err("http://x:25").contains("unknown scheme \"http\""),
            "{}",
            err("http://x:25")
        );
        assert!(err("mail.example.com:25").contains("unknown scheme"));
        assert!(err("file:").contains("needs a directory"));
        assert!(err("smtp://:25").contains("no host"));
        assert!(err("smtp://h:99999").contains("port \"99999\""));
        assert!(err("smtp://h:0").contains("port \"0\""));
        assert!(err("smtp://h:x").contains("port \"x\""));
        assert!(err("smtp://h:25?tls=always").contains("tls=\"always\""));
        assert!(err("smtp://h:25?pool=3").contains("unknown parameter \"pool=3\""));
        assert!(err("smtps://h:465?tls=required").contains("always TLS"));
        assert!(err("smtp://h:25/inbox").contains("no path"));
        assert!(err("smtp://user@h:25").contains("user:password@"));
        assert!(err("smtp://[::1:25").contains("unclosed"));
        assert!(err("smtp://u:%ff@h:25").contains("password"));
    }

    #[test]
    fn errors_and_debug_never_show_the_password() {
        let e = err("smtp://user:hunter2@h:25?tls=always");
        assert!(!e.contains("hunter2"), "{e}");
        let t = from_url("smtp://user:hunter2@127.0.0.1:2525?tls=none", None, 2).unwrap();
        let debug = format!("{t:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("user"), "{debug}");
        assert!(format!("{:?}", smtp("smtp://u:hunter2@h:1")).contains("[redacted]"));
    }

    #[tokio::test]
    async fn a_missing_or_empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = from_url("smtp://h:25?tls=required", Some(&missing), 1).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = tls_roots(Some(&empty)).unwrap_err();
        assert!(format!("{e:#}").contains("no CERTIFICATE"), "{e:#}");
    }

    #[test]
    fn bare_addresses_come_out_of_display_forms() {
        assert_eq!(
            bare_address("replyflow <approvals@localhost>"),
            "approvals@localhost"
        );
        assert_eq!(bare_address(" mary@replyflow.test "), "mary@replyflow.test");
    }

    #[tokio::test]
    async fn malformed_addresses_fail_permanently_without_connecting() {
        // Nothing listens on port 1; the address check comes first.
        let t = from_url("smtp://127.0.0.1:1?tls=none", None, 1).unwrap();
        let e = t
            .send("approvals@replyflow.test", "not an address", "<x@y>", b"")
            .await;
        assert!(
            matches!(&e, Err(SendError::Permanent(m)) if m.contains("recipient")),
            "{e:?}"
        );
        let e = t.send("", "mary@replyflow.test", "<x@y>", b"").await;
        assert!(
            matches!(&e, Err(SendError::Permanent(m)) if m.contains("sender")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = from_url(&format!("smtp://127.0.0.1:{port}?tls=none"), None, 1).unwrap();
        let e = t
            .send(
                "a@replyflow.test",
                "b@replyflow.test",
                "<x@y>",
                b"Subject: x\r\n\r\nx\r\n",
            )
            .await;
        assert!(
            matches!(&e, Err(SendError::Transient(m)) if m.contains("refused")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn the_file_transport_writes_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("outbox/nested");
        let t = from_url(&format!("file:{}", out.display()), None, 1).unwrap();
        assert!(out.is_dir(), "from_url creates the directory");
        let answer = t
            .send(
                "a@replyflow.test",
                "b@replyflow.test",
                "<m1@replyflow.test>",
                b"first",
            )
            .await
            .unwrap();
        let path = out.join("m1@replyflow.test.eml");
        assert!(answer.contains(&path.display().to_string()), "{answer}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        t.send(
            "a@replyflow.test",
            "b@replyflow.test",
            "<m1@replyflow.test>",
            b"second",
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let files: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert_eq!(files.len(), 1, "one file per mail, no temp files left");
        // Odd characters never escape the directory.
        t.send(
            "a@replyflow.test",
            "b@replyflow.test",
            "<../../x/y@z>",
            b"third",
        )
        .await
        .unwrap();
        assert!(out.join("_.._x_y@z.eml").is_file());
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
        // No Message-ID: named by content, so the same mail still lands in one file.
        t.send("a@replyflow.test", "b@replyflow.test", "", b"anon")
            .await
            .unwrap();
        t.send("a@replyflow.test", "b@replyflow.test", "", b"anon")
            .await
            .unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
    }
}
