//! Typed settings, layered: embedded defaults < TOML file (`--config`) < `REPLYFLOW_*` environment
//! variables < command-line flags. Every key `a.b` is also `REPLYFLOW_A_B`; the list of keys is
//! explicit so that a misspelt variable is reported instead of silently ignored. Secrets are
//! wrapped so that they never reach a log line.
//!
//! This module holds plain values and checks what needs no other module. The keys of an edge
//! (`mail.outbound`, `mail.inbound`, `mail.require_auth`, `sms.*`) are parsed by the edge that
//! uses them ([`crate::delivery`], [`crate::mail`]) when the server builds it, before the database
//! is opened ([`crate::app`]), so that one parser decides what starts and what runs.
use std::{fmt, path::Path};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Every configuration key that a file or the environment may set.
pub const KEYS: &[&str] = &[
    "server.listen",
    "server.tls_cert",
    "server.tls_key",
    "server.tls_client_ca",
    "database.url",
    "database.max_connections",
    "database.synchronous",
    "mail.from",
    "mail.reply_address",
    "mail.outbound",
    "mail.inbound",
    "mail.ca_file",
    "mail.processed_folder",
    "mail.templates_dir",
    "mail.valid_for",
    "mail.resend_interval",
    "mail.pool_size",
    "mail.max_attempts",
    "mail.authserv_id",
    "mail.require_auth",
    "mail.answers_per_hour",
    "mail.answers_per_sender_per_hour",
    "mail.quarantine_after",
    "security.token_secret",
    "security.token_secrets",
    "security.auth",
    "security.admins",
    "security.allow_dev_on_network",
    "security.jwt_hs256_secret",
    "security.jwt_public_keys",
    "security.jwt_jwks_file",
    "security.jwt_issuer",
    "security.jwt_audience",
    "security.jwt_roles_claim",
    "security.api_keys",
    "security.roles.admin",
    "security.roles.deployer",
    "security.roles.directory",
    "security.roles.mail",
    "security.roles.act_as",
    "reminders.schedule",
    "reminders.batch_size",
    "reminders.manual_interval",
    "sms.gateway_url",
    "sms.headers",
    "sms.body_template",
    "sms.timeout",
    "limits.max_steps",
];

const BOOLEAN_KEYS: &[&str] = &["security.allow_dev_on_network"];

const INTEGER_KEYS: &[&str] = &[
    "database.max_connections",
    "mail.pool_size",
    "mail.max_attempts",
    "mail.answers_per_hour",
    "mail.answers_per_sender_per_hour",
    "mail.quarantine_after",
    "reminders.batch_size",
    "limits.max_steps",
];

/// Keys whose environment variable is a comma-separated list (a TOML array in a file).
const LIST_KEYS: &[&str] = &["security.token_secrets"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub mail: MailSettings,
    pub security: SecuritySettings,
    pub reminders: ReminderSettings,
    pub sms: SmsSettings,
    pub limits: LimitSettings,
}

/// What the engine may spend on one transition (DESIGN §12).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Flows one transition may follow before the instance fails.
    pub max_steps: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self { max_steps: 10_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReminderSettings {
    /// When the reminder scheduler ticks: a six-field cron expression, seconds first.
    pub schedule: String,
    /// Due reminders fired per transaction.
    pub batch_size: u32,
    /// The least time between two manual reminders (RemindNow) of one task.
    pub manual_interval: String,
}

impl Default for ReminderSettings {
    fn default() -> Self {
        Self {
            schedule: "* * * * * *".into(),
            batch_size: 500,
            manual_interval: "PT10M".into(),
        }
    }
}

/// The HTTP gateway that SMS reminders go through; no URL = no SMS channel (an SMS reminder then
/// falls back to the next channel of its type).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsSettings {
    /// `http(s)://...`; may carry credentials, so it is never logged.
    pub gateway_url: Option<Secret>,
    /// Extra request headers, one `Name: value` per line (e.g. an API key).
    pub headers: Secret,
    /// The JSON request body, a template with `to` (the phone number) and `text`.
    pub body_template: String,
    /// How long one request may take (ISO 8601 duration).
    pub timeout: String,
}

impl Default for SmsSettings {
    fn default() -> Self {
        Self {
            gateway_url: None,
            headers: Secret::new(""),
            body_template: r#"{"to": {{ to|tojson }}, "text": {{ text|tojson }}}"#.into(),
            timeout: "PT10S".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    /// PEM certificate chain (the server's certificate first) for TLS on the gRPC listener;
    /// together with `tls_key`. Unset: plaintext (for a loopback listener or a TLS proxy).
    pub tls_cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate of `tls_cert`.
    pub tls_key: Option<String>,
    /// PEM CA certificate(s): when set, every client must present a certificate they signed
    /// (mutual TLS). Needs `tls_cert` and `tls_key`.
    pub tls_client_ca: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://FILE` or `postgres://...`.
    pub url: Secret,
    pub max_connections: u32,
    /// SQLite only: `full` (every commit is fsynced, the default) or `normal` (WAL checkpoints
    /// only: a power cut may lose the last commits, never corrupt the file).
    pub synchronous: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    pub from: String,
    pub reply_address: Option<String>,
    pub outbound: Secret,
    pub inbound: Secret,
    pub ca_file: Option<String>,
    pub processed_folder: String,
    /// A directory whose files override the embedded mail templates of the same name.
    pub templates_dir: Option<String>,
    /// How long an approval mail can be answered when the task sets no `replyflow:validFor`.
    pub valid_for: String,
    /// The least time between two approval mails for one task (ResendApprovalEmail).
    pub resend_interval: String,
    /// SMTP connections kept open by the outbox sender.
    pub pool_size: u32,
    /// Delivery attempts before a mail is given up as permanently failed.
    pub max_attempts: u32,
    /// The authserv-id of the receiving MTA whose `Authentication-Results` headers are trusted
    /// (others are ignored: anyone can write such a header).
    pub authserv_id: Option<String>,
    /// `none`, `dkim` or `dmarc`: what a reply must pass, per the trusted Authentication-Results.
    pub require_auth: String,
    /// Answers to received mail queued per hour at most, all senders together: a flood of
    /// forged mail gets silence once this is spent (0 = no answers at all).
    pub answers_per_hour: u32,
    /// Answers per sender address and hour at most.
    pub answers_per_sender_per_hour: u32,
    /// A received mail whose ingestion fails (an error, not a verdict) this many times is
    /// recorded as quarantined and moved out of the way.
    pub quarantine_after: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    /// The single-secret spelling of `token_secrets`.
    pub token_secret: Option<Secret>,
    /// Reply-token secrets for rotation: the first signs new tokens, the others still verify
    /// the tokens they signed. Never stored in the database.
    pub token_secrets: Vec<Secret>,
    /// `dev`: the caller's identity is taken from `x-user-id` metadata, unchecked (loopback only
    /// unless `allow_dev_on_network`); `jwt`: `authorization: Bearer <JWT>`, verified.
    pub auth: String,
    /// User ids that hold every role, comma-separated.
    pub admins: String,
    /// Lets `dev` mode listen on a non-loopback address (anyone who can connect is anyone).
    pub allow_dev_on_network: bool,
    /// HS256 secret of the identity provider's tokens.
    pub jwt_hs256_secret: Option<Secret>,
    /// A PEM file of RS256/ES256 public keys (one or more `PUBLIC KEY` blocks).
    pub jwt_public_keys: Option<String>,
    /// A JWKS file (the provider's `jwks.json`), for RS256/ES256 keys chosen by `kid`.
    pub jwt_jwks_file: Option<String>,
    /// Required `iss` of every token, when set.
    pub jwt_issuer: Option<String>,
    /// Required `aud` of every token, when set.
    pub jwt_audience: Option<String>,
    /// The claim holding the caller's roles (a list of strings, or one space-separated string).
    pub jwt_roles_claim: String,
    /// Service API keys: `{id, sha256, roles}` each; in the environment as a JSON array.
    pub api_keys: ApiKeysSetting,
    /// User ids (comma-separated) that hold each role, in every auth mode.
    pub roles: RoleSettings,
}

/// One API key: the SHA-256 (lower-case hex) of the key the service sends in `x-api-key`; the
/// key itself is never configured, so a leaked configuration leaks no credential.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySetting {
    pub id: String,
    pub sha256: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `security.api_keys`: an array of tables in TOML, a JSON array of the same in the environment.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(untagged)]
pub enum ApiKeysSetting {
    #[default]
    None,
    List(Vec<ApiKeySetting>),
    Json(String),
}

impl ApiKeysSetting {
    pub fn keys(&self) -> anyhow::Result<Vec<ApiKeySetting>> {
        match self {
            ApiKeysSetting::None => Ok(Vec::new()),
            ApiKeysSetting::List(keys) => Ok(keys.clone()),
            ApiKeysSetting::Json(text) if text.trim().is_empty() => Ok(Vec::new()),
            ApiKeysSetting::Json(text) => serde_json::from_str(text).context(
                "security.api_keys: expected a JSON array of {\"id\", \"sha256\", \"roles\"}",
            ),
        }
    }
}

/// `security.roles.<role>`: comma-separated user ids per role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleSettings {
    pub admin: String,
    pub deployer: String,
    pub directory: String,
    pub mail: String,
    pub act_as: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://replyflow.db"),
            max_connections: 8,
            synchronous: "full".into(),
        }
    }
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            from: "replyflow <approvals@localhost>".into(),
            reply_address: None,
            outbound: Secret::new("file:mail/outbox"),
            inbound: Secret::new("maildir:mail/inbox"),
            ca_file: None,
            processed_folder: "replyflow-processed".into(),
            templates_dir: None,
            valid_for: "P7D".into(),
            resend_interval: "PT5M".into(),
            pool_size: 4,
            max_attempts: 12,
            authserv_id: None,
            require_auth: "none".into(),
            answers_per_hour: 200,
            answers_per_sender_per_hour: 5,
            quarantine_after: 3,
        }
    }
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            token_secret: None,
            token_secrets: Vec::new(),
            auth: "dev".into(),
            admins: String::new(),
            allow_dev_on_network: false,
            jwt_hs256_secret: None,
            jwt_public_keys: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_roles_claim: "roles".into(),
            api_keys: ApiKeysSetting::None,
            roles: RoleSettings::default(),
        }
    }
}

impl SecuritySettings {
    /// The reply-token secrets, current first: `token_secrets`, or `token_secret` alone.
    pub fn reply_token_secrets(&self) -> Vec<Secret> {
        if self.token_secrets.is_empty() {
            self.token_secret.iter().cloned().collect()
        } else {
            self.token_secrets.clone()
        }
    }
}

/// Shorter secrets are refused: a reply token is only as strong as its key.
const MIN_TOKEN_SECRET_BYTES: usize = 16;

impl Settings {
    /// Reads the optional file, then the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_from(file, std::env::vars())
    }

    /// Same as [`Settings::load`] with an explicit environment, for tests.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("REPLYFLOW_") else {
                continue;
            };
            let Some(key) = KEYS
                .iter()
                .find(|key| key.replace('.', "_").eq_ignore_ascii_case(rest))
            else {
                // Test harness and tooling variables share the prefix; only warn.
                tracing::debug!(variable = %name, "not a configuration key");
                continue;
            };
            set_key(&mut table, key, &value)?;
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            bail!(
                "database.url: expected sqlite://FILE or postgres://..., got a {} URL",
                scheme(url)
            );
        }
        if !matches!(self.database.synchronous.as_str(), "full" | "normal") {
            bail!("database.synchronous: expected full or normal");
        }
        // The files themselves are read and checked at start (api::tls::ServerTls::load), with
        // errors that name the key.
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => {
                bail!("server.tls_cert is set but server.tls_key is not: set both or neither")
            }
            (None, Some(_)) => {
                bail!("server.tls_key is set but server.tls_cert is not: set both or neither")
            }
            (None, None) if self.server.tls_client_ca.is_some() => {
                bail!("server.tls_client_ca (mutual TLS) needs server.tls_cert and server.tls_key")
            }
            _ => {}
        }
        if self.database.max_connections == 0 {
            bail!("database.max_connections: must be at least 1");
        }
        for (key, value) in [
            ("mail.valid_for", &self.mail.valid_for),
            ("mail.resend_interval", &self.mail.resend_interval),
            ("reminders.manual_interval", &self.reminders.manual_interval),
        ] {
            crate::duration::Duration::parse(value).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        }
        // The default validity obeys the bounds of `replyflow:validFor`.
        crate::engine::definition::check_valid_for(&self.mail.valid_for)
            .map_err(|e| anyhow::anyhow!("mail.valid_for: {e}"))?;
        if !(1..=1_000_000).contains(&self.limits.max_steps) {
            bail!("limits.max_steps: must be 1 to 1000000");
        }
        if self.mail.pool_size == 0 || self.mail.max_attempts == 0 {
            bail!("mail.pool_size and mail.max_attempts must be at least 1");
        }
        if self.mail.quarantine_after == 0 {
            bail!("mail.quarantine_after: must be at least 1");
        }
        if self.security.token_secret.is_some() && !self.security.token_secrets.is_empty() {
            bail!(
                "security.token_secret and security.token_secrets are both set: use token_secrets alone (current first)"
            );
        }
        for (i, secret) in self.security.reply_token_secrets().iter().enumerate() {
            let key = if self.security.token_secrets.is_empty() {
                "security.token_secret".to_string()
            } else {
                format!("security.token_secrets[{}]", i + 1)
            };
            if secret.expose().len() < MIN_TOKEN_SECRET_BYTES {
                bail!("{key}: at least {MIN_TOKEN_SECRET_BYTES} bytes");
            }
        }
        // security.*: checked by the authenticator's own constructor (keys read, PEM parsed),
        // so that what passes here is what verifies.
        crate::api::auth::Authenticator::from_settings(&self.security, &self.server.listen)?;
        Ok(())
    }
}

fn scheme(url: &str) -> &str {
    url.split(':').next().unwrap_or("")
}

fn set_key(table: &mut toml::Table, key: &str, value: &str) -> anyhow::Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(field) = parts.pop() else {
        bail!("configuration keys have two or three parts");
    };
    let mut section_table = table;
    for section in parts {
        let entry = section_table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(inner) = entry else {
            bail!("{section} must be a table");
        };
        section_table = inner;
    }
    let value = if BOOLEAN_KEYS.contains(&key) {
        let flag: bool = value
            .parse()
            .with_context(|| format!("{key}: expected true or false, got {value:?}"))?;
        toml::Value::Boolean(flag)
    } else if LIST_KEYS.contains(&key) {
        toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| toml::Value::String(v.to_string()))
                .collect(),
        )
    } else if INTEGER_KEYS.contains(&key) {
        let number: i64 = value
            .parse()
            .with_context(|| format!("{key}: expected an integer, got {value:?}"))?;
        toml::Value::Integer(number)
    } else {
        toml::Value::String(value.to_string())
    };
    section_table.insert(field.to_string(), value);
    Ok(())
}

/// A value that must never be printed: database URLs carry passwords, mail URLs too.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_design() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:50051");
        assert_eq!(s.database.url.expose(), "sqlite://replyflow.db");
        assert_eq!(s.mail.outbound.expose(), "file:mail/outbox");
        assert_eq!(s.mail.inbound.expose(), "maildir:mail/inbox");
        assert_eq!(s.mail.processed_folder, "replyflow-processed");
        assert_eq!(s.limits.max_steps, 10_000);
    }

    #[test]
    fn the_default_valid_for_has_the_bounds_of_replyflow_valid_for() {
        for bad in ["PT0S", "P99999999999D"] {
            let error =
                Settings::load_from(None, env(&[("REPLYFLOW_MAIL_VALID_FOR", bad)])).unwrap_err();
            assert!(
                format!("{error:#}").contains("mail.valid_for"),
                "{bad}: {error:#}"
            );
        }
    }

    #[test]
    fn a_bad_duration_is_refused_at_load_naming_the_key() {
        for (variable, key) in [
            ("REPLYFLOW_MAIL_RESEND_INTERVAL", "mail.resend_interval"),
            (
                "REPLYFLOW_REMINDERS_MANUAL_INTERVAL",
                "reminders.manual_interval",
            ),
        ] {
            let error = Settings::load_from(None, env(&[(variable, "10 minutes")])).unwrap_err();
            assert!(format!("{error:#}").contains(key), "{key}: {error:#}");
        }
    }

    #[test]
    fn max_steps_is_checked_naming_the_key() {
        let s = Settings::load_from(None, env(&[("REPLYFLOW_LIMITS_MAX_STEPS", "50")])).unwrap();
        assert_eq!(s.limits.max_steps, 50);
        for bad in ["0", "-3", "many"] {
            let error =
                Settings::load_from(None, env(&[("REPLYFLOW_LIMITS_MAX_STEPS", bad)])).unwrap_err();
            assert!(
                format!("{error:#}").contains("max_steps"),
                "{bad}: {error:#}"
            );
        }
    }

    #[test]
    fn environment_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rf.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:1\"\n[mail]\nreply_address = \"a@b\"\n",
        )
        .unwrap();
        let s = Settings::load_from(
            Some(&path),
            env(&[
                ("REPLYFLOW_SERVER_LISTEN", "127.0.0.1:2"),
                ("REPLYFLOW_DATABASE_URL", "postgres://x@localhost/db"),
                ("REPLYFLOW_DATABASE_MAX_CONNECTIONS", "3"),
                ("REPLYFLOW_TEST_THING", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:2");
        assert_eq!(s.database.url.expose(), "postgres://x@localhost/db");
        assert_eq!(s.database.max_connections, 3);
        assert_eq!(s.mail.reply_address.as_deref(), Some("a@b"));
    }

    #[test]
    fn bad_values_are_named() {
        let err =
            Settings::load_from(None, env(&[("REPLYFLOW_DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(err.to_string().contains("database.url"), "{err}");
        let err = Settings::load_from(None, env(&[("REPLYFLOW_DATABASE_MAX_CONNECTIONS", "many")]))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("database.max_connections"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rf.toml");
        std::fs::write(&path, "[server]\nlisen = \"x\"\n").unwrap();
        let err = Settings::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
    }

    #[test]
    fn sms_settings_are_read_without_printing_secrets() {
        // Checked by the gateway's own parser when the server builds it (delivery/sms.rs).
        let s = Settings::load_from(
            None,
            env(&[
                (
                    "REPLYFLOW_SMS_GATEWAY_URL",
                    "https://u:hunter2@sms.example.com/send",
                ),
                ("REPLYFLOW_SMS_HEADERS", "X-Api-Key: k3y\nX-Tenant: oa"),
                ("REPLYFLOW_SMS_TIMEOUT", "PT5S"),
            ]),
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2") && !format!("{s:?}").contains("k3y"));
    }

    #[test]
    fn token_secrets_are_a_rotation_list_and_never_printed() {
        let s = Settings::load_from(
            None,
            env(&[(
                "REPLYFLOW_SECURITY_TOKEN_SECRETS",
                "new-secret-0123456789, old-secret-0123456789",
            )]),
        )
        .unwrap();
        let secrets = s.security.reply_token_secrets();
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets[0].expose(), "new-secret-0123456789");
        assert!(!format!("{s:?}").contains("new-secret"));
        let err = Settings::load_from(
            None,
            env(&[
                ("REPLYFLOW_SECURITY_TOKEN_SECRETS", "new-secret-0123456789"),
                ("REPLYFLOW_SECURITY_TOKEN_SECRET", "old-secret-0123456789"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("security.token_secret"),
            "{err}"
        );
        let err = Settings::load_from(
            None,
            env(&[(
                "REPLYFLOW_SECURITY_TOKEN_SECRETS",
                "long-enough-secret-1,short",
            )]),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("security.token_secrets[2]"),
            "{err}"
        );
        assert!(!err.to_string().contains("short"), "{err}");
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        for (pairs, expected) in [
            (
                vec![("REPLYFLOW_SERVER_TLS_CERT", "c.pem")],
                "server.tls_cert is set but server.tls_key is not",
            ),
            (
                vec![("REPLYFLOW_SERVER_TLS_KEY", "k.pem")],
                "server.tls_key is set but server.tls_cert is not",
            ),
            (
                vec![("REPLYFLOW_SERVER_TLS_CLIENT_CA", "ca.pem")],
                "server.tls_client_ca",
            ),
        ] {
            let err = Settings::load_from(None, env(&pairs)).unwrap_err();
            assert!(
                format!("{err:#}").starts_with(expected),
                "{pairs:?}: {err:#}"
            );
        }
        let s = Settings::load_from(
            None,
            env(&[
                ("REPLYFLOW_SERVER_TLS_CERT", "c.pem"),
                ("REPLYFLOW_SERVER_TLS_KEY", "k.pem"),
                ("REPLYFLOW_SERVER_TLS_CLIENT_CA", "ca.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.tls_cert.as_deref(), Some("c.pem"));
        assert_eq!(s.server.tls_key.as_deref(), Some("k.pem"));
        assert_eq!(s.server.tls_client_ca.as_deref(), Some("ca.pem"));
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Secret::new("postgres://user:hunter2@db/x");
        assert_eq!(format!("{s:?}"), "[redacted]");
    }
}
