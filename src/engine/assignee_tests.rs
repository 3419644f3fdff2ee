//! Who approves, through the engine: `manager(…)` over a directory the test holds, the rules for
//! no assignee and for the initiator, 去重, and signers. The harness answers the engine's
//! [`ActionError::Needs`] the way the workflow layer does: load, apply again.
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::assignee::People;
use super::definition::{ProcessDefinition, parse};
use super::multi::MultiState;
use super::runtime::{
    Action, ActionError, EngineEvent, InstanceOutcome, JoinState, Limits, OpenTask, Snapshot,
    Transition, apply,
};

/// start → a1 → a2 → end, each task with its own attributes.
fn two_steps(a1: &str, a2: &str) -> ProcessDefinition {
    let xml = format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="p" isExecutable="true">
             <startEvent id="start"/>
             <userTask id="a1" name="A1" {a1}/>
             <userTask id="a2" name="A2" {a2}/>
             <endEvent id="end"/>
             <sequenceFlow id="f1" sourceRef="start" targetRef="a1"/>
             <sequenceFlow id="f2" sourceRef="a1" targetRef="a2"/>
             <sequenceFlow id="f3" sourceRef="a2" targetRef="end"/>
           </process></definitions>"#
    );
    parse(xml.as_bytes()).unwrap_or_else(|e| panic!("definition: {e}"))
}

fn one_step(attrs: &str) -> ProcessDefinition {
    two_steps(attrs, r#"replyflow:assignee="closer""#)
}

/// The directory: user → manager ("" for none). Everyone else is unknown to it.
const DIRECTORY: &[(&str, &str)] = &[
    ("ann", "bob"),
    ("bob", "carl"),
    ("carl", ""),
    ("dora", "ann"),
    ("root", ""),
    ("loop1", "loop2"),
    ("loop2", "loop1"),
];

struct Run {
    def: ProcessDefinition,
    people: People,
    /// Approvals already in the store before the action.
    approvers: Vec<String>,
    variables: Map<String, Value>,
    multi: MultiState,
    joins: JoinState,
    open: Vec<(OpenTask, String)>,
    last: Option<Transition>,
    /// Rounds of lookups the last action needed.
    rounds: usize,
    next: u32,
}

impl Run {
    fn start(def: ProcessDefinition, initiator: &str, variables: Value) -> Run {
        let mut run = Run {
            def,
            people: People::new(initiator),
            approvers: Vec::new(),
            variables: variables.as_object().cloned().unwrap_or_default(),
            multi: MultiState::default(),
            joins: JoinState::default(),
            open: Vec::new(),
            last: None,
            rounds: 0,
            next: 0,
        };
        run.act(None, "");
        run
    }

    fn act(&mut self, task: Option<(&str, &str)>, outcome: &str) {
        let directory: HashMap<&str, &str> = DIRECTORY.iter().copied().collect();
        let open: Vec<OpenTask> = self.open.iter().map(|(t, _)| t.clone()).collect();
        let task_id = task.map(|(activity, _)| {
            open.iter()
                .find(|t| t.activity_id == activity)
                .unwrap_or_else(|| panic!("{activity} is not open"))
                .id
                .clone()
        });
        let none = Map::new();
        self.rounds = 0;
        let transition = loop {
            let action = match (&task_id, task) {
                (Some(id), Some((_, by))) => Action::CompleteTask {
                    task_id: id,
                    outcome,
                    comment: "",
                    completed_by: by,
                    variables: &none,
                },
                _ => Action::Start,
            };
            let mut counter = self.next;
            let result = apply(
                &self.def,
                Snapshot {
                    variables: &self.variables,
                    joins: &self.joins,
                    multi: &self.multi,
                    open_tasks: &open,
                    people: &self.people,
                },
                action,
                Limits::default(),
                &mut || {
                    counter += 1;
                    format!("g{counter}")
                },
            );
            self.next = counter;
            match result {
                Ok(t) => break t,
                Err(ActionError::Needs(needs)) => {
                    self.rounds += 1;
                    assert!(self.rounds < 5, "lookups do not converge: {needs:?}");
                    for user in &needs.users {
                        let mut current = user.clone();
                        // Load the chain, as the workflow layer does.
                        while !self.people.knows(&current) {
                            match directory.get(current.as_str()) {
                                Some(manager) => {
                                    self.people.add_user(&current, Some(manager));
                                    current = (*manager).to_string();
                                }
                                None => self.people.add_user(&current, None),
                            }
                        }
                    }
                    if needs.approvers {
                        self.people.set_approvers(self.approvers.clone());
                    }
                }
                Err(other) => panic!("engine refused: {other}"),
            }
        };
        if let (Some((_, by)), "approve") = (task, outcome) {
            self.approvers.push(by.to_string());
        }
        self.approvers
            .extend(transition.auto_completed.iter().map(|t| t.assignee.clone()));
        self.open.retain(|(t, _)| {
            Some(&t.id) != task_id.as_ref() && !transition.withdraw.contains(&t.id)
        });
        for new in &transition.open {
            self.next += 1;
            let task = OpenTask {
                id: format!("t{}", self.next),
                activity_id: new.activity_id.clone(),
                group_id: new.group_id.clone(),
            };
            self.open.push((task, new.assignee.clone()));
        }
        self.variables = transition.variables.clone();
        self.joins = transition.joins.clone();
        self.multi = transition.multi.clone();
        self.last = Some(transition);
    }

    fn complete(&mut self, activity: &str, by: &str, outcome: &str) {
        self.act(Some((activity, by)), outcome);
    }

    fn last(&self) -> &Transition {
        self.last.as_ref().expect("an action ran")
    }

    /// Open tasks as `activity:assignee`.
    fn open(&self) -> Vec<String> {
        self.open
            .iter()
            .map(|(t, a)| format!("{}:{a}", t.activity_id))
            .collect()
    }

    fn outcome(&self) -> &InstanceOutcome {
        &self.last().outcome
    }

    fn event(&self, kind: &str) -> &EngineEvent {
        self.last()
            .events
            .iter()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {:?}", self.last().events))
    }

    fn failure(&self) -> (String, String) {
        match self.outcome() {
            InstanceOutcome::Failed { element_id, reason } => (element_id.clone(), reason.clone()),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[test]
fn a_plain_variable_still_names_the_assignee() {
    let run = Run::start(
        one_step(r#"replyflow:assignee="${manager}""#),
        "ann",
        json!({"manager": "bob"}),
    );
    assert_eq!(run.open(), ["a1:bob"]);
    assert_eq!(run.rounds, 0, "no directory read for a variable");
}

#[test]
fn manager_of_the_initiator_and_two_levels_up() {
    let run = Run::start(
        one_step(r#"replyflow:assignee="${manager(initiator)}""#),
        "ann",
        json!({}),
    );
    assert_eq!(run.open(), ["a1:bob"]);
    assert_eq!(run.rounds, 1, "one round loads the whole chain");
    let run = Run::start(
        one_step(r#"replyflow:assignee="${manager(initiator, 2)}""#),
        "ann",
        json!({}),
    );
    assert_eq!(run.open(), ["a1:carl"]);
    assert_eq!(run.rounds, 1);
    // CEL around it: the level may depend on the variables.
    let def = one_step(
        r#"replyflow:assignee="${amount &gt; 1000 ? manager(initiator, 2) : manager(initiator)}""#,
    );
    let small = Run::start(def.clone(), "dora", json!({"amount": 10}));
    assert_eq!(small.open(), ["a1:ann"]);
    let big = Run::start(def, "dora", json!({"amount": 5000}));
    assert_eq!(big.open(), ["a1:bob"]);
}

#[test]
fn the_initiator_cannot_be_forged_by_a_start_variable() {
    let run = Run::start(
        one_step(r#"replyflow:assignee="${manager(initiator)}""#),
        "ann",
        json!({"initiator": "dora"}),
    );
    assert_eq!(run.open(), ["a1:bob"], "ann's manager, not dora's");
}

#[test]
fn a_missing_manager_with_whennoassignee_fail_fails_the_instance_naming_the_task() {
    // bob's chain: carl, then nobody.
    let run = Run::start(
        one_step(r#"replyflow:assignee="${manager(initiator, 2)}""#),
        "bob",
        json!({}),
    );
    let (element, reason) = run.failure();
    assert_eq!(element, "a1");
    assert!(reason.contains("no assignee"), "{reason}");
    assert!(reason.contains("manager(initiator, 2)"), "{reason}");
    assert!(reason.contains("whenNoAssignee is fail"), "{reason}");
    assert!(run.open().is_empty());
}

#[test]
fn a_missing_manager_with_whennoassignee_skip_passes_the_task_as_approved() {
    let run = Run::start(
        one_step(
            r#"replyflow:assignee="${manager(initiator, 2)}" replyflow:whenNoAssignee="skip""#,
        ),
        "bob",
        json!({}),
    );
    assert_eq!(run.open(), ["a2:closer"], "the token moved on");
    let skipped = run.event("assignee_skipped");
    assert_eq!(skipped.activity_id, "a1");
    let why = skipped.detail["why"].as_str().unwrap_or_default();
    assert!(why.contains("as if approved"), "{why}");
    assert_eq!(run.variables["a1"]["outcome"], "approve");
    assert_eq!(run.variables["a1"]["skipped"], true);
}

#[test]
fn a_missing_manager_with_whennoassignee_admin_goes_to_the_admin() {
    let run = Run::start(
        one_step(
            r#"replyflow:assignee="${manager(initiator, 2)}" replyflow:whenNoAssignee="admin:root""#,
        ),
        "bob",
        json!({}),
    );
    assert_eq!(run.open(), ["a1:root"]);
    let replaced = run.event("assignee_replaced");
    assert_eq!(replaced.detail["to"], "root");
    assert_eq!(replaced.detail["rule"], "whenNoAssignee=admin:root");
}

#[test]
fn null_or_empty_is_no_assignee_but_an_unset_variable_is_a_broken_model() {
    let def = one_step(r#"replyflow:assignee="${approver}" replyflow:whenNoAssignee="skip""#);
    let run = Run::start(def.clone(), "ann", json!({"approver": null}));
    assert_eq!(run.open(), ["a2:closer"]);
    let run = Run::start(def.clone(), "ann", json!({"approver": " "}));
    assert_eq!(run.open(), ["a2:closer"]);
    let run = Run::start(def, "ann", json!({}));
    let (_, reason) = run.failure();
    assert!(reason.contains("\"approver\" is not set"), "{reason}");
}

#[test]
fn the_initiator_as_assignee_by_each_rule() {
    let attrs = |rule: &str| {
        format!(r#"replyflow:assignee="${{initiator}}" replyflow:whenAssigneeIsInitiator="{rule}""#)
    };
    let own = Run::start(one_step(&attrs("self")), "ann", json!({}));
    assert_eq!(own.open(), ["a1:ann"], "self: the definition allows it");
    assert_eq!(own.event("assignee_is_initiator").activity_id, "a1");
    let skip = Run::start(one_step(&attrs("skip")), "ann", json!({}));
    assert_eq!(skip.open(), ["a2:closer"]);
    assert!(
        skip.event("assignee_skipped").detail["why"]
            .as_str()
            .is_some_and(|w| w.contains("started this instance"))
    );
    let manager = Run::start(one_step(&attrs("manager")), "ann", json!({}));
    assert_eq!(manager.open(), ["a1:bob"]);
    let replaced = manager.event("assignee_replaced");
    assert_eq!(
        (&replaced.detail["from"], &replaced.detail["to"]),
        (&json!("ann"), &json!("bob"))
    );
    // The default is self.
    let default = Run::start(
        one_step(r#"replyflow:assignee="${initiator}""#),
        "ann",
        json!({}),
    );
    assert_eq!(default.open(), ["a1:ann"]);
}

#[test]
fn an_initiator_without_a_manager_falls_to_whennoassignee_and_never_back_to_themselves() {
    let base = r#"replyflow:assignee="${initiator}" replyflow:whenAssigneeIsInitiator="manager""#;
    let fail = Run::start(one_step(base), "carl", json!({}));
    let (element, reason) = fail.failure();
    assert_eq!(element, "a1");
    assert!(reason.contains("has no manager"), "{reason}");
    let admin = Run::start(
        one_step(&format!(r#"{base} replyflow:whenNoAssignee="admin:root""#)),
        "carl",
        json!({}),
    );
    assert_eq!(admin.open(), ["a1:root"]);
    // An admin who is the initiator would approve their own request: four eyes.
    let own = Run::start(
        one_step(&format!(r#"{base} replyflow:whenNoAssignee="admin:carl""#)),
        "carl",
        json!({}),
    );
    let (_, reason) = own.failure();
    assert!(reason.contains("four eyes"), "{reason}");
}

#[test]
fn skip_if_approved_before_completes_the_task_automatically() {
    let def = two_steps(
        r#"replyflow:assignee="${first}""#,
        r#"replyflow:assignee="${second}" replyflow:skipIfApprovedBefore="true""#,
    );
    let mut run = Run::start(
        def.clone(),
        "dora",
        json!({"first": "bob", "second": "bob"}),
    );
    run.complete("a1", "bob", "approve");
    assert_eq!(run.outcome(), &InstanceOutcome::Completed);
    let auto = &run.last().auto_completed;
    assert_eq!(auto.len(), 1);
    assert_eq!(
        (auto[0].activity_id.as_str(), auto[0].assignee.as_str()),
        ("a2", "bob")
    );
    let event = run.event("task_auto_completed");
    assert_eq!(event.activity_id, "a2");
    assert_eq!(event.detail["rule"], "skipIfApprovedBefore");
    assert_eq!(run.variables["a2"]["completed_by"], "bob");
    // A rejection is no approval: bob is asked.
    let mut run = Run::start(
        def.clone(),
        "dora",
        json!({"first": "bob", "second": "bob"}),
    );
    run.complete("a1", "bob", "reject");
    assert_eq!(run.open(), ["a2:bob"]);
    // Someone else approved: asked.
    let mut run = Run::start(def, "dora", json!({"first": "ann", "second": "bob"}));
    run.complete("a1", "ann", "approve");
    assert_eq!(run.open(), ["a2:bob"]);
}

#[test]
fn skip_if_approved_before_reads_approvals_already_stored() {
    let def = two_steps(
        r#"replyflow:assignee="ann""#,
        r#"replyflow:assignee="bob" replyflow:skipIfApprovedBefore="true""#,
    );
    let mut run = Run::start(def, "dora", json!({}));
    // bob approved an earlier task of this instance (another branch, a loop, …).
    run.approvers.push("bob".into());
    run.complete("a1", "ann", "approve");
    assert_eq!(run.rounds, 1, "the approvals were asked for");
    assert_eq!(run.outcome(), &InstanceOutcome::Completed);
}

#[test]
fn a_broken_directory_fails_the_instance_naming_the_user() {
    let def = one_step(r#"replyflow:assignee="${manager(initiator, 3)}""#);
    let (_, reason) = Run::start(def.clone(), "loop1", json!({})).failure();
    assert!(reason.contains("loops: loop1 → loop2 → loop1"), "{reason}");
    let (_, reason) = Run::start(def, "nobody", json!({})).failure();
    assert!(
        reason.contains("\"nobody\" is not in the directory"),
        "{reason}"
    );
    let levels = one_step(r#"replyflow:assignee="${manager(initiator, depth)}""#);
    let (_, reason) = Run::start(levels, "ann", json!({"depth": 25})).failure();
    assert!(reason.contains("not 25"), "{reason}");
}

fn signers(attrs: &str) -> ProcessDefinition {
    let xml = format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="p" isExecutable="true">
             <startEvent id="start"/>
             <userTask id="sign" name="会签" {attrs}>
               <multiInstanceLoopCharacteristics replyflow:collection="signers"/>
             </userTask>
             <userTask id="after" replyflow:assignee="closer"/>
             <endEvent id="end"/>
             <sequenceFlow id="f1" sourceRef="start" targetRef="sign"/>
             <sequenceFlow id="f2" sourceRef="sign" targetRef="after"/>
             <sequenceFlow id="f3" sourceRef="after" targetRef="end"/>
           </process></definitions>"#
    );
    parse(xml.as_bytes()).unwrap_or_else(|e| panic!("definition: {e}"))
}

#[test]
fn each_signer_is_resolved_by_the_same_rules() {
    // Each signer's manager signs; the initiator among them is passed over.
    let def = signers(
        r#"replyflow:assignee="${manager(signer)}" replyflow:whenAssigneeIsInitiator="skip"
           replyflow:whenNoAssignee="skip""#,
    );
    // dora → ann (the initiator: skipped), ann → bob, carl → nobody (skipped), bob → carl.
    let run = Run::start(
        def,
        "ann",
        json!({"signers": ["dora", "ann", "carl", "bob"]}),
    );
    let mut open = run.open();
    open.sort();
    assert_eq!(open, ["sign:bob", "sign:carl"]);
    let skipped: Vec<&Value> = run
        .last()
        .events
        .iter()
        .filter(|e| e.kind == "assignee_skipped")
        .map(|e| &e.detail["signer"])
        .collect();
    assert_eq!(skipped, [&json!(1), &json!(3)]);
    assert_eq!(run.multi.0["sign"].signers, ["bob", "carl"]);
}

#[test]
fn a_step_whose_every_signer_is_passed_over_passes_as_approved() {
    let def = signers(r#"replyflow:whenAssigneeIsInitiator="skip""#);
    let run = Run::start(def, "ann", json!({"signers": ["ann"]}));
    assert_eq!(run.open(), ["after:closer"]);
    assert_eq!(run.event("multi_instance_skipped").activity_id, "sign");
    assert_eq!(run.variables["sign"]["outcome"], "approve");
    // Replacements that meet an existing signer sign once.
    let def = signers(r#"replyflow:whenAssigneeIsInitiator="manager""#);
    let run = Run::start(def, "ann", json!({"signers": ["ann", "bob"]}));
    assert_eq!(run.open(), ["sign:bob"]);
}
