//! `/v1/blueprints/{bp}/entities...`: single writes (create / upsert / merge / replace / patch / delete),
//! bulk upsert with per-item results, bulk delete, delete-all, reads with `include` / `exclude`, counts.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_engine::{Command, Outcome, WriteMeta, WriteMode};
use berth_model::{DomainError, Entity, EntityBody};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::blueprints::meta;
use super::render::{self, Projection};
use super::reply;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params, PathParams};
use crate::{AppState, MigrationRecord};

/// The most entities one bulk request may carry (Port: 20).
pub const MAX_BULK: usize = 1000;

/// The blueprint of the route; `entities` on the static route `/v1/blueprints/entities/datasource-entities`,
/// which answers GET / PUT / PATCH / DELETE for the entity `datasource-entities` of a blueprint so named.
fn blueprint_id(params: &PathParams) -> ApiResult<String> {
    if !params.has("bp") {
        return Ok("entities".into());
    }
    params.get("bp")
}

/// The entity id of the route. The static routes `/entities/bulk` and `/entities/search` also answer
/// GET / PUT / PATCH / DELETE for the entities named `bulk` and `search`.
fn entity_id(params: &PathParams, uri: &axum::http::Uri) -> ApiResult<String> {
    if params.has("id") {
        return params.get("id");
    }
    Ok(uri.path().rsplit('/').next().unwrap_or_default().to_string())
}

fn ensure_blueprint(app: &AppState, bp: &str) -> ApiResult<()> {
    if app.pipeline.view().blueprint(bp).is_none() {
        return Err(DomainError::not_found("blueprint", bp).into());
    }
    Ok(())
}

/// The write's metadata; a `run_id` longer than [`berth_model::limits::MAX_RUN_ID_LEN`] is a 400 (it is copied
/// into every event of the write).
fn write_meta(caller: &Caller, headers: &HeaderMap, q: &Params) -> ApiResult<WriteMeta> {
    let run_id = q.get("run_id").filter(|s| !s.is_empty());
    if let Some(r) = run_id.filter(|r| r.len() > berth_model::limits::MAX_RUN_ID_LEN) {
        return Err(ApiError::bad_request(format!(
            "`run_id` is {} bytes; at most {} are accepted",
            r.len(),
            berth_model::limits::MAX_RUN_ID_LEN
        )));
    }
    Ok(meta(caller, headers, run_id.map(str::to_string)))
}

/// Runs one entity command (or validates it only) and answers `{ok, entity}`.
/// Resolves the search queries an entity write holds (identifier, team, relation values) against the
/// published catalog, off the async workers and under the search deadline, so that the single writer never
/// runs a caller's search (the security review's H9). A write whose search fails is refused here, and the
/// refusal is recorded like one the writer makes.
pub(crate) async fn resolve_searches(app: &AppState, meta: &WriteMeta, command: Command) -> ApiResult<Command> {
    let Command::WriteEntity { blueprint, path_id, input, mode, create_missing_related } = command else {
        return Ok(command);
    };
    if !input.uses_search() {
        return Ok(Command::WriteEntity { blueprint, path_id, input, mode, create_missing_related });
    }
    let original = Command::WriteEntity {
        blueprint: blueprint.clone(),
        path_id: path_id.clone(),
        input: input.clone(),
        mode,
        create_missing_related,
    };
    let (view, resolver) = (app.pipeline.view(), meta.clone());
    let resolved = crate::searching::run(app, move || {
        Ok(berth_engine::resolve_searches(&view, &resolver, &blueprint, input).map(|input| Command::WriteEntity {
            blueprint,
            path_id,
            input,
            mode,
            create_missing_related,
        }))
    })
    .await?;
    match resolved {
        Ok(command) => Ok(command),
        Err(e) => {
            if meta.principal.is_some() {
                if let berth_model::Change::Refused { resource, action, blueprint, identifier, message, .. } =
                    original.refusal(&e)
                {
                    let record = Command::Refuse { resource, action, blueprint, identifier, code: e.code(), message };
                    // The answer is the refusal, whether or not recording it succeeds.
                    let _ = app.pipeline.write_one(meta.clone(), record).await;
                }
            }
            Err(e.into())
        }
    }
}

async fn write_entity(
    app: &AppState,
    caller: &Caller,
    meta: WriteMeta,
    command: Command,
    q: &Params,
) -> ApiResult<Response> {
    let projection = Projection::from_params(q)?;
    let command = resolve_searches(app, &meta, command).await?;
    if q.flag("validation_only", false)? {
        let outcome = app.pipeline.dry_run(&meta, &command)?;
        return Ok(answer(outcome, &projection, app.pipeline.view().seq(), true));
    }
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    let outcome = outcome?;
    // The answer shows the entity as a read right after would: its derived values and scorecards judged
    // in the catalog the write made (through the writer's view), on the search pool when there are some.
    let view = app.pipeline.view();
    let judged = match &outcome {
        Outcome::Entity { entity, .. } => {
            view.derived().spec(&entity.blueprint).is_some()
                || view.definitions(berth_model::DefinitionKind::Scorecard).next().is_some()
        }
        _ => false,
    };
    if !judged {
        return Ok(answer(outcome, &projection, seq, false));
    }
    let caller = caller.clone();
    crate::searching::run(app, move || {
        let scoped = crate::access::scoped(&view, &caller);
        Ok(answer(outcome, &projection.with_view(&scoped), seq, false))
    })
    .await
}

fn answer(outcome: Outcome, projection: &Projection, seq: u64, dry_run: bool) -> Response {
    match outcome {
        Outcome::Entity { entity, created } => {
            let status = if created && !dry_run { StatusCode::CREATED } else { StatusCode::OK };
            reply(status, json!({"ok": true, "entity": render::entity(&entity, projection)}), Some(seq))
        }
        Outcome::Deleted { identifiers } => {
            reply(StatusCode::OK, json!({"ok": true, "deletedEntities": identifiers}), Some(seq))
        }
        _ => reply(StatusCode::OK, json!({"ok": true}), Some(seq)),
    }
}

fn write_mode(q: &Params) -> ApiResult<WriteMode> {
    Ok(match (q.flag("upsert", false)?, q.flag("merge", false)?) {
        (false, _) => WriteMode::Create,
        (true, false) => WriteMode::Upsert,
        (true, true) => WriteMode::UpsertMerge,
    })
}

#[utoipa::path(post, path = "/v1/blueprints/{blueprint}/entities", tag = "Entities", summary = "Create or upsert an entity",
    description = "`upsert=false` (default): 409 if the identifier exists. `upsert=true`: replace it whole. `upsert=true&merge=true`: merge the given title, icon, team, properties and relations into it (a `null` value removes a key). `create_missing_related_entities=true` creates empty targets for unknown relation ids (else 404 `not_found`). `validation_only=true` validates and writes nothing. The writer's `User-Agent` is kept as `$datasource`. The `identifier` and relation values may be search queries (`{combinator, rules}`): an identifier query must match exactly one entity of the blueprint; a relation query must match one target (single relation) or up to 100 (many). Answers 201 when created, 200 when changed.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"),
        ("upsert" = Option<bool>, Query, description = "Update if it exists"),
        ("merge" = Option<bool>, Query, description = "With upsert: merge instead of replace"),
        ("validation_only" = Option<bool>, Query, description = "Validate only"),
        ("create_missing_related_entities" = Option<bool>, Query, description = "Create unknown relation targets"),
        ("run_id" = Option<String>, Query, description = "The action run this change belongs to")),
    request_body(content = Object, description = "`{identifier, title, icon, team, properties, relations}`"),
    responses((status = 201, description = "`{ok, entity}`", body = Entity), (status = 200, description = "Updated: `{ok, entity}`", body = Entity),
        (status = 404, description = "Unknown blueprint or related entity"), (status = 409, description = "Exists and upsert=false"), (status = 422, description = "Does not match the blueprint")))]
pub async fn create(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    params: PathParams,
    q: Params,
    ApiJson(body): ApiJson<EntityBody>,
) -> ApiResult<Response> {
    let blueprint = blueprint_id(&params)?;
    ensure_blueprint(&app, &blueprint)?;
    let input = body.input?;
    let command = Command::WriteEntity {
        blueprint,
        path_id: None,
        input,
        mode: write_mode(&q)?,
        create_missing_related: q.flag("create_missing_related_entities", false)?,
    };
    write_entity(&app, &caller, write_meta(&caller, &headers, &q)?, command, &q).await
}

#[allow(clippy::too_many_arguments)]
async fn write_existing(
    app: AppState,
    caller: Caller,
    headers: HeaderMap,
    uri: axum::http::Uri,
    params: PathParams,
    q: Params,
    body: EntityBody,
    mode: WriteMode,
) -> ApiResult<Response> {
    let blueprint = blueprint_id(&params)?;
    let id = entity_id(&params, &uri)?;
    ensure_blueprint(&app, &blueprint)?;
    let input = body.input?;
    let command = Command::WriteEntity {
        blueprint,
        path_id: Some(id),
        input,
        mode,
        create_missing_related: q.flag("create_missing_related_entities", false)?,
    };
    write_entity(&app, &caller, write_meta(&caller, &headers, &q)?, command, &q).await
}

#[utoipa::path(put, path = "/v1/blueprints/{blueprint}/entities/{entity}", tag = "Entities", summary = "Replace an entity",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("entity" = String, Path, description = "Entity identifier, URL-encoded"),
        ("create_missing_related_entities" = Option<bool>, Query, description = "Create unknown relation targets"),
        ("validation_only" = Option<bool>, Query, description = "Validate only"),
        ("run_id" = Option<String>, Query, description = "The action run this change belongs to")),
    request_body(content = Object, description = "The whole entity"),
    responses((status = 200, description = "`{ok, entity}`", body = Entity), (status = 404, description = "No such entity"), (status = 422, description = "Does not match the blueprint")))]
pub async fn replace(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    params: PathParams,
    q: Params,
    ApiJson(body): ApiJson<EntityBody>,
) -> ApiResult<Response> {
    write_existing(app, caller, headers, uri, params, q, body, WriteMode::Replace).await
}

#[utoipa::path(patch, path = "/v1/blueprints/{blueprint}/entities/{entity}", tag = "Entities", summary = "Change part of an entity",
    description = "Merges the given fields; `title`, `icon`, `team` may be `null` to clear them; a property or relation set to `null` is removed.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("entity" = String, Path, description = "Entity identifier, URL-encoded"),
        ("create_missing_related_entities" = Option<bool>, Query, description = "Create unknown relation targets"),
        ("validation_only" = Option<bool>, Query, description = "Validate only"),
        ("run_id" = Option<String>, Query, description = "The action run this change belongs to")),
    request_body(content = Object, description = "The fields to change"),
    responses((status = 200, description = "`{ok, entity}`", body = Entity), (status = 404, description = "No such entity"), (status = 422, description = "Does not match the blueprint")))]
pub async fn patch(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    params: PathParams,
    q: Params,
    ApiJson(body): ApiJson<EntityBody>,
) -> ApiResult<Response> {
    write_existing(app, caller, headers, uri, params, q, body, WriteMode::Patch).await
}

#[utoipa::path(delete, path = "/v1/blueprints/{blueprint}/entities/{entity}", tag = "Entities", summary = "Delete an entity",
    description = "Entities with a *required* relation to it are deleted too with `delete_dependents=true`, or make the delete fail (409) without it. Entities with an optional relation to it lose that relation value.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("entity" = String, Path, description = "Entity identifier, URL-encoded"),
        ("delete_dependents" = Option<bool>, Query, description = "Cascade to dependents"),
        ("run_id" = Option<String>, Query, description = "The action run this change belongs to")),
    responses((status = 200, description = "`{ok, deletedEntities}`"), (status = 404, description = "No such entity"), (status = 409, description = "Has dependents")))]
pub async fn delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    params: PathParams,
    q: Params,
) -> ApiResult<Response> {
    let blueprint = blueprint_id(&params)?;
    let identifier = entity_id(&params, &uri)?;
    let command =
        Command::DeleteEntity { blueprint, identifier, delete_dependents: q.flag("delete_dependents", false)? };
    write_entity(&app, &caller, write_meta(&caller, &headers, &q)?, command, &q).await
}

#[utoipa::path(get, path = "/v1/blueprints/{blueprint}/entities/{entity}", tag = "Entities", summary = "Get an entity",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"), ("entity" = String, Path, description = "Entity identifier, URL-encoded (`+` is a space)"),
        ("include" = Option<Vec<String>>, Query, description = "Fields to return (repeated or comma-joined): identifier, title, team, properties.<p>, relations.<r>, ..."),
        ("exclude" = Option<Vec<String>>, Query, description = "Fields to leave out"),
        ("attach_title_to_relation" = Option<bool>, Query, description = "Each related identifier as `{identifier, title}`"), ("exclude_calculated_properties" = Option<bool>, Query, description = "Leave mirror, calculation and aggregation values out of `properties`"),
        ("at" = Option<String>, Query, description = "Berth extension: the entity as it was at this date-time (from the change log)")),
    responses((status = 200, description = "`{ok, entity}`", body = Entity), (status = 404, description = "No such blueprint or entity")))]
pub async fn get_one(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: axum::http::Uri,
    params: PathParams,
    q: Params,
) -> ApiResult<Response> {
    let blueprint = blueprint_id(&params)?;
    let id = entity_id(&params, &uri)?;
    let view = app.pipeline.view();
    if view.blueprint(&blueprint).is_none() {
        return Err(DomainError::not_found("blueprint", blueprint).into());
    }
    if let Some(at) = q.get("at").filter(|v| !v.is_empty()) {
        let at = berth_model::Timestamp::parse(at)
            .ok_or_else(|| ApiError::bad_request(format!("`at` must be an RFC 3339 date-time, got {at:?}")))?;
        let entity = super::history::entity_at(&app, &caller, &blueprint, &id, at).await?;
        let scoped = crate::access::scoped(&view, &caller);
        let projection = Projection::from_params(&q)?.with_view(&scoped).without_scorecards();
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            render::entity_answer(&entity, &projection),
        )
            .into_response());
    }
    let judged = view.definitions(berth_model::DefinitionKind::Scorecard).next().is_some()
        || view.derived().spec(&blueprint).is_some();
    // An entity the caller may not read does not exist for it.
    let answer = move |view: &berth_engine::State| -> ApiResult<Vec<u8>> {
        let scoped = crate::access::scoped(view, &caller);
        let projection = Projection::from_params(&q)?.with_view(&scoped);
        let entity = scoped
            .entity(&blueprint, &id)
            .ok_or_else(|| ApiError::from(DomainError::not_found("entity", format!("{blueprint}/{id}"))))?;
        Ok(render::entity_answer(entity, &projection))
    };
    // Judging scorecards runs their rules (graph rules walk the catalog) and derived values run calculations
    // and follow relations: then the read goes to the search pool, under its deadline; without either it
    // stays here, the fast path.
    let bytes = if judged { crate::searching::run(&app, move || answer(&view)).await? } else { answer(&view)? };
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

#[utoipa::path(get, path = "/v1/blueprints/{blueprint}/entities", tag = "Entities", summary = "List a blueprint's entities",
    description = "All entities of the blueprint, ordered by identifier. For large blueprints prefer the paginated search.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"),
        ("include" = Option<Vec<String>>, Query, description = "Fields to return"), ("exclude" = Option<Vec<String>>, Query, description = "Fields to leave out"),
        ("attach_title_to_relation" = Option<bool>, Query, description = "Each related identifier as `{identifier, title}`"), ("exclude_calculated_properties" = Option<bool>, Query, description = "Leave mirror, calculation and aggregation values out of `properties`")),
    responses((status = 200, description = "`{ok, entities: [...]}`", body = Vec<Entity>), (status = 404, description = "No such blueprint")))]
pub async fn list(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    q: Params,
) -> ApiResult<Response> {
    let blueprint = blueprint_id(&params)?;
    let view = app.pipeline.view();
    if view.blueprint(&blueprint).is_none() {
        return Err(DomainError::not_found("blueprint", blueprint).into());
    }
    let entities = crate::searching::run(&app, move || {
        let scoped = crate::access::scoped(&view, &caller);
        let projection = Projection::from_params(&q)?.with_view(&scoped);
        Ok(scoped.list(&blueprint)?.iter().map(|e| render::entity(e, &projection)).collect::<Vec<Value>>())
    })
    .await?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "entities": entities}), None))
}

#[utoipa::path(get, path = "/v1/blueprints/{blueprint}/entities-count", tag = "Entities", summary = "Count a blueprint's entities",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier")),
    responses((status = 200, description = "`{ok, count}`"), (status = 404, description = "No such blueprint")))]
pub async fn count(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
) -> ApiResult<Response> {
    let blueprint = blueprint_id(&params)?;
    let view = app.pipeline.view();
    if view.blueprint(&blueprint).is_none() {
        return Err(DomainError::not_found("blueprint", blueprint).into());
    }
    let count =
        crate::searching::run(&app, move || Ok(crate::access::scoped(&view, &caller).count(&blueprint, None)?)).await?;
    Ok(reply(StatusCode::OK, json!({"ok": true, "count": count}), None))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct BulkUpsert {
    /// 1 to 1000 entities.
    #[schema(value_type = Vec<Object>)]
    pub entities: Vec<EntityBody>,
}

#[utoipa::path(post, path = "/v1/blueprints/{blueprint}/entities/bulk", tag = "Entities", summary = "Upsert many entities",
    description = "Up to 1000 entities (Port allows 20). Each item is written, or refused, on its own; the answer maps results to request positions by `index`. 200 when all succeeded, 207 when some failed. Takes the same query parameters as the single create.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"),
        ("upsert" = Option<bool>, Query, description = "Update existing entities (default true here)"),
        ("merge" = Option<bool>, Query, description = "Merge into existing entities"),
        ("validation_only" = Option<bool>, Query, description = "Validate only"),
        ("create_missing_related_entities" = Option<bool>, Query, description = "Create unknown relation targets")),
    request_body = BulkUpsert,
    responses((status = 200, description = "`{ok, entities: [{index, identifier, created}], errors: []}`"),
        (status = 207, description = "Some items failed: `errors: [{index, identifier, statusCode, error, message}]`"),
        (status = 404, description = "No such blueprint"), (status = 422, description = "Empty or over 1000 items")))]
pub async fn bulk_upsert(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    params: PathParams,
    q: Params,
    ApiJson(body): ApiJson<BulkUpsert>,
) -> ApiResult<Response> {
    let blueprint = blueprint_id(&params)?;
    ensure_blueprint(&app, &blueprint)?;
    let n = body.entities.len();
    if n == 0 || n > MAX_BULK {
        return Err(ApiError::unprocessable(format!("`entities` must hold 1 to {MAX_BULK} items, got {n}")));
    }
    // Port's bulk route upserts unless told otherwise.
    let mode = match (q.flag("upsert", true)?, q.flag("merge", false)?) {
        (false, _) => WriteMode::Create,
        (true, false) => WriteMode::Upsert,
        (true, true) => WriteMode::UpsertMerge,
    };
    let create_missing_related = q.flag("create_missing_related_entities", false)?;
    let dry_run = q.flag("validation_only", false)?;
    let meta = write_meta(&caller, &headers, &q)?;

    // Items that do not parse fail on their own, and so do items whose search queries fail (resolved here,
    // off the async workers and before the writer); the rest become commands.
    let mut items: Vec<(String, Result<berth_model::EntityInput, DomainError>)> = body
        .entities
        .into_iter()
        .map(|item| (item.label.unwrap_or_else(|| "unknown".to_string()), item.input))
        .collect();
    if items.iter().any(|(_, input)| input.as_ref().is_ok_and(|i| i.uses_search())) {
        let (view, resolver, bp) = (app.pipeline.view(), meta.clone(), blueprint.clone());
        items = crate::searching::run(&app, move || {
            let (labels, inputs): (Vec<String>, Vec<_>) = items.into_iter().unzip();
            let resolved =
                berth_engine::resolve_batch_searches(&view, &resolver, &bp, mode, create_missing_related, inputs);
            Ok(labels.into_iter().zip(resolved).collect())
        })
        .await?;
    }
    let mut slots: Vec<(usize, String, Result<(), DomainError>)> = Vec::with_capacity(n);
    let mut commands: Vec<Command> = Vec::with_capacity(n);
    for (index, (label, input)) in items.into_iter().enumerate() {
        let parsed = input.map(|input| {
            commands.push(Command::WriteEntity {
                blueprint: blueprint.clone(),
                path_id: None,
                input,
                mode,
                create_missing_related,
            })
        });
        slots.push((index, label, parsed));
    }
    let (mut outcomes, seq) = if dry_run {
        let view = app.pipeline.view();
        let outcomes =
            commands.iter().map(|c| berth_engine::execute(&view, &meta, c).map(|(_, o)| o)).collect::<Vec<_>>();
        (outcomes.into_iter(), view.seq())
    } else {
        let result = app.pipeline.write(meta, commands).await?;
        (result.outcomes.into_iter(), result.seq)
    };
    let mut ok: Vec<BulkWritten> = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for (index, label, command) in slots {
        let result = match command {
            Ok(_) => outcomes.next().unwrap_or_else(|| Err(DomainError::Invalid("no result".into()))),
            Err(e) => Err(e),
        };
        match result {
            Ok(Outcome::Entity { entity, created }) => ok.push(BulkWritten {
                index,
                identifier: Arc::clone(&entity.identifier),
                created: Some(created && !dry_run),
            }),
            Ok(_) => ok.push(BulkWritten { index, identifier: Arc::from(label), created: None }),
            Err(e) => {
                let api = ApiError::from(e);
                errors.push(json!({"index": index, "identifier": label, "statusCode": api.status.as_u16(), "error": api.code, "message": api.message}));
            }
        }
    }
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    Ok(reply(status, BulkAnswer { ok: true, entities: ok, errors }, Some(seq)))
}

/// The answer of a bulk upsert (serialised as it is: a thousand items need no `Value` tree on the way).
#[derive(Serialize)]
struct BulkAnswer {
    ok: bool,
    entities: Vec<BulkWritten>,
    errors: Vec<Value>,
}

/// One item of a bulk upsert that was written (or, with `validation_only`, would be).
#[derive(Serialize)]
struct BulkWritten {
    index: usize,
    identifier: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct BulkDelete {
    /// 1 to 1000 entity identifiers.
    pub entities: Vec<String>,
}

#[utoipa::path(post, path = "/v1/blueprints/{blueprint}/bulk/entities/delete", tag = "Entities", summary = "Delete many entities",
    description = "Each identifier is deleted, or refused, on its own: trust `deletedEntities`. Failures are listed in `errors`.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"),
        ("delete_dependents" = Option<bool>, Query, description = "Cascade to dependents"),
        ("run_id" = Option<String>, Query, description = "The action run these changes belong to")),
    request_body = BulkDelete,
    responses((status = 200, description = "`{ok, deletedEntities: [...]}`"), (status = 207, description = "Some failed: `errors` lists them"),
        (status = 404, description = "No such blueprint")))]
pub async fn bulk_delete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    params: PathParams,
    q: Params,
    ApiJson(body): ApiJson<BulkDelete>,
) -> ApiResult<Response> {
    let blueprint = blueprint_id(&params)?;
    ensure_blueprint(&app, &blueprint)?;
    let n = body.entities.len();
    if n == 0 || n > MAX_BULK {
        return Err(ApiError::unprocessable(format!("`entities` must hold 1 to {MAX_BULK} identifiers, got {n}")));
    }
    let delete_dependents = q.flag("delete_dependents", false)?;
    let commands = body
        .entities
        .iter()
        .map(|id| Command::DeleteEntity { blueprint: blueprint.clone(), identifier: id.clone(), delete_dependents })
        .collect();
    let result = app.pipeline.write(write_meta(&caller, &headers, &q)?, commands).await?;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (index, (id, outcome)) in body.entities.iter().zip(result.outcomes).enumerate() {
        match outcome {
            Ok(_) => deleted.push(id.clone()),
            Err(e) => {
                let api = ApiError::from(e);
                errors.push(json!({"index": index, "identifier": id, "statusCode": api.status.as_u16(), "error": api.code, "message": api.message}));
            }
        }
    }
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::MULTI_STATUS };
    Ok(reply(status, json!({"ok": true, "deletedEntities": deleted, "errors": errors}), Some(result.seq)))
}

#[utoipa::path(delete, path = "/v1/blueprints/{blueprint}/all-entities", tag = "Entities", summary = "Delete all of a blueprint's entities",
    description = "Deletes every entity of the blueprint in one atomic change, and the blueprint too with `delete_blueprint=true`. Entities of other blueprints with an optional relation to them lose that value; a required one makes it fail (409). Answers a `migrationId` that `GET /v1/migrations/{id}` reports as COMPLETED.",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"),
        ("delete_blueprint" = Option<bool>, Query, description = "Delete the blueprint afterwards"),
        ("run_id" = Option<String>, Query, description = "The action run these changes belong to")),
    responses((status = 200, description = "`{ok, migrationId}`"), (status = 404, description = "No such blueprint"), (status = 409, description = "Other entities depend on them")))]
pub async fn delete_all(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    params: PathParams,
    q: Params,
) -> ApiResult<Response> {
    let blueprint = blueprint_id(&params)?;
    let delete_blueprint = q.flag("delete_blueprint", false)?;
    if delete_blueprint && !caller.is_admin() {
        return Err(ApiError::new(berth_model::ErrorCode::Forbidden, "only an Admin may delete blueprints"));
    }
    let command = Command::DeleteAllEntities { blueprint: blueprint.clone(), delete_blueprint };
    let (outcome, seq) = app.pipeline.write_one(write_meta(&caller, &headers, &q)?, command).await?;
    let deleted = match outcome? {
        Outcome::Deleted { identifiers } => identifiers.len(),
        _ => 0,
    };
    let actor = caller.client_id.clone();
    let id = MigrationRecord { seq, blueprint, deleted, delete_blueprint, at: crate::now(), actor }.id();
    Ok(reply(StatusCode::OK, json!({"ok": true, "migrationId": id}), Some(seq)))
}
