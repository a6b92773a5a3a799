//! Backstage's catalog read API, served from Berth's catalog under `/api/catalog` (Berth token required, the
//! caller's read scope applied): `GET /entities` (`filter`, `fields`, `offset` / `limit`, `order`),
//! `GET /entities/by-name/{kind}/{namespace}/{name}`, `GET /entities/by-uid/{uid}`, `GET /entities/by-query`
//! (`filter`, `fullTextFilterTerm`, `orderField`, `cursor`, `limit` → `{items, totalItems, pageInfo}`),
//! `POST /entities/by-refs`, `GET /entity-facets`.
//!
//! **Which entities, in what shape.** An entity `berth import backstage` wrote (its blueprint has the
//! `descriptor` and `source` properties) is served as authored: `apiVersion`, `kind`, `metadata` (with
//! `namespace`, a stable `uid` and an `etag` that changes with every write), `spec`, and the relations
//! Backstage derives. Any other entity is served too: kind = its blueprint's identifier, namespace `default`,
//! name = its identifier, `metadata.title`, `spec` = its properties (and `owner` = its first team, as
//! `group:default/<team>`), relations = its Berth relations (`type` = the relation's name).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use berth_catalog::backstage::Item;
use berth_engine::scoped::Scoped;
use berth_model::backstage::{self, EntityRef, Filter};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::reply;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Params, PathParams};

pub fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/catalog/entities", get(entities))
        .route("/api/catalog/entities/by-query", get(by_query))
        .route("/api/catalog/entities/by-name/{kind}/{namespace}/{name}", get(by_name))
        .route("/api/catalog/entities/by-uid/{uid}", get(by_uid))
        .route("/api/catalog/entities/by-refs", post(by_refs))
        .route("/api/catalog/entity-facets", get(facets))
}

/// The most entities one answer holds.
const MAX_LIMIT: usize = 10_000;

/// Whether `scoped`'s caller may read an item's entity.
fn readable(scoped: &Scoped<'_>, item: &Item) -> bool {
    scoped.reads_all(&item.blueprint) || scoped.entity(&item.blueprint, &item.identifier).is_some()
}

/// An item as `scoped`'s caller sees it (relations to entities it may not read left out); `None` when it
/// may not read the entity.
fn visible(scoped: &Scoped<'_>, item: &Item) -> Option<Value> {
    if !readable(scoped, item) {
        return None;
    }
    let mut doc = item.doc.clone();
    if !item.targets.is_empty() {
        if let Some(rels) = doc["relations"].as_array_mut() {
            let mut i = 0;
            rels.retain(|_| {
                let keep = item.targets.get(i).is_none_or(|(bp, id)| scoped.entity(bp, id).is_some());
                i += 1;
                keep
            });
        }
    }
    Some(doc)
}

/// Runs `answer` on the readable items that pass `filter`, in reference order (nothing is copied until
/// `answer` picks what it shows).
fn with_matching<R>(app: &AppState, scoped: &Scoped<'_>, filter: &Filter, answer: impl FnOnce(Vec<&Item>) -> R) -> R {
    app.pipeline.backstage().with(scoped.state(), |index, _| {
        answer(index.select(filter).into_iter().filter(|item| readable(scoped, item)).collect())
    })
}

fn filter_of(q: &Params) -> ApiResult<Filter> {
    let raw: Vec<String> = q.0.iter().filter(|(k, _)| k == "filter").map(|(_, v)| v.clone()).collect();
    Filter::parse(&raw).map_err(ApiError::bad_request)
}

fn fields_of(q: &Params) -> Vec<String> {
    q.list("fields")
}

/// Sorts by `order` parameters (`asc:metadata.name`, `desc:spec.type`), after the default order.
fn order(items: &mut [&Item], orders: &[(bool, String)]) {
    if orders.is_empty() {
        return;
    }
    items.sort_by(|a, b| {
        for (asc, field) in orders {
            let (x, y) = (backstage::values_at(&a.doc, field).join(","), backstage::values_at(&b.doc, field).join(","));
            let c = x.to_lowercase().cmp(&y.to_lowercase());
            if c != std::cmp::Ordering::Equal {
                return if *asc { c } else { c.reverse() };
            }
        }
        std::cmp::Ordering::Equal
    });
}

fn number(q: &Params, key: &str, default: usize) -> ApiResult<usize> {
    match q.get(key).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ApiError::bad_request(format!("`{key}` is a number, got {v:?}"))),
    }
}

async fn run<T: Send + 'static>(
    app: &AppState,
    caller: Caller,
    work: impl FnOnce(&AppState, &Scoped<'_>) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let view = app.pipeline.view();
    let state = app.clone();
    crate::searching::run(app, move || {
        let scoped = crate::access::scoped(&view, &caller);
        work(&state, &scoped)
    })
    .await
}

#[utoipa::path(get, path = "/api/catalog/entities", tag = "Backstage", summary = "Backstage: entities, filtered", security(("bearer" = [])),
    params(("filter" = Option<Vec<String>>, Query, description = "`key=value,key2` (ANDed); repeated: alternatives"),
        ("fields" = Option<Vec<String>>, Query, description = "Dotted paths to keep"),
        ("offset" = Option<usize>, Query, description = "Skip this many"), ("limit" = Option<usize>, Query, description = "At most this many (≤ 10,000)"),
        ("order" = Option<Vec<String>>, Query, description = "`asc:metadata.name` or `desc:...`")),
    responses((status = 200, description = "A JSON array of entities in Backstage's shape"), (status = 400, description = "A bad filter or number"), (status = 401, description = "No Berth token")))]
pub async fn entities(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> ApiResult<Response> {
    let filter = filter_of(&q)?;
    let fields = fields_of(&q);
    let offset = number(&q, "offset", 0)?;
    let limit = number(&q, "limit", MAX_LIMIT)?.min(MAX_LIMIT);
    let orders: Vec<(bool, String)> = q
        .list("order")
        .into_iter()
        .map(|o| match o.split_once(':') {
            Some(("desc", f)) => (false, f.to_string()),
            Some((_, f)) => (true, f.to_string()),
            None => (true, o),
        })
        .collect();
    let items = run(&app, caller, move |app, scoped| {
        Ok(with_matching(app, scoped, &filter, |mut all| {
            order(&mut all, &orders);
            all.into_iter()
                .skip(offset)
                .take(limit)
                .filter_map(|item| visible(scoped, item))
                .map(|v| backstage::project(&v, &fields))
                .collect::<Vec<_>>()
        }))
    })
    .await?;
    Ok(reply(StatusCode::OK, Value::Array(items), None))
}

#[utoipa::path(get, path = "/api/catalog/entities/by-query", tag = "Backstage", summary = "Backstage: entities, paged with a cursor", security(("bearer" = [])),
    params(("filter" = Option<Vec<String>>, Query, description = "As for /entities"), ("fields" = Option<Vec<String>>, Query, description = "Dotted paths to keep"),
        ("limit" = Option<usize>, Query, description = "Page size (default 20, ≤ 10,000)"), ("orderField" = Option<Vec<String>>, Query, description = "`metadata.name,asc`"),
        ("fullTextFilterTerm" = Option<String>, Query, description = "Text every item holds (in name, title, description, or `fullTextFilterFields`)"),
        ("fullTextFilterFields" = Option<Vec<String>>, Query, description = "Where the text is looked for"),
        ("cursor" = Option<String>, Query, description = "A `pageInfo` cursor (its query is in it)")),
    responses((status = 200, description = "`{items, totalItems, pageInfo: {nextCursor?, prevCursor?}}`"), (status = 400, description = "A bad filter or cursor"), (status = 401, description = "No Berth token")))]
pub async fn by_query(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> ApiResult<Response> {
    // A cursor carries the query it pages through, and where the page starts.
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (query, offset): (Value, usize) = match q.get("cursor").filter(|c| !c.is_empty()) {
        Some(c) => {
            let v: Value = engine
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| ApiError::bad_request("`cursor` is not one this server gave"))?;
            (v["q"].clone(), v["o"].as_u64().unwrap_or(0) as usize)
        }
        None => {
            let pairs: Vec<Value> = q.0.iter().map(|(k, v)| json!([k, v])).collect();
            (Value::Array(pairs), 0)
        }
    };
    let mut pairs: Vec<(String, String)> = query
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())))
        .collect();
    // With a cursor, the request may still give the page size and fields.
    if q.get("cursor").is_some() {
        for key in ["limit", "fields"] {
            if q.get(key).is_some() {
                pairs.retain(|(k, _)| k != key);
                pairs.extend(q.0.iter().filter(|(k, _)| k == key).cloned());
            }
        }
    }
    let params = Params(pairs);
    let filter = filter_of(&params)?;
    let fields = fields_of(&params);
    let limit = number(&params, "limit", 20)?.clamp(1, MAX_LIMIT);
    let orders: Vec<(bool, String)> = params
        .0
        .iter()
        .filter(|(k, _)| k == "orderField")
        .map(|(_, v)| match v.split_once(',') {
            Some((f, "desc")) => (false, f.to_string()),
            Some((f, _)) => (true, f.to_string()),
            None => (true, v.clone()),
        })
        .collect();
    let term = params.get("fullTextFilterTerm").map(str::to_lowercase).filter(|t| !t.is_empty());
    let mut text_fields = params.list("fullTextFilterFields");
    if text_fields.is_empty() {
        text_fields = vec!["metadata.name".into(), "metadata.title".into(), "metadata.description".into()];
    }
    let answer = run(&app, caller, move |app, scoped| {
        Ok(with_matching(app, scoped, &filter, |mut all| {
            if let Some(t) = &term {
                all.retain(|item| {
                    text_fields.iter().any(|f| {
                        backstage::values_at(&item.doc, f).iter().any(|x| x.to_lowercase().contains(t.as_str()))
                    })
                });
            }
            order(&mut all, &orders);
            let total = all.len();
            let items: Vec<Value> = all
                .iter()
                .skip(offset)
                .take(limit)
                .filter_map(|item| visible(scoped, item))
                .map(|v| backstage::project(&v, &fields))
                .collect();
            let cursor = |o: usize| engine.encode(json!({"q": query, "o": o}).to_string());
            let mut page = json!({});
            if offset + limit < total {
                page["nextCursor"] = json!(cursor(offset + limit));
            }
            if offset > 0 {
                page["prevCursor"] = json!(cursor(offset.saturating_sub(limit)));
            }
            json!({"items": items, "totalItems": total, "pageInfo": page})
        }))
    })
    .await?;
    Ok(reply(StatusCode::OK, answer, None))
}

/// The readable entity a reference names, if any.
fn find(app: &AppState, scoped: &Scoped<'_>, r: &EntityRef) -> Option<Value> {
    app.pipeline.backstage().with(scoped.state(), |index, _| index.get(&r.key()).and_then(|item| visible(scoped, item)))
}

#[utoipa::path(get, path = "/api/catalog/entities/by-name/{kind}/{namespace}/{name}", tag = "Backstage", summary = "Backstage: one entity by its name", security(("bearer" = [])),
    params(("kind" = String, Path, description = "Kind (any case)"), ("namespace" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Name")),
    responses((status = 200, description = "The entity"), (status = 404, description = "No such entity the caller may read"), (status = 401, description = "No Berth token")))]
pub async fn by_name(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let r = EntityRef { kind: path.get("kind")?, namespace: path.get("namespace")?, name: path.get("name")? };
    let shown = r.to_string();
    let found = run(&app, caller, move |app, scoped| Ok(find(app, scoped, &r))).await?;
    match found {
        Some(v) => Ok(reply(StatusCode::OK, v, None)),
        None => Err(ApiError::not_found(format!("no entity {shown}"))),
    }
}

#[utoipa::path(get, path = "/api/catalog/entities/by-uid/{uid}", tag = "Backstage", summary = "Backstage: one entity by its uid", security(("bearer" = [])),
    params(("uid" = String, Path, description = "The entity's `metadata.uid`")),
    responses((status = 200, description = "The entity"), (status = 404, description = "No such entity the caller may read"), (status = 401, description = "No Berth token")))]
pub async fn by_uid(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let want = path.get("uid")?;
    let shown = want.clone();
    let found = run(&app, caller, move |app, scoped| {
        Ok(app.pipeline.backstage().with(scoped.state(), |index, _| {
            index.all().find(|item| item.doc["metadata"]["uid"] == want.as_str()).and_then(|item| visible(scoped, item))
        }))
    })
    .await?;
    match found {
        Some(v) => Ok(reply(StatusCode::OK, v, None)),
        None => Err(ApiError::not_found(format!("no entity with uid {shown}"))),
    }
}

/// `POST /entities/by-refs`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByRefs {
    /// `kind:namespace/name` references (kind and namespace may be left out only as Backstage allows).
    pub entity_refs: Vec<String>,
    /// Dotted paths to keep.
    #[serde(default)]
    pub fields: Vec<String>,
}

#[utoipa::path(post, path = "/api/catalog/entities/by-refs", tag = "Backstage", summary = "Backstage: entities by their references", security(("bearer" = [])),
    request_body = ByRefs,
    responses((status = 200, description = "`{items}`: one per reference, in order, `null` where none (or not readable)"), (status = 400, description = "More than 10,000 references"), (status = 401, description = "No Berth token")))]
pub async fn by_refs(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
    ApiJson(body): ApiJson<ByRefs>,
) -> ApiResult<Response> {
    if body.entity_refs.len() > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("at most {MAX_LIMIT} references")));
    }
    let mut fields = body.fields;
    fields.extend(fields_of(&q));
    let items = run(&app, caller, move |app, scoped| {
        Ok(body
            .entity_refs
            .iter()
            .map(|r| match EntityRef::parse(r, None, backstage::DEFAULT_NAMESPACE) {
                Ok(r) => find(app, scoped, &r).map(|v| backstage::project(&v, &fields)).unwrap_or(Value::Null),
                Err(_) => Value::Null,
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(reply(StatusCode::OK, json!({"items": items}), None))
}

#[utoipa::path(get, path = "/api/catalog/entity-facets", tag = "Backstage", summary = "Backstage: the values of fields and their counts", security(("bearer" = [])),
    params(("facet" = Vec<String>, Query, description = "Dotted paths (`kind`, `spec.type`, `metadata.tags`, `relations.ownedBy`)"),
        ("filter" = Option<Vec<String>>, Query, description = "As for /entities")),
    responses((status = 200, description = "`{facets: {<facet>: [{value, count}]}}`, most frequent first"), (status = 400, description = "No facet, or a bad filter"), (status = 401, description = "No Berth token")))]
pub async fn facets(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: Params,
) -> ApiResult<Response> {
    let facets: Vec<String> = q.0.iter().filter(|(k, _)| k == "facet").map(|(_, v)| v.clone()).collect();
    if facets.is_empty() || facets.len() > 50 {
        return Err(ApiError::bad_request("give 1 to 50 `facet` parameters"));
    }
    let filter = filter_of(&q)?;
    let answer = run(&app, caller, move |app, scoped| {
        Ok(with_matching(app, scoped, &filter, |all| {
            let mut out = Map::new();
            for f in &facets {
                let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
                for item in &all {
                    let mut seen = std::collections::BTreeSet::new();
                    for value in backstage::values_at(&item.doc, f) {
                        if seen.insert(value.clone()) {
                            *counts.entry(value).or_default() += 1;
                        }
                    }
                }
                let mut list: Vec<(String, usize)> = counts.into_iter().collect();
                list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let values = list.into_iter().map(|(value, count)| json!({"value": value, "count": count})).collect();
                out.insert(f.clone(), Value::Array(values));
            }
            json!({"facets": out})
        }))
    })
    .await?;
    Ok(reply(StatusCode::OK, answer, None))
}
