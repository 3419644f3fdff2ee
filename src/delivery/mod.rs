//! The outbound edge: everything that takes one outbox row out of the process, behind one
//! [`Transport`] trait, so the outbox worker treats a mail and an SMS alike (claim, lease,
//! retry, record) and only picks the transport by the row's kind.
//!
//! - [`smtp`]: `smtp://` and `smtps://`, lettre's SMTP client over rustls (STARTTLS or implicit
//!   TLS, an optional extra CA file, optional AUTH) in a pool of connections that are kept open
//!   and reused, which is what makes the outbox fast (a TLS handshake per mail would cost more
//!   than the mail). Timeouts (connect 30 s, one mail 60 s) stay far below the outbox lease, so a
//!   slow server cannot make two workers send the same mail.
//! - [`file`]: `file:DIR`, one `.eml` file per mail; the zero-configuration default.
//! - [`sms`]: an HTTP SMS gateway, the third reminder channel.
//! - [`outbound`]: the `mail.outbound` URL that picks between SMTP and files.
//! - [`trust`]: the one home of TLS roots (system bundle, `mail.ca_file`, pinned self-signed
//!   certificates), used by SMTP, the SMS gateway and the IMAP reader alike.
//!
//! Every failure is sorted into [`SendError::Transient`] (retry later: 4xx replies, refused or
//! reset connections, timeouts, TLS trouble, an SMTP server we cannot log in to, a gateway's 5xx)
//! or [`SendError::Permanent`] (retrying cannot help: 5xx replies to this mail, a malformed
//! address, a gateway refusing the message), because that decides between a retry with backoff
//! and a failure shown to the user (and, for a reminder, a fall back to its next channel).
//! Permanent errors carry the server's whole answer, since that answer is what an administrator
//! needs.
//!
//! Credentials from URLs are percent-decoded, handed to the clients, and never printed: the
//! transports' `Debug` shows the user name at most.
use std::fmt;

pub mod file;
pub mod outbound;
pub mod sms;
pub mod smtp;
mod smtp_tls;
pub mod trust;

pub use outbound::from_url;

/// Why a message was not delivered, sorted by what the outbox should do about it.
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

/// Delivers one outbox row. Implementations: SMTP (pooled), `.eml` files, the SMS gateway; tests
/// may add fakes.
#[tonic::async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// Delivers one message; Ok(the server's answer, e.g. "250 2.0.0 Ok: queued as 4XyZ" or
    /// "201 Created, id SM123").
    ///
    /// Mail: `from` and `to` are addresses (`a@b`, or `Name <a@b>` whose address is used),
    /// `id` is the Message-ID (with or without angle brackets) and `body` the RFC 822 message.
    /// SMS: `from` is unused, `to` is the phone number, `id` the idempotency key (the same for
    /// every attempt of one message) and `body` the UTF-8 text.
    async fn send(&self, from: &str, to: &str, id: &str, body: &[u8]) -> Result<String, SendError>;
}
