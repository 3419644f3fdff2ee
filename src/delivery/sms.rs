//! SMS through an HTTP gateway: the third reminder channel (DESIGN §6).
//!
//! An SMS is an outbox row of kind [`OUTBOX_KIND`] (recipient = the phone number as stored on
//! the user, body = the UTF-8 text), so it is committed with the decision that caused it and
//! delivered by the same worker, lease and retry policy as mail. This module only turns one row
//! into one HTTP request and sorts the answer the way the mail transport sorts SMTP replies:
//! 2xx is sent; 408, 429, 5xx, timeouts and connection trouble are [`SendError::Transient`]
//! (the gateway or the network is having a bad moment); any other status is
//! [`SendError::Permanent`] (the gateway refused this message: retrying would only repeat it),
//! and a permanent failure is what lets a reminder fall back to its next channel.
//!
//! Gateways differ in everything but HTTP, so the request is configured rather than coded:
//! `POST sms.gateway_url` with `Content-Type: application/json`, the headers of `sms.headers`
//! and the body `sms.body_template` rendered with `to` and `text`. Each request carries the
//! row's message id as `Idempotency-Key`, so a retry after a lost answer is not charged twice
//! by gateways that honour it.
//!
//! The client is hyper's (already in the tree for tonic), HTTP/1.1 with pooled connections and
//! rustls for https, trusting the webpki roots, the system bundle and `mail.ca_file`. The URL may
//! carry credentials (`user:pass@` becomes Basic authentication, or a key in the query) and the
//! headers an API key: neither ever reaches a log line or an error; only scheme, host and port do.
use std::{
    fmt,
    future::Future,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt, Full};
use hyper::{
    HeaderMap, Method, Request, StatusCode, Uri,
    body::Bytes,
    header::{self, HeaderName, HeaderValue},
};
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{SendError, Transport};
use crate::config::SmsSettings;

/// The outbox `kind` of an SMS; every other kind is mail. Equal to `Channel::Sms.as_str()`.
pub const OUTBOX_KIND: crate::model::OutboxKind = crate::model::OutboxKind::Sms;

/// The error an SMS row fails with when no gateway is configured: permanent, so the reminder
/// falls back to its next channel at once instead of retrying for hours.
pub const NO_GATEWAY: &str = "no SMS gateway configured (sms.gateway_url)";

/// The longest `sms.timeout`: a send must end well within the outbox lease (a send starts with
/// at least 2 min of it left, see workers/outbox.rs), like the SMTP transport's 60 s.
const MAX_TIMEOUT_SECS: u64 = 60;
/// The most of an answer's body that is read: enough for any provider id or error message.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// How much of an error answer's body goes into the recorded error.
const EXCERPT_CHARS: usize = 200;
/// Gateways drop idle keep-alive connections after a while; closing ours first avoids sending a
/// request into a connection the other side is closing.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Headers that replyflow sets itself (or that belong to the connection, not the request).
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "idempotency-key",
];

// ------------------------------------------------------------------------------ configuration

/// The `sms.*` settings, parsed. Built once at start ([`GatewayConfig::from_settings`]), which
/// is also how the configuration is validated: one parser, so what starts is what sends.
#[derive(Clone)]
pub struct GatewayConfig {
    /// The URL without its credentials.
    uri: Uri,
    /// From the URL's `user:pass@`: `Basic ...`.
    basic_auth: Option<HeaderValue>,
    headers: HeaderMap,
    template: Arc<minijinja::Environment<'static>>,
    timeout: Duration,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header names only, no values; the URL without path and query (they may hold keys).
        f.debug_struct("GatewayConfig")
            .field("gateway", &Endpoint(&self.uri))
            .field("basic_auth", &self.basic_auth.is_some())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `scheme://host:port` of a URL: what logs and errors may show of the gateway.
struct Endpoint<'a>(&'a Uri);

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.0.scheme_str().unwrap_or("http");
        let host = self.0.host().unwrap_or("");
        write!(f, "{scheme}://{host}:{}", port_of(self.0))
    }
}

impl fmt::Debug for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn is_https(uri: &Uri) -> bool {
    uri.scheme_str() == Some("https")
}

fn port_of(uri: &Uri) -> u16 {
    uri.port_u16()
        .unwrap_or(if is_https(uri) { 443 } else { 80 })
}

const TEMPLATE_NAME: &str = "sms.body_template";

impl GatewayConfig {
    /// Parses and checks every `sms.*` key (also when no URL is set, so a broken template is
    /// found before someone turns SMS on); Ok(None) when `sms.gateway_url` is unset or empty.
    /// Errors name the key and never quote the URL or a header value.
    pub fn from_settings(settings: &SmsSettings) -> anyhow::Result<Option<Self>> {
        let timeout = parse_timeout(&settings.timeout)?;
        let headers = parse_headers(settings.headers.expose())?;
        let template = parse_template(&settings.body_template)?;
        let Some(url) = settings
            .gateway_url
            .as_ref()
            .map(|u| u.expose().trim())
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let (uri, basic_auth) = parse_url(url)?;
        if basic_auth.is_some() && headers.contains_key(header::AUTHORIZATION) {
            bail!(
                "sms.gateway_url has credentials and sms.headers an Authorization header: \
                 keep one of them"
            );
        }
        Ok(Some(Self {
            uri,
            basic_auth,
            headers,
            template: Arc::new(template),
            timeout,
        }))
    }

    /// The JSON body for one message.
    pub fn render_body(&self, to: &str, text: &str) -> Result<String, String> {
        render(&self.template, to, text)
    }
}

fn parse_timeout(text: &str) -> anyhow::Result<Duration> {
    let secs = crate::duration::Duration::parse(text.trim())
        .map_err(|e| anyhow::anyhow!("sms.timeout: {e}"))?
        .secs();
    if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
        bail!(
            "sms.timeout: must be from PT1S to PT{MAX_TIMEOUT_SECS}S (a send must end within \
             the outbox lease)"
        );
    }
    Ok(Duration::from_secs(secs))
}

/// `http(s)://[user:pass@]host[:port][/path][?query]` → the URL without credentials, and the
/// credentials as a Basic authorization value.
fn parse_url(url: &str) -> anyhow::Result<(Uri, Option<HeaderValue>)> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        bail!("sms.gateway_url: expected an http:// or https:// URL");
    }
    // The parser's messages never quote the input, so they may be shown.
    let uri: Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("sms.gateway_url: not a valid URL ({e})"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
        bail!("sms.gateway_url: expected an absolute http:// or https:// URL");
    };
    if authority.host().is_empty() {
        bail!("sms.gateway_url: no host in the URL");
    }
    if uri.port_u16() == Some(0) {
        bail!("sms.gateway_url: port 0 is not a port");
    }
    let basic_auth = match authority.as_str().rsplit_once('@') {
        None => None,
        Some((userinfo, _)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let decode = |part: &str, what: &str| {
                percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| anyhow::anyhow!("sms.gateway_url: the {what} is not UTF-8"))
            };
            let credentials = format!(
                "{}:{}",
                decode(user, "user name")?,
                decode(pass, "password")?
            );
            let mut value = HeaderValue::try_from(format!(
                "Basic {}",
                data_encoding::BASE64.encode(credentials.as_bytes())
            ))
            .context("sms.gateway_url: the credentials")?;
            value.set_sensitive(true);
            Some(value)
        }
    };
    let host = authority.host();
    let port = authority
        .port_u16()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let bare: Uri = format!("{scheme}://{host}{port}{path}")
        .parse()
        .map_err(|e| anyhow::anyhow!("sms.gateway_url: not a valid URL ({e})"))?;
    Ok((bare, basic_auth))
}

/// One `Name: value` per line; blank lines are skipped.
fn parse_headers(text: &str) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("sms.headers: line {}", number + 1);
        let Some((name, value)) = line.split_once(':') else {
            bail!("{}: expected `Name: value`", at());
        };
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| anyhow::anyhow!("{}: {:?} is not a header name", at(), name.trim()))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            bail!("{}: {name} is set by replyflow, not by sms.headers", at());
        }
        let mut value = HeaderValue::try_from(value.trim()).map_err(|_| {
            anyhow::anyhow!("{}: the value of {name} is not a valid header value", at())
        })?;
        // API keys live here: keep them out of any Debug output.
        value.set_sensitive(true);
        headers.append(name, value);
    }
    Ok(headers)
}

/// Parses the template, and renders it once with awkward values: a template that cannot
/// render, or renders something other than JSON for some text (`"{{ text }}"` with a quote in
/// the text), stops the start instead of failing every SMS.
fn parse_template(source: &str) -> anyhow::Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    // Escaping is the template's business (`tojson`); auto-escaping by name would guess.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    // A misspelt variable is an error at start, not an empty field at the gateway.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template_owned(TEMPLATE_NAME, source.to_string())
        .map_err(|e| anyhow::anyhow!("sms.body_template: {e}"))?;
    // Strict mode alone misses `{{ phone|tojson }}`: a filter turns the undefined into null.
    let template = env
        .get_template(TEMPLATE_NAME)
        .map_err(|e| anyhow::anyhow!("sms.body_template: {e}"))?;
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| name != "to" && name != "text")
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        bail!(
            "sms.body_template: unknown variable(s) {} (the template gets `to` and `text`)",
            unknown.join(", ")
        );
    }
    render(
        &env,
        "+86 138-0000-0000",
        "催办 \"quoted\" \\ line\nbreak </script>",
    )
    .map_err(|e| anyhow::anyhow!("sms.body_template: {e}"))?;
    Ok(env)
}

fn render(env: &minijinja::Environment<'static>, to: &str, text: &str) -> Result<String, String> {
    let template = env.get_template(TEMPLATE_NAME).map_err(|e| e.to_string())?;
    let body = template
        .render(minijinja::context! { to => to, text => text })
        .map_err(|e| format!("rendering failed: {e}"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&body)
        .map_err(|e| format!("did not render valid JSON ({e}); use {{{{ text|tojson }}}}"))?;
    Ok(body)
}

// ------------------------------------------------------------------------------- the client

/// The real gateway: see the module documentation.
pub struct HttpSmsGateway {
    config: GatewayConfig,
    client: Client<GatewayConnector, Full<Bytes>>,
}

impl fmt::Debug for HttpSmsGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSmsGateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpSmsGateway {
    /// The gateway of the `sms.*` settings, or None when `sms.gateway_url` is unset. `ca_file`
    /// (`mail.ca_file`) adds trusted roots for an https gateway.
    pub fn from_settings(
        settings: &SmsSettings,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Option<Arc<dyn Transport>>> {
        let Some(config) = GatewayConfig::from_settings(settings)? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Self::new(config, ca_file)?)))
    }

    pub fn new(config: GatewayConfig, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let tls = if is_https(&config.uri) {
            Some(tls_connector(ca_file)?)
        } else {
            None
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(GatewayConnector { tls });
        Ok(Self { config, client })
    }

    fn request(&self, body: String, idempotency_key: &str) -> Result<Request<Full<Bytes>>, String> {
        let key = HeaderValue::try_from(idempotency_key)
            .map_err(|_| "the message id is not a valid Idempotency-Key header".to_string())?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.config.uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(HeaderName::from_static("idempotency-key"), key);
        if let Some(auth) = &self.config.basic_auth {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        // A configured Accept replaces ours; the reserved headers cannot be configured.
        if self.config.headers.contains_key(header::ACCEPT) {
            headers.remove(header::ACCEPT);
        }
        for (name, value) in &self.config.headers {
            headers.append(name, value.clone());
        }
        Ok(request)
    }

    /// Status and at most MAX_ANSWER_BYTES of the body.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut answer = Vec::new();
        while answer.len() < MAX_ANSWER_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        answer.extend_from_slice(&data);
                    }
                }
                // The status decides; a body cut short only loses the excerpt or the id.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "SMS gateway answer cut short");
                    break;
                }
                None => break,
            }
        }
        answer.truncate(MAX_ANSWER_BYTES);
        Ok((status, answer))
    }
}

#[tonic::async_trait]
impl Transport for HttpSmsGateway {
    /// `from` is unused (the gateway knows its sender); `id` is the `Idempotency-Key`.
    async fn send(
        &self,
        _from: &str,
        to: &str,
        idempotency_key: &str,
        text: &[u8],
    ) -> Result<String, SendError> {
        let text = std::str::from_utf8(text)
            .map_err(|_| SendError::Permanent("the SMS text is not UTF-8".into()))?;
        if to.trim().is_empty() {
            return Err(SendError::Permanent(
                "no phone number to send the SMS to".into(),
            ));
        }
        let body = self
            .config
            .render_body(to, text)
            .map_err(|e| SendError::Permanent(format!("sms.body_template: {e}")))?;
        let request = self
            .request(body, idempotency_key)
            .map_err(SendError::Permanent)?;
        let endpoint = Endpoint(&self.config.uri);
        match tokio::time::timeout(self.config.timeout, self.exchange(request)).await {
            Ok(Ok((status, answer))) => classify(status, &answer),
            Ok(Err(error)) => Err(SendError::Transient(format!(
                "SMS gateway {endpoint}: {error}"
            ))),
            Err(_) => Err(SendError::Transient(format!(
                "no answer from the SMS gateway {endpoint} within {:?} (sms.timeout)",
                self.config.timeout
            ))),
        }
    }
}

/// What an answer means for the message: see the module documentation.
pub fn classify(status: StatusCode, body: &[u8]) -> Result<String, SendError> {
    let line = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    if status.is_success() {
        return Ok(match provider_id(body) {
            Some(id) => format!("{line}, id {id}"),
            None => line,
        });
    }
    let excerpt = excerpt(body);
    let error = if excerpt.is_empty() {
        format!("SMS gateway answered {line}")
    } else {
        format!("SMS gateway answered {line}: {excerpt}")
    };
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Err(SendError::Transient(error))
    } else {
        Err(SendError::Permanent(error))
    }
}

/// The gateway's id for the message, when its JSON answer has one at the top level.
fn provider_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["id", "message_id", "sid"]
        .iter()
        .find_map(|key| match value.get(key)? {
            serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .map(|id| id.chars().take(100).collect())
}

/// The start of a body on one line, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() > EXCERPT_CHARS {
        words = words.chars().take(EXCERPT_CHARS).collect::<String>() + "…";
    }
    words
}

/// `e` and its sources, joined, without repetitions ("client error (Connect): connecting to
/// ...: Connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// The TLS client for an https gateway, over [`super::trust::public_roots`].
fn tls_connector(ca_file: Option<&Path>) -> anyhow::Result<TlsConnector> {
    let roots = super::trust::public_roots(ca_file).context("sms.gateway_url (https)")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("sms.gateway_url: TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Opens the connections of the pool: TCP, and TLS on top for https.
#[derive(Clone)]
struct GatewayConnector {
    tls: Option<TlsConnector>,
}

type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for GatewayConnector {
    type Response = GatewayStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let port = port_of(&uri);
            let host = uri.host().ok_or("no host in the URL")?;
            let bare_host = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((bare_host, port))
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            tcp.set_nodelay(true)
                .map_err(|e| format!("TCP_NODELAY: {e}"))?;
            if !is_https(&uri) {
                return Ok(GatewayStream::Plain(TokioIo::new(tcp)));
            }
            let tls = tls.ok_or("an https URL without a TLS configuration")?;
            let server = ServerName::try_from(bare_host.to_string())
                .map_err(|_| format!("{bare_host:?} is not a valid TLS server name"))?;
            let stream = tls
                .connect(server, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Ok(GatewayStream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A pooled connection to the gateway.
enum GatewayStream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for GatewayStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for GatewayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for GatewayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(url: Option<&str>, headers: &str, template: Option<&str>) -> SmsSettings {
        let defaults = SmsSettings::default();
        SmsSettings {
            gateway_url: url.map(Secret::new),
            headers: Secret::new(headers),
            body_template: template.map_or(defaults.body_template, String::from),
            timeout: defaults.timeout,
        }
    }

    fn config(url: &str) -> GatewayConfig {
        GatewayConfig::from_settings(&settings(Some(url), "", None))
            .unwrap()
            .unwrap()
    }

    fn err(s: &SmsSettings) -> String {
        format!("{:#}", GatewayConfig::from_settings(s).unwrap_err())
    }

    #[test]
    fn the_kind_is_the_sms_channel() {
        assert_eq!(OUTBOX_KIND.as_str(), crate::model::Channel::Sms.as_str());
    }

    #[test]
    fn two_hundreds_are_sent_and_keep_the_provider_id() {
        assert_eq!(
            classify(StatusCode::OK, br#"{"id": "SM123", "status": "queued"}"#),
            Ok("200 OK, id SM123".into())
        );
        assert_eq!(
            classify(StatusCode::CREATED, br#"{"message_id": 42}"#),
            Ok("201 Created, id 42".into())
        );
        assert_eq!(
            classify(StatusCode::ACCEPTED, br#"{"sid": "SMabc"}"#),
            Ok("202 Accepted, id SMabc".into())
        );
        // No id, not JSON, or an empty id: the status alone.
        assert_eq!(classify(StatusCode::OK, b"OK"), Ok("200 OK".into()));
        assert_eq!(
            classify(StatusCode::NO_CONTENT, b""),
            Ok("204 No Content".into())
        );
        assert_eq!(
            classify(StatusCode::OK, br#"{"id": ""}"#),
            Ok("200 OK".into())
        );
        assert_eq!(
            classify(StatusCode::OK, br#"{"data": {"id": "nested"}}"#),
            Ok("200 OK".into())
        );
    }

    #[test]
    fn timeouts_rate_limits_and_server_errors_are_transient() {
        for code in [408, 429, 500, 502, 503, 504, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(status, b"busy"), Err(SendError::Transient(e)) if e.contains(&code.to_string()) && e.ends_with(": busy")),
                "{code}"
            );
        }
    }

    #[test]
    fn other_statuses_are_permanent_with_an_excerpt() {
        for code in [301, 400, 401, 403, 404, 409, 413, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(status, b"{}"), Err(SendError::Permanent(_))),
                "{code}"
            );
        }
        assert_eq!(
            classify(
                StatusCode::BAD_REQUEST,
                b"{\"error\":\n   \"invalid phone number\"}"
            ),
            Err(SendError::Permanent(
                "SMS gateway answered 400 Bad Request: {\"error\": \"invalid phone number\"}"
                    .into()
            ))
        );
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, b""),
            Err(SendError::Permanent(
                "SMS gateway answered 401 Unauthorized".into()
            ))
        );
        let long = "x".repeat(5_000);
        let Err(SendError::Permanent(e)) = classify(StatusCode::BAD_REQUEST, long.as_bytes())
        else {
            panic!("400 is permanent");
        };
        assert!(e.ends_with('…') && e.len() < 300, "{e}");
    }

    #[test]
    fn the_default_template_renders_json_for_any_text() {
        let c = config("http://127.0.0.1:9/send");
        let body = c
            .render_body("+8613800000000", "请审批 \"EXP-001\"\n\\ </x>")
            .unwrap();
        assert_eq!(
            body,
            // tojson escapes <, > and & too, which JSON readers undo.
            r#"{"to": "+8613800000000", "text": "请审批 \"EXP-001\"\n\\ \u003c/x\u003e"}"#
        );
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["to"], "+8613800000000");
        assert_eq!(value["text"], "请审批 \"EXP-001\"\n\\ </x>");
    }

    #[test]
    fn a_custom_template_shapes_the_body() {
        let s = settings(
            Some("https://sms.example.com/v2/messages"),
            "",
            Some(
                r#"{"messages": [{"destinations": [{"to": {{ to|tojson }}}], "text": {{ text|tojson }}, "from": "OA"}]}"#,
            ),
        );
        let c = GatewayConfig::from_settings(&s).unwrap().unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&c.render_body("+1 555 0100", "hi").unwrap()).unwrap();
        assert_eq!(value["messages"][0]["destinations"][0]["to"], "+1 555 0100");
        assert_eq!(value["messages"][0]["text"], "hi");
    }

    #[test]
    fn templates_that_cannot_make_json_are_refused() {
        let e = err(&settings(None, "", Some(r#"{"to": {{ to|tojson }"#)));
        assert!(e.starts_with("sms.body_template:"), "{e}");
        // Unquoted text breaks JSON as soon as the text has a quote or a line break.
        let e = err(&settings(
            None,
            "",
            Some(r#"{"to": "{{ to }}", "text": "{{ text }}"}"#),
        ));
        assert!(
            e.contains("sms.body_template") && e.contains("tojson"),
            "{e}"
        );
        let e = err(&settings(None, "", Some(r#"{"to": {{ phone|tojson }}}"#)));
        assert_eq!(
            e,
            "sms.body_template: unknown variable(s) phone (the template gets `to` and `text`)"
        );
        // Also without a filter.
        let e = err(&settings(None, "", Some(r#"{"to": "{{ number }}"}"#)));
        assert!(e.contains("number"), "{e}");
    }

    #[test]
    fn headers_are_name_value_lines() {
        let c = GatewayConfig::from_settings(&settings(
            Some("http://127.0.0.1:9/"),
            "X-Api-Key: k3y:with:colons\r\n\n  Accept: application/vnd.sms+json \nX-Tag: a\nX-Tag: b",
            None,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(c.headers["x-api-key"], "k3y:with:colons");
        assert_eq!(c.headers["accept"], "application/vnd.sms+json");
        assert_eq!(c.headers.get_all("x-tag").iter().count(), 2);
        let debug = format!("{c:?}");
        assert!(!debug.contains("k3y"), "{debug}");

        let e = err(&settings(None, "X-Api-Key k3y", None));
        assert_eq!(e, "sms.headers: line 1: expected `Name: value`");
        assert!(!e.contains("k3y"));
        let e = err(&settings(None, "X-Ok: 1\nBad Name: v", None));
        assert!(e.starts_with("sms.headers: line 2:"), "{e}");
        let e = err(&settings(None, "Content-Type: text/plain", None));
        assert!(e.contains("content-type is set by replyflow"), "{e}");
        let e = err(&settings(None, "Idempotency-Key: x", None));
        assert!(e.contains("idempotency-key"), "{e}");
        let e = err(&settings(None, "X-Secret: \u{7}s3cret", None));
        assert!(
            e.contains("not a valid header value") && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn urls_must_be_http_and_are_never_quoted() {
        for bad in [
            "ftp://user:hunter2@h/x",
            "smtp://hunter2@h",
            "hunter2.example.com/send",
            "http://",
            "http://user:hunter2@/send",
            "https://hunter2 .example.com/",
            "http://h:0/hunter2",
        ] {
            let e = err(&settings(Some(bad), "", None));
            assert!(e.starts_with("sms.gateway_url:"), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{bad}: {e}");
        }
        assert!(err(&settings(Some("ftp://h/"), "", None)).contains("http:// or https://"));
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth() {
        let c = config("https://AC1%40x:p%3Ass@sms.example.com:8443/v1/send?key=abc");
        assert_eq!(
            c.uri.to_string(),
            "https://sms.example.com:8443/v1/send?key=abc"
        );
        // "AC1@x:p:ss" in base64.
        assert_eq!(
            c.basic_auth.as_ref().unwrap(),
            &format!("Basic {}", data_encoding::BASE64.encode(b"AC1@x:p:ss"))
        );
        let debug = format!("{c:?}");
        assert!(
            debug.contains("https://sms.example.com:8443")
                && !debug.contains("p%3Ass")
                && !debug.contains("key=abc"),
            "{debug}"
        );
        let e = err(&settings(
            Some("https://u:p@sms.example.com/"),
            "Authorization: Bearer t",
            None,
        ));
        assert!(e.contains("keep one"), "{e}");
        assert_eq!(
            config("http://[::1]:8080").uri.to_string(),
            "http://[::1]:8080/"
        );
        assert_eq!(
            Endpoint(&config("http://h.test/x").uri).to_string(),
            "http://h.test:80"
        );
    }

    #[test]
    fn the_timeout_is_an_iso_duration_of_one_to_sixty_seconds() {
        let mut s = settings(Some("http://h/"), "", None);
        assert_eq!(
            GatewayConfig::from_settings(&s).unwrap().unwrap().timeout,
            Duration::from_secs(10)
        );
        s.timeout = "PT1S".into();
        assert_eq!(
            GatewayConfig::from_settings(&s).unwrap().unwrap().timeout,
            Duration::from_secs(1)
        );
        for bad in ["PT0S", "10", "PT2M", "soon"] {
            s.timeout = bad.into();
            assert!(err(&s).starts_with("sms.timeout:"), "{bad}: {}", err(&s));
        }
    }

    #[test]
    fn no_url_means_no_gateway_but_the_rest_is_still_checked() {
        assert!(
            GatewayConfig::from_settings(&SmsSettings::default())
                .unwrap()
                .is_none()
        );
        assert!(
            GatewayConfig::from_settings(&settings(Some("  "), "", None))
                .unwrap()
                .is_none()
        );
        assert!(err(&settings(None, "nonsense", None)).starts_with("sms.headers"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_does_not_show_the_url() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let gateway = HttpSmsGateway::new(
            config(&format!(
                "http://u:hunter2@127.0.0.1:{port}/send?token=t0ken"
            )),
            None,
        )
        .unwrap();
        let e = gateway.send("", "+8613800000000", "id-1", b"hi").await;
        let Err(SendError::Transient(e)) = e else {
            panic!("expected a transient failure, got {e:?}");
        };
        assert!(
            e.contains("refused") && e.contains(&format!("127.0.0.1:{port}")),
            "{e}"
        );
        assert!(!e.contains("hunter2") && !e.contains("t0ken"), "{e}");
    }

    #[tokio::test]
    async fn an_empty_phone_number_fails_permanently_without_a_request() {
        let gateway = HttpSmsGateway::new(config("http://127.0.0.1:9/"), None).unwrap();
        assert_eq!(
            gateway.send("", " ", "id-1", b"hi").await,
            Err(SendError::Permanent(
                "no phone number to send the SMS to".into()
            ))
        );
    }

    #[tokio::test]
    async fn a_text_that_is_not_utf8_fails_permanently_without_a_request() {
        let gateway = HttpSmsGateway::new(config("http://127.0.0.1:9/"), None).unwrap();
        assert_eq!(
            gateway.send("", "+15550199", "id-1", &[0xff, 0xfe]).await,
            Err(SendError::Permanent("the SMS text is not UTF-8".into()))
        );
    }

    /// The settings as `replyflow serve` reads them (file and environment), built here: errors
    /// name the key and never show a secret.
    #[test]
    fn settings_from_the_environment_are_checked_without_printing_secrets() {
        let load = |pairs: &[(&str, &str)]| {
            let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            let settings = crate::config::Settings::load_from(None, env).unwrap();
            GatewayConfig::from_settings(&settings.sms)
        };
        let ok = load(&[
            (
                "REPLYFLOW_SMS_GATEWAY_URL",
                "https://u:hunter2@sms.example.com/send",
            ),
            ("REPLYFLOW_SMS_HEADERS", "X-Api-Key: k3y\nX-Tenant: oa"),
            ("REPLYFLOW_SMS_TIMEOUT", "PT5S"),
        ])
        .unwrap()
        .unwrap();
        let shown = format!("{ok:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("k3y"),
            "{shown}"
        );
        for (key, value, expected) in [
            (
                "REPLYFLOW_SMS_GATEWAY_URL",
                "ftp://u:hunter2@h/",
                "sms.gateway_url",
            ),
            (
                "REPLYFLOW_SMS_HEADERS",
                "X-Api-Key hunter2",
                "sms.headers: line 1",
            ),
            ("REPLYFLOW_SMS_BODY_TEMPLATE", "{{ to", "sms.body_template"),
            ("REPLYFLOW_SMS_TIMEOUT", "PT0S", "sms.timeout"),
            ("REPLYFLOW_SMS_TIMEOUT", "ten seconds", "sms.timeout"),
        ] {
            let text = format!("{:#}", load(&[(key, value)]).unwrap_err());
            assert!(text.starts_with(expected), "{key}={value}: {text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
