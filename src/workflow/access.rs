//! The facts [`crate::policy`] needs about instances and tasks, read from the store, and the
//! visibility filter of lists. The rules themselves stay in the policy module.
use super::{Actor, Workflow};
use crate::{
    error::{Error, Result},
    model::{Instance, Task},
    policy::{self, Action, InstanceAccess},
};

impl Workflow {
    /// The user whose view a list is restricted to: the caller, or nobody (empty) for an admin.
    pub fn visible_to(actor: &Actor) -> String {
        if actor.is_admin() {
            String::new()
        } else {
            actor.user_id.clone()
        }
    }

    /// May `actor` read this instance (and its tasks, contexts, reminders, inbound mail)?
    pub async fn authorize_read(&self, actor: &Actor, instance: &Instance) -> Result<()> {
        if actor.is_admin() || instance.started_by == actor.user_id {
            return Ok(());
        }
        let participant = self.store.takes_part(&instance.id, &actor.user_id).await?;
        policy::can(
            actor,
            Action::ReadInstance(InstanceAccess {
                started_by: &instance.started_by,
                participant,
            }),
        )
    }

    /// [`Workflow::authorize_read`] for an instance known by id.
    pub async fn authorize_read_id(&self, actor: &Actor, instance_id: &str) -> Result<()> {
        let instance = self
            .store
            .instance(instance_id)
            .await?
            .ok_or_else(|| Error::not_found("process instance", instance_id))?;
        self.authorize_read(actor, &instance).await
    }

    /// May `actor` read this task? Its assignee may; otherwise as for its instance.
    pub async fn authorize_task_read(&self, actor: &Actor, task: &Task) -> Result<()> {
        if task.assignee == actor.user_id {
            return Ok(());
        }
        self.authorize_read_id(actor, &task.instance_id).await
    }
}
