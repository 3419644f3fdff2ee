//! Decoding database rows into domain records. Text that should name an enum value but does not
//! is a corrupt row: reported as an internal error, never a panic.
use anyhow::anyhow;
use serde_json::{Map, Value};
use sqlx::{Row, any::AnyRow};

use crate::{
    error::{Error, Result},
    model::{
        CompletedVia, Definition, Delegation, Instance, InstanceStatus, Task, TaskStatus, User,
    },
};

pub(super) const TASK_COLUMNS: &str = "id, instance_id, definition_key, definition_version, business_key, activity_id, name, assignee, status, \
    outcome, comment, completed_by, completed_via, group_id, from_activity, created_at, completed_at, owner, delegation_state";

pub(super) const INSTANCE_COLUMNS: &str = "id, definition_key, definition_version, business_key, \
    variables, status, error, started_by, created_at, updated_at, joins, multi, rev";

pub(super) const USER_COLUMNS: &str =
    "id, display_name, email, email_aliases, phone, manager_id, locale, updated_at";

pub(super) const DEFINITION_COLUMNS: &str = "id, key, version, name, bpmn_xml, deployed_by, created_at, \
    CAST(CASE WHEN version = (SELECT MAX(d2.version) FROM definitions d2 WHERE d2.key = definitions.key) \
    THEN 1 ELSE 0 END AS BIGINT) AS latest";

fn corrupt(what: &str, value: &str) -> Error {
    Error::Internal(anyhow!("corrupt row: {what} = {value:?}"))
}

pub(super) fn task(row: &AnyRow) -> Result<Task> {
    let status: String = row.try_get("status")?;
    let via: String = row.try_get("completed_via")?;
    let completed_at: i64 = row.try_get("completed_at")?;
    let delegation: String = row.try_get("delegation_state")?;
    Ok(Task {
        id: row.try_get("id")?,
        instance_id: row.try_get("instance_id")?,
        definition_key: row.try_get("definition_key")?,
        definition_version: row.try_get("definition_version")?,
        business_key: row.try_get("business_key")?,
        activity_id: row.try_get("activity_id")?,
        name: row.try_get("name")?,
        assignee: row.try_get("assignee")?,
        status: TaskStatus::parse(&status).ok_or_else(|| corrupt("tasks.status", &status))?,
        outcome: row.try_get("outcome")?,
        comment: row.try_get("comment")?,
        completed_by: row.try_get("completed_by")?,
        completed_via: if via.is_empty() {
            None
        } else {
            Some(CompletedVia::parse(&via).ok_or_else(|| corrupt("tasks.completed_via", &via))?)
        },
        group_id: row.try_get("group_id")?,
        from_activity: row.try_get("from_activity")?,
        created_at: row.try_get("created_at")?,
        completed_at: (completed_at != 0).then_some(completed_at),
        owner: row.try_get("owner")?,
        delegation: Delegation::parse(&delegation)
            .ok_or_else(|| corrupt("tasks.delegation_state", &delegation))?,
    })
}

pub(super) fn instance(row: &AnyRow) -> Result<Instance> {
    let status: String = row.try_get("status")?;
    let variables: String = row.try_get("variables")?;
    Ok(Instance {
        id: row.try_get("id")?,
        definition_key: row.try_get("definition_key")?,
        definition_version: row.try_get("definition_version")?,
        business_key: row.try_get("business_key")?,
        variables: json_object(&variables, "instances.variables")?,
        status: InstanceStatus::parse(&status)
            .ok_or_else(|| corrupt("instances.status", &status))?,
        error: row.try_get("error")?,
        started_by: row.try_get("started_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn user(row: &AnyRow) -> Result<User> {
    let aliases: String = row.try_get("email_aliases")?;
    Ok(User {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        email_aliases: serde_json::from_str(&aliases)
            .map_err(|_| corrupt("users.email_aliases", &aliases))?,
        phone: row.try_get("phone")?,
        manager_id: row.try_get("manager_id")?,
        locale: row.try_get("locale")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) fn definition(row: &AnyRow) -> Result<Definition> {
    let latest: i64 = row.try_get("latest")?;
    Ok(Definition {
        id: row.try_get("id")?,
        key: row.try_get("key")?,
        version: row.try_get("version")?,
        name: row.try_get("name")?,
        bpmn_xml: row.try_get("bpmn_xml")?,
        deployed_by: row.try_get("deployed_by")?,
        created_at: row.try_get("created_at")?,
        latest: latest == 1,
    })
}

pub(super) fn json_object(text: &str, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(corrupt(what, text)),
    }
}
