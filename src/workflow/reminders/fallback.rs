//! Channel fallback (DESIGN §6): a reminder that a channel cannot take, at once or after it was
//! queued (a bounce, a refusing SMS gateway), goes out on the next channel of its list; each
//! fallback is an audit event.
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Delivery, Outputs, SYSTEM};
use crate::{
    error::Result,
    mail::compose::Locale,
    model::{Channel, Event, Instance, MessageKind, OutboxMail, TaskStatus},
    store::Tx,
    workflow::Workflow,
};

/// Where a reminder was queued on a channel that may still fail later (mail bounces, SMS gateway
/// refuses): enough to send it again on the next channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Fallback {
    pub(super) reminder_id: String,
    pub(super) instance_id: String,
    pub(super) task_id: String,
    pub(super) user_id: String,
    pub(super) kind: String,
    pub(super) failed: String,
    /// The channels after the failed one, in order.
    pub(super) next: Vec<String>,
    pub(super) title: String,
    pub(super) body: String,
}

impl Workflow {
    /// A channel failed at once (no phone number, no approval context): try the next ones in
    /// order until one takes it. Each fallback is an audit event.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fall_back_now(
        &self,
        tx: &mut Tx,
        d: &Delivery<'_>,
        failed: Channel,
        next: &[Channel],
        why: &str,
        now: i64,
        out: &mut Outputs,
    ) -> Result<Option<Channel>> {
        let mut failed = failed;
        let mut why = why.to_string();
        for (i, channel) in next.iter().enumerate() {
            let note = self
                .mailer
                .reminder_texts()
                .fallback_note(Locale::from_tag(&d.user.locale), failed)?;
            let result = self
                .send_on(tx, d, *channel, &next[i + 1..], &note, now, out)
                .await?;
            out.events.push(fallback_event(
                d.instance,
                &d.task.activity_id,
                d.reminder_id,
                &d.task.id,
                failed,
                Some(*channel),
                &why,
                now,
            ));
            match result {
                Ok(()) => return Ok(Some(*channel)),
                Err(again) => {
                    failed = *channel;
                    why = again;
                }
            }
        }
        out.events.push(fallback_event(
            d.instance,
            &d.task.activity_id,
            d.reminder_id,
            &d.task.id,
            failed,
            None,
            &why,
            now,
        ));
        Ok(None)
    }

    /// A mail or SMS of a reminder failed for good after it was queued: send it on the next
    /// channel(s) of its list.
    pub(super) async fn fall_back(
        &self,
        tx: &mut Tx,
        mail: &OutboxMail,
        error: &str,
        now: i64,
        out: &mut Outputs,
    ) -> Result<()> {
        let Ok(f) = serde_json::from_str::<Fallback>(&mail.fallback) else {
            tracing::error!(outbox_id = %mail.id, "unreadable fallback; dropped");
            return Ok(());
        };
        let (Some(record), Some(task), Some(user)) = (
            tx.instance(&f.instance_id).await?,
            tx.task(&f.task_id).await?,
            tx.user(&f.user_id).await?,
        ) else {
            return Ok(());
        };
        let failed = Channel::parse(&f.failed).unwrap_or(Channel::Email);
        let next: Vec<Channel> = f.next.iter().filter_map(|c| Channel::parse(c)).collect();
        if task.status != TaskStatus::Open {
            out.events.push(fallback_event(
                &record.instance,
                &task.activity_id,
                &f.reminder_id,
                &task.id,
                failed,
                None,
                &format!("{error}; the task is no longer open, nothing more sent"),
                now,
            ));
            return Ok(());
        }
        let graph = self
            .graph_of(
                &record.instance.definition_key,
                record.instance.definition_version,
            )
            .await?;
        let delivery = Delivery {
            reminder_id: &f.reminder_id,
            instance: &record.instance,
            graph: &graph,
            task: &task,
            user: &user,
            kind: MessageKind::parse(&f.kind).unwrap_or(MessageKind::Reminder),
            sender: "",
            title: f.title.clone(),
            body: f.body.clone(),
        };
        self.fall_back_now(tx, &delivery, failed, &next, error, now, out)
            .await?;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn fallback_event(
    instance: &Instance,
    activity: &str,
    reminder_id: &str,
    task_id: &str,
    failed: Channel,
    to: Option<Channel>,
    why: &str,
    now: i64,
) -> Event {
    Event {
        instance_id: instance.id.clone(),
        at: now,
        kind: if to.is_some() {
            "reminder_channel_fallback".into()
        } else {
            "reminder_channel_failed".into()
        },
        activity_id: activity.to_string(),
        actor: SYSTEM.into(),
        detail: json!({"reminder_id": reminder_id, "task_id": task_id, "failed": failed.as_str(),
                       "fallback": to.map(Channel::as_str), "error": why}),
    }
}
