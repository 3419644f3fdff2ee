//! Starting, reading and cancelling instances, and writing an engine transition.
use serde_json::{Map, Value};

use super::transition::{self, Change, Done, Hold, Ready, Written, engine_tasks, status_of};
use super::{Actor, InstanceView, Workflow, idempotency::RequestId, new_id};
use crate::{
    engine::{
        assignee::People,
        multi::MultiState,
        runtime::{self, Action, InstanceOutcome, JoinState, Snapshot, Transition},
    },
    error::{Error, Result},
    model::{Event, Instance, InstanceStatus, Page},
    store::{InstanceFilter, InstanceRecord, PageRequest, Step, writes::Source},
};

#[derive(Debug, Clone, Default)]
pub struct StartProcess {
    pub definition_key: String,
    pub version: i64,
    pub business_key: String,
    pub variables: Map<String, Value>,
    pub request_id: String,
}

impl Workflow {
    pub async fn start_process(&self, actor: &Actor, req: StartProcess) -> Result<InstanceView> {
        let version = req.version.to_string();
        let request = RequestId::with_variables(
            "start_process",
            actor,
            &req.request_id,
            &[&req.definition_key, &version, &req.business_key],
            &req.variables,
        )?;
        crate::bounds::check_line("business_key", &req.business_key, crate::bounds::MAX_ID_LEN)?;
        // No request-id lookup first: a retry is recognised when the batch finds its request id
        // taken (Written::Claimed below), and answered with the instance it started.
        let (stored, graph) = self.definition(&req.definition_key, req.version).await?;
        // The engine writes `outcome` (the last decision): a start may not forge one. (Activity
        // records are overwritten when their activity completes, and examples name assignee
        // variables after their activities, so those stay allowed at start.)
        if req.variables.contains_key("outcome") {
            return Err(Error::invalid(
                "variables.outcome",
                "is written by the engine (the last decision)",
            ));
        }
        let mut people = People::new(&actor.user_id);
        // A new instance has no approvals to repeat.
        people.set_approvers(Vec::new());
        let transition = self
            .with_people(&mut people, None, |people| {
                runtime::apply(
                    &graph,
                    Snapshot {
                        variables: &req.variables,
                        joins: &JoinState::default(),
                        multi: &MultiState::default(),
                        open_tasks: &[],
                        people,
                    },
                    Action::Start,
                    self.limits(),
                    &mut new_id,
                )
            })
            .await?
            .map_err(|e| Error::Internal(anyhow::anyhow!("starting an instance: {e}")))?;

        let now = self.now();
        let instance_id = new_id();
        let (status, error) = status_of(&transition.outcome);
        let record = InstanceRecord {
            instance: Instance {
                id: instance_id.clone(),
                definition_key: stored.key.clone(),
                definition_version: stored.version,
                business_key: req.business_key.clone(),
                variables: transition.variables.clone(),
                status,
                error,
                started_by: actor.user_id.clone(),
                created_at: now,
                updated_at: now,
            },
            joins: transition.joins.clone(),
            multi: transition.multi.clone(),
            rev: 0,
        };
        let change = Change {
            graph,
            record,
            start: true,
            transition,
            open_before: Vec::new(),
            closing: Vec::new(),
            handover: None,
            hold: None,
            events: Vec::new(),
            actor: actor.user_id.clone(),
            claim: request.claim(&instance_id),
            now,
        };
        let ready = transition::prepare(Source::Pool(&self.store), &self.mailer, change).await?;
        match self.write_ready(ready).await? {
            Written::Done(done) => {
                tracing::info!(instance = %instance_id, key = %stored.key, version = stored.version, "instance started");
                Ok(self.after_commit(done))
            }
            // The same request committed meanwhile: answer with its result.
            Written::Claimed => self.instance(&request.taken(&self.store).await?).await,
            Written::Stale => Err(Error::Internal(anyhow::anyhow!(
                "a new instance cannot be stale"
            ))),
        }
    }

    pub async fn instance(&self, id: &str) -> Result<InstanceView> {
        if id.is_empty() {
            return Err(Error::invalid("id", "required"));
        }
        let record = self
            .store
            .instance_record(id)
            .await?
            .ok_or_else(|| Error::not_found("process instance", id))?;
        let open_tasks = self.store.open_tasks(id).await?;
        Ok(InstanceView {
            instance: record.instance,
            open_tasks,
            multi: record.multi,
        })
    }

    pub async fn list_instances(
        &self,
        filter: &InstanceFilter,
        page: &PageRequest,
    ) -> Result<Page<InstanceView>> {
        let page = self.store.list_instances(filter, page).await?;
        // One query for the open tasks of the whole page, not one per instance.
        let running: Vec<String> = page
            .items
            .iter()
            .filter(|i| {
                matches!(
                    i.status,
                    InstanceStatus::Running | InstanceStatus::Suspended
                )
            })
            .map(|i| i.id.clone())
            .collect();
        let mut open = self.store.open_tasks_of(&running).await?;
        let mut items = Vec::with_capacity(page.items.len());
        for instance in page.items {
            let open_tasks = open.remove(&instance.id).unwrap_or_default();
            items.push(InstanceView {
                instance,
                open_tasks,
                multi: MultiState::default(),
            });
        }
        Ok(Page {
            items,
            next_page_token: page.next_page_token,
        })
    }

    /// Cancels a running instance and its open tasks. Only its initiator may.
    pub async fn cancel_instance(
        &self,
        actor: &Actor,
        id: &str,
        reason: &str,
        request_id: &str,
    ) -> Result<InstanceView> {
        let request = RequestId::new("cancel_instance", actor, request_id, &[id, reason])?;
        if id.is_empty() {
            return Err(Error::invalid("id", "required"));
        }
        if request.earlier(&self.store).await?.is_some() {
            return self.instance(id).await;
        }
        for _ in 0..super::tasks::PREPARE_ATTEMPTS {
            let now = self.now();
            let record = self
                .store
                .instance_record(id)
                .await?
                .ok_or_else(|| Error::not_found("process instance", id))?;
            crate::policy::can(
                actor,
                crate::policy::Action::CancelInstance(crate::policy::InstanceAccess {
                    started_by: &record.instance.started_by,
                    participant: false,
                }),
            )?;
            if record.instance.status == InstanceStatus::Cancelled {
                // Cancelling twice is a retry, not an error: answer with the cancelled instance.
                return self.instance(id).await;
            }
            // A suspended instance may still be cancelled: suspending holds decisions, not the
            // initiator's withdrawal of the whole request.
            if !matches!(
                record.instance.status,
                InstanceStatus::Running | InstanceStatus::Suspended
            ) {
                return Err(Error::FailedPrecondition(format!(
                    "instance is {} and cannot be cancelled",
                    record.instance.status.as_str()
                )));
            }
            let open = self.store.open_tasks(id).await?;
            let graph = self
                .graph_of(
                    &record.instance.definition_key,
                    record.instance.definition_version,
                )
                .await?;
            let transition = runtime::cancel(
                Snapshot {
                    variables: &record.instance.variables,
                    joins: &record.joins,
                    multi: &record.multi,
                    open_tasks: &engine_tasks(&open),
                    people: &People::default(),
                },
                reason,
            );
            let change = Change {
                graph,
                record,
                start: false,
                transition,
                open_before: open,
                closing: Vec::new(),
                handover: None,
                hold: None,
                events: Vec::new(),
                actor: actor.user_id.clone(),
                claim: request.claim(id),
                now,
            };
            let ready =
                transition::prepare(Source::Pool(&self.store), &self.mailer, change).await?;
            match self.write_ready(ready).await? {
                Written::Done(done) => return Ok(self.after_commit(done)),
                Written::Claimed => {
                    request.taken(&self.store).await?;
                    return self.instance(id).await;
                }
                Written::Stale => continue,
            }
        }
        Err(Error::Aborted(format!(
            "process instance {id} kept changing while it was being cancelled; send the same request again"
        )))
    }

    /// 挂起: SuspendProcessInstance.
    pub async fn suspend_instance(
        &self,
        actor: &Actor,
        id: &str,
        comment: &str,
        request_id: &str,
    ) -> Result<InstanceView> {
        self.hold_instance(actor, id, comment, request_id, Hold::Suspend)
            .await
    }

    /// 激活: ResumeProcessInstance.
    pub async fn resume_instance(
        &self,
        actor: &Actor,
        id: &str,
        comment: &str,
        request_id: &str,
    ) -> Result<InstanceView> {
        self.hold_instance(actor, id, comment, request_id, Hold::Resume)
            .await
    }

    /// 挂起 (`Hold::Suspend`, a running instance) or 激活 (`Hold::Resume`, a suspended one): one
    /// transition that moves no task, sets the status, holds or releases the instance's waiting
    /// reminders and writes `instance_suspended` / `instance_resumed`. The initiator or an admin.
    async fn hold_instance(
        &self,
        actor: &Actor,
        id: &str,
        comment: &str,
        request_id: &str,
        hold: Hold,
    ) -> Result<InstanceView> {
        let (use_case, kind, from, verb) = match hold {
            Hold::Suspend => (
                "suspend_instance",
                "instance_suspended",
                InstanceStatus::Running,
                "suspended",
            ),
            Hold::Resume => (
                "resume_instance",
                "instance_resumed",
                InstanceStatus::Suspended,
                "resumed",
            ),
        };
        let request = RequestId::new(use_case, actor, request_id, &[id, comment])?;
        if id.is_empty() {
            return Err(Error::invalid("process_instance_id", "required"));
        }
        crate::bounds::check_text("comment", comment, crate::bounds::MAX_COMMENT_LEN)?;
        if request.earlier(&self.store).await?.is_some() {
            return self.instance(id).await;
        }
        for _ in 0..super::tasks::PREPARE_ATTEMPTS {
            let now = self.now();
            let record = self
                .store
                .instance_record(id)
                .await?
                .ok_or_else(|| Error::not_found("process instance", id))?;
            crate::policy::can(
                actor,
                crate::policy::Action::SuspendInstance(crate::policy::InstanceAccess {
                    started_by: &record.instance.started_by,
                    participant: false,
                }),
            )?;
            let status = record.instance.status;
            if status != from {
                let why = match (hold, status) {
                    (Hold::Suspend, InstanceStatus::Suspended) => "is already suspended".into(),
                    (Hold::Resume, InstanceStatus::Running) => {
                        "is running, not suspended: nothing to resume".into()
                    }
                    (_, other) => format!("is {} and cannot be {verb}", other.as_str()),
                };
                return Err(Error::FailedPrecondition(format!("instance {id} {why}")));
            }
            let open = self.store.open_tasks(id).await?;
            let graph = self
                .graph_of(
                    &record.instance.definition_key,
                    record.instance.definition_version,
                )
                .await?;
            // Nothing moves in the process: the engine's part of the change is the state as it is.
            let unchanged = Transition {
                variables: record.instance.variables.clone(),
                joins: record.joins.clone(),
                multi: record.multi.clone(),
                outcome: InstanceOutcome::Running,
                open: Vec::new(),
                auto_completed: Vec::new(),
                withdraw: Vec::new(),
                cancel: Vec::new(),
                events: Vec::new(),
            };
            let change = Change {
                graph,
                record,
                start: false,
                transition: unchanged,
                open_before: open,
                closing: Vec::new(),
                handover: None,
                hold: Some(hold),
                events: vec![Event {
                    instance_id: id.to_string(),
                    at: now,
                    kind: kind.into(),
                    activity_id: String::new(),
                    actor: actor.user_id.clone(),
                    detail: serde_json::json!({ "comment": comment }),
                }],
                actor: actor.user_id.clone(),
                claim: request.claim(id),
                now,
            };
            let ready =
                transition::prepare(Source::Pool(&self.store), &self.mailer, change).await?;
            match self.write_ready(ready).await? {
                Written::Done(done) => {
                    tracing::info!(instance = %id, by = %actor.user_id, "instance {verb}");
                    return Ok(self.after_commit(done));
                }
                Written::Claimed => {
                    request.taken(&self.store).await?;
                    return self.instance(id).await;
                }
                Written::Stale => continue,
            }
        }
        Err(Error::Aborted(format!(
            "process instance {id} kept changing while it was being {verb}; send the same request again"
        )))
    }

    /// Writes a prepared transition through the group writer (a transaction shared with other
    /// concurrent transitions); a stale or already-claimed one is rolled back alone.
    pub(super) async fn write_ready(&self, ready: Ready) -> Result<Written> {
        self.store
            .write(move |tx| {
                Box::pin(async move {
                    Ok(match transition::write(tx, ready).await? {
                        done @ Written::Done(_) => Step::Keep(done),
                        other => Step::Undo(other),
                    })
                })
            })
            .await
    }

    /// After a transition committed: tell watchers and the outbox worker; the caller's answer.
    pub(super) fn after_commit(&self, done: Box<Done>) -> InstanceView {
        self.publish(done.published);
        self.publish_messages(done.messages);
        if done.queued_mail {
            self.mailer.wake().notify_one();
        }
        done.view
    }
}
