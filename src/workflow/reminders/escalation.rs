//! What happens when a reminder runs out (DESIGN §6): its escalation policy, run once per task
//! it chased. `complete:<outcome>` completions are prepared before the scheduler's transaction so
//! that no condition is evaluated under the write lock; `reassign-manager` never hands a request
//! to its own initiator.
use std::collections::HashMap;

use serde_json::json;

use super::{Outputs, SYSTEM};
use crate::{
    engine::{definition::ProcessDefinition, reminder_rules::EscalationPolicy},
    error::{Error, Result},
    model::{CompletedVia, Event, Instance, Reminder, Task, User},
    store::Tx,
    workflow::{
        Actor, Workflow,
        tasks::{CompleteTask, Prepared, ReassignAuthority, Reassignment},
    },
};

impl Workflow {
    /// The completions that due `complete:<outcome>` escalations will make, computed from
    /// committed state outside any transaction (by task id). One that no longer holds under the
    /// lock is computed again there.
    pub(super) async fn prepare_escalations(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<HashMap<String, Prepared>> {
        let mut prepared = HashMap::new();
        let system = Actor::new(SYSTEM);
        for r in self.store.due_completing_escalations(now, limit).await? {
            let EscalationPolicy::Complete(outcome) = &r.escalation else {
                continue;
            };
            for task in self.store.open_tasks(&r.instance_id).await? {
                if task.activity_id != r.end_activity {
                    continue;
                }
                let req = escalation_completion(&task, outcome, r.sent_count);
                if let Some(p) = self
                    .prepare_completion(&system, &r.instance_id, &req)
                    .await?
                {
                    prepared.insert(task.id, p);
                }
            }
        }
        Ok(prepared)
    }

    /// Runs a reminder's escalation policy once, for each task it chased. Returns whether the
    /// instance changed (a task reassigned or completed).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn escalate(
        &self,
        tx: &mut Tx,
        r: &Reminder,
        instance: &Instance,
        graph: &ProcessDefinition,
        chased: &[&Task],
        now: i64,
        prepared: &HashMap<String, Prepared>,
        out: &mut Outputs,
    ) -> Result<bool> {
        let mut changed = false;
        for task in chased {
            let outcome: std::result::Result<serde_json::Value, String> = match &r.escalation {
                EscalationPolicy::NotifyManager => match manager_of(tx, &task.assignee).await? {
                    Some(manager) => {
                        self.notify(tx, r, instance, graph, task, &manager, now, out)
                            .await?;
                        Ok(json!({"notified": manager.id}))
                    }
                    None => Err(format!("{} has no manager in the directory", task.assignee)),
                },
                EscalationPolicy::ReassignManager => {
                    match manager_not_initiator(tx, &task.assignee, instance).await? {
                        Ok(manager) => {
                            let actor = Actor::new(SYSTEM);
                            let handed_on = Reassignment {
                                task_id: &task.id,
                                instance_id: &instance.id,
                                new_assignee: &manager.id,
                                actor: &actor,
                                authority: ReassignAuthority::System,
                                comment: "reminders ran out",
                                via: "escalation",
                            };
                            out.task_events
                                .push(self.reassign_in(tx, &handed_on, now).await?);
                            out.queued_mail = true;
                            changed = true;
                            Ok(json!({"reassigned_to": manager.id}))
                        }
                        Err(why) => Err(why),
                    }
                }
                EscalationPolicy::Notify(user_id) => match tx.user(user_id).await? {
                    Some(user) => {
                        self.notify(tx, r, instance, graph, task, &user, now, out)
                            .await?;
                        Ok(json!({"notified": user.id}))
                    }
                    None => Err(format!("{user_id} is not in the directory")),
                },
                EscalationPolicy::Complete(outcome) => {
                    let req = escalation_completion(task, outcome, r.sent_count);
                    let ready = prepared.get(&task.id);
                    match self
                        .complete_in_prepared(
                            tx,
                            &Actor::new(SYSTEM),
                            &instance.id,
                            &req,
                            now,
                            ready,
                        )
                        .await
                    {
                        Ok((_, events)) => {
                            out.task_events.extend(events);
                            out.queued_mail = true;
                            changed = true;
                            Ok(json!({"completed": task.id, "outcome": outcome}))
                        }
                        Err(Error::InvalidArgument { reason, .. }) => Err(reason),
                        Err(e) => return Err(e),
                    }
                }
                // Never escalated: the caller runs policies other than none only.
                EscalationPolicy::None => Err("the escalation policy is none".into()),
            };
            let (kind, detail) = match outcome {
                Ok(detail) => ("reminder_escalated", detail),
                Err(reason) => ("reminder_escalation_failed", json!({"reason": reason})),
            };
            let mut detail = detail;
            detail["reminder_id"] = json!(r.id);
            detail["policy"] = json!(r.escalation.as_text());
            detail["task_id"] = json!(task.id);
            out.events.push(Event {
                instance_id: instance.id.clone(),
                at: now,
                kind: kind.into(),
                activity_id: r.end_activity.clone(),
                actor: SYSTEM.into(),
                detail,
            });
        }
        Ok(changed)
    }
}

/// The completion a `complete:<outcome>` escalation makes of `task`.
fn escalation_completion(task: &Task, outcome: &str, sent_count: i64) -> CompleteTask {
    CompleteTask {
        task_id: task.id.clone(),
        outcome: outcome.to_string(),
        comment: format!("completed by escalation after {sent_count} reminders"),
        variables: Default::default(),
        request_id: String::new(),
        via: CompletedVia::Escalation,
    }
}

/// The assignee's manager for `reassign-manager`, one level further up when that manager
/// started the instance: four eyes, escalation never hands a request to its own initiator.
async fn manager_not_initiator(
    tx: &mut Tx,
    assignee: &str,
    instance: &Instance,
) -> Result<std::result::Result<User, String>> {
    let Some(manager) = manager_of(tx, assignee).await? else {
        return Ok(Err(format!("{assignee} has no manager in the directory")));
    };
    if manager.id != instance.started_by {
        return Ok(Ok(manager));
    }
    Ok(match manager_of(tx, &manager.id).await? {
        Some(next) if next.id != instance.started_by => Ok(next),
        _ => Err(format!(
            "{assignee}'s manager {} started this instance (four eyes) and has no manager to take it",
            manager.id
        )),
    })
}

async fn manager_of(tx: &mut Tx, user_id: &str) -> Result<Option<User>> {
    let Some(user) = tx.user(user_id).await? else {
        return Ok(None);
    };
    if user.manager_id.is_empty() {
        return Ok(None);
    }
    tx.user(&user.manager_id).await
}
