//! Identifier and title rules, as Port defines them.
//!
//! - blueprint (and scorecard, action) identifiers: `^(?!\.{1,2}$)[\p{L}0-9@_.+:\\/-]+$`, at most 100 characters;
//! - entity identifiers: the same alphabet plus `=`, at most 1000 characters;
//! - titles: at most 100 characters for blueprints.

use crate::DomainError;

pub const MAX_BLUEPRINT_ID_LEN: usize = 100;
pub const MAX_ENTITY_ID_LEN: usize = 1000;
pub const MAX_TITLE_LEN: usize = 100;
pub const MAX_ENTITY_TITLE_LEN: usize = 1000;

fn allowed_char(c: char, allow_equals: bool) -> bool {
    c.is_alphabetic()
        || c.is_ascii_digit()
        || matches!(c, '@' | '_' | '.' | '+' | ':' | '\\' | '/' | '-')
        || (allow_equals && c == '=')
}

fn check(kind: &'static str, id: &str, max: usize, allow_equals: bool) -> Result<(), DomainError> {
    let invalid = |reason: String| DomainError::InvalidIdentifier { kind, identifier: truncate(id, 120), reason };
    if id.is_empty() {
        return Err(invalid("it must not be empty".into()));
    }
    let len = id.chars().count();
    if len > max {
        return Err(invalid(format!("it has {len} characters, the limit is {max}")));
    }
    if id == "." || id == ".." {
        return Err(invalid("`.` and `..` are reserved".into()));
    }
    if let Some(c) = id.chars().find(|c| !allowed_char(*c, allow_equals)) {
        return Err(invalid(format!(
            "character {c:?} is not allowed (letters, digits and @ _ . + : \\ / -{} only)",
            if allow_equals { " =" } else { "" }
        )));
    }
    Ok(())
}

/// Validates a blueprint identifier (also used for relation and property keys).
pub fn validate_blueprint_id(id: &str) -> Result<(), DomainError> {
    check("blueprint", id, MAX_BLUEPRINT_ID_LEN, false)
}

/// Validates a property or relation key of a blueprint.
pub fn validate_key(kind: &'static str, id: &str) -> Result<(), DomainError> {
    check(kind, id, MAX_BLUEPRINT_ID_LEN, false)
}

/// Validates an entity identifier.
pub fn validate_entity_id(id: &str) -> Result<(), DomainError> {
    check("entity", id, MAX_ENTITY_ID_LEN, true)
}

/// Validates a title against a length limit.
pub fn validate_title(kind: &'static str, title: &str, max: usize) -> Result<(), DomainError> {
    let len = title.chars().count();
    if len > max {
        return Err(DomainError::Invalid(format!("{kind} title has {len} characters, the limit is {max}")));
    }
    Ok(())
}

/// Cuts a string to at most `max` characters, for error messages.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_port_examples() {
        for id in ["service", "my-svc_1", "a/b/c", "user@example.com", "ns:name", "Ünïcode", "a.b", "..."] {
            assert!(validate_entity_id(id).is_ok(), "{id}");
        }
        assert!(validate_entity_id("k=v").is_ok());
        assert!(validate_blueprint_id("k=v").is_err());
    }

    #[test]
    fn rejects_bad_ids() {
        for id in ["", ".", "..", "a b", "a#b", "a?b", "tab\t", "quote\""] {
            assert!(validate_entity_id(id).is_err(), "{id:?}");
        }
        assert!(validate_blueprint_id(&"x".repeat(101)).is_err());
        assert!(validate_blueprint_id(&"x".repeat(100)).is_ok());
        assert!(validate_entity_id(&"x".repeat(1000)).is_ok());
        assert!(validate_entity_id(&"x".repeat(1001)).is_err());
    }

    proptest! {
        #[test]
        fn valid_alphabet_is_accepted(id in "[a-zA-Z0-9@_+:/=-][a-zA-Z0-9@_.+:/=-]{0,200}") {
            prop_assert!(validate_entity_id(&id).is_ok());
        }

        #[test]
        fn any_forbidden_char_is_rejected(prefix in "[a-z]{0,10}", bad in "[ #?%&\"'<>{}|^`\\[\\]\t\n]", suffix in "[a-z]{0,10}") {
            let id = format!("{prefix}{bad}{suffix}");
            prop_assert!(validate_entity_id(&id).is_err());
        }

        #[test]
        fn validation_never_panics(id in any::<String>()) {
            let _ = validate_entity_id(&id);
            let _ = validate_blueprint_id(&id);
        }

        #[test]
        fn length_limit_is_in_characters(n in 1usize..1200) {
            let id = "é".repeat(n);
            prop_assert_eq!(validate_entity_id(&id).is_ok(), n <= MAX_ENTITY_ID_LEN);
        }
    }
}
