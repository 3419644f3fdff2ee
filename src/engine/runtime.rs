//! Token movement (DESIGN §4). A transition starts from a snapshot of one instance (variables,
//! tokens waiting at parallel joins, open tasks) and one action (start, complete a task), follows
//! sequence flows through gateways until every token rests at a user task, an end event or a join,
//! and returns everything that changed. A failure (a condition that cannot be evaluated, no flow to
//! take, a missing assignee) fails the instance; it is not an error of the call, because the
//! completion that triggered it did happen and must be recorded.
//!
//! The walk is a loop over a stack of flows still to follow, never a recursion over the graph:
//! a chain of thousands of gateways costs memory on the heap, not stack frames. Each transition
//! has [`Limits`]: a number of steps (flows followed) and a budget for its conditions together.
//! Running out fails the instance naming the element reached and why; the server keeps serving.
//!
//! Who a task goes to is [`super::assignee`]'s rule. Its directory lookups are answered from the
//! snapshot's [`People`]; what that view lacks makes `apply` answer [`ActionError::Needs`], and
//! the caller loads it and applies again (nothing of the first attempt is kept).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::assignee::{Needs, People};
use super::condition_limits::MAX_EVALUATION_COST;
use super::definition::{
    APPROVE, FlowIdx, MultiInstanceSpec, Node, NodeIdx, NodeKind, ProcessDefinition, UserTaskSpec,
};
use super::multi::{self, Activation, MultiState, Verdict, Vote};

mod placing;
mod returning;

pub use returning::{RESUBMIT, WITHDRAW, inside_parallel_branch};

/// Tokens waiting at parallel joins: gateway id → incoming flow id → tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JoinState(pub BTreeMap<String, BTreeMap<String, u32>>);

impl JoinState {
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|flows| flows.values().all(|n| *n == 0))
    }

    fn waiting_gateways(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, flows)| flows.values().any(|n| *n > 0))
            .map(|(gateway, _)| gateway.clone())
            .collect()
    }
}

/// A task that is open when the action arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTask {
    pub id: String,
    pub activity_id: String,
    /// Tasks opened together by one deferred choice share a group; the first completed withdraws
    /// the rest.
    pub group_id: String,
}

#[derive(Debug, Clone)]
pub struct Snapshot<'a> {
    pub variables: &'a Map<String, Value>,
    pub joins: &'a JoinState,
    /// Multi-instance activations being signed.
    pub multi: &'a MultiState,
    pub open_tasks: &'a [OpenTask],
    /// The initiator and what the caller read of the directory and of earlier approvals.
    pub people: &'a People,
}

#[derive(Debug, Clone)]
pub enum Action<'a> {
    Start,
    CompleteTask {
        task_id: &'a str,
        outcome: &'a str,
        comment: &'a str,
        completed_by: &'a str,
        /// Variables sent with the completion; merged before the task's own result.
        variables: &'a Map<String, Value>,
    },
    /// 退回: back to the user task `target`, which opens as if `predecessor` (the activity whose
    /// completion opened it last time) had just completed.
    Return {
        task_id: &'a str,
        target: &'a str,
        predecessor: &'a str,
        returned_by: &'a str,
        comment: &'a str,
    },
    /// 撤回: the initiator pulls the instance back; every open task is withdrawn and their
    /// resubmission task opens (as a return to the start).
    Withdraw {
        by: &'a str,
        comment: &'a str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceOutcome {
    Running,
    Completed,
    Failed { element_id: String, reason: String },
    Cancelled { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskToOpen {
    pub activity_id: String,
    pub name: String,
    pub assignee: String,
    pub group_id: String,
    /// The user task or start event whose completion led here (the reminder edge's start).
    pub from_activity: String,
}

/// Something worth an audit event. `kind` is a stable snake_case name.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEvent {
    pub kind: &'static str,
    pub activity_id: String,
    pub detail: Value,
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub variables: Map<String, Value>,
    pub joins: JoinState,
    pub multi: MultiState,
    pub outcome: InstanceOutcome,
    pub open: Vec<TaskToOpen>,
    /// Tasks created already completed with outcome approve (`skipIfApprovedBefore`).
    pub auto_completed: Vec<TaskToOpen>,
    /// Open tasks of a deferred-choice group that lost the race.
    pub withdraw: Vec<String>,
    /// Open tasks cancelled because the instance failed.
    pub cancel: Vec<String>,
    pub events: Vec<EngineEvent>,
}

/// Why an action could not be applied at all; nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("task {0} is not open in this instance")]
    TaskNotOpen(String),
    #[error("activity {0} is not a user task of this definition")]
    NotAUserTask(String),
    #[error("outcome {outcome:?} is not one of {allowed:?}")]
    UnknownOutcome {
        outcome: String,
        allowed: Vec<String>,
    },
    /// Assignees could not be resolved from the snapshot's [`People`]: load these and apply
    /// again.
    #[error("the directory must be read first: users {:?}, approvers {}", .0.users, .0.approvers)]
    Needs(Needs),
}

/// A walk that hits an element it cannot pass; fails the instance.
#[derive(Debug)]
struct Stuck {
    element_id: String,
    reason: String,
}

/// What one transition may spend (DESIGN §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Flows one transition may follow (`limits.max_steps`). Loops without a user task are
    /// refused at deploy; this still bounds a graph whose parallel splits and exclusive merges
    /// multiply tokens.
    pub max_steps: usize,
    /// The worst-case cost all conditions evaluated in one transition may have together (see
    /// [`super::condition_limits`]).
    pub condition_budget: u64,
}

impl Limits {
    /// The default of `limits.max_steps`.
    pub const DEFAULT_MAX_STEPS: usize = 10_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: Self::DEFAULT_MAX_STEPS,
            // Twice what a single condition may cost: a few ordinary conditions cost almost
            // nothing, and a whole transition stays within tens of milliseconds.
            condition_budget: 2 * MAX_EVALUATION_COST,
        }
    }
}

/// How many of a failed walk's own events (gateways decided, ends reached, joins) are kept.
const MAX_FAILED_WALK_EVENTS: usize = 100;

/// Applies `action` to an instance of `def`. `new_id` names deferred-choice groups.
pub fn apply(
    def: &ProcessDefinition,
    snapshot: Snapshot<'_>,
    action: Action<'_>,
    limits: Limits,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Transition, ActionError> {
    let mut walk = Walk {
        def,
        variables: snapshot.variables.clone(),
        joins: snapshot.joins.clone(),
        multi: snapshot.multi.clone(),
        open: Vec::new(),
        events: Vec::new(),
        new_id,
        steps: 0,
        limits,
        condition_budget: limits.condition_budget,
        pending: Vec::new(),
        from_activity: String::new(),
        people: snapshot.people,
        approved_now: Vec::new(),
        auto_completed: Vec::new(),
        needs: Needs::default(),
    };
    let mut withdraw = Vec::new();
    let mut still_open: Vec<&OpenTask> = snapshot.open_tasks.iter().collect();
    // Set when the initiator withdraws the request at their resubmission task: it ends.
    let mut ended_by_initiator: Option<String> = None;

    let result = match action {
        Action::Return {
            task_id,
            target,
            predecessor,
            returned_by,
            comment,
        } => {
            let task = snapshot
                .open_tasks
                .iter()
                .find(|t| t.id == task_id)
                .ok_or_else(|| ActionError::TaskNotOpen(task_id.to_string()))?;
            let (target_idx, _) = def
                .node(target)
                .filter(|(_, n)| matches!(n.kind, NodeKind::UserTask(_) | NodeKind::StartEvent))
                .ok_or_else(|| ActionError::NotAUserTask(target.to_string()))?;
            walk.return_to(
                task,
                target_idx,
                predecessor,
                returned_by,
                comment,
                &mut still_open,
                &mut withdraw,
            )
        }
        Action::Withdraw { by, comment } => {
            walk.withdraw_to_start(by, comment, &mut still_open, &mut withdraw);
            Ok(())
        }
        Action::Start => {
            let start = &def.nodes[def.start];
            walk.event("instance_started", &start.id, json!({}));
            walk.run(def.start, &start.id)
        }
        Action::CompleteTask {
            task_id,
            outcome,
            comment,
            completed_by,
            variables,
        } => {
            let task = snapshot
                .open_tasks
                .iter()
                .find(|t| t.id == task_id)
                .ok_or_else(|| ActionError::TaskNotOpen(task_id.to_string()))?;
            let (node_idx, node) = def
                .node(&task.activity_id)
                .ok_or_else(|| ActionError::NotAUserTask(task.activity_id.clone()))?;
            if matches!(node.kind, NodeKind::StartEvent) {
                still_open.retain(|t| t.id != task_id);
                if walk.resubmission(node_idx, outcome, comment, variables)? {
                    walk.run(node_idx, &node.id)
                } else {
                    ended_by_initiator = Some(format!("withdrawn by the initiator: {comment}"));
                    Ok(())
                }
            } else {
                let NodeKind::UserTask(spec) = &node.kind else {
                    return Err(ActionError::NotAUserTask(task.activity_id.clone()));
                };
                check_outcome(spec, outcome)?;
                for (key, value) in variables {
                    walk.variables.insert(key.clone(), value.clone());
                }
                if outcome == APPROVE {
                    walk.approved_now.push(completed_by.to_string());
                }
                if let Some(multi_spec) = &spec.multi
                    && let Some(activation) = multi::activation_of(&task.group_id)
                    && walk
                        .multi
                        .0
                        .get(&node.id)
                        .is_some_and(|a| a.id == activation)
                {
                    let vote = Vote {
                        user: completed_by.to_string(),
                        outcome: outcome.to_string(),
                        comment: comment.to_string(),
                        index: multi::signer_index(&task.group_id).unwrap_or_default(),
                    };
                    still_open.retain(|t| t.id != task_id);
                    walk.vote(
                        node_idx,
                        multi_spec,
                        task_id,
                        vote,
                        &mut still_open,
                        &mut withdraw,
                    )
                } else {
                    walk.variables.insert(
                    node.id.clone(),
                    json!({"outcome": outcome, "comment": comment, "completed_by": completed_by}),
                );
                    walk.variables
                        .insert("outcome".into(), Value::String(outcome.to_string()));
                    walk.event(
                    "task_completed",
                    &node.id,
                    json!({"task_id": task_id, "outcome": outcome, "completed_by": completed_by}),
                );
                    still_open.retain(|t| t.id != task_id);
                    if !task.group_id.is_empty() {
                        for other in still_open.iter().filter(|t| t.group_id == task.group_id) {
                            withdraw.push(other.id.clone());
                            walk.event(
                        "task_withdrawn",
                        &other.activity_id,
                        json!({"task_id": other.id, "reason": format!("{} was decided first", node.id)}),
                    );
                        }
                        still_open.retain(|t| t.group_id != task.group_id);
                    }
                    walk.run(node_idx, &node.id)
                }
            }
        }
    };

    let Walk {
        variables,
        joins,
        multi,
        open,
        mut events,
        auto_completed,
        needs,
        ..
    } = walk;
    if !needs.is_empty() {
        return Err(ActionError::Needs(needs));
    }
    let (outcome, open, cancel, joins) = match result {
        Ok(()) if ended_by_initiator.is_some() => {
            let reason = ended_by_initiator.unwrap_or_default();
            events.push(EngineEvent {
                kind: "instance_withdrawn",
                activity_id: String::new(),
                detail: json!({ "reason": reason }),
            });
            let cancel = still_open.iter().map(|t| t.id.clone()).collect();
            let outcome = InstanceOutcome::Cancelled { reason };
            (outcome, Vec::new(), cancel, JoinState::default())
        }
        Ok(()) if !open.is_empty() || !still_open.is_empty() => {
            (InstanceOutcome::Running, open, Vec::new(), joins)
        }
        Ok(()) if joins.is_empty() => {
            events.push(EngineEvent {
                kind: "instance_completed",
                activity_id: String::new(),
                detail: json!({}),
            });
            (InstanceOutcome::Completed, open, Vec::new(), joins)
        }
        Ok(()) => {
            let gateways = joins.waiting_gateways();
            let element_id = gateways.first().cloned().unwrap_or_default();
            let reason = format!(
                "no task is open and tokens wait at parallel join(s) {gateways:?} that can no longer fire"
            );
            fail(&mut events, &element_id, &reason);
            (
                InstanceOutcome::Failed { element_id, reason },
                Vec::new(),
                Vec::new(),
                JoinState::default(),
            )
        }
        Err(Stuck { element_id, reason }) => {
            fail(&mut events, &element_id, &reason);
            let cancel: Vec<String> = still_open.iter().map(|t| t.id.clone()).collect();
            (
                InstanceOutcome::Failed { element_id, reason },
                Vec::new(),
                cancel,
                JoinState::default(),
            )
        }
    };
    // Tasks opened by a walk that then failed were never created: drop their events too. The
    // walk's other moves did not happen either; up to `limits.max_steps` of them would be
    // written as audit rows, so past a few they are only counted in the failure event.
    let failed = matches!(outcome, InstanceOutcome::Failed { .. });
    let multi = if failed { MultiState::default() } else { multi };
    let auto_completed = if failed { Vec::new() } else { auto_completed };
    if failed {
        events.retain(|e| {
            !matches!(
                e.kind,
                "task_opened" | "multi_instance_started" | "task_auto_completed"
            )
        });
        let mut walk_events = 0usize;
        events.retain(|e| {
            let of_the_walk = matches!(
                e.kind,
                "gateway_decided"
                    | "end_reached"
                    | "join_waiting"
                    | "join_fired"
                    | "deferred_choice"
            );
            walk_events += usize::from(of_the_walk);
            !of_the_walk || walk_events <= MAX_FAILED_WALK_EVENTS
        });
        let dropped = walk_events.saturating_sub(MAX_FAILED_WALK_EVENTS);
        if dropped > 0
            && let Some(failure) = events
                .iter_mut()
                .rev()
                .find(|e| e.kind == "instance_failed")
            && let Some(detail) = failure.detail.as_object_mut()
        {
            detail.insert("walk_events_not_recorded".into(), json!(dropped));
        }
    }
    Ok(Transition {
        variables,
        joins,
        multi,
        outcome,
        open,
        auto_completed,
        withdraw,
        cancel,
        events,
    })
}

/// Cancels an instance: every open task is cancelled, waiting tokens are dropped.
pub fn cancel(snapshot: Snapshot<'_>, reason: &str) -> Transition {
    Transition {
        variables: snapshot.variables.clone(),
        joins: JoinState::default(),
        multi: MultiState::default(),
        outcome: InstanceOutcome::Cancelled {
            reason: reason.to_string(),
        },
        open: Vec::new(),
        auto_completed: Vec::new(),
        withdraw: Vec::new(),
        cancel: snapshot.open_tasks.iter().map(|t| t.id.clone()).collect(),
        events: vec![EngineEvent {
            kind: "instance_cancelled",
            activity_id: String::new(),
            detail: json!({ "reason": reason }),
        }],
    }
}

fn fail(events: &mut Vec<EngineEvent>, element_id: &str, reason: &str) {
    events.push(EngineEvent {
        kind: "instance_failed",
        activity_id: element_id.to_string(),
        detail: json!({ "reason": reason }),
    });
}

/// The outcome ids a user task accepts.
pub fn outcome_ids(spec: &UserTaskSpec) -> Vec<String> {
    spec.outcomes.iter().map(|o| o.id.clone()).collect()
}

fn check_outcome(spec: &UserTaskSpec, outcome: &str) -> Result<(), ActionError> {
    if spec.outcomes.iter().any(|o| o.id == outcome) {
        Ok(())
    } else {
        Err(ActionError::UnknownOutcome {
            outcome: outcome.to_string(),
            allowed: outcome_ids(spec),
        })
    }
}

struct Walk<'d, 'f> {
    def: &'d ProcessDefinition,
    variables: Map<String, Value>,
    joins: JoinState,
    multi: MultiState,
    open: Vec<TaskToOpen>,
    events: Vec<EngineEvent>,
    new_id: &'f mut dyn FnMut() -> String,
    steps: usize,
    limits: Limits,
    /// What the conditions of this transition may still cost.
    condition_budget: u64,
    /// Flows a token still has to follow, the next on top: popping in this order visits the
    /// graph depth first in document order, as a recursive walk would.
    pending: Vec<FlowIdx>,
    /// The user task or start event whose completion started this walk.
    from_activity: String,
    people: &'d People,
    /// Who approved in this transition (the completion, auto-completions).
    approved_now: Vec<String>,
    auto_completed: Vec<TaskToOpen>,
    /// Lookups the people view could not answer; the transition is then not used.
    needs: Needs,
}

impl Walk<'_, '_> {
    fn event(&mut self, kind: &'static str, activity_id: &str, detail: Value) {
        self.events.push(EngineEvent {
            kind,
            activity_id: activity_id.to_string(),
            detail,
        });
    }

    /// A token leaves `node` (the completed task or the start event) and travels until every
    /// token rests.
    fn run(&mut self, node: NodeIdx, from_activity: &str) -> Result<(), Stuck> {
        self.from_activity = from_activity.to_string();
        self.leave(node);
        while let Some(flow) = self.pending.pop() {
            self.take(flow)?;
        }
        Ok(())
    }

    /// A token leaves `node` on each of its outgoing flows; the first is followed first.
    fn leave(&mut self, node: NodeIdx) {
        let def = self.def;
        self.pending
            .extend(def.nodes[node].outgoing.iter().rev().copied());
    }

    /// A token travels along `flow` and acts on the node it reaches.
    fn take(&mut self, flow: FlowIdx) -> Result<(), Stuck> {
        self.steps += 1;
        let def = self.def;
        let flow_def = &def.flows[flow];
        let node = &def.nodes[flow_def.target];
        if self.steps > self.limits.max_steps {
            return Err(Stuck {
                element_id: node.id.clone(),
                reason: format!(
                    "the step budget of one transition (limits.max_steps = {}) is used up \
                     before every token reached a user task or an end event",
                    self.limits.max_steps
                ),
            });
        }
        match &node.kind {
            NodeKind::StartEvent => Err(Stuck {
                element_id: node.id.clone(),
                reason: "a flow leads back into the start event".into(),
            }),
            NodeKind::EndEvent => {
                self.event("end_reached", &node.id, json!({}));
                Ok(())
            }
            NodeKind::UserTask(spec) => self.open_task(flow_def.target, spec, String::new()),
            NodeKind::ParallelGateway => self.parallel(flow_def.target, flow),
            NodeKind::ExclusiveGateway(gateway) => {
                if node.outgoing.len() <= 1 {
                    // An exclusive join (or a pass-through): every arriving token passes.
                    self.leave(flow_def.target);
                    return Ok(());
                }
                if gateway.deferred_choice {
                    return self.deferred_choice(node);
                }
                let chosen = self.choose(node, gateway.default)?;
                self.pending.push(chosen);
                Ok(())
            }
        }
    }

    /// Opens the task of the activation's next signer.
    fn open_signer(&mut self, node: &Node, activation: &mut Activation) {
        let index = activation.opened;
        let Some(assignee) = activation.signers.get(index).cloned() else {
            return;
        };
        let group_id = activation.group_of(index);
        self.event(
            "task_opened",
            &node.id,
            json!({"assignee": assignee, "group_id": group_id, "signer": index + 1,
                   "signers": activation.signers.len()}),
        );
        self.open.push(TaskToOpen {
            activity_id: node.id.clone(),
            name: node.name.clone(),
            assignee,
            group_id,
            from_activity: activation.from_activity.clone(),
        });
        activation.opened += 1;
    }

    /// A signer's decision: counted, and when it decides the activity the other signers' tasks
    /// are withdrawn and the token moves on; otherwise a sequential activation opens the next
    /// signer's task.
    fn vote(
        &mut self,
        node_idx: NodeIdx,
        spec: &MultiInstanceSpec,
        task_id: &str,
        vote: Vote,
        still_open: &mut Vec<&OpenTask>,
        withdraw: &mut Vec<String>,
    ) -> Result<(), Stuck> {
        let def = self.def;
        let node = &def.nodes[node_idx];
        let Some(mut activation) = self.multi.0.remove(&node.id) else {
            return Ok(());
        };
        self.from_activity = activation.from_activity.clone();
        activation.votes.push(vote.clone());
        let tally = activation.tally();
        self.event(
            "signer_voted",
            &node.id,
            json!({"task_id": task_id, "outcome": vote.outcome, "completed_by": vote.user,
                   "signer": vote.index + 1, "approved": tally.approved,
                   "rejected": tally.rejected, "signers": tally.total}),
        );
        let mut verdict = multi::verdict(spec.mode, &activation);
        if verdict == Verdict::Open
            && let Some(condition) = &spec.completion
        {
            let scope = multi::completion_scope(&self.variables, &activation);
            match condition.evaluate_within(&scope, &mut self.condition_budget) {
                Ok(true) => {
                    verdict = Verdict::Decided(multi::outcome_when_completed_early(
                        spec.mode,
                        &activation,
                    ));
                }
                Ok(false) => {}
                Err(reason) => {
                    return Err(Stuck {
                        element_id: node.id.clone(),
                        reason: format!(
                            "completionCondition {:?} failed: {reason}",
                            condition.source()
                        ),
                    });
                }
            }
        }
        let outcome = match verdict {
            Verdict::Open => {
                if spec.sequential {
                    self.open_signer(node, &mut activation);
                }
                self.multi.0.insert(node.id.clone(), activation);
                return Ok(());
            }
            Verdict::Decided(outcome) => outcome,
        };
        let mine = |t: &OpenTask| multi::activation_of(&t.group_id) == Some(&activation.id);
        for other in still_open.iter().filter(|t| mine(t)) {
            withdraw.push(other.id.clone());
            self.event(
                "task_withdrawn",
                &other.activity_id,
                json!({"task_id": other.id,
                       "reason": format!("{} was decided: {outcome}", node.id)}),
            );
        }
        still_open.retain(|t| !mine(t));
        self.event(
            "multi_instance_decided",
            &node.id,
            json!({"outcome": outcome, "approved": tally.approved, "rejected": tally.rejected,
                   "signers": tally.total, "decided_by": task_id}),
        );
        self.variables
            .insert(node.id.clone(), activation.result(&outcome));
        self.variables
            .insert("outcome".into(), Value::String(outcome));
        self.run(node_idx, &node.id)
    }

    fn parallel(&mut self, gateway: NodeIdx, via: FlowIdx) -> Result<(), Stuck> {
        let def = self.def;
        let node = &def.nodes[gateway];
        if node.incoming.len() <= 1 {
            self.leave(gateway);
            return Ok(());
        }
        let arrived = self.joins.0.entry(node.id.clone()).or_default();
        *arrived.entry(def.flows[via].id.clone()).or_insert(0) += 1;
        let complete = node
            .incoming
            .iter()
            .all(|f| arrived.get(&def.flows[*f].id).copied().unwrap_or(0) > 0);
        if !complete {
            let waiting_for: Vec<&str> = node
                .incoming
                .iter()
                .map(|f| &def.flows[*f])
                .filter(|f| arrived.get(&f.id).copied().unwrap_or(0) == 0)
                .map(|f| f.id.as_str())
                .collect();
            let detail = json!({
                "arrived_on": def.flows[via].id,
                "waiting_for": waiting_for,
                "from_activity": self.from_activity,
            });
            self.event("join_waiting", &node.id, detail);
            return Ok(());
        }
        for f in &node.incoming {
            if let Some(n) = arrived.get_mut(&def.flows[*f].id) {
                *n -= 1;
            }
        }
        arrived.retain(|_, n| *n > 0);
        if arrived.is_empty() {
            self.joins.0.remove(&node.id);
        }
        self.event("join_fired", &node.id, json!({}));
        self.leave(gateway);
        Ok(())
    }

    /// The first outgoing flow, in document order, whose condition is true; else the default.
    fn choose(&mut self, node: &Node, default: Option<FlowIdx>) -> Result<FlowIdx, Stuck> {
        let def = self.def;
        for flow_idx in &node.outgoing {
            let flow = &def.flows[*flow_idx];
            let Some(condition) = &flow.condition else {
                continue;
            };
            match condition.evaluate_within(&self.variables, &mut self.condition_budget) {
                Ok(true) => {
                    let detail = json!({ "flow": flow.id, "condition": condition.source() });
                    self.event("gateway_decided", &node.id, detail);
                    return Ok(*flow_idx);
                }
                Ok(false) => {}
                Err(reason) => {
                    return Err(Stuck {
                        element_id: flow.id.clone(),
                        reason: format!("condition {:?} failed: {reason}", condition.source()),
                    });
                }
            }
        }
        match default {
            Some(flow_idx) => {
                let detail = json!({ "flow": def.flows[flow_idx].id, "default": true });
                self.event("gateway_decided", &node.id, detail);
                Ok(flow_idx)
            }
            None => Err(Stuck {
                element_id: node.id.clone(),
                reason: "no condition is true and the gateway has no default flow".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::engine::definition::parse;

    fn bpmn(body: &str) -> ProcessDefinition {
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:replyflow="https://replyflow.dev/schema/1" id="defs" targetNamespace="urn:test">
  <bpmn:process id="p" name="P" isExecutable="true">{body}</bpmn:process>
</bpmn:definitions>"#
        );
        parse(xml.as_bytes()).unwrap_or_else(|e| panic!("test definition: {e}"))
    }

    fn task(id: &str, assignee: &str) -> String {
        format!(r#"<bpmn:userTask id="{id}" name="{id}" replyflow:assignee="{assignee}"/>"#)
    }

    fn flow(id: &str, from: &str, to: &str) -> String {
        format!(r#"<bpmn:sequenceFlow id="{id}" sourceRef="{from}" targetRef="{to}"/>"#)
    }

    fn cond_flow(id: &str, from: &str, to: &str, cond: &str) -> String {
        format!(
            r#"<bpmn:sequenceFlow id="{id}" sourceRef="{from}" targetRef="{to}"><bpmn:conditionExpression>{cond}</bpmn:conditionExpression></bpmn:sequenceFlow>"#
        )
    }

    /// An instance driven through the engine in memory.
    struct Run {
        def: ProcessDefinition,
        variables: Map<String, Value>,
        joins: JoinState,
        multi: MultiState,
        open: Vec<OpenTask>,
        outcome: InstanceOutcome,
        withdrawn: Vec<String>,
        next: u32,
        limits: Limits,
        people: People,
    }

    impl Run {
        fn start(def: ProcessDefinition, variables: Value) -> Self {
            let Value::Object(variables) = variables else {
                panic!("object")
            };
            let mut run = Run {
                def,
                variables,
                joins: JoinState::default(),
                multi: MultiState::default(),
                open: Vec::new(),
                outcome: InstanceOutcome::Running,
                withdrawn: Vec::new(),
                next: 0,
                limits: Limits::default(),
                people: People::default(),
            };
            run.act(None, "");
            run
        }

        fn act(&mut self, task_activity: Option<&str>, outcome: &str) {
            let mut counter = self.next;
            let mut ids = || {
                counter += 1;
                format!("g{counter}")
            };
            let empty = Map::new();
            let task_id = task_activity.map(|a| {
                self.open
                    .iter()
                    .find(|t| t.activity_id == a)
                    .unwrap_or_else(|| panic!("{a} is not open: {:?}", self.open))
                    .id
                    .clone()
            });
            let action = match &task_id {
                None => Action::Start,
                Some(id) => Action::CompleteTask {
                    task_id: id,
                    outcome,
                    comment: "",
                    completed_by: "u",
                    variables: &empty,
                },
            };
            let t = apply(
                &self.def,
                Snapshot {
                    variables: &self.variables,
                    joins: &self.joins,
                    multi: &self.multi,
                    open_tasks: &self.open,
                    people: &self.people,
                },
                action,
                self.limits,
                &mut ids,
            )
            .expect("action applies");
            self.next = counter;
            self.open.retain(|o| {
                Some(&o.id) != task_id.as_ref()
                    && !t.withdraw.contains(&o.id)
                    && !t.cancel.contains(&o.id)
            });
            for (i, new) in t.open.iter().enumerate() {
                self.open.push(OpenTask {
                    id: format!("{}#{}#{i}", new.activity_id, self.next),
                    activity_id: new.activity_id.clone(),
                    group_id: new.group_id.clone(),
                });
                self.next += 1;
            }
            self.withdrawn.extend(t.withdraw.iter().cloned());
            self.variables = t.variables;
            self.joins = t.joins;
            self.multi = t.multi;
            self.outcome = t.outcome;
        }

        fn complete(&mut self, activity: &str, outcome: &str) {
            self.act(Some(activity), outcome);
        }

        fn open_activities(&self) -> Vec<&str> {
            let mut ids: Vec<&str> = self.open.iter().map(|t| t.activity_id.as_str()).collect();
            ids.sort();
            ids
        }
    }

    #[test]
    fn sequence_moves_from_task_to_task_then_completes() {
        let def = bpmn(
            &[
                r#"<bpmn:startEvent id="start"/>"#.to_string(),
                task("a1", "alice"),
                task("a2", "${boss}"),
                r#"<bpmn:endEvent id="end"/>"#.to_string(),
                flow("f1", "start", "a1"),
                flow("f2", "a1", "a2"),
                flow("f3", "a2", "end"),
            ]
            .concat(),
        );
        let mut run = Run::start(def, json!({"boss": "bob"}));
        assert_eq!(run.open_activities(), ["a1"]);
        run.complete("a1", "approve");
        assert_eq!(run.open_activities(), ["a2"]);
        assert_eq!(run.variables["a1"]["outcome"], "approve");
        assert_eq!(run.variables["outcome"], "approve");
        run.complete("a2", "reject");
        assert_eq!(run.outcome, InstanceOutcome::Completed);
        assert!(run.open.is_empty());
    }

    fn parallel_def() -> ProcessDefinition {
        bpmn(&[
            r#"<bpmn:startEvent id="start"/><bpmn:parallelGateway id="split"/><bpmn:parallelGateway id="join"/><bpmn:endEvent id="end"/>"#.to_string(),
            task("a1", "u1"),
            task("a2", "u2"),
            task("a3", "u3"),
            flow("f0", "start", "split"),
            flow("f1", "split", "a1"),
            flow("f2", "split", "a2"),
            flow("f3", "a1", "join"),
            flow("f4", "a2", "join"),
            flow("f5", "join", "a3"),
            flow("f6", "a3", "end"),
        ]
        .concat())
    }

    #[test]
    fn parallel_split_opens_every_branch_and_join_waits_for_all() {
        let mut run = Run::start(parallel_def(), json!({}));
        assert_eq!(run.open_activities(), ["a1", "a2"]);
        run.complete("a2", "approve");
        assert_eq!(run.open_activities(), ["a1"]);
        assert!(!run.joins.is_empty(), "a token waits at the join");
        run.complete("a1", "approve");
        assert_eq!(run.open_activities(), ["a3"]);
        assert!(run.joins.is_empty(), "the join consumed its tokens");
        run.complete("a3", "approve");
        assert_eq!(run.outcome, InstanceOutcome::Completed);
    }

    fn exclusive_def(default: bool) -> ProcessDefinition {
        let gateway = if default {
            r#"<bpmn:exclusiveGateway id="xor" default="f_small"/>"#
        } else {
            r#"<bpmn:exclusiveGateway id="xor"/>"#
        };
        let small = if default {
            flow("f_small", "xor", "a3")
        } else {
            cond_flow("f_small", "xor", "a3", "amount &lt; 100")
        };
        bpmn(
            &[
                r#"<bpmn:startEvent id="start"/><bpmn:endEvent id="end"/>"#.to_string(),
                gateway.to_string(),
                task("a1", "u1"),
                task("a2", "u2"),
                task("a3", "u3"),
                flow("f0", "start", "a1"),
                flow("f1", "a1", "xor"),
                cond_flow(
                    "f_big",
                    "xor",
                    "a2",
                    "amount &gt; 10000 &amp;&amp; a1.outcome == \"approve\"",
                ),
                cond_flow("f_mid", "xor", "a2", "amount &gt; 5000"),
                small,
                flow("f4", "a2", "end"),
                flow("f5", "a3", "end"),
            ]
            .concat(),
        )
    }

    #[test]
    fn exclusive_split_takes_the_first_true_condition_in_document_order() {
        let mut run = Run::start(exclusive_def(true), json!({"amount": 20000}));
        run.complete("a1", "approve");
        assert_eq!(run.open_activities(), ["a2"]);
        let mut run = Run::start(exclusive_def(true), json!({"amount": 20000.5}));
        run.complete("a1", "approve");
        assert_eq!(run.open_activities(), ["a2"], "doubles compare with ints");
    }

    #[test]
    fn exclusive_split_falls_back_to_the_default_flow() {
        let mut run = Run::start(exclusive_def(true), json!({"amount": 50}));
        run.complete("a1", "reject");
        assert_eq!(run.open_activities(), ["a3"]);
    }

    #[test]
    fn exclusive_split_without_a_match_or_default_fails_the_instance() {
        let mut run = Run::start(exclusive_def(false), json!({"amount": 1000}));
        run.complete("a1", "approve");
        match &run.outcome {
            InstanceOutcome::Failed { element_id, reason } => {
                assert_eq!(element_id, "xor");
                assert!(reason.contains("no condition is true"), "{reason}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(run.open.is_empty());
    }

    #[test]
    fn a_condition_that_cannot_be_evaluated_fails_the_instance_naming_the_flow() {
        let mut run = Run::start(exclusive_def(true), json!({}));
        run.complete("a1", "approve");
        let InstanceOutcome::Failed { element_id, reason } = &run.outcome else {
            panic!("expected failure, got {:?}", run.outcome)
        };
        assert_eq!(element_id, "f_big");
        assert!(reason.contains("amount"), "{reason}");
    }

    fn deferred_def() -> ProcessDefinition {
        bpmn(&[
            r#"<bpmn:startEvent id="start"/><bpmn:exclusiveGateway id="choice"/><bpmn:exclusiveGateway id="merge"/><bpmn:endEvent id="end"/>"#.to_string(),
            task("a1", "u1"),
            task("a2", "u2"),
            task("a3", "u3"),
            task("a4", "u4"),
            flow("f0", "start", "a1"),
            flow("f1", "a1", "choice"),
            flow("f2", "choice", "a2"),
            flow("f3", "choice", "a3"),
            flow("f4", "a2", "merge"),
            flow("f5", "a3", "merge"),
            flow("f6", "merge", "a4"),
            flow("f7", "a4", "end"),
        ]
        .concat())
    }

    #[test]
    fn deferred_choice_opens_every_branch_and_the_first_completed_wins() {
        let mut run = Run::start(deferred_def(), json!({}));
        run.complete("a1", "approve");
        assert_eq!(run.open_activities(), ["a2", "a3"]);
        let groups: Vec<&str> = run.open.iter().map(|t| t.group_id.as_str()).collect();
        assert!(
            !groups[0].is_empty() && groups[0] == groups[1],
            "one group: {groups:?}"
        );
        run.complete("a3", "approve");
        assert_eq!(run.withdrawn.len(), 1, "the other branch is withdrawn");
        assert!(run.withdrawn[0].starts_with("a2"));
        // The exclusive join lets the single token through exactly once.
        assert_eq!(run.open_activities(), ["a4"]);
    }

    #[test]
    fn exclusive_join_passes_every_arriving_token() {
        // A parallel split into an exclusive merge: both tokens pass, so a4 opens twice.
        let def = bpmn(&[
            r#"<bpmn:startEvent id="start"/><bpmn:parallelGateway id="split"/><bpmn:exclusiveGateway id="merge"/><bpmn:endEvent id="end"/>"#.to_string(),
            task("a1", "u1"),
            task("a2", "u2"),
            task("a4", "u4"),
            flow("f0", "start", "split"),
            flow("f1", "split", "a1"),
            flow("f2", "split", "a2"),
            flow("f3", "a1", "merge"),
            flow("f4", "a2", "merge"),
            flow("f5", "merge", "a4"),
            flow("f6", "a4", "end"),
        ]
        .concat());
        let mut run = Run::start(def, json!({}));
        run.complete("a1", "approve");
        assert_eq!(run.open_activities(), ["a2", "a4"]);
        run.complete("a2", "approve");
        assert_eq!(run.open_activities(), ["a4", "a4"]);
    }

    #[test]
    fn unknown_outcome_is_refused_and_changes_nothing() {
        let def = parallel_def();
        let open = vec![OpenTask {
            id: "t1".into(),
            activity_id: "a1".into(),
            group_id: String::new(),
        }];
        let empty = Map::new();
        let err = apply(
            &def,
            Snapshot {
                variables: &empty,
                joins: &JoinState::default(),
                multi: &MultiState::default(),
                open_tasks: &open,
                people: &People::default(),
            },
            Action::CompleteTask {
                task_id: "t1",
                outcome: "maybe",
                comment: "",
                completed_by: "u1",
                variables: &empty,
            },
            Limits::default(),
            &mut || "g".to_string(),
        )
        .unwrap_err();
        assert!(matches!(err, ActionError::UnknownOutcome { .. }), "{err:?}");
    }

    #[test]
    fn a_missing_assignee_variable_fails_the_instance_at_the_task() {
        let def = bpmn(
            &[
                r#"<bpmn:startEvent id="start"/><bpmn:endEvent id="end"/>"#.to_string(),
                task("a1", "${manager}"),
                flow("f0", "start", "a1"),
                flow("f1", "a1", "end"),
            ]
            .concat(),
        );
        let run = Run::start(def, json!({}));
        let InstanceOutcome::Failed { element_id, .. } = &run.outcome else {
            panic!("expected failure")
        };
        assert_eq!(element_id, "a1");
        assert!(run.open.is_empty());
    }

    #[test]
    fn cancel_cancels_every_open_task() {
        let mut run = Run::start(parallel_def(), json!({}));
        run.complete("a1", "approve");
        let t = cancel(
            Snapshot {
                variables: &run.variables,
                joins: &run.joins,
                multi: &run.multi,
                open_tasks: &run.open,
                people: &People::default(),
            },
            "no longer needed",
        );
        assert_eq!(t.cancel.len(), 1);
        assert!(t.joins.is_empty());
        assert_eq!(
            t.outcome,
            InstanceOutcome::Cancelled {
                reason: "no longer needed".into()
            }
        );
    }

    /// start → g1 → … → gN → a1 → end, each gateway choosing on a condition.
    fn gateway_chain(n: usize) -> ProcessDefinition {
        let mut body = vec![
            r#"<bpmn:startEvent id="start"/><bpmn:endEvent id="end"/>"#.to_string(),
            task("a1", "u1"),
            flow("f0", "start", "g0"),
        ];
        for i in 0..n {
            body.push(format!(
                r#"<bpmn:exclusiveGateway id="g{i}" default="d{i}"/>"#
            ));
            let next = if i + 1 == n {
                "a1".to_string()
            } else {
                format!("g{}", i + 1)
            };
            body.push(cond_flow(
                &format!("c{i}"),
                &format!("g{i}"),
                &next,
                "amount &gt; 1",
            ));
            body.push(flow(&format!("d{i}"), &format!("g{i}"), "end"));
        }
        body.push(flow("f_end", "a1", "end"));
        bpmn(&body.concat())
    }

    /// The walk is iterative: 6,000 gateways in a row take heap, not stack. The thread has the
    /// 2 MiB stack of a tokio worker.
    #[test]
    fn a_chain_of_six_thousand_gateways_does_not_overflow_the_stack() {
        let def = gateway_chain(6_000);
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let run = Run::start(def, json!({"amount": 5}));
                (run.open_activities().join(","), run.outcome)
            })
            .expect("thread");
        let (open, outcome) = handle.join().expect("no stack overflow");
        assert_eq!(open, "a1");
        assert_eq!(outcome, InstanceOutcome::Running);
    }

    #[test]
    fn running_out_of_steps_fails_the_instance_naming_the_limit() {
        let def = gateway_chain(50);
        let mut run = Run {
            multi: MultiState::default(),
            def,
            variables: Map::new(),
            joins: JoinState::default(),
            open: Vec::new(),
            outcome: InstanceOutcome::Running,
            withdrawn: Vec::new(),
            next: 0,
            people: People::default(),
            limits: Limits {
                max_steps: 20,
                ..Limits::default()
            },
        };
        run.variables.insert("amount".into(), json!(5));
        run.act(None, "");
        let InstanceOutcome::Failed { element_id, reason } = &run.outcome else {
            panic!("expected failure, got {:?}", run.outcome)
        };
        assert_eq!(element_id, "g20");
        assert!(reason.contains("limits.max_steps = 20"), "{reason}");
        assert!(run.open.is_empty());
    }

    #[test]
    fn a_failed_walk_records_only_its_first_moves() {
        let def = gateway_chain(1_000);
        let mut variables = Map::new();
        variables.insert("amount".into(), json!(5));
        let limits = Limits {
            max_steps: 500,
            ..Limits::default()
        };
        let t = apply(
            &def,
            Snapshot {
                variables: &variables,
                joins: &JoinState::default(),
                multi: &MultiState::default(),
                open_tasks: &[],
                people: &People::default(),
            },
            Action::Start,
            limits,
            &mut || "g".to_string(),
        )
        .expect("applies");
        assert!(matches!(t.outcome, InstanceOutcome::Failed { .. }));
        let decided = t
            .events
            .iter()
            .filter(|e| e.kind == "gateway_decided")
            .count();
        assert_eq!(decided, MAX_FAILED_WALK_EVENTS);
        let failure = t.events.last().expect("events");
        assert_eq!(failure.kind, "instance_failed");
        assert_eq!(
            failure.detail["walk_events_not_recorded"],
            500 - MAX_FAILED_WALK_EVENTS
        );
    }

    #[test]
    fn running_out_of_condition_budget_fails_the_instance_naming_the_flow() {
        let def = gateway_chain(30);
        let mut run = Run {
            multi: MultiState::default(),
            def,
            variables: Map::new(),
            joins: JoinState::default(),
            open: Vec::new(),
            outcome: InstanceOutcome::Running,
            withdrawn: Vec::new(),
            next: 0,
            people: People::default(),
            limits: Limits {
                condition_budget: 100,
                ..Limits::default()
            },
        };
        run.variables.insert("amount".into(), json!(5));
        run.act(None, "");
        let InstanceOutcome::Failed { element_id, reason } = &run.outcome else {
            panic!("expected failure, got {:?}", run.outcome)
        };
        assert!(element_id.starts_with('c'), "{element_id}");
        assert!(reason.contains("refused before evaluation"), "{reason}");
    }
}
