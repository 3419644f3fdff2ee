//! 抄送 (DESIGN §11): copying users in on a request. Each user gets an in-system message
//! (`MessageKind::Cc`) and, when they have an address, an FYI mail of its own kind in the outbox
//! (`OutboxKind::Cc`) that carries no reply token and opens no approval context: nothing is
//! asked of them and no task is created. ReminderService.CarbonCopy does it on demand, for a
//! participant of the instance.
//!
//! A user task with `replyflow:cc` copies its users in as it opens: the transition writer asks
//! [`cc_users_of`] whom to read and [`copies_of_opened`] what to write, in its own batch.
//!
//! CarbonCopy moves nothing in the process — no task, no instance state, no reminder — so it is not a
//! transition through `transition.rs`: one transaction records the request id, the messages, the
//! mails and the `carbon_copied` audit event together.
use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Actor, Workflow, idempotency::RequestId, new_id};
use crate::{
    engine::definition::{CcList, NodeKind, ProcessDefinition},
    error::{Error, Result},
    mail::{
        cc::CcMail,
        compose::{Locale, Mailbox},
    },
    model::{Event, Instance, InstanceStatus, Message, MessageKind, OutboxMail, Task, User},
    policy,
};

/// The users `replyflow:cc` names for a task of `activity_id`, from the instance's variables
/// (a list of ids, or one id); each once.
fn cc_list(graph: &ProcessDefinition, instance: &Instance, activity_id: &str) -> Vec<String> {
    let Some(NodeKind::UserTask(spec)) = graph.node(activity_id).map(|(_, n)| &n.kind) else {
        return Vec::new();
    };
    let named: Vec<String> = match &spec.cc {
        None => return Vec::new(),
        Some(CcList::Users(users)) => users.clone(),
        Some(CcList::Variable(name)) => match instance.variables.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(|s| s.trim().to_string()))
                .collect(),
            Some(Value::String(one)) => vec![one.trim().to_string()],
            _ => Vec::new(),
        },
    };
    let mut users: Vec<String> = Vec::new();
    for user in named {
        if !user.is_empty() && !users.contains(&user) {
            users.push(user);
        }
    }
    users.truncate(MAX_CC_USERS);
    users
}

/// Everyone the opened tasks copy in, to read from the directory with the assignees.
pub(super) fn cc_users_of(
    graph: &ProcessDefinition,
    instance: &Instance,
    opened: &[Task],
) -> Vec<String> {
    let mut all: Vec<String> = opened
        .iter()
        .flat_map(|t| cc_list(graph, instance, &t.activity_id))
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The messages, FYI mails and `carbon_copied` events of the opened tasks' `replyflow:cc`. A
/// user the directory does not know (the list is data, checked only now) is left out and named
/// in the event.
pub(super) fn copies_of_opened(
    mailer: &super::approvals::Mailer,
    graph: &ProcessDefinition,
    instance: &Instance,
    opened: &[Task],
    users: &HashMap<String, User>,
    now: i64,
) -> Result<(Vec<Message>, Vec<OutboxMail>, Vec<Event>)> {
    let (mut messages, mut mails, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for task in opened {
        let named = cc_list(graph, instance, &task.activity_id);
        if named.is_empty() {
            continue;
        }
        let (mut copied, mut unknown) = (Vec::new(), Vec::new());
        for user_id in &named {
            let Some(user) = users.get(user_id) else {
                unknown.push(user_id.clone());
                continue;
            };
            let mail = CcMail {
                locale: Locale::from_tag(&user.locale),
                from: Mailbox {
                    name: String::new(),
                    address: String::new(),
                },
                to: user.email.clone(),
                message_id: String::new(),
                date: now,
                process: graph.name.clone(),
                business_key: instance.business_key.clone(),
                sender: String::new(),
                task_name: task.name.clone(),
                comment: String::new(),
                shown: Vec::new(),
            };
            let (title, body) = mailer.cc_text(&mail)?;
            messages.push(Message {
                id: new_id(),
                user_id: user_id.clone(),
                kind: MessageKind::Cc,
                title,
                body,
                task_id: task.id.clone(),
                instance_id: instance.id.clone(),
                sender: String::new(),
                read_at: None,
                created_at: now,
            });
            if !user.email.trim().is_empty() {
                match mailer.cc_mail(mail, now) {
                    Ok(outbox) => mails.push(outbox),
                    Err(e) => {
                        tracing::warn!(user = %user_id, error = %format!("{e:#}"), "carbon copy not mailed")
                    }
                }
            }
            copied.push(user_id.clone());
        }
        events.push(Event {
            instance_id: instance.id.clone(),
            at: now,
            kind: "carbon_copied".into(),
            activity_id: task.activity_id.clone(),
            actor: String::new(),
            detail: json!({"task_id": task.id, "to": copied, "unknown": unknown, "via": "replyflow:cc"}),
        });
    }
    Ok((messages, mails, events))
}

/// At most this many users copied in one call.
pub const MAX_CC_USERS: usize = 100;

/// A CarbonCopy request.
#[derive(Debug, Clone, Default)]
pub struct CarbonCopy {
    pub process_instance_id: String,
    pub user_ids: Vec<String>,
    pub comment: String,
    pub request_id: String,
}

impl Workflow {
    /// Copies `req.user_ids` in on an instance; the users copied (each once, in the order given).
    pub async fn carbon_copy(&self, actor: &Actor, req: CarbonCopy) -> Result<Vec<String>> {
        let users = checked_users(&req.user_ids)?;
        let listed = users.join(",");
        let request = RequestId::new(
            "carbon_copy",
            actor,
            &req.request_id,
            &[&req.process_instance_id, &listed, &req.comment],
        )?;
        let id = req.process_instance_id.as_str();
        if id.is_empty() {
            return Err(Error::invalid("process_instance_id", "required"));
        }
        crate::bounds::check_text("comment", &req.comment, crate::bounds::MAX_COMMENT_LEN)?;
        if request.earlier(&self.store).await?.is_some() {
            return Ok(users);
        }
        let instance = self
            .store
            .instance_record(id)
            .await?
            .ok_or_else(|| Error::not_found("process instance", id))?
            .instance;
        let participant = self.store.takes_part(id, &actor.user_id).await?;
        policy::can(
            actor,
            policy::Action::CarbonCopy(policy::InstanceAccess {
                started_by: &instance.started_by,
                participant,
            }),
        )?;
        if !matches!(
            instance.status,
            InstanceStatus::Running | InstanceStatus::Suspended
        ) {
            return Err(Error::FailedPrecondition(format!(
                "instance {id} is {}: there is nothing to copy anyone in on",
                instance.status.as_str()
            )));
        }
        let graph = self
            .graph_of(&instance.definition_key, instance.definition_version)
            .await?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let known = tx.users_by_id(&users).await?;
        if let Some(unknown) = users.iter().find(|u| !known.contains_key(*u)) {
            return Err(Error::invalid(
                "user_ids",
                format!("{unknown:?} is not in the directory (DirectoryService.UpsertUser)"),
            ));
        }
        let (mut messages, mut mails) = (Vec::new(), Vec::new());
        for user_id in &users {
            let Some(user) = known.get(user_id) else {
                continue;
            };
            let mail = CcMail {
                locale: Locale::from_tag(&user.locale),
                from: Mailbox {
                    name: String::new(),
                    address: String::new(),
                },
                to: user.email.clone(),
                message_id: String::new(),
                date: now,
                process: graph.name.clone(),
                business_key: instance.business_key.clone(),
                sender: actor.user_id.clone(),
                task_name: String::new(),
                comment: req.comment.clone(),
                shown: Vec::new(),
            };
            let (title, body) = self.mailer.cc_text(&mail)?;
            messages.push(Message {
                id: new_id(),
                user_id: user_id.clone(),
                kind: MessageKind::Cc,
                title,
                body,
                task_id: String::new(),
                instance_id: id.to_string(),
                sender: actor.user_id.clone(),
                read_at: None,
                created_at: now,
            });
            if !user.email.trim().is_empty() {
                match self.mailer.cc_mail(mail, now) {
                    Ok(outbox) => mails.push(outbox),
                    // An address the composer refuses: the message is enough.
                    Err(e) => {
                        tracing::warn!(user = %user_id, error = %format!("{e:#}"), "carbon copy not mailed")
                    }
                }
            }
        }
        if !request.claim_in(&mut tx, id, now).await? {
            drop(tx);
            request.taken(&self.store).await?;
            return Ok(users);
        }
        tx.insert_messages(&messages).await?;
        for mail in &mails {
            tx.insert_outbox(mail).await?;
        }
        tx.insert_events(&[Event {
            instance_id: id.to_string(),
            at: now,
            kind: "carbon_copied".into(),
            activity_id: String::new(),
            actor: actor.user_id.clone(),
            detail: json!({"to": users, "comment": req.comment, "mailed": mails.len()}),
        }])
        .await?;
        tx.commit().await?;
        self.publish_messages(messages);
        if !mails.is_empty() {
            self.mailer.wake().notify_one();
        }
        Ok(users)
    }
}

/// The users named, each once in the order given; none, an empty id or too many is refused.
fn checked_users(ids: &[String]) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Err(Error::invalid(
            "user_ids",
            "name at least one user to copy in",
        ));
    }
    let mut users: Vec<String> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let id = id.trim();
        if id.is_empty() {
            return Err(Error::invalid("user_ids", format!("id {i} is empty")));
        }
        crate::bounds::check_line("user_ids", id, crate::bounds::MAX_ID_LEN)?;
        if !users.iter().any(|u| u == id) {
            users.push(id.to_string());
        }
    }
    if users.len() > MAX_CC_USERS {
        return Err(Error::invalid(
            "user_ids",
            format!("at most {MAX_CC_USERS} users per carbon copy"),
        ));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_named_once_and_none_or_blank_is_refused() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(checked_users(&ids(&["b", "a", "b"])).unwrap(), ["b", "a"]);
        for bad in [ids(&[]), ids(&["a", " "])] {
            let err = checked_users(&bad).unwrap_err();
            assert!(err.to_string().starts_with("user_ids:"), "{err}");
        }
        let many: Vec<String> = (0..=MAX_CC_USERS).map(|i| format!("u{i}")).collect();
        assert!(checked_users(&many).is_err());
    }
}
