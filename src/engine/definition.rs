//! Process definitions: the BPMN 2.0 subset of DESIGN.md §3, read once into a validated graph.
//!
//! Deploying a definition is the only moment a modelling mistake is cheap, so [`parse`] refuses
//! every problem it can see, names the element and says why, and reports all of them at once
//! rather than one per deployment attempt. What it returns is a graph the engine can walk
//! without re-checking: one start event, flows resolved to indices, conditions compiled, every
//! node on a path from the start to an end. Reading happens in two steps: the XML becomes a
//! small namespace-resolved tree (so that `bpmn:`, `bpmn2:` and default-namespace files all look
//! the same), then the tree is checked and turned into the graph. Diagram interchange
//! (`bpmndi`, `dc`, `di`) and foreign extension elements are skipped; anything else BPMN offers
//! that the engine cannot run is refused instead of being silently dropped.
//!
//! The steps live in submodules: `xml` reads the tree, `builder` turns it into the graph and
//! applies the structural rules, `attrs` reads the replyflow attributes and extension elements,
//! and `checks` guards what reaches mail and completions. This file holds the graph's types.

use std::fmt;

use super::assignee::{AssigneeExpr, AssigneeRules};
use super::condition::Condition;
use super::reminder_rules::EscalationPolicy;
use crate::{duration::Duration, model::Channel};

mod attrs;
mod builder;
mod checks;
mod multi;
#[cfg(test)]
mod test_support;
mod xml;

pub use attrs::{MAX_VALID_FOR_SECS, MIN_VALID_FOR_SECS, check_valid_for};
use builder::{ProcessBuilder, find_executable_process};
pub use multi::{APPROVE, DEFAULT_ELEMENT_VARIABLE};
use xml::read_document;

/// Namespace of the replyflow extension attributes and elements.
pub const REPLYFLOW_NS: &str = "https://replyflow.dev/schema/1";
/// Namespace of BPMN 2.0 model elements.
pub const BPMN_NS: &str = "http://www.omg.org/spec/BPMN/20100524/MODEL";

/// `element_id` of errors that concern the document as a whole (XML syntax, wrong root).
const DOCUMENT: &str = "(document)";

pub type NodeIdx = usize;
pub type FlowIdx = usize;

/// A deployable process: the graph the engine walks.
#[derive(Debug, Clone)]
pub struct ProcessDefinition {
    /// The process `id` attribute; versions are counted per key.
    pub key: String,
    /// The process `name` attribute, or the key when absent.
    pub name: String,
    /// In document order.
    pub nodes: Vec<Node>,
    /// In document order.
    pub flows: Vec<Flow>,
    pub start: NodeIdx,
    /// The reminder types declared in the process's `extensionElements`.
    pub reminder_types: Vec<ReminderTypeDecl>,
}

impl ProcessDefinition {
    /// The node with this BPMN id.
    pub fn node(&self, id: &str) -> Option<(NodeIdx, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(_, node)| node.id == id)
    }

    /// Every user task with its specification, in document order.
    pub fn user_tasks(&self) -> impl Iterator<Item = (NodeIdx, &Node, &UserTaskSpec)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(idx, node)| match &node.kind {
                NodeKind::UserTask(spec) => Some((idx, node, spec)),
                _ => None,
            })
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    /// The `name` attribute with runs of whitespace (modelers write line breaks into labels)
    /// collapsed to one space, or the id when there is no name: mail subjects need a label.
    pub name: String,
    pub kind: NodeKind,
    /// In document order of the flows.
    pub incoming: Vec<FlowIdx>,
    /// In document order of the flows.
    pub outgoing: Vec<FlowIdx>,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    StartEvent,
    EndEvent,
    UserTask(UserTaskSpec),
    ExclusiveGateway(ExclusiveGateway),
    ParallelGateway,
}

#[derive(Debug, Clone)]
pub struct ExclusiveGateway {
    pub default: Option<FlowIdx>,
    /// A split none of whose outgoing flows has a condition and that has no default: every
    /// branch's task opens and the first one completed wins.
    pub deferred_choice: bool,
}

#[derive(Debug, Clone)]
pub struct UserTaskSpec {
    pub assignee: Assignee,
    pub reminder_type: Option<String>,
    /// `replyflow:emailApproval`, default true.
    pub email_approval: bool,
    /// `replyflow:validFor`, parsed and within its bounds ([`check_valid_for`]).
    pub valid_for: Option<Duration>,
    /// `replyflow:show`: the variables to show the approver, in the order written.
    pub show: Vec<String>,
    /// From `<replyflow:outcome>`; approve and reject when none is declared.
    pub outcomes: Vec<OutcomeSpec>,
    /// `replyflow:allowDelegate`, default false.
    pub allow_delegate: bool,
    /// `replyflow:writable`: the variables CompleteTask may set (none by default).
    pub writable: Vec<String>,
    /// `bpmn:multiInstanceLoopCharacteristics`: one task per signer (DESIGN §11).
    pub multi: Option<Box<MultiInstanceSpec>>,
    /// `replyflow:whenNoAssignee`, `whenAssigneeIsInitiator`, `skipIfApprovedBefore`.
    pub rules: AssigneeRules,
    /// `replyflow:cc` (抄送): who is copied in when the task opens.
    pub cc: Option<CcList>,
}

/// `replyflow:cc`: a variable holding a list of user ids (`${cc_users}`), or ids written out
/// (`"carol, dave"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CcList {
    Variable(String),
    Users(Vec<String>),
}

/// A multi-instance user task (会签 / 或签 / 票签 / 顺序会签): one task per element of a list
/// variable, decided together by [`SignMode`].
#[derive(Debug, Clone)]
pub struct MultiInstanceSpec {
    /// `isSequential="true"`: one signer at a time, in list order.
    pub sequential: bool,
    /// `replyflow:collection` (or `camunda:collection`): the variable holding the user ids.
    pub collection: String,
    /// `replyflow:elementVariable` (or `camunda:elementVariable`), default `signer`: bound to
    /// each element while that signer's assignee is resolved.
    pub element_variable: String,
    pub mode: SignMode,
    /// `bpmn:completionCondition`: CEL over the instance variables and the counters
    /// `nrOfInstances`, `nrOfCompletedInstances`, `nrOfActiveInstances`, `nrOfApproved`,
    /// `nrOfRejected`; true ends the activity early.
    pub completion: Option<Condition>,
}

/// How the signers' votes decide a multi-instance activity (`replyflow:signMode`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SignMode {
    /// 会签: approved when every signer approved; the first other outcome decides.
    All,
    /// 或签: the first decision decides, whatever it is.
    Any,
    /// 票签: approved once approvals reach ⌈pass_ratio · n⌉; rejected as soon as they no longer
    /// can. `pass_ratio` is in (0, 1].
    Vote { pass_ratio: f64 },
}

impl SignMode {
    /// The stable name (`all`, `any`, `vote`), as written in definitions and shown by the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            SignMode::All => "all",
            SignMode::Any => "any",
            SignMode::Vote { .. } => "vote",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignee {
    /// A user id of the directory.
    User(String),
    /// `${name}`: the process variable `name` holds the user id.
    Variable(String),
    /// `${…}` with any other CEL: `manager(initiator, 2)`, a conditional, … (see
    /// [`crate::engine::assignee`]).
    Expression(Box<AssigneeExpr>),
}

impl Assignee {
    /// The variables whose value chooses the assignee.
    pub fn variables(&self) -> Vec<String> {
        match self {
            Assignee::User(_) => Vec::new(),
            Assignee::Variable(name) => vec![name.clone()],
            Assignee::Expression(expr) => expr.variables().to_vec(),
        }
    }

    /// As written in the definition.
    pub fn source(&self) -> String {
        match self {
            Assignee::User(user) => user.clone(),
            Assignee::Variable(name) => format!("${{{name}}}"),
            Assignee::Expression(expr) => format!("${{{}}}", expr.source()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutcomeSpec {
    pub id: String,
    /// What the approver sees; the id when no label is given.
    pub label: String,
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub id: String,
    /// The `name` attribute, or empty: flows are usually unlabelled.
    pub name: String,
    pub source: NodeIdx,
    pub target: NodeIdx,
    pub condition: Option<Condition>,
}

#[derive(Debug, Clone)]
pub struct ReminderTypeDecl {
    pub id: String,
    pub count: u32,
    /// Parsed, and within the bounds every reminder type obeys.
    pub interval: Duration,
    /// A non-empty subset of `inbox`, `email`, `sms`, in the order written.
    pub channels: Vec<Channel>,
    /// `none` when absent.
    pub escalation: EscalationPolicy,
}

/// One problem with a definition: which element, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{element_id}: {reason}")]
pub struct DefinitionError {
    /// The BPMN id of the element at fault, or `(document)` for problems with the document as
    /// a whole.
    pub element_id: String,
    pub reason: String,
}

impl DefinitionError {
    fn new(element_id: impl Into<String>, reason: impl Into<String>) -> Self {
        DefinitionError {
            element_id: element_id.into(),
            reason: reason.into(),
        }
    }
}

/// Every problem found in a definition, in the order found.
#[derive(Debug, Clone)]
pub struct DefinitionErrors(pub Vec<DefinitionError>);

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DefinitionErrors {}

/// Reads and validates a BPMN document holding one executable process.
pub fn parse(xml: &[u8]) -> Result<ProcessDefinition, DefinitionErrors> {
    let root = read_document(xml).map_err(|error| DefinitionErrors(vec![error]))?;
    let (process, mut errors) = find_executable_process(&root);
    if let Some(process) = process {
        match ProcessBuilder::read(process).finish() {
            Ok(definition) if errors.is_empty() => return Ok(definition),
            Ok(_) => {}
            Err(process_errors) => errors.extend(process_errors),
        }
    }
    Err(DefinitionErrors(errors))
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    // --- the happy path ----------------------------------------------------------------------

    #[test]
    fn minimal_process_becomes_a_graph() {
        let definition = ok(&minimal_plus(""));
        assert_eq!(definition.key, "p");
        assert_eq!(definition.name, "p", "name falls back to the key");
        let ids: Vec<&str> = definition.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["start", "task", "end"]);
        assert_eq!(definition.start, 0);
        let (task_idx, task) = definition.node("task").unwrap();
        assert_eq!(task_idx, 1);
        assert_eq!(task.name, "task", "name falls back to the id");
        assert_eq!(task.incoming, [0]);
        assert_eq!(task.outgoing, [1]);
        let first = &definition.flows[0];
        assert_eq!(
            (first.id.as_str(), first.source, first.target),
            ("f1", 0, 1)
        );
        assert!(first.condition.is_none());
        assert!(definition.node("nope").is_none());
    }

    #[test]
    fn user_task_defaults() {
        let definition = ok(&minimal_plus(""));
        let spec = task_spec(&definition, "task");
        assert_eq!(spec.assignee, Assignee::User("alice".into()));
        assert!(spec.email_approval);
        assert!(!spec.allow_delegate);
        assert_eq!(spec.reminder_type, None);
        assert_eq!(spec.valid_for, None);
        assert!(spec.show.is_empty());
        let outcomes: Vec<(&str, &str)> = spec
            .outcomes
            .iter()
            .map(|o| (o.id.as_str(), o.label.as_str()))
            .collect();
        assert_eq!(outcomes, [("approve", "同意"), ("reject", "驳回")]);
        assert!(spec.outcomes[0].keywords.contains(&"Approve".to_owned()));
        assert!(spec.outcomes[1].keywords.contains(&"Reject".to_owned()));
    }

    #[test]
    fn user_task_attributes_are_read() {
        let definition = ok(&with_task(
            r#"<userTask id="task" name="经理
                   审批" replyflow:assignee="${manager}" replyflow:reminderType="urgent"
                   replyflow:emailApproval="false" replyflow:validFor="P1DT2H"
                   replyflow:show=" amount, reason ,,memo " replyflow:allowDelegate="true">
                 <extensionElements>
                   <replyflow:outcome id="approve" label="同意"/>
                   <replyflow:outcome id="return" label="退回修改" keywords="退回, return ,send back,"/>
                   <replyflow:outcome id="noted"/>
                   <camunda:properties><camunda:property name="x" value="y"/></camunda:properties>
                 </extensionElements>
               </userTask>"#,
        ));
        let (_, node) = definition.node("task").unwrap();
        assert_eq!(node.name, "经理 审批", "whitespace runs collapse");
        let spec = task_spec(&definition, "task");
        assert_eq!(spec.assignee, Assignee::Variable("manager".into()));
        assert_eq!(spec.reminder_type.as_deref(), Some("urgent"));
        assert!(!spec.email_approval);
        assert!(spec.allow_delegate);
        assert_eq!(spec.valid_for.map(|d| d.secs()), Some(93_600));
        assert_eq!(spec.show, ["amount", "reason", "memo"]);
        let ids: Vec<&str> = spec.outcomes.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["approve", "return", "noted"]);
        assert_eq!(spec.outcomes[1].keywords, ["退回", "return", "send back"]);
        assert_eq!(
            spec.outcomes[2].label, "noted",
            "label falls back to the id"
        );
        assert!(spec.outcomes[0].keywords.is_empty());
        assert_eq!(definition.user_tasks().count(), 1);
        let (idx, node, _) = definition.user_tasks().next().unwrap();
        assert_eq!((idx, node.id.as_str()), (1, "task"));
    }

    #[test]
    fn incoming_and_outgoing_follow_flow_document_order() {
        let definition = ok(&process(
            r#"<endEvent id="end"/>
               <sequenceFlow id="z_first" sourceRef="gw" targetRef="a"/>
               <startEvent id="start"/>
               <parallelGateway id="gw"/>
               <sequenceFlow id="a_second" sourceRef="gw" targetRef="b"/>
               <userTask id="a" replyflow:assignee="x"/>
               <userTask id="b" replyflow:assignee="y"/>
               <sequenceFlow id="f0" sourceRef="start" targetRef="gw"/>
               <sequenceFlow id="fa" sourceRef="a" targetRef="join"/>
               <sequenceFlow id="fb" sourceRef="b" targetRef="join"/>
               <parallelGateway id="join"/>
               <sequenceFlow id="fe" sourceRef="join" targetRef="end"/>"#,
        ));
        let (_, gw) = definition.node("gw").unwrap();
        let names: Vec<&str> = gw
            .outgoing
            .iter()
            .map(|&f| definition.flows[f].id.as_str())
            .collect();
        assert_eq!(names, ["z_first", "a_second"]);
        assert_eq!(definition.start, definition.node("start").unwrap().0);
        let (_, join) = definition.node("join").unwrap();
        assert_eq!(join.incoming.len(), 2);
        assert!(matches!(join.kind, NodeKind::ParallelGateway));
    }

    #[test]
    fn diagram_and_annotation_elements_are_ignored() {
        let definition = ok(&minimal_plus(
            r#"<documentation>notes</documentation>
               <textAnnotation id="note"><text>remember</text></textAnnotation>
               <association id="assoc" sourceRef="task" targetRef="note"/>
               <laneSet id="lanes"><lane id="lane1"><flowNodeRef>task</flowNodeRef></lane></laneSet>
               <bpmndi:BPMNShape id="odd"><dc:Bounds x="1" y="2" width="3" height="4"/></bpmndi:BPMNShape>"#,
        ));
        assert_eq!(definition.nodes.len(), 3);
        let with_diagram = minimal_plus("").replace(
            "</definitions>",
            r#"<bpmndi:BPMNDiagram id="d"><bpmndi:BPMNPlane id="pl" bpmnElement="p">
                 <bpmndi:BPMNShape id="s_di" bpmnElement="start"><dc:Bounds x="1" y="2" width="3" height="4"/></bpmndi:BPMNShape>
               </bpmndi:BPMNPlane></bpmndi:BPMNDiagram></definitions>"#,
        );
        ok(&with_diagram);
    }

    #[test]
    fn reminder_types_are_read() {
        let definition = ok(&minimal_plus(
            r#"<extensionElements>
                 <replyflow:reminderType id="urgent" count="3" interval="PT4H" channels="inbox, email,sms" escalation="notify-manager"/>
                 <replyflow:reminderType id="gentle" count="1" interval="P1D" channels="email"/>
                 <replyflow:reminderType id="boss" count="2" interval="PT1S" channels="sms" escalation="notify:ceo"/>
                 <replyflow:reminderType id="auto" count="5" interval="PT30M" channels="inbox" escalation="complete:approve"/>
                 <camunda:properties/>
               </extensionElements>"#,
        ));
        let urgent = &definition.reminder_types[0];
        assert_eq!(urgent.id, "urgent");
        assert_eq!(urgent.count, 3);
        assert_eq!(urgent.interval.secs(), 14_400);
        assert_eq!(
            urgent.channels,
            [Channel::Inbox, Channel::Email, Channel::Sms]
        );
        assert_eq!(urgent.escalation, EscalationPolicy::NotifyManager);
        assert_eq!(
            definition.reminder_types[1].escalation,
            EscalationPolicy::None
        );
        let ids: Vec<&str> = definition
            .reminder_types
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["urgent", "gentle", "boss", "auto"]);
    }

    #[test]
    fn a_reminder_type_declared_elsewhere_is_not_an_error() {
        let definition = ok(&with_task(
            r#"<userTask id="task" replyflow:assignee="a" replyflow:reminderType="server_wide"/>"#,
        ));
        assert_eq!(
            task_spec(&definition, "task").reminder_type.as_deref(),
            Some("server_wide")
        );
    }

    #[test]
    fn errors_display_element_and_reason() {
        let error = DefinitionError::new("task", "broken");
        assert_eq!(error.to_string(), "task: broken");
        let errors = DefinitionErrors(vec![error, DefinitionError::new("f1", "also broken")]);
        assert_eq!(errors.to_string(), "task: broken; f1: also broken");
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(errors);
        assert!(boxed.to_string().contains("f1"));
    }
}

/// The sample definitions shipped in `examples/`. The `include_str!` paths are relative to
/// this file and differ between the scratch crate and the project.
#[cfg(test)]
mod example_tests {
    use serde_json::json;

    use super::*;

    const EXPENSE: &str = include_str!("../../examples/expense.bpmn");
    const EXPENSE_MODELER: &str = include_str!("../../examples/expense_modeler.bpmn");
    const PARALLEL_REVIEW: &str = include_str!("../../examples/parallel_review.bpmn");
    const PARALLEL_REVIEW_MODELER: &str =
        include_str!("../../examples/parallel_review_modeler.bpmn");
    const COUNTERSIGN: &str = include_str!("../../examples/countersign.bpmn");
    const COUNTERSIGN_MODELER: &str = include_str!("../../examples/countersign_modeler.bpmn");
    const VOTE: &str = include_str!("../../examples/vote.bpmn");
    const VOTE_MODELER: &str = include_str!("../../examples/vote_modeler.bpmn");
    const SEQUENTIAL: &str = include_str!("../../examples/sequential.bpmn");
    const SEQUENTIAL_MODELER: &str = include_str!("../../examples/sequential_modeler.bpmn");
    const DEFERRED_CHOICE: &str = include_str!("../../examples/deferred_choice.bpmn");
    const DEFERRED_CHOICE_MODELER: &str =
        include_str!("../../examples/deferred_choice_modeler.bpmn");

    fn parsed(xml: &str) -> ProcessDefinition {
        parse(xml.as_bytes()).unwrap_or_else(|errors| panic!("{errors}"))
    }

    fn kinds(definition: &ProcessDefinition) -> Vec<&'static str> {
        definition
            .nodes
            .iter()
            .map(|node| match node.kind {
                NodeKind::StartEvent => "start",
                NodeKind::EndEvent => "end",
                NodeKind::UserTask(_) => "task",
                NodeKind::ExclusiveGateway(_) => "xor",
                NodeKind::ParallelGateway => "and",
            })
            .collect()
    }

    #[test]
    fn expense_examples() {
        for xml in [EXPENSE, EXPENSE_MODELER] {
            let definition = parsed(xml);
            assert_eq!(definition.key, "expense");
            assert_eq!(definition.name, "差旅报销");
            assert_eq!(definition.reminder_types.len(), 1);
            assert_eq!(definition.reminder_types[0].id, "urgent");
            let tasks: Vec<&str> = definition
                .user_tasks()
                .map(|(_, n, _)| n.id.as_str())
                .collect();
            assert_eq!(tasks, ["manager_approval", "finance_approval"]);
            let (_, _, manager) = definition.user_tasks().next().unwrap();
            assert_eq!(manager.assignee, Assignee::Variable("manager".into()));
            assert_eq!(manager.reminder_type.as_deref(), Some("urgent"));
            assert_eq!(manager.show, ["amount", "reason"]);
            let (_, by_amount) = definition.node("by_amount").unwrap();
            let NodeKind::ExclusiveGateway(gateway) = &by_amount.kind else {
                panic!("by_amount is not an exclusive gateway");
            };
            let default = gateway.default.expect("a default flow");
            let default_target = &definition.nodes[definition.flows[default].target];
            assert!(matches!(default_target.kind, NodeKind::EndEvent));
            let to_finance = by_amount
                .outgoing
                .iter()
                .map(|&f| &definition.flows[f])
                .find(|f| f.condition.is_some())
                .expect("a conditional flow");
            let condition = to_finance.condition.as_ref().unwrap();
            let big = json!({"amount": 12000.5, "manager_approval": {"outcome": "approve"}});
            let small = json!({"amount": 800, "manager_approval": {"outcome": "approve"}});
            assert_eq!(condition.evaluate(big.as_object().unwrap()), Ok(true));
            assert_eq!(condition.evaluate(small.as_object().unwrap()), Ok(false));
        }
    }

    #[test]
    fn multi_instance_examples_as_written_and_as_saved_by_a_modeler() {
        let cases = [
            (COUNTERSIGN, COUNTERSIGN_MODELER, SignMode::All, false),
            (
                VOTE,
                VOTE_MODELER,
                SignMode::Vote { pass_ratio: 0.6 },
                false,
            ),
            (SEQUENTIAL, SEQUENTIAL_MODELER, SignMode::All, true),
        ];
        for (plain, modeler, mode, sequential) in cases {
            for xml in [plain, modeler] {
                let definition = parsed(xml);
                let (_, _, sign) = definition
                    .user_tasks()
                    .find(|(_, node, _)| node.id == "sign")
                    .expect("a sign task");
                let multi = sign.multi.as_ref().expect("multi-instance");
                assert_eq!(multi.mode, mode, "{}", definition.key);
                assert_eq!(multi.sequential, sequential, "{}", definition.key);
                assert_eq!(multi.collection, "signers");
                assert_eq!(multi.element_variable, "signer");
                assert_eq!(sign.assignee, Assignee::Variable("signer".into()));
            }
        }
    }

    #[test]
    fn parallel_review_examples() {
        for xml in [PARALLEL_REVIEW, PARALLEL_REVIEW_MODELER] {
            let definition = parsed(xml);
            assert_eq!(
                kinds(&definition),
                ["start", "and", "task", "task", "task", "and", "task", "end"]
            );
            let (_, fork) = definition.node("fork").unwrap();
            assert_eq!(fork.outgoing.len(), 3);
            let (_, join) = definition.node("join").unwrap();
            assert_eq!(join.incoming.len(), 3);
            let assignees: Vec<Assignee> = definition
                .user_tasks()
                .map(|(_, _, s)| s.assignee.clone())
                .collect();
            assert_eq!(assignees[2], Assignee::Variable("it".into()));
        }
    }

    #[test]
    fn deferred_choice_examples() {
        for xml in [DEFERRED_CHOICE, DEFERRED_CHOICE_MODELER] {
            let definition = parsed(xml);
            let (_, choice) = definition.node("first_to_answer").unwrap();
            let NodeKind::ExclusiveGateway(gateway) = &choice.kind else {
                panic!("not an exclusive gateway");
            };
            assert!(gateway.deferred_choice);
            assert_eq!(gateway.default, None);
            assert_eq!(definition.user_tasks().count(), 2);
        }
    }
}
