//! Multi-instance activities (会签 / 或签 / 票签 / 顺序会签) as the API shows them: on a signer's
//! task, and the running ones on their instance.
use serde_json::{Map, Value};

use crate::{
    engine::{
        definition::{MultiInstanceSpec, ProcessDefinition, SignMode, UserTaskSpec},
        multi::{self, Activation, MultiState},
    },
    model::Task,
    proto::pb,
};

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn needed(spec: &MultiInstanceSpec, total: usize) -> usize {
    match spec.mode {
        SignMode::All => total,
        SignMode::Any => 1,
        SignMode::Vote { pass_ratio } => multi::needed_approvals(pass_ratio, total),
    }
}

fn shell(activity_id: &str, spec: &MultiInstanceSpec) -> pb::MultiInstance {
    pb::MultiInstance {
        activity_id: activity_id.to_string(),
        mode: spec.mode.as_str().to_string(),
        sequential: spec.sequential,
        ..Default::default()
    }
}

fn running(activity_id: &str, spec: &MultiInstanceSpec, a: &Activation) -> pb::MultiInstance {
    let tally = a.tally();
    pb::MultiInstance {
        total: count(tally.total),
        approved: count(tally.approved),
        rejected: count(tally.rejected),
        needed: count(needed(spec, tally.total)),
        signers: a.signers.clone(),
        ..shell(activity_id, spec)
    }
}

/// The signer's view: the running activation when the task belongs to it, else the activity's
/// result variable once decided (`{outcome, approved, rejected, signers}`), else what the
/// definition and the task alone say.
pub(super) fn of_task(
    task: &Task,
    spec: &UserTaskSpec,
    state: Option<(&MultiState, &Map<String, Value>)>,
) -> Option<pb::MultiInstance> {
    let m = spec.multi.as_ref()?;
    let index = multi::signer_index(&task.group_id)?;
    let activation = multi::activation_of(&task.group_id);
    let mut view = match state {
        Some((live, _))
            if live
                .0
                .get(&task.activity_id)
                .is_some_and(|a| Some(a.id.as_str()) == activation) =>
        {
            live.0
                .get(&task.activity_id)
                .map(|a| running(&task.activity_id, m, a))
                .unwrap_or_else(|| shell(&task.activity_id, m))
        }
        Some((_, variables)) => decided(&task.activity_id, m, variables.get(&task.activity_id)),
        None => shell(&task.activity_id, m),
    };
    view.index = count(index + 1);
    Some(view)
}

fn decided(
    activity_id: &str,
    spec: &MultiInstanceSpec,
    result: Option<&Value>,
) -> pb::MultiInstance {
    let mut view = shell(activity_id, spec);
    let Some(result) = result.and_then(Value::as_object) else {
        return view;
    };
    let number = |key: &str| result.get(key).and_then(Value::as_u64).unwrap_or(0) as usize;
    let signers: Vec<String> = result
        .get("signers")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    view.total = count(signers.len());
    view.needed = count(needed(spec, signers.len()));
    view.approved = count(number("approved"));
    view.rejected = count(number("rejected"));
    view.signers = signers;
    view.outcome = result
        .get("outcome")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    view
}

/// The instance's running activations, in activity order.
pub(super) fn of_instance(
    state: &MultiState,
    graph: Option<&ProcessDefinition>,
) -> Vec<pb::MultiInstance> {
    let Some(graph) = graph else {
        return Vec::new();
    };
    state
        .0
        .iter()
        .filter_map(|(activity, a)| {
            let spec = graph.user_tasks().find(|(_, n, _)| n.id == *activity)?.2;
            Some(running(activity, spec.multi.as_ref()?, a))
        })
        .collect()
}
