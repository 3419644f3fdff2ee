//! Server-wide reminder types (UpsertReminderType): a client's type is parsed into a
//! [`ReminderType`] here, every field checked the way ReminderService's contract names it, so the
//! scheduler never meets a zero interval, an unknown channel or an escalation it cannot run.
use super::Workflow;
pub use crate::engine::reminder_rules::EscalationPolicy;
use crate::{
    duration::Duration,
    engine::reminder_rules,
    error::{Error, Result},
    model::{Channel, ReminderType},
};

/// A reminder type as a client sent it, before it is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReminderTypeInput {
    pub id: String,
    pub count: i64,
    /// ISO 8601 as written; may be empty when `interval_secs` is given.
    pub interval: String,
    /// The `interval_duration` alternative, in whole seconds, when the client set it.
    pub interval_secs: Option<i64>,
    /// In fallback order; duplicates are dropped (the first position wins).
    pub channels: Vec<Channel>,
    pub escalation: String,
}

/// An interval in milliseconds as ISO 8601 ("PT4H", "P1DT30M", "P2W").
pub fn interval_text(interval_ms: i64) -> String {
    Duration::from_ms(interval_ms).to_string()
}

/// The rules are [`reminder_rules`], shared with reminder types declared in definitions.
fn check_id(id: &str) -> Result<()> {
    reminder_rules::check_id(id).map_err(|reason| Error::invalid("reminder_type.id", reason))
}

fn check_interval(text: &str, secs: Option<i64>) -> Result<i64> {
    let field = "reminder_type.interval";
    let text = text.trim();
    let from_text = if text.is_empty() {
        None
    } else {
        Some(
            Duration::parse(text)
                .map_err(|reason| Error::invalid(field, reason))?
                .secs(),
        )
    };
    let from_duration = match secs {
        None => None,
        Some(secs) => Some(
            u64::try_from(secs)
                .map_err(|_| Error::invalid(field, "interval_duration must not be negative"))?,
        ),
    };
    let secs = match (from_text, from_duration) {
        (None, None) => {
            return Err(Error::invalid(
                field,
                "required: an ISO 8601 duration such as PT4H (or interval_duration)",
            ));
        }
        (Some(a), Some(b)) if a != b => {
            return Err(Error::invalid(
                field,
                format!("'{text}' is {a} s but interval_duration is {b} s"),
            ));
        }
        (Some(s), _) | (None, Some(s)) => s,
    };
    let secs = reminder_rules::check_interval_secs(secs).map_err(|r| Error::invalid(field, r))?;
    // At most 366 days in milliseconds: far inside i64.
    i64::try_from(secs * 1000).map_err(|_| Error::invalid(field, "too long"))
}

fn dedup_channels(channels: &[Channel]) -> Result<Vec<Channel>> {
    let mut unique = Vec::with_capacity(channels.len());
    for channel in channels {
        if !unique.contains(channel) {
            unique.push(*channel);
        }
    }
    if unique.is_empty() {
        return Err(Error::invalid(
            "reminder_type.channels",
            "at least one of CHANNEL_INBOX, CHANNEL_EMAIL, CHANNEL_SMS",
        ));
    }
    Ok(unique)
}

impl Workflow {
    /// Creates or replaces a server-wide reminder type. Reminders already armed keep the count,
    /// interval, channels and escalation they were armed with (they carry copies).
    pub async fn upsert_reminder_type(&self, input: ReminderTypeInput) -> Result<ReminderType> {
        check_id(&input.id)?;
        reminder_rules::check_count(input.count)
            .map_err(|reason| Error::invalid("reminder_type.count", reason))?;
        let interval_ms = check_interval(&input.interval, input.interval_secs)?;
        let channels = dedup_channels(&input.channels)?;
        let escalation = EscalationPolicy::parse(&input.escalation)
            .map_err(|reason| Error::invalid("reminder_type.escalation", reason))?;
        if let EscalationPolicy::Notify(user) = &escalation
            && self.store.user(user).await?.is_none()
        {
            return Err(Error::invalid(
                "reminder_type.escalation",
                format!("notify:{user} names an unknown user"),
            ));
        }
        let reminder_type = ReminderType {
            id: input.id,
            count: input.count,
            interval_ms,
            channels,
            escalation,
            source: "server".into(),
            updated_at: self.now(),
        };
        self.store.upsert_reminder_type(&reminder_type).await?;
        Ok(reminder_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_print_as_iso_8601() {
        assert_eq!(interval_text(14_400_000), "PT4H");
        assert_eq!(interval_text(1_209_600_000), "P2W");
    }

    #[test]
    fn intervals_are_checked_and_name_the_field() {
        assert_eq!(check_interval("PT4H", None).unwrap(), 14_400_000);
        assert_eq!(check_interval("", Some(2)).unwrap(), 2_000);
        assert_eq!(check_interval("PT1M", Some(60)).unwrap(), 60_000);
        for (text, secs) in [
            ("", None),
            ("PT0S", None),
            ("P1M", None),
            ("P1Y", None),
            ("4 hours", None),
            ("PT1M", Some(61)),
            ("", Some(0)),
            ("", Some(-5)),
            ("P400D", None),
        ] {
            let err = check_interval(text, secs).unwrap_err();
            assert!(
                err.to_string().starts_with("reminder_type.interval:"),
                "{text:?} {secs:?}: {err}"
            );
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("urgent-2.v_1").is_ok());
        for bad in ["", "has space", "催办", &"x".repeat(65)] {
            let err = check_id(bad).unwrap_err();
            assert!(err.to_string().starts_with("reminder_type.id:"), "{err}");
        }
    }
}
