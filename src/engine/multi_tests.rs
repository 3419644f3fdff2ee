//! Multi-instance user tasks through the engine: definitions as a modeler writes them, votes in
//! the order signers cast them, and what the reminders planner makes of each step.
use serde_json::{Map, Value, json};

use super::definition::{ProcessDefinition, parse};
use super::multi::MultiState;
use super::reminders::{Plan, plan};
use super::runtime::{
    Action, InstanceOutcome, JoinState, Limits, OpenTask, Snapshot, Transition, apply,
};

const CAMUNDA: &str = "http://camunda.org/schema/1.0/bpmn";

fn definition(loop_xml: &str, extra_task_attrs: &str) -> Result<ProcessDefinition, String> {
    let xml = format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1" xmlns:camunda="{CAMUNDA}">
           <process id="p" isExecutable="true">
             <extensionElements>
               <replyflow:reminderType id="t" count="2" interval="PT4H" channels="inbox"/>
             </extensionElements>
             <startEvent id="start"/>
             <sequenceFlow id="f1" sourceRef="start" targetRef="sign"/>
             <userTask id="sign" name="会签" replyflow:reminderType="t" {extra_task_attrs}>{loop_xml}</userTask>
             <sequenceFlow id="f2" sourceRef="sign" targetRef="end"/>
             <endEvent id="end"/>
           </process></definitions>"#
    );
    parse(xml.as_bytes()).map_err(|e| e.to_string())
}

fn sign(attrs: &str) -> ProcessDefinition {
    let looped =
        format!(r#"<multiInstanceLoopCharacteristics replyflow:collection="signers" {attrs}/>"#);
    definition(&looped, "").unwrap_or_else(|e| panic!("definition: {e}"))
}

/// An instance driven through the engine, with the signers' tasks by user.
struct Run {
    def: ProcessDefinition,
    variables: Map<String, Value>,
    joins: JoinState,
    multi: MultiState,
    /// Open tasks with their assignees.
    open: Vec<(OpenTask, String)>,
    outcome: InstanceOutcome,
    last: Option<Transition>,
    next: u32,
}

impl Run {
    fn start(def: ProcessDefinition, signers: &[&str]) -> Run {
        let variables = json!({ "signers": signers });
        let mut run = Run {
            def,
            variables: variables.as_object().cloned().unwrap_or_default(),
            joins: JoinState::default(),
            multi: MultiState::default(),
            open: Vec::new(),
            outcome: InstanceOutcome::Running,
            last: None,
            next: 0,
        };
        run.act(Action::Start);
        run
    }

    fn act(&mut self, action: Action<'_>) -> Plan {
        let mut counter = self.next;
        let mut ids = || {
            counter += 1;
            format!("act{counter}")
        };
        let open: Vec<OpenTask> = self.open.iter().map(|(t, _)| t.clone()).collect();
        let snapshot = Snapshot {
            variables: &self.variables,
            joins: &self.joins,
            multi: &self.multi,
            open_tasks: &open,
            people: &crate::engine::assignee::People::default(),
        };
        let t = match apply(
            &self.def,
            snapshot,
            action.clone(),
            Limits::default(),
            &mut ids,
        ) {
            Ok(t) => t,
            Err(e) => panic!("engine refused: {e}"),
        };
        self.next = counter;
        let planned = plan(&self.def, &t, &open);
        let done = match action {
            Action::CompleteTask { task_id, .. } => Some(task_id.to_string()),
            Action::Start | Action::Return { .. } | Action::Withdraw { .. } => None,
        };
        self.open.retain(|(o, _)| {
            Some(&o.id) != done.as_ref() && !t.withdraw.contains(&o.id) && !t.cancel.contains(&o.id)
        });
        for new in &t.open {
            self.next += 1;
            let task = OpenTask {
                id: format!("task{}", self.next),
                activity_id: new.activity_id.clone(),
                group_id: new.group_id.clone(),
            };
            self.open.push((task, new.assignee.clone()));
        }
        self.variables = t.variables.clone();
        self.joins = t.joins.clone();
        self.multi = t.multi.clone();
        self.outcome = t.outcome.clone();
        self.last = Some(t);
        planned
    }

    fn decide(&mut self, user: &str, outcome: &str) -> Plan {
        let Some((task, _)) = self.open.iter().find(|(_, a)| a == user).cloned() else {
            panic!("{user} has no open task: {:?}", self.open);
        };
        let none = Map::new();
        self.act(Action::CompleteTask {
            task_id: &task.id,
            outcome,
            comment: "ok",
            completed_by: user,
            variables: &none,
        })
    }

    fn assignees(&self) -> Vec<&str> {
        self.open.iter().map(|(_, a)| a.as_str()).collect()
    }

    fn withdrawn(&self) -> usize {
        self.last.as_ref().map_or(0, |t| t.withdraw.len())
    }

    fn result(&self) -> &Value {
        &self.variables["sign"]
    }
}

#[test]
fn countersign_all_opens_one_task_per_signer_and_passes_when_everyone_approves() {
    let mut run = Run::start(sign(""), &["legal", "finance", "it"]);
    assert_eq!(run.assignees(), ["legal", "finance", "it"]);
    let groups: Vec<&str> = run.open.iter().map(|(t, _)| t.group_id.as_str()).collect();
    assert_eq!(groups, ["act1#0", "act1#1", "act1#2"]);
    run.decide("finance", "approve");
    run.decide("legal", "approve");
    assert_eq!(run.outcome, InstanceOutcome::Running);
    assert_eq!(run.assignees(), ["it"]);
    run.decide("it", "approve");
    assert_eq!(run.outcome, InstanceOutcome::Completed);
    assert_eq!(run.result()["outcome"], "approve");
    assert_eq!(run.result()["approved"], 3);
    assert_eq!(run.result()["signers"], json!(["legal", "finance", "it"]));
    assert_eq!(run.result()["votes"][0]["user"], "finance");
    assert_eq!(run.variables["outcome"], "approve");
    assert!(run.multi.0.is_empty());
}

#[test]
fn a_reject_in_a_countersign_decides_at_once_and_withdraws_the_rest() {
    let mut run = Run::start(sign(r#"replyflow:signMode="all""#), &["a", "b", "c"]);
    run.decide("a", "approve");
    run.decide("b", "reject");
    assert_eq!(run.outcome, InstanceOutcome::Completed);
    assert_eq!(run.withdrawn(), 1);
    assert_eq!(run.result()["outcome"], "reject");
    assert_eq!(run.result()["rejected"], 1);
    let events: Vec<&str> = run
        .last
        .as_ref()
        .map_or(vec![], |t| t.events.iter().map(|e| e.kind).collect());
    assert!(events.starts_with(&["signer_voted", "task_withdrawn", "multi_instance_decided"]));
}

#[test]
fn any_signer_decides_for_all() {
    let mut run = Run::start(sign(r#"replyflow:signMode="any""#), &["a", "b", "c"]);
    run.decide("c", "reject");
    assert_eq!(run.outcome, InstanceOutcome::Completed);
    assert_eq!(run.withdrawn(), 2);
    assert_eq!(run.result()["outcome"], "reject");
}

#[test]
fn a_vote_passes_at_its_ratio_and_fails_once_the_ratio_is_out_of_reach() {
    let vote = r#"replyflow:signMode="vote" replyflow:passRatio="0.6""#;
    let mut pass = Run::start(sign(vote), &["a", "b", "c", "d", "e"]);
    for user in ["a", "b"] {
        pass.decide(user, "approve");
    }
    pass.decide("c", "reject");
    assert_eq!(pass.outcome, InstanceOutcome::Running);
    pass.decide("d", "approve");
    assert_eq!(pass.result()["outcome"], "approve");
    assert_eq!(pass.withdrawn(), 1);

    let mut fail = Run::start(sign(vote), &["a", "b", "c", "d", "e"]);
    fail.decide("a", "reject");
    fail.decide("b", "reject");
    assert_eq!(fail.outcome, InstanceOutcome::Running);
    fail.decide("c", "reject");
    assert_eq!(fail.result()["outcome"], "reject");
    assert_eq!(fail.withdrawn(), 2);
}

#[test]
fn sequential_signers_decide_one_after_another_and_a_reject_ends_it() {
    let mut run = Run::start(sign(r#"isSequential="true""#), &["a", "b", "c"]);
    assert_eq!(run.assignees(), ["a"]);
    let plan = run.decide("a", "approve");
    assert_eq!(run.assignees(), ["b"]);
    // The next signer is chased on the same edge as the first.
    assert_eq!(plan.arm.len(), 1);
    assert_eq!(plan.arm[0].start_activity, "start");
    assert_eq!(plan.arm[0].group_id, "act1#1");
    assert_eq!(plan.stop_groups, ["act1#0"]);
    assert!(plan.stop_activities.is_empty());
    run.decide("b", "reject");
    assert_eq!(run.outcome, InstanceOutcome::Completed);
    assert_eq!(run.result()["outcome"], "reject");
    assert_eq!(run.result()["signers"], json!(["a", "b", "c"]));
}

#[test]
fn a_vote_stops_only_that_signers_reminder_and_the_decision_stops_them_all() {
    let mut run = Run::start(sign(""), &["a", "b", "c"]);
    let first = run.decide("a", "approve");
    assert_eq!(first.stop_groups, ["act1#0"]);
    assert!(first.stop_activities.is_empty());
    let last = run.decide("b", "reject");
    assert_eq!(last.stop_activities, ["sign"]);
}

#[test]
fn arming_gives_every_signer_an_edge_of_their_own() {
    let def = sign("");
    let variables = json!({"signers": ["a", "b", "c"]});
    let mut ids = 0;
    let mut new_id = || {
        ids += 1;
        format!("act{ids}")
    };
    let t = apply(
        &def,
        Snapshot {
            variables: variables.as_object().unwrap_or(&Map::new()),
            joins: &JoinState::default(),
            multi: &MultiState::default(),
            open_tasks: &[],
            people: &crate::engine::assignee::People::default(),
        },
        Action::Start,
        Limits::default(),
        &mut new_id,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let planned = plan(&def, &t, &[]);
    let groups: Vec<&str> = planned.arm.iter().map(|a| a.group_id.as_str()).collect();
    assert_eq!(groups, ["act1#0", "act1#1", "act1#2"]);
}

#[test]
fn a_completion_condition_ends_the_activity_early() {
    let looped = r#"<multiInstanceLoopCharacteristics replyflow:collection="signers">
        <completionCondition>nrOfApproved &gt;= 2</completionCondition>
      </multiInstanceLoopCharacteristics>"#;
    let def = definition(looped, "").unwrap_or_else(|e| panic!("{e}"));
    let mut run = Run::start(def, &["a", "b", "c", "d"]);
    run.decide("a", "approve");
    assert_eq!(run.outcome, InstanceOutcome::Running);
    run.decide("b", "approve");
    assert_eq!(run.outcome, InstanceOutcome::Completed);
    assert_eq!(run.result()["outcome"], "approve");
    assert_eq!(run.withdrawn(), 2);
}

#[test]
fn a_bad_collection_fails_the_instance_naming_the_variable_and_opens_nothing() {
    for (signers, expected) in [
        (json!(null), "\"signers\" must be a list"),
        (json!([]), "empty list"),
        (json!(["a", "a"]), "\"a\" appears twice"),
    ] {
        let def = sign("");
        let variables = json!({ "signers": signers });
        let t = apply(
            &def,
            Snapshot {
                variables: variables.as_object().unwrap_or(&Map::new()),
                joins: &JoinState::default(),
                multi: &MultiState::default(),
                open_tasks: &[],
                people: &crate::engine::assignee::People::default(),
            },
            Action::Start,
            Limits::default(),
            &mut || "g".to_string(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        match &t.outcome {
            InstanceOutcome::Failed { element_id, reason } => {
                assert_eq!(element_id, "sign");
                assert!(reason.contains(expected), "{reason}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(t.open.is_empty());
        assert!(t.multi.0.is_empty());
        assert!(t.events.iter().all(|e| e.kind != "multi_instance_started"));
    }
}

#[test]
fn the_assignee_may_be_computed_from_each_element_or_be_camundas_spelling() {
    let looped = r#"<multiInstanceLoopCharacteristics camunda:collection="${signers}" camunda:elementVariable="who"/>"#;
    let def =
        definition(looped, r#"replyflow:assignee="${who}""#).unwrap_or_else(|e| panic!("{e}"));
    let run = Run::start(def, &["x", "y"]);
    assert_eq!(run.assignees(), ["x", "y"]);
}

#[test]
fn bad_combinations_are_refused_at_deploy_naming_the_task() {
    let refused = |attrs: &str, extra: &str, expected: &str| {
        let looped = format!(
            r#"<multiInstanceLoopCharacteristics replyflow:collection="signers" {attrs}/>"#
        );
        let err = match definition(&looped, extra) {
            Ok(_) => panic!("{attrs} was accepted"),
            Err(e) => e,
        };
        assert!(err.contains("sign"), "{err}");
        assert!(err.contains(expected), "{attrs}: {err}");
    };
    refused(
        r#"replyflow:signMode="vote""#,
        "",
        "needs replyflow:passRatio",
    );
    refused(
        r#"replyflow:signMode="vote" replyflow:passRatio="0""#,
        "",
        "outside (0, 1]",
    );
    refused(
        r#"replyflow:signMode="vote" replyflow:passRatio="1.5""#,
        "",
        "outside (0, 1]",
    );
    refused(
        r#"replyflow:signMode="vote" replyflow:passRatio="x""#,
        "",
        "not a number",
    );
    refused(r#"replyflow:passRatio="0.5""#, "", "only read with");
    refused(r#"replyflow:signMode="most""#, "", "all, any or vote");
    refused(r#"isSequential="yes""#, "", "isSequential");
    refused(
        r#"replyflow:elementVariable="a b""#,
        "",
        "not a variable name",
    );
    let no_collection = definition("<multiInstanceLoopCharacteristics/>", "");
    assert!(no_collection.is_err_and(|e| e.contains("missing replyflow:collection")));
    let cardinality = definition(
        r#"<multiInstanceLoopCharacteristics replyflow:collection="s"><loopCardinality>3</loopCardinality></multiInstanceLoopCharacteristics>"#,
        "",
    );
    assert!(cardinality.is_err_and(|e| e.contains("loopCardinality")));
    let bad_condition = definition(
        r#"<multiInstanceLoopCharacteristics replyflow:collection="s"><completionCondition>nrOfApproved &gt;</completionCondition></multiInstanceLoopCharacteristics>"#,
        "",
    );
    assert!(bad_condition.is_err_and(|e| e.contains("completionCondition does not compile")));
}

#[test]
fn all_and_vote_need_an_approve_outcome() {
    let looped = r#"<multiInstanceLoopCharacteristics replyflow:collection="signers"/>
        <extensionElements><replyflow:outcome id="ok"/><replyflow:outcome id="no"/></extensionElements>"#;
    let err = definition(looped, "").err().unwrap_or_default();
    assert!(
        err.contains("declare an outcome with id \"approve\""),
        "{err}"
    );
    let any = r#"<multiInstanceLoopCharacteristics replyflow:collection="signers" replyflow:signMode="any"/>
        <extensionElements><replyflow:outcome id="ok"/><replyflow:outcome id="no"/></extensionElements>"#;
    assert!(definition(any, "").is_ok());
}
