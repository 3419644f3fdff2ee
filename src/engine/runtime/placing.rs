//! Placing a task where a token arrives (a part of the walk, [`super::apply`]): who it goes to
//! by [`crate::engine::assignee`], then opened, passed over as if approved, or completed
//! automatically; for a multi-instance task each signer so; for a deferred choice every branch,
//! unless one is decided at once.
use serde_json::{Value, json};

use super::{Stuck, TaskToOpen, Walk};
use crate::engine::assignee::{self, Ask, Note, Resolution, Resolved, Unresolved};
use crate::engine::definition::{
    APPROVE, MultiInstanceSpec, Node, NodeIdx, NodeKind, UserTaskSpec,
};
use crate::engine::multi::{self, Activation};

impl Walk<'_, '_> {
    /// A token reaches a user task: its task opens for the resolved assignee (a multi-instance
    /// task's signers' tasks), or the rules pass it over and the token moves on.
    pub(super) fn open_task(
        &mut self,
        node_idx: NodeIdx,
        spec: &UserTaskSpec,
        group_id: String,
    ) -> Result<(), Stuck> {
        if let Some(multi_spec) = &spec.multi {
            return self.open_multi(node_idx, spec, multi_spec);
        }
        let def = self.def;
        if let Some(resolved) = self.resolve(&def.nodes[node_idx], spec)? {
            self.place(node_idx, resolved, group_id);
        }
        Ok(())
    }

    /// Who `node`'s task goes to; `None` while a lookup is missing (recorded in `needs`).
    fn resolve(&mut self, node: &Node, spec: &UserTaskSpec) -> Result<Option<Resolved>, Stuck> {
        let ask = Ask {
            variables: &self.variables,
            element: None,
            people: self.people,
            approved_now: &self.approved_now,
            budget: &mut self.condition_budget,
        };
        match assignee::resolve(spec, ask) {
            Ok(resolved) => Ok(Some(resolved)),
            Err(Unresolved::Need(needs)) => {
                self.needs.merge(needs);
                Ok(None)
            }
            Err(Unresolved::Fail(reason)) => Err(Stuck {
                element_id: node.id.clone(),
                reason,
            }),
        }
    }

    /// Opens the resolved task, or passes it over (skipped, or completed automatically) and
    /// moves the token on as if it had been approved.
    fn place(&mut self, node_idx: NodeIdx, resolved: Resolved, group_id: String) {
        let def = self.def;
        let node = &def.nodes[node_idx];
        for Note { kind, detail } in resolved.notes {
            self.event(kind, &node.id, detail);
        }
        let record = match resolved.resolution {
            Resolution::Assign(assignee) => {
                self.event(
                    "task_opened",
                    &node.id,
                    json!({"assignee": assignee, "group_id": group_id}),
                );
                self.open.push(TaskToOpen {
                    activity_id: node.id.clone(),
                    name: node.name.clone(),
                    assignee,
                    group_id,
                    from_activity: self.from_activity.clone(),
                });
                return;
            }
            Resolution::AutoApprove(user) => {
                self.auto_completed.push(TaskToOpen {
                    activity_id: node.id.clone(),
                    name: node.name.clone(),
                    assignee: user.clone(),
                    group_id,
                    from_activity: self.from_activity.clone(),
                });
                self.approved_now.push(user.clone());
                json!({"outcome": APPROVE, "comment": "", "completed_by": user, "auto": true})
            }
            Resolution::Skip => {
                json!({"outcome": APPROVE, "comment": "", "completed_by": "", "skipped": true})
            }
        };
        self.pass(node_idx, record);
    }

    /// The token leaves a task nobody decided, as if it had been approved.
    fn pass(&mut self, node_idx: NodeIdx, record: Value) {
        let id = self.def.nodes[node_idx].id.clone();
        self.variables.insert(id, record);
        self.variables.insert("outcome".into(), json!(APPROVE));
        self.leave(node_idx);
    }

    /// A token reaches a multi-instance task: each element of the collection is resolved to
    /// its signer by the task's assignee and rules, then their tasks open (all at once, or the
    /// first when sequential). A signer the rules pass over is not asked (an approval of theirs
    /// before, with `skipIfApprovedBefore`, included); a user met twice signs once. When nobody
    /// is left to ask, the step passes as if approved, as a single task the rules skip does.
    fn open_multi(
        &mut self,
        node_idx: NodeIdx,
        spec: &UserTaskSpec,
        multi_spec: &MultiInstanceSpec,
    ) -> Result<(), Stuck> {
        let def = self.def;
        let node = &def.nodes[node_idx];
        let stuck = |reason: String| Stuck {
            element_id: node.id.clone(),
            reason,
        };
        if self.multi.0.contains_key(&node.id) {
            return Err(stuck(
                "a token reached the multi-instance task while its signers are still deciding"
                    .into(),
            ));
        }
        let elements = multi::elements(multi_spec, &self.variables)
            .map_err(stuck)?
            .to_vec();
        let mut signers: Vec<String> = Vec::with_capacity(elements.len());
        let mut notes: Vec<Note> = Vec::new();
        let mut waiting = false;
        for (index, element) in elements.iter().enumerate() {
            let ask = Ask {
                variables: &self.variables,
                element: Some((multi_spec.element_variable.as_str(), element)),
                people: self.people,
                approved_now: &self.approved_now,
                budget: &mut self.condition_budget,
            };
            let resolved = match assignee::resolve(spec, ask) {
                Ok(resolved) => resolved,
                Err(Unresolved::Need(needs)) => {
                    self.needs.merge(needs);
                    waiting = true;
                    continue;
                }
                Err(Unresolved::Fail(reason)) => {
                    return Err(stuck(format!(
                        "element {index} of collection variable {:?}: {reason}",
                        multi_spec.collection
                    )));
                }
            };
            let signer = index + 1;
            for mut note in resolved.notes {
                if note.kind == "task_auto_completed" {
                    note.kind = "assignee_skipped";
                    if let Some(detail) = note.detail.as_object_mut() {
                        detail.insert(
                            "why".into(),
                            json!(
                                "the signer already approved an earlier task of this \
                                   instance; not asked again"
                            ),
                        );
                    }
                }
                if let Some(detail) = note.detail.as_object_mut() {
                    detail.insert("signer".into(), json!(signer));
                }
                notes.push(note);
            }
            match resolved.resolution {
                Resolution::Assign(user) if signers.contains(&user) => notes.push(Note {
                    kind: "assignee_skipped",
                    detail: json!({"assignee": user, "signer": signer,
                                   "why": "already a signer of this step; each signer signs once"}),
                }),
                Resolution::Assign(user) => signers.push(user),
                Resolution::AutoApprove(_) | Resolution::Skip => {}
            }
        }
        if waiting {
            return Ok(());
        }
        for Note { kind, detail } in notes {
            self.event(kind, &node.id, detail);
        }
        if signers.is_empty() {
            self.event(
                "multi_instance_skipped",
                &node.id,
                json!({"mode": multi_spec.mode.as_str(),
                       "why": "the assignee rules passed over every signer; the step passes as if approved"}),
            );
            let record = json!({"outcome": APPROVE, "approved": 0, "rejected": 0,
                                "signers": [], "votes": [], "skipped": true});
            self.pass(node_idx, record);
            return Ok(());
        }
        let mut activation = Activation {
            id: (self.new_id)(),
            signers,
            votes: Vec::new(),
            opened: 0,
            from_activity: self.from_activity.clone(),
        };
        self.event(
            "multi_instance_started",
            &node.id,
            json!({"mode": multi_spec.mode.as_str(), "sequential": multi_spec.sequential,
                   "signers": activation.signers, "activation": activation.id}),
        );
        let first = if multi_spec.sequential {
            1
        } else {
            activation.signers.len()
        };
        for _ in 0..first {
            self.open_signer(node, &mut activation);
        }
        self.multi.0.insert(node.id.clone(), activation);
        Ok(())
    }

    /// Opens every branch's task in one group; the first completed withdraws the rest. A
    /// branch the assignee rules pass over (skipped, or completed automatically) is decided at
    /// once: it wins and the other branches never open.
    pub(super) fn deferred_choice(&mut self, node: &Node) -> Result<(), Stuck> {
        let group_id = (self.new_id)();
        self.event("deferred_choice", &node.id, json!({ "group_id": group_id }));
        let def = self.def;
        let mut branches: Vec<(NodeIdx, Resolved)> = Vec::new();
        for flow in &node.outgoing {
            let target_idx = def.flows[*flow].target;
            let target = &def.nodes[target_idx];
            let NodeKind::UserTask(spec) = &target.kind else {
                return Err(Stuck {
                    element_id: node.id.clone(),
                    reason: format!(
                        "deferred choice branch {} must lead to a user task",
                        target.id
                    ),
                });
            };
            if spec.multi.is_some() {
                self.open_task(target_idx, spec, group_id.clone())?;
            } else if let Some(resolved) = self.resolve(target, spec)? {
                branches.push((target_idx, resolved));
            }
        }
        let passed_over = branches
            .iter()
            .position(|(_, r)| !matches!(r.resolution, Resolution::Assign(_)));
        match passed_over {
            Some(winner) => {
                let (target_idx, resolved) = branches.swap_remove(winner);
                self.place(target_idx, resolved, group_id);
            }
            None => {
                for (target_idx, resolved) in branches {
                    self.place(target_idx, resolved, group_id.clone());
                }
            }
        }
        Ok(())
    }
}
