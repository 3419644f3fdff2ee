//! 退回 (DESIGN §11): the instance goes back to a user task it already passed. Every open task
//! (all branches, all signers) is withdrawn, join and multi-instance state are reset so that the
//! joins fire once on the way forward again, and the target's task opens as if its predecessor had
//! just completed. A target inside a parallel branch is refused: reopening one branch alone would
//! leave its join waiting for branches whose tokens the return dropped (the field's most reported
//! return bug); return to a step before the split instead.
use std::collections::{BTreeSet, VecDeque};

use serde_json::{Map, Value, json};

use super::{ActionError, JoinState, OpenTask, Stuck, TaskToOpen, Walk};
use crate::engine::definition::{NodeIdx, NodeKind, ProcessDefinition};
use crate::engine::multi::MultiState;

/// Why `target` cannot be returned to, if it sits inside a parallel branch: going forward from
/// it meets a parallel join before any parallel split.
pub fn inside_parallel_branch(def: &ProcessDefinition, target: NodeIdx) -> Option<String> {
    let mut seen = BTreeSet::from([target]);
    let mut queue = VecDeque::from([target]);
    while let Some(idx) = queue.pop_front() {
        for flow in &def.nodes[idx].outgoing {
            let next = def.flows[*flow].target;
            if !seen.insert(next) {
                continue;
            }
            let node = &def.nodes[next];
            match node.kind {
                NodeKind::ParallelGateway if node.incoming.len() > 1 => {
                    return Some(node.id.clone());
                }
                NodeKind::ParallelGateway | NodeKind::EndEvent | NodeKind::StartEvent => {}
                NodeKind::UserTask(_) | NodeKind::ExclusiveGateway(_) => queue.push_back(next),
            }
        }
    }
    None
}

impl Walk<'_, '_> {
    /// Withdraws every open task but `returning`, resets the engine state and opens `target`
    /// as if `predecessor` had just completed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn return_to(
        &mut self,
        returning: &OpenTask,
        target: NodeIdx,
        predecessor: &str,
        returned_by: &str,
        comment: &str,
        still_open: &mut Vec<&OpenTask>,
        withdraw: &mut Vec<String>,
    ) -> Result<(), Stuck> {
        let def = self.def;
        let node = &def.nodes[target];
        self.event(
            "task_returned",
            &returning.activity_id,
            json!({"task_id": returning.id, "to": node.id, "returned_by": returned_by,
                   "comment": comment}),
        );
        let reason = format!(
            "{} returned the instance to {}",
            returning.activity_id, node.id
        );
        for other in still_open.iter().filter(|t| t.id != returning.id) {
            withdraw.push(other.id.clone());
            self.event(
                "task_withdrawn",
                &other.activity_id,
                json!({"task_id": other.id, "reason": reason}),
            );
        }
        still_open.clear();
        self.joins = JoinState::default();
        self.multi = MultiState::default();
        match &node.kind {
            NodeKind::StartEvent => {
                self.open_resubmission();
                Ok(())
            }
            NodeKind::UserTask(spec) => {
                self.from_activity = predecessor.to_string();
                self.open_task(target, spec, String::new())
            }
            _ => Err(Stuck {
                element_id: node.id.clone(),
                reason: "a return targets a user task or the start".into(),
            }),
        }
    }

    /// 撤回: every open task withdrawn, engine state reset, the resubmission task opens.
    pub(super) fn withdraw_to_start(
        &mut self,
        by: &str,
        comment: &str,
        still_open: &mut Vec<&OpenTask>,
        withdraw: &mut Vec<String>,
    ) {
        let start = self.def.nodes[self.def.start].id.clone();
        self.event(
            "instance_pulled_back",
            &start,
            json!({"by": by, "comment": comment}),
        );
        for other in still_open.iter() {
            withdraw.push(other.id.clone());
            self.event(
                "task_withdrawn",
                &other.activity_id,
                json!({"task_id": other.id, "reason": "the initiator withdrew the request"}),
            );
        }
        still_open.clear();
        self.joins = JoinState::default();
        self.multi = MultiState::default();
        self.open_resubmission();
    }

    /// The initiator's resubmission task: at the start event, outcomes `resubmit` / `withdraw`.
    fn open_resubmission(&mut self) {
        let start = &self.def.nodes[self.def.start];
        let initiator = self.people.initiator().to_string();
        self.event(
            "task_opened",
            &start.id,
            json!({"assignee": initiator, "group_id": "", "resubmission": true}),
        );
        self.open.push(TaskToOpen {
            activity_id: start.id.clone(),
            name: start.name.clone(),
            assignee: initiator,
            group_id: String::new(),
            from_activity: String::new(),
        });
    }

    /// The initiator decided their resubmission task: `resubmit` takes any corrected variables
    /// and is true (the caller runs the process again from the start); `withdraw` is false (the
    /// instance ends).
    pub(super) fn resubmission(
        &mut self,
        start: NodeIdx,
        outcome: &str,
        comment: &str,
        variables: &Map<String, Value>,
    ) -> Result<bool, ActionError> {
        let id = self.def.nodes[start].id.clone();
        match outcome {
            RESUBMIT => {
                for (key, value) in variables {
                    self.variables.insert(key.clone(), value.clone());
                }
                self.event("instance_resubmitted", &id, json!({"comment": comment}));
                Ok(true)
            }
            WITHDRAW => Ok(false),
            other => Err(ActionError::UnknownOutcome {
                outcome: other.to_string(),
                allowed: vec![RESUBMIT.into(), WITHDRAW.into()],
            }),
        }
    }
}

/// The outcomes of the initiator's resubmission task.
pub const RESUBMIT: &str = "resubmit";
pub const WITHDRAW: &str = "withdraw";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::definition::parse;

    #[test]
    fn a_step_inside_a_parallel_branch_is_told_from_one_before_the_split() {
        let xml = r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1"><process id="p" isExecutable="true">
             <startEvent id="s"/><userTask id="before" replyflow:assignee="a"/>
             <parallelGateway id="fork"/><userTask id="left" replyflow:assignee="a"/>
             <userTask id="right" replyflow:assignee="a"/><parallelGateway id="join"/>
             <userTask id="after" replyflow:assignee="a"/><endEvent id="e"/>
             <sequenceFlow id="f1" sourceRef="s" targetRef="before"/>
             <sequenceFlow id="f2" sourceRef="before" targetRef="fork"/>
             <sequenceFlow id="f3" sourceRef="fork" targetRef="left"/>
             <sequenceFlow id="f4" sourceRef="fork" targetRef="right"/>
             <sequenceFlow id="f5" sourceRef="left" targetRef="join"/>
             <sequenceFlow id="f6" sourceRef="right" targetRef="join"/>
             <sequenceFlow id="f7" sourceRef="join" targetRef="after"/>
             <sequenceFlow id="f8" sourceRef="after" targetRef="e"/>
             </process></definitions>"#;
        let def = parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let idx = |id: &str| def.node(id).map(|(i, _)| i).unwrap_or_default();
        assert_eq!(
            inside_parallel_branch(&def, idx("left")).as_deref(),
            Some("join")
        );
        assert_eq!(inside_parallel_branch(&def, idx("before")), None);
        assert_eq!(inside_parallel_branch(&def, idx("after")), None);
    }
}
