//! The one set of rules a reminder type obeys, wherever it comes from: a client's
//! UpsertReminderType (`workflow::reminder_types`) or a `<replyflow:reminderType>` declared in a
//! definition (`engine::definition`). Before there was one validator per source and the
//! definition's accepted `count="1000000"`: a mail or SMS every second for days. Reasons are
//! plain text; each caller names the field or element.

/// At most this many reminders per type (the ReminderService contract's 1..100).
pub const MAX_COUNT: i64 = 100;
/// The longest interval accepted. The contract sets no upper bound; this one keeps
/// `next_fire_at` arithmetic far from overflow while allowing anything an OA would chase with.
pub const MAX_INTERVAL_SECS: u64 = 366 * 86_400;
/// The longest reminder type id.
pub const MAX_ID_CHARS: usize = 64;

/// A reminder type id: 1..64 of letters, digits, `-`, `_`, `.`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("required".to_owned());
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!("at most {MAX_ID_CHARS} characters"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{bad:?} is not allowed: use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// How many reminders a type sends before escalating: 1 to [`MAX_COUNT`].
pub fn check_count(count: i64) -> Result<u32, String> {
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(format!("must be 1 to {MAX_COUNT}, not {count}"));
    }
    u32::try_from(count).map_err(|_| format!("must be 1 to {MAX_COUNT}, not {count}"))
}

/// The time between two reminders, in seconds: one second to [`MAX_INTERVAL_SECS`].
pub fn check_interval_secs(secs: u64) -> Result<u64, String> {
    if secs < 1 {
        return Err("must be at least one second (PT1S)".to_owned());
    }
    if secs > MAX_INTERVAL_SECS {
        return Err("must be at most 366 days (P366D)".to_owned());
    }
    Ok(secs)
}

/// What runs when a reminder's count is used up (DESIGN §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EscalationPolicy {
    None,
    NotifyManager,
    Notify(String),
    ReassignManager,
    Complete(String),
}

impl EscalationPolicy {
    /// Reads a policy as written ("" means none). A user or outcome id is only checked for
    /// shape here; whether the user exists is the caller's question.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let named = |rest: &str, what: &str| {
            if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(format!(
                    "'{text}': the {what} id is missing or contains spaces"
                ))
            } else {
                Ok(rest.to_string())
            }
        };
        match text {
            "" | "none" => Ok(Self::None),
            "notify-manager" => Ok(Self::NotifyManager),
            "reassign-manager" => Ok(Self::ReassignManager),
            _ => {
                if let Some(user) = text.strip_prefix("notify:") {
                    named(user, "user").map(Self::Notify)
                } else if let Some(outcome) = text.strip_prefix("complete:") {
                    named(outcome, "outcome").map(Self::Complete)
                } else {
                    Err(format!(
                        "'{text}' is not one of notify-manager, notify:<user id>, \
                         reassign-manager, complete:<outcome id>, none"
                    ))
                }
            }
        }
    }

    /// The policy as stored and shown.
    pub fn as_text(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::NotifyManager => "notify-manager".into(),
            Self::Notify(user) => format!("notify:{user}"),
            Self::ReassignManager => "reassign-manager".into(),
            Self::Complete(outcome) => format!("complete:{outcome}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_policies_parse_and_print_back() {
        for text in [
            "none",
            "notify-manager",
            "reassign-manager",
            "notify:ceo",
            "complete:approve",
        ] {
            assert_eq!(EscalationPolicy::parse(text).unwrap().as_text(), text);
        }
        assert_eq!(EscalationPolicy::parse("").unwrap(), EscalationPolicy::None);
        assert_eq!(
            EscalationPolicy::parse(" notify:ceo ").unwrap(),
            EscalationPolicy::Notify("ceo".into())
        );
        for bad in [
            "notify:",
            "complete:",
            "notify:a b",
            "escalate",
            "notify-boss",
        ] {
            assert!(EscalationPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counts_and_intervals_have_bounds() {
        assert_eq!(check_count(1), Ok(1));
        assert_eq!(check_count(100), Ok(100));
        for bad in [0, -1, 101, 1_000_000] {
            assert!(check_count(bad).is_err(), "{bad}");
        }
        assert!(check_interval_secs(0).is_err());
        assert!(check_interval_secs(MAX_INTERVAL_SECS + 1).is_err());
        assert_eq!(check_interval_secs(60), Ok(60));
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("urgent-2.v_1").is_ok());
        for bad in ["", "has space", "催办", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }
}
