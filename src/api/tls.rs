//! TLS on the gRPC listener (DESIGN §12): `server.tls_cert` and `server.tls_key`, and with
//! `server.tls_client_ca` mutual TLS (a client must present a certificate that CA signed).
//!
//! Why our own acceptor instead of tonic's `tls_config`: tonic offers only `h2` by ALPN, so an
//! HTTP/1.1 gRPC-Web client that announces `http/1.1` (Node's fetch, Python's urllib3, curl
//! `--http1.1`) would be refused in the handshake. Ours offers `h2` and `http/1.1`, and hyper
//! picks the protocol from the first bytes exactly as on a plaintext listener. Our loader also
//! names the configuration key in every error, which tonic's does not. The crypto is rustls with
//! ring, chosen explicitly (no process-wide provider is needed, none other is ever compiled in).
//!
//! Handshakes run concurrently, each with a deadline and at most [`MAX_HANDSHAKES`] at a time, so
//! a client that connects and says nothing holds up nobody, and a crowd of them cannot make the
//! server grow without bound (further connections wait in the kernel's accept queue).
use std::{fmt, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use futures_util::{Stream, StreamExt};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{net::TcpListener, net::TcpStream, task::JoinSet};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::TcpIncoming;

use crate::config::ServerSettings;

/// How long a client may take from connecting to the end of the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; more connections wait until one finishes or times out.
const MAX_HANDSHAKES: usize = 1024;

/// The listener's TLS configuration, loaded and checked at start.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    mutual: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The TLS configuration of `server.tls_*`, or None for a plaintext listener. Every error
    /// names the key and the file (never the file's content: it holds a private key).
    pub fn load(settings: &ServerSettings) -> anyhow::Result<Option<Self>> {
        let (cert_path, key_path) = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => (Path::new(cert), Path::new(key)),
            (None, None) if settings.tls_client_ca.is_none() => return Ok(None),
            // Settings::validate refuses these first; repeated so that no caller can skip it.
            _ => bail!(
                "server.tls_cert and server.tls_key: set both or neither \
                 (server.tls_client_ca needs both)"
            ),
        };
        let chain = read_certificates("server.tls_cert", cert_path)?;
        let key = read_private_key(key_path)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("server.tls_cert: TLS protocol versions")?;
        let builder = match &settings.tls_client_ca {
            None => builder.with_no_client_auth(),
            Some(ca_path) => {
                let ca_path = Path::new(ca_path);
                let mut roots = RootCertStore::empty();
                for (n, der) in read_certificates("server.tls_client_ca", ca_path)?
                    .into_iter()
                    .enumerate()
                {
                    roots.add(der).with_context(|| {
                        format!(
                            "server.tls_client_ca {}: certificate {} cannot be used as a CA",
                            ca_path.display(),
                            n + 1
                        )
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .with_context(|| format!("server.tls_client_ca {}", ca_path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
                "server.tls_key {}: the key does not belong to the first certificate of \
                 server.tls_cert {}",
                key_path.display(),
                cert_path.display()
            ),
            other => anyhow::anyhow!(
                "server.tls_key {} with server.tls_cert {}: {other}",
                key_path.display(),
                cert_path.display()
            ),
        })?;
        // Both: gRPC proper (and browsers) negotiate h2; HTTP/1.1 gRPC-Web clients announce
        // http/1.1. A client that sends no ALPN at all is served too.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Self {
            config: Arc::new(config),
            mutual: settings.tls_client_ca.is_some(),
        }))
    }

    /// Whether clients must present a certificate (`server.tls_client_ca`).
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// The connections of `listener`, each after a successful TLS handshake (with TCP_NODELAY,
    /// like the plaintext listener). A failed or timed-out handshake closes that connection only;
    /// it is logged at debug level (port scanners would flood a busier level).
    pub(super) fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
        let acceptor = TlsAcceptor::from(self.config.clone());
        let tcp = TcpIncoming::from(listener).with_nodelay(Some(true));
        futures_util::stream::unfold(
            (tcp, JoinSet::new(), acceptor),
            |(mut tcp, mut handshakes, acceptor)| async move {
                loop {
                    tokio::select! {
                        accepted = tcp.next(), if handshakes.len() < MAX_HANDSHAKES => {
                            match accepted {
                                Some(Ok(stream)) => {
                                    let peer = stream.peer_addr().ok();
                                    let handshake = acceptor.accept(stream);
                                    handshakes.spawn(async move {
                                        (peer, tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await)
                                    });
                                }
                                // tonic decides: transient accept errors are skipped.
                                Some(Err(e)) => return Some((Err(e), (tcp, handshakes, acceptor))),
                                None => return None,
                            }
                        }
                        Some(done) = handshakes.join_next() => match done {
                            Ok((_, Ok(Ok(tls)))) => {
                                return Some((Ok(tls), (tcp, handshakes, acceptor)));
                            }
                            Ok((peer, Ok(Err(e)))) => {
                                tracing::debug!(?peer, error = %e, "TLS handshake failed");
                            }
                            Ok((peer, Err(_))) => {
                                tracing::debug!(?peer, "TLS handshake timed out");
                            }
                            Err(e) => tracing::debug!(error = %e, "TLS handshake task ended"),
                        },
                    }
                }
            },
        )
    }
}

/// The certificates of the PEM file that `key` names; at least one.
fn read_certificates(key: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("{key}: cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{key} {}: not valid PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{key} {}: no CERTIFICATE in the file (PEM expected)",
            path.display()
        );
    }
    Ok(certs)
}

/// The private key of `server.tls_key`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), in PEM.
fn read_private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("server.tls_key: cannot read {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "server.tls_key {}: no PRIVATE KEY in the file (PEM: PKCS#8, RSA or EC)",
            path.display()
        ),
        other => anyhow::anyhow!("server.tls_key {}: not valid PEM: {other}", path.display()),
    })
}
