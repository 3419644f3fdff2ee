//! The SMS channel against a real HTTP server: a tiny HTTP/1.1 gateway started by each test on
//! 127.0.0.1:0 (plain, or TLS with the test CA in `tls/`) that records what it receives and
//! answers from a script. SMS rows go through the real outbox worker and a fresh SQLite store,
//! so each test checks what the gateway received and what the outbox recorded.
//!
//! `tls/` holds a throwaway CA certificate (its key was discarded) and a leaf for localhost and
//! 127.0.0.1, valid until 2126: test fixtures, trusted nowhere else.
// The throwaway database of the bench and the other test binaries.
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/cli/bench/database.rs"]
mod fresh_db;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use replyflow::{
    clock::{Clock, ManualClock, Millis},
    config::{Secret, SmsSettings},
    delivery::{
        Transport,
        sms::{HttpSmsGateway, OUTBOX_KIND},
    },
    model::{OutboxMail, OutboxStatus},
    store::{ConnectOptions, Store},
    workers::outbox::{OutboxWorker, RetryPolicy},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpListener,
    sync::Notify,
};

const START: Millis = 1_700_000_000_000;

/// One request as the gateway saw it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    /// Names lower-cased, in the order received.
    headers: Vec<(String, String)>,
    body: String,
    /// Which connection it came on (1 = the first accepted).
    connection: usize,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "{name} sent more than once");
        value
    }
}

/// What the gateway does with a request.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16, &'static str),
    /// Reads the request and never answers.
    Silence,
}

/// The gateway: answers the n-th request with the n-th answer (the last one repeats).
struct FakeGateway {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeGateway {
    async fn start(script: Vec<Answer>) -> Self {
        Self::start_with(script, None).await
    }

    async fn start_tls(script: Vec<Answer>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs = CertificateDer::pem_file_iter(tls_dir().join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(tls_dir().join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::start_with(
            script,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn start_with(script: Vec<Answer>, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            for connection in 1.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (log, script, tls) = (log.clone(), script.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        // A failed handshake (the client does not trust us) is part of a test.
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(tcp).await {
                                serve(stream, connection, &log, &script).await;
                            }
                        }
                        None => serve(tcp, connection, &log, &script).await,
                    }
                });
            }
        });
        Self { port, received }
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Requests on one connection until the client closes it (keep-alive, as a real gateway does).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    connection: usize,
    log: &Mutex<Vec<Received>>,
    script: &[Answer],
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        let answer = {
            let mut log = log.lock().unwrap();
            log.push(Received {
                method,
                target,
                headers,
                body: String::from_utf8(body).unwrap(),
                connection,
            });
            script[(log.len() - 1).min(script.len() - 1)].clone()
        };
        match answer {
            Answer::Status(code, body) => {
                let response = format!(
                    "HTTP/1.1 {code} Whatever\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
                stream.flush().await.unwrap();
            }
            Answer::Silence => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        }
    }
}

fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sms/tls")
}

fn sms_settings(url: &str, headers: &str, timeout: &str) -> SmsSettings {
    SmsSettings {
        gateway_url: Some(Secret::new(url)),
        headers: Secret::new(headers),
        timeout: timeout.into(),
        ..SmsSettings::default()
    }
}

fn gateway(settings: &SmsSettings, ca_file: Option<&Path>) -> Option<Arc<dyn Transport>> {
    HttpSmsGateway::from_settings(settings, ca_file).expect("valid sms settings")
}

/// A fresh SQLite store, the worker over it (mail goes to files), and its clock.
struct Outbox {
    _dir: tempfile::TempDir,
    db: fresh_db::Database,
    store: Store,
    worker: OutboxWorker,
    clock: Arc<ManualClock>,
}

impl Outbox {
    async fn new(sms: Option<Arc<dyn Transport>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = fresh_db::Database::fresh_sqlite("test").unwrap();
        let store = Store::connect(&db.url, &ConnectOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let clock = Arc::new(ManualClock::new(START));
        let mail = replyflow::delivery::from_url(
            &format!("file:{}", dir.path().join("mail").display()),
            None,
            1,
        )
        .unwrap();
        let worker = OutboxWorker::new(
            store.clone(),
            mail,
            clock.clone(),
            Arc::new(Notify::new()),
            RetryPolicy::default(),
            2,
        )
        .with_sms_gateway(sms);
        Self {
            _dir: dir,
            db,
            store,
            worker,
            clock,
        }
    }

    /// Queues an SMS as the reminder code does; returns its context id.
    async fn queue_sms(&self, phone: &str, text: &str, fallback: &str) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        let row = OutboxMail {
            id: id.clone(),
            kind: OUTBOX_KIND,
            context_id: format!("ctx-{id}"),
            task_id: "task-1".into(),
            recipient: phone.into(),
            sender: String::new(),
            message_id: format!("sms-{id}"),
            body: text.as_bytes().to_vec(),
            status: OutboxStatus::Queued,
            attempts: 0,
            next_attempt_at: self.clock.now(),
            last_error: String::new(),
            created_at: self.clock.now(),
            sent_at: None,
            fallback: fallback.into(),
        };
        let mut tx = self.store.begin().await.unwrap();
        tx.insert_outbox(&row).await.unwrap();
        tx.commit().await.unwrap();
        row.context_id
    }

    async fn row(&self, context_id: &str) -> OutboxMail {
        let mut rows = self.store.mail_for_context(context_id).await.unwrap();
        assert_eq!(rows.len(), 1);
        rows.remove(0)
    }

    /// The errors of the fallbacks queued for the reminder scheduler, by outbox id.
    async fn fallbacks(&self) -> Vec<(String, String)> {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&self.db.url)
            .await
            .unwrap();
        sqlx::query_as("SELECT outbox_id, error FROM outbox_fallbacks ORDER BY outbox_id")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_2xx_answer_sends_the_rendered_json_with_the_configured_headers() {
    let gw = FakeGateway::start(vec![Answer::Status(
        201,
        r#"{"sid": "SM-0001", "status": "queued"}"#,
    )])
    .await;
    let settings = sms_settings(
        &format!(
            "http://AC%40oa:s3cr%3At@127.0.0.1:{}/v1/messages?tenant=oa",
            gw.port
        ),
        "X-Api-Key: k-123\nX-Tenant: oa-prod\n",
        "PT5S",
    );
    let outbox = Outbox::new(gateway(&settings, None)).await;
    let ctx = outbox
        .queue_sms(
            "+86 138-0013-8000",
            "【催办】请审批 \"差旅报销\" EXP-001\n谢谢",
            "",
        )
        .await;

    assert_eq!(outbox.worker.run_once().await.unwrap(), 1);

    let row = outbox.row(&ctx).await;
    assert_eq!(
        (row.status, row.attempts, row.sent_at),
        (OutboxStatus::Sent, 1, Some(START))
    );
    assert_eq!(row.last_error, "201 Created, id SM-0001");
    let requests = gw.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("POST", "/v1/messages?tenant=oa")
    );
    assert_eq!(
        r.body,
        r#"{"to": "+86 138-0013-8000", "text": "【催办】请审批 \"差旅报销\" EXP-001\n谢谢"}"#
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.header("idempotency-key"), Some(row.message_id.as_str()));
    assert_eq!(r.header("x-api-key"), Some("k-123"));
    assert_eq!(r.header("x-tenant"), Some("oa-prod"));
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(
        r.header("host"),
        Some(format!("127.0.0.1:{}", gw.port).as_str())
    );
    // The URL's credentials, percent-decoded: "AC@oa:s3cr:t".
    assert_eq!(r.header("authorization"), Some("Basic QUNAb2E6czNjcjp0"));
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_idempotency_key_and_then_sent() {
    let gw = FakeGateway::start(vec![
        Answer::Status(503, r#"{"error": "upstream  busy"}"#),
        Answer::Status(200, r#"{"message_id": 7781}"#),
    ])
    .await;
    let settings = sms_settings(&format!("http://127.0.0.1:{}/send", gw.port), "", "PT5S");
    let outbox = Outbox::new(gateway(&settings, None)).await;
    let ctx = outbox.queue_sms("+8613800138000", "请审批", "").await;

    assert_eq!(outbox.worker.run_once().await.unwrap(), 1);
    let row = outbox.row(&ctx).await;
    assert_eq!((row.status, row.attempts), (OutboxStatus::TempFailed, 1));
    assert_eq!(
        row.last_error,
        r#"SMS gateway answered 503 Service Unavailable: {"error": "upstream busy"}"#
    );
    assert!((START + 1_000..=START + 5_000).contains(&row.next_attempt_at));
    assert_eq!(
        outbox.worker.run_once().await.unwrap(),
        0,
        "not before its retry time"
    );

    outbox.clock.set(row.next_attempt_at);
    assert_eq!(outbox.worker.run_once().await.unwrap(), 1);
    let row = outbox.row(&ctx).await;
    assert_eq!(
        (row.status, row.attempts, row.last_error.as_str()),
        (OutboxStatus::Sent, 2, "200 OK, id 7781")
    );
    let requests = gw.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
    assert_eq!(
        requests[0].header("idempotency-key"),
        Some(row.message_id.as_str())
    );
    assert_eq!(
        requests[1].header("idempotency-key"),
        Some(row.message_id.as_str())
    );
    assert_eq!(outbox.store.next_mail_due().await.unwrap(), None);
}

#[tokio::test]
async fn a_400_fails_permanently_with_the_status_and_the_answer_and_queues_the_fallback() {
    let gw = FakeGateway::start(vec![Answer::Status(
        400,
        "{\"code\": 21211,\n \"message\": \"The 'To' number is not a valid phone number.\"}",
    )])
    .await;
    let settings = sms_settings(&format!("http://127.0.0.1:{}/send", gw.port), "", "PT5S");
    let outbox = Outbox::new(gateway(&settings, None)).await;
    let ctx = outbox
        .queue_sms("12345", "请审批", r#"{"next": "email"}"#)
        .await;

    assert_eq!(outbox.worker.run_once().await.unwrap(), 1);
    let row = outbox.row(&ctx).await;
    let error = "SMS gateway answered 400 Bad Request: {\"code\": 21211, \"message\": \
                 \"The 'To' number is not a valid phone number.\"}";
    assert_eq!(
        (row.status, row.attempts, row.last_error.as_str()),
        (OutboxStatus::PermFailed, 1, error)
    );
    assert_eq!(outbox.store.next_mail_due().await.unwrap(), None);
    assert_eq!(
        outbox.fallbacks().await,
        [(row.id.clone(), error.to_string())]
    );
    outbox.clock.set(START + 86_400_000);
    assert_eq!(outbox.worker.run_once().await.unwrap(), 0, "never retried");
    assert_eq!(gw.requests().len(), 1);
}

#[tokio::test]
async fn without_a_gateway_an_sms_fails_permanently_and_falls_back() {
    let none = HttpSmsGateway::from_settings(&SmsSettings::default(), None).unwrap();
    assert!(none.is_none(), "no sms.gateway_url, no gateway");
    let outbox = Outbox::new(none).await;
    let ctx = outbox
        .queue_sms("+8613800138000", "请审批", r#"{"next": "inbox"}"#)
        .await;

    assert_eq!(outbox.worker.run_once().await.unwrap(), 1);
    let row = outbox.row(&ctx).await;
    assert_eq!(
        (row.status, row.last_error.as_str()),
        (
            OutboxStatus::PermFailed,
            "no SMS gateway configured (sms.gateway_url)"
        )
    );
    assert_eq!(
        outbox.fallbacks().await,
        [(
            row.id.clone(),
            "no SMS gateway configured (sms.gateway_url)".to_string()
        )]
    );
}

#[tokio::test]
async fn a_gateway_that_does_not_answer_in_time_is_retried_later() {
    let gw = FakeGateway::start(vec![Answer::Silence]).await;
    let settings = sms_settings(&format!("http://127.0.0.1:{}/send", gw.port), "", "PT1S");
    let outbox = Outbox::new(gateway(&settings, None)).await;
    let ctx = outbox.queue_sms("+8613800138000", "请审批", "").await;

    assert_eq!(outbox.worker.run_once().await.unwrap(), 1);
    let row = outbox.row(&ctx).await;
    assert_eq!((row.status, row.attempts), (OutboxStatus::TempFailed, 1));
    assert_eq!(
        row.last_error,
        format!(
            "no answer from the SMS gateway http://127.0.0.1:{} within 1s (sms.timeout)",
            gw.port
        )
    );
    assert_eq!(gw.requests().len(), 1, "the request did arrive");
}

#[tokio::test]
async fn an_https_gateway_is_trusted_through_mail_ca_file() {
    let gw = FakeGateway::start_tls(vec![Answer::Status(200, r#"{"id": "tls-1"}"#)]).await;
    let settings = sms_settings(
        &format!("https://localhost:{}/send", gw.port),
        "Authorization: Bearer t0ken",
        "PT5S",
    );

    // Without the test CA the certificate is unknown: transient (TLS trouble, like SMTP's).
    let outbox = Outbox::new(gateway(&settings, None)).await;
    let ctx = outbox.queue_sms("+8613800138000", "请审批", "").await;
    assert_eq!(outbox.worker.run_once().await.unwrap(), 1);
    let row = outbox.row(&ctx).await;
    assert_eq!(row.status, OutboxStatus::TempFailed);
    assert!(
        row.last_error.contains("TLS handshake") && row.last_error.contains("UnknownIssuer"),
        "{}",
        row.last_error
    );
    assert!(gw.requests().is_empty());

    let ca = tls_dir().join("ca.pem");
    let outbox = Outbox::new(gateway(&settings, Some(&ca))).await;
    let ctx = outbox.queue_sms("+8613800138000", "请审批", "").await;
    assert_eq!(outbox.worker.run_once().await.unwrap(), 1);
    let row = outbox.row(&ctx).await;
    assert_eq!(
        (row.status, row.last_error.as_str()),
        (OutboxStatus::Sent, "200 OK, id tls-1")
    );
    let requests = gw.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("authorization"), Some("Bearer t0ken"));
    assert_eq!(
        requests[0].body,
        r#"{"to": "+8613800138000", "text": "请审批"}"#
    );
}

#[tokio::test]
async fn connections_are_kept_open_and_reused() {
    let gw = FakeGateway::start(vec![Answer::Status(200, "{}")]).await;
    let settings = sms_settings(&format!("http://127.0.0.1:{}/send", gw.port), "", "PT5S");
    let outbox = Outbox::new(gateway(&settings, None)).await;
    let mut contexts = Vec::new();
    for i in 0..6 {
        contexts.push(
            outbox
                .queue_sms(&format!("+861380013800{i}"), &format!("第 {i} 条"), "")
                .await,
        );
    }
    assert_eq!(outbox.worker.run_once().await.unwrap(), 6);
    for ctx in &contexts {
        assert_eq!(outbox.row(ctx).await.status, OutboxStatus::Sent);
    }
    let requests = gw.requests();
    let mut texts: Vec<&str> = requests.iter().map(|r| r.body.as_str()).collect();
    texts.sort();
    assert_eq!(texts.len(), 6);
    assert_eq!(texts[3], r#"{"to": "+8613800138003", "text": "第 3 条"}"#);
    // The worker sends two at a time: at most two connections for the six requests.
    let connections = requests.iter().map(|r| r.connection).max().unwrap();
    assert!(connections <= 2, "{connections} connections for 6 requests");
}
