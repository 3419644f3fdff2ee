//! Email approval, outbound (DESIGN §5): when a task with email approval opens, the same
//! transaction writes its approval context (审批上下文) and the rendered mail into the outbox, so a
//! committed task always has its mail and no mail exists for a task that was never committed.
//! The approval use cases of the API (read, resend, revoke) live in `manage`.
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::Workflow;
use crate::{
    config::MailSettings,
    duration::Duration,
    engine::definition::{NodeKind, ProcessDefinition, UserTaskSpec},
    error::{Error, Result},
    mail::{
        compose::{
            self, ApprovalMail, Locale, MailKind, Mailbox, OutcomeChoice, Signing, Templates,
        },
        token::{self, KeyRing},
    },
    model::{
        ApprovalContext, ApprovalStatus, Event, Instance, OutboxKind, OutboxMail, OutboxStatus,
        Task,
    },
    store::{Tx, writes::Source},
};

mod keys;
mod manage;
pub(super) mod signing;

pub use keys::load_key_ring;

/// Everything needed to write approval mail: templates, signing keys, addresses, limits.
#[derive(Debug)]
pub struct Mailer {
    templates: Templates,
    /// What reminders say; overridable from `mail.templates_dir` like the mail templates.
    reminder_texts: crate::mail::reminder_texts::ReminderTexts,
    /// Answers to received replies; overridable from `mail.templates_dir` too.
    answer_templates: crate::mail::answer::AnswerTemplates,
    /// Carbon copies (抄送): FYI mail without a reply token.
    cc_templates: crate::mail::cc::CcTemplates,
    keys: KeyRing,
    from: Mailbox,
    reply_box: String,
    reply_domain: String,
    default_valid_for_ms: i64,
    resend_interval_ms: i64,
    wake: Arc<Notify>,
    /// What replies must pass (mail.authserv_id, mail.require_auth); checked by ingestion.
    inbound_auth: crate::mail::reply::InboundAuth,
    /// What received mail may cost us (mail.answers_per_hour, mail.answers_per_sender_per_hour,
    /// mail.quarantine_after).
    inbound_limits: InboundLimits,
}

/// Bounds on what received mail may make the server do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundLimits {
    /// Answers per hour, all senders together.
    pub answers_per_hour: i64,
    /// Answers per sender and hour.
    pub answers_per_sender_per_hour: i64,
    /// Failed ingestions after which a mail is quarantined.
    pub quarantine_after: i64,
}

/// The longest local part RFC 5321 allows; `box+token` must fit.
const MAX_LOCAL_PART: usize = 64;

impl Mailer {
    pub fn new(
        templates: Templates,
        keys: KeyRing,
        settings: &MailSettings,
    ) -> anyhow::Result<Self> {
        let from = Mailbox::parse(&settings.from).map_err(|e| anyhow::anyhow!("mail.from: {e}"))?;
        let reply_address = settings
            .reply_address
            .clone()
            .unwrap_or_else(|| from.address.clone());
        let (reply_box, reply_domain) = reply_address
            .rsplit_once('@')
            .filter(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !local.contains('+')
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "mail.reply_address: expected box@domain without '+', got {reply_address:?}"
                )
            })?;
        if reply_box.len() + 1 + token::TOKEN_LEN > MAX_LOCAL_PART {
            anyhow::bail!(
                "mail.reply_address: the box {reply_box:?} is too long: box+token must fit in 64 characters"
            );
        }
        let duration_ms = |key: &str, value: &str| -> anyhow::Result<i64> {
            let duration = Duration::parse(value).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            Ok(duration.ms())
        };
        let templates_dir = settings.templates_dir.as_deref().map(std::path::Path::new);
        Ok(Self {
            templates,
            reminder_texts: crate::mail::reminder_texts::ReminderTexts::load(templates_dir)?,
            answer_templates: crate::mail::answer::AnswerTemplates::load(templates_dir)?,
            cc_templates: crate::mail::cc::CcTemplates::load(templates_dir)?,
            keys,
            from,
            reply_box: reply_box.to_string(),
            reply_domain: reply_domain.to_string(),
            default_valid_for_ms: duration_ms("mail.valid_for", &settings.valid_for)?,
            resend_interval_ms: duration_ms("mail.resend_interval", &settings.resend_interval)?,
            wake: Arc::new(Notify::new()),
            inbound_auth: crate::mail::reply::InboundAuth::from_settings(
                settings.authserv_id.as_deref(),
                &settings.require_auth,
            )?,
            inbound_limits: InboundLimits {
                answers_per_hour: i64::from(settings.answers_per_hour),
                answers_per_sender_per_hour: i64::from(settings.answers_per_sender_per_hour),
                quarantine_after: i64::from(settings.quarantine_after.max(1)),
            },
        })
    }

    /// Notified after every commit that queued mail; the outbox worker waits on it.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn reminder_texts(&self) -> &crate::mail::reminder_texts::ReminderTexts {
        &self.reminder_texts
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn inbound_auth(&self) -> &crate::mail::reply::InboundAuth {
        &self.inbound_auth
    }

    pub fn inbound_limits(&self) -> InboundLimits {
        self.inbound_limits
    }

    pub fn reply_address(&self, token: &str) -> String {
        format!("{}+{token}@{}", self.reply_box, self.reply_domain)
    }

    fn valid_for_ms(&self, spec: &UserTaskSpec) -> i64 {
        spec.valid_for
            .map_or(self.default_valid_for_ms, Duration::ms)
    }

    /// The approval context and rendered, signed mail of a task that opens, computed before any
    /// transaction (the transition writer only inserts them). `user`: the assignee as read from
    /// the directory; `signing`: their place among the signers of a multi-instance step. None
    /// when the task's activity has no email approval.
    pub(super) fn approval_for(
        &self,
        graph: &ProcessDefinition,
        instance: &Instance,
        task: &Task,
        user: Option<&crate::model::User>,
        signing: Option<Signing>,
        now: i64,
    ) -> Result<Option<OpenedApproval>> {
        let Some(spec) = user_task_spec(graph, &task.activity_id) else {
            return Ok(None);
        };
        if !spec.email_approval {
            return Ok(None);
        }
        let event = |kind: &str, detail: Value| Event {
            instance_id: instance.id.clone(),
            at: now,
            kind: kind.to_string(),
            activity_id: task.activity_id.clone(),
            actor: String::new(),
            detail,
        };
        let skipped = |reason: String| {
            Ok(Some(OpenedApproval {
                written: None,
                event: event(
                    "email_approval_skipped",
                    json!({"task_id": task.id, "reason": reason}),
                ),
            }))
        };
        let Some(user) = user.filter(|u| !u.email.is_empty()) else {
            return skipped(format!(
                "{} has no email address in the directory: the task is open without email approval",
                task.assignee
            ));
        };
        // UpsertUser refuses such addresses; one stored by an earlier release must not make
        // every transition that opens a task for this user fail.
        if user.email.parse::<lettre::Address>().is_err() {
            return skipped(format!(
                "{}'s email address {:?} cannot be mailed: the task is open without email approval",
                task.assignee, user.email
            ));
        }
        let id = token::new_context_id();
        let context = ApprovalContext {
            id: id.clone(),
            task_id: task.id.clone(),
            instance_id: instance.id.clone(),
            approver: user.id.clone(),
            approver_email: user.email.clone(),
            approver_aliases: user
                .email_aliases
                .iter()
                .map(|a| a.to_lowercase())
                .collect(),
            kid: self.keys.current_kid(),
            sent_at: now,
            valid_until: now.saturating_add(self.valid_for_ms(spec)),
            status: ApprovalStatus::Pending,
            message_id: format!("<rf.{id}.1@{}>", self.reply_domain),
            subject_tag: format!("RF-{}", &id[..8.min(id.len())]),
            last_mail_at: now,
            revoke_reason: String::new(),
            used_at: None,
        };
        let mail = self.compose(
            &context,
            graph,
            spec,
            instance,
            task,
            user,
            MailKind::Approval,
            &context.message_id,
            None,
            "",
            signing,
            now,
        )?;
        let event = event(
            "approval_mail_queued",
            json!({"task_id": task.id, "context_id": context.id, "to": user.email, "message_id": context.message_id}),
        );
        Ok(Some(OpenedApproval {
            written: Some((context, mail)),
            event,
        }))
    }

    /// A reminder mail for an open task, carrying the reply token of its pending approval
    /// context, so that replying to it decides the task like replying to the approval mail.
    /// `Ok(Err(why))` when the task has no usable context (no email approval, expired, revoked).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn reminder_mail(
        &self,
        tx: &mut Tx,
        graph: &ProcessDefinition,
        instance: &Instance,
        task: &Task,
        user: &crate::model::User,
        note: &str,
        now: i64,
    ) -> Result<std::result::Result<OutboxMail, String>> {
        let Some(spec) = user_task_spec(graph, &task.activity_id) else {
            return Ok(Err(format!("{} is not a user task", task.activity_id)));
        };
        let context = tx
            .pending_approvals_of_task(&task.id)
            .await?
            .into_iter()
            // Only to the address the approval was issued to: a changed address revokes the
            // context (UpsertUser), and its token never goes to another address.
            .find(|c| {
                c.valid_until > now
                    && c.approver == user.id
                    && c.approver_email.eq_ignore_ascii_case(&user.email)
            });
        let Some(context) = context else {
            return Ok(Err(format!(
                "task {} has no pending approval context for {} (email approval off, expired or revoked)",
                task.id, user.id
            )));
        };
        let message_id = format!(
            "<rf.{}.r{}@{}>",
            context.id,
            uuid::Uuid::now_v7().simple(),
            self.reply_domain
        );
        let signing = match spec.multi.is_some() {
            true => match tx.instance(&task.instance_id).await? {
                Some(record) => {
                    let mut source = Source::Tx(tx);
                    signing::read_signing(&mut source, graph, &record.multi, task).await?
                }
                None => None,
            },
            false => None,
        };
        let mail = self.compose(
            &context,
            graph,
            spec,
            instance,
            task,
            user,
            MailKind::Reminder,
            &message_id,
            Some(&context.message_id),
            note,
            signing,
            now,
        )?;
        Ok(Ok(mail))
    }

    /// A mail about `context`, rendered now. `thread`: the first mail's Message-ID.
    #[allow(clippy::too_many_arguments)]
    fn compose(
        &self,
        context: &ApprovalContext,
        graph: &ProcessDefinition,
        spec: &UserTaskSpec,
        instance: &Instance,
        task: &Task,
        user: &crate::model::User,
        kind: MailKind,
        message_id: &str,
        thread: Option<&str>,
        note: &str,
        signing: Option<Signing>,
        now: i64,
    ) -> Result<OutboxMail> {
        let token = token::issue_with_kid(
            &self.keys,
            context.kid,
            &context.id,
            &context.approver_email,
            context.valid_until,
        )
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("token key {} is gone", context.kid)))?;
        let mail = ApprovalMail {
            kind,
            locale: Locale::from_tag(&user.locale),
            from: self.from.clone(),
            to: Mailbox {
                name: user.display_name.clone(),
                address: user.email.clone(),
            },
            reply_to: self.reply_address(&token),
            message_id: message_id.to_string(),
            thread: thread.map(str::to_string),
            subject_tag: context.subject_tag.clone(),
            process_name: graph.name.clone(),
            task_name: task.name.clone(),
            business_key: instance.business_key.clone(),
            initiator: instance.started_by.clone(),
            fields: spec
                .show
                .iter()
                .map(|name| (name.clone(), show_value(instance.variables.get(name))))
                .collect(),
            outcomes: spec
                .outcomes
                .iter()
                .zip(1..)
                .map(|(o, number)| OutcomeChoice {
                    number,
                    id: o.id.clone(),
                    label: o.label.clone(),
                    keywords: o.keywords.clone(),
                })
                .collect(),
            deadline: context.valid_until,
            date: now,
            token,
            note: note.to_string(),
            signing,
        };
        let body = compose::render(&self.templates, &mail)
            .map_err(|e| Error::Internal(e.context("rendering an approval mail")))?;
        Ok(OutboxMail {
            id: uuid::Uuid::now_v7().to_string(),
            kind: match kind {
                MailKind::Approval => OutboxKind::Approval,
                MailKind::Reminder => OutboxKind::Reminder,
            },
            context_id: context.id.clone(),
            task_id: task.id.clone(),
            recipient: user.email.clone(),
            sender: self.from.address.clone(),
            message_id: message_id.to_string(),
            body,
            status: OutboxStatus::Queued,
            attempts: 0,
            next_attempt_at: now,
            last_error: String::new(),
            created_at: now,
            sent_at: None,
            fallback: String::new(),
        })
    }

    /// A carbon copy's title and text, for the in-system message.
    pub(super) fn cc_text(&self, mail: &crate::mail::cc::CcMail) -> Result<(String, String)> {
        self.cc_templates
            .text(mail)
            .map_err(|e| Error::Internal(e.context("rendering a carbon copy")))
    }

    /// A carbon copy's FYI mail, ready for the outbox: no approval context, no reply token.
    pub(super) fn cc_mail(
        &self,
        mut mail: crate::mail::cc::CcMail,
        now: i64,
    ) -> Result<OutboxMail> {
        mail.from = self.from.clone();
        mail.message_id = format!(
            "<rf.cc.{}@{}>",
            uuid::Uuid::now_v7().simple(),
            self.reply_domain
        );
        mail.date = now;
        let body = self
            .cc_templates
            .render(&mail)
            .map_err(|e| Error::Internal(e.context("rendering a carbon copy")))?;
        Ok(OutboxMail {
            id: uuid::Uuid::now_v7().to_string(),
            kind: OutboxKind::Cc,
            context_id: String::new(),
            task_id: String::new(),
            recipient: mail.to.clone(),
            sender: self.from.address.clone(),
            message_id: mail.message_id.clone(),
            body,
            status: OutboxStatus::Queued,
            attempts: 0,
            next_attempt_at: now,
            last_error: String::new(),
            created_at: now,
            sent_at: None,
            fallback: String::new(),
        })
    }

    /// The polite answer to a received mail, ready for the outbox.
    pub(super) fn answer(
        &self,
        mut mail: crate::mail::answer::AnswerMail,
        task_id: &str,
        now: i64,
    ) -> Result<OutboxMail> {
        mail.from = self.from.clone();
        mail.message_id = format!(
            "<rf.answer.{}@{}>",
            uuid::Uuid::now_v7().simple(),
            self.reply_domain
        );
        mail.date = now;
        let body = self
            .answer_templates
            .render(&mail)
            .map_err(|e| Error::Internal(e.context("rendering an answer")))?;
        Ok(OutboxMail {
            id: uuid::Uuid::now_v7().to_string(),
            kind: OutboxKind::Answer,
            context_id: String::new(),
            task_id: task_id.to_string(),
            recipient: mail.to.clone(),
            sender: self.from.address.clone(),
            message_id: mail.message_id.clone(),
            body,
            status: OutboxStatus::Queued,
            attempts: 0,
            next_attempt_at: now,
            last_error: String::new(),
            created_at: now,
            sent_at: None,
            fallback: String::new(),
        })
    }
}

/// A task of this activity gets an approval mail (and so needs its assignee's address).
pub(super) fn wants_email(graph: &ProcessDefinition, activity_id: &str) -> bool {
    user_task_spec(graph, activity_id).is_some_and(|spec| spec.email_approval)
}

/// What opening a task's email approval comes to: the context and its mail to insert (none when
/// the assignee cannot be mailed), and the audit event saying which.
#[derive(Debug, Clone)]
pub(super) struct OpenedApproval {
    pub written: Option<(ApprovalContext, OutboxMail)>,
    pub event: Event,
}

fn user_task_spec<'g>(graph: &'g ProcessDefinition, activity_id: &str) -> Option<&'g UserTaskSpec> {
    match graph.node(activity_id).map(|(_, node)| &node.kind) {
        Some(NodeKind::UserTask(spec)) => Some(spec),
        _ => None,
    }
}

fn show_value(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "—".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// What GetApproval shows: the context and the delivery of its latest mail.
#[derive(Debug, Clone)]
pub struct ApprovalView {
    pub context: ApprovalContext,
    pub latest_mail: Option<OutboxMail>,
}

impl Workflow {
    /// The reply-token keys this server signs and verifies with.
    pub fn reply_token_keys(&self) -> &KeyRing {
        &self.mailer.keys
    }
}
