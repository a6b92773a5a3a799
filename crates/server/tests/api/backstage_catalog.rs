//! Backstage's catalog API under `/api/catalog`: a Berth token is required, and every answer goes through
//! the caller's read scope (a Member whose permission hides a team's services gets, on every route, the same
//! answer whether or not those exist); Port-made entities are served too, mapped by blueprint.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::permissions::{app_token, call, read_own_team_only, setup};

fn names(v: &Value) -> Vec<String> {
    let list = if v.is_array() { v.clone() } else { v["items"].clone() };
    let mut n: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn the_catalog_api_needs_a_token_and_reads_through_the_callers_scope() {
    let s = setup().await;
    let r = s.raw(Method::GET, "/api/catalog/entities", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["name"], "AuthenticationError", "{}", r.body);
    // Port-made services, as Backstage entities of kind `service`.
    let (status, all) = call(&s, &s.token, Method::GET, "/api/catalog/entities?filter=kind=service", None).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(names(&all), ["svc-a", "svc-a2", "svc-b"]);
    let (_, one) = call(&s, &s.token, Method::GET, "/api/catalog/entities/by-name/service/default/svc-b", None).await;
    assert_eq!(one["spec"]["replicas"], 4);
    assert_eq!(one["spec"]["owner"], "group:default/B");
    let uid = one["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let (status, by_uid) = call(&s, &s.token, Method::GET, &format!("/api/catalog/entities/by-uid/{uid}"), None).await;
    assert_eq!((status, by_uid["metadata"]["name"].clone()), (StatusCode::OK, json!("svc-b")));

    // Paging with `after`, as the `Link` header gives it.
    let r = s
        .raw(
            Method::GET,
            "/api/catalog/entities?filter=kind=service&limit=2&fields=metadata.name",
            None,
            Some(&s.token),
        )
        .await;
    let link = r.headers.get("link").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(names(&r.body), ["svc-a", "svc-a2"]);
    let next = link.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\"")).map(|(u, _)| u.to_string());
    let next = next.unwrap_or_else(|| panic!("a next link: {link:?}"));
    assert!(next.starts_with("/api/catalog/entities?") && next.contains("filter=kind=service"), "{next}");
    let r = s.raw(Method::GET, &next, None, Some(&s.token)).await;
    assert_eq!(names(&r.body), ["svc-b"]);
    assert!(r.headers.get("link").is_none(), "the last page links nowhere");
    let (status, _) = call(&s, &s.token, Method::GET, "/api/catalog/entities?after=zzz", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A Member of team A reads only team A's services, on every route.
    read_own_team_only(&s).await;
    let a = app_token(&s, "member-a", &["Member"], &["A"]).await;
    let (_, list) = call(&s, &a, Method::GET, "/api/catalog/entities?filter=kind=service", None).await;
    assert_eq!(names(&list), ["svc-a", "svc-a2"]);
    let (status, _) = call(&s, &a, Method::GET, "/api/catalog/entities/by-name/service/default/svc-b", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&s, &a, Method::GET, "/api/catalog/entities/by-name/service/default/svc-zzz", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the same answer as for what does not exist");
    let (status, _) = call(&s, &a, Method::GET, &format!("/api/catalog/entities/by-uid/{uid}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, refs) = call(
        &s,
        &a,
        Method::POST,
        "/api/catalog/entities/by-refs",
        Some(json!({"entityRefs": ["service:default/svc-a", "service:default/svc-b"]})),
    )
    .await;
    assert_eq!(refs["items"][1], Value::Null);
    assert_eq!(refs["items"][0]["metadata"]["name"], "svc-a");
    let (_, page) = call(&s, &a, Method::GET, "/api/catalog/entities/by-query?filter=kind=service&limit=1", None).await;
    assert_eq!(page["totalItems"], 2);
    let (_, facets) =
        call(&s, &a, Method::GET, "/api/catalog/entity-facets?facet=metadata.name&filter=kind=service", None).await;
    assert!(!facets.to_string().contains("svc-b"), "{facets}");
    // Bad input.
    let (status, _) = call(&s, &a, Method::GET, "/api/catalog/entity-facets", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(&s, &a, Method::GET, "/api/catalog/entities/by-query?cursor=not-a-cursor", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": {"name": "InputError", "message": "`cursor` is not one this server gave", "code": "bad_request"},
            "request": {"method": "GET", "url": "/entities/by-query?cursor=not-a-cursor"}, "response": {"statusCode": 400}}),
        "errors in Backstage's shape"
    );
    let (_, body) =
        call(&s, &a, Method::GET, "/api/catalog/entities/by-name/service/default/svc-b/ancestry", None).await;
    assert_eq!(body["error"]["name"], "NotFoundError", "no ancestry of what the caller may not read: {body}");
    let (status, _) = call(&s, &a, Method::GET, "/api/catalog/entities?limit=many", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A Backstage filter in Berth's rules language, which Berth's own search takes as it is.
    let (status, body) =
        call(&s, &a, Method::GET, "/v1/backstage/rules?filter=kind=service&fields=metadata.name", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["include"], json!(["$identifier", "name"]));
    let (status, found) =
        call(&s, &s.token, Method::POST, "/v1/entities/search?include=$identifier", Some(body["query"].clone())).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["matchingBlueprints"], json!(["service"]), "{found}");
    assert_eq!(found["entities"].as_array().map(Vec::len), Some(3), "{found}");
    let (status, body) = call(&s, &a, Method::GET, "/v1/backstage/rules?filter=spec.profile.email=x", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().is_some_and(|m| m.contains("spec.profile.email")), "{body}");
}
