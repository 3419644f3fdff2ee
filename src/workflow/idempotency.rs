//! Idempotent requests (DESIGN §7: "mutations take a `request_id` for idempotent retries"). Every
//! use case that takes a request id records it with its effect, in the same transaction, under a
//! scope of its own — the use case and the caller, so that two callers' ids never meet — with a
//! fingerprint of the request's content and the id of what it produced. A retry of the same
//! request is answered from that stored result; the same id reused for other content is refused.
//!
//! This is the one place that builds scopes and fingerprints, reads a stored answer and words the
//! refusal: use cases only say what their request is and where its claim goes (the transition
//! writer's batch, or the transaction of a use case that writes by itself).
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Actor, transition::Claim};
use crate::{
    error::{Error, Result},
    store::{Batch, PriorRequest, Store, Tx},
};

/// The request id of one call, with its scope and fingerprint; empty when the caller gave none
/// (then nothing is recorded and nothing is answered from a stored result).
#[derive(Debug, Clone)]
pub(super) struct RequestId {
    key: Option<Key>,
}

#[derive(Debug, Clone)]
struct Key {
    scope: String,
    request_id: String,
    fingerprint: String,
}

impl RequestId {
    /// The request id of a call to `use_case` by `actor`, for a request whose content is `parts`.
    /// Checks the id's bounds (an `InvalidArgument` on `request_id`).
    pub(super) fn new(
        use_case: &str,
        actor: &Actor,
        request_id: &str,
        parts: &[&str],
    ) -> Result<Self> {
        Self::with_variables(use_case, actor, request_id, parts, &Map::new())
    }

    /// [`RequestId::new`] for a request that also carries variables.
    pub(super) fn with_variables(
        use_case: &str,
        actor: &Actor,
        request_id: &str,
        parts: &[&str],
        variables: &Map<String, Value>,
    ) -> Result<Self> {
        crate::bounds::check_line("request_id", request_id, crate::bounds::MAX_ID_LEN)?;
        let key = (!request_id.is_empty()).then(|| Key {
            // Stored with the requests: a changed scope or digest would let a retry across an
            // upgrade act twice.
            scope: format!("{use_case}:{}", actor.user_id),
            request_id: request_id.to_string(),
            fingerprint: fingerprint(parts, variables),
        });
        Ok(Self { key })
    }

    /// The result id stored for this request by an earlier call; `None` when the id is new (or
    /// none was given). The same id used earlier for another request is `AlreadyExists`.
    pub(super) async fn earlier(&self, store: &Store) -> Result<Option<String>> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        match store.prior_request(&key.scope, &key.request_id).await? {
            None => Ok(None),
            Some(PriorRequest {
                fingerprint,
                result_id,
            }) if fingerprint == key.fingerprint => Ok(Some(result_id)),
            Some(_) => Err(Error::AlreadyExists(format!(
                "request_id {:?} was already used for a different request",
                key.request_id
            ))),
        }
    }

    /// After this request's claim was refused (a concurrent call with the same id committed
    /// first): the result id that call stored, or the refusal if it was another request.
    pub(super) async fn taken(&self, store: &Store) -> Result<String> {
        self.earlier(store)
            .await?
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("a claimed request id vanished")))
    }

    /// The claim the transition writer records with its batch, the call producing `result_id`.
    pub(super) fn claim(&self, result_id: &str) -> Option<Claim> {
        self.key.as_ref().map(|key| Claim {
            scope: key.scope.clone(),
            request_id: key.request_id.clone(),
            fingerprint: key.fingerprint.clone(),
            result_id: result_id.to_string(),
        })
    }

    /// Adds the claim to `batch` (its guard is [`crate::store::writes::GUARD_CLAIM`]); whether
    /// there was one to add.
    pub(super) fn claim_in_batch(&self, batch: &mut Batch, result_id: &str, now: i64) -> bool {
        let Some(key) = &self.key else {
            return false;
        };
        batch.claim_request(
            &key.scope,
            &key.request_id,
            &key.fingerprint,
            result_id,
            now,
        );
        true
    }

    /// Records the claim in `tx`, before the effect it stands for. `Ok(false)`: a concurrent call
    /// with the same id claimed it first (see [`RequestId::taken`]); no id always succeeds.
    pub(super) async fn claim_in(&self, tx: &mut Tx, result_id: &str, now: i64) -> Result<bool> {
        match &self.key {
            None => Ok(true),
            Some(key) => {
                tx.claim_request(
                    &key.scope,
                    &key.request_id,
                    &key.fingerprint,
                    result_id,
                    now,
                )
                .await
            }
        }
    }
}

/// A stable digest of a request's content, to tell a retry from a reuse of its id.
fn fingerprint(parts: &[&str], variables: &Map<String, Value>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update(Value::Object(variables.clone()).to_string().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_of_stored_requests_does_not_change() {
        // sha256(b"task-1\0approve\0{}"): what earlier releases stored for this content.
        assert_eq!(
            fingerprint(&["task-1", "approve"], &Map::new()),
            "0407354b5026fad0fb8b1567444977836d5f9caf2afb86ce65b29c9e837ff681"
        );
    }

    #[test]
    fn content_and_caller_tell_requests_apart() {
        let mary = Actor::new("mary");
        let key = |actor: &Actor, parts: &[&str]| {
            RequestId::new("complete_task", actor, "r-1", parts)
                .unwrap()
                .key
                .unwrap()
        };
        let a = key(&mary, &["t", "approve"]);
        assert_eq!(a.scope, "complete_task:mary");
        assert_eq!(a.fingerprint, key(&mary, &["t", "approve"]).fingerprint);
        assert_ne!(a.fingerprint, key(&mary, &["t", "reject"]).fingerprint);
        // The separator keeps part boundaries: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            key(&mary, &["ab", "c"]).fingerprint,
            key(&mary, &["a", "bc"]).fingerprint
        );
        assert_eq!(key(&Actor::new("bob"), &["t"]).scope, "complete_task:bob");
        let mut variables = Map::new();
        variables.insert("amount".into(), Value::from(5));
        let with = RequestId::with_variables("start_process", &mary, "r-1", &["t"], &variables)
            .unwrap()
            .key
            .unwrap();
        assert_ne!(with.fingerprint, key(&mary, &["t"]).fingerprint);
    }

    #[test]
    fn no_request_id_claims_nothing() {
        let none = RequestId::new("cancel_instance", &Actor::new("mary"), "", &["i"]).unwrap();
        assert!(none.claim("i").is_none());
        let mut batch = Batch::new();
        assert!(!none.claim_in_batch(&mut batch, "i", 0));
        assert!(batch.is_empty());
    }

    #[test]
    fn an_overlong_request_id_is_refused() {
        let long = "x".repeat(crate::bounds::MAX_ID_LEN + 1);
        let err = RequestId::new("remind_now", &Actor::new("mary"), &long, &[]).unwrap_err();
        assert!(format!("{err}").contains("request_id"), "{err}");
    }
}
