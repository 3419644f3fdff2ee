//! Reminders (催办, DESIGN §6): armed and stopped inside every transition, fired by the
//! scheduler in batches (one transaction per batch: claims, messages, outbox rows, state changes
//! and audit events commit together, or not at all), escalated once when they run out, sent by
//! hand with RemindNow, and listed.
use crate::{
    engine::definition::ProcessDefinition,
    model::{Channel, Event, Instance, Message, MessageKind, Task, TaskEvent, User},
};

mod escalation;
mod fallback;
mod fire;
mod manual;

pub use crate::mail::reminder_texts::ReminderTexts;
pub use fire::FireReport;
pub use manual::{RemindNow, RemindNowResult, ReminderView};

/// Actor recorded for what the scheduler does.
const SYSTEM: &str = super::REMINDERS_ACTOR;

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
