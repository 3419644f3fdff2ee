//! Who the bench's clients are to the server: `x-user-id` in dev mode, or with `--auth jwt` an
//! HS256 Bearer token per user, minted once (as a real client reuses its token until it expires)
//! and verified by the server on every call.
use anyhow::Context;
use serde_json::json;
use tonic::{
    Request,
    metadata::{Ascii, MetadataValue},
};

use super::BenchArgs;

pub(super) const BENCH_JWT_ISSUER: &str = "https://sso.bench.example";
pub(super) const BENCH_JWT_AUDIENCE: &str = "replyflow";

/// Who a bench client is: `x-user-id` in dev mode, or a Bearer JWT minted once per user (as a
/// real client reuses its token until it expires).
#[derive(Debug, Clone)]
pub(super) struct Identity {
    header: &'static str,
    value: MetadataValue<Ascii>,
}

impl Identity {
    /// `x-user-id: user` (the inbound benchmarks run in dev mode).
    pub(super) fn dev(user: &'static str) -> Self {
        Self {
            header: crate::api::auth::USER_ID_HEADER,
            value: MetadataValue::from_static(user),
        }
    }

    pub(super) fn of(args: &BenchArgs, user: &str) -> anyhow::Result<Self> {
        match &args.jwt_secret {
            None => Ok(Self {
                header: crate::api::auth::USER_ID_HEADER,
                value: user.parse().context("a user id")?,
            }),
            Some(secret) => {
                let exp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
                    + 3600;
                let roles: &[&str] = if user == "admin" { &["admin"] } else { &[] };
                let token = jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                    &json!({
                        "sub": user, "exp": exp, "roles": roles,
                        "iss": BENCH_JWT_ISSUER, "aud": BENCH_JWT_AUDIENCE,
                    }),
                    &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
                )?;
                Ok(Self {
                    header: "authorization",
                    value: format!("Bearer {token}").parse()?,
                })
            }
        }
    }
}

pub(super) fn as_user<T>(message: T, user: &Identity) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(user.header, user.value.clone());
    request
}
