//! Conversions between protobuf messages and domain records, kept in one place so the service
//! adapters stay a few lines each. `google.protobuf.Struct` numbers are doubles: whole numbers
//! become JSON integers so that CEL sees `amount > 10000` as an integer comparison.
use prost_types::{Struct, Timestamp, value::Kind};
use serde_json::{Map, Number, Value};

use tonic::Status;

mod history;
mod multi;

pub use history::history_entry;

use crate::{
    clock::Millis,
    engine::definition::{NodeKind, ProcessDefinition, ReminderTypeDecl, UserTaskSpec},
    error::{Error, Result},
    model::{
        ApprovalStatus, Channel, CompletedVia, Definition, Delegation, InboundEmail,
        InstanceStatus, Message, MessageKind, OutboxStatus, ReminderState, ReminderType, Task,
        TaskEvent, TaskEventKind, TaskStatus, User, Verdict,
    },
    proto::pb,
    store::reminder_stats::ReminderStatsRow,
    workflow::{
        InstanceView,
        approvals::ApprovalView,
        reminder_types::{ReminderTypeInput, interval_text},
        reminders::ReminderView,
    },
};

pub fn timestamp(at: Millis) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: at.div_euclid(1000),
        nanos: (at.rem_euclid(1000) * 1_000_000) as i32,
    })
}

fn optional_timestamp(at: Option<Millis>) -> Option<Timestamp> {
    at.and_then(timestamp)
}

/// `field` names the request field in errors.
pub fn struct_to_json(value: Option<Struct>, field: &str) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for (key, value) in value.map(|s| s.fields).unwrap_or_default() {
        let converted = value_to_json(value, &format!("{field}.{key}"))?;
        map.insert(key, converted);
    }
    Ok(map)
}

fn value_to_json(value: prost_types::Value, field: &str) -> Result<Value> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => number(n, field)?,
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(Some(s), field)?),
    })
}

fn number(n: f64, field: &str) -> Result<Value> {
    // 2^53: beyond it doubles no longer hold every integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        return Ok(Value::Number(Number::from(n as i64)));
    }
    Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| Error::invalid(field, "numbers must be finite"))
}

pub fn json_to_struct(map: &Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn instance_status(status: InstanceStatus) -> pb::InstanceStatus {
    match status {
        InstanceStatus::Running => pb::InstanceStatus::Running,
        InstanceStatus::Completed => pb::InstanceStatus::Completed,
        InstanceStatus::Cancelled => pb::InstanceStatus::Cancelled,
        InstanceStatus::Failed => pb::InstanceStatus::Failed,
        InstanceStatus::Suspended => pb::InstanceStatus::Suspended,
    }
}

pub fn instance_status_filter(value: i32) -> Result<Option<InstanceStatus>> {
    match pb::InstanceStatus::try_from(value) {
        Ok(pb::InstanceStatus::Unspecified) => Ok(None),
        Ok(pb::InstanceStatus::Running) => Ok(Some(InstanceStatus::Running)),
        Ok(pb::InstanceStatus::Completed) => Ok(Some(InstanceStatus::Completed)),
        Ok(pb::InstanceStatus::Cancelled) => Ok(Some(InstanceStatus::Cancelled)),
        Ok(pb::InstanceStatus::Failed) => Ok(Some(InstanceStatus::Failed)),
        Ok(pb::InstanceStatus::Suspended) => Ok(Some(InstanceStatus::Suspended)),
        Err(_) => Err(Error::invalid(
            "status",
            format!("unknown InstanceStatus {value}"),
        )),
    }
}

pub fn task_status(status: TaskStatus) -> pb::TaskStatus {
    match status {
        TaskStatus::Open => pb::TaskStatus::Open,
        TaskStatus::Completed => pb::TaskStatus::Completed,
        TaskStatus::Withdrawn => pb::TaskStatus::Withdrawn,
        TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
        TaskStatus::Returned => pb::TaskStatus::Returned,
    }
}

pub fn task_status_filter(value: i32) -> Result<Option<TaskStatus>> {
    match pb::TaskStatus::try_from(value) {
        Ok(pb::TaskStatus::Unspecified) => Ok(None),
        Ok(pb::TaskStatus::Open) => Ok(Some(TaskStatus::Open)),
        Ok(pb::TaskStatus::Completed) => Ok(Some(TaskStatus::Completed)),
        Ok(pb::TaskStatus::Withdrawn) => Ok(Some(TaskStatus::Withdrawn)),
        Ok(pb::TaskStatus::Cancelled) => Ok(Some(TaskStatus::Cancelled)),
        Ok(pb::TaskStatus::Returned) => Ok(Some(TaskStatus::Returned)),
        Err(_) => Err(Error::invalid(
            "status",
            format!("unknown TaskStatus {value}"),
        )),
    }
}

fn completed_via(via: Option<CompletedVia>) -> pb::CompletedVia {
    match via {
        None => pb::CompletedVia::Unspecified,
        Some(CompletedVia::Api) => pb::CompletedVia::Api,
        Some(CompletedVia::Email) => pb::CompletedVia::Email,
        Some(CompletedVia::Escalation) => pb::CompletedVia::Escalation,
        Some(CompletedVia::Auto) => pb::CompletedVia::Auto,
    }
}

/// The initiator's resubmission task (after 退回 to the start or 撤回) sits at the start event.
fn is_resubmission(task: &Task, graph: Option<&ProcessDefinition>) -> bool {
    graph.is_some_and(|g| g.nodes[g.start].id == task.activity_id)
}

fn resubmission_outcomes() -> Vec<pb::Outcome> {
    use crate::engine::runtime::{RESUBMIT, WITHDRAW};
    [(RESUBMIT, "重新提交"), (WITHDRAW, "撤回")]
        .into_iter()
        .zip(1..)
        .map(|((id, label), number)| pb::Outcome {
            id: id.into(),
            label: label.into(),
            keywords: vec![label.into(), id.into()],
            number,
        })
        .collect()
}

fn outcomes(spec: &UserTaskSpec) -> Vec<pb::Outcome> {
    spec.outcomes
        .iter()
        .zip(1..)
        .map(|(o, number)| pb::Outcome {
            id: o.id.clone(),
            label: o.label.clone(),
            keywords: o.keywords.clone(),
            number,
        })
        .collect()
}

/// A task, with what its definition says about it when the graph is at hand.
pub fn task(task: &Task, graph: Option<&ProcessDefinition>) -> pb::Task {
    task_in(task, graph, None)
}

/// A task with its instance's multi-instance state and variables at hand, so that a signer's
/// task shows the tally.
pub fn task_in(
    task: &Task,
    graph: Option<&ProcessDefinition>,
    instance: Option<(&crate::engine::multi::MultiState, &Map<String, Value>)>,
) -> pb::Task {
    let spec = graph
        .and_then(|g| g.node(&task.activity_id))
        .and_then(|(_, node)| match &node.kind {
            NodeKind::UserTask(spec) => Some(spec),
            _ => None,
        });
    pb::Task {
        id: task.id.clone(),
        process_instance_id: task.instance_id.clone(),
        activity_id: task.activity_id.clone(),
        name: task.name.clone(),
        assignee: task.assignee.clone(),
        status: task_status(task.status) as i32,
        outcome: task.outcome.clone(),
        comment: task.comment.clone(),
        completed_by: task.completed_by.clone(),
        completed_via: completed_via(task.completed_via) as i32,
        created_at: timestamp(task.created_at),
        completed_at: optional_timestamp(task.completed_at),
        group_id: task.group_id.clone(),
        definition_key: task.definition_key.clone(),
        definition_version: i32::try_from(task.definition_version).unwrap_or(i32::MAX),
        business_key: task.business_key.clone(),
        outcomes: match spec {
            Some(spec) => outcomes(spec),
            None if is_resubmission(task, graph) => resubmission_outcomes(),
            None => Vec::new(),
        },
        email_approval: spec.is_some_and(|s| s.email_approval),
        reminder_type: spec
            .and_then(|s| s.reminder_type.clone())
            .unwrap_or_default(),
        multi_instance: spec.and_then(|s| multi::of_task(task, s, instance)),
        owner: task.owner.clone(),
        delegation_state: match task.delegation {
            Delegation::None => pb::DelegationState::None,
            Delegation::Pending => pb::DelegationState::Pending,
            Delegation::Resolved => pb::DelegationState::Resolved,
        } as i32,
    }
}

/// Whether the task is a signer's part of a multi-instance activity (its tally needs the
/// instance).
pub fn is_signer_task(task: &Task, graph: Option<&ProcessDefinition>) -> bool {
    graph
        .and_then(|g| g.node(&task.activity_id))
        .is_some_and(|(_, node)| matches!(&node.kind, NodeKind::UserTask(s) if s.multi.is_some()))
}

pub fn instance(view: &InstanceView, graph: Option<&ProcessDefinition>) -> pb::ProcessInstance {
    let i = &view.instance;
    let ended = !matches!(
        i.status,
        InstanceStatus::Running | InstanceStatus::Suspended
    );
    pb::ProcessInstance {
        id: i.id.clone(),
        definition_key: i.definition_key.clone(),
        version: i32::try_from(i.definition_version).unwrap_or(i32::MAX),
        status: instance_status(i.status) as i32,
        variables: Some(json_to_struct(&i.variables)),
        open_tasks: view
            .open_tasks
            .iter()
            .map(|t| task_in(t, graph, Some((&view.multi, &i.variables))))
            .collect(),
        business_key: i.business_key.clone(),
        started_by: i.started_by.clone(),
        error: if i.status == InstanceStatus::Failed {
            i.error.clone()
        } else {
            String::new()
        },
        created_at: timestamp(i.created_at),
        updated_at: timestamp(i.updated_at),
        ended_at: if ended { timestamp(i.updated_at) } else { None },
        cancel_reason: if i.status == InstanceStatus::Cancelled {
            i.error.clone()
        } else {
            String::new()
        },
        definition_name: graph.map(|g| g.name.clone()).unwrap_or_default(),
        multi_instances: multi::of_instance(&view.multi, graph),
    }
}

pub fn user(user: &User) -> pb::User {
    pb::User {
        id: user.id.clone(),
        display_name: user.display_name.clone(),
        email: user.email.clone(),
        email_aliases: user.email_aliases.clone(),
        phone: user.phone.clone(),
        manager_id: user.manager_id.clone(),
        locale: user.locale.clone(),
        updated_at: timestamp(user.updated_at),
    }
}

pub fn user_from_pb(user: Option<pb::User>) -> Result<User> {
    let user = user.ok_or_else(|| Error::invalid("user", "required"))?;
    Ok(User {
        id: user.id.trim().to_string(),
        display_name: user.display_name,
        email: user.email.trim().to_string(),
        email_aliases: user
            .email_aliases
            .into_iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect(),
        phone: user.phone,
        manager_id: user.manager_id.trim().to_string(),
        locale: user.locale,
        updated_at: 0,
    })
}

pub fn task_event(event: &TaskEvent, graph: Option<&ProcessDefinition>) -> pb::TaskEvent {
    let kind = match event.kind {
        TaskEventKind::Opened => pb::TaskEventKind::Opened,
        TaskEventKind::Completed => pb::TaskEventKind::Completed,
        TaskEventKind::Withdrawn => pb::TaskEventKind::Withdrawn,
        TaskEventKind::Reassigned => pb::TaskEventKind::Reassigned,
        TaskEventKind::Cancelled => pb::TaskEventKind::Cancelled,
        TaskEventKind::Returned => pb::TaskEventKind::Returned,
    };
    pb::TaskEvent {
        kind: kind as i32,
        task: Some(task(&event.task, graph)),
        at: timestamp(event.at),
        previous_assignee: event.previous_assignee.clone(),
    }
}

fn reminder_type(decl: &ReminderTypeDecl, source: &str) -> pb::ReminderType {
    let channels = decl
        .channels
        .iter()
        .map(|c| channel_pb(*c) as i32)
        .collect();
    pb::ReminderType {
        id: decl.id.clone(),
        count: i32::try_from(decl.count).unwrap_or(i32::MAX),
        interval: decl.interval.to_string(),
        channels,
        escalation: decl.escalation.as_text(),
        interval_duration: None,
        source: source.to_string(),
        updated_at: None,
    }
}

/// A definition; `with_graph` adds the activities and the XML (Get and Deploy, not List).
pub fn definition(
    def: &Definition,
    graph: Option<&ProcessDefinition>,
    with_xml: bool,
) -> pb::Definition {
    use sha2::Digest;
    let sha256 = sha2::Sha256::digest(def.bpmn_xml.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let source = format!("definition:{}:{}", def.key, def.version);
    pb::Definition {
        key: def.key.clone(),
        version: i32::try_from(def.version).unwrap_or(i32::MAX),
        name: def.name.clone(),
        id: def.id.clone(),
        created_at: timestamp(def.created_at),
        deployed_by: def.deployed_by.clone(),
        bpmn_xml: if with_xml {
            def.bpmn_xml.clone().into_bytes()
        } else {
            Vec::new()
        },
        activities: graph.map(activities).unwrap_or_default(),
        reminder_types: graph
            .map(|g| {
                g.reminder_types
                    .iter()
                    .map(|r| reminder_type(r, &source))
                    .collect()
            })
            .unwrap_or_default(),
        sha256,
        latest: def.latest,
    }
}

fn activities(graph: &ProcessDefinition) -> Vec<pb::Activity> {
    let flow_ids = |flows: &[usize]| -> Vec<String> {
        flows
            .iter()
            .filter_map(|f| graph.flows.get(*f).map(|f| f.id.clone()))
            .collect()
    };
    graph
        .nodes
        .iter()
        .map(|node| {
            let mut activity = pb::Activity {
                id: node.id.clone(),
                name: node.name.clone(),
                outgoing: flow_ids(&node.outgoing),
                incoming: flow_ids(&node.incoming),
                ..Default::default()
            };
            let kind = match &node.kind {
                NodeKind::StartEvent => pb::ActivityKind::StartEvent,
                NodeKind::EndEvent => pb::ActivityKind::EndEvent,
                NodeKind::ExclusiveGateway(_) => pb::ActivityKind::ExclusiveGateway,
                NodeKind::ParallelGateway => pb::ActivityKind::ParallelGateway,
                NodeKind::UserTask(spec) => {
                    activity.assignee = spec.assignee.source();
                    activity.reminder_type = spec.reminder_type.clone().unwrap_or_default();
                    activity.email_approval = spec.email_approval;
                    activity.valid_for = spec.valid_for.map(|d| d.to_string()).unwrap_or_default();
                    activity.show = spec.show.clone();
                    activity.outcomes = outcomes(spec);
                    pb::ActivityKind::UserTask
                }
            };
            activity.kind = kind as i32;
            activity
        })
        .collect()
}

pub fn reminder_state(state: ReminderState) -> pb::ReminderState {
    match state {
        ReminderState::New => pb::ReminderState::New,
        ReminderState::Reminded => pb::ReminderState::Reminded,
        ReminderState::RemindCompleted => pb::ReminderState::RemindCompleted,
        ReminderState::RemindFailed => pb::ReminderState::RemindFailed,
        ReminderState::FinishedBeforeRemind => pb::ReminderState::FinishedBeforeRemind,
        ReminderState::FinishedAfterRemind => pb::ReminderState::FinishedAfterRemind,
        ReminderState::Cancelled => pb::ReminderState::Cancelled,
    }
}

pub fn reminder_state_filter(value: i32) -> Result<Option<ReminderState>> {
    let state = match pb::ReminderState::try_from(value) {
        Ok(pb::ReminderState::Unspecified) => return Ok(None),
        Ok(pb::ReminderState::New) => ReminderState::New,
        Ok(pb::ReminderState::Reminded) => ReminderState::Reminded,
        Ok(pb::ReminderState::RemindCompleted) => ReminderState::RemindCompleted,
        Ok(pb::ReminderState::RemindFailed) => ReminderState::RemindFailed,
        Ok(pb::ReminderState::FinishedBeforeRemind) => ReminderState::FinishedBeforeRemind,
        Ok(pb::ReminderState::FinishedAfterRemind) => ReminderState::FinishedAfterRemind,
        Ok(pb::ReminderState::Cancelled) => ReminderState::Cancelled,
        Err(_) => {
            return Err(Error::invalid(
                "state",
                format!("unknown ReminderState {value}"),
            ));
        }
    };
    Ok(Some(state))
}

// --- approvals and inbound mail --------------------------------------------------------------

pub(super) fn approval_pb(view: &ApprovalView) -> pb::ApprovalContext {
    let c = &view.context;
    let status = match c.status {
        ApprovalStatus::Pending => pb::ApprovalStatus::Pending,
        ApprovalStatus::Used => pb::ApprovalStatus::Used,
        ApprovalStatus::Expired => pb::ApprovalStatus::Expired,
        ApprovalStatus::Revoked => pb::ApprovalStatus::Revoked,
    };
    let mail = view.latest_mail.as_ref();
    let delivery_status = match mail.map(|m| m.status) {
        None => pb::DeliveryStatus::Unspecified,
        Some(OutboxStatus::Queued) => pb::DeliveryStatus::Queued,
        Some(OutboxStatus::Sent) => pb::DeliveryStatus::Sent,
        Some(OutboxStatus::TempFailed) => pb::DeliveryStatus::TempFailed,
        Some(OutboxStatus::PermFailed) => pb::DeliveryStatus::PermFailed,
        Some(OutboxStatus::Cancelled) => pb::DeliveryStatus::Cancelled,
    };
    let retrying =
        mail.is_some_and(|m| matches!(m.status, OutboxStatus::Queued | OutboxStatus::TempFailed));
    pb::ApprovalContext {
        task_id: c.task_id.clone(),
        approver_email: c.approver_email.clone(),
        sent_at: mail.and_then(|m| m.sent_at).and_then(timestamp),
        valid_until: timestamp(c.valid_until),
        status: status as i32,
        delivery_status: delivery_status as i32,
        attempts: mail.map_or(0, |m| i32::try_from(m.attempts).unwrap_or(i32::MAX)),
        last_error: mail
            .filter(|m| m.status != OutboxStatus::Sent)
            .map(|m| m.last_error.clone())
            .unwrap_or_default(),
        // The proto shows Message-IDs without their angle brackets.
        message_id: c
            .message_id
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
        id: c.id.clone(),
        created_at: timestamp(c.sent_at),
        used_at: c.used_at.and_then(timestamp),
        next_attempt_at: if retrying {
            mail.and_then(|m| timestamp(m.next_attempt_at))
        } else {
            None
        },
        approver: c.approver.clone(),
        subject_tag: c.subject_tag.clone(),
        revoke_reason: c.revoke_reason.clone(),
        used_by_email_id: String::new(),
    }
}

pub(super) fn verdict_pb(verdict: Verdict) -> pb::Verdict {
    match verdict {
        Verdict::Applied => pb::Verdict::Applied,
        Verdict::Duplicate => pb::Verdict::Duplicate,
        Verdict::UnknownToken => pb::Verdict::UnknownToken,
        Verdict::BadSignature => pb::Verdict::BadSignature,
        Verdict::SenderMismatch => pb::Verdict::SenderMismatch,
        Verdict::Expired => pb::Verdict::Expired,
        Verdict::AlreadyUsed => pb::Verdict::AlreadyUsed,
        Verdict::TaskClosed => pb::Verdict::TaskClosed,
        Verdict::Ambiguous => pb::Verdict::Ambiguous,
        Verdict::NoDecision => pb::Verdict::NoDecision,
        Verdict::AutoReply => pb::Verdict::AutoReply,
        Verdict::Bounce => pb::Verdict::Bounce,
        Verdict::TooLarge => pb::Verdict::TooLarge,
        Verdict::Unparseable => pb::Verdict::Unparseable,
        Verdict::Revoked => pb::Verdict::Revoked,
        Verdict::AuthFailed => pb::Verdict::AuthFailed,
        Verdict::Quarantined => pb::Verdict::Quarantined,
        Verdict::SeveralFrom => pb::Verdict::SeveralFrom,
        Verdict::Suspended => pb::Verdict::Suspended,
    }
}

pub(super) fn verdict_filter(value: i32) -> Result<Option<Verdict>, Status> {
    let verdict = pb::Verdict::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("verdict: unknown Verdict {value}")))?;
    Ok(match verdict {
        pb::Verdict::Unspecified => None,
        other => Verdict::parse(
            &other
                .as_str_name()
                .trim_start_matches("VERDICT_")
                .to_lowercase(),
        ),
    })
}

pub(super) fn correlation_pb(value: &serde_json::Value) -> pb::Correlation {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let list = |key: &str| -> Vec<String> {
        value
            .get(key)
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let method = match text("token_source").as_str() {
        "plus_address" => pb::CorrelationMethod::PlusAddress,
        "body" => pb::CorrelationMethod::BodyToken,
        _ => pb::CorrelationMethod::Unspecified,
    };
    pb::Correlation {
        method: method as i32,
        token_found: value.get("token").is_some_and(|t| !t.is_null()),
        in_reply_to: list("in_reply_to").into_iter().next().unwrap_or_default(),
        references: list("references"),
        subject_tag: value
            .get("subject_tag")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        token_location: text("token_source"),
        ..Default::default()
    }
}

pub(super) fn inbound_pb(m: &InboundEmail) -> pb::InboundEmail {
    pb::InboundEmail {
        id: m.id.clone(),
        message_id: m
            .message_id
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
        sender: m.sender.clone(),
        task_id: m.task_id.clone(),
        verdict: verdict_pb(m.verdict) as i32,
        reason: m.reason.clone(),
        received_at: timestamp(m.received_at),
        transport: m.transport.clone(),
        size_bytes: m.size_bytes,
        sha256: m.sha256.clone(),
        subject: m.subject.clone(),
        correlation: Some(pb::Correlation {
            approval_id: m.context_id.clone(),
            task_id: m.task_id.clone(),
            ..correlation_pb(&m.correlation)
        }),
        outcome: m.outcome.clone(),
        comment: m.comment.clone(),
        delegate_to: m.delegate_to.clone(),
        authentication_results: m.authentication_results.clone(),
        explanation: m.explanation.clone(),
        process_instance_id: m.instance_id.clone(),
        answered: m.answered,
    }
}

// --- reminders and messages ------------------------------------------------------------------

pub(super) fn channel_pb(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Inbox => pb::Channel::Inbox,
        Channel::Email => pb::Channel::Email,
        Channel::Sms => pb::Channel::Sms,
    }
}

/// A wire channel; UNSPECIFIED and unknown numbers are refused naming `field`.
pub(super) fn channel_from_pb(value: i32, field: &str) -> Result<Channel> {
    match pb::Channel::try_from(value) {
        Ok(pb::Channel::Inbox) => Ok(Channel::Inbox),
        Ok(pb::Channel::Email) => Ok(Channel::Email),
        Ok(pb::Channel::Sms) => Ok(Channel::Sms),
        Ok(pb::Channel::Unspecified) => Err(Error::invalid(
            field,
            "CHANNEL_UNSPECIFIED is not a channel: use CHANNEL_INBOX, CHANNEL_EMAIL or CHANNEL_SMS",
        )),
        Err(_) => Err(Error::invalid(field, format!("unknown Channel {value}"))),
    }
}

pub(super) fn duration_pb(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

pub(super) fn reminder_type_from_pb(
    reminder_type: Option<pb::ReminderType>,
) -> Result<ReminderTypeInput> {
    let t = reminder_type.ok_or_else(|| Error::invalid("reminder_type", "required"))?;
    let interval_secs = match t.interval_duration {
        None => None,
        Some(d) if d.nanos != 0 => {
            return Err(Error::invalid(
                "reminder_type.interval",
                "interval_duration must be whole seconds",
            ));
        }
        Some(d) => Some(d.seconds),
    };
    Ok(ReminderTypeInput {
        id: t.id,
        count: i64::from(t.count),
        interval: t.interval,
        interval_secs,
        channels: t
            .channels
            .into_iter()
            .map(|c| channel_from_pb(c, "reminder_type.channels"))
            .collect::<Result<_>>()?,
        escalation: t.escalation,
    })
}

pub(super) fn reminder_type_pb(t: &ReminderType) -> pb::ReminderType {
    pb::ReminderType {
        id: t.id.clone(),
        count: i32::try_from(t.count).unwrap_or(i32::MAX),
        interval: interval_text(t.interval_ms),
        channels: t.channels.iter().map(|c| channel_pb(*c) as i32).collect(),
        escalation: t.escalation.as_text(),
        interval_duration: Some(duration_pb(t.interval_ms)),
        source: t.source.clone(),
        updated_at: timestamp(t.updated_at),
    }
}

pub(super) fn message_kind_pb(kind: MessageKind) -> pb::MessageKind {
    match kind {
        MessageKind::Reminder => pb::MessageKind::Reminder,
        MessageKind::ManualReminder => pb::MessageKind::ManualReminder,
        MessageKind::Escalation => pb::MessageKind::Escalation,
        MessageKind::Notice => pb::MessageKind::Notice,
        MessageKind::Cc => pb::MessageKind::Cc,
    }
}

pub(super) fn message_pb(m: &Message) -> pb::Message {
    pb::Message {
        id: m.id.clone(),
        user_id: m.user_id.clone(),
        title: m.title.clone(),
        body: m.body.clone(),
        task_id: m.task_id.clone(),
        read: m.read_at.is_some(),
        created_at: timestamp(m.created_at),
        process_instance_id: m.instance_id.clone(),
        kind: message_kind_pb(m.kind) as i32,
        read_at: m.read_at.and_then(timestamp),
        sender: m.sender.clone(),
    }
}

pub(super) fn millis(ts: Option<prost_types::Timestamp>, field: &str) -> Result<Option<Millis>> {
    let Some(ts) = ts else {
        return Ok(None);
    };
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(Error::invalid(field, "nanos must be 0 to 999,999,999"));
    }
    ts.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(ts.nanos / 1_000_000)))
        .map(Some)
        .ok_or_else(|| Error::invalid(field, "out of range"))
}

pub(super) fn stats_row_pb(row: ReminderStatsRow) -> pb::ReminderStatsRow {
    pb::ReminderStatsRow {
        reminder_type: row.reminder_type,
        activity_id: row.activity_id,
        definition_key: row.definition_key,
        armed: row.armed,
        finished_before_remind: row.finished_before_remind,
        finished_after_remind: row.finished_after_remind,
        failed: row.failed,
        escalated: row.escalated,
        median_time_to_completion_after_first_reminder: row
            .median_after_first_reminder_ms
            .map(duration_pb),
        active: row.active,
        cancelled: row.cancelled,
        reminders_sent: row.reminders_sent,
    }
}

pub(super) fn i32_count(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(super) fn reminder_pb(view: &ReminderView) -> pb::Reminder {
    let r = &view.reminder;
    let at = |ms: i64| if ms == 0 { None } else { timestamp(ms) };
    pb::Reminder {
        id: r.id.clone(),
        process_instance_id: r.instance_id.clone(),
        start_activity_id: r.start_activity.clone(),
        end_activity_id: r.end_activity.clone(),
        reminder_type: r.reminder_type.clone(),
        state: reminder_state(r.state) as i32,
        sent_count: i32::try_from(r.sent_count).unwrap_or(i32::MAX),
        next_fire_at: r.next_fire_at.and_then(timestamp),
        group_id: r.group_id.clone(),
        created_at: timestamp(r.created_at),
        last_fired_at: at(r.last_fired_at),
        finished_at: at(r.finished_at),
        count: i32::try_from(r.count).unwrap_or(i32::MAX),
        interval: interval_text(r.interval_ms),
        escalation: r.escalation.as_text(),
        escalated: r.escalated,
        task_ids: view.tasks.iter().map(|t| t.id.clone()).collect(),
        recipients: view.tasks.iter().map(|t| t.assignee.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_become_integers() {
        let s = Struct {
            fields: [
                (
                    "amount".to_string(),
                    json_to_value(&serde_json::json!(12000.0)),
                ),
                ("ratio".to_string(), json_to_value(&serde_json::json!(0.5))),
            ]
            .into(),
        };
        let map = struct_to_json(Some(s), "variables").unwrap();
        assert_eq!(map["amount"], serde_json::json!(12000));
        assert_eq!(map["ratio"], serde_json::json!(0.5));
    }

    #[test]
    fn non_finite_numbers_name_the_field() {
        let s = Struct {
            fields: [(
                "x".to_string(),
                prost_types::Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        let err = struct_to_json(Some(s), "variables").unwrap_err();
        assert!(err.to_string().starts_with("variables.x"), "{err}");
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        let ts = timestamp(1_500).unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1, 500_000_000));
        let ts = timestamp(-1).unwrap();
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_000_000));
    }
}
