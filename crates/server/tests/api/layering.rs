//! The layering rules a reviewer would otherwise have to remember, checked on the source: frontends (the
//! API's routes and the web UI) search, list, count and aggregate entities only through the caller's
//! `Scoped` view, which narrows every query to what the caller may read, never by calling the engine's
//! unscoped search functions; and nothing but the catalog layer reads the log store.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Lines of the frontends' sources (tests modules included: they too must not model bad habits) that
/// contain one of `needles`.
fn offenders(needles: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["server/src/routes", "web/src"] {
        sources(&root.join(dir), &mut files);
    }
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn frontends_read_entities_through_the_scoped_view() {
    let unscoped = [
        "search::search_blueprint(",
        "search::search_blueprint_sorted(",
        "search::for_each_match(",
        "search::count_blueprint(",
        "search::scan(",
        "search::search_all(",
        "aggregate::aggregate(",
        "view.entities_of(",
        "state.entities_of(",
        "view.entity(",
        "state.entity(",
    ];
    let found = offenders(&unscoped);
    assert!(
        found.is_empty(),
        "unscoped entity reads in a frontend (use the caller's Scoped view):\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_catalog_layer_reads_the_log() {
    let found = offenders(&["LogStore", "read_before(", "read_from(", "read_seqs(", "decode_event("]);
    assert!(found.is_empty(), "log reads outside the catalog layer:\n{}", found.join("\n"));
}

/// Every `/v1` route the router serves (read off the `.route(...)` calls of the route modules) is in the
/// OpenAPI document, with any parameter names.
#[test]
fn every_api_route_is_documented() {
    let doc: serde_json::Value =
        serde_json::from_str(berth_server::openapi::document_json()).expect("the document is JSON");
    let shape = |path: &str| -> String {
        path.split('/').map(|seg| if seg.starts_with('{') { "{}" } else { seg }).collect::<Vec<_>>().join("/")
    };
    let documented: std::collections::HashSet<String> =
        doc["paths"].as_object().expect("paths").keys().map(|p| shape(p)).collect();
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes"), &mut files);
    let mut served = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for part in text.split(".route(\"").skip(1) {
            let path = part.split('"').next().unwrap_or_default();
            if path.starts_with("/v1/") {
                served.push(path.to_string());
            }
        }
    }
    assert!(served.len() >= 25, "found {} routes", served.len());
    let missing: Vec<&String> = served.iter().filter(|p| !documented.contains(&shape(p))).collect();
    assert!(missing.is_empty(), "routes missing from the OpenAPI document: {missing:?}");
}
