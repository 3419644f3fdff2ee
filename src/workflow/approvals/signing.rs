//! What a signer's approval mail says about their step (DESIGN §11, issue 11): the mode, how
//! many approvals pass it, and who else is asked — by display name from the directory, never by
//! address, since a mail must not hand colleagues' addresses around.
//!
//! The signers come from the instance's running activation (the task's group names it); a task
//! whose activation is no longer running (decided meanwhile) gets no such line.
use std::collections::HashMap;

use crate::{
    engine::{
        definition::{ProcessDefinition, SignMode},
        multi::{self, Activation, MultiState},
    },
    error::Result,
    mail::compose::{Signing, SigningMode},
    model::{Task, User},
    store::writes::Source,
};

use super::user_task_spec;

/// The running activation `task` belongs to, and the task's place in it (0-based).
fn activation_of<'m>(
    graph: &ProcessDefinition,
    multi: &'m MultiState,
    task: &Task,
) -> Option<(SignMode, bool, &'m Activation, usize)> {
    let spec = user_task_spec(graph, &task.activity_id)?.multi.as_ref()?;
    let index = multi::signer_index(&task.group_id)?;
    let activation = multi
        .0
        .get(&task.activity_id)
        .filter(|a| Some(a.id.as_str()) == multi::activation_of(&task.group_id))?;
    (index < activation.signers.len()).then_some((spec.mode, spec.sequential, activation, index))
}

/// The user ids whose names the mails of `tasks` show: every signer of their activations.
pub(in crate::workflow) fn signers_named<'t>(
    graph: &ProcessDefinition,
    multi: &MultiState,
    tasks: impl IntoIterator<Item = &'t Task>,
) -> Vec<String> {
    let mut ids: Vec<String> = tasks
        .into_iter()
        .filter_map(|task| activation_of(graph, multi, task))
        .flat_map(|(_, _, activation, _)| activation.signers.iter().cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The signing line of `task`'s mail, with names from `users` (read with [`signers_named`]);
/// None when the task is not a signer of a running multi-instance step.
pub(in crate::workflow) fn signing_of(
    graph: &ProcessDefinition,
    multi: &MultiState,
    task: &Task,
    users: &HashMap<String, User>,
) -> Option<Signing> {
    let (mode, sequential, activation, index) = activation_of(graph, multi, task)?;
    let total = activation.signers.len();
    let name = |id: &str| {
        users
            .get(id)
            .map(|u| u.display_name.trim())
            .filter(|name| !name.is_empty())
            .unwrap_or(id)
            .to_string()
    };
    let signers = activation
        .signers
        .iter()
        .enumerate()
        // A signer's task handed to someone else (转办) is theirs now.
        .map(|(i, id)| name(if i == index { &task.assignee } else { id }))
        .collect();
    let (mode, needed) = match mode {
        SignMode::All => (SigningMode::All, total),
        SignMode::Any => (SigningMode::Any, 1),
        SignMode::Vote { pass_ratio } => (
            SigningMode::Vote,
            multi::needed_approvals(pass_ratio, total),
        ),
    };
    Some(Signing {
        mode,
        sequential,
        position: index + 1,
        needed,
        signers,
    })
}

/// [`signing_of`] for a mail written outside the transition writer (a resend, a new address, a
/// reminder): reads the signers' names from `source`, only for a task of a multi-instance step
/// whose activation `multi` (the instance's, as the caller read it) still holds.
pub(in crate::workflow) async fn read_signing(
    source: &mut Source<'_>,
    graph: &ProcessDefinition,
    multi: &MultiState,
    task: &Task,
) -> Result<Option<Signing>> {
    let is_signer = user_task_spec(graph, &task.activity_id).is_some_and(|s| s.multi.is_some())
        && multi::signer_index(&task.group_id).is_some();
    if !is_signer {
        return Ok(None);
    }
    let mut ids = signers_named(graph, multi, [task]);
    ids.push(task.assignee.clone());
    let users = source.users_by_id(&ids).await?;
    Ok(signing_of(graph, multi, task, &users))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskStatus;

    fn graph(loop_attrs: &str) -> ProcessDefinition {
        let xml = format!(
            r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
                 xmlns:replyflow="https://replyflow.dev/schema/1" id="d" targetNamespace="t">
               <process id="p" isExecutable="true">
                 <startEvent id="start"/>
                 <sequenceFlow id="f1" sourceRef="start" targetRef="sign"/>
                 <userTask id="sign" name="会签">
                   <multiInstanceLoopCharacteristics replyflow:collection="signers" {loop_attrs}/>
                 </userTask>
                 <sequenceFlow id="f2" sourceRef="sign" targetRef="end"/>
                 <endEvent id="end"/>
               </process></definitions>"#
        );
        crate::engine::definition::parse(xml.as_bytes()).expect("the definition parses")
    }

    fn running(signers: &[&str]) -> MultiState {
        let mut state = MultiState::default();
        state.0.insert(
            "sign".into(),
            Activation {
                id: "act1".into(),
                signers: signers.iter().map(|s| s.to_string()).collect(),
                votes: Vec::new(),
                opened: signers.len(),
                from_activity: "start".into(),
            },
        );
        state
    }

    fn task(group_id: &str, assignee: &str) -> Task {
        Task {
            id: "t".into(),
            instance_id: "i".into(),
            definition_key: "p".into(),
            definition_version: 1,
            business_key: String::new(),
            activity_id: "sign".into(),
            name: "会签".into(),
            assignee: assignee.into(),
            status: TaskStatus::Open,
            outcome: String::new(),
            comment: String::new(),
            completed_by: String::new(),
            completed_via: None,
            group_id: group_id.into(),
            from_activity: "start".into(),
            created_at: 0,
            completed_at: None,
            owner: String::new(),
            delegation: crate::model::Delegation::None,
        }
    }

    fn users(named: &[(&str, &str)]) -> HashMap<String, User> {
        named
            .iter()
            .map(|(id, name)| {
                let user = User {
                    id: id.to_string(),
                    display_name: name.to_string(),
                    email: format!("{id}@example.com"),
                    ..User::default()
                };
                (id.to_string(), user)
            })
            .collect()
    }

    #[test]
    fn a_signer_sees_every_signer_by_name_and_their_own_place() {
        let graph = graph(r#"replyflow:signMode="vote" replyflow:passRatio="0.6""#);
        let multi = running(&["lena", "fred", "ivy"]);
        let mine = task("act1#1", "fred");
        assert_eq!(
            signers_named(&graph, &multi, [&mine]),
            ["fred", "ivy", "lena"]
        );
        // ivy is not in the directory (any more): her id stands in for her name.
        let named = users(&[("lena", "Lena Wang"), ("fred", "Fred Zhang")]);
        let signing = signing_of(&graph, &multi, &mine, &named).expect("a signer");
        assert_eq!(
            signing,
            Signing {
                mode: SigningMode::Vote,
                sequential: false,
                position: 2,
                needed: 2,
                signers: vec!["Lena Wang".into(), "Fred Zhang".into(), "ivy".into()],
            }
        );
    }

    #[test]
    fn a_task_handed_on_shows_its_new_assignee_in_its_place() {
        let graph = graph(r#"isSequential="true""#);
        let multi = running(&["lena", "fred"]);
        let named = users(&[("lena", "Lena Wang"), ("otto", "Otto Xu")]);
        let signing = signing_of(&graph, &multi, &task("act1#1", "otto"), &named).expect("signer");
        assert_eq!(
            (signing.mode, signing.sequential, signing.needed),
            (SigningMode::All, true, 2)
        );
        assert_eq!(signing.signers, ["Lena Wang", "Otto Xu"]);
    }

    #[test]
    fn no_line_outside_a_running_activation() {
        let graph = graph("");
        let multi = running(&["lena", "fred"]);
        let named = users(&[("lena", "Lena Wang")]);
        for stale in [
            task("act0#0", "lena"),
            task("act1#7", "lena"),
            task("", "lena"),
        ] {
            assert_eq!(signing_of(&graph, &multi, &stale, &named), None);
            assert!(signers_named(&graph, &multi, [&stale]).is_empty());
        }
        let decided = MultiState::default();
        assert_eq!(
            signing_of(&graph, &decided, &task("act1#0", "lena"), &named),
            None
        );
    }
}
