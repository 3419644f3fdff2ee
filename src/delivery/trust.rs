//! Whom replyflow trusts over TLS as a client (SMTP and SMS out, IMAP in): the one home of its
//! roots. Mail traffic has one store, the system's CA bundle plus `mail.ca_file`
//! ([`tls_roots`]), and one rule on top of it: a certificate in `mail.ca_file` is trusted **as
//! itself** (pinned) when a server presents exactly it. The SMS gateway adds webpki's bundled
//! roots ([`public_roots`]).
//!
//! Why the pinning: many internal mail servers present a self-signed certificate that carries
//! `CA:TRUE` (the default of `openssl req -x509` and of several appliances). Put in `mail.ca_file`,
//! it becomes a root, and webpki then refuses it as the server's own certificate with
//! `CaUsedAsEndEntity`: a CA may not be an end entity. [`PinnedOrWebPki`] accepts such a server
//! when its certificate is byte-identical to one in `mail.ca_file`, and otherwise verifies the
//! chain with the usual WebPKI rules against the roots. The server still has to prove that it
//! holds the certificate's key: the handshake's signatures are checked with ring's algorithms in
//! every case. For a pinned certificate the host name and the dates are not checked: the
//! certificate is the identity the administrator chose, byte for byte (the same rule as Postfix's
//! `fingerprint` security level); everything else gets the full WebPKI check.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

/// The rustls client configuration of every mail connection (SMTP with STARTTLS or implicit TLS,
/// IMAPS and IMAP with STARTTLS): ring, TLS 1.2 and 1.3, and [`PinnedOrWebPki`] over
/// [`tls_roots`]. Fails like [`tls_roots`].
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedOrWebPki::new(ca_file, provider.clone())?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("mail TLS: protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts a server certificate that is one of `mail.ca_file`'s, byte for byte; verifies any
/// other with WebPKI against the trusted roots. See the module documentation.
#[derive(Debug)]
pub struct PinnedOrWebPki {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl PinnedOrWebPki {
    /// The verifier for the roots of [`tls_roots`] with `ca_file`'s certificates pinned.
    pub fn new(ca_file: Option<&Path>, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let pinned = match ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::new(tls_roots(ca_file)?),
            provider.clone(),
        )
        .build()
        .context("mail TLS: the certificate verifier")?;
        Ok(Self {
            pinned,
            webpki,
            provider,
        })
    }
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pinned| pinned.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // The signatures are the proof that the server holds the certificate's private key: checked
    // for pinned certificates as for any other.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Loads rustls root certificates: the system's CA bundle (`SSL_CERT_FILE`, else the usual
/// bundle paths of Debian, RHEL and Alpine) plus every certificate in `ca_file` — the one trust
/// store of the mail code. Fails when `ca_file` cannot be read or holds no
/// usable certificate, or when no root at all is found.
pub fn tls_roots(ca_file: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(trusted_roots(ca_file)?);
    Ok(roots)
}

/// The roots for a peer outside the mail system (the SMS gateway, often a public service):
/// webpki's bundled roots, so that a public gateway works on a machine without a CA bundle, plus
/// those of [`tls_roots`]. A `ca_file` that cannot be used is an error; a machine without a
/// system bundle is not.
pub fn public_roots(ca_file: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    match tls_roots(ca_file) {
        Ok(more) => roots.roots.extend(more.roots),
        Err(e) if ca_file.is_some() => return Err(e),
        Err(_) => {}
    }
    Ok(roots)
}

/// The trusted roots as DER: the system bundle's (entries rustls cannot use are skipped: one bad
/// entry must not make the server unusable) and `ca_file`'s (every one must be usable).
fn trusted_roots(ca_file: Option<&Path>) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let usable =
        |der: &CertificateDer<'static>| rustls::RootCertStore::empty().add(der.clone()).is_ok();
    let mut roots: Vec<CertificateDer<'static>> = system_bundle()
        .and_then(|bundle| CertificateDer::pem_file_iter(bundle).ok())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(usable)
        .collect();
    if let Some(path) = ca_file {
        for der in read_ca_file(path)? {
            if !usable(&der) {
                bail!(
                    "mail.ca_file {}: a certificate rustls cannot use as a root",
                    path.display()
                );
            }
            roots.push(der);
        }
    }
    if roots.is_empty() {
        bail!(
            "no trusted root certificates: set mail.ca_file or install the system CA bundle \
             (ca-certificates), or use ?tls=none for a trusted local relay"
        );
    }
    Ok(roots)
}

fn system_bundle() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        return Some(PathBuf::from(path));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// The certificates of a PEM file, with errors that name the file.
fn read_ca_file(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("mail.ca_file: cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("mail.ca_file {}: not valid PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "mail.ca_file {}: no CERTIFICATE in the file",
            path.display()
        );
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls_pki_types::PrivateKeyDer;

    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn params(names: &[&str], ca: bool) -> CertificateParams {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "mail.internal.test");
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params
    }

    /// A self-signed certificate for localhost and its key; `ca` sets CA:TRUE, as
    /// `openssl req -x509` does by default.
    fn self_signed(ca: bool) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let cert = params(&["localhost", "127.0.0.1"], ca)
            .self_signed(&key)
            .unwrap();
        (cert, key)
    }

    fn pem_file(dir: &Path, name: &str, certs: &[&rcgen::Certificate]) -> PathBuf {
        let text: String = certs.iter().map(|cert| cert.pem()).collect();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn localhost() -> ServerName<'static> {
        ServerName::try_from("localhost").unwrap()
    }

    fn verify(
        verifier: &dyn ServerCertVerifier,
        cert: &CertificateDer<'_>,
        name: &ServerName<'_>,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verifier.verify_server_cert(cert, &[], name, &[], UnixTime::now())
    }

    /// What this module is for: WebPKI alone refuses the self-signed CA-flagged certificate even
    /// when it is a trusted root; pinned, the same certificate is accepted.
    #[test]
    fn a_self_signed_ca_flagged_certificate_in_ca_file_is_trusted_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed(true);
        let ca_file = pem_file(dir.path(), "ca.pem", &[&cert]);

        let webpki_alone = WebPkiServerVerifier::builder_with_provider(
            Arc::new(tls_roots(Some(&ca_file)).unwrap()),
            provider(),
        )
        .build()
        .unwrap();
        let refused = verify(webpki_alone.as_ref(), cert.der(), &localhost()).unwrap_err();
        assert!(
            format!("{refused:?}").contains("CaUsedAsEndEntity"),
            "{refused:?}"
        );

        let pinning = PinnedOrWebPki::new(Some(&ca_file), provider()).unwrap();
        verify(&pinning, cert.der(), &localhost()).expect("the pinned certificate is accepted");
        // Also a self-signed certificate without CA:TRUE.
        let (plain, _) = self_signed(false);
        let ca_file = pem_file(dir.path(), "leaf.pem", &[&plain]);
        let pinning = PinnedOrWebPki::new(Some(&ca_file), provider()).unwrap();
        verify(&pinning, plain.der(), &localhost()).expect("a pinned CA:FALSE certificate too");
    }

    /// An impostor's self-signed certificate with the same names is not the pinned one.
    #[test]
    fn another_self_signed_certificate_with_the_same_names_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (pinned, _) = self_signed(true);
        let (impostor, _) = self_signed(true);
        let ca_file = pem_file(dir.path(), "ca.pem", &[&pinned]);
        let pinning = PinnedOrWebPki::new(Some(&ca_file), provider()).unwrap();
        let e = verify(&pinning, impostor.der(), &localhost()).unwrap_err();
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e:?}");
    }

    /// A real CA in `mail.ca_file` is not an invitation for its leaves to skip any check.
    #[test]
    fn certificates_issued_by_a_ca_in_ca_file_get_the_full_webpki_check() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let ca_params = params(&[], true);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params(&["localhost"], false)
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let ca_file = pem_file(dir.path(), "ca.pem", &[&ca_cert]);
        let pinning = PinnedOrWebPki::new(Some(&ca_file), provider()).unwrap();
        verify(&pinning, leaf.der(), &localhost()).expect("a leaf of the CA, for its name");
        let e = verify(
            &pinning,
            leaf.der(),
            &ServerName::try_from("other.test").unwrap(),
        )
        .unwrap_err();
        assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");
    }

    /// Holding the pinned certificate is not enough: a server must sign the handshake with its
    /// key. Shown with real handshakes in memory, with the right key and with another one.
    #[tokio::test]
    async fn a_server_replaying_the_pinned_certificate_without_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(true);
        let ca_file = pem_file(dir.path(), "ca.pem", &[&cert]);
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(client_config(Some(&ca_file)).unwrap()));
        let handshake = |signing_key: KeyPair| {
            let cert = cert.der().clone();
            let connector = connector.clone();
            async move {
                let key = provider()
                    .key_provider
                    .load_private_key(PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap())
                    .unwrap();
                // CertifiedKey::new does not check that the key belongs to the certificate: an
                // impostor's server can be built this way, which is the point.
                let resolver = rustls::sign::SingleCertAndKey::from(
                    rustls::sign::CertifiedKey::new(vec![cert], key),
                );
                let server_config = rustls::ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(resolver));
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
                let (client_io, server_io) = tokio::io::duplex(64 * 1024);
                let (client, _server) = tokio::join!(
                    connector.connect(localhost(), client_io),
                    acceptor.accept(server_io)
                );
                client.map(|_| ())
            }
        };
        handshake(key).await.expect("the real server's handshake");
        let e = handshake(KeyPair::generate().unwrap())
            .await
            .expect_err("an impostor replaying the certificate");
        assert!(e.to_string().to_lowercase().contains("signature"), "{e}");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = client_config(Some(&dir.path().join("nope.pem"))).unwrap_err();
        assert!(
            format!("{e:#}").contains("mail.ca_file: cannot read"),
            "{e:#}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(format!("{e:#}").contains("no CERTIFICATE"), "{e:#}");
    }
}
