//! Multi-instance user tasks (DESIGN §11: 会签 / 或签 / 票签 / 顺序会签), pure: who signs, the
//! running tally of an activation, and when its votes decide it.
//!
//! An activation is one arrival of a token at a multi-instance task. It lives in the instance's
//! [`MultiState`] (persisted beside the join state) from the moment its tasks open until it is
//! decided; each signer's task carries the group `<activation>#<index>`, so that the task, its
//! approval mail and its reminder belong to exactly one signer of one activation.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::definition::{APPROVE, MultiInstanceSpec, SignMode};

/// More signers than this in one activation fail the instance: every signer is a task, a mail
/// and a reminder written in one transaction.
pub const MAX_SIGNERS: usize = 200;

/// The running multi-instance activations of an instance: activity id → activation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MultiState(pub BTreeMap<String, Activation>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    /// The prefix of its signers' task groups.
    pub id: String,
    /// The signers' user ids in collection order.
    pub signers: Vec<String>,
    pub votes: Vec<Vote>,
    /// How many signers' tasks have been opened (all of them at once unless sequential).
    pub opened: usize,
    /// The activity whose completion led here (the reminder edges' start).
    pub from_activity: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub user: String,
    pub outcome: String,
    pub comment: String,
    pub index: usize,
}

/// The counts a tally shows and a completion condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub total: usize,
    pub approved: usize,
    pub rejected: usize,
    pub active: usize,
}

impl Activation {
    pub fn tally(&self) -> Tally {
        let approved = self.votes.iter().filter(|v| v.outcome == APPROVE).count();
        let completed = self.votes.len();
        Tally {
            total: self.signers.len(),
            approved,
            rejected: completed - approved,
            active: self.opened.saturating_sub(completed),
        }
    }

    /// The group of signer `index`'s task.
    pub fn group_of(&self, index: usize) -> String {
        format!("{}#{index}", self.id)
    }

    /// The value of the activity's variable: `{outcome, approved, rejected, signers, votes}`.
    pub fn result(&self, outcome: &str) -> Value {
        let tally = self.tally();
        let votes: Vec<Value> = self
            .votes
            .iter()
            .map(|v| json!({"user": v.user, "outcome": v.outcome, "comment": v.comment}))
            .collect();
        json!({
            "outcome": outcome,
            "approved": tally.approved,
            "rejected": tally.rejected,
            "signers": self.signers,
            "votes": votes,
        })
    }
}

/// The signer index a multi-instance task's group names (`<activation>#<index>`).
pub fn signer_index(group_id: &str) -> Option<usize> {
    let (_, index) = group_id.rsplit_once('#')?;
    index.parse().ok()
}

/// The activation a task group belongs to.
pub fn activation_of(group_id: &str) -> Option<&str> {
    group_id.rsplit_once('#').map(|(activation, _)| activation)
}

/// The collection's elements, checked: a list of 1 to [`MAX_SIGNERS`] elements, none twice.
/// Each is then resolved to its signer by the task's assignee and rules (the element variable
/// bound to it; see [`super::assignee`]). The reason names the variable at fault.
pub fn elements<'v>(
    spec: &MultiInstanceSpec,
    variables: &'v Map<String, Value>,
) -> Result<&'v [Value], String> {
    let name = &spec.collection;
    let elements = match variables.get(name) {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(format!(
                "collection variable {name:?} must be a list of user ids, found {}",
                kind_of(other)
            ));
        }
        None => return Err(format!("collection variable {name:?} is not set")),
    };
    if elements.is_empty() {
        return Err(format!(
            "collection variable {name:?} is an empty list: nobody to sign"
        ));
    }
    if elements.len() > MAX_SIGNERS {
        return Err(format!(
            "collection variable {name:?} names {} signers; at most {MAX_SIGNERS} are allowed",
            elements.len()
        ));
    }
    let mut seen: Vec<&str> = Vec::with_capacity(elements.len());
    for element in elements {
        if let Value::String(user) = element {
            let user = user.trim();
            if seen.contains(&user) {
                return Err(format!(
                    "signer {user:?} appears twice in collection variable {name:?}; each signer \
                     signs once"
                ));
            }
            seen.push(user);
        }
    }
    Ok(elements)
}

fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::String(s) => format!("the string {s:?}"),
        other => {
            let text = other.to_string();
            let short: String = text.chars().take(60).collect();
            if short.len() < text.len() {
                format!("{short}…")
            } else {
                short
            }
        }
    }
}

/// What the votes so far come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Decided with this outcome.
    Decided(String),
    /// Still open; a sequential activation opens its next signer.
    Open,
}

/// The mode's verdict on the votes so far, before any completion condition: early where the
/// result can no longer change.
pub fn verdict(mode: SignMode, activation: &Activation) -> Verdict {
    let tally = activation.tally();
    let all_voted = activation.votes.len() >= tally.total;
    match mode {
        SignMode::Any => match activation.votes.first() {
            Some(vote) => Verdict::Decided(vote.outcome.clone()),
            None => Verdict::Open,
        },
        SignMode::All => {
            if let Some(no) = activation.votes.iter().find(|v| v.outcome != APPROVE) {
                Verdict::Decided(no.outcome.clone())
            } else if all_voted {
                Verdict::Decided(APPROVE.into())
            } else {
                Verdict::Open
            }
        }
        SignMode::Vote { pass_ratio } => {
            let needed = needed_approvals(pass_ratio, tally.total);
            let still_possible = tally.approved + (tally.total - activation.votes.len());
            if tally.approved >= needed {
                Verdict::Decided(APPROVE.into())
            } else if still_possible < needed {
                Verdict::Decided(REJECT.into())
            } else {
                Verdict::Open
            }
        }
    }
}

/// The outcome of an activation that a vote or a completion condition rejects.
pub const REJECT: &str = "reject";

/// ⌈pass_ratio · total⌉, at least one. The small epsilon keeps 0.6 · 5 = 3.0000000000000004
/// from needing 4.
pub fn needed_approvals(pass_ratio: f64, total: usize) -> usize {
    let exact = pass_ratio * total as f64;
    let needed = (exact - 1e-9).ceil();
    (needed.max(1.0) as usize).min(total.max(1))
}

/// The outcome when a completion condition ends the activation before its mode did: the mode's
/// rule applied to the votes cast (`any`: the first vote; `all`: approve when nobody said
/// otherwise; `vote`: approve when the approvals reached the ratio, else reject).
pub fn outcome_when_completed_early(mode: SignMode, activation: &Activation) -> String {
    let tally = activation.tally();
    match mode {
        SignMode::Any => activation
            .votes
            .first()
            .map(|v| v.outcome.clone())
            .unwrap_or_else(|| REJECT.into()),
        SignMode::All => activation
            .votes
            .iter()
            .find(|v| v.outcome != APPROVE)
            .map(|v| v.outcome.clone())
            .unwrap_or_else(|| APPROVE.into()),
        SignMode::Vote { pass_ratio } => {
            if tally.approved >= needed_approvals(pass_ratio, tally.total) {
                APPROVE.into()
            } else {
                REJECT.into()
            }
        }
    }
}

/// The variables a completion condition sees: the instance's and the counters.
pub fn completion_scope(
    variables: &Map<String, Value>,
    activation: &Activation,
) -> Map<String, Value> {
    let tally = activation.tally();
    let mut scope = variables.clone();
    scope.insert("nrOfInstances".into(), json!(tally.total));
    scope.insert(
        "nrOfCompletedInstances".into(),
        json!(activation.votes.len()),
    );
    scope.insert("nrOfActiveInstances".into(), json!(tally.active));
    scope.insert("nrOfApproved".into(), json!(tally.approved));
    scope.insert("nrOfRejected".into(), json!(tally.rejected));
    scope
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activation(n: usize, votes: &[&str]) -> Activation {
        Activation {
            id: "a".into(),
            signers: (0..n).map(|i| format!("u{i}")).collect(),
            votes: votes
                .iter()
                .enumerate()
                .map(|(i, o)| Vote {
                    user: format!("u{i}"),
                    outcome: (*o).into(),
                    comment: String::new(),
                    index: i,
                })
                .collect(),
            opened: n,
            from_activity: "start".into(),
        }
    }

    #[test]
    fn all_needs_every_approval_and_the_first_no_decides() {
        let all = SignMode::All;
        assert_eq!(
            verdict(all, &activation(3, &["approve", "approve"])),
            Verdict::Open
        );
        assert_eq!(
            verdict(all, &activation(3, &["approve", "approve", "approve"])),
            Verdict::Decided("approve".into())
        );
        assert_eq!(
            verdict(all, &activation(3, &["approve", "reject"])),
            Verdict::Decided("reject".into())
        );
    }

    #[test]
    fn any_takes_the_first_decision() {
        assert_eq!(verdict(SignMode::Any, &activation(3, &[])), Verdict::Open);
        assert_eq!(
            verdict(SignMode::Any, &activation(3, &["reject"])),
            Verdict::Decided("reject".into())
        );
    }

    #[test]
    fn vote_passes_at_the_ratio_and_fails_once_it_cannot() {
        let vote = SignMode::Vote { pass_ratio: 0.6 };
        assert_eq!(needed_approvals(0.6, 5), 3);
        assert_eq!(needed_approvals(1.0, 5), 5);
        assert_eq!(needed_approvals(0.01, 5), 1);
        assert_eq!(
            verdict(vote, &activation(5, &["approve", "approve"])),
            Verdict::Open
        );
        assert_eq!(
            verdict(vote, &activation(5, &["approve", "approve", "approve"])),
            Verdict::Decided("approve".into())
        );
        // Two of each with one vote left: three approvals are still possible.
        assert_eq!(
            verdict(
                vote,
                &activation(5, &["approve", "reject", "approve", "reject"])
            ),
            Verdict::Open
        );
        // Three rejections of five: at most two approvals remain possible.
        assert_eq!(
            verdict(vote, &activation(5, &["reject", "reject", "reject"])),
            Verdict::Decided("reject".into())
        );
    }

    #[test]
    fn elements_are_checked_and_named() {
        let spec = MultiInstanceSpec {
            sequential: false,
            collection: "signers".into(),
            element_variable: "signer".into(),
            mode: SignMode::All,
            completion: None,
        };
        let vars = |v: Value| v.as_object().cloned().unwrap_or_default();
        let ok = vars(json!({"signers": ["a", " b "]}));
        assert_eq!(elements(&spec, &ok).map(<[Value]>::len), Ok(2));
        let err = |v: Value| elements(&spec, &vars(v)).unwrap_err();
        assert!(err(json!({})).contains("\"signers\" is not set"));
        assert!(err(json!({"signers": "a"})).contains("must be a list"));
        assert!(err(json!({"signers": []})).contains("empty list"));
        assert!(err(json!({"signers": ["a", " a"]})).contains("\"a\" appears twice"));
        let many: Vec<String> = (0..=MAX_SIGNERS).map(|i| format!("u{i}")).collect();
        assert!(err(json!({ "signers": many })).contains("at most"));
    }

    #[test]
    fn groups_name_activation_and_index() {
        let a = activation(2, &[]);
        assert_eq!(a.group_of(1), "a#1");
        assert_eq!(signer_index("a#1"), Some(1));
        assert_eq!(activation_of("a#1"), Some("a"));
        assert_eq!(signer_index("plain-group"), None);
    }
}
