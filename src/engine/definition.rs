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

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{NamespaceResolver, ResolveResult};
use quick_xml::{NsReader, XmlVersion};

use super::condition::Condition;
use super::loops::loops_without_user_task;
use super::reminder_rules::{self, EscalationPolicy};
use crate::{duration::Duration, model::Channel};

mod checks;

/// Namespace of the replyflow extension attributes and elements.
pub const REPLYFLOW_NS: &str = "https://replyflow.dev/schema/1";
/// Namespace of BPMN 2.0 model elements.
pub const BPMN_NS: &str = "http://www.omg.org/spec/BPMN/20100524/MODEL";

const BPMNDI_NS: &str = "http://www.omg.org/spec/BPMN/20100524/DI";
const DC_NS: &str = "http://www.omg.org/spec/DD/20100524/DC";
const DI_NS: &str = "http://www.omg.org/spec/DD/20100524/DI";

/// `element_id` of errors that concern the document as a whole (XML syntax, wrong root).
const DOCUMENT: &str = "(document)";

/// Real definitions nest about ten elements deep; the limit keeps hostile input from
/// exhausting the stack when the tree is walked or dropped.
const MAX_DEPTH: usize = 100;

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignee {
    /// A user id of the directory.
    User(String),
    /// `${name}`: the process variable `name` holds the user id.
    Variable(String),
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

// ---------------------------------------------------------------------------------------------
// Step 1: XML to a namespace-resolved tree.
// ---------------------------------------------------------------------------------------------

/// The namespaces the reader tells apart; prefixes are gone by this point.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ns {
    Bpmn,
    Replyflow,
    /// BPMN DI, DC and DI: layout only, always skipped.
    Diagram,
    Other(String),
    /// No namespace: unprefixed attributes, or elements outside any default namespace.
    None,
}

#[derive(Debug)]
struct Element {
    ns: Ns,
    local: String,
    attrs: Vec<Attr>,
    children: Vec<Element>,
    /// Text, CDATA and character references directly inside, concatenated.
    text: String,
}

#[derive(Debug)]
struct Attr {
    ns: Ns,
    local: String,
    value: String,
}

impl Element {
    fn is_bpmn(&self, local: &str) -> bool {
        self.ns == Ns::Bpmn && self.local == local
    }

    /// An unprefixed attribute, as BPMN's own attributes are.
    fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|attr| attr.ns == Ns::None && attr.local == local)
            .map(|attr| attr.value.as_str())
    }

    fn id(&self) -> Option<&str> {
        self.attr("id").map(str::trim).filter(|id| !id.is_empty())
    }

    fn replyflow_attrs(&self) -> impl Iterator<Item = &Attr> {
        self.attrs.iter().filter(|attr| attr.ns == Ns::Replyflow)
    }

    /// The name used in messages: the local name, marked when it is not a BPMN element.
    fn display_name(&self) -> String {
        match &self.ns {
            Ns::Bpmn | Ns::Diagram => self.local.clone(),
            Ns::Replyflow => format!("replyflow:{}", self.local),
            Ns::Other(uri) => format!("{} (namespace {uri})", self.local),
            Ns::None => format!("{} (no namespace)", self.local),
        }
    }
}

fn read_document(xml: &[u8]) -> Result<Element, DefinitionError> {
    let mut reader = NsReader::from_reader(xml);
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(error) => {
                return Err(document_error(xml, reader.error_position(), error));
            }
        };
        let position = reader.buffer_position();
        let outcome = match event {
            Event::Start(start) => open_element(reader.resolver(), &start)
                .and_then(|element| push_element(&mut open, &root, element)),
            Event::Empty(start) => open_element(reader.resolver(), &start)
                .and_then(|element| push_element(&mut open, &root, element))
                .and_then(|()| close_element(&mut open, &mut root)),
            Event::End(_) => close_element(&mut open, &mut root),
            Event::Text(text) => add_text(&mut open, &text.xml10_content()),
            Event::CData(data) => add_text(&mut open, &data.xml10_content()),
            Event::GeneralRef(reference) => {
                resolve_reference(&reference).and_then(|text| add_text(&mut open, &text))
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => Ok(()),
            Event::Eof => break,
        };
        outcome.map_err(|reason| document_error(xml, position, reason))?;
    }
    if let Some(unclosed) = open.last() {
        let reason = format!("the document ends inside <{}>", unclosed.local);
        return Err(document_error(xml, reader.buffer_position(), reason));
    }
    root.ok_or_else(|| DefinitionError::new(DOCUMENT, "the document is empty: no root element"))
}

fn open_element(resolver: &NamespaceResolver, start: &BytesStart<'_>) -> Result<Element, String> {
    let (ns, local) = resolver.resolve_element(start.name());
    let ns = known_namespace(ns)?;
    let local: &str = local.as_ref();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|error| error.to_string())?;
        // Namespace declarations are the resolver's business, not attributes of the model.
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        let (attr_ns, attr_local) = resolver.resolve_attribute(attr.key);
        let attr_ns = known_namespace(attr_ns)?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|error| error.to_string())?;
        let attr_local: &str = attr_local.as_ref();
        attrs.push(Attr {
            ns: attr_ns,
            local: attr_local.to_owned(),
            value: value.into_owned(),
        });
    }
    Ok(Element {
        ns,
        local: local.to_owned(),
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

fn known_namespace(resolved: ResolveResult<'_>) -> Result<Ns, String> {
    match resolved {
        ResolveResult::Bound(namespace) => Ok(match namespace.as_ref() {
            BPMN_NS => Ns::Bpmn,
            REPLYFLOW_NS => Ns::Replyflow,
            BPMNDI_NS | DC_NS | DI_NS => Ns::Diagram,
            other => Ns::Other(other.to_owned()),
        }),
        ResolveResult::Unbound => Ok(Ns::None),
        ResolveResult::Unknown(prefix) => Err(format!("undeclared namespace prefix '{prefix}'")),
    }
}

fn push_element(
    open: &mut Vec<Element>,
    root: &Option<Element>,
    element: Element,
) -> Result<(), String> {
    if open.is_empty() && root.is_some() {
        return Err(format!(
            "<{}> after the root element: a document has one root",
            element.local
        ));
    }
    if open.len() >= MAX_DEPTH {
        return Err(format!("elements nest deeper than {MAX_DEPTH} levels"));
    }
    open.push(element);
    Ok(())
}

fn close_element(open: &mut Vec<Element>, root: &mut Option<Element>) -> Result<(), String> {
    let element = open
        .pop()
        .ok_or_else(|| "an end tag without a start tag".to_owned())?;
    match open.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
    Ok(())
}

fn add_text(open: &mut [Element], text: &str) -> Result<(), String> {
    match open.last_mut() {
        Some(element) => {
            element.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err("text outside the root element".to_owned()),
    }
}

fn resolve_reference(reference: &BytesRef<'_>) -> Result<String, String> {
    let name: &str = reference;
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(ch)) => Ok(ch.to_string()),
            _ => Err(format!("invalid character reference &{name};")),
        };
    }
    resolve_predefined_entity(name)
        .map(str::to_owned)
        .ok_or_else(|| format!("unknown entity &{name};"))
}

fn document_error(xml: &[u8], offset: u64, reason: impl fmt::Display) -> DefinitionError {
    let (line, column) = line_and_column(xml, offset);
    DefinitionError::new(
        DOCUMENT,
        format!("XML error at line {line}, column {column} (byte {offset}): {reason}"),
    )
}

fn line_and_column(xml: &[u8], offset: u64) -> (usize, usize) {
    let end = usize::try_from(offset).unwrap_or(usize::MAX).min(xml.len());
    let before = xml.get(..end).unwrap_or_default();
    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let current_line = before.get(line_start..).unwrap_or_default();
    let column = String::from_utf8_lossy(current_line).chars().count() + 1;
    (line, column)
}

// ---------------------------------------------------------------------------------------------
// Step 2: the tree to a validated graph.
// ---------------------------------------------------------------------------------------------

/// The one executable process, and the errors found around it at the document level.
fn find_executable_process(root: &Element) -> (Option<&Element>, Vec<DefinitionError>) {
    if !root.is_bpmn("definitions") {
        let reason = format!(
            "not a BPMN document: the root element is <{}>, expected <definitions> in namespace {BPMN_NS}",
            root.display_name()
        );
        return (None, vec![DefinitionError::new(DOCUMENT, reason)]);
    }
    let mut errors = Vec::new();
    let mut executable = Vec::new();
    for child in &root.children {
        match (&child.ns, child.local.as_str()) {
            (Ns::Diagram, _) => {}
            (Ns::Bpmn, "process") => {
                if child.attr("isExecutable").map(str::trim) != Some("false") {
                    executable.push(child);
                }
            }
            // Pools and their documentation only describe the picture around the process.
            (Ns::Bpmn, "collaboration" | "documentation" | "extensionElements" | "category") => {}
            _ => errors.push(unsupported(child, DOCUMENT)),
        }
    }
    let mut processes = executable.into_iter();
    let Some(first) = processes.next() else {
        errors.push(DefinitionError::new(
            DOCUMENT,
            "no executable process: set isExecutable=\"true\" on the <process> \
             (bpmn.io saves \"false\" by default; in Camunda Modeler tick \"Executable\")",
        ));
        return (None, errors);
    };
    for extra in processes {
        errors.push(DefinitionError::new(
            extra.id().unwrap_or(DOCUMENT),
            format!(
                "more than one executable process (the first is '{}'); deploy one per document \
                 or set isExecutable=\"false\" on the others",
                first.id().unwrap_or_default()
            ),
        ));
    }
    (Some(first), errors)
}

fn unsupported(element: &Element, parent_id: &str) -> DefinitionError {
    DefinitionError::new(
        element.id().unwrap_or(parent_id),
        format!("unsupported element {}", element.display_name()),
    )
}

/// A sequence flow as written, before its references are resolved.
#[derive(Debug)]
struct RawFlow {
    id: String,
    name: String,
    source_ref: Option<String>,
    target_ref: Option<String>,
    /// Whether a condition was written, even one that failed to compile: the gateway rules
    /// judge what the modeller drew.
    has_condition: bool,
    condition: Option<Condition>,
}

/// What a node element says beyond its kind, kept until the flows are resolved.
#[derive(Debug, Default)]
struct NodeExtras {
    default_ref: Option<String>,
    listed_incoming: Vec<String>,
    listed_outgoing: Vec<String>,
}

#[derive(Debug)]
struct ProcessBuilder {
    key: String,
    name: String,
    errors: Vec<DefinitionError>,
    nodes: Vec<Node>,
    extras: Vec<NodeExtras>,
    raw_flows: Vec<RawFlow>,
    reminder_types: Vec<ReminderTypeDecl>,
    seen_ids: HashSet<String>,
    /// Ids of refused elements: flows to them are already explained by the refusal.
    refused_ids: HashSet<String>,
    /// Every sequenceFlow id read, including flows later dropped for a dangling reference.
    declared_flow_ids: HashSet<String>,
}

impl ProcessBuilder {
    fn read(process: &Element) -> ProcessBuilder {
        let key = process.id().unwrap_or_default().to_owned();
        let mut builder = ProcessBuilder {
            name: display_label(process.attr("name")).unwrap_or_else(|| key.clone()),
            key,
            errors: Vec::new(),
            nodes: Vec::new(),
            extras: Vec::new(),
            raw_flows: Vec::new(),
            reminder_types: Vec::new(),
            seen_ids: HashSet::new(),
            refused_ids: HashSet::new(),
            declared_flow_ids: HashSet::new(),
        };
        if builder.key.is_empty() {
            builder.error("(process)", "the executable process has no id");
        } else {
            builder.seen_ids.insert(builder.key.clone());
        }
        let process_id = builder.process_ref();
        builder.refuse_replyflow_attrs(process, &process_id);
        for child in &process.children {
            builder.read_process_child(child);
        }
        builder
    }

    fn error(&mut self, element_id: &str, reason: impl Into<String>) {
        self.errors.push(DefinitionError::new(element_id, reason));
    }

    /// The id to name in an error about the process itself.
    fn process_ref(&self) -> String {
        if self.key.is_empty() {
            "(process)".to_owned()
        } else {
            self.key.clone()
        }
    }

    fn read_process_child(&mut self, child: &Element) {
        match (&child.ns, child.local.as_str()) {
            (Ns::Diagram, _) => {}
            (
                Ns::Bpmn,
                "startEvent" | "endEvent" | "userTask" | "exclusiveGateway" | "parallelGateway",
            ) => self.read_node(child),
            (Ns::Bpmn, "sequenceFlow") => self.read_flow(child),
            (Ns::Bpmn, "extensionElements") => self.read_process_extensions(child),
            // Notes, lanes and groups annotate the drawing without changing what runs.
            (
                Ns::Bpmn,
                "documentation" | "textAnnotation" | "association" | "laneSet" | "group",
            ) => {}
            _ => self.refuse(child, &self.process_ref()),
        }
    }

    fn refuse(&mut self, element: &Element, parent_id: &str) {
        if let Some(id) = element.id() {
            self.refused_ids.insert(id.to_owned());
        }
        self.errors.push(unsupported(element, parent_id));
    }

    /// Registers the element's id; `None`, with an error, when it is missing or taken.
    fn claim_id(&mut self, element: &Element) -> Option<String> {
        let Some(id) = element.id() else {
            let owner = self.process_ref();
            self.error(&owner, format!("a <{}> without an id", element.local));
            return None;
        };
        if let Some(reason) = crate::bounds::single_line_problem(id, crate::bounds::MAX_ID_LEN) {
            // The id itself may be what is wrong: name the element by a shortened, escaped id.
            let shown: String = id.chars().take(40).collect();
            self.error(&format!("{shown:?}"), format!("id: {reason}"));
            return None;
        }
        if !self.seen_ids.insert(id.to_owned()) {
            self.error(id, "duplicate id: ids must be unique in the document");
            return None;
        }
        Some(id.to_owned())
    }

    fn refuse_replyflow_attrs(&mut self, element: &Element, owner_id: &str) {
        let names: Vec<String> = element
            .replyflow_attrs()
            .map(|attr| attr.local.clone())
            .collect();
        for name in names {
            self.error(
                owner_id,
                format!("replyflow:{name} is not supported on a <{}>", element.local),
            );
        }
    }

    // --- nodes -------------------------------------------------------------------------------

    fn read_node(&mut self, element: &Element) {
        let Some(id) = self.claim_id(element) else {
            return;
        };
        let mut extras = NodeExtras::default();
        let mut outcomes = None;
        for child in &element.children {
            match (&child.ns, child.local.as_str()) {
                (Ns::Diagram, _) | (Ns::Bpmn, "documentation") => {}
                (Ns::Bpmn, "incoming") => extras.listed_incoming.push(child.text.trim().into()),
                (Ns::Bpmn, "outgoing") => extras.listed_outgoing.push(child.text.trim().into()),
                (Ns::Bpmn, "extensionElements") if element.local == "userTask" => {
                    outcomes = Some(self.read_outcomes(child, &id));
                }
                (Ns::Bpmn, "extensionElements") => {
                    self.replyflow_extensions(child, &id, None);
                }
                _ => self.refuse(child, &id),
            }
        }
        let kind = match element.local.as_str() {
            "userTask" => NodeKind::UserTask(self.read_user_task(element, &id, outcomes)),
            other => {
                self.refuse_replyflow_attrs(element, &id);
                match other {
                    "startEvent" => NodeKind::StartEvent,
                    "endEvent" => NodeKind::EndEvent,
                    "parallelGateway" => NodeKind::ParallelGateway,
                    // read_process_child sends only the five node kinds here.
                    _ => NodeKind::ExclusiveGateway(ExclusiveGateway {
                        default: None,
                        deferred_choice: false,
                    }),
                }
            }
        };
        extras.default_ref = self.read_default_attr(element, &id, &kind);
        self.nodes.push(Node {
            name: display_label(element.attr("name")).unwrap_or_else(|| id.clone()),
            id,
            kind,
            incoming: Vec::new(),
            outgoing: Vec::new(),
        });
        self.extras.push(extras);
    }

    fn read_default_attr(
        &mut self,
        element: &Element,
        id: &str,
        kind: &NodeKind,
    ) -> Option<String> {
        let default = element.attr("default").map(str::trim)?;
        if matches!(kind, NodeKind::ExclusiveGateway(_)) {
            return Some(default.to_owned());
        }
        self.error(
            id,
            format!(
                "a default flow is only supported on an exclusiveGateway, not on a <{}>",
                element.local
            ),
        );
        None
    }

    fn read_user_task(
        &mut self,
        element: &Element,
        id: &str,
        outcomes: Option<Vec<OutcomeSpec>>,
    ) -> UserTaskSpec {
        let mut spec = UserTaskSpec {
            assignee: Assignee::User(String::new()),
            reminder_type: None,
            email_approval: true,
            valid_for: None,
            show: Vec::new(),
            outcomes: outcomes
                .filter(|declared| !declared.is_empty())
                .unwrap_or_else(default_outcomes),
            allow_delegate: false,
            writable: Vec::new(),
        };
        let mut has_assignee = false;
        for attr in element.replyflow_attrs() {
            let value = attr.value.trim();
            let result = match attr.local.as_str() {
                "assignee" => {
                    has_assignee = true;
                    parse_assignee(value).map(|assignee| spec.assignee = assignee)
                }
                "reminderType" => non_empty(value).map(|name| spec.reminder_type = Some(name)),
                "emailApproval" => parse_flag(value).map(|flag| spec.email_approval = flag),
                "allowDelegate" => parse_flag(value).map(|flag| spec.allow_delegate = flag),
                "validFor" => check_valid_for(value).map(|raw| spec.valid_for = Some(raw)),
                "show" => {
                    spec.show = split_list(value);
                    Ok(())
                }
                "writable" => {
                    spec.writable = split_list(value);
                    match spec.writable.iter().find(|name| !is_identifier(name)) {
                        Some(bad) => Err(format!("{bad:?} is not a variable name")),
                        None => Ok(()),
                    }
                }
                other => {
                    self.error(id, format!("unknown attribute replyflow:{other}"));
                    continue;
                }
            };
            if let Err(reason) = result {
                self.error(id, format!("replyflow:{}: {reason}", attr.local));
            }
        }
        if !has_assignee {
            self.error(id, missing_assignee_reason(element));
        }
        spec
    }

    fn read_outcomes(&mut self, extensions: &Element, task_id: &str) -> Vec<OutcomeSpec> {
        let mut outcomes: Vec<OutcomeSpec> = Vec::new();
        for element in self.replyflow_extensions(extensions, task_id, Some("outcome")) {
            let Some(outcome) = self.read_outcome(element, task_id) else {
                continue;
            };
            if outcomes.iter().any(|known| known.id == outcome.id) {
                self.error(task_id, format!("duplicate outcome id '{}'", outcome.id));
                continue;
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    fn read_outcome(&mut self, element: &Element, task_id: &str) -> Option<OutcomeSpec> {
        self.refuse_unknown_attrs(element, task_id, &["id", "label", "keywords"]);
        let Some(id) = element
            .attr("id")
            .map(str::trim)
            .filter(|id| !id.is_empty())
        else {
            self.error(task_id, "a replyflow:outcome without an id");
            return None;
        };
        Some(OutcomeSpec {
            id: id.to_owned(),
            label: display_label(element.attr("label")).unwrap_or_else(|| id.to_owned()),
            keywords: split_list(element.attr("keywords").unwrap_or_default()),
        })
    }

    /// Unprefixed attributes of a replyflow element must be ones we read: a typo would
    /// otherwise silently lose a setting.
    fn refuse_unknown_attrs(&mut self, element: &Element, owner_id: &str, known: &[&str]) {
        let unknown: Vec<String> = element
            .attrs
            .iter()
            .filter(|attr| {
                attr.ns == Ns::Replyflow
                    || (attr.ns == Ns::None && !known.contains(&attr.local.as_str()))
            })
            .map(|attr| attr.local.clone())
            .collect();
        for name in unknown {
            self.error(
                owner_id,
                format!("unknown attribute {name} on replyflow:{}", element.local),
            );
        }
    }

    /// The replyflow elements named `wanted` inside an `extensionElements`; other replyflow
    /// elements are errors, other namespaces (camunda:*, ...) belong to other tools.
    fn replyflow_extensions<'e>(
        &mut self,
        extensions: &'e Element,
        owner_id: &str,
        wanted: Option<&str>,
    ) -> Vec<&'e Element> {
        let mut found = Vec::new();
        for child in &extensions.children {
            if child.ns != Ns::Replyflow {
                continue;
            }
            if Some(child.local.as_str()) == wanted {
                found.push(child);
            } else {
                self.error(
                    owner_id,
                    format!("unknown extension element replyflow:{} here", child.local),
                );
            }
        }
        found
    }

    // --- process extensions --------------------------------------------------------------------

    fn read_process_extensions(&mut self, extensions: &Element) {
        let owner = self.process_ref();
        for element in self.replyflow_extensions(extensions, &owner, Some("reminderType")) {
            if let Some(declaration) = self.read_reminder_type(element, &owner) {
                if self
                    .reminder_types
                    .iter()
                    .any(|known| known.id == declaration.id)
                {
                    self.error(&declaration.id, "duplicate reminderType id");
                    continue;
                }
                self.reminder_types.push(declaration);
            }
        }
    }

    fn read_reminder_type(&mut self, element: &Element, owner: &str) -> Option<ReminderTypeDecl> {
        let Some(id) = element
            .attr("id")
            .map(str::trim)
            .filter(|id| !id.is_empty())
        else {
            self.error(owner, "a replyflow:reminderType without an id");
            return None;
        };
        let id = id.to_owned();
        if let Err(reason) = reminder_rules::check_id(&id) {
            self.error(&id, format!("id: {reason}"));
            return None;
        }
        self.refuse_unknown_attrs(
            element,
            &id,
            &["id", "count", "interval", "channels", "escalation"],
        );
        let count = self.reminder_attr(element, &id, "count", parse_count);
        let interval = self.reminder_attr(element, &id, "interval", checked_interval);
        let channels = self.reminder_attr(element, &id, "channels", parse_channels);
        let escalation = match element.attr("escalation") {
            None => Some(EscalationPolicy::None),
            Some(value) => self.checked_attr(&id, "escalation", EscalationPolicy::parse(value)),
        };
        Some(ReminderTypeDecl {
            id,
            count: count?,
            interval: interval?,
            channels: channels?,
            escalation: escalation?,
        })
    }

    /// A required reminderType attribute, parsed; errors name the reminder type and attribute.
    fn reminder_attr<T>(
        &mut self,
        element: &Element,
        id: &str,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match element.attr(name) {
            Some(value) => self.checked_attr(id, name, parse(value.trim())),
            None => {
                self.error(id, format!("{name}: required"));
                None
            }
        }
    }

    fn checked_attr<T>(&mut self, id: &str, name: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|reason| self.error(id, format!("{name}: {reason}")))
            .ok()
    }

    // --- flows -------------------------------------------------------------------------------

    fn read_flow(&mut self, element: &Element) {
        let Some(id) = self.claim_id(element) else {
            return;
        };
        self.declared_flow_ids.insert(id.clone());
        self.refuse_replyflow_attrs(element, &id);
        let mut expressions = Vec::new();
        for child in &element.children {
            match (&child.ns, child.local.as_str()) {
                (Ns::Diagram, _) | (Ns::Bpmn, "documentation") => {}
                (Ns::Bpmn, "conditionExpression") => expressions.push(child.text.trim()),
                (Ns::Bpmn, "extensionElements") => {
                    self.replyflow_extensions(child, &id, None);
                }
                _ => self.refuse(child, &id),
            }
        }
        if expressions.len() > 1 {
            self.error(&id, "more than one conditionExpression");
        }
        let condition = expressions.first().and_then(|source| {
            Condition::compile(source)
                .map_err(|reason| self.error(&id, format!("condition does not compile: {reason}")))
                .ok()
        });
        self.raw_flows.push(RawFlow {
            name: display_label(element.attr("name")).unwrap_or_default(),
            source_ref: element.attr("sourceRef").map(|r| r.trim().to_owned()),
            target_ref: element.attr("targetRef").map(|r| r.trim().to_owned()),
            has_condition: !expressions.is_empty(),
            condition,
            id,
        });
    }

    // --- the graph ---------------------------------------------------------------------------

    fn finish(mut self) -> Result<ProcessDefinition, Vec<DefinitionError>> {
        let (flows, flow_has_condition) = self.link_flows();
        let start = self.check_start_and_end();
        let miscounted = self.check_flow_counts();
        self.check_condition_placement(&flows, &flow_has_condition);
        self.check_exclusive_gateways(&flows, &flow_has_condition);
        // With a flow missing, paths break in places the modeller did not draw; the dangling
        // reference is the error to fix, and reachability would only echo it.
        let all_flows_resolved = flows.len() == self.declared_flow_ids.len();
        if let (Some(start), true) = (start, all_flows_resolved) {
            self.check_reachability(start, &flows, &miscounted);
        }
        self.check_listed_flows(&flows);
        self.check_writable();
        self.check_names();
        for (element_id, reason) in loops_without_user_task(&self.nodes, &flows) {
            self.error(&element_id, reason);
        }
        match start {
            Some(start) if self.errors.is_empty() => Ok(ProcessDefinition {
                key: self.key,
                name: self.name,
                nodes: self.nodes,
                flows,
                start,
                reminder_types: self.reminder_types,
            }),
            _ => Err(self.errors),
        }
    }

    /// Resolves flow references to node indices and fills each node's incoming and outgoing
    /// lists in document order. Also returns, per flow, whether a condition was written.
    fn link_flows(&mut self) -> (Vec<Flow>, Vec<bool>) {
        let index: HashMap<String, NodeIdx> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(idx, node)| (node.id.clone(), idx))
            .collect();
        let mut flows = Vec::new();
        let mut has_condition = Vec::new();
        for raw in std::mem::take(&mut self.raw_flows) {
            let source = self.resolve_ref(&index, &raw.id, "sourceRef", raw.source_ref.as_deref());
            let target = self.resolve_ref(&index, &raw.id, "targetRef", raw.target_ref.as_deref());
            let (Some(source), Some(target)) = (source, target) else {
                continue;
            };
            let flow_idx = flows.len();
            if let Some(node) = self.nodes.get_mut(source) {
                node.outgoing.push(flow_idx);
            }
            if let Some(node) = self.nodes.get_mut(target) {
                node.incoming.push(flow_idx);
            }
            has_condition.push(raw.has_condition);
            flows.push(Flow {
                id: raw.id,
                name: raw.name,
                source,
                target,
                condition: raw.condition,
            });
        }
        (flows, has_condition)
    }

    fn resolve_ref(
        &mut self,
        index: &HashMap<String, NodeIdx>,
        flow_id: &str,
        attribute: &str,
        reference: Option<&str>,
    ) -> Option<NodeIdx> {
        let Some(reference) = reference.filter(|r| !r.is_empty()) else {
            self.error(flow_id, format!("missing {attribute}"));
            return None;
        };
        let found = index.get(reference).copied();
        if found.is_none() && !self.refused_ids.contains(reference) {
            self.error(
                flow_id,
                format!("{attribute} '{reference}' does not name a node of this process"),
            );
        }
        found
    }

    fn check_start_and_end(&mut self) -> Option<NodeIdx> {
        let starts: Vec<NodeIdx> = self.indices_of(|kind| matches!(kind, NodeKind::StartEvent));
        let has_end = !self
            .indices_of(|kind| matches!(kind, NodeKind::EndEvent))
            .is_empty();
        let process = self.process_ref();
        if !has_end {
            self.error(&process, "no endEvent: a process needs at least one");
        }
        let first = starts.first().copied();
        let Some(first) = first else {
            self.error(&process, "no startEvent: a process needs exactly one");
            return None;
        };
        let first_id = self.node_id(first);
        for &extra in starts.iter().skip(1) {
            let extra_id = self.node_id(extra);
            self.error(
                &extra_id,
                format!("more than one startEvent (the first is '{first_id}'); a process needs exactly one"),
            );
        }
        (starts.len() == 1).then_some(first)
    }

    fn indices_of(&self, wanted: impl Fn(&NodeKind) -> bool) -> Vec<NodeIdx> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| wanted(&node.kind))
            .map(|(idx, _)| idx)
            .collect()
    }

    fn node_id(&self, idx: NodeIdx) -> String {
        self.nodes
            .get(idx)
            .map(|node| node.id.clone())
            .unwrap_or_default()
    }

    /// Checks every node's number of incoming and outgoing flows; returns the nodes at fault,
    /// whose reachability errors would only repeat the same problem.
    fn check_flow_counts(&mut self) -> HashSet<NodeIdx> {
        let mut at_fault = HashSet::new();
        let problems: Vec<(NodeIdx, String)> = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(idx, node)| {
                flow_count_problems(node)
                    .into_iter()
                    .map(move |reason| (idx, reason))
            })
            .collect();
        for (idx, reason) in problems {
            at_fault.insert(idx);
            let id = self.node_id(idx);
            self.error(&id, reason);
        }
        at_fault
    }

    /// Conditions belong on flows leaving an exclusive gateway that can choose: not a join.
    fn check_condition_placement(&mut self, flows: &[Flow], has_condition: &[bool]) {
        for (flow, &conditioned) in flows.iter().zip(has_condition) {
            if !conditioned {
                continue;
            }
            let Some(source) = self.nodes.get(flow.source) else {
                continue;
            };
            let chooses = matches!(source.kind, NodeKind::ExclusiveGateway(_))
                && (source.outgoing.len() > 1 || source.incoming.len() <= 1);
            if !chooses {
                let reason = format!(
                    "a condition is only allowed on a flow leaving an exclusive gateway that \
                     splits; '{}' is {}",
                    source.id,
                    describe_kind(source)
                );
                self.error(&flow.id, reason);
            }
        }
    }

    fn check_exclusive_gateways(&mut self, flows: &[Flow], has_condition: &[bool]) {
        for idx in self.indices_of(|kind| matches!(kind, NodeKind::ExclusiveGateway(_))) {
            let default = self.resolve_default(idx, flows, has_condition);
            let deferred_choice = self.check_split_conditions(idx, default, flows, has_condition);
            if let Some(node) = self.nodes.get_mut(idx) {
                node.kind = NodeKind::ExclusiveGateway(ExclusiveGateway {
                    default,
                    deferred_choice,
                });
            }
        }
    }

    fn resolve_default(
        &mut self,
        idx: NodeIdx,
        flows: &[Flow],
        has_condition: &[bool],
    ) -> Option<FlowIdx> {
        let wanted = self.extras.get(idx)?.default_ref.clone()?;
        let node = self.nodes.get(idx)?;
        let gateway_id = node.id.clone();
        let found = node
            .outgoing
            .iter()
            .copied()
            .find(|&flow| flows.get(flow).is_some_and(|f| f.id == wanted));
        let Some(flow) = found else {
            self.error(
                &gateway_id,
                format!("default flow '{wanted}' is not one of its outgoing flows"),
            );
            return None;
        };
        if has_condition.get(flow).copied().unwrap_or(false) {
            self.error(
                &wanted,
                format!("the default flow of '{gateway_id}' may not have a condition"),
            );
        }
        Some(flow)
    }

    /// Applies the rules of an exclusive split and tells whether it is a deferred choice.
    fn check_split_conditions(
        &mut self,
        idx: NodeIdx,
        default: Option<FlowIdx>,
        flows: &[Flow],
        has_condition: &[bool],
    ) -> bool {
        let Some(node) = self.nodes.get(idx) else {
            return false;
        };
        // A pass-through or a join does not choose; a mixed gateway has its own error, and
        // judging its branches would only add noise.
        if node.outgoing.len() < 2 || node.incoming.len() > 1 {
            return false;
        }
        let gateway_id = node.id.clone();
        let branches: Vec<FlowIdx> = node
            .outgoing
            .iter()
            .copied()
            .filter(|&flow| Some(flow) != default)
            .collect();
        let conditioned = |flow: &FlowIdx| has_condition.get(*flow).copied().unwrap_or(false);
        let any_condition = branches.iter().any(conditioned);
        if any_condition || default.is_some() {
            for flow in branches.iter().filter(|flow| !conditioned(flow)) {
                let flow_id = flows.get(*flow).map(|f| f.id.clone()).unwrap_or_default();
                self.error(
                    &flow_id,
                    format!(
                        "leaves exclusive gateway '{gateway_id}' without a condition while the \
                         gateway has conditions or a default; add a condition, make it the \
                         default, or remove every condition for a deferred choice"
                    ),
                );
            }
            return false;
        }
        self.check_deferred_choice_targets(&gateway_id, &branches, flows);
        true
    }

    fn check_deferred_choice_targets(
        &mut self,
        gateway_id: &str,
        branches: &[FlowIdx],
        flows: &[Flow],
    ) {
        for flow in branches.iter().filter_map(|&flow| flows.get(flow)) {
            let Some(target) = self.nodes.get(flow.target) else {
                continue;
            };
            if matches!(target.kind, NodeKind::UserTask(_)) {
                continue;
            }
            let reason = format!(
                "exclusive gateway '{gateway_id}' has no conditions, so it is a deferred choice \
                 whose branches must each start with a userTask; this flow leads to {} '{}'",
                describe_kind(target),
                target.id
            );
            self.error(&flow.id, reason);
        }
    }

    fn check_reachability(&mut self, start: NodeIdx, flows: &[Flow], skip: &HashSet<NodeIdx>) {
        let forward = reachable(&self.nodes, [start], |node| {
            node.outgoing
                .iter()
                .filter_map(|&flow| flows.get(flow).map(|f| f.target))
                .collect()
        });
        let ends = self.indices_of(|kind| matches!(kind, NodeKind::EndEvent));
        let has_end = !ends.is_empty();
        let backward = reachable(&self.nodes, ends, |node| {
            node.incoming
                .iter()
                .filter_map(|&flow| flows.get(flow).map(|f| f.source))
                .collect()
        });
        for idx in 0..self.nodes.len() {
            if skip.contains(&idx) {
                continue;
            }
            let id = self.node_id(idx);
            if !forward.contains(&idx) {
                self.error(&id, "not reachable from the start event");
            } else if has_end && !backward.contains(&idx) {
                self.error(&id, "cannot reach an end event");
            }
        }
    }

    /// bpmn.io repeats each node's flows as `<incoming>`/`<outgoing>` children; a hand edit
    /// that changes one side only leaves the two disagreeing, and the drawing would lie.
    fn check_listed_flows(&mut self, flows: &[Flow]) {
        let by_id: HashMap<&str, &Flow> = flows.iter().map(|f| (f.id.as_str(), f)).collect();
        let mut problems = Vec::new();
        for (idx, (node, extras)) in self.nodes.iter().zip(&self.extras).enumerate() {
            let lists = [
                (Direction::Incoming, &extras.listed_incoming),
                (Direction::Outgoing, &extras.listed_outgoing),
            ];
            for (direction, listed) in lists {
                for flow_id in listed {
                    let problem = match by_id.get(flow_id.as_str()) {
                        Some(flow) => direction.disagreement(flow, idx, flow_id),
                        // A flow dropped for a dangling reference has been reported already.
                        None if self.declared_flow_ids.contains(flow_id) => None,
                        None => Some(format!(
                            "<{0}>{flow_id}</{0}> names no sequenceFlow of this process",
                            direction.tag()
                        )),
                    };
                    problems.extend(problem.map(|reason| (node.id.clone(), reason)));
                }
            }
        }
        for (id, reason) in problems {
            self.error(&id, reason);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    fn tag(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }

    /// Why `flow`, listed under this direction on node `idx`, does not agree, if it does not.
    fn disagreement(self, flow: &Flow, idx: NodeIdx, flow_id: &str) -> Option<String> {
        let (agrees, attribute) = match self {
            Direction::Incoming => (flow.target == idx, "targetRef"),
            Direction::Outgoing => (flow.source == idx, "sourceRef"),
        };
        (!agrees).then(|| {
            format!(
                "lists '{flow_id}' as {}, but that flow's {attribute} is another node",
                self.tag()
            )
        })
    }
}

fn flow_count_problems(node: &Node) -> Vec<String> {
    let incoming = node.incoming.len();
    let outgoing = node.outgoing.len();
    let mut problems = Vec::new();
    match &node.kind {
        NodeKind::StartEvent => {
            if incoming > 0 {
                problems.push("a startEvent cannot have incoming flows".to_owned());
            }
            if outgoing != 1 {
                problems.push(format!(
                    "a startEvent needs exactly one outgoing flow (it has {outgoing})"
                ));
            }
        }
        NodeKind::EndEvent => {
            if incoming == 0 {
                problems.push("an endEvent needs at least one incoming flow".to_owned());
            }
            if outgoing > 0 {
                problems.push("an endEvent cannot have outgoing flows".to_owned());
            }
        }
        NodeKind::UserTask(_) => {
            if incoming == 0 {
                problems.push("a userTask needs at least one incoming flow".to_owned());
            }
            if outgoing != 1 {
                problems.push(format!(
                    "a userTask needs exactly one outgoing flow (it has {outgoing}); \
                     use a gateway to branch"
                ));
            }
        }
        NodeKind::ExclusiveGateway(_) | NodeKind::ParallelGateway => {
            if incoming == 0 {
                problems.push("a gateway needs at least one incoming flow".to_owned());
            }
            if outgoing == 0 {
                problems.push("a gateway needs at least one outgoing flow".to_owned());
            }
            if incoming > 1 && outgoing > 1 {
                problems.push(
                    "mixed gateway: split and join in one gateway is not supported; \
                     use two gateways"
                        .to_owned(),
                );
            }
        }
    }
    problems
}

/// Every node reachable from `from` by following `next`.
fn reachable(
    nodes: &[Node],
    from: impl IntoIterator<Item = NodeIdx>,
    next: impl Fn(&Node) -> Vec<NodeIdx>,
) -> HashSet<NodeIdx> {
    let mut seen: HashSet<NodeIdx> = HashSet::new();
    let mut queue: VecDeque<NodeIdx> = from.into_iter().collect();
    while let Some(idx) = queue.pop_front() {
        if !seen.insert(idx) {
            continue;
        }
        if let Some(node) = nodes.get(idx) {
            queue.extend(next(node).into_iter().filter(|n| !seen.contains(n)));
        }
    }
    seen
}

fn describe_kind(node: &Node) -> &'static str {
    match node.kind {
        NodeKind::StartEvent => "a startEvent",
        NodeKind::EndEvent => "an endEvent",
        NodeKind::UserTask(_) => "a userTask",
        NodeKind::ExclusiveGateway(_) => "an exclusiveGateway",
        NodeKind::ParallelGateway => "a parallelGateway",
    }
}

// ---------------------------------------------------------------------------------------------
// Attribute values.
// ---------------------------------------------------------------------------------------------

/// The outcomes of a task that declares none; the keywords let a reply in either language
/// match.
fn default_outcomes() -> Vec<OutcomeSpec> {
    vec![
        OutcomeSpec {
            id: "approve".to_owned(),
            label: "同意".to_owned(),
            keywords: vec!["同意".to_owned(), "Approve".to_owned()],
        },
        OutcomeSpec {
            id: "reject".to_owned(),
            label: "驳回".to_owned(),
            keywords: vec!["驳回".to_owned(), "Reject".to_owned()],
        },
    ]
}

/// A label as shown to people: whitespace runs (line breaks drawn in a modeler) become one
/// space; `None` when there is nothing left.
fn display_label(raw: Option<&str>) -> Option<String> {
    let label = raw?.split_whitespace().collect::<Vec<_>>().join(" ");
    (!label.is_empty()).then_some(label)
}

fn missing_assignee_reason(element: &Element) -> String {
    let foreign = element
        .attrs
        .iter()
        .any(|attr| attr.local == "assignee" && attr.ns != Ns::Replyflow);
    let mut reason =
        "missing replyflow:assignee (a user id, or ${variable} naming a process variable)"
            .to_owned();
    if foreign {
        reason.push_str("; an assignee attribute of another namespace (e.g. camunda) is not read");
    }
    reason
}

fn parse_assignee(value: &str) -> Result<Assignee, String> {
    if let Some(inner) = value.strip_prefix("${") {
        let name = inner
            .strip_suffix('}')
            .map(str::trim)
            .filter(|name| is_identifier(name))
            .ok_or_else(|| format!("'{value}' is not ${{variable}} with a valid variable name"))?;
        return Ok(Assignee::Variable(name.to_owned()));
    }
    if value.is_empty() {
        return Err("empty: give a user id or ${variable}".to_owned());
    }
    if value.contains("${") || value.contains('}') || value.chars().any(char::is_whitespace) {
        return Err(format!("'{value}' is neither a user id nor ${{variable}}"));
    }
    Ok(Assignee::User(value.to_owned()))
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.is_empty() {
        Err("empty".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

fn parse_flag(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("must be true or false, not '{other}'")),
    }
}

/// The shortest `replyflow:validFor`: a token that expires on arrival (`PT0S`) is useless.
pub const MIN_VALID_FOR_SECS: u64 = 60;
/// The longest `replyflow:validFor`: beyond a year a mail link is a standing order, and larger
/// values overflowed the expiry timestamp.
pub const MAX_VALID_FOR_SECS: u64 = 365 * 86_400;

/// A `validFor` duration (`replyflow:validFor`, `mail.valid_for`): PT1M..P365D.
pub fn check_valid_for(value: &str) -> Result<Duration, String> {
    let duration = Duration::parse(value)?;
    let secs = duration.secs();
    if !(MIN_VALID_FOR_SECS..=MAX_VALID_FOR_SECS).contains(&secs) {
        return Err(format!(
            "'{value}' must be between PT1M and P365D (one minute to 365 days)"
        ));
    }
    Ok(duration)
}

/// A reminder interval: an ISO 8601 duration within the bounds every reminder type obeys.
fn checked_interval(value: &str) -> Result<Duration, String> {
    let duration = Duration::parse(value)?;
    reminder_rules::check_interval_secs(duration.secs())
        .map_err(|reason| format!("'{value}' {reason}"))?;
    Ok(duration)
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_count(value: &str) -> Result<u32, String> {
    let count: i64 = value.parse().map_err(|_| {
        format!(
            "must be a whole number from 1 to {}, not '{value}'",
            reminder_rules::MAX_COUNT
        )
    })?;
    reminder_rules::check_count(count)
}

fn parse_channels(value: &str) -> Result<Vec<Channel>, String> {
    let mut channels: Vec<Channel> = Vec::new();
    for name in split_list(value) {
        let channel = Channel::parse(&name).ok_or_else(|| {
            format!("unknown channel '{name}' (expected some of inbox, email, sms)")
        })?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    if channels.is_empty() {
        return Err("empty: name at least one of inbox, email, sms".to_owned());
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HEADER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1"
             xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
             xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI"
             xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"
             id="defs" targetNamespace="https://example.com">"#;

    /// A document whose one process holds `body`.
    fn process(body: &str) -> String {
        format!(r#"{HEADER}<process id="p" isExecutable="true">{body}</process></definitions>"#)
    }

    /// start → `task` → end, with the task element given in full.
    fn with_task(task: &str) -> String {
        process(&format!(
            r#"<startEvent id="start"/>
               <sequenceFlow id="f1" sourceRef="start" targetRef="task"/>
               {task}
               <sequenceFlow id="f2" sourceRef="task" targetRef="end"/>
               <endEvent id="end"/>"#
        ))
    }

    const TASK: &str = r#"<userTask id="task" replyflow:assignee="alice"/>"#;

    /// The usual start → task → end plus `extra` elements.
    fn minimal_plus(extra: &str) -> String {
        process(&format!(
            r#"<startEvent id="start"/>
               <sequenceFlow id="f1" sourceRef="start" targetRef="task"/>
               {TASK}
               <sequenceFlow id="f2" sourceRef="task" targetRef="end"/>
               <endEvent id="end"/>{extra}"#
        ))
    }

    /// start → gateway `gw` with the given attributes and flows → tasks a, b (→ end).
    fn split(gateway_attrs: &str, flows: &str) -> String {
        process(&format!(
            r#"<startEvent id="start"/>
               <sequenceFlow id="f0" sourceRef="start" targetRef="gw"/>
               <exclusiveGateway id="gw" {gateway_attrs}/>
               {flows}
               <userTask id="a" replyflow:assignee="alice"/>
               <userTask id="b" replyflow:assignee="bob"/>
               <sequenceFlow id="fa" sourceRef="a" targetRef="end"/>
               <sequenceFlow id="fb" sourceRef="b" targetRef="end"/>
               <endEvent id="end"/>"#
        ))
    }

    fn ok(xml: &str) -> ProcessDefinition {
        match parse(xml.as_bytes()) {
            Ok(definition) => definition,
            Err(errors) => panic!("expected a valid definition, got: {errors}"),
        }
    }

    fn errors(xml: impl AsRef<[u8]>) -> Vec<DefinitionError> {
        match parse(xml.as_ref()) {
            Ok(_) => panic!("expected errors, the definition parsed"),
            Err(DefinitionErrors(errors)) => errors,
        }
    }

    /// Asserts that some error names `element_id` and mentions `fragment`.
    #[track_caller]
    fn assert_error(xml: impl AsRef<[u8]>, element_id: &str, fragment: &str) {
        let errors = errors(xml);
        assert!(
            errors
                .iter()
                .any(|e| e.element_id == element_id && e.reason.contains(fragment)),
            "no error for '{element_id}' containing '{fragment}' in {errors:#?}"
        );
    }

    fn task_spec(definition: &ProcessDefinition, id: &str) -> UserTaskSpec {
        match definition.node(id).map(|(_, node)| &node.kind) {
            Some(NodeKind::UserTask(spec)) => spec.clone(),
            other => panic!("{id} is not a user task: {other:?}"),
        }
    }

    fn gateway(definition: &ProcessDefinition, id: &str) -> ExclusiveGateway {
        match definition.node(id).map(|(_, node)| &node.kind) {
            Some(NodeKind::ExclusiveGateway(gateway)) => gateway.clone(),
            other => panic!("{id} is not an exclusive gateway: {other:?}"),
        }
    }

    fn flow_idx(definition: &ProcessDefinition, id: &str) -> FlowIdx {
        definition
            .flows
            .iter()
            .position(|flow| flow.id == id)
            .unwrap_or_else(|| panic!("no flow {id}"))
    }

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
    fn every_prefix_style_reads_the_same() {
        let body = r#"<P:process id="p" name="Named"><P:startEvent id="s"/>
            <P:sequenceFlow id="f1" sourceRef="s" targetRef="t"/>
            <P:userTask id="t" replyflow:assignee="alice"/>
            <P:sequenceFlow id="f2" sourceRef="t" targetRef="e"/><P:endEvent id="e"/>
            </P:process>"#;
        for (prefix, declaration) in [
            ("bpmn:", "xmlns:bpmn"),
            ("bpmn2:", "xmlns:bpmn2"),
            ("", "xmlns"),
        ] {
            let xml = format!(
                r#"<{prefix}definitions {declaration}="{BPMN_NS}" xmlns:replyflow="{REPLYFLOW_NS}">{}</{prefix}definitions>"#,
                body.replace("P:", prefix)
            );
            let definition = ok(&xml);
            assert_eq!(definition.name, "Named", "{prefix}");
            assert_eq!(definition.nodes.len(), 3, "{prefix}");
        }
    }

    #[test]
    fn a_prefix_bound_elsewhere_is_not_bpmn() {
        let xml = r#"<bpmn:definitions xmlns:bpmn="http://example.com/not-bpmn"><bpmn:process id="p"/></bpmn:definitions>"#;
        assert_error(xml, DOCUMENT, "not a BPMN document");
    }

    #[test]
    fn replyflow_attributes_need_the_replyflow_namespace() {
        let xml = minimal_plus("").replace(REPLYFLOW_NS, "https://example.com/other");
        assert_error(&xml, "task", "missing replyflow:assignee");
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

    // --- the document and the process ---------------------------------------------------------

    #[test]
    fn root_must_be_bpmn_definitions() {
        assert_error("<html><body/></html>", DOCUMENT, "not a BPMN document");
        assert_error(
            format!(r#"<process xmlns="{BPMN_NS}" id="p"/>"#),
            DOCUMENT,
            "root element is <process>",
        );
        assert_error("<definitions/>", DOCUMENT, "no namespace");
    }

    #[test]
    fn one_executable_process_is_required() {
        let none = format!(r#"{HEADER}<process id="p" isExecutable="false"/></definitions>"#);
        assert_error(&none, DOCUMENT, "no executable process");
        assert_error(
            format!("{HEADER}</definitions>"),
            DOCUMENT,
            "no executable process",
        );
        let two = minimal_plus("").replace(
            "</definitions>",
            r#"<process id="second" isExecutable="true"/></definitions>"#,
        );
        assert_error(&two, "second", "more than one executable process");
    }

    #[test]
    fn non_executable_processes_and_collaborations_are_ignored() {
        let xml = minimal_plus("").replace(
            "</definitions>",
            r#"<collaboration id="c"><participant id="part" processRef="p"/></collaboration>
               <process id="other" isExecutable="false"><serviceTask id="ignored"/></process>
               </definitions>"#,
        );
        assert_eq!(ok(&xml).key, "p");
        let without_flag = minimal_plus("").replace(r#" isExecutable="true""#, "");
        assert_eq!(
            ok(&without_flag).key,
            "p",
            "isExecutable absent counts as executable"
        );
    }

    #[test]
    fn unsupported_root_elements_are_refused() {
        let xml = minimal_plus("").replace(
            "</definitions>",
            r#"<message id="msg" name="m"/></definitions>"#,
        );
        assert_error(&xml, "msg", "unsupported element message");
    }

    #[test]
    fn process_needs_an_id() {
        let xml = minimal_plus("").replace(r#"<process id="p""#, "<process");
        assert_error(&xml, "(process)", "has no id");
    }

    #[test]
    fn unsupported_flow_elements_are_refused_by_id() {
        for element in [
            "serviceTask",
            "task",
            "scriptTask",
            "manualTask",
            "subProcess",
            "callActivity",
            "intermediateCatchEvent",
            "intermediateThrowEvent",
            "boundaryEvent",
            "inclusiveGateway",
            "eventBasedGateway",
            "complexGateway",
            "dataObjectReference",
        ] {
            let xml = minimal_plus(&format!(r#"<{element} id="x_{element}"/>"#));
            assert_error(
                &xml,
                &format!("x_{element}"),
                &format!("unsupported element {element}"),
            );
        }
    }

    #[test]
    fn unsupported_children_of_nodes_are_refused() {
        let timer = process(
            r#"<startEvent id="start"><timerEventDefinition id="timer"><timeCycle>R/PT1H</timeCycle></timerEventDefinition></startEvent>
               <sequenceFlow id="f1" sourceRef="start" targetRef="end"/><endEvent id="end"/>"#,
        );
        assert_error(&timer, "timer", "unsupported element timerEventDefinition");
        let message = process(
            r#"<startEvent id="start"/><sequenceFlow id="f1" sourceRef="start" targetRef="end"/>
               <endEvent id="end"><messageEventDefinition/></endEvent>"#,
        );
        assert_error(
            &message,
            "end",
            "unsupported element messageEventDefinition",
        );
        let loop_task = with_task(
            r#"<userTask id="task" replyflow:assignee="a"><multiInstanceLoopCharacteristics/></userTask>"#,
        );
        assert_error(
            &loop_task,
            "task",
            "unsupported element multiInstanceLoopCharacteristics",
        );
    }

    #[test]
    fn flows_to_refused_elements_are_not_reported_twice() {
        let xml = process(
            r#"<startEvent id="start"/><sequenceFlow id="f1" sourceRef="start" targetRef="svc"/>
               <serviceTask id="svc"/><sequenceFlow id="f2" sourceRef="svc" targetRef="end"/>
               <endEvent id="end"/>"#,
        );
        let errors = errors(&xml);
        assert!(errors.iter().any(|e| e.element_id == "svc"));
        assert!(
            !errors
                .iter()
                .any(|e| e.reason.contains("does not name a node")),
            "{errors:#?}"
        );
    }

    #[test]
    fn foreign_elements_directly_in_a_process_are_refused() {
        let xml = minimal_plus(r#"<camunda:thing id="th"/>"#);
        assert_error(
            &xml,
            "th",
            "unsupported element thing (namespace http://camunda.org",
        );
    }

    #[test]
    fn unknown_replyflow_elements_are_refused() {
        let in_process =
            minimal_plus(r#"<extensionElements><replyflow:reminder id="r"/></extensionElements>"#);
        assert_error(
            &in_process,
            "p",
            "unknown extension element replyflow:reminder",
        );
        let in_task = with_task(
            r#"<userTask id="task" replyflow:assignee="a"><extensionElements><replyflow:outcomes/></extensionElements></userTask>"#,
        );
        assert_error(&in_task, "task", "replyflow:outcomes");
        let on_flow = process(
            r#"<startEvent id="start"/><endEvent id="end"/>
               <sequenceFlow id="f1" sourceRef="start" targetRef="end"><extensionElements><replyflow:x/></extensionElements></sequenceFlow>"#,
        );
        assert_error(&on_flow, "f1", "replyflow:x");
        let outside = minimal_plus(
            r#"<replyflow:reminderType id="r" count="1" interval="PT1H" channels="email"/>"#,
        );
        assert_error(&outside, "r", "unsupported element replyflow:reminderType");
    }

    #[test]
    fn foreign_extensions_are_ignored_everywhere() {
        let xml = process(
            r#"<extensionElements><camunda:properties><camunda:property name="a"/></camunda:properties></extensionElements>
               <startEvent id="start" camunda:initiator="me"><extensionElements><camunda:x/></extensionElements></startEvent>
               <sequenceFlow id="f1" sourceRef="start" targetRef="end"><extensionElements><camunda:y/></extensionElements></sequenceFlow>
               <endEvent id="end"/>"#,
        );
        ok(&xml);
    }

    // --- attributes ----------------------------------------------------------------------------

    #[test]
    fn unknown_replyflow_attributes_are_refused() {
        let xml =
            with_task(r#"<userTask id="task" replyflow:assignee="a" replyflow:asignee="b"/>"#);
        assert_error(&xml, "task", "unknown attribute replyflow:asignee");
        let on_gateway = minimal_plus("").replace(
            r#"<startEvent id="start"/>"#,
            r#"<startEvent id="start" replyflow:assignee="x"/>"#,
        );
        assert_error(
            &on_gateway,
            "start",
            "replyflow:assignee is not supported on a <startEvent>",
        );
        let on_process = minimal_plus("").replace(
            r#"<process id="p""#,
            r#"<process id="p" replyflow:owner="x""#,
        );
        assert_error(&on_process, "p", "replyflow:owner");
    }

    #[test]
    fn flags_must_be_true_or_false() {
        let xml = with_task(
            r#"<userTask id="task" replyflow:assignee="a" replyflow:emailApproval="yes"/>"#,
        );
        assert_error(
            &xml,
            "task",
            "replyflow:emailApproval: must be true or false",
        );
        let xml = with_task(
            r#"<userTask id="task" replyflow:assignee="a" replyflow:allowDelegate="1"/>"#,
        );
        assert_error(&xml, "task", "replyflow:allowDelegate");
    }

    #[test]
    fn assignee_is_required_and_checked() {
        let missing = with_task(r#"<userTask id="task"/>"#);
        assert_error(&missing, "task", "missing replyflow:assignee");
        let camunda = with_task(r#"<userTask id="task" camunda:assignee="${x}"/>"#);
        assert_error(&camunda, "task", "another namespace");
        for bad in [
            "${}",
            "${1abc}",
            "${a-b}",
            "${manager",
            "",
            "a b",
            "x${y}",
            "${a.b}",
        ] {
            let xml = with_task(&format!(
                r#"<userTask id="task" replyflow:assignee="{bad}"/>"#
            ));
            assert_error(&xml, "task", "replyflow:assignee");
        }
        for (value, expected) in [
            ("${manager}", Assignee::Variable("manager".into())),
            ("${ _x9 }", Assignee::Variable("_x9".into())),
            (
                "alice@example.com",
                Assignee::User("alice@example.com".into()),
            ),
            (" u42 ", Assignee::User("u42".into())),
        ] {
            let xml = with_task(&format!(
                r#"<userTask id="task" replyflow:assignee="{value}"/>"#
            ));
            assert_eq!(task_spec(&ok(&xml), "task").assignee, expected, "{value}");
        }
    }

    #[test]
    fn valid_for_must_be_a_duration() {
        for good in [
            "P3D",
            "PT4H",
            "P1DT2H",
            "PT30M",
            "PT1M",
            "P2W",
            "P365D",
            "P1DT1H1M1S",
        ] {
            let xml = with_task(&format!(
                r#"<userTask id="task" replyflow:assignee="a" replyflow:validFor="{good}"/>"#
            ));
            ok(&xml);
        }
        for bad in [
            "3 days", "P", "PT", "P1DT", "1D", "P1H", "PT1D", "P1M", "P1Y", "PT1.5H", "p3d", "",
            "PT0S", "PT59S", "P366D", "P53W",
        ] {
            let xml = with_task(&format!(
                r#"<userTask id="task" replyflow:assignee="a" replyflow:validFor="{bad}"/>"#
            ));
            assert_error(&xml, "task", "replyflow:validFor");
        }
    }

    #[test]
    fn outcomes_need_unique_non_empty_ids() {
        let duplicate = with_task(
            r#"<userTask id="task" replyflow:assignee="a"><extensionElements>
                 <replyflow:outcome id="ok"/><replyflow:outcome id="ok" label="again"/>
               </extensionElements></userTask>"#,
        );
        assert_error(&duplicate, "task", "duplicate outcome id 'ok'");
        let empty = with_task(
            r#"<userTask id="task" replyflow:assignee="a"><extensionElements>
                 <replyflow:outcome id=" " label="x"/></extensionElements></userTask>"#,
        );
        assert_error(&empty, "task", "replyflow:outcome without an id");
        let unknown = with_task(
            r#"<userTask id="task" replyflow:assignee="a"><extensionElements>
                 <replyflow:outcome id="ok" colour="green"/></extensionElements></userTask>"#,
        );
        assert_error(
            &unknown,
            "task",
            "unknown attribute colour on replyflow:outcome",
        );
    }

    #[test]
    fn reminder_types_are_validated() {
        let declare = |attrs: &str| {
            minimal_plus(&format!(
                "<extensionElements><replyflow:reminderType {attrs}/></extensionElements>"
            ))
        };
        let valid = r#"count="1" interval="PT1H" channels="email""#;
        assert_error(declare(valid), "p", "reminderType without an id");
        let cases = [
            (
                r#"count="0" interval="PT1H" channels="email""#,
                "count: must be 1 to 100, not 0",
            ),
            (
                r#"count="1000000" interval="PT1H" channels="email""#,
                "count: must be 1 to 100, not 1000000",
            ),
            (
                r#"count="99999999999999999999999" interval="PT1H" channels="email""#,
                "count: must be a whole number",
            ),
            (
                r#"count="x" interval="PT1H" channels="email""#,
                "count: must be a whole number",
            ),
            (
                r#"count="-1" interval="PT1H" channels="email""#,
                "count: must be 1 to 100",
            ),
            (r#"interval="PT1H" channels="email""#, "count: required"),
            (
                r#"count="1" interval="PT0S" channels="email""#,
                "interval: 'PT0S' must be at least one second",
            ),
            (
                r#"count="1" interval="P400D" channels="email""#,
                "interval: 'P400D' must be at most 366 days",
            ),
            (
                r#"count="1" interval="4 hours" channels="email""#,
                "interval: '4 hours' is not an ISO 8601",
            ),
            (r#"count="1" channels="email""#, "interval: required"),
            (
                r#"count="1" interval="PT1H" channels="email,fax""#,
                "channels: unknown channel 'fax'",
            ),
            (
                r#"count="1" interval="PT1H" channels=" , ""#,
                "channels: empty",
            ),
            (r#"count="1" interval="PT1H""#, "channels: required"),
            (
                r#"count="1" interval="PT1H" channels="sms" escalation="shout""#,
                "escalation: 'shout'",
            ),
            (
                r#"count="1" interval="PT1H" channels="sms" escalation="notify:""#,
                "escalation: 'notify:'",
            ),
            (
                r#"count="1" interval="PT1H" channels="sms" escalation="complete: ""#,
                "escalation",
            ),
            (
                r#"count="1" interval="PT1H" channels="sms" every="day""#,
                "unknown attribute every",
            ),
        ];
        for (attrs, fragment) in cases {
            assert_error(declare(&format!(r#"id="r" {attrs}"#)), "r", fragment);
        }
        let twice = minimal_plus(&format!(
            r#"<extensionElements><replyflow:reminderType id="r" {valid}/><replyflow:reminderType id="r" {valid}/></extensionElements>"#
        ));
        assert_error(&twice, "r", "duplicate reminderType id");
        assert_error(
            declare(&format!(r#"id="has space" {valid}"#)),
            "has space",
            "id: ' ' is not allowed",
        );
    }

    #[test]
    fn valid_for_beyond_the_bounds_names_the_task_and_attribute() {
        for (value, fragment) in [
            ("P99999999999D", "between PT1M and P365D"),
            ("P99999999999999999999999D", "too large"),
            ("PT0S", "between PT1M and P365D"),
        ] {
            let xml = with_task(&format!(
                r#"<userTask id="task" replyflow:assignee="a" replyflow:validFor="{value}"/>"#
            ));
            assert_error(&xml, "task", "replyflow:validFor: ");
            assert_error(&xml, "task", fragment);
        }
    }

    // --- loops -------------------------------------------------------------------------------

    #[test]
    fn a_loop_of_gateways_without_a_user_task_is_refused_naming_its_elements() {
        let xml = process(
            r#"<startEvent id="start"/>
               <exclusiveGateway id="g1"/>
               <exclusiveGateway id="g2" default="to_end"/>
               <endEvent id="end"/>
               <sequenceFlow id="f0" sourceRef="start" targetRef="g1"/>
               <sequenceFlow id="f1" sourceRef="g1" targetRef="g2"/>
               <sequenceFlow id="back" sourceRef="g2" targetRef="g1"><conditionExpression>true</conditionExpression></sequenceFlow>
               <sequenceFlow id="to_end" sourceRef="g2" targetRef="end"/>"#,
        );
        assert_error(&xml, "g1", "a loop without a user task: g1 → g2 → g1");
    }

    #[test]
    fn a_loop_through_a_user_task_is_accepted() {
        let xml = process(
            r#"<startEvent id="start"/>
               <exclusiveGateway id="merge"/>
               <userTask id="fix" replyflow:assignee="a"/>
               <exclusiveGateway id="check" default="done"/>
               <endEvent id="end"/>
               <sequenceFlow id="f0" sourceRef="start" targetRef="merge"/>
               <sequenceFlow id="f1" sourceRef="merge" targetRef="fix"/>
               <sequenceFlow id="f2" sourceRef="fix" targetRef="check"/>
               <sequenceFlow id="again" sourceRef="check" targetRef="merge"><conditionExpression>outcome == "reject"</conditionExpression></sequenceFlow>
               <sequenceFlow id="done" sourceRef="check" targetRef="end"/>"#,
        );
        ok(&xml);
    }

    #[test]
    fn a_chain_of_six_thousand_gateways_parses_without_recursion() {
        let mut body = String::from(r#"<startEvent id="start"/><endEvent id="end"/>"#);
        body.push_str(r#"<sequenceFlow id="f0" sourceRef="start" targetRef="g0"/>"#);
        let n = 6_000;
        for i in 0..n {
            let next = if i + 1 == n {
                "end".to_string()
            } else {
                format!("g{}", i + 1)
            };
            body.push_str(&format!(
                r#"<exclusiveGateway id="g{i}" default="d{i}"/><sequenceFlow id="c{i}" sourceRef="g{i}" targetRef="{next}"><conditionExpression>amount &gt; {i}</conditionExpression></sequenceFlow><sequenceFlow id="d{i}" sourceRef="g{i}" targetRef="end"/>"#
            ));
        }
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || parse(process(&body).as_bytes()).map(|d| d.nodes.len()))
            .expect("thread");
        let parsed = handle.join().expect("no stack overflow");
        assert_eq!(parsed.expect("a long chain is a valid definition"), n + 2);
    }

    // --- ids and references -----------------------------------------------------------------

    #[test]
    fn ids_must_be_unique() {
        let xml = minimal_plus(r#"<endEvent id="task"/>"#);
        assert_error(&xml, "task", "duplicate id");
        let flow_and_node =
            minimal_plus(r#"<sequenceFlow id="start" sourceRef="task" targetRef="end"/>"#);
        assert_error(&flow_and_node, "start", "duplicate id");
    }

    #[test]
    fn elements_need_ids() {
        let xml = minimal_plus(r#"<endEvent name="no id"/>"#);
        assert_error(&xml, "p", "a <endEvent> without an id");
    }

    #[test]
    fn dangling_flows_are_named() {
        let xml = minimal_plus(r#"<sequenceFlow id="bad" sourceRef="task" targetRef="ghost"/>"#);
        assert_error(&xml, "bad", "targetRef 'ghost' does not name a node");
        let xml = minimal_plus(r#"<sequenceFlow id="bad2" sourceRef="ghost" targetRef="end"/>"#);
        assert_error(&xml, "bad2", "sourceRef 'ghost'");
        let xml = minimal_plus(r#"<sequenceFlow id="bad3" targetRef="end"/>"#);
        assert_error(&xml, "bad3", "missing sourceRef");
        let xml = minimal_plus(r#"<sequenceFlow id="bad4" sourceRef="start"/>"#);
        assert_error(&xml, "bad4", "missing targetRef");
        let typo = minimal_plus("").replace(r#"targetRef="task""#, r#"targetRef="tsak""#);
        let errors = errors(&typo);
        assert!(
            !errors.iter().any(|e| e.reason.contains("reach")),
            "reachability echoes the dangling flow: {errors:#?}"
        );
    }

    #[test]
    fn listed_incoming_and_outgoing_must_agree_with_the_flows() {
        let xml = with_task(
            r#"<userTask id="task" replyflow:assignee="a"><incoming>f1</incoming><outgoing>f2</outgoing></userTask>"#,
        );
        ok(&xml);
        let wrong = with_task(
            r#"<userTask id="task" replyflow:assignee="a"><incoming>f2</incoming><outgoing>f1</outgoing></userTask>"#,
        );
        assert_error(&wrong, "task", "lists 'f2' as incoming");
        assert_error(&wrong, "task", "lists 'f1' as outgoing");
        let missing = with_task(
            r#"<userTask id="task" replyflow:assignee="a"><incoming>nope</incoming></userTask>"#,
        );
        assert_error(
            &missing,
            "task",
            "<incoming>nope</incoming> names no sequenceFlow",
        );
    }

    // --- structure ------------------------------------------------------------------------------

    #[test]
    fn exactly_one_start_and_at_least_one_end() {
        let no_start = process(
            r#"<userTask id="t" replyflow:assignee="a"/><endEvent id="end"/><sequenceFlow id="f" sourceRef="t" targetRef="end"/>"#,
        );
        assert_error(&no_start, "p", "no startEvent");
        let two_starts = minimal_plus(
            r#"<startEvent id="start2"/><sequenceFlow id="f3" sourceRef="start2" targetRef="task"/>"#,
        );
        assert_error(&two_starts, "start2", "more than one startEvent");
        let no_end = process(
            r#"<startEvent id="s"/><sequenceFlow id="f" sourceRef="s" targetRef="t"/><userTask id="t" replyflow:assignee="a"/>"#,
        );
        assert_error(&no_end, "p", "no endEvent");
    }

    #[test]
    fn start_and_end_flow_counts() {
        let start_in =
            minimal_plus(r#"<sequenceFlow id="back" sourceRef="task" targetRef="start"/>"#);
        assert_error(
            &start_in,
            "start",
            "a startEvent cannot have incoming flows",
        );
        let start_two_out =
            minimal_plus(r#"<sequenceFlow id="skip" sourceRef="start" targetRef="end"/>"#);
        assert_error(
            &start_two_out,
            "start",
            "exactly one outgoing flow (it has 2)",
        );
        let end_out = minimal_plus(r#"<sequenceFlow id="on" sourceRef="end" targetRef="task"/>"#);
        assert_error(&end_out, "end", "an endEvent cannot have outgoing flows");
        let lonely_end = minimal_plus(r#"<endEvent id="end2"/>"#);
        assert_error(
            &lonely_end,
            "end2",
            "an endEvent needs at least one incoming flow",
        );
    }

    #[test]
    fn user_task_flow_counts() {
        let two_out =
            minimal_plus(r#"<sequenceFlow id="extra" sourceRef="task" targetRef="end"/>"#);
        assert_error(&two_out, "task", "use a gateway to branch");
        let implicit_join = minimal_plus(
            r#"<userTask id="t2" replyflow:assignee="b"/>
               <sequenceFlow id="x" sourceRef="start" targetRef="t2"/>"#,
        );
        // t2 is fine as a target; the start now has two outgoing flows, which is the error.
        assert_error(&implicit_join, "start", "exactly one outgoing flow");
        let orphan = minimal_plus(
            r#"<userTask id="orphan" replyflow:assignee="b"/><sequenceFlow id="o" sourceRef="orphan" targetRef="end"/>"#,
        );
        assert_error(
            &orphan,
            "orphan",
            "a userTask needs at least one incoming flow",
        );
        let dead_end = minimal_plus(
            r#"<userTask id="dead" replyflow:assignee="b"/><sequenceFlow id="d" sourceRef="task" targetRef="dead"/>"#,
        );
        assert_error(&dead_end, "dead", "exactly one outgoing flow (it has 0)");
    }

    #[test]
    fn implicit_exclusive_join_on_a_task_is_allowed() {
        let definition = ok(&split(
            "",
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"/>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"/>"#,
        )
        .replace(
            r#"<sequenceFlow id="fb" sourceRef="b" targetRef="end"/>"#,
            r#"<sequenceFlow id="fb" sourceRef="b" targetRef="c"/>
               <sequenceFlow id="fa2" sourceRef="c" targetRef="end"/>
               <userTask id="c" replyflow:assignee="c"/>"#,
        )
        .replace(
            r#"<sequenceFlow id="fa" sourceRef="a" targetRef="end"/>"#,
            r#"<sequenceFlow id="fa" sourceRef="a" targetRef="c"/>"#,
        ));
        assert_eq!(definition.node("c").unwrap().1.incoming.len(), 2);
    }

    #[test]
    fn gateway_flow_counts() {
        let mixed = process(
            r#"<startEvent id="s"/><parallelGateway id="fork"/><parallelGateway id="mix"/>
               <userTask id="a" replyflow:assignee="a"/><userTask id="b" replyflow:assignee="b"/>
               <userTask id="c" replyflow:assignee="c"/><userTask id="d" replyflow:assignee="d"/>
               <parallelGateway id="join"/><endEvent id="e"/>
               <sequenceFlow id="f0" sourceRef="s" targetRef="fork"/>
               <sequenceFlow id="f1" sourceRef="fork" targetRef="a"/><sequenceFlow id="f2" sourceRef="fork" targetRef="b"/>
               <sequenceFlow id="f3" sourceRef="a" targetRef="mix"/><sequenceFlow id="f4" sourceRef="b" targetRef="mix"/>
               <sequenceFlow id="f5" sourceRef="mix" targetRef="c"/><sequenceFlow id="f6" sourceRef="mix" targetRef="d"/>
               <sequenceFlow id="f7" sourceRef="c" targetRef="join"/><sequenceFlow id="f8" sourceRef="d" targetRef="join"/>
               <sequenceFlow id="f9" sourceRef="join" targetRef="e"/>"#,
        );
        assert_error(&mixed, "mix", "mixed gateway");
        let no_out = minimal_plus(
            r#"<exclusiveGateway id="sink"/><sequenceFlow id="x" sourceRef="start" targetRef="sink"/>"#,
        );
        assert_error(
            &no_out,
            "sink",
            "a gateway needs at least one outgoing flow",
        );
        let no_in = minimal_plus(
            r#"<parallelGateway id="src"/><sequenceFlow id="x" sourceRef="src" targetRef="end"/>"#,
        );
        assert_error(&no_in, "src", "a gateway needs at least one incoming flow");
    }

    #[test]
    fn every_node_is_reachable_and_reaches_an_end() {
        let island = minimal_plus(
            r#"<userTask id="i1" replyflow:assignee="a"/><userTask id="i2" replyflow:assignee="b"/>
               <sequenceFlow id="x1" sourceRef="i1" targetRef="i2"/><sequenceFlow id="x2" sourceRef="i2" targetRef="i1"/>"#,
        );
        assert_error(&island, "i1", "not reachable from the start event");
        assert_error(&island, "i2", "not reachable from the start event");
        let trap = process(
            r#"<startEvent id="s"/><sequenceFlow id="f0" sourceRef="s" targetRef="gw"/>
               <exclusiveGateway id="gw"/>
               <sequenceFlow id="f1" sourceRef="gw" targetRef="loop1"><conditionExpression>x</conditionExpression></sequenceFlow>
               <sequenceFlow id="f2" sourceRef="gw" targetRef="e"><conditionExpression>!x</conditionExpression></sequenceFlow>
               <userTask id="loop1" replyflow:assignee="a"/><userTask id="loop2" replyflow:assignee="b"/>
               <sequenceFlow id="l1" sourceRef="loop1" targetRef="loop2"/>
               <sequenceFlow id="l2" sourceRef="loop2" targetRef="loop1"/>
               <endEvent id="e"/>"#,
        );
        assert_error(&trap, "loop1", "cannot reach an end event");
        assert_error(&trap, "loop2", "cannot reach an end event");
    }

    #[test]
    fn loops_back_are_fine_when_an_end_is_reachable() {
        let xml = process(
            r#"<startEvent id="s"/><sequenceFlow id="f0" sourceRef="s" targetRef="merge"/>
               <exclusiveGateway id="merge"/><sequenceFlow id="f1" sourceRef="merge" targetRef="t"/>
               <userTask id="t" replyflow:assignee="a"/><sequenceFlow id="f2" sourceRef="t" targetRef="check"/>
               <exclusiveGateway id="check" default="done"/>
               <sequenceFlow id="again" sourceRef="check" targetRef="merge"><conditionExpression>t.outcome == "return"</conditionExpression></sequenceFlow>
               <sequenceFlow id="done" sourceRef="check" targetRef="e"/><endEvent id="e"/>"#,
        );
        let definition = ok(&xml);
        assert!(!gateway(&definition, "merge").deferred_choice);
    }

    // --- gateways and conditions -----------------------------------------------------------------

    #[test]
    fn conditional_split_with_default() {
        let definition = ok(&split(
            r#"default="gb""#,
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"><conditionExpression xsi:type="tFormalExpression" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">amount &gt; 10000 &amp;&amp; kind == "travel"</conditionExpression></sequenceFlow>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"/>"#,
        ));
        let gw = gateway(&definition, "gw");
        assert_eq!(gw.default, Some(flow_idx(&definition, "gb")));
        assert!(!gw.deferred_choice);
        let condition = definition.flows[flow_idx(&definition, "ga")]
            .condition
            .as_ref()
            .unwrap();
        assert_eq!(condition.source(), r#"amount > 10000 && kind == "travel""#);
        let vars = json!({"amount": 12000, "kind": "travel"});
        assert_eq!(condition.evaluate(vars.as_object().unwrap()), Ok(true));
    }

    #[test]
    fn conditions_in_cdata_are_read() {
        let definition = ok(&split(
            "",
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"><conditionExpression><![CDATA[ n < 5 ]]></conditionExpression></sequenceFlow>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"><conditionExpression>n &#62;= 5</conditionExpression></sequenceFlow>"#,
        ));
        let sources: Vec<&str> = definition
            .flows
            .iter()
            .filter_map(|f| f.condition.as_ref().map(Condition::source))
            .collect();
        assert_eq!(sources, ["n < 5", "n >= 5"]);
    }

    #[test]
    fn conditions_without_default_are_fine() {
        let definition = ok(&split(
            "",
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"><conditionExpression>x</conditionExpression></sequenceFlow>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"><conditionExpression>!x</conditionExpression></sequenceFlow>"#,
        ));
        let gw = gateway(&definition, "gw");
        assert_eq!(gw.default, None);
        assert!(!gw.deferred_choice);
    }

    #[test]
    fn deferred_choice_is_recognised() {
        let definition = ok(&split(
            "",
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"/>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"/>"#,
        ));
        let gw = gateway(&definition, "gw");
        assert!(gw.deferred_choice);
        assert_eq!(gw.default, None);
    }

    #[test]
    fn deferred_choice_branches_must_be_user_tasks() {
        let xml = split(
            "",
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"/>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"/>
               <sequenceFlow id="gend" sourceRef="gw" targetRef="end"/>"#,
        );
        assert_error(&xml, "gend", "deferred choice");
    }

    #[test]
    fn mixing_conditions_and_bare_flows_is_refused() {
        let xml = split(
            "",
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"><conditionExpression>x</conditionExpression></sequenceFlow>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"/>"#,
        );
        assert_error(&xml, "gb", "without a condition");
        let default_without_conditions = split(
            r#"default="ga""#,
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"/>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"/>"#,
        );
        assert_error(&default_without_conditions, "gb", "without a condition");
    }

    #[test]
    fn default_flow_rules() {
        let elsewhere = split(
            r#"default="fa""#,
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"><conditionExpression>x</conditionExpression></sequenceFlow>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"><conditionExpression>!x</conditionExpression></sequenceFlow>"#,
        );
        assert_error(
            &elsewhere,
            "gw",
            "default flow 'fa' is not one of its outgoing flows",
        );
        let conditioned = split(
            r#"default="gb""#,
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"><conditionExpression>x</conditionExpression></sequenceFlow>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"><conditionExpression>!x</conditionExpression></sequenceFlow>"#,
        );
        assert_error(
            &conditioned,
            "gb",
            "the default flow of 'gw' may not have a condition",
        );
        let on_task = with_task(r#"<userTask id="task" replyflow:assignee="a" default="f2"/>"#);
        assert_error(&on_task, "task", "only supported on an exclusiveGateway");
    }

    #[test]
    fn conditions_only_leave_exclusive_splits() {
        let from_task = with_task(TASK).replace(
            r#"<sequenceFlow id="f2" sourceRef="task" targetRef="end"/>"#,
            r#"<sequenceFlow id="f2" sourceRef="task" targetRef="end"><conditionExpression>x</conditionExpression></sequenceFlow>"#,
        );
        assert_error(&from_task, "f2", "'task' is a userTask");
        let from_start = minimal_plus("").replace(
            r#"<sequenceFlow id="f1" sourceRef="start" targetRef="task"/>"#,
            r#"<sequenceFlow id="f1" sourceRef="start" targetRef="task"><conditionExpression>x</conditionExpression></sequenceFlow>"#,
        );
        assert_error(&from_start, "f1", "'start' is a startEvent");
        let from_parallel = process(
            r#"<startEvent id="s"/><sequenceFlow id="f0" sourceRef="s" targetRef="fork"/>
               <parallelGateway id="fork"/>
               <sequenceFlow id="f1" sourceRef="fork" targetRef="e"><conditionExpression>x</conditionExpression></sequenceFlow>
               <endEvent id="e"/>"#,
        );
        assert_error(&from_parallel, "f1", "is a parallelGateway");
        let from_join = process(
            r#"<startEvent id="s"/><sequenceFlow id="f0" sourceRef="s" targetRef="fork"/>
               <parallelGateway id="fork"/>
               <sequenceFlow id="f1" sourceRef="fork" targetRef="join"/><sequenceFlow id="f2" sourceRef="fork" targetRef="join"/>
               <exclusiveGateway id="join"/>
               <sequenceFlow id="f3" sourceRef="join" targetRef="e"><conditionExpression>x</conditionExpression></sequenceFlow>
               <endEvent id="e"/>"#,
        );
        assert_error(&from_join, "f3", "is an exclusiveGateway");
    }

    #[test]
    fn bad_conditions_name_the_flow() {
        let xml = split(
            "",
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"><conditionExpression>amount &gt;</conditionExpression></sequenceFlow>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"><conditionExpression>  </conditionExpression></sequenceFlow>"#,
        );
        let errors = errors(&xml);
        assert!(
            errors.iter().any(|e| e.element_id == "ga"
                && e.reason.starts_with("condition does not compile: line 1")),
            "{errors:#?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.element_id == "gb" && e.reason.contains("empty")),
            "{errors:#?}"
        );
        // A broken condition still counts as written: no "without a condition" noise.
        assert!(
            !errors
                .iter()
                .any(|e| e.reason.contains("without a condition"))
        );
        let two = split(
            "",
            r#"<sequenceFlow id="ga" sourceRef="gw" targetRef="a"><conditionExpression>x</conditionExpression><conditionExpression>y</conditionExpression></sequenceFlow>
               <sequenceFlow id="gb" sourceRef="gw" targetRef="b"><conditionExpression>!x</conditionExpression></sequenceFlow>"#,
        );
        assert_error(&two, "ga", "more than one conditionExpression");
    }

    #[test]
    fn all_errors_are_collected() {
        let xml = process(
            r#"<startEvent id="s"/><sequenceFlow id="f0" sourceRef="s" targetRef="t1"/>
               <userTask id="t1"/>
               <sequenceFlow id="f1" sourceRef="t1" targetRef="gw"/>
               <exclusiveGateway id="gw" default="nope"/>
               <sequenceFlow id="f2" sourceRef="gw" targetRef="e"><conditionExpression>(</conditionExpression></sequenceFlow>
               <serviceTask id="svc"/>
               <endEvent id="e"/>"#,
        );
        let errors = errors(&xml);
        let ids: HashSet<&str> = errors.iter().map(|e| e.element_id.as_str()).collect();
        for expected in ["t1", "gw", "f2", "svc"] {
            assert!(
                ids.contains(expected),
                "{expected} missing from {errors:#?}"
            );
        }
    }

    // --- errors and hostile input -------------------------------------------------------------

    #[test]
    fn errors_display_element_and_reason() {
        let error = DefinitionError::new("task", "broken");
        assert_eq!(error.to_string(), "task: broken");
        let errors = DefinitionErrors(vec![error, DefinitionError::new("f1", "also broken")]);
        assert_eq!(errors.to_string(), "task: broken; f1: also broken");
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(errors);
        assert!(boxed.to_string().contains("f1"));
    }

    #[test]
    fn malformed_xml_reports_the_position() {
        let xml = format!(
            "{HEADER}\n<process id=\"p\">\n  <startEvent id=\"s\">\n</process></definitions>"
        );
        let errors = errors(&xml);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].element_id, DOCUMENT);
        // Line 10 holds the `</process>` that does not match the open `<startEvent>`.
        assert!(
            errors[0].reason.contains("line 10, column 1"),
            "{}",
            errors[0].reason
        );
        assert!(
            errors[0].reason.contains("</startEvent>"),
            "{}",
            errors[0].reason
        );
    }

    #[test]
    fn empty_and_blank_input() {
        assert_error("", DOCUMENT, "empty");
        assert_error("   \n\t ", DOCUMENT, "empty");
        assert_error(
            r#"<?xml version="1.0"?><!-- nothing -->"#,
            DOCUMENT,
            "empty",
        );
    }

    #[test]
    fn truncated_xml() {
        let full = minimal_plus("");
        for cut in [10, full.len() / 2, full.len() - 5] {
            let errors = errors(&full.as_bytes()[..cut]);
            assert_eq!(errors[0].element_id, DOCUMENT, "cut at {cut}: {errors:#?}");
        }
    }

    #[test]
    fn binary_garbage() {
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(errors(&garbage)[0].element_id, DOCUMENT);
        assert_eq!(errors([0xff, 0xfe, 0x00, b'<'])[0].element_id, DOCUMENT);
        assert_eq!(errors(b"<\xff\xfe/>")[0].element_id, DOCUMENT);
    }

    #[test]
    fn deeply_nested_unknown_elements() {
        let depth = 50_000;
        let xml = format!(
            "{HEADER}<process id=\"p\">{}{}</process></definitions>",
            "<x>".repeat(depth),
            "</x>".repeat(depth)
        );
        assert_error(&xml, DOCUMENT, "nest deeper than");
        let shallow = minimal_plus(&format!(
            r#"<subProcess id="sub">{}{}</subProcess>"#,
            "<x>".repeat(50),
            "</x>".repeat(50)
        ));
        assert_error(&shallow, "sub", "unsupported element subProcess");
    }

    #[test]
    fn document_level_xml_problems() {
        assert_error(
            format!("{HEADER}</definitions><extra/>"),
            DOCUMENT,
            "after the root element",
        );
        assert_error(
            format!("text {HEADER}</definitions>"),
            DOCUMENT,
            "text outside the root",
        );
        assert_error(
            minimal_plus("<x:y/>"),
            DOCUMENT,
            "undeclared namespace prefix 'x'",
        );
        assert_error(
            minimal_plus("<documentation>&nbsp;</documentation>"),
            DOCUMENT,
            "unknown entity &nbsp;",
        );
        assert_error(
            minimal_plus("<documentation>&#0;</documentation>"),
            DOCUMENT,
            "invalid character reference",
        );
        assert_error(
            format!(r#"{HEADER}<process id="a" id="b"/></definitions>"#),
            DOCUMENT,
            "XML error",
        );
        assert_error(
            format!("{HEADER}</process></definitions>"),
            DOCUMENT,
            "XML error",
        );
    }

    #[test]
    fn byte_order_mark_and_doctype_are_accepted() {
        let mut with_bom = vec![0xef, 0xbb, 0xbf];
        with_bom.extend_from_slice(minimal_plus("").as_bytes());
        assert!(parse(&with_bom).is_ok());
        let doctype =
            minimal_plus("").replacen("<definitions", "<!DOCTYPE definitions>\n<definitions", 1);
        assert!(parse(doctype.as_bytes()).is_ok());
    }

    #[test]
    fn every_prefix_of_a_valid_document_fails_cleanly() {
        // Not a proof, but any panic on partial input would show up here.
        let full = minimal_plus(
            r#"<extensionElements><replyflow:reminderType id="r" count="1" interval="PT1H" channels="email"/></extensionElements>"#,
        );
        let bytes = full.as_bytes();
        for cut in 0..bytes.len() {
            assert!(
                parse(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes parsed"
            );
        }
        for position in (0..bytes.len()).step_by(7) {
            let mut mutated = bytes.to_vec();
            mutated[position] ^= 0x5a;
            let _ = parse(&mutated);
        }
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
    const COUNTERSIGN: &str = include_str!("../../examples/countersign.bpmn");
    const COUNTERSIGN_MODELER: &str = include_str!("../../examples/countersign_modeler.bpmn");
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
    fn countersign_examples() {
        for xml in [COUNTERSIGN, COUNTERSIGN_MODELER] {
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
