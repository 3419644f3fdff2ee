//! Bounds on text that comes from outside (callers, definitions, mail): one home for "how long may
//! a name be" and "which characters are refused", so that the API, the definition parser and the
//! reply reader agree. Control characters break logs and mail headers; bidirectional overrides
//! (U+202A..U+202E, U+2066..U+2069) make a name read differently from what it is ("Trojan
//! Source"), which matters when an approver decides from a name in a mail.
use crate::error::{Error, Result};

/// User ids, definition keys, activity ids, request ids, business keys.
pub const MAX_ID_LEN: usize = 200;
/// Display names, task and process names.
pub const MAX_NAME_LEN: usize = 200;
/// Comments and reasons written by people, in bytes (10,000 CJK characters).
pub const MAX_COMMENT_LEN: usize = 30_000;

/// Bidirectional formatting characters that reorder how text is displayed.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Why `value` is not acceptable as a single-line text of at most `max` bytes, if it is not.
pub fn single_line_problem(value: &str, max: usize) -> Option<String> {
    if value.len() > max {
        return Some(format!("at most {max} bytes (got {})", value.len()));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || is_bidi_control(*c))
    {
        return Some(format!(
            "control or bidirectional formatting character U+{:04X} not allowed",
            u32::from(c)
        ));
    }
    None
}

/// A single-line field (id, name): no control or bidi characters, at most `max` bytes.
/// Empty is allowed here; say `required` separately where it is.
pub fn check_line(field: &str, value: &str, max: usize) -> Result<()> {
    match single_line_problem(value, max) {
        Some(reason) => Err(Error::invalid(field, reason)),
        None => Ok(()),
    }
}

/// A multi-line text (comment): line breaks and tabs allowed, other controls and bidi refused.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("at most {max} bytes (got {})", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| (c.is_control() && !matches!(c, '\n' | '\r' | '\t')) || is_bidi_control(*c))
    {
        return Err(Error::invalid(
            field,
            format!(
                "control or bidirectional formatting character U+{:04X} not allowed",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_controls_bidi_and_length() {
        assert!(check_line("user.id", "mary", MAX_ID_LEN).is_ok());
        assert!(check_line("user.id", "玛丽", MAX_ID_LEN).is_ok());
        let err = check_line("user.id", "ma\u{202E}ry", MAX_ID_LEN).unwrap_err();
        assert!(err.to_string().starts_with("user.id: "), "{err}");
        assert!(err.to_string().contains("U+202E"), "{err}");
        assert!(check_line("user.name", "a\nb", MAX_NAME_LEN).is_err());
        assert!(check_line("user.id", &"x".repeat(201), MAX_ID_LEN).is_err());
    }

    #[test]
    fn comments_keep_line_breaks_but_not_other_controls() {
        assert!(check_text("comment", "同意\r\n预算内\t", MAX_COMMENT_LEN).is_ok());
        assert!(check_text("comment", "a\u{0}b", MAX_COMMENT_LEN).is_err());
        assert!(check_text("comment", "a\u{2067}b", MAX_COMMENT_LEN).is_err());
    }
}
