//! Step 2 of reading a definition: the namespace-resolved tree becomes the validated graph.
//! [`ProcessBuilder`] reads the nodes and flows, resolves references to indices, and applies
//! the structural rules (one start, flow counts, gateway conditions, reachability), collecting
//! every error instead of stopping at the first.

use std::collections::{HashMap, HashSet, VecDeque};

use super::attrs::display_label;
use super::xml::{Element, Ns};
use super::{
    BPMN_NS, DOCUMENT, DefinitionError, ExclusiveGateway, Flow, FlowIdx, Node, NodeIdx, NodeKind,
    ProcessDefinition, ReminderTypeDecl,
};
use crate::engine::condition::Condition;
use crate::engine::loops::loops_without_user_task;

/// The one executable process, and the errors found around it at the document level.
pub(super) fn find_executable_process(root: &Element) -> (Option<&Element>, Vec<DefinitionError>) {
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
pub(super) struct ProcessBuilder {
    pub(super) key: String,
    pub(super) name: String,
    errors: Vec<DefinitionError>,
    pub(super) nodes: Vec<Node>,
    extras: Vec<NodeExtras>,
    raw_flows: Vec<RawFlow>,
    pub(super) reminder_types: Vec<ReminderTypeDecl>,
    seen_ids: HashSet<String>,
    /// Ids of refused elements: flows to them are already explained by the refusal.
    refused_ids: HashSet<String>,
    /// Every sequenceFlow id read, including flows later dropped for a dangling reference.
    declared_flow_ids: HashSet<String>,
}

impl ProcessBuilder {
    pub(super) fn read(process: &Element) -> ProcessBuilder {
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

    pub(super) fn error(&mut self, element_id: &str, reason: impl Into<String>) {
        self.errors.push(DefinitionError::new(element_id, reason));
    }

    /// The id to name in an error about the process itself.
    pub(super) fn process_ref(&self) -> String {
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
        let mut multi = None;
        for child in &element.children {
            match (&child.ns, child.local.as_str()) {
                (Ns::Diagram, _) | (Ns::Bpmn, "documentation") => {}
                (Ns::Bpmn, "incoming") => extras.listed_incoming.push(child.text.trim().into()),
                (Ns::Bpmn, "outgoing") => extras.listed_outgoing.push(child.text.trim().into()),
                (Ns::Bpmn, "extensionElements") if element.local == "userTask" => {
                    outcomes = Some(self.read_outcomes(child, &id));
                }
                (Ns::Bpmn, "multiInstanceLoopCharacteristics") if element.local == "userTask" => {
                    if multi.is_some() {
                        self.error(&id, "more than one multiInstanceLoopCharacteristics");
                    }
                    multi = self.read_multi_instance(child, &id).map(Box::new);
                }
                (Ns::Bpmn, "extensionElements") => {
                    self.replyflow_extensions(child, &id, None);
                }
                _ => self.refuse(child, &id),
            }
        }
        let kind = match element.local.as_str() {
            "userTask" => NodeKind::UserTask(self.read_user_task(element, &id, outcomes, multi)),
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

    pub(super) fn finish(mut self) -> Result<ProcessDefinition, Vec<DefinitionError>> {
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
            if let NodeKind::UserTask(spec) = &target.kind {
                if spec.multi.is_some() {
                    let reason = format!(
                        "a deferred choice (exclusive gateway '{gateway_id}' without conditions) \
                         cannot start a branch with the multi-instance task '{}': put a \
                         single-signer task first, or give the gateway conditions",
                        target.id
                    );
                    self.error(&flow.id, reason);
                }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::*;
    use super::super::*;
    use super::*;

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
            r#"<userTask id="task" replyflow:assignee="a"><standardLoopCharacteristics/></userTask>"#,
        );
        assert_error(
            &loop_task,
            "task",
            "unsupported element standardLoopCharacteristics",
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
}
