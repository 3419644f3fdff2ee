//! Reminders (催办, DESIGN §6): armed and stopped inside every transition, fired by the
//! scheduler in batches (one transaction per batch: claims, messages, outbox rows, state changes
//! and audit events commit together, or not at all), escalated once when they run out, sent by
//! hand with RemindNow, and listed.
use crate::{
    engine::definition::ProcessDefinition,
    mail::compose::Locale,
    model::{Channel, Event, Instance, Message, MessageKind, Task, TaskEvent, User},
};

pub(super) mod arm;
mod escalation;
mod fallback;
mod fire;
mod manual;

pub use fire::FireReport;
pub use manual::{RemindNow, RemindNowResult, ReminderView};

/// Actor recorded for what the scheduler does.
const SYSTEM: &str = "system:reminders";

/// Everything one batch writes besides the reminders themselves.
#[derive(Debug, Default)]
struct Outputs {
    messages: Vec<Message>,
    events: Vec<Event>,
    task_events: Vec<TaskEvent>,
    queued_mail: bool,
}

/// How far [`Outputs`] had grown, to undo an escalation that was rolled back.
#[derive(Debug, Clone, Copy)]
struct OutputMarks(usize, usize, usize, bool);

impl Outputs {
    fn marks(&self) -> OutputMarks {
        OutputMarks(
            self.messages.len(),
            self.events.len(),
            self.task_events.len(),
            self.queued_mail,
        )
    }

    fn truncate(&mut self, marks: OutputMarks) {
        self.messages.truncate(marks.0);
        self.events.truncate(marks.1);
        self.task_events.truncate(marks.2);
        self.queued_mail = marks.3;
    }
}

/// One reminder to deliver to one person about one task.
struct Delivery<'a> {
    reminder_id: &'a str,
    instance: &'a Instance,
    graph: &'a ProcessDefinition,
    task: &'a Task,
    user: &'a User,
    kind: MessageKind,
    sender: &'a str,
    title: String,
    body: String,
}

fn channel_names(channels: &[Channel]) -> Vec<&'static str> {
    channels.iter().map(|c| c.as_str()).collect()
}

fn reminder_text(
    locale: Locale,
    process: &str,
    task: &Task,
    instance: &Instance,
    sent: i64,
    count: i64,
    message: &str,
) -> (String, String) {
    let key = if instance.business_key.is_empty() {
        String::new()
    } else {
        format!(" ({})", instance.business_key)
    };
    let mut body = match locale {
        Locale::ZhCn if count > 0 => format!(
            "「{process}」{key}的「{}」正在等您处理（第 {sent}/{count} 次催办）。",
            task.name
        ),
        Locale::ZhCn => format!("「{process}」{key}的「{}」正在等您处理。", task.name),
        Locale::En if count > 0 => format!(
            "\"{}\" of {process}{key} is waiting for you (reminder {sent} of {count}).",
            task.name
        ),
        Locale::En => format!("\"{}\" of {process}{key} is waiting for you.", task.name),
    };
    if !message.is_empty() {
        body.push('\n');
        body.push_str(message);
    }
    let title = match locale {
        Locale::ZhCn => format!("催办：{}", task.name),
        Locale::En => format!("Reminder: {}", task.name),
    };
    (title, body)
}

fn escalation_text(
    locale: Locale,
    process: &str,
    task: &Task,
    instance: &Instance,
    sent: i64,
) -> (String, String) {
    match locale {
        Locale::ZhCn => (
            format!("升级提醒：{}", task.name),
            format!(
                "「{process}」（{}）的「{}」已催办 {sent} 次仍未处理，当前处理人：{}。",
                instance.business_key, task.name, task.assignee
            ),
        ),
        Locale::En => (
            format!("Escalation: {}", task.name),
            format!(
                "\"{}\" of {process} ({}) is still open after {sent} reminders; it is assigned to {}.",
                task.name, instance.business_key, task.assignee
            ),
        ),
    }
}

fn fallback_note(locale: Locale, failed: Channel) -> String {
    match (locale, failed) {
        (Locale::ZhCn, Channel::Email) => "（邮件未能送达，改由此渠道提醒）".into(),
        (Locale::ZhCn, Channel::Sms) => "（短信未能送达，改由此渠道提醒）".into(),
        (Locale::ZhCn, Channel::Inbox) => "（站内消息未能送达，改由此渠道提醒）".into(),
        (Locale::En, c) => format!("(The {} reminder could not be delivered.)", c.as_str()),
    }
}
