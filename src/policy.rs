//! Who may do what (DESIGN §12): the one module that answers it. The API establishes the caller
//! ([`Actor`], with roles from the JWT, an API key and the configuration) and the use cases load
//! the facts a rule needs (who started the instance, who holds the task); [`can`] decides. Every
//! rule is one arm of one `match`, so the table below and the README's can be checked line by
//! line against each other.
//!
//! | action | who |
//! |---|---|
//! | deploy a definition, upsert a reminder type | `deployer` |
//! | upsert a user | `directory` |
//! | submit a raw inbound mail | `mail` |
//! | list every inbound mail, reminder statistics | `admin`, `mail` (inbound) / `deployer` (stats) |
//! | read an instance, its tasks, approval contexts, reminders, inbound mail | its initiator, a participant (has or had a task in it); a task also its assignee |
//! | list every reminder | `admin` |
//! | cancel, suspend, resume, remind now, resend or revoke an approval mail | the initiator; resend/revoke also the assignee |
//! | copy users in on an instance (抄送) | the initiator, a participant, `admin` |
//! | decide a task (complete) | its current assignee only — never an admin (four eyes) |
//! | reassign a task (转办) | its assignee |
//! | read, mark or watch another user's messages or task stream | only themselves |
//! | see a user's phone number | themselves, `directory` |
//!
//! `admin` may do everything except decide a task that is not theirs. Start a process, read
//! definitions and the directory: every authenticated caller.
use std::fmt;

use crate::error::Error;

/// A role a caller can hold. `ActAs` is for service API keys that name the user they act for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Admin,
    Deployer,
    Directory,
    Mail,
    ActAs,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Deployer,
        Role::Directory,
        Role::Mail,
        Role::ActAs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
            Role::Directory => "directory",
            Role::Mail => "mail",
            Role::ActAs => "act_as",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling, as established by the API's authentication: a user id (a directory user, or
/// `key:<id>` for a service API key acting as itself) and the roles it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: String,
    roles: Vec<Role>,
}

impl Actor {
    /// A caller without roles (the server itself uses this for its own work).
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            roles: Vec::new(),
        }
    }

    pub fn with_roles(mut self, roles: impl IntoIterator<Item = Role>) -> Self {
        self.roles.extend(roles);
        self.roles.sort();
        self.roles.dedup();
        self
    }

    /// `admin` holds every role.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }
}

/// The facts about an instance that its rules need.
#[derive(Debug, Clone, Copy)]
pub struct InstanceAccess<'a> {
    pub started_by: &'a str,
    /// The caller has or had a task in the instance (assignee or completer).
    pub participant: bool,
}

/// What the caller wants to do, with the facts the rule needs.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    DeployDefinition,
    UpsertReminderType,
    UpsertUser,
    SubmitInboundEmail,
    ListAllInboundEmails,
    ReminderStats,
    /// Read an instance or what hangs off it (tasks, approval contexts, reminders, inbound mail).
    ReadInstance(InstanceAccess<'a>),
    /// Read a task (or its approval context): also its holder (`assignee`, or the context's
    /// approver).
    ReadTask {
        assignee: &'a str,
        instance: InstanceAccess<'a>,
    },
    /// List every reminder, unfiltered.
    ListAllReminders,
    CancelInstance(InstanceAccess<'a>),
    /// Copy users in on an instance (抄送).
    CarbonCopy(InstanceAccess<'a>),
    /// Suspend (挂起) or resume (激活) an instance.
    SuspendInstance(InstanceAccess<'a>),
    RemindNow(InstanceAccess<'a>),
    /// Resend or revoke the approval mail of a task.
    ManageApprovalMail {
        instance: InstanceAccess<'a>,
        assignee: &'a str,
    },
    /// Decide a task: complete it, or act on it as its holder.
    DecideTask {
        assignee: &'a str,
    },
    ReassignTask {
        assignee: &'a str,
    },
    /// Read, mark or watch the messages or the task stream of `user_id`.
    ReadInboxOf {
        user_id: &'a str,
    },
    /// See the phone number of `user_id`.
    SeePhone {
        user_id: &'a str,
    },
}

/// The one decision: `Ok` or `PermissionDenied` saying what would be needed.
pub fn can(actor: &Actor, action: Action<'_>) -> Result<(), Error> {
    let me = actor.user_id.as_str();
    let allowed = match action {
        Action::DeployDefinition | Action::UpsertReminderType => actor.has(Role::Deployer),
        Action::UpsertUser => actor.has(Role::Directory),
        Action::SubmitInboundEmail | Action::ListAllInboundEmails => actor.has(Role::Mail),
        Action::ReminderStats => actor.has(Role::Deployer),
        Action::ReadInstance(i) | Action::CarbonCopy(i) => {
            actor.is_admin() || i.started_by == me || i.participant
        }
        Action::ReadTask { assignee, instance } => {
            assignee == me || actor.is_admin() || instance.started_by == me || instance.participant
        }
        Action::ListAllReminders => actor.is_admin(),
        Action::CancelInstance(i) | Action::SuspendInstance(i) | Action::RemindNow(i) => {
            actor.is_admin() || i.started_by == me
        }
        Action::ManageApprovalMail { instance, assignee } => {
            actor.is_admin() || instance.started_by == me || assignee == me
        }
        // Four eyes: not even an admin decides a task that is not assigned to them.
        Action::DecideTask { assignee } => assignee == me,
        Action::ReassignTask { assignee } => actor.is_admin() || assignee == me,
        Action::ReadInboxOf { user_id } => actor.is_admin() || user_id == me,
        Action::SeePhone { user_id } => actor.has(Role::Directory) || user_id == me,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::PermissionDenied(denial(actor, action)))
    }
}

/// Says who could have done it, so that the caller knows what is missing.
fn denial(actor: &Actor, action: Action<'_>) -> String {
    let who = &actor.user_id;
    match action {
        Action::DeployDefinition => {
            format!("{who} may not deploy definitions: role deployer needed")
        }
        Action::UpsertReminderType => {
            format!("{who} may not define reminder types: role deployer needed")
        }
        Action::UpsertUser => format!("{who} may not change the directory: role directory needed"),
        Action::SubmitInboundEmail => {
            format!("{who} may not submit inbound mail: role mail needed")
        }
        Action::ListAllInboundEmails => format!(
            "{who} may list only the inbound mail of a task they can see (give task_id): role mail needed for all"
        ),
        Action::ReminderStats => {
            format!("{who} may not read reminder statistics: role deployer needed")
        }
        Action::ReadInstance(_) | Action::ReadTask { .. } => {
            format!("{who} neither started this instance nor takes part in it")
        }
        Action::CarbonCopy(i) => format!(
            "only the initiator ({}), an assignee of one of its tasks or an admin may copy people in",
            i.started_by
        ),
        Action::ListAllReminders => format!(
            "{who} may list reminders by process_instance_id, task_id or recipient; only an admin lists them all"
        ),
        Action::CancelInstance(i) | Action::SuspendInstance(i) | Action::RemindNow(i) => {
            format!(
                "only the initiator ({}) or an admin may do this",
                i.started_by
            )
        }
        Action::ManageApprovalMail { instance, assignee } => format!(
            "only the assignee ({assignee}), the initiator ({}) or an admin may do this",
            instance.started_by
        ),
        Action::DecideTask { assignee } => {
            format!("the task is assigned to {assignee}, not to {who}")
        }
        Action::ReassignTask { assignee } => {
            format!("the task is assigned to {assignee}; only they or an admin may reassign it")
        }
        Action::ReadInboxOf { user_id } => {
            format!("{who} may not read the messages or tasks of {user_id}")
        }
        Action::SeePhone { user_id } => format!("{who} may not see the phone of {user_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Actor {
        Actor::new(id)
    }

    #[test]
    fn roles_guard_administration_and_admin_holds_every_role() {
        assert!(can(&user("mary"), Action::DeployDefinition).is_err());
        assert!(
            can(
                &user("mary").with_roles([Role::Deployer]),
                Action::DeployDefinition
            )
            .is_ok()
        );
        assert!(can(&user("root").with_roles([Role::Admin]), Action::UpsertUser).is_ok());
        assert!(can(&user("bot").with_roles([Role::Mail]), Action::UpsertUser).is_err());
    }

    #[test]
    fn no_one_but_the_assignee_decides_not_even_an_admin() {
        let admin = user("root").with_roles([Role::Admin]);
        assert!(can(&admin, Action::DecideTask { assignee: "mary" }).is_err());
        assert!(can(&user("mary"), Action::DecideTask { assignee: "mary" }).is_ok());
        let err = can(&user("fred"), Action::DecideTask { assignee: "mary" }).unwrap_err();
        assert!(matches!(err, Error::PermissionDenied(_)));
    }

    #[test]
    fn instances_are_seen_by_initiator_participants_and_admins() {
        let stranger = InstanceAccess {
            started_by: "fred",
            participant: false,
        };
        assert!(can(&user("eve"), Action::ReadInstance(stranger)).is_err());
        assert!(can(&user("fred"), Action::ReadInstance(stranger)).is_ok());
        let joined = InstanceAccess {
            participant: true,
            ..stranger
        };
        assert!(can(&user("eve"), Action::ReadInstance(joined)).is_ok());
        assert!(can(&user("eve"), Action::CancelInstance(joined)).is_err());
    }
}
