//! Who is calling (DESIGN §12). One interceptor turns request metadata into an [`Actor`] in the
//! request's extensions; handlers ask for it with [`actor`]. Three ways in:
//! - `x-api-key` (both modes): a service key, configured only as its SHA-256; a key with the role
//!   `act_as` may name the user it acts for in `x-act-as`;
//! - `jwt` mode: `authorization: Bearer <JWT>`, verified with `jsonwebtoken` (HS256 secret,
//!   RS256/ES256 PEM keys or a JWKS file; issuer, audience, exp/nbf with 60 s leeway); `sub` is
//!   the user id, roles come from a claim;
//! - `dev` mode: `x-user-id`, unverified — refused on a non-loopback listener unless explicitly
//!   allowed, because anyone who can connect could then claim to be anyone.
//!
//! Roles also come from the configuration (`security.admins`, `security.roles.<role>`) in every
//! mode. What a role permits is decided in [`crate::policy`], not here.
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tonic::{Request, Status, metadata::MetadataMap, service::Interceptor};

use crate::{
    bounds,
    config::SecuritySettings,
    policy::{Actor, Role},
};

pub const USER_ID_HEADER: &str = "x-user-id";
pub const API_KEY_HEADER: &str = "x-api-key";
pub const ACT_AS_HEADER: &str = "x-act-as";

/// Clock skew allowed on `exp` and `nbf`.
const JWT_LEEWAY_SECS: u64 = 60;

/// Establishes the caller of every request; built once from `security.*`.
#[derive(Debug)]
pub struct Authenticator {
    mode: Mode,
    /// SHA-256 (lower-case hex) of a key → the key.
    api_keys: HashMap<String, ApiKey>,
    /// Roles the configuration gives to user ids.
    configured_roles: HashMap<String, Vec<Role>>,
}

#[derive(Debug)]
enum Mode {
    Dev,
    Jwt(JwtVerifier),
}

#[derive(Debug)]
struct ApiKey {
    id: String,
    roles: Vec<Role>,
}

struct JwtVerifier {
    keys: Vec<JwtKey>,
    issuer: Option<String>,
    audience: Option<String>,
    roles_claim: String,
}

struct JwtKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("roles_claim", &self.roles_claim)
            .finish()
    }
}

impl Authenticator {
    /// Checks `security.*` (and `server.listen` for dev mode); every error names its key.
    pub fn from_settings(s: &SecuritySettings, listen: &str) -> anyhow::Result<Self> {
        let mode = match s.auth.as_str() {
            "dev" => {
                if !is_loopback(listen) && !s.allow_dev_on_network {
                    bail!(
                        "security.auth: dev mode trusts x-user-id from anyone and server.listen \
                         {listen} is not a loopback address; use security.auth = \"jwt\" or set \
                         security.allow_dev_on_network = true"
                    );
                }
                Mode::Dev
            }
            "jwt" => Mode::Jwt(JwtVerifier::from_settings(s)?),
            other => bail!("security.auth: expected dev or jwt, got {other:?}"),
        };
        let mut api_keys = HashMap::new();
        for (i, key) in s.api_keys.keys()?.into_iter().enumerate() {
            let field = format!("security.api_keys[{i}]");
            if let Some(reason) = bounds::single_line_problem(&key.id, bounds::MAX_ID_LEN)
                .or_else(|| key.id.is_empty().then(|| "id: required".to_string()))
            {
                bail!("{field}.id: {reason}");
            }
            let hash = key.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{field}.sha256: expected 64 hex digits (sha256sum of the key)");
            }
            let roles = key
                .roles
                .iter()
                .map(|name| {
                    Role::parse(name).with_context(|| {
                        format!(
                            "{field}.roles: unknown role {name:?} (admin, deployer, directory, mail, act_as)"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if api_keys
                .insert(
                    hash,
                    ApiKey {
                        id: key.id.clone(),
                        roles,
                    },
                )
                .is_some()
            {
                bail!("{field}.sha256: the same key is listed twice");
            }
        }
        let mut configured_roles: HashMap<String, Vec<Role>> = HashMap::new();
        let lists = [
            (Role::Admin, &s.admins),
            (Role::Admin, &s.roles.admin),
            (Role::Deployer, &s.roles.deployer),
            (Role::Directory, &s.roles.directory),
            (Role::Mail, &s.roles.mail),
            (Role::ActAs, &s.roles.act_as),
        ];
        for (role, list) in lists {
            for user in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                configured_roles
                    .entry(user.to_string())
                    .or_default()
                    .push(role);
            }
        }
        Ok(Self {
            mode,
            api_keys,
            configured_roles,
        })
    }

    pub fn is_dev(&self) -> bool {
        matches!(self.mode, Mode::Dev)
    }

    /// The caller of a request, or why it is not authenticated. `None` = no credential at all
    /// (the handler then answers UNAUTHENTICATED: health and reflection need none).
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Option<Actor>, Status> {
        if let Some(value) = metadata.get(API_KEY_HEADER) {
            return self.api_key(value.as_bytes(), metadata).map(Some);
        }
        match &self.mode {
            Mode::Jwt(verifier) => {
                let Some(value) = metadata.get("authorization") else {
                    return Ok(None);
                };
                let value = value
                    .to_str()
                    .map_err(|_| Status::unauthenticated("authorization: not printable ASCII"))?;
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        Status::unauthenticated("authorization: expected \"Bearer <JWT>\"")
                    })?;
                let (user, roles) = verifier.verify(token.trim())?;
                Ok(Some(self.user(user, roles)))
            }
            Mode::Dev => {
                let Some(value) = metadata.get(USER_ID_HEADER) else {
                    return Ok(None);
                };
                let user = header_user(value.to_str().ok(), USER_ID_HEADER)?;
                Ok(Some(self.user(user, Vec::new())))
            }
        }
    }

    fn user(&self, user_id: String, mut roles: Vec<Role>) -> Actor {
        if let Some(configured) = self.configured_roles.get(&user_id) {
            roles.extend(configured.iter().copied());
        }
        Actor::new(user_id).with_roles(roles)
    }

    fn api_key(&self, key: &[u8], metadata: &MetadataMap) -> Result<Actor, Status> {
        let hash = hex(&Sha256::digest(key));
        let Some(api_key) = self.api_keys.get(&hash) else {
            return Err(Status::unauthenticated("x-api-key: unknown key"));
        };
        match metadata.get(ACT_AS_HEADER) {
            Some(value) => {
                if !api_key.roles.contains(&Role::ActAs) && !api_key.roles.contains(&Role::Admin) {
                    return Err(Status::permission_denied(format!(
                        "x-act-as: API key {} does not have the role act_as",
                        api_key.id
                    )));
                }
                // Acting for a user gives that user's rights, never more than the key's: a key
                // that may only act for users cannot become an admin by naming one.
                let user = header_user(value.to_str().ok(), ACT_AS_HEADER)?;
                let roles = self
                    .configured_roles
                    .get(&user)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|r| api_key.roles.contains(r) || api_key.roles.contains(&Role::Admin))
                    .collect::<Vec<_>>();
                Ok(Actor::new(user).with_roles(roles))
            }
            None => Ok(Actor::new(format!("key:{}", api_key.id))
                .with_roles(api_key.roles.iter().copied().filter(|r| *r != Role::ActAs))),
        }
    }
}

fn header_user(value: Option<&str>, header: &str) -> Result<String, Status> {
    let user = value
        .map(str::trim)
        .ok_or_else(|| Status::unauthenticated(format!("{header}: must be printable ASCII")))?;
    if user.is_empty() {
        return Err(Status::unauthenticated(format!("{header}: empty")));
    }
    if let Some(reason) = bounds::single_line_problem(user, bounds::MAX_ID_LEN) {
        return Err(Status::unauthenticated(format!("{header}: {reason}")));
    }
    Ok(user.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `127.0.0.1:…`, `[::1]:…` or `localhost:…`.
fn is_loopback(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen
            .rsplit_once(':')
            .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
    }
}

impl JwtVerifier {
    fn from_settings(s: &SecuritySettings) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        if let Some(secret) = &s.jwt_hs256_secret {
            if secret.expose().len() < 32 {
                bail!("security.jwt_hs256_secret: at least 32 bytes");
            }
            keys.push(JwtKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.expose().as_bytes()),
            });
        }
        if let Some(path) = &s.jwt_public_keys {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("security.jwt_public_keys: reading {path}"))?;
            let before = keys.len();
            for block in pem_blocks(&text) {
                let key = if let Ok(key) = DecodingKey::from_rsa_pem(block.as_bytes()) {
                    (Algorithm::RS256, key)
                } else if let Ok(key) = DecodingKey::from_ec_pem(block.as_bytes()) {
                    (Algorithm::ES256, key)
                } else {
                    bail!(
                        "security.jwt_public_keys: {path}: a PEM block that is neither an RSA nor a P-256 public key"
                    );
                };
                keys.push(JwtKey {
                    kid: None,
                    algorithm: key.0,
                    key: key.1,
                });
            }
            if keys.len() == before {
                bail!("security.jwt_public_keys: {path} holds no PEM public key");
            }
        }
        if let Some(path) = &s.jwt_jwks_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("security.jwt_jwks_file: reading {path}"))?;
            let set: JwkSet = serde_json::from_str(&text)
                .with_context(|| format!("security.jwt_jwks_file: {path} is not a JWKS"))?;
            for jwk in &set.keys {
                let algorithm = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => bail!(
                        "security.jwt_jwks_file: key {:?}: only RSA and EC (P-256) keys are supported",
                        jwk.common.key_id
                    ),
                };
                let key = DecodingKey::from_jwk(jwk).with_context(|| {
                    format!("security.jwt_jwks_file: key {:?}", jwk.common.key_id)
                })?;
                keys.push(JwtKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                });
            }
        }
        if keys.is_empty() {
            bail!(
                "security.auth = jwt needs security.jwt_hs256_secret, security.jwt_public_keys or security.jwt_jwks_file"
            );
        }
        // A token minted for another application of the same identity provider must not work
        // here: both are required in jwt mode.
        if s.jwt_issuer.as_deref().is_none_or(str::is_empty) {
            bail!(
                "security.jwt_issuer: required with security.auth = jwt (the iss of valid tokens)"
            );
        }
        if s.jwt_audience.as_deref().is_none_or(str::is_empty) {
            bail!(
                "security.jwt_audience: required with security.auth = jwt (the aud of tokens meant for replyflow)"
            );
        }
        if s.jwt_roles_claim.trim().is_empty() {
            bail!("security.jwt_roles_claim: must name a claim");
        }
        Ok(Self {
            keys,
            issuer: s.jwt_issuer.clone().filter(|v| !v.is_empty()),
            audience: s.jwt_audience.clone().filter(|v| !v.is_empty()),
            roles_claim: s.jwt_roles_claim.clone(),
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = JWT_LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        match &self.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        v
    }

    /// The user id and roles of a valid token.
    fn verify(&self, token: &str) -> Result<(String, Vec<Role>), Status> {
        if token.len() > 16 * 1024 {
            return Err(Status::unauthenticated("authorization: token too long"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Status::unauthenticated(format!("authorization: malformed JWT: {e}")))?;
        let candidates: Vec<&JwtKey> = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(have)) => wanted == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(Status::unauthenticated(format!(
                "authorization: no configured key for alg {:?}",
                header.alg
            )));
        }
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(
                token,
                &key.key,
                &self.validation(key.algorithm),
            ) {
                Ok(data) => return self.identity(&data.claims),
                Err(e) => last = Some(e),
            }
        }
        let reason = last.map_or_else(|| "invalid".to_string(), |e| e.to_string());
        Err(Status::unauthenticated(format!(
            "authorization: JWT rejected: {reason}"
        )))
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<(String, Vec<Role>), Status> {
        // jsonwebtoken 9 skips a time claim it cannot read as a number (`"nbf": "9999999999"`
        // would not delay anything): such a token is malformed, not unrestricted.
        for claim in ["exp", "nbf", "iat"] {
            if claims.get(claim).is_some_and(|v| !v.is_number()) {
                return Err(Status::unauthenticated(format!(
                    "authorization: JWT claim {claim} is not a number"
                )));
            }
        }
        if !matches!(claims.get("iss"), Some(Value::String(_))) {
            return Err(Status::unauthenticated(
                "authorization: JWT claim iss is not a string",
            ));
        }
        if !matches!(claims.get("aud"), Some(Value::String(_) | Value::Array(_))) {
            return Err(Status::unauthenticated(
                "authorization: JWT claim aud is not a string",
            ));
        }
        let user = header_user(claims.get("sub").and_then(Value::as_str), "sub")?;
        // Roles the identity provider knows that replyflow does not are ignored.
        let roles = match claims.get(&self.roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter_map(Role::parse)
                .collect(),
            Some(Value::String(text)) => text.split([' ', ',']).filter_map(Role::parse).collect(),
            _ => Vec::new(),
        };
        Ok((user, roles))
    }
}

/// Each `-----BEGIN …-----` … `-----END …-----` block of a PEM file.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line.starts_with("-----END ") {
            blocks.extend(current.take());
        }
    }
    blocks
}

/// The interceptor every service is wrapped in.
#[derive(Debug, Clone)]
pub struct Authenticate(pub Arc<Authenticator>);

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(actor) = self.0.authenticate(request.metadata())? {
            request.extensions_mut().insert(actor);
        }
        Ok(request)
    }
}

/// The caller of a request that passed the interceptor.
pub fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    request.extensions().get::<Actor>().cloned().ok_or_else(|| {
        Status::unauthenticated(
            "no caller identity: send authorization: Bearer <JWT>, x-api-key, or x-user-id (dev mode)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_recognised() {
        assert!(is_loopback("127.0.0.1:50051"));
        assert!(is_loopback("[::1]:50051"));
        assert!(is_loopback("localhost:50051"));
        assert!(!is_loopback("0.0.0.0:50051"));
        assert!(!is_loopback("10.1.2.3:50051"));
        assert!(!is_loopback("oa.example.com:50051"));
    }

    #[test]
    fn pem_files_split_into_blocks() {
        let text = "junk\n-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----\n-----BEGIN PUBLIC KEY-----\nBBB\n-----END PUBLIC KEY-----\n";
        assert_eq!(pem_blocks(text).len(), 2);
    }
}
