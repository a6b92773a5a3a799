//! Backstage's catalog read API, served from Berth's catalog under `/api/catalog` (Berth token required, the
//! caller's read scope applied): `GET /entities` (`filter`, `fields`, `offset` / `limit` / `after`, `order`),
//! `GET /entities/by-name/{kind}/{namespace}/{name}` and its `/ancestry`, `GET /entities/by-uid/{uid}`,
//! `GET /entities/by-query` (`filter`, `fullTextFilterTerm`, `orderField`, `cursor`, `limit` → `{items,
//! totalItems, pageInfo}`), `POST /entities/by-refs`, `GET /entity-facets`; errors in Backstage's shape
//! ([`backstage_errors`]). Also `GET /v1/backstage/rules`: a filter in Berth's rules language.
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
use axum::response::IntoResponse;
use axum::response::Response;
use berth_catalog::backstage::{Index, Item, Selection};
use berth_engine::scoped::Scoped;
use berth_model::backstage::{self, EntityRef, Filter};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::sync::Arc;

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
        .route("/api/catalog/entities/by-name/{kind}/{namespace}/{name}/ancestry", get(ancestry))
        .route("/api/catalog/entities/by-uid/{uid}", get(by_uid))
        .route("/api/catalog/entities/by-refs", post(by_refs))
        .route("/api/catalog/entity-facets", get(facets))
        .route("/v1/backstage/rules", get(rules))
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

/// An item as `scoped`'s caller sees it with only `fields` kept: borrowed from the index when nothing is
/// left out (an answer is written out from the index, not from copies); `None` when it may not read it.
fn shown<'a>(scoped: &Scoped<'_>, item: &'a Item, fields: &[String]) -> Option<Cow<'a, Value>> {
    let doc = if item.targets.is_empty() {
        readable(scoped, item).then_some(Cow::Borrowed(&item.doc))?
    } else {
        Cow::Owned(visible(scoped, item)?)
    };
    Some(if fields.is_empty() { doc } else { Cow::Owned(backstage::project(&doc, fields)) })
}

/// A JSON answer already written out.
fn json_answer(body: Result<Vec<u8>, serde_json::Error>) -> ApiResult<Response> {
    let body = body.map_err(ApiError::internal)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `by-query`'s answer.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryPage<'a> {
    items: Vec<Cow<'a, Value>>,
    total_items: usize,
    page_info: Value,
}

/// Runs `answer` on the index and the readable entities that pass `filter` (nothing is copied until `answer`
/// picks what it shows).
fn with_matching<R>(
    app: &AppState,
    scoped: &Scoped<'_>,
    filter: &Filter,
    answer: impl FnOnce(&Index, Selection) -> R,
) -> R {
    app.pipeline.backstage().with(scoped.state(), |index, _| {
        let mut selection = index.select(filter);
        index.restrict(&mut selection, |bp| scoped.reads_all(bp), |item| readable(scoped, item));
        answer(index, selection)
    })
}

/// What a page asks beyond the filter: an order, a text every item holds, where the page starts and its size.
struct PageAsk {
    orders: Vec<(bool, String)>,
    term: Option<(String, Vec<String>)>,
    offset: usize,
    limit: usize,
}

/// The page of `selection` that `ask` names, and how many entities the whole answer holds. Without an
/// order or a text, straight from the index in reference order.
fn page<'a>(index: &'a Index, selection: &Selection, ask: &PageAsk) -> (Vec<&'a Item>, usize) {
    if ask.orders.is_empty() && ask.term.is_none() {
        return (index.page(selection, ask.offset, ask.limit), selection.count());
    }
    let mut all = index.items(selection);
    if let Some((t, fields)) = &ask.term {
        all.retain(|item| {
            fields
                .iter()
                .any(|f| backstage::values_at(&item.doc, f).iter().any(|x| x.to_lowercase().contains(t.as_str())))
        });
    }
    order(&mut all, &ask.orders);
    let total = all.len();
    (all.into_iter().skip(ask.offset).take(ask.limit).collect(), total)
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
        ("offset" = Option<usize>, Query, description = "Skip this many"), ("limit" = Option<usize>, Query, description = "At most this many (≤ 10,000); with more to come, a `Link: <...>; rel=\"next\"` header"),
        ("after" = Option<String>, Query, description = "The cursor of a `Link` header's next page"),
        ("order" = Option<Vec<String>>, Query, description = "`asc:metadata.name` or `desc:...`")),
    responses((status = 200, description = "A JSON array of entities in Backstage's shape"), (status = 400, description = "A bad filter or number"), (status = 401, description = "No Berth token")))]
pub async fn entities(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    q: Params,
) -> ApiResult<Response> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let filter = filter_of(&q)?;
    let fields = fields_of(&q);
    // `after` (Backstage's older paging): where the previous page ended, as the `Link` header gave it.
    let offset = match q.get("after").filter(|a| !a.is_empty()) {
        Some(a) => engine
            .decode(a)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| ApiError::bad_request("`after` is not a cursor this server gave"))?,
        None => number(&q, "offset", 0)?,
    };
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
    let ask = PageAsk { orders, term: None, offset, limit };
    let (body, total) = run(&app, caller, move |app, scoped| {
        Ok(with_matching(app, scoped, &filter, |index, selection| {
            let (items, total) = page(index, &selection, &ask);
            let items: Vec<Cow<'_, Value>> =
                items.into_iter().filter_map(|item| shown(scoped, item, &fields)).collect();
            (serde_json::to_vec(&items), total)
        }))
    })
    .await?;
    let mut response = json_answer(body)?;
    // More than this page: a `Link` to the next, the request's parameters kept (`offset` replaced by `after`).
    if q.get("limit").is_some() && offset + limit < total {
        let kept: Vec<String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("after=") && !p.starts_with("offset="))
            .map(str::to_string)
            .chain([format!("after={}", engine.encode(format!("offset:{}", offset + limit)))])
            .collect();
        let link = format!("<{}?{}>; rel=\"next\"", uri.path(), kept.join("&"));
        if let Ok(v) = axum::http::HeaderValue::from_str(&link) {
            response.headers_mut().insert(axum::http::header::LINK, v);
        }
    }
    Ok(response)
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
    let ask = PageAsk { orders, term: term.map(|t| (t, text_fields)), offset, limit };
    let answer = run(&app, caller, move |app, scoped| {
        Ok(with_matching(app, scoped, &filter, |index, selection| {
            let (items, total) = page(index, &selection, &ask);
            let items: Vec<Cow<'_, Value>> =
                items.into_iter().filter_map(|item| shown(scoped, item, &fields)).collect();
            let cursor = |o: usize| engine.encode(json!({"q": query, "o": o}).to_string());
            let mut page = json!({});
            if offset + limit < total {
                page["nextCursor"] = json!(cursor(offset + limit));
            }
            if offset > 0 {
                page["prevCursor"] = json!(cursor(offset.saturating_sub(limit)));
            }
            serde_json::to_vec(&QueryPage { items, total_items: total, page_info: page })
        }))
    })
    .await?;
    json_answer(answer)
}

/// The entity reference a `.../by-name/{kind}/{namespace}/{name}` path names.
fn named(path: &PathParams) -> ApiResult<EntityRef> {
    Ok(EntityRef { kind: path.get("kind")?, namespace: path.get("namespace")?, name: path.get("name")? })
}

/// The answer of a one-entity route: what was found, or a 404 saying what was asked (the same for what does
/// not exist and what the caller may not read).
fn found_or_404(found: Option<Value>, asked: impl FnOnce() -> String) -> ApiResult<Response> {
    match found {
        Some(v) => Ok(reply(StatusCode::OK, v, None)),
        None => Err(ApiError::not_found(asked())),
    }
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
    let r = named(&path)?;
    let shown = r.to_string();
    let found = run(&app, caller, move |app, scoped| Ok(find(app, scoped, &r))).await?;
    found_or_404(found, || format!("no entity {shown}"))
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
        Ok(app
            .pipeline
            .backstage()
            .with(scoped.state(), |index, _| index.by_uid(&want).and_then(|item| visible(scoped, item))))
    })
    .await?;
    found_or_404(found, || format!("no entity with uid {shown}"))
}

/// The longest chain of parents an ancestry answer follows.
const MAX_ANCESTRY: usize = 100;

#[utoipa::path(get, path = "/api/catalog/entities/by-name/{kind}/{namespace}/{name}/ancestry", tag = "Backstage", summary = "Backstage: an entity and the Locations it came from", security(("bearer" = [])),
    description = "The entity, then the `Location` entity whose target named its file, then that one's, up to a file given to `berth import backstage` (at most 100). A parent the caller may not read ends the chain.",
    params(("kind" = String, Path, description = "Kind (any case)"), ("namespace" = String, Path, description = "Namespace"), ("name" = String, Path, description = "Name")),
    responses((status = 200, description = "`{rootEntityRef, items: [{entity, parentEntityRefs}]}`"), (status = 404, description = "No such entity the caller may read"), (status = 401, description = "No Berth token")))]
pub async fn ancestry(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: PathParams,
) -> ApiResult<Response> {
    let r = named(&path)?;
    let shown = r.to_string();
    let found = run(&app, caller, move |app, scoped| {
        Ok(app.pipeline.backstage().with(scoped.state(), |index, _| {
            let readable_item = |key: &str| index.get(key).filter(|item| readable(scoped, item));
            let first = readable_item(&r.key())?;
            let mut items = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut next = Some(first);
            while let Some(item) = next.take() {
                if items.len() >= MAX_ANCESTRY || !seen.insert(Arc::clone(&item.key)) {
                    break;
                }
                let parent = item.parent.as_deref().and_then(readable_item);
                let Some(doc) = visible(scoped, item) else { break };
                let parents: Vec<String> = parent.iter().map(|p| display_ref(&p.doc)).collect();
                items.push(json!({"entity": doc, "parentEntityRefs": parents}));
                next = parent;
            }
            Some(json!({"rootEntityRef": display_ref(&first.doc), "items": items}))
        }))
    })
    .await?;
    found_or_404(found, || format!("no entity {shown}"))
}

/// An entity's reference as Backstage writes it (`component:default/petstore`).
fn display_ref(doc: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    EntityRef {
        kind: text(&doc["kind"]),
        namespace: doc["metadata"]["namespace"].as_str().unwrap_or(backstage::DEFAULT_NAMESPACE).to_string(),
        name: text(&doc["metadata"]["name"]),
    }
    .to_string()
}

/// Error answers under `/api/catalog` in Backstage's shape, so its clients read them as they read
/// Backstage's: `{error: {name, message, code}, request: {method, url}, response: {statusCode}}` (`name`:
/// `InputError`, `AuthenticationError`, `NotAllowedError`, `NotFoundError`, `ConflictError`, else `Error`;
/// `code`: Berth's error code, from the one table).
pub async fn backstage_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let path = req.uri().path();
    if path != "/api/catalog" && !path.starts_with("/api/catalog/") {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    let url = req.uri().path_and_query().map_or("", |p| p.as_str()).trim_start_matches("/api/catalog").to_string();
    let response = next.run(req).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Error bodies are small; anything else is not read past 64 KiB.
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let port: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let name = match status.as_u16() {
        400 | 413 | 422 => "InputError",
        401 => "AuthenticationError",
        403 => "NotAllowedError",
        404 => "NotFoundError",
        409 => "ConflictError",
        _ => "Error",
    };
    let message = port["message"].as_str().or(status.canonical_reason()).unwrap_or("error");
    let mut error = json!({"name": name, "message": message});
    if let Some(code) = port["error"].as_str() {
        error["code"] = json!(code);
    }
    let body =
        json!({"error": error, "request": {"method": method, "url": url}, "response": {"statusCode": status.as_u16()}});
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

#[utoipa::path(get, path = "/v1/backstage/rules", tag = "Backstage", summary = "A Backstage filter in Berth's rules language", security(("bearer" = [])),
    description = "Berth's own search takes the answer as it is (`query` as the body of `POST /v1/entities/search`, `include` as its parameters; or both in the body of `POST /v1/blueprints/{bp}/entities/search`): `query` selects the entities `berth import backstage` wrote that the filter selects, `include` the properties holding `fields`. Backstage compares values without case, the rules language exactly (kinds are lower-cased).",
    params(("filter" = Option<Vec<String>>, Query, description = "As for /api/catalog/entities"), ("fields" = Option<Vec<String>>, Query, description = "Dotted paths"),
        ("prefix" = Option<String>, Query, description = "The import's `--blueprint-prefix`")),
    responses((status = 200, description = "`{ok, query, include}`"), (status = 400, description = "A bad filter, or a key no property holds (named, with the keys that can be used)"), (status = 401, description = "No Berth token")))]
pub async fn rules(q: Params) -> ApiResult<Response> {
    let filter = filter_of(&q)?;
    let query = filter.to_rules(q.get("prefix").unwrap_or_default()).map_err(ApiError::bad_request)?;
    let include = backstage::include_of(&fields_of(&q));
    Ok(reply(StatusCode::OK, json!({"ok": true, "query": query, "include": include}), None))
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
        Ok(with_matching(app, scoped, &filter, |index, selection| {
            let mut out = Map::new();
            for f in &facets {
                let values = index
                    .facet(&selection, f)
                    .into_iter()
                    .map(|(value, count)| json!({"value": value, "count": count}));
                out.insert(f.clone(), values.collect());
            }
            json!({"facets": out})
        }))
    })
    .await?;
    Ok(reply(StatusCode::OK, answer, None))
}
