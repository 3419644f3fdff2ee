//! `smtp://` and `smtps://` (see [`super::outbound`] for the URL): lettre's SMTP client over
//! rustls in a pool of connections of our own, kept open and reused. TLS trusts the mail store
//! of [`super::trust`]: the system's CA bundle plus `mail.ca_file`, whose certificates are also
//! trusted as themselves (a mail server's self-signed certificate).
use std::{
    fmt,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

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
use tokio::{net::TcpStream, sync::Semaphore};

use super::{
    SendError, Transport,
    outbound::{SmtpTarget, TlsMode},
    smtp_tls::{SharedTcp, TlsClient, TlsTcp},
};

/// lettre's connection (the SMTP dialogue, STARTTLS, AUTH, reply parsing) over sockets we open
/// ourselves, in a small pool of our own. Why not lettre's `AsyncSmtpTransport`: its sockets keep
/// Nagle's algorithm on, and it writes a mail's final "." in a write of its own, which then waits
/// for the server's delayed ACK — 40 ms per mail, whatever the bandwidth (≈ 225 mails/s over 10
/// connections on loopback). With `TCP_NODELAY` the same code runs at network speed.
pub(super) struct SmtpTransport {
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
/// A connection given back this recently is used without the NOOP that proves it alive: while
/// mail flows, that NOOP is a fifth round trip per mail. One that a server closed within this
/// second fails its mail transiently (retried), as a connection lost mid-send would.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

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
    pub(super) fn new(
        target: SmtpTarget,
        ca_file: Option<&Path>,
        pool_size: u32,
    ) -> anyhow::Result<Self> {
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
            let idle_for = since.elapsed();
            if idle_for < TRUSTED_IDLE {
                return Ok(conn);
            }
            if idle_for < MAX_IDLE && conn.test_connected().await {
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
impl Transport for SmtpTransport {
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

pub(super) fn envelope(from: &str, to: &str) -> Result<Envelope, SendError> {
    let from = parse_address("sender", from)?;
    let to = parse_address("recipient", to)?;
    Envelope::new(Some(from), vec![to]).map_err(|e| SendError::Permanent(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{outbound::from_url, trust::tls_roots};

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
}
