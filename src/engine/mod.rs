//! The workflow rules, free of I/O: definitions are parsed and validated once into a graph
//! ([`definition`]), conditions are CEL programs ([`condition`]), and [`runtime`] moves tokens:
//! given an instance's state and one action it returns the whole [`runtime::Transition`] that the
//! store then writes in one transaction. No tonic, no sqlx here: data in, decisions out.
pub mod assignee;
#[cfg(test)]
mod assignee_tests;
pub mod condition;
pub mod condition_limits;
pub mod definition;
pub mod loops;
pub mod multi;
#[cfg(test)]
mod multi_tests;
pub mod recall;
pub mod reminder_rules;
pub mod reminders;
pub mod runtime;
