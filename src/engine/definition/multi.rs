//! `bpmn:multiInstanceLoopCharacteristics` on a user task (DESIGN §11: 会签 / 或签 / 票签 /
//! 顺序会签). The replyflow attributes say who signs and how the votes decide; the Camunda
//! spellings of collection and element variable are read too, so that a model drawn with
//! Camunda Modeler's properties panel deploys unchanged.

use super::attrs::{is_identifier, parse_flag};
use super::builder::ProcessBuilder;
use super::xml::{Element, Ns};
use super::{MultiInstanceSpec, OutcomeSpec, SignMode};
use crate::engine::condition::Condition;

/// Camunda Modeler writes its own attributes in this namespace.
const CAMUNDA_NS: &str = "http://camunda.org/schema/1.0/bpmn";

/// The element variable when none is named.
pub const DEFAULT_ELEMENT_VARIABLE: &str = "signer";

impl ProcessBuilder {
    /// Reads the loop characteristics of user task `task_id`; every problem is reported against
    /// the task, and `None` comes back when the task cannot be run as written.
    pub(super) fn read_multi_instance(
        &mut self,
        element: &Element,
        task_id: &str,
    ) -> Option<MultiInstanceSpec> {
        let mut ok = true;
        let mut fail = |builder: &mut ProcessBuilder, reason: String| {
            builder.error(
                task_id,
                format!("multiInstanceLoopCharacteristics: {reason}"),
            );
            ok = false;
        };
        let (mut collection, mut element_variable) = (None, None);
        let (mut mode, mut pass_ratio) = (None, None);
        let mut sequential = false;
        for attr in &element.attrs {
            let value = attr.value.trim();
            let camunda = matches!(&attr.ns, Ns::Other(uri) if uri == CAMUNDA_NS);
            match (&attr.ns, attr.local.as_str()) {
                (Ns::None, "isSequential") => match parse_flag(value) {
                    Ok(flag) => sequential = flag,
                    Err(reason) => fail(self, format!("isSequential {reason}")),
                },
                (Ns::Replyflow, "collection") => collection = Some(value.to_owned()),
                (_, "collection") if camunda => collection = Some(value.to_owned()),
                (Ns::Replyflow, "elementVariable") => element_variable = Some(value.to_owned()),
                (_, "elementVariable") if camunda => element_variable = Some(value.to_owned()),
                (Ns::Replyflow, "signMode") => mode = Some(value.to_owned()),
                (Ns::Replyflow, "passRatio") => pass_ratio = Some(value.to_owned()),
                (Ns::Replyflow, other) => {
                    fail(self, format!("unknown attribute replyflow:{other}"));
                }
                (Ns::None, "id") | (Ns::Other(_), _) | (Ns::Diagram, _) => {}
                (_, other) => fail(self, format!("attribute {other} is not supported")),
            }
        }
        let mut completion = None;
        for child in &element.children {
            match (&child.ns, child.local.as_str()) {
                (Ns::Diagram, _) | (Ns::Bpmn, "documentation") => {}
                (Ns::Bpmn, "extensionElements") => {
                    self.replyflow_extensions(child, task_id, None);
                }
                (Ns::Bpmn, "completionCondition") => {
                    match Condition::compile(strip_expression(child.text.trim())) {
                        Ok(condition) => completion = Some(condition),
                        Err(reason) => {
                            fail(
                                self,
                                format!("completionCondition does not compile: {reason}"),
                            );
                        }
                    }
                }
                (Ns::Bpmn, "loopCardinality") => fail(
                    self,
                    "loopCardinality is not supported: name the signers with replyflow:collection"
                        .to_owned(),
                ),
                _ => fail(
                    self,
                    format!("unsupported element {}", child.display_name()),
                ),
            }
        }
        let collection = match collection.as_deref().map(strip_expression) {
            Some(name) if is_identifier(name) => Some(name.to_owned()),
            Some(other) => {
                fail(self, format!("collection {other:?} is not a variable name"));
                None
            }
            None => {
                fail(
                    self,
                    "missing replyflow:collection (the list variable of the signers' user ids)"
                        .to_owned(),
                );
                None
            }
        };
        let element_variable = match element_variable {
            None => DEFAULT_ELEMENT_VARIABLE.to_owned(),
            Some(name) if is_identifier(&name) => name,
            Some(other) => {
                fail(
                    self,
                    format!("elementVariable {other:?} is not a variable name"),
                );
                DEFAULT_ELEMENT_VARIABLE.to_owned()
            }
        };
        let mode = match (mode.as_deref().unwrap_or("all"), pass_ratio) {
            ("all", None) => SignMode::All,
            ("any", None) => SignMode::Any,
            ("vote", Some(ratio)) => match parse_ratio(&ratio) {
                Ok(pass_ratio) => SignMode::Vote { pass_ratio },
                Err(reason) => {
                    fail(self, format!("replyflow:passRatio {reason}"));
                    SignMode::All
                }
            },
            ("vote", None) => {
                fail(
                    self,
                    "replyflow:signMode vote needs replyflow:passRatio (e.g. 0.6)".to_owned(),
                );
                SignMode::All
            }
            ("all" | "any", Some(_)) => {
                fail(
                    self,
                    "replyflow:passRatio is only read with replyflow:signMode=\"vote\"".to_owned(),
                );
                SignMode::All
            }
            (other, _) => {
                fail(
                    self,
                    format!("replyflow:signMode must be all, any or vote, not {other:?}"),
                );
                SignMode::All
            }
        };
        let spec = MultiInstanceSpec {
            sequential,
            collection: collection?,
            element_variable,
            mode,
            completion,
        };
        ok.then_some(spec)
    }
}

impl ProcessBuilder {
    /// `all` and `vote` count approvals: the task must offer the outcome `approve` (every other
    /// outcome is a no).
    pub(super) fn check_sign_outcomes(
        &mut self,
        task_id: &str,
        multi: &MultiInstanceSpec,
        outcomes: &[OutcomeSpec],
    ) {
        if multi.mode != SignMode::Any && !outcomes.iter().any(|o| o.id == APPROVE) {
            self.error(
                task_id,
                format!(
                    "replyflow:signMode {} counts approvals: declare an outcome with id \"approve\"",
                    multi.mode.as_str()
                ),
            );
        }
    }
}

/// The outcome that counts as a yes in `all` and `vote` modes.
pub const APPROVE: &str = "approve";

/// Camunda writes expressions as `${…}`; the inside is the CEL or the variable name.
fn strip_expression(raw: &str) -> &str {
    raw.strip_prefix("${")
        .and_then(|inner| inner.strip_suffix('}'))
        .map(str::trim)
        .unwrap_or(raw)
}

fn parse_ratio(raw: &str) -> Result<f64, String> {
    let ratio: f64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?} is not a number"))?;
    if ratio.is_finite() && ratio > 0.0 && ratio <= 1.0 {
        Ok(ratio)
    } else {
        Err(format!("{raw} is outside (0, 1]"))
    }
}
