//! Documents and assertions shared by the unit tests of the definition reader.

use super::*;

pub(super) const HEADER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
         xmlns:replyflow="https://replyflow.dev/schema/1"
         xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
         xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI"
         xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"
         id="defs" targetNamespace="https://example.com">"#;

/// A document whose one process holds `body`.
pub(super) fn process(body: &str) -> String {
    format!(r#"{HEADER}<process id="p" isExecutable="true">{body}</process></definitions>"#)
}

/// start → `task` → end, with the task element given in full.
pub(super) fn with_task(task: &str) -> String {
    process(&format!(
        r#"<startEvent id="start"/>
           <sequenceFlow id="f1" sourceRef="start" targetRef="task"/>
           {task}
           <sequenceFlow id="f2" sourceRef="task" targetRef="end"/>
           <endEvent id="end"/>"#
    ))
}

pub(super) const TASK: &str = r#"<userTask id="task" replyflow:assignee="alice"/>"#;

/// The usual start → task → end plus `extra` elements.
pub(super) fn minimal_plus(extra: &str) -> String {
    process(&format!(
        r#"<startEvent id="start"/>
           <sequenceFlow id="f1" sourceRef="start" targetRef="task"/>
           {TASK}
           <sequenceFlow id="f2" sourceRef="task" targetRef="end"/>
           <endEvent id="end"/>{extra}"#
    ))
}

/// start → gateway `gw` with the given attributes and flows → tasks a, b (→ end).
pub(super) fn split(gateway_attrs: &str, flows: &str) -> String {
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

pub(super) fn ok(xml: &str) -> ProcessDefinition {
    match parse(xml.as_bytes()) {
        Ok(definition) => definition,
        Err(errors) => panic!("expected a valid definition, got: {errors}"),
    }
}

pub(super) fn errors(xml: impl AsRef<[u8]>) -> Vec<DefinitionError> {
    match parse(xml.as_ref()) {
        Ok(_) => panic!("expected errors, the definition parsed"),
        Err(DefinitionErrors(errors)) => errors,
    }
}

/// Asserts that some error names `element_id` and mentions `fragment`.
#[track_caller]
pub(super) fn assert_error(xml: impl AsRef<[u8]>, element_id: &str, fragment: &str) {
    let errors = errors(xml);
    assert!(
        errors
            .iter()
            .any(|e| e.element_id == element_id && e.reason.contains(fragment)),
        "no error for '{element_id}' containing '{fragment}' in {errors:#?}"
    );
}

pub(super) fn task_spec(definition: &ProcessDefinition, id: &str) -> UserTaskSpec {
    match definition.node(id).map(|(_, node)| &node.kind) {
        Some(NodeKind::UserTask(spec)) => spec.clone(),
        other => panic!("{id} is not a user task: {other:?}"),
    }
}

pub(super) fn gateway(definition: &ProcessDefinition, id: &str) -> ExclusiveGateway {
    match definition.node(id).map(|(_, node)| &node.kind) {
        Some(NodeKind::ExclusiveGateway(gateway)) => gateway.clone(),
        other => panic!("{id} is not an exclusive gateway: {other:?}"),
    }
}

pub(super) fn flow_idx(definition: &ProcessDefinition, id: &str) -> FlowIdx {
    definition
        .flows
        .iter()
        .position(|flow| flow.id == id)
        .unwrap_or_else(|| panic!("no flow {id}"))
}
