//! Scorecards, as Port defines them: levels (Basic, Bronze, Silver, Gold by default) and rules, each rule a
//! rules-language query (`{combinator, conditions}`) an entity passes or fails, tied to a level. An entity
//! reaches a level when it passes every rule of that level and of every level below it; the first level
//! has no rules and is where every entity starts. An optional `filter` says which entities the scorecard
//! applies to.
//!
//! A level without rules is reached with the level below it (so a scorecard without rules puts every entity
//! at its top level).
//!
//! A scorecard is a definition object of its blueprint: [`Scorecard::parse`] checks a body and answers the
//! scorecard with its queries parsed, and the body normalized (default levels filled in).

use serde_json::{Value, json};

use crate::DomainError;
use crate::query::Query;

/// A level: its title and colour.
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    pub title: String,
    pub color: String,
}

/// One rule: passed when the entity matches `query`.
#[derive(Clone, Debug)]
pub struct ScorecardRule {
    pub identifier: String,
    pub title: String,
    /// The level the rule belongs to (never the first one).
    pub level: String,
    pub query: Query,
}

#[derive(Clone, Debug)]
pub struct Scorecard {
    pub identifier: String,
    pub title: String,
    pub blueprint: String,
    pub filter: Option<Query>,
    pub levels: Vec<Level>,
    pub rules: Vec<ScorecardRule>,
}

/// The most rules and levels one scorecard holds.
pub const MAX_RULES: usize = 100;
pub const MAX_LEVELS: usize = 10;

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
}

fn text(v: Option<&Value>, what: &str, max: usize) -> Result<String, DomainError> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => Ok(s.clone()),
        Some(Value::String(_)) | None => Err(invalid(format!("{what} is a string of 1 to {max} characters"))),
        Some(_) => Err(invalid(format!("{what} is a string"))),
    }
}

fn query(v: &Value, what: &str) -> Result<Query, DomainError> {
    crate::query_context::parse_for(v, None).map_err(|e| invalid(format!("{what}: {} ({})", e.message, e.path)))
}

/// Port's default levels.
pub fn default_levels() -> Value {
    json!([{"title": "Basic", "color": "paleBlue"}, {"title": "Bronze", "color": "bronze"},
        {"title": "Silver", "color": "silver"}, {"title": "Gold", "color": "gold"}])
}

impl Scorecard {
    /// Checks a scorecard body of `blueprint` (identifier given apart) and answers it parsed, with the body
    /// normalized: default levels filled in.
    pub fn parse(blueprint: &str, identifier: &str, body: &Value) -> Result<(Scorecard, Value), DomainError> {
        let mut body = body.clone();
        let Some(map) = body.as_object_mut() else { return Err(invalid("a scorecard is a JSON object")) };
        let title = text(map.get("title"), "a scorecard's `title`", 200)?;
        if map.get("levels").is_none_or(Value::is_null) {
            map.insert("levels".into(), default_levels());
        }
        let levels = match map.get("levels") {
            Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_LEVELS => items
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    Ok(Level {
                        title: text(l.get("title"), &format!("level {i}'s `title`"), 100)?,
                        color: text(l.get("color"), &format!("level {i}'s `color`"), 50)?,
                    })
                })
                .collect::<Result<Vec<_>, DomainError>>()?,
            _ => return Err(invalid(format!("`levels` is a list of 1 to {MAX_LEVELS} levels {{title, color}}"))),
        };
        for (i, l) in levels.iter().enumerate() {
            if levels[..i].iter().any(|o| o.title == l.title) {
                return Err(invalid(format!("two levels are titled `{}`", l.title)));
            }
        }
        let filter = match map.get("filter") {
            None | Some(Value::Null) => None,
            Some(f) => Some(query(f, "`filter`")?),
        };
        let rules = match map.get("rules") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= MAX_RULES => items
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let identifier = text(r.get("identifier"), &format!("rule {i}'s `identifier`"), 100)?;
                    crate::ids::validate_key("rule", &identifier)?;
                    let level = text(r.get("level"), &format!("rule `{identifier}`'s `level`"), 100)?;
                    match levels.iter().position(|l| l.title == level) {
                        None => {
                            return Err(invalid(format!(
                                "rule `{identifier}`'s level `{level}` is not a level of the scorecard"
                            )));
                        }
                        Some(0) => {
                            return Err(invalid(format!(
                                "rule `{identifier}` cannot be of the first level `{level}`: every entity starts there"
                            )));
                        }
                        Some(_) => {}
                    }
                    let query = match r.get("query") {
                        Some(q) => query(q, &format!("rule `{identifier}`'s `query`"))?,
                        None => return Err(invalid(format!("rule `{identifier}` needs a `query`"))),
                    };
                    Ok(ScorecardRule {
                        title: text(r.get("title"), &format!("rule `{identifier}`'s `title`"), 200)?,
                        identifier,
                        level,
                        query,
                    })
                })
                .collect::<Result<Vec<_>, DomainError>>()?,
            _ => return Err(invalid(format!("`rules` is a list of at most {MAX_RULES} rules"))),
        };
        for (i, r) in rules.iter().enumerate() {
            if rules[..i].iter().any(|o| o.identifier == r.identifier) {
                return Err(invalid(format!("two rules have the identifier `{}`", r.identifier)));
            }
        }
        map.remove("blueprint");
        let scorecard = Scorecard {
            identifier: identifier.to_string(),
            title,
            blueprint: blueprint.to_string(),
            filter,
            levels,
            rules,
        };
        Ok((scorecard, body))
    }

    /// The level an entity reaches given which rules it passes (`passed(rule index)`): the highest level
    /// whose rules, and those of every level below, all pass.
    pub fn level_of(&self, passed: impl Fn(usize) -> bool) -> &str {
        let mut reached = 0;
        for (li, level) in self.levels.iter().enumerate().skip(1) {
            let all = self.rules.iter().enumerate().filter(|(_, r)| r.level == level.title).all(|(i, _)| passed(i));
            if !all {
                break;
            }
            reached = li;
        }
        &self.levels[reached].title
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ownership() -> Value {
        json!({"title": "Ownership", "rules": [
            {"identifier": "has-team", "title": "Has team", "level": "Bronze",
             "query": {"combinator": "and", "conditions": [{"operator": "isNotEmpty", "property": "$team"}]}},
            {"identifier": "has-docs", "title": "Has docs", "level": "Silver",
             "query": {"combinator": "and", "conditions": [{"operator": "isNotEmpty", "property": "docs"}]}},
            {"identifier": "on-call", "title": "On call", "level": "Gold",
             "query": {"combinator": "and", "conditions": [{"operator": "=", "property": "onCall", "value": true}]}}]})
    }

    #[test]
    fn default_levels_and_the_level_hierarchy() {
        let (s, body) = Scorecard::parse("service", "ownership", &ownership()).expect("parses");
        assert_eq!(body["levels"], default_levels());
        assert_eq!(s.level_of(|_| false), "Basic");
        assert_eq!(s.level_of(|i| i == 0), "Bronze");
        assert_eq!(s.level_of(|i| i <= 1), "Silver");
        assert_eq!(s.level_of(|_| true), "Gold");
        assert_eq!(s.level_of(|i| i != 1), "Bronze", "a failed Silver rule caps the level, whatever passes above");
    }

    proptest::proptest! {
        /// Any JSON is a scorecard or a clear refusal, never a panic; what is accepted is consistent: levels
        /// exist and are distinct, every rule's level is one of them and not the first.
        #[test]
        fn any_body_parses_or_is_refused(
            title in proptest::option::of("\\PC{0,8}"),
            levels in proptest::option::of(proptest::collection::vec(("[A-C]{0,2}", "[a-z]{0,3}"), 0..5)),
            rules in proptest::collection::vec(("[a-c]{0,2}", "[A-D]{0,2}", proptest::bool::ANY), 0..6),
        ) {
            let mut body = json!({});
            if let Some(t) = title { body["title"] = json!(t); }
            if let Some(ls) = levels {
                body["levels"] = Value::Array(ls.iter().map(|(t, c)| json!({"title": t, "color": c})).collect());
            }
            body["rules"] = Value::Array(rules.iter().map(|(id, level, good)| json!({"identifier": id, "title": "R", "level": level,
                "query": if *good { json!({"combinator": "and", "conditions": []}) } else { json!({"combinator": 1}) }})).collect());
            if let Ok((card, normalized)) = Scorecard::parse("svc", "c", &body) {
                proptest::prop_assert!(!card.levels.is_empty());
                proptest::prop_assert!(normalized["levels"].is_array());
                for r in &card.rules {
                    let at = card.levels.iter().position(|l| l.title == r.level);
                    proptest::prop_assert!(at.is_some_and(|i| i > 0));
                }
                let top = card.level_of(|_| true);
                proptest::prop_assert!(card.levels.iter().any(|l| l.title == top));
            }
        }
    }

    #[test]
    fn bad_scorecards_say_what_is_wrong() {
        let with = |f: &dyn Fn(&mut Value)| {
            let mut b = ownership();
            f(&mut b);
            Scorecard::parse("service", "ownership", &b).expect_err("refused").to_string()
        };
        assert!(with(&|b| b["rules"][0]["level"] = json!("Basic")).contains("first level"));
        assert!(with(&|b| b["rules"][0]["level"] = json!("Platinum")).contains("not a level"));
        assert!(with(&|b| b["rules"][1]["identifier"] = json!("has-team")).contains("two rules"));
        assert!(with(&|b| b["rules"][0]["query"] = json!({"combinator": "xor", "conditions": []})).contains("query"));
        assert!(with(&|b| b["title"] = json!("")).contains("title"));
        assert!(
            with(&|b| b["levels"] = json!([{"title": "A", "color": "red"}, {"title": "A", "color": "blue"}]))
                .contains("two levels")
        );
        assert!(with(&|b| b["levels"] = json!([])).contains("levels"));
    }
}
