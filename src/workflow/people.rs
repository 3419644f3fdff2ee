//! Filling the engine's [`People`] view (see [`crate::engine::assignee`]): the engine asks
//! ([`ActionError::Needs`]) for the users and approvals it could not resolve an assignee
//! without; this loads them and lets the use case apply again. A user is loaded with their whole
//! manager chain (one query per level, at most [`MAX_MANAGER_LEVELS`]), so one round answers
//! every `manager(user, n)` of that user.
use crate::{
    engine::{
        assignee::{MAX_MANAGER_LEVELS, Needs, People},
        runtime::ActionError,
    },
    error::{Error, Result},
    store::writes::Source,
};

use super::Workflow;

/// How many times a transition is computed again after loading what it asked for. A round
/// answers every lookup the walk reached; another is needed only when a pass-over decided with
/// those answers leads to a lookup of someone else.
const LOOKUP_ROUNDS: usize = 8;

impl Workflow {
    /// Runs `decide` (an engine `apply`) until the people it needs are loaded into `people`.
    /// `instance_id` is the instance whose approvals `skipIfApprovedBefore` reads (none for a
    /// start: a new instance has none).
    pub(super) async fn with_people<T>(
        &self,
        people: &mut People,
        instance_id: Option<&str>,
        mut decide: impl FnMut(&People) -> std::result::Result<T, ActionError>,
    ) -> Result<std::result::Result<T, ActionError>> {
        for _ in 0..LOOKUP_ROUNDS {
            match decide(people) {
                Err(ActionError::Needs(needs)) => {
                    self.load_people(people, &needs, instance_id).await?
                }
                other => return Ok(other),
            }
        }
        Err(Error::Internal(anyhow::anyhow!(
            "resolving the assignees needed more than {LOOKUP_ROUNDS} rounds of directory reads"
        )))
    }

    async fn load_people(
        &self,
        people: &mut People,
        needs: &Needs,
        instance_id: Option<&str>,
    ) -> Result<()> {
        let mut wanted: Vec<String> = needs
            .users
            .iter()
            .filter(|user| !people.knows(user))
            .cloned()
            .collect();
        // The user at level 0 and the managers of levels 1 to MAX: their manager ids answer
        // manager(user, n) for every n.
        for _ in 0..=MAX_MANAGER_LEVELS {
            if wanted.is_empty() {
                break;
            }
            let found = Source::Pool(&self.store).users_by_id(&wanted).await?;
            let mut next = Vec::new();
            for id in &wanted {
                match found.get(id) {
                    Some(user) => {
                        let manager = user.manager_id.trim();
                        people.add_user(id, Some(manager));
                        if !manager.is_empty() && !people.knows(manager) {
                            next.push(manager.to_owned());
                        }
                    }
                    None => people.add_user(id, None),
                }
            }
            next.sort();
            next.dedup();
            wanted = next;
        }
        if needs.approvers {
            let approvers = match instance_id {
                Some(id) => self.store.approvers_of(id).await?,
                None => Vec::new(),
            };
            people.set_approvers(approvers);
        }
        Ok(())
    }
}
