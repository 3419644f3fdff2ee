//! The facts [`crate::policy`] needs about instances and tasks, read from the store, and the
//! visibility filter of lists. The rules themselves stay in the policy module.
use super::{Actor, Workflow};
use crate::{
    error::{Error, Result},
    model::Instance,
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

    /// May `actor` read this instance (and its tasks, contexts, reminders, inbound mail)? The
    /// participation query runs only when the cheaper facts do not already decide.
    pub async fn authorize_read(&self, actor: &Actor, instance: &Instance) -> Result<()> {
        self.authorize_with_participation(actor, &instance.id, |participant| {
            Action::ReadInstance(InstanceAccess {
                started_by: &instance.started_by,
                participant,
            })
        })
        .await
    }

    /// [`Workflow::authorize_read`] for an instance known by id.
    pub async fn authorize_read_id(&self, actor: &Actor, instance_id: &str) -> Result<()> {
        let instance = self.known_instance(instance_id).await?;
        self.authorize_read(actor, &instance).await
    }

    /// May `actor` read a task (or an approval context) held by `holder` in this instance?
    pub async fn authorize_task_read(
        &self,
        actor: &Actor,
        holder: &str,
        instance_id: &str,
    ) -> Result<()> {
        let instance = self.known_instance(instance_id).await?;
        self.authorize_with_participation(actor, instance_id, |participant| Action::ReadTask {
            assignee: holder,
            instance: InstanceAccess {
                started_by: &instance.started_by,
                participant,
            },
        })
        .await
    }

    async fn known_instance(&self, instance_id: &str) -> Result<Instance> {
        self.store
            .instance(instance_id)
            .await?
            .ok_or_else(|| Error::not_found("process instance", instance_id))
    }

    /// Asks the policy without the participation fact, and only when that is refused, again
    /// with it read from the store.
    async fn authorize_with_participation<'a>(
        &self,
        actor: &Actor,
        instance_id: &str,
        action: impl Fn(bool) -> Action<'a>,
    ) -> Result<()> {
        if policy::can(actor, action(false)).is_ok() {
            return Ok(());
        }
        let participant = self.store.takes_part(instance_id, &actor.user_id).await?;
        policy::can(actor, action(participant))
    }
}
