//! A mail server's self-signed certificate given in `mail.ca_file` is trusted as itself (DESIGN
//! §12, issue 9 item 9). Many internal mail servers present a self-signed certificate with
//! `CA:TRUE`, which webpki alone refuses (`CaUsedAsEndEntity`, see `mail::trust`'s unit tests).
//!
//! The server here is real: a small tokio-rustls front presents such a certificate (made per
//! test with rcgen) and passes the session on to the test stack's Dovecot (plain IMAP port) or
//! Postfix (plain SMTP port). For STARTTLS the front speaks the plain part itself (greeting,
//! EHLO, STARTTLS), then hands the TLS session to Dovecot or Postfix without their greeting, so
//! what the client says over TLS is answered by the real server. The mail that arrives in mary's box over
//! IMAPS proves the whole path.
use std::{net::SocketAddr, sync::Arc};

use replyflow::{
    mail::transport::{self, SendError},
    workers::inbound::{InboundSource, InboundWorker},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::{
    helpers::{approvals_inbox, mail_env, message, postfix_shared, spawn_mail_app, unique},
    imap::wait_for_message_id,
    inbound::{DEADLINE, PROCESSED},
    pki::{Issued, self_signed_ca_flagged},
};

/// What the front speaks before TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// TLS from the first byte (IMAPS, SMTPS).
    Implicit,
    /// SMTP greeting, EHLO and STARTTLS in plain text, then TLS.
    SmtpStartTls,
    /// IMAP greeting and STARTTLS in plain text, then TLS.
    ImapStartTls,
}

/// A TLS front on 127.0.0.1 presenting `cert`, passing sessions on to `upstream_port`.
struct Front {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Front {
    async fn start(cert: &Issued, upstream_port: u16, dialect: Dialect) -> Self {
        let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the front's certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A refused handshake ends that session only; the client reports it.
                    let _ = relay(tcp, acceptor, upstream_port, dialect).await;
                });
            }
        });
        Self { addr, task }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    upstream_port: u16,
    dialect: Dialect,
) -> std::io::Result<()> {
    let tcp = match dialect {
        Dialect::Implicit => tcp,
        Dialect::SmtpStartTls => smtp_until_starttls(tcp).await?,
        Dialect::ImapStartTls => imap_until_starttls(tcp).await?,
    };
    let mut tls = acceptor.accept(tcp).await?;
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
    if dialect != Dialect::Implicit {
        // The client was greeted by us already; the server's greeting line is not for it.
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            upstream.read_exact(&mut byte).await?;
        }
    }
    tokio::io::copy_bidirectional(&mut tls, &mut upstream).await?;
    Ok(())
}

/// The plain part of an SMTP session with STARTTLS: greeting, EHLO (offering STARTTLS only),
/// STARTTLS; returns the socket for the handshake.
async fn smtp_until_starttls(tcp: TcpStream) -> std::io::Result<TcpStream> {
    let mut session = BufReader::new(tcp);
    session
        .get_mut()
        .write_all(b"220 front.test ESMTP self-signed front\r\n")
        .await?;
    let mut line = String::new();
    loop {
        line.clear();
        if session.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let command = line.trim_end().to_ascii_uppercase();
        let answer: &[u8] = if command.starts_with("EHLO") {
            b"250-front.test\r\n250 STARTTLS\r\n"
        } else if command == "STARTTLS" {
            b"220 2.0.0 Ready to start TLS\r\n"
        } else {
            b"503 5.5.1 STARTTLS first\r\n"
        };
        session.get_mut().write_all(answer).await?;
        if command == "STARTTLS" {
            break;
        }
    }
    assert!(
        session.buffer().is_empty(),
        "the client sent data before the TLS handshake"
    );
    Ok(session.into_inner())
}

/// The plain part of an IMAP session with STARTTLS: greeting, `<tag> STARTTLS`; returns the
/// socket for the handshake.
async fn imap_until_starttls(tcp: TcpStream) -> std::io::Result<TcpStream> {
    let mut session = BufReader::new(tcp);
    session
        .get_mut()
        .write_all(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] self-signed front\r\n")
        .await?;
    let mut line = String::new();
    loop {
        line.clear();
        if session.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let (tag, command) = line.trim_end().split_once(' ').unwrap_or(("*", ""));
        if command.eq_ignore_ascii_case("STARTTLS") {
            let answer = format!("{tag} OK Begin TLS negotiation now\r\n");
            session.get_mut().write_all(answer.as_bytes()).await?;
            break;
        }
        let answer = format!("{tag} BAD STARTTLS first\r\n");
        session.get_mut().write_all(answer.as_bytes()).await?;
    }
    assert!(
        session.buffer().is_empty(),
        "the client sent data before the TLS handshake"
    );
    Ok(session.into_inner())
}

fn port_from_env(name: &str) -> u16 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} (run ./scripts/test)"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a port"))
}

/// The test PKI of one test: the front's self-signed CA-flagged certificate, and another one
/// with the same names (an impostor's, or last year's).
struct SelfSigned {
    _dir: tempfile::TempDir,
    server: Issued,
    impostor: Issued,
}

fn self_signed() -> SelfSigned {
    let dir = tempfile::tempdir().expect("temp dir");
    let names = ["localhost", "127.0.0.1"];
    let server = self_signed_ca_flagged(dir.path(), "server", &names);
    let impostor = self_signed_ca_flagged(dir.path(), "impostor", &names);
    SelfSigned {
        _dir: dir,
        server,
        impostor,
    }
}

#[tokio::test]
async fn imap_to_a_self_signed_ca_flagged_certificate_works_when_it_is_in_ca_file() {
    let _inbox = approvals_inbox().await;
    let env = mail_env();
    let certs = self_signed();
    let dovecot = port_from_env("RF_MAIL_IMAP_PORT");
    let implicit = Front::start(&certs.server, dovecot, Dialect::Implicit).await;
    let starttls = Front::start(&certs.server, dovecot, Dialect::ImapStartTls).await;
    let app = spawn_mail_app().await;
    for (scheme, front) in [("imaps", &implicit), ("imap", &starttls)] {
        let worker = |ca_file: &std::path::Path| {
            let source = InboundSource::from_url(&format!(
                "{scheme}://approvals%40{}:{}@localhost:{}/INBOX",
                env.domain,
                env.password,
                front.port()
            ))
            .expect("the IMAP URL parses");
            InboundWorker::new(
                app.server_workflow.clone(),
                source,
                PROCESSED.into(),
                Some(ca_file.to_path_buf()),
            )
        };

        worker(&certs.server.cert_path)
            .run_once()
            .await
            .unwrap_or_else(|e| {
                panic!("{scheme} with the server's own certificate in mail.ca_file: {e:#}")
            });

        for (what, ca_file) in [
            ("the stack's CA", env.ca_file.as_path()),
            ("another self-signed certificate", &certs.impostor.cert_path),
        ] {
            let error = worker(ca_file).run_once().await.expect_err(what);
            let text = format!("{error:#}");
            assert!(
                text.contains("TLS handshake") && text.contains("invalid peer certificate"),
                "{scheme}, {what}: {text}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn smtp_to_a_self_signed_ca_flagged_certificate_delivers_when_it_is_in_ca_file() {
    let _postfix = postfix_shared().await;
    let env = mail_env();
    let certs = self_signed();
    let starttls = Front::start(&certs.server, env.smtp_port, Dialect::SmtpStartTls).await;
    let implicit = Front::start(&certs.server, env.smtp_port, Dialect::Implicit).await;
    for url in [
        format!("smtp://localhost:{}?tls=required", starttls.port()),
        format!("smtps://localhost:{}", implicit.port()),
    ] {
        let id = format!("<{}@{}>", unique("self-signed"), env.domain);
        let raw = message(
            &env.address("approvals"),
            &env.address("mary"),
            &id,
            "self-signed",
            "Delivered through a server with a self-signed certificate.",
        );
        let send = |ca_file: &std::path::Path| {
            let transport = transport::from_url(&url, Some(ca_file), 1).expect("the transport");
            let raw = raw.clone();
            let id = id.clone();
            async move {
                transport
                    .send(&env.address("approvals"), &env.address("mary"), &id, &raw)
                    .await
            }
        };

        for (what, ca_file) in [
            ("the stack's CA", env.ca_file.as_path()),
            ("another self-signed certificate", &certs.impostor.cert_path),
        ] {
            match send(ca_file).await {
                Err(SendError::Transient(text)) => assert!(
                    text.contains("invalid peer certificate"),
                    "{url}, {what}: {text}"
                ),
                other => panic!("{url}, {what}: expected a refused certificate, got {other:?}"),
            }
        }

        let answer = send(&certs.server.cert_path)
            .await
            .unwrap_or_else(|e| panic!("{url} with the certificate in mail.ca_file: {e}"));
        assert!(answer.starts_with("250"), "{url}: {answer}");
        let arrived = wait_for_message_id("mary", &id, DEADLINE).await;
        assert_eq!(arrived.len(), 1, "{url}: one copy in mary's box");
    }
}
