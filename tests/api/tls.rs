//! TLS on the gRPC listener (DESIGN §12, issue 9 item 9), through real clients over sockets: a
//! tonic client that trusts the test CA, a plaintext client, clients with and without a
//! certificate when `server.tls_client_ca` asks for one, gRPC-Web over HTTP/1.1 in TLS, and the
//! start refused with the key named when a file is wrong. Certificates are made per test (rcgen).
use std::{sync::Arc, time::Duration};

use replyflow::{app::Application, clock::SystemClock, config::Settings, proto::pb};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    helpers::{TestApp, TestDb, req, spawn_app_with, test_settings},
    pki::{Issued, TestCa},
    protocol::{assert_reflection_v1_works, grpc_web_call_over, grpc_web_frames, grpc_web_trailer},
};

/// The test PKI of one test: a CA, the server's certificate from it (for localhost and
/// 127.0.0.1), and a directory that holds the files.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    server: Issued,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = TestCa::new(dir.path(), "replyflow-test-ca");
        let server = ca.server("server", &["localhost", "127.0.0.1"]);
        Self { dir, ca, server }
    }

    /// Settings with TLS on (and mutual TLS when `client_ca` is given).
    fn configure(&self, client_ca: Option<&TestCa>) -> impl FnOnce(&mut Settings) + use<> {
        let cert = self.server.cert_path.display().to_string();
        let key = self.server.key_path.display().to_string();
        let client_ca = client_ca.map(|ca| ca.cert_path.display().to_string());
        move |settings: &mut Settings| {
            settings.server.tls_cert = Some(cert);
            settings.server.tls_key = Some(key);
            settings.server.tls_client_ca = client_ca;
        }
    }
}

/// A tonic channel over TLS to `app`, trusting `ca`, presenting `identity` when given. Errors
/// are returned: some tests expect them.
async fn tls_channel(
    app: &TestApp,
    ca: &TestCa,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.cert_pem))
        .domain_name("localhost");
    if let Some(issued) = identity {
        tls = tls.identity(Identity::from_pem(&issued.cert_pem, &issued.key_pem));
    }
    Channel::from_shared(format!("https://{}", app.addr))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

/// One ordinary RPC (ListUsers as admin) and its result.
async fn list_users(channel: Channel) -> Result<pb::ListUsersResponse, tonic::Status> {
    pb::directory_service_client::DirectoryServiceClient::new(channel)
        .list_users(req(pb::ListUsersRequest::default(), "admin"))
        .await
        .map(|r| r.into_inner())
}

/// Whether a client with this TLS setup gets an answer: connecting or the first call fails when
/// the server refuses the handshake (with TLS 1.3 a refused client certificate shows only after
/// the client's side of the handshake is done, so at the first call).
async fn served(app: &TestApp, ca: &TestCa, identity: Option<&Issued>) -> Result<(), String> {
    let channel = tls_channel(app, ca, identity)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    list_users(channel)
        .await
        .map(|_| ())
        .map_err(|status| format!("call: {status:?}"))
}

#[tokio::test]
async fn a_client_trusting_the_ca_gets_grpc_health_and_reflection_over_tls() {
    let pki = Pki::new();
    let app = spawn_app_with(pki.configure(None)).await;
    let channel = tls_channel(&app, &pki.ca, None)
        .await
        .expect("a TLS connection with the test CA");
    list_users(channel.clone())
        .await
        .expect("ListUsers over TLS");
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "replyflow.v1.WorkflowService".into(),
        })
        .await
        .expect("Health/Check over TLS")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    assert_reflection_v1_works(channel).await;
    app.stop().await;
}

/// A client that does not trust the server's CA refuses the server: the listener really
/// presents the configured certificate, and nothing else is trusted by accident.
#[tokio::test]
async fn a_client_that_trusts_another_ca_refuses_the_server() {
    let pki = Pki::new();
    let app = spawn_app_with(pki.configure(None)).await;
    let stranger = TestCa::new(pki.dir.path(), "stranger-ca");
    let refused = served(&app, &stranger, None).await;
    let error = refused.expect_err("a server certificate of an untrusted CA");
    assert!(error.contains("UnknownIssuer"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_gets_no_answer_from_the_tls_listener() {
    let pki = Pki::new();
    let app = spawn_app_with(pki.configure(None)).await;
    let plain = Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let result = match plain.connect().await {
        Ok(channel) => list_users(channel)
            .await
            .map(|_| ())
            .map_err(|s| format!("{s:?}")),
        Err(e) => Err(format!("{e:?}")),
    };
    assert!(result.is_err(), "plaintext must not be served: {result:?}");
    // The listener is unharmed: a TLS client is still served.
    served(&app, &pki.ca, None)
        .await
        .expect("a TLS client after the plaintext one");
    app.stop().await;
}

/// gRPC-Web over HTTP/1.1 inside TLS, with ALPN `http/1.1` as Node's fetch or Python's urllib3
/// announce it (tonic's own TLS offers only h2 and would refuse this handshake).
#[tokio::test]
async fn grpc_web_over_http1_with_alpn_http1_is_served_over_tls() {
    let pki = Pki::new();
    let app = spawn_app_with(pki.configure(None)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.cert_pem.as_bytes()).expect("CA PEM"))
        .expect("the test CA as a root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(app.addr).await.expect("connecting");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("a TLS handshake announcing http/1.1");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let response = grpc_web_call_over(
        tls,
        app.addr,
        "/replyflow.v1.DirectoryService/ListUsers",
        "admin",
        &pb::ListUsersRequest::default(),
    )
    .await;
    assert_eq!(response.status, 200, "headers {:?}", response.headers);
    let (_, trailers) = grpc_web_frames(&response.body);
    assert_eq!(
        grpc_web_trailer(&response, &trailers, "grpc-status").as_deref(),
        Some("0"),
        "trailers {trailers:?}, headers {:?}",
        response.headers
    );
    app.stop().await;
}

/// A client that opens a connection and never says a word cannot hold the listener up: the
/// handshakes run side by side (and each has a deadline).
#[tokio::test]
async fn a_silent_connection_does_not_hold_up_other_clients() {
    let pki = Pki::new();
    let app = spawn_app_with(pki.configure(None)).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(
            TcpStream::connect(app.addr)
                .await
                .expect("a silent connection"),
        );
    }
    tokio::time::timeout(Duration::from_secs(5), served(&app, &pki.ca, None))
        .await
        .expect("served without waiting for the silent connections")
        .expect("a TLS client beside silent connections");
    drop(silent);
    app.stop().await;
}

#[tokio::test]
async fn with_tls_client_ca_a_client_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let app = spawn_app_with(pki.configure(Some(&pki.ca))).await;
    let refused = served(&app, &pki.ca, None).await;
    let error = refused.expect_err("served without a client certificate");
    assert!(error.contains("CertificateRequired"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn with_tls_client_ca_a_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let app = spawn_app_with(pki.configure(Some(&pki.ca))).await;
    let stranger = TestCa::new(pki.dir.path(), "stranger-ca");
    let forged = stranger.client("forged", "mallory");
    let refused = served(&app, &pki.ca, Some(&forged)).await;
    let error = refused.expect_err("served with a certificate of another CA");
    assert!(error.contains("UnknownCA"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn with_tls_client_ca_a_client_with_a_signed_certificate_is_served() {
    let pki = Pki::new();
    let app = spawn_app_with(pki.configure(Some(&pki.ca))).await;
    let client = pki.ca.client("client", "oa-frontend");
    served(&app, &pki.ca, Some(&client))
        .await
        .expect("a client certificate signed by server.tls_client_ca");
    app.stop().await;
}

/// The start fails, naming the key, when a TLS file cannot be used; nothing is served.
#[tokio::test]
async fn unusable_tls_files_stop_the_start_naming_the_key() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let other = pki.ca.server("other", &["localhost"]);
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").expect("writing");
    let missing = dir.join("missing.pem");
    let path = |p: &std::path::Path| Some(p.display().to_string());
    // (what is wrong, how the settings get it, what the error must say)
    type Change<'a> = Box<dyn Fn(&mut Settings) + 'a>;
    let cases: Vec<(&str, Change<'_>, &str)> = vec![
        (
            "unreadable certificate",
            Box::new(|s| s.server.tls_cert = path(&missing)),
            "server.tls_cert: cannot read",
        ),
        (
            "no certificate in the file",
            Box::new(|s| s.server.tls_cert = path(&not_pem)),
            "server.tls_cert",
        ),
        (
            "a key file without a key",
            Box::new(|s| s.server.tls_key = path(&pki.server.cert_path)),
            "server.tls_key",
        ),
        (
            "the key of another certificate",
            Box::new(|s| s.server.tls_key = path(&other.key_path)),
            "does not belong to the first certificate of server.tls_cert",
        ),
        (
            "a client CA file without a certificate",
            Box::new(|s| s.server.tls_client_ca = path(&not_pem)),
            "server.tls_client_ca",
        ),
    ];
    let db = TestDb::new().await;
    for (what, change, expected) in cases {
        let outbox = tempfile::tempdir().expect("outbox");
        let mut settings = test_settings(&db.url, outbox.path());
        pki.configure(None)(&mut settings);
        change(&mut settings);
        let err = Application::build(&settings, Arc::new(SystemClock))
            .await
            .expect_err(what);
        let text = format!("{err:#}");
        assert!(text.contains(expected), "{what}: {text}");
        assert!(
            !text.contains("PRIVATE KEY-----"),
            "{what}: an error never quotes a key: {text}"
        );
    }
    db.drop_database().await;
}

/// Measures, prints, asserts nothing on time: what TLS costs per RPC on one connection and per
/// new connection (handshake), against the plaintext listener, same build and machine.
/// `cargo test --release --test api tls_cost -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn tls_cost() {
    const RPCS: u32 = 2000;
    const CONNECTIONS: u32 = 200;
    let pki = Pki::new();
    let plain = crate::helpers::spawn_app().await;
    let tls = spawn_app_with(pki.configure(None)).await;
    let per_rpc = |channel: Channel| async move {
        list_users(channel.clone()).await.expect("warm-up");
        let start = std::time::Instant::now();
        for _ in 0..RPCS {
            list_users(channel.clone()).await.expect("ListUsers");
        }
        start.elapsed() / RPCS
    };
    let plain_rpc = per_rpc(plain.channel.clone()).await;
    let tls_rpc = per_rpc(tls_channel(&tls, &pki.ca, None).await.expect("TLS")).await;
    let start = std::time::Instant::now();
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(format!("http://{}", plain.addr))
            .expect("uri")
            .connect()
            .await
            .expect("plain connect");
        list_users(channel).await.expect("ListUsers");
    }
    let plain_connect = start.elapsed() / CONNECTIONS;
    let start = std::time::Instant::now();
    for _ in 0..CONNECTIONS {
        served(&tls, &pki.ca, None).await.expect("TLS connect");
    }
    let tls_connect = start.elapsed() / CONNECTIONS;
    println!(
        "ListUsers on one connection: plaintext {plain_rpc:?}, TLS {tls_rpc:?} per RPC ({RPCS} RPCs)\n\
         new connection + ListUsers: plaintext {plain_connect:?}, TLS {tls_connect:?} ({CONNECTIONS} connections)"
    );
    plain.stop().await;
    tls.stop().await;
}
