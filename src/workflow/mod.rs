//! The use cases behind the API: each loads what it needs, asks the engine for a decision and
//! writes the decision, its audit events and its request id in ONE transaction. The gRPC layer
//! and (later) the reply reader both end here, so email is just another way to act.
mod access;
pub mod approvals;
pub mod carbon_copy;
mod definitions;
mod delegation;
pub mod history;
mod idempotency;
pub mod inbound;
pub mod instances;
pub mod messages;
mod people;
mod recall;
pub mod reminder_types;
pub mod reminders;
pub mod returns;
pub mod tasks;
mod transition;
mod turns;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

use crate::{
    clock::Clock,
    engine::{definition::ProcessDefinition, runtime::Limits},
    error::{Error, Result},
    model::{Instance, Message, Page, Task, TaskEvent, User},
    store::{PageRequest, Store},
};

pub use crate::policy::Actor;

/// Actor recorded for what reminders do (the scheduler, and the writer arming and stopping them).
pub(crate) const REMINDERS_ACTOR: &str = "system:reminders";

/// An instance with its open tasks, as clients see it.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub instance: Instance,
    pub open_tasks: Vec<Task>,
    /// Multi-instance activities being signed (empty in lists).
    pub multi: crate::engine::multi::MultiState,
}

#[derive(Debug)]
pub struct Workflow {
    store: Store,
    clock: Arc<dyn Clock>,
    definitions: Mutex<HashMap<(String, i64), Arc<ProcessDefinition>>>,
    task_events: broadcast::Sender<TaskEvent>,
    message_events: broadcast::Sender<Message>,
    mailer: Arc<approvals::Mailer>,
    manual_interval_ms: i64,
    /// What one engine transition may spend (`limits.max_steps`).
    limits: Limits,
    /// Transitions of one instance queue here instead of racing (turns.rs).
    turns: turns::Turns,
}

impl Workflow {
    pub fn new(store: Store, clock: Arc<dyn Clock>, mailer: Arc<approvals::Mailer>) -> Self {
        let (task_events, _) = broadcast::channel(4096);
        let (message_events, _) = broadcast::channel(4096);
        Self {
            store,
            clock,
            definitions: Mutex::new(HashMap::new()),
            task_events,
            message_events,
            mailer,
            manual_interval_ms: 10 * 60 * 1000,
            limits: Limits::default(),
            turns: turns::Turns::new(),
        }
    }

    /// The step budget of one transition (`limits.max_steps`).
    pub fn with_max_steps(mut self, max_steps: usize) -> Self {
        self.limits.max_steps = max_steps;
        self
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// The least time between two manual reminders of one task (`reminders.manual_interval`).
    pub fn with_manual_interval_ms(mut self, ms: i64) -> Self {
        self.manual_interval_ms = ms;
        self
    }

    pub(crate) fn manual_interval_ms(&self) -> i64 {
        self.manual_interval_ms
    }

    /// In-system messages of this server, published after their transaction committed.
    pub fn subscribe_messages(&self) -> broadcast::Receiver<Message> {
        self.message_events.subscribe()
    }

    pub(crate) fn publish_messages(&self, messages: Vec<Message>) {
        for message in messages {
            // No receiver is not an error: nobody is watching.
            let _ = self.message_events.send(message);
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Task events of this server, published after their transaction committed.
    pub fn subscribe_tasks(&self) -> broadcast::Receiver<TaskEvent> {
        self.task_events.subscribe()
    }

    fn publish(&self, events: Vec<TaskEvent>) {
        for event in events {
            // No subscriber is not an error: nobody is watching.
            let _ = self.task_events.send(event);
        }
    }

    /// Creates or replaces a user. A changed email address revokes the user's pending approval
    /// contexts and mails each of their open tasks afresh to the new address, in the same
    /// transaction (DESIGN §12, four eyes): a reply token is good only from where it was sent.
    pub async fn upsert_user(&self, user: User) -> Result<User> {
        validate_user(&user)?;
        self.check_manager_chain(&user).await?;
        let now = self.now();
        let user = User {
            updated_at: now,
            ..user
        };
        self.save_user(&user, now).await?;
        Ok(user)
    }

    /// Escalation walks manager chains: a cycle would make it go round forever.
    async fn check_manager_chain(&self, user: &User) -> Result<()> {
        let mut next = user.manager_id.clone();
        for _ in 0..64 {
            if next.is_empty() {
                return Ok(());
            }
            if next == user.id {
                return Err(Error::invalid(
                    "user.manager_id",
                    format!(
                        "{} would be their own manager through {}",
                        user.id, user.manager_id
                    ),
                ));
            }
            next = match self.store.user(&next).await? {
                Some(manager) => manager.manager_id,
                None => return Ok(()),
            };
        }
        Err(Error::invalid(
            "user.manager_id",
            "the manager chain is longer than 64 users",
        ))
    }

    pub async fn user(&self, id: &str) -> Result<User> {
        if id.is_empty() {
            return Err(Error::invalid("id", "required"));
        }
        self.store
            .user(id)
            .await?
            .ok_or_else(|| Error::not_found("user", id))
    }

    pub async fn list_users(
        &self,
        manager_id: &str,
        email: &str,
        page: &PageRequest,
    ) -> Result<Page<User>> {
        self.store.list_users(manager_id, email, page).await
    }
}

/// Bounds of what UpsertUser stores: ids and names by [`crate::bounds`], addresses by the mail
/// composer's own parser (lettre's `Address`), so that every address accepted here can be mailed
/// and no transition fails later for a user's address.
fn validate_user(user: &User) -> Result<()> {
    if user.id.trim().is_empty() {
        return Err(Error::invalid("user.id", "required"));
    }
    crate::bounds::check_line("user.id", &user.id, crate::bounds::MAX_ID_LEN)?;
    crate::bounds::check_line(
        "user.display_name",
        &user.display_name,
        crate::bounds::MAX_NAME_LEN,
    )?;
    crate::bounds::check_line(
        "user.manager_id",
        &user.manager_id,
        crate::bounds::MAX_ID_LEN,
    )?;
    if user.email_aliases.len() > MAX_ALIASES {
        return Err(Error::invalid(
            "user.email_aliases",
            format!("at most {MAX_ALIASES} aliases"),
        ));
    }
    check_address("user.email", &user.email)?;
    for (i, alias) in user.email_aliases.iter().enumerate() {
        if alias.is_empty() {
            return Err(Error::invalid(
                format!("user.email_aliases[{i}]"),
                "an empty alias",
            ));
        }
        check_address(&format!("user.email_aliases[{i}]"), alias)?;
    }
    if user.locale.len() > 35
        || !user
            .locale
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::invalid(
            "user.locale",
            "expected a language tag such as zh-CN or en",
        ));
    }
    if !user.phone.is_empty() && !is_e164(&user.phone) {
        return Err(Error::invalid(
            "user.phone",
            "expected E.164: + and 8 to 15 digits, e.g. +8613800138000",
        ));
    }
    Ok(())
}

/// Aliases per user at most.
const MAX_ALIASES: usize = 20;

/// RFC 5321's limit on a whole address.
const MAX_ADDRESS_LEN: usize = 254;

/// An address (empty = none) that the composer can put in a header: lettre's own parser, plus
/// the length limit and no control or bidi characters.
fn check_address(field: &str, address: &str) -> Result<()> {
    if address.is_empty() {
        return Ok(());
    }
    crate::bounds::check_line(field, address, MAX_ADDRESS_LEN)?;
    address.parse::<lettre::Address>().map_err(|e| {
        Error::invalid(
            field,
            format!("{address:?} is not a usable email address: {e}"),
        )
    })?;
    Ok(())
}

fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
