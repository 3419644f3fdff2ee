//! Reminder planning (催办, DESIGN §6), pure: which reminder edges a transition arms and stops,
//! how a due reminder moves through its states, and whom it chases.
//!
//! A reminder is an edge StartActivity → EndActivity. It is armed when the start activity
//! completes (the start event counts) for every next user task that has a reminder type, and it
//! is stopped when its end activity completes. The branch type between them decides which edges:
//! a deferred choice arms one edge per branch in one group and the first completed branch stops
//! the whole group; a parallel join arms an edge per incoming branch, each when its branch
//! arrives — the early ones wait at the join (`via_join`) and chase the tasks still open on the
//! other branches until the join fires.
use std::collections::{BTreeSet, HashMap, VecDeque};

use serde_json::Value;

use super::{
    definition::{NodeIdx, NodeKind, ProcessDefinition},
    runtime::{InstanceOutcome, JoinState, OpenTask, Transition},
};
use crate::model::ReminderState;

/// A reminder edge to arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arm {
    pub start_activity: String,
    pub end_activity: String,
    /// The parallel join the edge waits at; empty when its end activity is open.
    pub via_join: String,
    /// Shared by the edges of one deferred choice.
    pub group_id: String,
    pub reminder_type: String,
}

/// What a transition does to the instance's reminders, in this order: stop, re-route the edges
/// waiting at joins that fired, arm, and (when the instance ended) cancel what is left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// End activities completed: their active reminders stop.
    pub stop_activities: Vec<String>,
    /// Deferred-choice groups decided: all their active reminders stop.
    pub stop_groups: Vec<String>,
    /// Joins that fired, with the user tasks opened in the same transition and the joins now
    /// waiting: an edge waiting at a fired join now chases its end activity if that opened, waits
    /// at the next join if it leads there, else it is cancelled (its branch was not taken).
    pub joins_fired: Vec<String>,
    /// Tokens a recall (拿回) took back from joins: (join, the recalled activity). The edges
    /// from that activity waiting at that join are cancelled; the new completion arms its own.
    pub joins_recalled: Vec<(String, String)>,
    pub opened_activities: Vec<String>,
    pub arm: Vec<Arm>,
    /// The instance ended (completed, failed, cancelled): whatever is still active is cancelled.
    pub cancel_rest: bool,
}

/// Plans the reminders of one transition. `open_before` are the tasks open before it (to find
/// the completed task's deferred-choice group).
pub fn plan(def: &ProcessDefinition, transition: &Transition, open_before: &[OpenTask]) -> Plan {
    let mut plan = Plan::default();
    // A transition may hold thousands of `join_waiting` events (up to `limits.max_steps`); the
    // user tasks after a join (with their reminder types) are searched once per join.
    let mut after_join: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    for event in &transition.events {
        match event.kind {
            "task_completed" => {
                plan.stop_activities.push(event.activity_id.clone());
                let task_id = event.detail.get("task_id").and_then(Value::as_str);
                let group = open_before
                    .iter()
                    .find(|t| Some(t.id.as_str()) == task_id)
                    .map(|t| t.group_id.as_str())
                    .unwrap_or_default();
                if !group.is_empty() {
                    plan.stop_groups.push(group.to_string());
                }
            }
            // A signer decided without deciding the activity: only that signer's reminder
            // (its task's own group) stops; the others keep chasing.
            "signer_voted" => {
                let task_id = event.detail.get("task_id").and_then(Value::as_str);
                if let Some(t) = open_before.iter().find(|t| Some(t.id.as_str()) == task_id) {
                    plan.stop_groups.push(t.group_id.clone());
                }
            }
            // The activity is decided: every reminder ending at it stops.
            "multi_instance_decided" => plan.stop_activities.push(event.activity_id.clone()),
            "join_waiting" => {
                let from = event
                    .detail
                    .get("from_activity")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let ends = after_join
                    .entry(event.activity_id.as_str())
                    .or_insert_with(|| {
                        next_user_tasks(def, &event.activity_id)
                            .into_iter()
                            .filter_map(|end| reminder_type_of(def, &end).map(|t| (end, t)))
                            .collect()
                    });
                for (end, reminder_type) in ends.iter() {
                    plan.arm.push(Arm {
                        start_activity: from.to_string(),
                        end_activity: end.clone(),
                        via_join: event.activity_id.clone(),
                        group_id: String::new(),
                        reminder_type: reminder_type.clone(),
                    });
                }
            }
            "join_fired" => plan.joins_fired.push(event.activity_id.clone()),
            // 拿回 withdrew the task the completion had opened: its reminders stop.
            "task_withdrawn_by_recall" => plan.stop_activities.push(event.activity_id.clone()),
            "join_token_recalled" => {
                let from = event.detail.get("from_activity").and_then(Value::as_str);
                plan.joins_recalled.push((
                    event.activity_id.clone(),
                    from.unwrap_or_default().to_string(),
                ));
            }
            _ => {}
        }
    }
    for task in &transition.open {
        plan.opened_activities.push(task.activity_id.clone());
        if let Some(reminder_type) = reminder_type_of(def, &task.activity_id) {
            plan.arm.push(Arm {
                start_activity: task.from_activity.clone(),
                end_activity: task.activity_id.clone(),
                via_join: String::new(),
                group_id: task.group_id.clone(),
                reminder_type,
            });
        }
    }
    // A return (退回) cancels every reminder the instance had; only the reopened task's are new.
    let returned = transition.events.iter().any(|e| e.kind == "task_returned");
    plan.cancel_rest = returned || !matches!(transition.outcome, InstanceOutcome::Running);
    plan
}

/// Where an edge that waited at a fired join goes now: chasing its end activity (`Some("")`),
/// waiting at another join (`Some(join)`), or nowhere (`None`: cancel it).
pub fn reroute(
    def: &ProcessDefinition,
    plan: &Plan,
    transition: &Transition,
    end_activity: &str,
) -> Option<String> {
    if plan.opened_activities.iter().any(|a| a == end_activity) {
        return Some(String::new());
    }
    transition
        .events
        .iter()
        .filter(|e| e.kind == "join_waiting")
        .find(|e| {
            next_user_tasks(def, &e.activity_id)
                .iter()
                .any(|t| t == end_activity)
        })
        .map(|e| e.activity_id.clone())
}

fn reminder_type_of(def: &ProcessDefinition, activity: &str) -> Option<String> {
    match def.node(activity) {
        Some((_, node)) => match &node.kind {
            NodeKind::UserTask(spec) => spec.reminder_type.clone(),
            _ => None,
        },
        None => None,
    }
}

/// The user tasks a token leaving `gateway` can reach before any other user task.
pub fn next_user_tasks(def: &ProcessDefinition, gateway: &str) -> Vec<String> {
    let Some((start, _)) = def.node(gateway) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(idx) = queue.pop_front() {
        for flow in &def.nodes[idx].outgoing {
            let target = def.flows[*flow].target;
            if !seen.insert(target) {
                continue;
            }
            match def.nodes[target].kind {
                NodeKind::UserTask(_) => found.push(def.nodes[target].id.clone()),
                NodeKind::ExclusiveGateway(_) | NodeKind::ParallelGateway => {
                    queue.push_back(target);
                }
                NodeKind::StartEvent | NodeKind::EndEvent => {}
            }
        }
    }
    found
}

/// The user tasks from which a token can still reach `join` on an incoming flow that has no
/// token yet: whoever holds the work the join waits for.
fn upstream_of_missing(def: &ProcessDefinition, join: &str, joins: &JoinState) -> Vec<String> {
    let Some((join_idx, node)) = def.node(join) else {
        return Vec::new();
    };
    let arrived = joins.0.get(join);
    let mut found = Vec::new();
    let mut seen: BTreeSet<NodeIdx> = BTreeSet::from([join_idx]);
    let mut queue: VecDeque<NodeIdx> = node
        .incoming
        .iter()
        .filter(|f| {
            arrived
                .and_then(|a| a.get(&def.flows[**f].id))
                .copied()
                .unwrap_or(0)
                == 0
        })
        .map(|f| def.flows[*f].source)
        .collect();
    while let Some(idx) = queue.pop_front() {
        if !seen.insert(idx) {
            continue;
        }
        let node = &def.nodes[idx];
        match node.kind {
            NodeKind::UserTask(_) => found.push(node.id.clone()),
            NodeKind::ExclusiveGateway(_) | NodeKind::ParallelGateway => {
                queue.extend(node.incoming.iter().map(|f| def.flows[*f].source));
            }
            NodeKind::StartEvent | NodeKind::EndEvent => {}
        }
    }
    found
}

/// The open tasks a reminder chases now: those of its end activity (of its group when it has
/// one: a deferred choice's branch, a multi-instance signer), or, while it waits at a parallel
/// join, those on the join's incoming branches that have not arrived yet.
pub fn chased<'a>(
    def: &ProcessDefinition,
    end_activity: &str,
    via_join: &str,
    group_id: &str,
    joins: &JoinState,
    open: &'a [OpenTask],
) -> Vec<&'a OpenTask> {
    if via_join.is_empty() {
        return open
            .iter()
            .filter(|t| t.activity_id == end_activity)
            .filter(|t| group_id.is_empty() || t.group_id == group_id)
            .collect();
    }
    let upstream = upstream_of_missing(def, via_join, joins);
    open.iter()
        .filter(|t| upstream.contains(&t.activity_id))
        .collect()
}

/// What a due reminder does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send a reminder: `sent_count` after it, the state it moves to, when it is due next (for
    /// the next reminder or, after the last, for the escalation).
    Remind {
        sent_count: i64,
        state: ReminderState,
        next_fire_at: i64,
    },
    /// One interval passed after the last reminder with the work not done: RemindFailed, and the
    /// escalation runs.
    Fail,
}

/// The step of a due reminder. Firing late (after downtime) is one step, not one per missed
/// interval: the next one is an interval after now.
pub fn step(state: ReminderState, sent_count: i64, count: i64, interval_ms: i64, now: i64) -> Step {
    match state {
        ReminderState::New | ReminderState::Reminded if sent_count < count => {
            let sent_count = sent_count + 1;
            Step::Remind {
                sent_count,
                state: if sent_count >= count {
                    ReminderState::RemindCompleted
                } else {
                    ReminderState::Reminded
                },
                next_fire_at: now.saturating_add(interval_ms),
            }
        }
        _ => Step::Fail,
    }
}

/// The state a reminder stops in when its end activity completes.
pub fn finished(state: ReminderState) -> ReminderState {
    if state == ReminderState::New {
        ReminderState::FinishedBeforeRemind
    } else {
        ReminderState::FinishedAfterRemind
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Map, json};

    use super::*;
    use crate::engine::{
        definition::parse,
        multi::MultiState,
        runtime::{Action, Limits, Snapshot, apply},
    };

    /// A process with every user task reminded by type `t`.
    fn process(body: &str) -> ProcessDefinition {
        let xml = format!(
            r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
                 xmlns:replyflow="https://replyflow.dev/schema/1">
               <process id="p" isExecutable="true">
                 <extensionElements>
                   <replyflow:reminderType id="t" count="3" interval="PT4H" channels="inbox"/>
                 </extensionElements>
                 {body}
               </process></definitions>"#
        );
        match parse(xml.as_bytes()) {
            Ok(def) => def,
            Err(e) => panic!("test definition: {e}"),
        }
    }

    fn task(id: &str) -> String {
        format!(r#"<userTask id="{id}" replyflow:assignee="u" replyflow:reminderType="t"/>"#)
    }

    fn flow(id: &str, from: &str, to: &str) -> String {
        format!(r#"<sequenceFlow id="{id}" sourceRef="{from}" targetRef="{to}"/>"#)
    }

    /// An instance under test: runs actions through the engine, keeping its state.
    struct Run {
        def: ProcessDefinition,
        variables: Map<String, serde_json::Value>,
        joins: JoinState,
        multi: MultiState,
        open: Vec<OpenTask>,
        next: u32,
    }

    impl Run {
        fn new(def: ProcessDefinition, variables: serde_json::Value) -> Self {
            let variables = variables.as_object().cloned().unwrap_or_default();
            Run {
                def,
                variables,
                joins: JoinState(BTreeMap::new()),
                multi: MultiState::default(),
                open: Vec::new(),
                next: 0,
            }
        }

        fn act(&mut self, action: Action<'_>) -> Plan {
            let mut counter = 0;
            let mut new_id = || {
                counter += 1;
                format!("g{counter}")
            };
            let snapshot = Snapshot {
                variables: &self.variables,
                joins: &self.joins,
                multi: &self.multi,
                open_tasks: &self.open,
                people: &crate::engine::assignee::People::default(),
            };
            let transition =
                match apply(&self.def, snapshot, action, Limits::default(), &mut new_id) {
                    Ok(t) => t,
                    Err(e) => panic!("engine refused the action: {e}"),
                };
            let plan = plan(&self.def, &transition, &self.open);
            let gone: Vec<&String> = transition
                .withdraw
                .iter()
                .chain(&transition.cancel)
                .collect();
            self.open.retain(|t| !gone.contains(&&t.id));
            for new in &transition.open {
                self.next += 1;
                self.open.push(OpenTask {
                    id: format!("task{}", self.next),
                    activity_id: new.activity_id.clone(),
                    group_id: new.group_id.clone(),
                });
            }
            self.variables = transition.variables;
            self.joins = transition.joins;
            self.multi = transition.multi;
            plan
        }

        fn start(&mut self) -> Plan {
            self.act(Action::Start)
        }

        fn complete(&mut self, activity: &str) -> Plan {
            let Some(task) = self
                .open
                .iter()
                .find(|t| t.activity_id == activity)
                .cloned()
            else {
                panic!("no open task for {activity}");
            };
            let none = Map::new();
            let plan = self.act(Action::CompleteTask {
                task_id: &task.id,
                outcome: "approve",
                comment: "",
                completed_by: "u",
                variables: &none,
            });
            self.open.retain(|t| t.id != task.id);
            plan
        }

        fn chased(&self, end: &str, via_join: &str) -> Vec<String> {
            chased(&self.def, end, via_join, "", &self.joins, &self.open)
                .into_iter()
                .map(|t| t.activity_id.clone())
                .collect()
        }
    }

    fn edges(plan: &Plan) -> Vec<(String, String, String)> {
        plan.arm
            .iter()
            .map(|a| {
                (
                    a.start_activity.clone(),
                    a.end_activity.clone(),
                    a.via_join.clone(),
                )
            })
            .collect()
    }

    fn edge(start: &str, end: &str, via: &str) -> (String, String, String) {
        (start.into(), end.into(), via.into())
    }

    #[test]
    fn case1_sequence_creates_a1_to_a2() {
        let body = format!(
            r#"<startEvent id="s"/>{}{}<endEvent id="e"/>{}{}{}"#,
            task("a1"),
            task("a2"),
            flow("f1", "s", "a1"),
            flow("f2", "a1", "a2"),
            flow("f3", "a2", "e"),
        );
        let mut run = Run::new(process(&body), json!({}));
        assert_eq!(edges(&run.start()), vec![edge("s", "a1", "")]);
        assert_eq!(edges(&run.complete("a1")), vec![edge("a1", "a2", "")]);
        assert_eq!(run.chased("a2", ""), vec!["a2"]);
    }

    #[test]
    fn case1_sequence_terminates_a1_to_a2_when_a2_completes() {
        let body = format!(
            r#"<startEvent id="s"/>{}{}<endEvent id="e"/>{}{}{}"#,
            task("a1"),
            task("a2"),
            flow("f1", "s", "a1"),
            flow("f2", "a1", "a2"),
            flow("f3", "a2", "e"),
        );
        let mut run = Run::new(process(&body), json!({}));
        run.start();
        assert_eq!(run.complete("a1").stop_activities, vec!["a1"]);
        let last = run.complete("a2");
        assert_eq!(last.stop_activities, vec!["a2"]);
        assert!(last.stop_groups.is_empty());
        assert!(last.cancel_rest, "the instance completed");
    }

    fn exclusive_join() -> ProcessDefinition {
        // a0 splits in parallel to a1 and a2; both pass an exclusive join into a3 (twice).
        let body = format!(
            r#"<startEvent id="s"/>{}{}{}{}<parallelGateway id="split"/>
               <exclusiveGateway id="xjoin"/><endEvent id="e"/>{}{}{}{}{}{}{}{}"#,
            task("a0"),
            task("a1"),
            task("a2"),
            task("a3"),
            flow("f0", "s", "a0"),
            flow("f1", "a0", "split"),
            flow("f2", "split", "a1"),
            flow("f3", "split", "a2"),
            flow("f4", "a1", "xjoin"),
            flow("f5", "a2", "xjoin"),
            flow("f6", "xjoin", "a3"),
            flow("f7", "a3", "e"),
        );
        process(&body)
    }

    #[test]
    fn case2_exclusive_join_creates_a1_to_a3() {
        let mut run = Run::new(exclusive_join(), json!({}));
        run.start();
        run.complete("a0");
        assert_eq!(edges(&run.complete("a1")), vec![edge("a1", "a3", "")]);
        assert_eq!(edges(&run.complete("a2")), vec![edge("a2", "a3", "")]);
    }

    #[test]
    fn case2_exclusive_join_terminates_the_edge_of_the_branch_that_ran() {
        let mut run = Run::new(exclusive_join(), json!({}));
        run.start();
        run.complete("a0");
        run.complete("a1");
        // a3 completing stops the reminders ending at a3: only (a1→a3) exists so far.
        let plan = run.complete("a3");
        assert_eq!(plan.stop_activities, vec!["a3"]);
        assert!(plan.stop_groups.is_empty());
    }

    fn parallel_join() -> ProcessDefinition {
        let body = format!(
            r#"<startEvent id="s"/>{}{}{}{}<parallelGateway id="split"/>
               <parallelGateway id="join"/><endEvent id="e"/>{}{}{}{}{}{}{}{}"#,
            task("a0"),
            task("a1"),
            task("a2"),
            task("a3"),
            flow("f0", "s", "a0"),
            flow("f1", "a0", "split"),
            flow("f2", "split", "a1"),
            flow("f3", "split", "a2"),
            flow("f4", "a1", "join"),
            flow("f5", "a2", "join"),
            flow("f6", "join", "a3"),
            flow("f7", "a3", "e"),
        );
        process(&body)
    }

    #[test]
    fn case3_parallel_join_creates_one_edge_per_branch_as_each_arrives() {
        let mut run = Run::new(parallel_join(), json!({}));
        run.start();
        run.complete("a0");
        // a1 arrives first: (a1→a3) waits at the join and chases a2, still open.
        let first = run.complete("a1");
        assert_eq!(edges(&first), vec![edge("a1", "a3", "join")]);
        assert_eq!(run.chased("a3", "join"), vec!["a2"]);
        // a2 arrives: the join fires, a3 opens, (a2→a3) is armed and (a1→a3) now chases a3.
        let second = run.complete("a2");
        assert_eq!(edges(&second), vec![edge("a2", "a3", "")]);
        assert_eq!(second.joins_fired, vec!["join"]);
        assert_eq!(second.opened_activities, vec!["a3"]);
        assert_eq!(run.chased("a3", ""), vec!["a3"]);
    }

    #[test]
    fn case3_parallel_join_terminates_both_edges_when_a3_completes() {
        let mut run = Run::new(parallel_join(), json!({}));
        run.start();
        run.complete("a0");
        let first = run.complete("a1");
        let second = run.complete("a2");
        assert!(
            second.opened_activities.contains(&"a3".to_string()),
            "(a1→a3) re-routes to chase a3"
        );
        // Both edges end at a3: one stop rule stops both.
        assert!(
            first
                .arm
                .iter()
                .chain(&second.arm)
                .all(|a| a.end_activity == "a3")
        );
        let last = run.complete("a3");
        assert_eq!(last.stop_activities, vec!["a3"]);
    }

    fn data_split() -> ProcessDefinition {
        let body = format!(
            r#"<startEvent id="s"/>{}{}{}<exclusiveGateway id="x" default="low"/><endEvent id="e"/>
               {}{}
               <sequenceFlow id="high" sourceRef="x" targetRef="a2"><conditionExpression>amount &gt; 100</conditionExpression></sequenceFlow>
               {}{}{}"#,
            task("a1"),
            task("a2"),
            task("a3"),
            flow("f0", "s", "a1"),
            flow("f1", "a1", "x"),
            flow("low", "x", "a3"),
            flow("f2", "a2", "e"),
            flow("f3", "a3", "e"),
        );
        process(&body)
    }

    #[test]
    fn case4_data_based_split_creates_the_taken_branch_only() {
        let mut run = Run::new(data_split(), json!({"amount": 500}));
        run.start();
        assert_eq!(edges(&run.complete("a1")), vec![edge("a1", "a2", "")]);
        let mut low = Run::new(data_split(), json!({"amount": 5}));
        low.start();
        assert_eq!(edges(&low.complete("a1")), vec![edge("a1", "a3", "")]);
    }

    fn deferred_choice() -> ProcessDefinition {
        let body = format!(
            r#"<startEvent id="s"/>{}{}{}<exclusiveGateway id="x"/><endEvent id="e"/>{}{}{}{}{}{}"#,
            task("a1"),
            task("a2"),
            task("a3"),
            flow("f0", "s", "a1"),
            flow("f1", "a1", "x"),
            flow("f2", "x", "a2"),
            flow("f3", "x", "a3"),
            flow("f4", "a2", "e"),
            flow("f5", "a3", "e"),
        );
        process(&body)
    }

    #[test]
    fn case4_deferred_choice_creates_one_edge_per_branch_in_one_group() {
        let mut run = Run::new(deferred_choice(), json!({}));
        run.start();
        let plan = run.complete("a1");
        assert_eq!(
            edges(&plan),
            vec![edge("a1", "a2", ""), edge("a1", "a3", "")]
        );
        assert!(!plan.arm[0].group_id.is_empty());
        assert_eq!(plan.arm[0].group_id, plan.arm[1].group_id);
    }

    #[test]
    fn case4_deferred_choice_terminates_the_whole_group() {
        let mut run = Run::new(deferred_choice(), json!({}));
        run.start();
        let armed = run.complete("a1");
        let group = armed.arm[0].group_id.clone();
        let plan = run.complete("a3");
        assert_eq!(plan.stop_activities, vec!["a3"]);
        assert_eq!(plan.stop_groups, vec![group]);
    }

    fn parallel_split() -> ProcessDefinition {
        let body = format!(
            r#"<startEvent id="s"/>{}{}{}<parallelGateway id="split"/>
               <parallelGateway id="join"/><endEvent id="e"/>{}{}{}{}{}{}{}"#,
            task("a1"),
            task("a2"),
            task("a3"),
            flow("f0", "s", "a1"),
            flow("f1", "a1", "split"),
            flow("f2", "split", "a2"),
            flow("f3", "split", "a3"),
            flow("f4", "a2", "join"),
            flow("f5", "a3", "join"),
            flow("f6", "join", "e"),
        );
        process(&body)
    }

    #[test]
    fn case5_parallel_split_creates_one_edge_per_branch() {
        let mut run = Run::new(parallel_split(), json!({}));
        run.start();
        let plan = run.complete("a1");
        assert_eq!(
            edges(&plan),
            vec![edge("a1", "a2", ""), edge("a1", "a3", "")]
        );
        assert!(plan.arm.iter().all(|a| a.group_id.is_empty()));
    }

    #[test]
    fn case5_parallel_split_terminates_only_the_completed_branch() {
        let mut run = Run::new(parallel_split(), json!({}));
        run.start();
        run.complete("a1");
        let plan = run.complete("a2");
        assert_eq!(plan.stop_activities, vec!["a2"]);
        assert!(plan.stop_groups.is_empty());
        assert!(!plan.cancel_rest, "a3 is still open");
    }

    #[test]
    fn the_start_event_counts_as_an_activity() {
        let mut run = Run::new(deferred_choice(), json!({}));
        assert_eq!(edges(&run.start()), vec![edge("s", "a1", "")]);
    }

    #[test]
    fn a_task_without_reminder_type_arms_nothing() {
        let body = r#"<startEvent id="s"/><userTask id="a1" replyflow:assignee="u"/><endEvent id="e"/>
            <sequenceFlow id="f1" sourceRef="s" targetRef="a1"/><sequenceFlow id="f2" sourceRef="a1" targetRef="e"/>"#;
        let mut run = Run::new(process(body), json!({}));
        assert!(run.start().arm.is_empty());
    }

    #[test]
    fn states_run_new_reminded_completed_failed() {
        let hour = 3_600_000;
        let first = step(ReminderState::New, 0, 3, hour, 0);
        assert_eq!(
            first,
            Step::Remind {
                sent_count: 1,
                state: ReminderState::Reminded,
                next_fire_at: hour
            }
        );
        let third = step(ReminderState::Reminded, 2, 3, hour, 5 * hour);
        assert_eq!(
            third,
            Step::Remind {
                sent_count: 3,
                state: ReminderState::RemindCompleted,
                next_fire_at: 6 * hour
            }
        );
        assert_eq!(
            step(ReminderState::RemindCompleted, 3, 3, hour, 6 * hour),
            Step::Fail
        );
        // A count of one goes straight to RemindCompleted.
        assert!(matches!(
            step(ReminderState::New, 0, 1, hour, 0),
            Step::Remind {
                state: ReminderState::RemindCompleted,
                ..
            }
        ));
        assert_eq!(
            finished(ReminderState::New),
            ReminderState::FinishedBeforeRemind
        );
        assert_eq!(
            finished(ReminderState::RemindCompleted),
            ReminderState::FinishedAfterRemind
        );
    }

    #[test]
    fn catching_up_after_downtime_is_one_step() {
        let hour = 3_600_000;
        // Due at 4 h, fired at 30 h: one reminder, the next an interval after now.
        let late = step(ReminderState::Reminded, 1, 3, 4 * hour, 30 * hour);
        assert_eq!(
            late,
            Step::Remind {
                sent_count: 2,
                state: ReminderState::Reminded,
                next_fire_at: 34 * hour
            }
        );
    }
}
