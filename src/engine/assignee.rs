//! Who approves (DESIGN §11, 审批人): the user a task opens for, from its `replyflow:assignee`
//! and the rules around it.
//!
//! An assignee is a user id, a plain `${variable}`, or CEL inside `${…}` with `initiator` (the
//! instance's `started_by`, always bound and never taken from the variables, so a start request
//! cannot forge it) and `manager(user)` / `manager(user, n)` (n levels up the directory's manager
//! chain, 多级主管). The value is a user id; `null` or an empty string is "no assignee", as is a
//! manager chain that ends before level n. Then, in this order:
//! 1. no assignee → `replyflow:whenNoAssignee`: `fail` (the instance fails naming the task and
//!    why), `skip` (nobody is asked: the token moves on as if the task had been approved) or
//!    `admin:<user>` (that user decides instead);
//! 2. the assignee is the initiator → `replyflow:whenAssigneeIsInitiator`: `self` (they decide),
//!    `skip`, or `manager` (the initiator's manager decides; none → rule 1 again, and an admin
//!    who is the initiator fails: four eyes). So a task reaches its own initiator only where the
//!    definition says `self` (the default);
//! 3. `replyflow:skipIfApprovedBefore="true"` and the assignee already approved a task of this
//!    instance → the task is created completed with outcome approve (去重).
//!
//! Every automatic choice is a [`Note`] that becomes an audit event saying why.
//!
//! The engine stays pure and synchronous: it never reads the directory. [`People`] is the
//! read-only view the caller fills before `runtime::apply`: the initiator, the users it loaded
//! with their manager ids, and (once asked for) who approved tasks of the instance. A lookup the
//! view cannot answer is not guessed: the walk goes on where it can and `apply` answers
//! `ActionError::Needs` with everything missing; the caller loads those users with their whole
//! manager chains ([`MAX_MANAGER_LEVELS`] levels, a query per level) and applies again. Another
//! round is needed only when a lookup depends on a pass-over decided with the first round's
//! answers, so a few rounds bound it (the caller's limit).
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use cel::extractors::Arguments;
use cel::{ExecutionError, Value};
use serde_json::{Map, Value as Json, json};

use super::condition::{Condition, describe_value_type};
use super::condition_limits;
use super::definition::{Assignee, UserTaskSpec};

/// The most levels `manager(user, n)` climbs; also how deep a caller loads a chain.
pub const MAX_MANAGER_LEVELS: i64 = 20;

/// Functions an assignee expression may call besides `manager` (CEL's standard global ones);
/// any other name is a typo refused at deploy. Methods (`x.startsWith(…)`) are CEL's own.
const STANDARD_FUNCTIONS: &[&str] = &[
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "type",
    "dyn",
    "max",
    "min",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
];

/// A compiled `${…}` assignee expression.
#[derive(Debug, Clone)]
pub struct AssigneeExpr {
    condition: Condition,
}

/// Two expressions are the same when written the same.
impl PartialEq for AssigneeExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source() == other.source()
    }
}

impl Eq for AssigneeExpr {}

impl AssigneeExpr {
    /// Compiles the text inside `${…}`; the error says what is wrong with it.
    pub fn compile(source: &str) -> Result<AssigneeExpr, String> {
        let condition = Condition::compile(source)?;
        check_calls(condition.expression())?;
        Ok(AssigneeExpr { condition })
    }

    pub fn source(&self) -> &str {
        self.condition.source()
    }

    /// The variables the expression reads.
    pub fn variables(&self) -> &[String] {
        self.condition.variables()
    }
}

fn check_calls(root: &cel::parser::Expression) -> Result<(), String> {
    use cel::common::ast::{Expr, LiteralValue};
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if let Expr::Call(call) = &node.expr {
            let name = call.func_name.as_str();
            let operator = name.starts_with(['_', '@', '!', '-']);
            if name == "manager" {
                if call.target.is_some() || !(1..=2).contains(&call.args.len()) {
                    return Err("manager is called as manager(user) or manager(user, n)".into());
                }
                if let Some(Expr::Literal(LiteralValue::Int(n))) = call.args.get(1).map(|a| &a.expr)
                    && !(1..=MAX_MANAGER_LEVELS).contains(n.inner())
                {
                    return Err(format!(
                        "manager(user, n) climbs 1 to {MAX_MANAGER_LEVELS} levels, not {}",
                        n.inner()
                    ));
                }
            } else if call.target.is_none() && !operator && !STANDARD_FUNCTIONS.contains(&name) {
                return Err(format!(
                    "unknown function {name}(): an assignee may call manager(user), \
                     manager(user, n) and CEL's standard functions"
                ));
            }
        }
        stack.extend(condition_limits::children(node));
    }
    Ok(())
}

/// `replyflow:whenNoAssignee`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WhenNoAssignee {
    #[default]
    Fail,
    Skip,
    Admin(String),
}

impl WhenNoAssignee {
    pub fn parse(value: &str) -> Result<WhenNoAssignee, String> {
        match value {
            "fail" => Ok(WhenNoAssignee::Fail),
            "skip" => Ok(WhenNoAssignee::Skip),
            other => match other.strip_prefix("admin:").map(str::trim) {
                Some(user) if !user.is_empty() && !user.chars().any(char::is_whitespace) => {
                    Ok(WhenNoAssignee::Admin(user.to_owned()))
                }
                _ => Err(format!("{other:?}: expected fail, skip or admin:<user id>")),
            },
        }
    }

    fn as_str(&self) -> String {
        match self {
            WhenNoAssignee::Fail => "fail".into(),
            WhenNoAssignee::Skip => "skip".into(),
            WhenNoAssignee::Admin(user) => format!("admin:{user}"),
        }
    }
}

/// `replyflow:whenAssigneeIsInitiator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenInitiator {
    #[default]
    SelfDecides,
    Skip,
    Manager,
}

impl WhenInitiator {
    pub fn parse(value: &str) -> Result<WhenInitiator, String> {
        match value {
            "self" => Ok(WhenInitiator::SelfDecides),
            "skip" => Ok(WhenInitiator::Skip),
            "manager" => Ok(WhenInitiator::Manager),
            other => Err(format!("{other:?}: expected self, skip or manager")),
        }
    }
}

/// The rules of one user task around its assignee.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssigneeRules {
    pub when_no_assignee: WhenNoAssignee,
    pub when_initiator: WhenInitiator,
    /// `replyflow:skipIfApprovedBefore` (去重).
    pub skip_if_approved_before: bool,
}

/// What the engine may know of people (see the module doc): filled by the caller.
#[derive(Debug, Clone, Default)]
pub struct People {
    initiator: String,
    /// User id → `Some(manager id)` ("" when none) or `None` (not in the directory).
    managers: Arc<HashMap<String, Option<String>>>,
    /// Who approved a task of this instance before the action; `None` until loaded.
    approvers: Option<BTreeSet<String>>,
}

impl People {
    pub fn new(initiator: &str) -> People {
        People {
            initiator: initiator.to_owned(),
            ..People::default()
        }
    }

    pub fn initiator(&self) -> &str {
        &self.initiator
    }

    /// Records a directory answer: the user's manager id (empty when none), or `None` when the
    /// directory has no such user.
    pub fn add_user(&mut self, id: &str, manager: Option<&str>) {
        Arc::make_mut(&mut self.managers).insert(id.to_owned(), manager.map(str::to_owned));
    }

    /// Whether the directory's answer about `id` is known.
    pub fn knows(&self, id: &str) -> bool {
        self.managers.contains_key(id)
    }

    /// The manager id recorded for `id` (empty when none), if `id` is in the directory.
    pub fn manager_id(&self, id: &str) -> Option<&str> {
        self.managers.get(id).and_then(|m| m.as_deref())
    }

    pub fn set_approvers(&mut self, approvers: impl IntoIterator<Item = String>) {
        self.approvers = Some(approvers.into_iter().collect());
    }
}

/// What a resolution needed that [`People`] did not have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Users to load with their manager chains.
    pub users: BTreeSet<String>,
    /// The users who approved a task of the instance.
    pub approvers: bool,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && !self.approvers
    }

    pub fn merge(&mut self, other: Needs) {
        self.users.extend(other.users);
        self.approvers |= other.approvers;
    }
}

/// An automatic choice, written as an audit event of the task's activity.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub kind: &'static str,
    pub detail: Json,
}

/// Who the task goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The task opens for this user.
    Assign(String),
    /// Created completed with outcome approve for this user (`skipIfApprovedBefore`).
    AutoApprove(String),
    /// Nobody is asked: the token moves on as if the task had been approved.
    Skip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub resolution: Resolution,
    pub notes: Vec<Note>,
}

/// Why no [`Resolved`]: something to load first, or a failure of the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    Need(Needs),
    Fail(String),
}

/// One resolution's inputs.
#[derive(Debug)]
pub struct Ask<'a> {
    pub variables: &'a Map<String, Json>,
    /// A multi-instance signer's element variable and element.
    pub element: Option<(&'a str, &'a Json)>,
    pub people: &'a People,
    /// Who approved earlier in this same transition (not yet in `people`).
    pub approved_now: &'a [String],
    /// The walk's condition budget, shared with gateway conditions.
    pub budget: &'a mut u64,
}

/// The user `spec`'s task goes to, by the rules of the module doc.
pub fn resolve(spec: &UserTaskSpec, mut ask: Ask<'_>) -> Result<Resolved, Unresolved> {
    let rules = &spec.rules;
    let people = ask.people;
    let mut notes = Vec::new();
    let candidate = match evaluate(&spec.assignee, &mut ask)? {
        Candidate::User(user) => user,
        Candidate::Nobody(why) => match no_assignee(rules, &why, &mut notes)? {
            Some(user) => user,
            None => return Ok(skipped(notes)),
        },
    };
    let initiator = people.initiator();
    let user = if !initiator.is_empty() && candidate == initiator {
        match rules.when_initiator {
            WhenInitiator::SelfDecides => {
                notes.push(Note {
                    kind: "assignee_is_initiator",
                    detail: json!({"assignee": candidate, "rule": "whenAssigneeIsInitiator=self",
                                   "why": "the definition lets the initiator decide this task"}),
                });
                candidate
            }
            WhenInitiator::Skip => {
                notes.push(Note {
                    kind: "assignee_skipped",
                    detail: json!({"assignee": candidate, "rule": "whenAssigneeIsInitiator=skip",
                                   "why": "the assignee started this instance; passed over as if approved"}),
                });
                return Ok(skipped(notes));
            }
            WhenInitiator::Manager => match manager_of(&people.managers, initiator, 1) {
                Ok(Some(manager)) => {
                    notes.push(Note {
                        kind: "assignee_replaced",
                        detail: json!({"from": candidate, "to": manager,
                                       "rule": "whenAssigneeIsInitiator=manager",
                                       "why": "the assignee started this instance; their manager decides instead"}),
                    });
                    manager
                }
                Ok(None) => {
                    let why = format!(
                        "the assignee {initiator} started this instance and has no manager to \
                         decide instead (whenAssigneeIsInitiator=manager)"
                    );
                    match no_assignee(rules, &why, &mut notes)? {
                        Some(admin) if admin == initiator => {
                            return Err(Unresolved::Fail(format!(
                                "{why}; whenNoAssignee names the initiator, who may not approve \
                                 their own request (four eyes)"
                            )));
                        }
                        Some(admin) => admin,
                        None => return Ok(skipped(notes)),
                    }
                }
                Err(Lookup::Need(user)) => return Err(need_user(user)),
                Err(Lookup::Broken(why)) => {
                    return Err(Unresolved::Fail(format!(
                        "the initiator's manager (whenAssigneeIsInitiator=manager): {why}"
                    )));
                }
            },
        }
    } else {
        candidate
    };
    if rules.skip_if_approved_before {
        let before = match &people.approvers {
            Some(approvers) => approvers.contains(&user),
            None if ask.approved_now.contains(&user) => true,
            None => {
                return Err(Unresolved::Need(Needs {
                    users: BTreeSet::new(),
                    approvers: true,
                }));
            }
        } || ask.approved_now.contains(&user);
        if before {
            notes.push(Note {
                kind: "task_auto_completed",
                detail: json!({"assignee": user, "outcome": super::definition::APPROVE,
                               "rule": "skipIfApprovedBefore",
                               "why": "the assignee already approved an earlier task of this instance"}),
            });
            return Ok(Resolved {
                resolution: Resolution::AutoApprove(user),
                notes,
            });
        }
    }
    Ok(Resolved {
        resolution: Resolution::Assign(user),
        notes,
    })
}

fn skipped(notes: Vec<Note>) -> Resolved {
    Resolved {
        resolution: Resolution::Skip,
        notes,
    }
}

fn need_user(user: String) -> Unresolved {
    Unresolved::Need(Needs {
        users: BTreeSet::from([user]),
        approvers: false,
    })
}

/// Rule 1: `Some(admin)`, `None` to skip, or the failure.
fn no_assignee(
    rules: &AssigneeRules,
    why: &str,
    notes: &mut Vec<Note>,
) -> Result<Option<String>, Unresolved> {
    let rule = format!("whenNoAssignee={}", rules.when_no_assignee.as_str());
    match &rules.when_no_assignee {
        WhenNoAssignee::Fail => Err(Unresolved::Fail(format!(
            "no assignee: {why} (replyflow:whenNoAssignee is fail)"
        ))),
        WhenNoAssignee::Skip => {
            notes.push(Note {
                kind: "assignee_skipped",
                detail: json!({"rule": rule, "why": format!("no assignee: {why}; passed over as if approved")}),
            });
            Ok(None)
        }
        WhenNoAssignee::Admin(admin) => {
            notes.push(Note {
                kind: "assignee_replaced",
                detail: json!({"to": admin, "rule": rule, "why": format!("no assignee: {why}")}),
            });
            Ok(Some(admin.clone()))
        }
    }
}

enum Candidate {
    User(String),
    /// No assignee, and why.
    Nobody(String),
}

fn evaluate(assignee: &Assignee, ask: &mut Ask<'_>) -> Result<Candidate, Unresolved> {
    let (value, what) = match assignee {
        Assignee::User(user) => return Ok(Candidate::User(user.clone())),
        Assignee::Variable(name) => {
            let value = match ask.element {
                Some((element, value)) if element == name => value.clone(),
                _ if name == "initiator" => Json::String(ask.people.initiator.clone()),
                _ => match ask.variables.get(name) {
                    Some(value) => value.clone(),
                    None => {
                        return Err(Unresolved::Fail(format!(
                            "assignee variable {name:?} is not set"
                        )));
                    }
                },
            };
            (value, format!("assignee variable {name:?}"))
        }
        Assignee::Expression(expr) => (
            run(expr, ask)?,
            format!("replyflow:assignee ${{{}}}", expr.source()),
        ),
    };
    match value {
        Json::String(user) if !user.trim().is_empty() => Ok(Candidate::User(user.trim().into())),
        Json::String(_) | Json::Null => Ok(Candidate::Nobody(format!("{what} names nobody"))),
        other => Err(Unresolved::Fail(format!(
            "{what} must hold a user id (a non-empty string), found {other}"
        ))),
    }
}

/// What `manager` calls in one evaluation ran into.
#[derive(Debug, Default)]
struct Calls {
    need: BTreeSet<String>,
    broken: Option<String>,
}

fn run(expr: &AssigneeExpr, ask: &mut Ask<'_>) -> Result<Json, Unresolved> {
    let initiator = Json::String(ask.people.initiator.clone());
    let mut bound = vec![("initiator", &initiator)];
    bound.extend(ask.element);
    let calls = Arc::new(Mutex::new(Calls::default()));
    let managers = Arc::clone(&ask.people.managers);
    let seen = Arc::clone(&calls);
    let result = expr
        .condition
        .execute_within(ask.variables, &bound, ask.budget, move |context| {
            let manager = move |Arguments(args): Arguments| -> Result<Value, ExecutionError> {
                let (user, levels) = match args.as_slice() {
                    [Value::Null] | [Value::Null, Value::Int(_)] => return Ok(Value::Null),
                    [Value::String(user)] => (user.trim().to_owned(), 1),
                    [Value::String(user), Value::Int(n)] => (user.trim().to_owned(), *n),
                    _ => {
                        return Err(ExecutionError::function_error(
                            "manager",
                            "expects manager(user id) or manager(user id, levels)",
                        ));
                    }
                };
                match manager_of(&managers, &user, levels) {
                    Ok(Some(found)) => Ok(Value::String(Arc::new(found))),
                    Ok(None) => Ok(Value::Null),
                    Err(lookup) => {
                        let why = match lookup {
                            Lookup::Need(user) => {
                                if let Ok(mut calls) = seen.lock() {
                                    calls.need.insert(user);
                                }
                                "the directory is being read".to_owned()
                            }
                            Lookup::Broken(why) => {
                                if let Ok(mut calls) = seen.lock() {
                                    calls.broken.get_or_insert(why.clone());
                                }
                                why
                            }
                        };
                        Err(ExecutionError::function_error("manager", why))
                    }
                }
            };
            // "manager" is no standard overload, so adding it cannot conflict.
            let _ = context.add_function("manager", manager);
        });
    let calls = calls
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    if !calls.need.is_empty() {
        return Err(Unresolved::Need(Needs {
            users: calls.need,
            approvers: false,
        }));
    }
    let source = expr.source();
    if let Some(why) = calls.broken {
        return Err(Unresolved::Fail(format!(
            "replyflow:assignee ${{{source}}}: {why}"
        )));
    }
    match result {
        Ok(Value::String(user)) => Ok(Json::String(user.as_ref().clone())),
        Ok(Value::Null) => Ok(Json::Null),
        Ok(other) => Err(Unresolved::Fail(format!(
            "replyflow:assignee ${{{source}}} gave {} instead of a user id",
            describe_value_type(&other)
        ))),
        Err(reason) => Err(Unresolved::Fail(format!(
            "replyflow:assignee ${{{source}}} failed: {reason}"
        ))),
    }
}

enum Lookup {
    /// The view does not have this user yet.
    Need(String),
    /// The directory cannot answer (unknown user, a loop, a bad level).
    Broken(String),
}

/// `levels` up `user`'s manager chain; `None` when the chain ends first.
fn manager_of(
    managers: &HashMap<String, Option<String>>,
    user: &str,
    levels: i64,
) -> Result<Option<String>, Lookup> {
    if !(1..=MAX_MANAGER_LEVELS).contains(&levels) {
        return Err(Lookup::Broken(format!(
            "manager(user, n) climbs 1 to {MAX_MANAGER_LEVELS} levels, not {levels}"
        )));
    }
    let mut chain = vec![user.to_owned()];
    for _ in 0..levels {
        let current = chain.last().cloned().unwrap_or_default();
        match managers.get(&current) {
            None => return Err(Lookup::Need(current)),
            Some(None) => {
                return Err(Lookup::Broken(format!(
                    "user {current:?} is not in the directory (DirectoryService.UpsertUser)"
                )));
            }
            Some(Some(manager)) if manager.is_empty() => return Ok(None),
            Some(Some(manager)) => {
                if chain.contains(manager) {
                    return Err(Lookup::Broken(format!(
                        "the directory's manager chain loops: {} → {manager}",
                        chain.join(" → ")
                    )));
                }
                chain.push(manager.clone());
            }
        }
    }
    Ok(chain.pop())
}
