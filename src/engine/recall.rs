//! 拿回 (RecallTask, DESIGN §11): undoing one completion whose effects nobody has acted on yet.
//!
//! The engine keeps no history of tokens, so a completion's effect is found again from the
//! graph: the *region* after the recalled activity — every element reachable from it through
//! gateways, stopping at user tasks, parallel joins and end events. The caller (who read the
//! tasks) says which open tasks the completion opened; this checks that they and the join
//! tokens it left are exactly explained by that region, then answers the transition that
//! withdraws those tasks, takes the tokens back from the joins that have not fired, and opens
//! the recalled activity again for the same user. Whatever cannot be told apart for certain is
//! refused, with the reason, rather than guessed:
//! - a task the completion opened lies beyond a join (the completion fired a join: the other
//!   branches' tokens are spent, a 退回 is the tool for that);
//! - the completion reached no task, no waiting join token and no end (its token moved on past a
//!   join that fired);
//! - tokens wait on the region's joins and the region chooses (an exclusive gateway) while the
//!   completion also opened tasks, or several join flows hold tokens: which of them is ours is
//!   not known.
use std::collections::{BTreeSet, VecDeque};

use serde_json::{Map, Value, json};

use super::{
    definition::{NodeKind, ProcessDefinition},
    multi::MultiState,
    runtime::{EngineEvent, InstanceOutcome, JoinState, OpenTask, TaskToOpen, Transition},
};

/// The completion to take back.
#[derive(Debug, Clone)]
pub struct Recall<'a> {
    /// The recalled task's activity (a user task, not a multi-instance one).
    pub activity_id: &'a str,
    /// Who gets it again: who completed it.
    pub assignee: &'a str,
    /// The recalled task's own `from_activity`, so that its reminders are armed as when it
    /// first opened.
    pub from_activity: &'a str,
    /// The tasks its completion opened, every one still open and untouched.
    pub opened: &'a [OpenTask],
}

/// What follows an activity up to the next user tasks, joins and ends.
#[derive(Debug, Default, PartialEq, Eq)]
struct Region {
    user_tasks: BTreeSet<String>,
    /// (join gateway id, incoming flow id).
    join_flows: Vec<(String, String)>,
    ends: bool,
    chooses: bool,
}

fn region(def: &ProcessDefinition, activity: usize) -> Region {
    let mut region = Region::default();
    let mut seen = BTreeSet::from([activity]);
    let mut queue = VecDeque::from([activity]);
    while let Some(idx) = queue.pop_front() {
        for flow_idx in &def.nodes[idx].outgoing {
            let flow = &def.flows[*flow_idx];
            let node = &def.nodes[flow.target];
            match &node.kind {
                NodeKind::UserTask(_) => {
                    region.user_tasks.insert(node.id.clone());
                }
                NodeKind::EndEvent => region.ends = true,
                NodeKind::StartEvent => {}
                NodeKind::ParallelGateway if node.incoming.len() > 1 => {
                    region.join_flows.push((node.id.clone(), flow.id.clone()));
                }
                NodeKind::ParallelGateway => {
                    if seen.insert(flow.target) {
                        queue.push_back(flow.target);
                    }
                }
                NodeKind::ExclusiveGateway(_) => {
                    region.chooses |= node.outgoing.len() > 1;
                    if seen.insert(flow.target) {
                        queue.push_back(flow.target);
                    }
                }
            }
        }
    }
    region
}

/// The transition of a recall, or why it cannot be done right (nothing changes then).
pub fn recall(
    def: &ProcessDefinition,
    variables: &Map<String, Value>,
    joins: &JoinState,
    multi: &MultiState,
    r: &Recall<'_>,
) -> Result<Transition, String> {
    let (idx, node) = def
        .node(r.activity_id)
        .ok_or_else(|| format!("{} is not an element of this definition", r.activity_id))?;
    let NodeKind::UserTask(spec) = &node.kind else {
        return Err(format!("{} is not a user task", r.activity_id));
    };
    if spec.multi.is_some() {
        return Err(format!(
            "{} is a multi-instance activity: a signer's vote cannot be recalled",
            r.activity_id
        ));
    }
    let region = region(def, idx);
    if let Some(beyond) = r
        .opened
        .iter()
        .find(|t| !region.user_tasks.contains(&t.activity_id))
    {
        return Err(format!(
            "the completion of {} fired a parallel join and opened {} beyond it; the other \
             branches' work is spent (return the task with 退回 instead)",
            r.activity_id, beyond.activity_id
        ));
    }
    let waiting: Vec<&(String, String)> = region
        .join_flows
        .iter()
        .filter(|(join, flow)| {
            joins
                .0
                .get(join)
                .and_then(|flows| flows.get(flow))
                .is_some_and(|n| *n > 0)
        })
        .collect();
    if !waiting.is_empty() && region.chooses && (!r.opened.is_empty() || waiting.len() > 1) {
        return Err(format!(
            "tokens wait at parallel join(s) after {} but which of them its completion left \
             cannot be told apart",
            r.activity_id
        ));
    }
    if r.opened.is_empty() && waiting.is_empty() && !region.ends {
        return Err(format!(
            "the completion of {} moved on past a parallel join that fired",
            r.activity_id
        ));
    }
    let mut joins = joins.clone();
    let mut events = Vec::new();
    for (join, flow) in &waiting {
        if let Some(flows) = joins.0.get_mut(join) {
            if let Some(n) = flows.get_mut(flow) {
                *n = n.saturating_sub(1);
            }
            flows.retain(|_, n| *n > 0);
        }
        if joins.0.get(join).is_some_and(|flows| flows.is_empty()) {
            joins.0.remove(join);
        }
        events.push(EngineEvent {
            kind: "join_token_recalled",
            activity_id: join.clone(),
            detail: json!({ "flow": flow, "from_activity": r.activity_id }),
        });
    }
    let mut multi = multi.clone();
    for task in r.opened {
        multi.0.remove(&task.activity_id);
        events.push(EngineEvent {
            kind: "task_withdrawn_by_recall",
            activity_id: task.activity_id.clone(),
            detail: json!({ "task_id": task.id, "recalled": r.activity_id }),
        });
    }
    events.push(EngineEvent {
        kind: "task_opened",
        activity_id: node.id.clone(),
        detail: json!({ "assignee": r.assignee, "recalled": true }),
    });
    Ok(Transition {
        variables: variables.clone(),
        joins,
        multi,
        outcome: InstanceOutcome::Running,
        open: vec![TaskToOpen {
            activity_id: node.id.clone(),
            name: node.name.clone(),
            assignee: r.assignee.to_string(),
            group_id: String::new(),
            from_activity: r.from_activity.to_string(),
        }],
        auto_completed: Vec::new(),
        withdraw: r.opened.iter().map(|t| t.id.clone()).collect(),
        cancel: Vec::new(),
        events,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::definition::parse;

    fn parsed(xml: &str) -> ProcessDefinition {
        parse(xml.as_bytes()).unwrap_or_else(|errors| panic!("{errors}"))
    }

    fn task(id: &str, activity: &str) -> OpenTask {
        OpenTask {
            id: id.into(),
            activity_id: activity.into(),
            group_id: String::new(),
        }
    }

    fn recall_of<'a>(activity: &'a str, opened: &'a [OpenTask]) -> Recall<'a> {
        Recall {
            activity_id: activity,
            assignee: "mary",
            from_activity: "start",
            opened,
        }
    }

    #[test]
    fn the_next_task_is_withdrawn_and_the_activity_reopens_for_the_same_user() {
        let def = parsed(include_str!("../../examples/expense.bpmn"));
        let opened = [task("t2", "finance_approval")];
        let t = recall(
            &def,
            &Map::new(),
            &JoinState::default(),
            &MultiState::default(),
            &recall_of("manager_approval", &opened),
        )
        .expect("recall");
        assert_eq!(t.withdraw, vec!["t2".to_string()]);
        assert_eq!(t.open.len(), 1);
        assert_eq!(t.open[0].activity_id, "manager_approval");
        assert_eq!(t.open[0].assignee, "mary");
        assert_eq!(t.open[0].from_activity, "start");
        assert_eq!(t.outcome, InstanceOutcome::Running);
    }

    fn waiting(join: &str, flows: &[&str]) -> JoinState {
        let flows: BTreeMap<String, u32> = flows.iter().map(|f| (f.to_string(), 1)).collect();
        JoinState(BTreeMap::from([(join.to_string(), flows)]))
    }

    #[test]
    fn a_token_waiting_at_a_join_is_taken_back() {
        let def = parsed(include_str!("../../examples/parallel_review.bpmn"));
        let joins = waiting("join", &["legal_to_join", "it_to_join"]);
        let t = recall(
            &def,
            &Map::new(),
            &joins,
            &MultiState::default(),
            &recall_of("legal_review", &[]),
        )
        .expect("recall");
        assert_eq!(t.joins, waiting("join", &["it_to_join"]));
        assert!(t.withdraw.is_empty());
        assert_eq!(t.open[0].activity_id, "legal_review");
        assert!(t.events.iter().any(|e| e.kind == "join_token_recalled"));

        let alone = waiting("join", &["legal_to_join"]);
        let t = recall(
            &def,
            &Map::new(),
            &alone,
            &MultiState::default(),
            &recall_of("legal_review", &[]),
        )
        .expect("recall");
        assert!(t.joins.0.is_empty(), "{:?}", t.joins);
    }

    #[test]
    fn a_completion_that_fired_the_join_is_not_recalled() {
        let def = parsed(include_str!("../../examples/parallel_review.bpmn"));
        let opened = [task("f", "final_approval")];
        let err = recall(
            &def,
            &Map::new(),
            &JoinState::default(),
            &MultiState::default(),
            &recall_of("legal_review", &opened),
        )
        .expect_err("past the join");
        assert!(err.contains("fired a parallel join"), "{err}");
        let err = recall(
            &def,
            &Map::new(),
            &JoinState::default(),
            &MultiState::default(),
            &recall_of("legal_review", &[]),
        )
        .expect_err("moved on");
        assert!(err.contains("moved on"), "{err}");
    }

    #[test]
    fn a_signers_vote_is_not_recalled() {
        let def = parsed(include_str!("../../examples/countersign.bpmn"));
        let (_, sign) = def
            .user_tasks()
            .find(|(_, _, spec)| spec.multi.is_some())
            .map(|(i, n, _)| (i, n.id.clone()))
            .expect("a multi-instance task");
        let err = recall(
            &def,
            &Map::new(),
            &JoinState::default(),
            &MultiState::default(),
            &recall_of(&sign, &[]),
        )
        .expect_err("a vote");
        assert!(err.contains("multi-instance"), "{err}");
    }
}
