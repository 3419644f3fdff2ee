//! Checks of a parsed process that protect what comes after it: names that reach mail and OA
//! screens, and variables a completion may write (DESIGN §12). Kept apart from the parser.
use std::collections::HashSet;

use super::{NodeKind, ProcessBuilder};

impl ProcessBuilder {
    /// Names and labels reach mail subjects, bodies and OA screens: one line, no bidi tricks.
    pub(super) fn check_names(&mut self) {
        let mut problems = Vec::new();
        let process_name = (self.key.clone(), "name", self.name.clone());
        for (id, what, text) in
            std::iter::once(process_name).chain(self.nodes.iter().flat_map(|node| {
                let outcomes = match &node.kind {
                    NodeKind::UserTask(spec) => spec
                        .outcomes
                        .iter()
                        .flat_map(|o| {
                            [
                                ("outcome id", o.id.clone()),
                                ("outcome label", o.label.clone()),
                            ]
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                std::iter::once(("name", node.name.clone()))
                    .chain(outcomes)
                    .map(|(what, text)| (node.id.clone(), what, text))
                    .collect::<Vec<_>>()
            }))
        {
            if let Some(reason) =
                crate::bounds::single_line_problem(&text, crate::bounds::MAX_NAME_LEN)
            {
                problems.push((id, format!("{what}: {reason}")));
            }
        }
        for (id, reason) in problems {
            self.error(&id, reason);
        }
    }

    /// Variables are not a back door (DESIGN §12): a completion may not rewrite an activity's
    /// record, the initiator, `outcome`, or whose task comes next.
    pub(super) fn check_writable(&mut self) {
        let activity_ids: HashSet<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let assignee_vars: HashSet<String> = self
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::UserTask(spec) => Some(spec.assignee.variables()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut problems = Vec::new();
        for node in &self.nodes {
            let NodeKind::UserTask(spec) = &node.kind else {
                continue;
            };
            for name in &spec.writable {
                let why = if activity_ids.contains(name) {
                    "is an activity's record"
                } else if name == "initiator" || name == "outcome" {
                    "is set by the engine"
                } else if assignee_vars.contains(name) {
                    "chooses an assignee"
                } else {
                    continue;
                };
                problems.push((
                    node.id.clone(),
                    format!("replyflow:writable: {name:?} {why} and can never be written"),
                ));
            }
        }
        for (id, reason) in problems {
            self.error(&id, reason);
        }
    }
}
