//! The reply-token key ring (DESIGN §12: tokens verify with the key they were issued with;
//! configured secrets never enter the database; rotation is `security.token_secrets`).
use crate::mail::token::{self, KeyRing};

/// The reply-token keys (DESIGN §12).
///
/// `configured` is `security.token_secrets` (current first, older after; `security.token_secret`
/// is the one-element spelling). A configured secret never enters the database: each has a row
/// holding only its [`token::fingerprint`], which gives it a stable key id wherever it stands in
/// the list, so reordering or shortening the list never changes which key a context names. A
/// context issued with a secret that was removed from the list no longer verifies (that is what
/// retiring a secret means). Without configuration a secret is generated once and kept in the
/// database (the only secret stored there); generated keys stay in the ring so that a first
/// configuration does not break tokens already mailed. Rows with a plain-text configured secret,
/// written by earlier releases, are scrubbed here.
pub async fn load_key_ring(
    store: &crate::store::Store,
    configured: &[crate::config::Secret],
    now: i64,
) -> anyhow::Result<KeyRing> {
    for key in store.token_keys().await? {
        if key.source == "config" && !key.secret.is_empty() {
            let print = token::fingerprint(key.secret.as_bytes());
            store.scrub_token_key(key.kid, &print).await?;
            tracing::warn!(
                kid = key.kid,
                "removed a configured reply-token secret that an earlier release stored in the database"
            );
        }
    }
    let mut ring: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut current = None;
    for (i, secret) in configured.iter().enumerate() {
        let print = token::fingerprint(secret.expose().as_bytes());
        let mut kid = None;
        // Two tries: a concurrent start may have taken the next kid first.
        for _ in 0..3 {
            kid = store
                .token_keys()
                .await?
                .into_iter()
                .find(|k| k.fingerprint == print)
                .map(|k| k.kid);
            if kid.is_some() {
                break;
            }
            store.add_token_key("", &print, "config", now).await?;
            tracing::info!(
                position = i + 1,
                "security.token_secrets: a new secret got a reply-token key id"
            );
        }
        let kid = kid.ok_or_else(|| {
            anyhow::anyhow!(
                "security.token_secrets: no key id could be stored for secret {}",
                i + 1
            )
        })?;
        if ring.iter().any(|(k, _)| *k == kid) {
            anyhow::bail!("security.token_secrets: secret {} is listed twice", i + 1);
        }
        current.get_or_insert(kid);
        ring.push((kid, secret.expose().as_bytes().to_vec()));
    }
    let mut generated: Vec<_> = store
        .token_keys()
        .await?
        .into_iter()
        .filter(|k| k.source == "generated" && !k.secret.is_empty())
        .collect();
    if generated.is_empty() && configured.is_empty() {
        store
            .add_token_key(&token::generate_secret(), "", "generated", now)
            .await?;
        tracing::info!("generated a reply-token secret and stored it in the database");
        generated = store
            .token_keys()
            .await?
            .into_iter()
            .filter(|k| k.source == "generated" && !k.secret.is_empty())
            .collect();
    }
    if current.is_none() {
        current = generated.iter().map(|k| k.kid).max();
    }
    ring.extend(
        generated
            .into_iter()
            .map(|k| (k.kid, k.secret.into_bytes())),
    );
    let current = current.ok_or_else(|| anyhow::anyhow!("reply-token keys: none could be made"))?;
    KeyRing::with_current(ring, current).map_err(|e| anyhow::anyhow!("reply-token keys: {e}"))
}
