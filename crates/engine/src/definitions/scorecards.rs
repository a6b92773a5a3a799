//! Scorecards (Port's `/v1/blueprints/{bp}/scorecards`): a scorecard of a blueprint is kept under the key
//! `{blueprint}#{identifier}`; its body is checked by [`berth_model::scorecard::Scorecard::parse`] and its
//! queries against the blueprint's properties and relations.

use berth_model::DomainError;
use berth_model::definition::split_scorecard_key;
use berth_model::scorecard::Scorecard;
use serde_json::Value;

use crate::State;

/// The most scorecards one blueprint has.
pub const MAX_PER_BLUEPRINT: usize = 100;

/// Refuses one more scorecard for a blueprint that has [`MAX_PER_BLUEPRINT`] (`key` a new one's).
pub(crate) fn check_room(state: &State, key: &str) -> Result<(), DomainError> {
    let Some((blueprint, _)) = split_scorecard_key(key) else { return Ok(()) };
    if count_of(state, blueprint) >= MAX_PER_BLUEPRINT {
        return Err(DomainError::Invalid(format!(
            "blueprint `{blueprint}` has {MAX_PER_BLUEPRINT} scorecards, the most one blueprint may have"
        )));
    }
    Ok(())
}

/// How many scorecards `blueprint` has.
fn count_of(state: &State, blueprint: &str) -> usize {
    state
        .definitions(berth_model::DefinitionKind::Scorecard)
        .filter(|d| split_scorecard_key(&d.identifier).is_some_and(|(bp, _)| bp == blueprint))
        .count()
}

/// Checks a scorecard body kept under `key` and answers it normalized (default levels).
pub fn check(state: &State, key: &str, body: Value) -> Result<Value, DomainError> {
    let Some((blueprint, identifier)) = split_scorecard_key(key) else {
        return Err(DomainError::Invalid(format!("scorecard key {key:?} is not `blueprint#identifier`")));
    };
    if state.blueprint(blueprint).is_none() {
        return Err(DomainError::not_found("blueprint", blueprint));
    }

    let (scorecard, body) = Scorecard::parse(blueprint, identifier, &body)?;
    let queries = scorecard.filter.iter().chain(scorecard.rules.iter().map(|r| &r.query));
    for q in queries {
        // A name the blueprint does not have is the definition's fault: a 422, like any bad body.
        crate::search::check_against(state, blueprint, q).map_err(|e| DomainError::Invalid(e.to_string()))?;
    }
    Ok(body)
}

/// Every scorecard of `blueprint`, parsed (a stored one that no longer parses, after a blueprint change,
/// is left out rather than judged wrongly).
pub fn of_blueprint(state: &State, blueprint: &str) -> Vec<Scorecard> {
    state
        .definitions(berth_model::DefinitionKind::Scorecard)
        .filter_map(|d| {
            let (bp, id) = split_scorecard_key(&d.identifier)?;
            (bp == blueprint).then(|| Scorecard::parse(bp, id, &d.body).ok().map(|(s, _)| s)).flatten()
        })
        .collect()
}

/// The changes that make `blueprint`'s scorecards exactly `wanted` (identifier, body): each created or
/// replaced, every other one deleted; all of them or, if one is refused, none.
pub(crate) fn replace_all(
    state: &State,
    meta: &crate::command::WriteMeta,
    blueprint: &str,
    wanted: &[(String, Value)],
) -> Result<(Vec<berth_model::Change>, crate::command::Outcome), DomainError> {
    use berth_model::definition::scorecard_key;
    if state.blueprint(blueprint).is_none() {
        return Err(DomainError::not_found("blueprint", blueprint));
    }
    if wanted.len() > MAX_PER_BLUEPRINT {
        return Err(DomainError::Invalid(format!(
            "{} scorecards given; a blueprint has at most {MAX_PER_BLUEPRINT}",
            wanted.len()
        )));
    }
    let mut changes = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for (identifier, body) in wanted {
        let key = scorecard_key(blueprint, identifier);
        if !keys.insert(key.clone()) {
            return Err(DomainError::Invalid(format!("scorecard `{identifier}` is listed twice")));
        }
        let how = super::DefinitionWrite::Upsert(body.clone());
        // The blueprint's count is checked on the whole list (above), not one by one.
        let (mut one, _) = super::write_with(state, meta, berth_model::DefinitionKind::Scorecard, &key, &how, false)?;
        changes.append(&mut one);
    }
    for d in state.definitions(berth_model::DefinitionKind::Scorecard) {
        let ours = split_scorecard_key(&d.identifier).is_some_and(|(bp, _)| bp == blueprint);
        if ours && !keys.contains(&d.identifier) {
            changes.push(berth_model::Change::DefinitionDeleted { kind: d.kind, identifier: d.identifier.clone() });
        }
    }
    Ok((changes, crate::command::Outcome::Done))
}
