//! The TLS side of our SMTP connections (see [`super::transport`]): the handshake with the mail
//! trust of [`super::trust`], and the two stream adapters that let lettre speak SMTP before and
//! after a handshake that lettre itself does not do.
//!
//! Why not lettre's `TlsParameters`: lettre 0.11 builds its rustls configuration itself (roots,
//! or "accept any certificate") and has no way to take a `ClientConfig` or a certificate
//! verifier, so a pinned self-signed certificate could not be trusted through it. For STARTTLS we
//! say STARTTLS with lettre, do the handshake ourselves and hand lettre the TLS stream.
use std::{
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use anyhow::Context as _;

use lettre::transport::smtp::client::AsyncTokioStream;
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use super::SendError;

/// Our rustls client for one SMTP server: the mail trust of [`super::trust::client_config`].
pub(crate) struct TlsClient {
    connector: TlsConnector,
    server: ServerName<'static>,
}

impl TlsClient {
    /// The client for `host` (`mail.outbound`'s host) with `mail.ca_file`.
    pub(crate) fn new(host: &str, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let config = super::trust::client_config(ca_file).context("mail.outbound")?;
        let server = ServerName::try_from(host.to_string())
            .with_context(|| format!("mail.outbound: {host:?} is not a valid TLS server name"))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server,
        })
    }

    /// The TLS handshake on `tcp`; a failure (an untrusted certificate...) is transient.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        port: u16,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SendError> {
        self.connector
            .connect(self.server.clone(), tcp)
            .await
            .map_err(|e| SendError::Transient(format!("TLS handshake with {host}:{port}: {e}")))
    }
}

/// The socket of a plain SMTP session that we take back for the STARTTLS handshake: lettre owns
/// the boxed stream it is given and has no way to hand it back, so it gets a shared handle, and
/// once its session is dropped [`SharedTcp::into_inner`] returns the socket. Only one session
/// uses it at a time, so the lock is never contended.
#[derive(Debug, Clone)]
pub(crate) struct SharedTcp(Arc<Mutex<TcpStream>>);

impl SharedTcp {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Self(Arc::new(Mutex::new(tcp)))
    }

    /// The socket, when no other handle is left.
    pub(crate) fn into_inner(self) -> Option<TcpStream> {
        Arc::into_inner(self.0).map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    fn with<T>(&self, f: impl FnOnce(Pin<&mut TcpStream>) -> T) -> T {
        let mut tcp = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(Pin::new(&mut *tcp))
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.with(|tcp| tcp.poll_read(cx, buf))
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|tcp| tcp.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.with(|tcp| tcp.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.with(|tcp| tcp.poll_shutdown(cx))
    }
}

impl AsyncTokioStream for SharedTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).peer_addr()
    }
}

/// A TLS stream over TCP in the shape lettre's connection takes.
///
/// lettre's session always begins by reading the server's greeting; after STARTTLS the server
/// sends none (RFC 3207: the client speaks first, with EHLO), so a session resumed over TLS is
/// given a `greeting` of our own to read first. lettre discards the greeting's text.
#[derive(Debug)]
pub(crate) struct TlsTcp {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    greeting: &'static [u8],
}

impl TlsTcp {
    /// Implicit TLS (smtps): the server greets over TLS.
    pub(crate) fn new(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        Self {
            stream,
            greeting: b"",
        }
    }

    /// TLS after STARTTLS: the session reads a greeting that we supply.
    pub(crate) fn after_starttls(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        Self {
            stream,
            greeting: b"220 replyflow: TLS started\r\n",
        }
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.greeting.is_empty() {
            let n = self.greeting.len().min(buf.remaining());
            buf.put_slice(&self.greeting[..n]);
            self.greeting = &self.greeting[n..];
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.stream.get_ref().0.peer_addr()
    }
}
