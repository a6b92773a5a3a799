//! Search: `POST /v1/entities/search` (every blueprint) and `POST /v1/blueprints/{bp}/entities/search`
//! (one blueprint, cursor-paginated). A query that does not parse is a 400 naming the rule's path.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_engine::search;
use berth_model::query::Query;
use serde::Deserialize;
use serde_json::{Value, json};

use super::render::{self, Projection};
use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params, PathParams};

/// A query as `caller` sends it: contextual values (`{"context": "user" | "userTeams"}`) read as the caller's.
fn parse(app: &AppState, caller: &Caller, v: &Value) -> ApiResult<Query> {
    let ctx = berth_engine::access::query_context(&app.pipeline.view(), &caller.principal());
    berth_model::query_context::parse_for(v, Some(&ctx))
        .map_err(|e| ApiError::bad_request(format!("invalid query at {}: {}", e.path, e.message)))
}

#[utoipa::path(post, path = "/v1/entities/search", tag = "Search", summary = "Search entities of every blueprint",
    description = "The body is a rules-language query: `{\"combinator\": \"and\"|\"or\", \"rules\": [...]}` with rules `{property, operator, value}` (meta-properties `$identifier $title $team $icon $blueprint $createdAt $updatedAt $createdBy $updatedBy $datasource`) or `{relation, operator, value}`, nested groups allowed; graph rules `relatedTo` (`blueprint`, `value`, `direction`, `required`) and `matchAny` (`property.path`, `value`); `propertySchema` rules; date presets `{\"preset\", \"timeZone\"}`; contextual values `{\"context\": \"user\" | \"userTeams\", \"property\"}` read as the caller's. A top-level `$blueprint` rule restricts the blueprints searched. At most 50,000 entities are answered (more is a 400: page through one blueprint instead); a search that runs longer than 10 s is stopped with a 503 `search_timeout`.",
    security(("bearer" = [])),
    params(("include" = Option<Vec<String>>, Query, description = "Fields to return"), ("exclude" = Option<Vec<String>>, Query, description = "Fields to leave out"),
        ("attach_title_to_relation" = Option<bool>, Query, description = "Each related identifier as `{identifier, title}`"), ("exclude_calculated_properties" = Option<bool>, Query, description = "Leave mirror, calculation and aggregation values out of `properties`")),
    request_body(content = Object, description = "A query"),
    responses((status = 200, description = "`{ok, entities, matchingBlueprints, failedBlueprints}`"), (status = 400, description = "The query does not parse (the message names the rule), or more than 50,000 entities match"),
        (status = 503, description = "`search_timeout`: the search ran past its deadline")))]
pub async fn search_all(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let query = parse(&app, &caller, &body)?;
    let view = app.pipeline.view();
    let answer = crate::searching::run(&app, move || {
        let scoped = crate::access::scoped(&view, &caller);
        let projection = Projection::from_params(&q)?.with_view(&scoped);
        let mut found = Vec::new();
        let mut over = false;
        let matching = scoped.for_each_match(query, |e| {
            if found.len() < MAX_SEARCH_ALL {
                found.push(std::sync::Arc::clone(e));
            } else {
                over = true;
            }
        })?;
        if over {
            return Err(ApiError::bad_request(format!(
                "more than {MAX_SEARCH_ALL} entities match; narrow the query, or page through one blueprint with POST /v1/blueprints/{{blueprint}}/entities/search"
            )));
        }
        let entities: Vec<Value> = found.iter().map(|e| render::entity(e, &projection)).collect();
        Ok(json!({"ok": true, "entities": entities, "matchingBlueprints": matching, "failedBlueprints": []}))
    })
    .await?;
    Ok(reply(StatusCode::OK, answer, None))
}

/// The most entities one cross-blueprint search answers (it is not paginated; the blueprint search is).
pub const MAX_SEARCH_ALL: usize = 50_000;

/// Unknown fields are refused (as Port does): a query sent at the top level instead of in `query` would
/// otherwise read as no query at all, and answer every entity.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlueprintSearch {
    /// A rules-language query; absent means every entity.
    #[schema(value_type = Option<Object>)]
    pub query: Option<Value>,
    /// Fields to return.
    #[serde(default)]
    pub include: Vec<String>,
    /// Fields to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Page size, 1 to 1000 (default 200).
    pub limit: Option<usize>,
    /// The `next` cursor of the previous page.
    pub from: Option<String>,
    /// Each related identifier as `{"identifier", "title"}` (also accepted as a query parameter).
    #[serde(default)]
    pub attach_title_to_relation: bool,
    /// Berth extension: `[{"property": NAME, "order": "asc" | "desc"}]`, ties broken by identifier; stable
    /// under pagination.
    #[schema(value_type = Option<Vec<Object>>)]
    pub sort: Option<Value>,
}

#[utoipa::path(post, path = "/v1/blueprints/{blueprint}/entities/search", tag = "Search", summary = "Search one blueprint's entities, page by page",
    description = "Entities in identifier order, or in `sort` order (ties by identifier); `next` is present while more pages remain. Properties and relations named by the query must exist on the blueprint (else 400).",
    security(("bearer" = [])),
    params(("blueprint" = String, Path, description = "Blueprint identifier"),
        ("exclude_calculated_properties" = Option<bool>, Query, description = "Leave mirror, calculation and aggregation values out of `properties`"),
        ("attach_title_to_relation" = Option<bool>, Query, description = "Each related identifier as `{identifier, title}`")),
    request_body = BlueprintSearch,
    responses((status = 200, description = "`{ok, entities, next?}`"), (status = 400, description = "Bad query, limit or cursor"), (status = 404, description = "No such blueprint"),
        (status = 503, description = "`search_timeout`: the search ran past its 10 s deadline")))]
pub async fn search_blueprint(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: PathParams,
    q: Params,
    ApiJson(body): ApiJson<BlueprintSearch>,
) -> ApiResult<Response> {
    let blueprint = params.get("bp")?;
    let limit = body.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("`limit` must be between 1 and 1000, got {limit}")));
    }
    let query = body.query.as_ref().map(|q| parse(&app, &caller, q)).transpose()?;
    let view = app.pipeline.view();
    if view.blueprint(&blueprint).is_none() {
        return Err(ApiError::not_found(format!("blueprint `{blueprint}` was not found")));
    }
    if let Some(q) = &query {
        // Names are checked against the blueprint before the scope joins (its rules are the server's own).
        search::check_against(&view, &blueprint, q)?;
    }
    let mut pairs: Vec<(String, String)> = body.include.iter().map(|i| ("include".to_string(), i.clone())).collect();
    pairs.extend(body.exclude.iter().map(|i| ("exclude".to_string(), i.clone())));
    if body.attach_title_to_relation || q.flag("attach_title_to_relation", false)? {
        pairs.push(("attach_title_to_relation".into(), "true".into()));
    }
    if q.flag("exclude_calculated_properties", false)? {
        pairs.push(("exclude_calculated_properties".into(), "true".into()));
    }
    let sort = match &body.sort {
        Some(v) => berth_model::query::parse_sort(v)
            .map_err(|e| ApiError::bad_request(format!("invalid sort at {}: {}", e.path, e.message)))?,
        None => Vec::new(),
    };
    let answer = crate::searching::run(&app, move || {
        let scoped = crate::access::scoped(&view, &caller);
        let projection = Projection::from_params(&Params(pairs))?.with_view(&scoped);
        let page = scoped.search_page(&blueprint, query, &sort, body.from.as_deref(), limit)?;
        let entities: Vec<Value> = page.entities.iter().map(|e| render::entity(e, &projection)).collect();
        let mut answer = json!({"ok": true, "entities": entities});
        if let Some(next) = page.next {
            answer["next"] = Value::String(next);
        }
        Ok(answer)
    })
    .await?;
    Ok(reply(StatusCode::OK, answer, None))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AggregateRequest {
    /// `count`, `average`, `sum`, `min`, `max`, `median` or `countValues`.
    pub func: String,
    /// A rules-language query selecting the entities (usually with a `$blueprint` rule).
    #[schema(value_type = Object)]
    pub query: Value,
    /// The number property of `sum`, `average`, `min`, `max`, `median`; the property `countValues` groups by.
    pub property: Option<String>,
    /// The relation `countValues` groups by.
    pub relation: Option<String>,
    /// The scorecard `countValues` groups by (with `rule`: by that rule's status).
    pub scorecard: Option<String>,
    pub rule: Option<String>,
    /// For `average`: per `hour`, `day`, `week`, `month`, or `total` (the plain mean).
    pub average_of: Option<String>,
    /// For `average` per unit: the date-time property measuring the time span (default `$createdAt`).
    pub measure_time_by: Option<String>,
    /// Accepted for compatibility; Berth computes over the entities' current values.
    pub calculation_by: Option<String>,
}

#[utoipa::path(post, path = "/v1/entities/aggregate", tag = "Search", summary = "Aggregate the entities a query matches",
    description = "`count`; `sum`, `average`, `min`, `max`, `median` of a number `property` (non-numbers are skipped; `null` when nothing was measured); `average` per `averageOf` unit of time; `countValues` by `property`, `relation` or `scorecard` (facets: `result` maps each value to its count, `values` lists `{value, count}` by count, including `null` for entities without a value).",
    security(("bearer" = [])),
    request_body = AggregateRequest,
    responses((status = 200, description = "`{ok, result, values?, matchingBlueprints, failedBlueprints}`"), (status = 400, description = "Bad function, query or property"),
        (status = 503, description = "`search_timeout`: the aggregate ran past its 10 s deadline")))]
pub async fn aggregate(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<AggregateRequest>,
) -> ApiResult<Response> {
    use berth_engine::aggregate::{Aggregation, Func, GroupBy, Per};
    let func = Func::parse(&body.func).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`func` must be one of count, average, sum, min, max, median, countValues; got {:?}",
            body.func
        ))
    })?;
    let query = parse(&app, &caller, &body.query)?;
    let per = match &body.average_of {
        Some(p) => Some(Per::parse(p).ok_or_else(|| {
            ApiError::bad_request(format!("`averageOf` must be hour, day, week, month or total; got {p:?}"))
        })?),
        None => None,
    };
    let (property, group_by) = match func {
        Func::CountValues => {
            let group = match (&body.property, &body.relation, &body.scorecard) {
                (Some(p), None, None) => GroupBy::Property(p.clone()),
                (None, Some(r), None) => GroupBy::Relation(r.clone()),
                (None, None, Some(s)) => GroupBy::Scorecard { scorecard: s.clone(), rule: body.rule.clone() },
                _ => {
                    return Err(ApiError::bad_request(
                        "countValues groups by exactly one of `property`, `relation`, `scorecard`",
                    ));
                }
            };
            (None, Some(group))
        }
        _ => (body.property.clone(), None),
    };
    let view = app.pipeline.view();
    // Names must exist on the blueprints the query is restricted to.
    if let Some(blueprints) = query.blueprint_filter() {
        for bp in &blueprints {
            let entry = view.blueprint(bp).ok_or_else(|| ApiError::not_found(format!("blueprint `{bp}` not found")))?;
            let named = property.as_ref().or(match &group_by {
                Some(GroupBy::Property(p)) => Some(p),
                _ => None,
            });
            if let Some(p) = named {
                let derived = view.derived().spec(bp).is_some_and(|s| s.kind(p).is_some());
                if !entry.def.schema.properties.contains_key(p) && !derived {
                    return Err(ApiError::bad_request(format!("blueprint `{bp}` has no property `{p}`")));
                }
            }
            if let Some(GroupBy::Relation(r)) = &group_by {
                if !entry.def.relations.contains_key(r) {
                    return Err(ApiError::bad_request(format!("blueprint `{bp}` has no relation `{r}`")));
                }
            }
        }
    }
    let measure_time_by = body.measure_time_by.clone();
    let out = crate::searching::run(&app, move || {
        // What the caller may not read is not counted either.
        let scoped = crate::access::scoped(&view, &caller);
        Ok(scoped.aggregate(Aggregation { func, query, property, group_by, per, measure_time_by })?)
    })
    .await?;
    let mut answer =
        json!({"ok": true, "result": out.result, "matchingBlueprints": out.matching, "failedBlueprints": []});
    if let Some(values) = out.values {
        answer["values"] = values.into_iter().map(|(value, count)| json!({"value": value, "count": count})).collect();
    }
    Ok(reply(StatusCode::OK, answer, None))
}
