//! The replyflow attributes and extension elements of a definition (DESIGN §3): a user task's
//! `replyflow:*` attributes, its `<replyflow:outcome>`s and the process's
//! `<replyflow:reminderType>`s, each value parsed and checked where it is read.

use super::builder::ProcessBuilder;
use super::xml::{Element, Ns};
use super::{Assignee, MultiInstanceSpec, OutcomeSpec, ReminderTypeDecl, UserTaskSpec};
use crate::engine::assignee::{AssigneeExpr, AssigneeRules, WhenInitiator, WhenNoAssignee};
use crate::engine::reminder_rules::{self, EscalationPolicy};
use crate::{duration::Duration, model::Channel};

impl ProcessBuilder {
    pub(super) fn read_user_task(
        &mut self,
        element: &Element,
        id: &str,
        outcomes: Option<Vec<OutcomeSpec>>,
        multi: Option<Box<MultiInstanceSpec>>,
    ) -> UserTaskSpec {
        // A multi-instance task's signers are the collection's elements unless an assignee
        // says otherwise (e.g. each element's manager, issue 11).
        let default_assignee = match &multi {
            Some(m) => Assignee::Variable(m.element_variable.clone()),
            None => Assignee::User(String::new()),
        };
        let has_default_assignee = multi.is_some();
        let mut spec = UserTaskSpec {
            assignee: default_assignee,
            reminder_type: None,
            email_approval: true,
            valid_for: None,
            show: Vec::new(),
            outcomes: outcomes
                .filter(|declared| !declared.is_empty())
                .unwrap_or_else(default_outcomes),
            allow_delegate: false,
            writable: Vec::new(),
            multi,
            rules: AssigneeRules::default(),
            cc: None,
        };
        let mut has_assignee = has_default_assignee;
        for attr in element.replyflow_attrs() {
            let value = attr.value.trim();
            let result = match attr.local.as_str() {
                "assignee" => {
                    has_assignee = true;
                    parse_assignee(value).map(|assignee| spec.assignee = assignee)
                }
                "whenNoAssignee" => {
                    WhenNoAssignee::parse(value).map(|rule| spec.rules.when_no_assignee = rule)
                }
                "whenAssigneeIsInitiator" => {
                    WhenInitiator::parse(value).map(|rule| spec.rules.when_initiator = rule)
                }
                "skipIfApprovedBefore" => {
                    parse_flag(value).map(|flag| spec.rules.skip_if_approved_before = flag)
                }
                "reminderType" => non_empty(value).map(|name| spec.reminder_type = Some(name)),
                "emailApproval" => parse_flag(value).map(|flag| spec.email_approval = flag),
                "allowDelegate" => parse_flag(value).map(|flag| spec.allow_delegate = flag),
                "cc" => parse_cc(value).map(|cc| spec.cc = Some(cc)),
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
        if let Some(multi) = &spec.multi {
            self.check_sign_outcomes(id, multi, &spec.outcomes);
        }
        spec
    }

    pub(super) fn read_outcomes(
        &mut self,
        extensions: &Element,
        task_id: &str,
    ) -> Vec<OutcomeSpec> {
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
    pub(super) fn replyflow_extensions<'e>(
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

    pub(super) fn read_process_extensions(&mut self, extensions: &Element) {
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
}

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
pub(super) fn display_label(raw: Option<&str>) -> Option<String> {
    let label = raw?.split_whitespace().collect::<Vec<_>>().join(" ");
    (!label.is_empty()).then_some(label)
}

fn missing_assignee_reason(element: &Element) -> String {
    let foreign = element
        .attrs
        .iter()
        .any(|attr| attr.local == "assignee" && attr.ns != Ns::Replyflow);
    let mut reason =
        "missing replyflow:assignee (a user id, ${variable}, or CEL such as ${manager(initiator)})"
            .to_owned();
    if foreign {
        reason.push_str("; an assignee attribute of another namespace (e.g. camunda) is not read");
    }
    reason
}

/// A user id, `${variable}`, or CEL inside `${…}` (compiled here, so a typo is refused at
/// deploy naming the task).
fn parse_assignee(value: &str) -> Result<Assignee, String> {
    if let Some(inner) = value.strip_prefix("${") {
        let inner = inner
            .strip_suffix('}')
            .map(str::trim)
            .filter(|inner| !inner.is_empty())
            .ok_or_else(|| {
                format!("'{value}' is not ${{…}} around a variable or a CEL expression")
            })?;
        if is_identifier(inner) {
            return Ok(Assignee::Variable(inner.to_owned()));
        }
        return AssigneeExpr::compile(inner)
            .map(|expr| Assignee::Expression(Box::new(expr)))
            .map_err(|reason| format!("'{value}' is not a valid CEL expression: {reason}"));
    }
    if value.is_empty() {
        return Err("empty: give a user id or ${variable}".to_owned());
    }
    if value.contains("${") || value.contains('}') || value.chars().any(char::is_whitespace) {
        return Err(format!("'{value}' is neither a user id nor ${{variable}}"));
    }
    Ok(Assignee::User(value.to_owned()))
}

pub(super) fn is_identifier(name: &str) -> bool {
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

pub(super) fn parse_flag(value: &str) -> Result<bool, String> {
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

/// `${variable}` or a comma-separated list of user ids.
fn parse_cc(value: &str) -> Result<super::CcList, String> {
    if let Some(inner) = value.strip_prefix("${") {
        let name = inner
            .strip_suffix('}')
            .map(str::trim)
            .ok_or_else(|| format!("{value:?}: expected ${{variable}} or user ids"))?;
        if !is_identifier(name) {
            return Err(format!("{name:?} is not a variable name"));
        }
        return Ok(super::CcList::Variable(name.to_string()));
    }
    let users = split_list(value);
    if users.is_empty() {
        return Err("name a list variable (${cc_users}) or user ids".into());
    }
    match users
        .iter()
        .find(|u| u.contains(['$', '{', '}']) || u.contains(char::is_whitespace))
    {
        Some(bad) => Err(format!("{bad:?} is not a user id")),
        None => Ok(super::CcList::Users(users)),
    }
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
    use super::super::test_support::*;
    use super::super::*;

    // --- attributes ----------------------------------------------------------------------------

    #[test]
    fn cc_names_a_list_variable_or_user_ids_and_bad_values_name_the_task() {
        assert_eq!(
            super::parse_cc("${cc_users}"),
            Ok(CcList::Variable("cc_users".into()))
        );
        assert_eq!(
            super::parse_cc(" carol, dave ,"),
            Ok(CcList::Users(vec!["carol".into(), "dave".into()]))
        );
        for (bad, why) in [
            ("${}", "not a variable name"),
            ("${a b}", "not a variable name"),
            ("${cc", "expected"),
            (" , ", "name a list variable"),
            ("carol, $x", "not a user id"),
        ] {
            let err = super::parse_cc(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let xml = with_task(r#"<userTask id="task" replyflow:assignee="a" replyflow:cc="${1x}"/>"#);
        assert_error(&xml, "task", "replyflow:cc");
    }

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
            "${manager",
            "",
            "a b",
            "x${y}",
            "${manger(initiator)}",
            "${manager()}",
            "${manager(initiator, 21)}",
            "${initiator.manager()}",
            "${amount &gt;}",
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
        for cel in [
            "${manager(initiator)}",
            "${manager(initiator, 2)}",
            "${amount &gt; 1000 ? manager(initiator, 2) : manager(initiator)}",
            "${form.approver}",
        ] {
            let xml = with_task(&format!(
                r#"<userTask id="task" replyflow:assignee="{cel}"/>"#
            ));
            let assignee = task_spec(&ok(&xml), "task").assignee;
            assert!(
                matches!(assignee, Assignee::Expression(_)),
                "{cel}: {assignee:?}"
            );
        }
    }

    #[test]
    fn assignee_rules_are_read_and_checked() {
        use crate::engine::assignee::{WhenInitiator, WhenNoAssignee};
        let xml = with_task(
            r#"<userTask id="task" replyflow:assignee="${manager(initiator)}"
                 replyflow:whenNoAssignee="admin:root" replyflow:whenAssigneeIsInitiator="manager"
                 replyflow:skipIfApprovedBefore="true"/>"#,
        );
        let rules = task_spec(&ok(&xml), "task").rules;
        assert_eq!(rules.when_no_assignee, WhenNoAssignee::Admin("root".into()));
        assert_eq!(rules.when_initiator, WhenInitiator::Manager);
        assert!(rules.skip_if_approved_before);
        let defaults = task_spec(
            &ok(&with_task(
                r#"<userTask id="task" replyflow:assignee="a"/>"#,
            )),
            "task",
        )
        .rules;
        assert_eq!(defaults.when_no_assignee, WhenNoAssignee::Fail);
        assert_eq!(defaults.when_initiator, WhenInitiator::SelfDecides);
        assert!(!defaults.skip_if_approved_before);
        for (attr, bad) in [
            ("whenNoAssignee", "admin:"),
            ("whenNoAssignee", "nobody"),
            ("whenAssigneeIsInitiator", "boss"),
            ("skipIfApprovedBefore", "yes"),
        ] {
            let xml = with_task(&format!(
                r#"<userTask id="task" replyflow:assignee="a" replyflow:{attr}="{bad}"/>"#
            ));
            assert_error(&xml, "task", &format!("replyflow:{attr}"));
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
}
