//! A subscription's dead letters, changed as one write of its definition (the worker records them; an
//! administrator marks them for retry or drops them, from the API or the UI).

use berth_catalog::Pipeline;
use berth_engine::WriteMeta;
use berth_model::subscription::{DeadLetter, MAX_DEAD_LETTERS, Subscription};
use berth_model::{DefinitionKind, DomainError};
use serde_json::json;

/// Why dead letters were not changed.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Pipeline(#[from] berth_catalog::PipelineError),
}

/// Changes subscription `id`'s dead letters by `edit` as `meta`'s writer (the oldest dropped, and counted,
/// past [`MAX_DEAD_LETTERS`]); the list as written.
pub async fn edit(
    pipeline: &Pipeline,
    meta: WriteMeta,
    id: &str,
    edit: impl FnOnce(&mut Vec<DeadLetter>),
) -> Result<Vec<DeadLetter>, EditError> {
    let view = pipeline.view();
    let d =
        view.definition(DefinitionKind::Subscription, id).ok_or_else(|| DomainError::not_found("subscription", id))?;
    let current = Subscription::parse(&d.body)?;
    let mut list = current.dead_letters;
    edit(&mut list);
    let over = list.len().saturating_sub(MAX_DEAD_LETTERS);
    list.drain(..over);
    let mut changes = serde_json::Map::new();
    changes
        .insert("deadLetters".into(), serde_json::to_value(&list).map_err(|e| DomainError::Internal(e.to_string()))?);
    changes.insert("deadLettersDropped".into(), json!(current.dead_letters_dropped + over as u64));
    let command = berth_engine::Command::WriteDefinition {
        kind: DefinitionKind::Subscription,
        identifier: id.to_string(),
        how: berth_engine::definitions::DefinitionWrite::Merge(changes),
    };
    let (outcome, _) = pipeline.write_one(meta, command).await?;
    outcome?;
    Ok(list)
}

/// Marks the dead letters of `seqs` (all, when `None`) for retry.
pub fn mark_for_retry(list: &mut [DeadLetter], seqs: Option<&[u64]>) {
    for l in list.iter_mut().filter(|l| seqs.is_none_or(|s| s.contains(&l.seq))) {
        l.retry = true;
    }
}

/// Drops the dead letters of `seqs` (all, when `None`).
pub fn drop_letters(list: &mut Vec<DeadLetter>, seqs: Option<&[u64]>) {
    list.retain(|l| seqs.is_some_and(|s| !s.contains(&l.seq)));
}
