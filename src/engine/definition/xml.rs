//! Step 1 of reading a definition: the XML becomes a small namespace-resolved tree, so that
//! `bpmn:`, `bpmn2:` and default-namespace files all look the same to the builder. Syntax
//! errors name the line and column; depth is bounded so hostile input cannot exhaust the stack.

use std::fmt;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{NamespaceResolver, ResolveResult};
use quick_xml::{NsReader, XmlVersion};

use super::{BPMN_NS, DOCUMENT, DefinitionError, REPLYFLOW_NS};

const BPMNDI_NS: &str = "http://www.omg.org/spec/BPMN/20100524/DI";
const DC_NS: &str = "http://www.omg.org/spec/DD/20100524/DC";
const DI_NS: &str = "http://www.omg.org/spec/DD/20100524/DI";

/// Real definitions nest about ten elements deep; the limit keeps hostile input from
/// exhausting the stack when the tree is walked or dropped.
const MAX_DEPTH: usize = 100;

/// The namespaces the reader tells apart; prefixes are gone by this point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ns {
    Bpmn,
    Replyflow,
    /// BPMN DI, DC and DI: layout only, always skipped.
    Diagram,
    Other(String),
    /// No namespace: unprefixed attributes, or elements outside any default namespace.
    None,
}

#[derive(Debug)]
pub(super) struct Element {
    pub(super) ns: Ns,
    pub(super) local: String,
    pub(super) attrs: Vec<Attr>,
    pub(super) children: Vec<Element>,
    /// Text, CDATA and character references directly inside, concatenated.
    pub(super) text: String,
}

#[derive(Debug)]
pub(super) struct Attr {
    pub(super) ns: Ns,
    pub(super) local: String,
    pub(super) value: String,
}

impl Element {
    pub(super) fn is_bpmn(&self, local: &str) -> bool {
        self.ns == Ns::Bpmn && self.local == local
    }

    /// An unprefixed attribute, as BPMN's own attributes are.
    pub(super) fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|attr| attr.ns == Ns::None && attr.local == local)
            .map(|attr| attr.value.as_str())
    }

    pub(super) fn id(&self) -> Option<&str> {
        self.attr("id").map(str::trim).filter(|id| !id.is_empty())
    }

    pub(super) fn replyflow_attrs(&self) -> impl Iterator<Item = &Attr> {
        self.attrs.iter().filter(|attr| attr.ns == Ns::Replyflow)
    }

    /// The name used in messages: the local name, marked when it is not a BPMN element.
    pub(super) fn display_name(&self) -> String {
        match &self.ns {
            Ns::Bpmn | Ns::Diagram => self.local.clone(),
            Ns::Replyflow => format!("replyflow:{}", self.local),
            Ns::Other(uri) => format!("{} (namespace {uri})", self.local),
            Ns::None => format!("{} (no namespace)", self.local),
        }
    }
}

pub(super) fn read_document(xml: &[u8]) -> Result<Element, DefinitionError> {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    // --- namespaces ----------------------------------------------------------------------------

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

    // --- errors and hostile input -------------------------------------------------------------
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
