//! The approval use cases of the API — read, resend (same token, rate-limited), revoke — and the
//! re-addressing of pending approvals when a user's email address changes (UpsertUser).
//!
//! They write like a transition (issue 10): each is decided outside any transaction, from the
//! instance read first — its `rev` moves on with every change of its tasks and of their approval
//! contexts — with its mail rendered and signed then. What it writes is one batch of the
//! transition writer's statements (`store::writes`: the request id, the instance's `rev`,
//! contexts revoked and issued, mail queued, events) through the group writer, so that contexts
//! are issued and revoked in one way only. If what the decision read changed meanwhile (the
//! batch's guards), the batch is undone alone and the decision made again.
use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::{ApprovalView, OpenedApproval, signing::read_signing, user_task_spec};
use crate::{
    error::{Error, Result},
    mail::compose::MailKind,
    model::{ApprovalStatus, Event, Task, TaskStatus, User},
    store::{
        Batch, Guards, InstanceRecord, Step,
        writes::{GUARD_APPROVAL_CHANGED, GUARD_CLAIM, GUARD_INSTANCE, GUARD_USER_CHANGED, Source},
    },
    workflow::{Actor, Workflow, idempotency::RequestId, tasks::PREPARE_ATTEMPTS},
};

/// What writing an approval change came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    Done,
    /// What the decision read changed: undone, decide again.
    Stale,
    /// The request id was used meanwhile (a concurrent retry): undone, answer with its result.
    Claimed,
}

/// An approval change ready to write.
#[derive(Debug, Default)]
struct ApprovalChange {
    batch: Batch,
    /// The batch records a request id.
    claimed: bool,
    /// Instances whose `rev` the batch moves on: each must still have the one read.
    instances: usize,
    queues_mail: bool,
}

impl ApprovalChange {
    fn bump(&mut self, record: &InstanceRecord) {
        self.batch
            .bump_instance_rev(&record.instance.id, record.rev);
        self.instances += 1;
    }
}

/// What the guards of a change's batch say.
fn settle(result: Result<Guards>, claimed: bool, instances: usize) -> Result<Wrote> {
    let guards = match result {
        // A deadlock or lock timeout with another writer: undo and decide again, like a change.
        Err(Error::Aborted(_)) => return Ok(Wrote::Stale),
        other => other?,
    };
    if claimed && !guards.has(GUARD_CLAIM) {
        return Ok(Wrote::Claimed);
    }
    if guards.count(GUARD_INSTANCE) < instances
        || guards.has(GUARD_USER_CHANGED)
        || guards.has(GUARD_APPROVAL_CHANGED)
    {
        return Ok(Wrote::Stale);
    }
    Ok(Wrote::Done)
}

impl Workflow {
    pub async fn approval(&self, task_id: &str) -> Result<ApprovalView> {
        if task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        self.task(task_id).await?;
        let context = self
            .store
            .approval_for_task(task_id)
            .await?
            .ok_or_else(|| Error::not_found("approval context of task", task_id))?;
        let mut context = context;
        if context.status == ApprovalStatus::Pending && context.valid_until <= self.now() {
            context.status = ApprovalStatus::Expired;
        }
        let latest_mail = self.store.mail_for_context(&context.id).await?.pop();
        Ok(ApprovalView {
            context,
            latest_mail,
        })
    }

    /// Sends the approval mail again, threaded under the first one: with the same token while
    /// the context is pending, else (or with `renew`) under a new context with a fresh token. The
    /// task's assignee or the instance's initiator may; at most once per `mail.resend_interval`.
    pub async fn resend_approval(
        &self,
        actor: &Actor,
        task_id: &str,
        renew: bool,
        request_id: &str,
    ) -> Result<ApprovalView> {
        let request = RequestId::new(
            "resend_approval",
            actor,
            request_id,
            &[task_id, if renew { "renew" } else { "" }],
        )?;
        let task = self.task(task_id).await?;
        if request.earlier(&self.store).await?.is_some() {
            return self.approval(task_id).await;
        }
        for _ in 0..PREPARE_ATTEMPTS {
            let change = self.prepare_resend(actor, &task, renew, &request).await?;
            match self.write_approvals(change).await? {
                Wrote::Done => return self.approval(task_id).await,
                Wrote::Claimed => {
                    request.taken(&self.store).await?;
                    return self.approval(task_id).await;
                }
                Wrote::Stale => {}
            }
        }
        Err(Error::Aborted(format!(
            "task {task_id}'s process instance kept changing while its approval mail was being resent; send the same request again"
        )))
    }

    /// Decides a resend from the instance as it is now (`task`: as read before, for its ids).
    async fn prepare_resend(
        &self,
        actor: &Actor,
        task: &Task,
        renew: bool,
        request: &RequestId,
    ) -> Result<ApprovalChange> {
        let mailer = &self.mailer;
        let task_id = task.id.as_str();
        let now = self.now();
        // The instance first: whatever is read after it and changed since moved its `rev` on.
        let record = self
            .store
            .instance_record(&task.instance_id)
            .await?
            .ok_or_else(|| Error::not_found("process instance", &task.instance_id))?;
        let task = self.task(task_id).await?;
        let instance = &record.instance;
        crate::policy::can(
            actor,
            crate::policy::Action::ManageApprovalMail {
                instance: crate::policy::InstanceAccess {
                    started_by: &instance.started_by,
                    participant: false,
                },
                assignee: &task.assignee,
            },
        )?;
        if task.status != TaskStatus::Open {
            return Err(Error::FailedPrecondition(format!(
                "task {task_id} is {}",
                task.status.as_str()
            )));
        }
        let graph = self
            .graph_of(&task.definition_key, task.definition_version)
            .await?;
        let spec = user_task_spec(&graph, &task.activity_id)
            .filter(|spec| spec.email_approval)
            .ok_or_else(|| {
                Error::FailedPrecondition("email approval is off for this task".into())
            })?;
        let context = self
            .store
            .approval_for_task(task_id)
            .await?
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "task {task_id} has no approval context (its assignee had no email address)"
                ))
            })?;
        let next_allowed = context
            .last_mail_at
            .saturating_add(mailer.resend_interval_ms);
        if now < next_allowed {
            return Err(Error::FailedPrecondition(format!(
                "an approval mail was sent at {}; the next may be sent from {}",
                crate::clock::rfc3339(context.last_mail_at),
                crate::clock::rfc3339(next_allowed)
            )));
        }
        let mut change = ApprovalChange {
            queues_mail: true,
            ..ApprovalChange::default()
        };
        change.claimed = request.claim_in_batch(&mut change.batch, task_id, now);
        change.bump(&record);
        change
            .batch
            .approvals_unchanged(std::slice::from_ref(&context));
        let reusable =
            context.status == ApprovalStatus::Pending && context.valid_until > now && !renew;
        let (kind, detail) = if reusable {
            let user = self.store.user(&context.approver).await?.ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "{} is no longer in the directory",
                    context.approver
                ))
            })?;
            let sequence = self.store.mail_for_context(&context.id).await?.len() + 1;
            let message_id = format!("<rf.{}.{sequence}@{}>", context.id, mailer.reply_domain);
            let signing =
                read_signing(&mut Source::Pool(&self.store), &graph, &record.multi, &task).await?;
            let mail = mailer.compose(
                &context,
                &graph,
                spec,
                instance,
                &task,
                &user,
                MailKind::Approval,
                &message_id,
                Some(&context.message_id),
                "",
                signing,
                now,
            )?;
            change.batch.user_unchanged(&user);
            change.batch.touch_approval_mail(&context.id, now);
            change.batch.insert_outbox(std::slice::from_ref(&mail));
            (
                "approval_mail_resent",
                json!({"task_id": task_id, "context_id": context.id, "message_id": message_id}),
            )
        } else {
            // A new context replaces one that expired, was revoked, or is renewed on request.
            let user = self.store.user(&task.assignee).await?;
            let signing =
                read_signing(&mut Source::Pool(&self.store), &graph, &record.multi, &task).await?;
            let Some(OpenedApproval {
                written: Some((issued, mail)),
                event,
            }) = mailer.approval_for(&graph, instance, &task, user.as_ref(), signing, now)?
            else {
                return Err(Error::FailedPrecondition(format!(
                    "{} has no email address any more",
                    task.assignee
                )));
            };
            if let Some(user) = &user {
                change.batch.user_unchanged(user);
            }
            let pending: Vec<String> = Source::Pool(&self.store)
                .pending_approvals_of_tasks(std::slice::from_ref(&task.id))
                .await?
                .into_iter()
                .map(|c| c.id)
                .collect();
            change.batch.revoke_approvals(&pending, "renewed");
            change
                .batch
                .insert_approvals(std::slice::from_ref(&issued))?;
            change.batch.insert_outbox(std::slice::from_ref(&mail));
            (
                "approval_renewed",
                json!({"task_id": task_id, "replaces": context.id, "detail": event.detail}),
            )
        };
        change.batch.insert_events(&[Event {
            instance_id: task.instance_id.clone(),
            at: now,
            kind: kind.into(),
            activity_id: task.activity_id.clone(),
            actor: actor.user_id.clone(),
            detail,
        }])?;
        Ok(change)
    }

    /// The token stops working; the task stays open for the API and other channels.
    pub async fn revoke_approval(
        &self,
        actor: &Actor,
        task_id: &str,
        reason: &str,
        request_id: &str,
    ) -> Result<ApprovalView> {
        let request = RequestId::new("revoke_approval", actor, request_id, &[task_id, reason])?;
        let task = self.task(task_id).await?;
        if request.earlier(&self.store).await?.is_some() {
            return self.approval(task_id).await;
        }
        let reason = if reason.trim().is_empty() {
            "revoked"
        } else {
            reason.trim()
        };
        for _ in 0..PREPARE_ATTEMPTS {
            let now = self.now();
            // The instance first: whatever is read after it and changed since moved its `rev` on.
            let record = self
                .store
                .instance_record(&task.instance_id)
                .await?
                .ok_or_else(|| Error::not_found("process instance", &task.instance_id))?;
            let task = self.task(task_id).await?;
            crate::policy::can(
                actor,
                crate::policy::Action::ManageApprovalMail {
                    instance: crate::policy::InstanceAccess {
                        started_by: &record.instance.started_by,
                        participant: false,
                    },
                    assignee: &task.assignee,
                },
            )?;
            let context = self
                .store
                .approval_for_task(task_id)
                .await?
                .ok_or_else(|| Error::not_found("approval context of task", task_id))?;
            match context.status {
                ApprovalStatus::Revoked => return self.approval(task_id).await,
                ApprovalStatus::Pending if context.valid_until <= now => {
                    return Err(Error::FailedPrecondition("the approval has expired".into()));
                }
                ApprovalStatus::Pending => {}
                other => {
                    return Err(Error::FailedPrecondition(format!(
                        "the approval is already {}",
                        other.as_str()
                    )));
                }
            }
            let mut change = ApprovalChange::default();
            change.claimed = request.claim_in_batch(&mut change.batch, task_id, now);
            change.bump(&record);
            change
                .batch
                .approvals_unchanged(std::slice::from_ref(&context));
            change
                .batch
                .revoke_approvals(std::slice::from_ref(&context.id), reason);
            change.batch.insert_events(&[Event {
                instance_id: task.instance_id.clone(),
                at: now,
                kind: "approval_revoked".into(),
                activity_id: task.activity_id.clone(),
                actor: actor.user_id.clone(),
                detail: json!({"task_id": task_id, "context_id": context.id, "reason": reason}),
            }])?;
            match self.write_approvals(change).await? {
                Wrote::Done => return self.approval(task_id).await,
                Wrote::Claimed => {
                    request.taken(&self.store).await?;
                    return self.approval(task_id).await;
                }
                Wrote::Stale => {}
            }
        }
        Err(Error::Aborted(format!(
            "task {task_id}'s process instance kept changing while its approval was being revoked; send the same request again"
        )))
    }

    /// Writes `change` through the group writer; a stale or already-claimed one is undone alone.
    async fn write_approvals(&self, change: ApprovalChange) -> Result<Wrote> {
        let queues_mail = change.queues_mail;
        let wrote = self
            .store
            .write(move |tx| {
                Box::pin(async move {
                    let (claimed, instances) = (change.claimed, change.instances);
                    let wrote = settle(tx.run_batch(change.batch).await, claimed, instances)?;
                    Ok(match wrote {
                        Wrote::Done => Step::Keep(wrote),
                        other => Step::Undo(other),
                    })
                })
            })
            .await?;
        if wrote == Wrote::Done && queues_mail {
            self.mailer.wake().notify_one();
        }
        Ok(wrote)
    }

    /// Stores `user` (UpsertUser; `user.updated_at` is `now`). A changed email address revokes
    /// the user's pending approval contexts — a token must not decide from the new address, nor
    /// keep deciding from the old one — and mails each of their open tasks afresh to the new
    /// address, with the user's row (DESIGN §12, four eyes): a reply token is good only from
    /// where it was sent.
    pub(in crate::workflow) async fn save_user(&self, user: &User, now: i64) -> Result<()> {
        for _ in 0..PREPARE_ATTEMPTS {
            let before = self.store.user(&user.id).await?;
            let readdressed = before
                .as_ref()
                .is_some_and(|b| !b.email.eq_ignore_ascii_case(&user.email));
            let change = if readdressed {
                self.prepare_readdress(user, now).await?
            } else {
                ApprovalChange::default()
            };
            let read = before.map(|b| (b.email, b.updated_at));
            let queues_mail = change.queues_mail;
            let user = user.clone();
            let wrote = self
                .store
                .write(move |tx| {
                    Box::pin(async move {
                        // The decision was made from the address stored now.
                        let stored = tx.user(&user.id).await?.map(|u| (u.email, u.updated_at));
                        if stored != read {
                            return Ok(Step::Undo(Wrote::Stale));
                        }
                        if let Some(taken) = tx.upsert_user(&user, now).await? {
                            let field = if taken.address.eq_ignore_ascii_case(&user.email) {
                                "user.email"
                            } else {
                                "user.email_aliases"
                            };
                            return Err(Error::AlreadyExists(format!(
                                "{field}: {} already belongs to user {}",
                                taken.address, taken.owner
                            )));
                        }
                        if change.batch.is_empty() {
                            return Ok(Step::Keep(Wrote::Done));
                        }
                        let (claimed, instances) = (change.claimed, change.instances);
                        let wrote = settle(tx.run_batch(change.batch).await, claimed, instances)?;
                        Ok(match wrote {
                            Wrote::Done => Step::Keep(wrote),
                            other => Step::Undo(other),
                        })
                    })
                })
                .await?;
            if wrote == Wrote::Done {
                if queues_mail {
                    self.mailer.wake().notify_one();
                }
                return Ok(());
            }
        }
        Err(Error::Aborted(format!(
            "user {}'s approvals kept changing while the user was being stored; send the same request again",
            user.id
        )))
    }

    /// The re-addressing of `user`'s pending approval contexts to their new address: every one
    /// is revoked, and each task still open and theirs gets a new context and mail.
    async fn prepare_readdress(&self, user: &User, now: i64) -> Result<ApprovalChange> {
        const WHY: &str = "the approver's email address changed";
        let contexts = self.store.pending_approvals_of(&user.id).await?;
        let ids: Vec<String> = contexts.iter().map(|c| c.id.clone()).collect();
        let mut change = ApprovalChange::default();
        // A context issued to the old address after this read would escape the revocation.
        change.batch.no_other_pending_approvals(&user.id, &ids);
        change.batch.approvals_unchanged(&contexts);
        // Instances after their contexts: a context that changed in between fails its guard.
        let mut records: HashMap<String, InstanceRecord> = HashMap::new();
        for context in &contexts {
            if records.contains_key(&context.instance_id) {
                continue;
            }
            let record = self
                .store
                .instance_record(&context.instance_id)
                .await?
                .ok_or_else(|| Error::not_found("process instance", &context.instance_id))?;
            change.bump(&record);
            records.insert(context.instance_id.clone(), record);
        }
        change.batch.revoke_approvals(&ids, WHY);
        let (mut issued, mut mails, mut events) = (Vec::new(), Vec::new(), Vec::new());
        let mut reopened = HashSet::new();
        for context in &contexts {
            let task = self
                .store
                .task(&context.task_id)
                .await?
                .ok_or_else(|| Error::not_found("task", &context.task_id))?;
            events.push(Event {
                instance_id: task.instance_id.clone(),
                at: now,
                kind: "approval_revoked".into(),
                activity_id: task.activity_id.clone(),
                actor: String::new(),
                detail: json!({"task_id": task.id, "context_id": context.id, "reason": WHY}),
            });
            let still_theirs = task.status == TaskStatus::Open
                && task.assignee == user.id
                && context.valid_until > now;
            if !still_theirs || !reopened.insert(task.id.clone()) {
                continue;
            }
            let Some(record) = records.get(&context.instance_id) else {
                continue;
            };
            let graph = self
                .graph_of(&task.definition_key, task.definition_version)
                .await?;
            let signing =
                read_signing(&mut Source::Pool(&self.store), &graph, &record.multi, &task).await?;
            if let Some(opened) = self.mailer.approval_for(
                &graph,
                &record.instance,
                &task,
                Some(user),
                signing,
                now,
            )? {
                if let Some((context, mail)) = opened.written {
                    issued.push(context);
                    mails.push(mail);
                }
                events.push(opened.event);
            }
        }
        change.batch.insert_approvals(&issued)?;
        change.batch.insert_outbox(&mails);
        change.batch.insert_events(&events)?;
        change.queues_mail = !mails.is_empty();
        Ok(change)
    }
}
