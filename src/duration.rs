//! Durations (ISO 8601: `PT4H`, `P3D`, `P1DT2H`, `P2W`): one type and one parser for every
//! duration the server reads — reminder intervals, `replyflow:validFor`, the `mail.*`,
//! `reminders.*` and `sms.*` keys, UpsertReminderType. Text is parsed where it enters (the
//! definition parser, the configuration, the API) and only the parsed value travels after, so a
//! bad duration is refused there, naming its field, and never re-read (or guessed) downstream.
//! Years and months are refused: their length depends on the calendar, and an interval should not.
use std::fmt;

/// A duration in whole seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    secs: u64,
}

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self { secs }
    }

    /// A stored duration in milliseconds; stored durations are whole seconds (a negative one
    /// is zero).
    pub fn from_ms(ms: i64) -> Self {
        Self::from_secs(u64::try_from(ms.max(0) / 1000).unwrap_or(0))
    }

    /// Parses an ISO 8601 duration made of weeks, days, hours, minutes and whole seconds. The
    /// error says what is wrong with `text`; the caller adds which field it came from.
    pub fn parse(text: &str) -> Result<Self, String> {
        let not_a_duration =
            || format!("'{text}' is not an ISO 8601 duration such as PT4H, P3D or P1DT2H");
        let rest = text.strip_prefix('P').ok_or_else(not_a_duration)?;
        let (date, time) = match rest.split_once('T') {
            Some((date, time)) => (date, Some(time)),
            None => (rest, None),
        };
        let mut components = 0;
        let mut total = components_secs(date, &[('W', 604_800), ('D', 86_400)], &mut components)
            .map_err(|reason| reason.unwrap_or_else(not_a_duration))?;
        if let Some(time) = time {
            if time.is_empty() {
                return Err(not_a_duration());
            }
            let seconds =
                components_secs(time, &[('H', 3_600), ('M', 60), ('S', 1)], &mut components)
                    .map_err(|reason| reason.unwrap_or_else(not_a_duration))?;
            total = total
                .checked_add(seconds)
                .ok_or_else(|| format!("'{text}' is too long"))?;
        }
        if components == 0 {
            return Err(not_a_duration());
        }
        // Every duration becomes an i64 of milliseconds somewhere (timestamps, stored intervals).
        if total > i64::MAX as u64 / 1000 {
            return Err(format!("'{text}' is too long"));
        }
        Ok(Self::from_secs(total))
    }

    pub const fn secs(self) -> u64 {
        self.secs
    }

    /// In milliseconds, the unit of every timestamp and stored interval.
    pub fn ms(self) -> i64 {
        i64::try_from(self.secs)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000)
    }

    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }
}

/// ISO 8601 ("PT4H", "P1DT30M", "P2W"), exact since durations are whole seconds; weeks only when
/// nothing else is needed, since ISO 8601 does not combine W with other units.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.secs;
        if secs == 0 {
            return f.write_str("PT0S");
        }
        if secs.is_multiple_of(604_800) {
            return write!(f, "P{}W", secs / 604_800);
        }
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let (hours, minutes, seconds) = (rest / 3_600, rest % 3_600 / 60, rest % 60);
        f.write_str("P")?;
        if days > 0 {
            write!(f, "{days}D")?;
        }
        if rest > 0 {
            f.write_str("T")?;
            for (amount, unit) in [(hours, 'H'), (minutes, 'M'), (seconds, 'S')] {
                if amount > 0 {
                    write!(f, "{amount}{unit}")?;
                }
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

/// Sums `<digits><unit>` pairs whose units appear in `units` order. `Err(None)` means "not a
/// duration"; `Err(Some(reason))` carries a more precise reason.
fn components_secs(
    text: &str,
    units: &[(char, u64)],
    components: &mut usize,
) -> Result<u64, Option<String>> {
    let mut total: u64 = 0;
    let mut next_unit = 0;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        if ch == 'Y' || (ch == 'M' && units.first().is_some_and(|(unit, _)| *unit == 'W')) {
            return Err(Some(
                "years and months have no fixed length; use weeks (W) or days (D)".to_owned(),
            ));
        }
        let position = units.iter().position(|(unit, _)| *unit == ch).ok_or(None)?;
        if position < next_unit || digits.is_empty() {
            return Err(None);
        }
        let (_, seconds) = units.get(position).ok_or(None)?;
        let amount: u64 = digits
            .parse()
            .map_err(|_| Some("a number is too large".into()))?;
        total = amount
            .checked_mul(*seconds)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| Some("the duration is too long".to_owned()))?;
        digits.clear();
        next_unit = position + 1;
        *components += 1;
    }
    if digits.is_empty() {
        Ok(total)
    } else {
        Err(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> Result<u64, String> {
        Duration::parse(text).map(Duration::secs)
    }

    #[test]
    fn iso_durations_in_seconds() {
        assert_eq!(secs("PT1S"), Ok(1));
        assert_eq!(secs("PT30M"), Ok(1_800));
        assert_eq!(secs("PT4H"), Ok(14_400));
        assert_eq!(secs("P3D"), Ok(259_200));
        assert_eq!(secs("P1DT2H"), Ok(93_600));
        assert_eq!(secs("P1W"), Ok(604_800));
        assert_eq!(secs("PT0S"), Ok(0));
        assert!(secs("PT1M1H").is_err(), "units out of order");
        assert!(secs("P1D1D").is_err(), "repeated unit");
        assert!(secs("PTH").is_err());
        assert!(secs("P").is_err());
        assert!(secs("PT").is_err());
        assert!(secs("4H").is_err());
        assert!(secs("P99999999999999999999D").is_err());
        assert!(secs("P9999999999999999D").is_err(), "overflow");
        assert!(
            secs("P999999999999999S").is_err(),
            "too long in milliseconds"
        );
        assert!(secs("P1M").unwrap_err().contains("no fixed length"));
        assert_eq!(Duration::parse("PT2M").map(Duration::ms), Ok(120_000));
        assert_eq!(
            Duration::parse("PT5S").map(Duration::to_std),
            Ok(std::time::Duration::from_secs(5))
        );
    }

    #[test]
    fn durations_print_as_iso_8601() {
        let text = |ms: i64| Duration::from_ms(ms).to_string();
        assert_eq!(text(0), "PT0S");
        assert_eq!(text(1_000), "PT1S");
        assert_eq!(text(14_400_000), "PT4H");
        assert_eq!(text(86_400_000), "P1D");
        assert_eq!(text(93_600_000), "P1DT2H");
        assert_eq!(text(5_430_000), "PT1H30M30S");
        assert_eq!(text(1_209_600_000), "P2W");
        for written in [
            "PT1S",
            "PT4H",
            "P1D",
            "P1DT2H",
            "PT1H30M30S",
            "P2W",
            "P3DT5M",
        ] {
            let parsed: Duration = written.parse().expect("a duration");
            assert_eq!(parsed.to_string(), written, "round trip");
        }
    }
}
