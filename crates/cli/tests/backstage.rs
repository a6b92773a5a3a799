//! `berth import backstage` against a live server: a catalog authored here (two namespaces, a nested
//! location, a glob, every kind, two invalid entities, a dangling reference) imported, every entity read back
//! with the relations Backstage derives (both directions), re-imported after edits (reconciled, another
//! source's entities untouched); then Backstage's own example catalogs (`fixtures/backstage-examples`).

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::Berth;

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
    std::fs::write(p, text).expect("write");
}

fn import(server: &Berth, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["import", "backstage"])
        .args(args)
        .args(["--url", &server.base])
        .env("BERTH_CLIENT_ID", support::ID)
        .env("BERTH_CLIENT_SECRET", support::SECRET)
        .output()
        .expect("import");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

async fn entity(client: &reqwest::Client, server: &Berth, token: &str, bp: &str, id: &str) -> Option<Value> {
    let url = server.url(&format!("/v1/blueprints/{bp}/entities/{}", id.replace('/', "%2F")));
    let r = client.get(url).bearer_auth(token).send().await.expect("get");
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 200, "{bp}/{id}");
    Some(r.json::<Value>().await.expect("json")["entity"].clone())
}

/// An entity's relations as `type targetRef` lines, sorted.
fn relations(e: &Value) -> Vec<String> {
    let mut v: Vec<String> = e["properties"]["relations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{} {}", r["type"].as_str().unwrap_or_default(), r["targetRef"].as_str().unwrap_or_default()))
        .collect();
    v.sort();
    v
}

const HEAD: &str = "apiVersion: backstage.io/v1alpha1\n";

fn author(dir: &Path, with_db: bool, lifecycle: &str) {
    write(
        dir,
        "catalog-info.yaml",
        &format!(
            "{HEAD}kind: Location\nmetadata: {{name: root}}\nspec:\n  targets: [./org/*.yaml, ./services/catalog-info.yaml]\n"
        ),
    );
    write(
        dir,
        "org/groups.yaml",
        &format!(
            "{HEAD}kind: Group\nmetadata: {{name: acme, title: ACME}}\nspec: {{type: organization, children: [platform]}}\n---\n\
         {HEAD}kind: Group\nmetadata: {{name: platform}}\nspec: {{type: team, parent: acme, children: []}}\n---\n\
         {HEAD}kind: User\nmetadata: {{name: jdoe}}\nspec: {{memberOf: [platform], profile: {{displayName: Jane Doe}}}}\n---\n\
         {HEAD}kind: Group\nmetadata: {{name: payments-team, namespace: payments}}\nspec: {{type: team, children: []}}\n"
        ),
    );
    write(
        dir,
        "org/nested.yaml",
        &format!("{HEAD}kind: Location\nmetadata: {{name: nested}}\nspec: {{target: ./more/domains.yaml}}\n"),
    );
    write(
        dir,
        "org/more/domains.yaml",
        &format!(
            "{HEAD}kind: Domain\nmetadata: {{name: commerce}}\nspec: {{owner: platform}}\n---\n\
         {HEAD}kind: System\nmetadata: {{name: shop}}\nspec: {{owner: platform, domain: commerce}}\n"
        ),
    );
    let db = if with_db {
        format!(
            "---\n{HEAD}kind: Resource\nmetadata: {{name: checkout-db, namespace: payments}}\nspec: {{type: database, owner: payments-team}}\n"
        )
    } else {
        String::new()
    };
    write(
        dir,
        "services/catalog-info.yaml",
        &format!(
            "{HEAD}kind: Component\nmetadata:\n  name: checkout\n  namespace: payments\n  description: Takes the money\n  \
         annotations: {{github.com/project-slug: acme/checkout}}\n  links: [{{url: 'https://checkout.acme.example', title: Site}}]\n  tags: [java]\n\
         spec:\n  type: service\n  lifecycle: {lifecycle}\n  owner: payments-team\n  system: default/shop\n  \
         providesApis: [checkout-api]\n  consumesApis: [catalog-api]\n  dependsOn: ['resource:checkout-db']\n---\n\
         {HEAD}kind: API\nmetadata: {{name: checkout-api, namespace: payments}}\nspec: {{type: openapi, lifecycle: production, owner: payments-team, definition: 'openapi: 3.0.0'}}\n\
         {db}---\n\
         apiVersion: scaffolder.backstage.io/v1beta3\nkind: Template\nmetadata: {{name: scaffold}}\nspec: {{type: service, owner: platform, steps: []}}\n---\n\
         {HEAD}kind: Component\nmetadata: {{name: 'Bad Name!'}}\nspec: {{type: service, lifecycle: x, owner: platform}}\n---\n\
         {HEAD}kind: Component\nmetadata: {{name: no-lifecycle}}\nspec: {{type: service, owner: platform}}\n"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backstage_catalog_is_imported_with_its_relations_and_reconciled() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Berth::spawn(dir.path(), &support::sqlite_url(dir.path(), "bs"), &[]);
    let client = support::client();
    let token = server.token(&client).await;
    let catalog = dir.path().join("catalog");
    author(&catalog, true, "production");
    let root = catalog.join("catalog-info.yaml");

    // Another source's entity, which the reconciliation must leave alone.
    let other = dir.path().join("other");
    write(
        &other,
        "x.yaml",
        &format!(
            "{HEAD}kind: Component\nmetadata: {{name: legacy}}\nspec: {{type: service, lifecycle: deprecated, owner: platform}}\n"
        ),
    );
    let (ok, _, stderr) = import(&server, &[&other.join("x.yaml").to_string_lossy(), "--source", "legacy-repo"]);
    assert!(ok, "{stderr}");

    let (ok, stdout, stderr) = import(&server, &[&root.to_string_lossy(), "--source", "main-repo"]);
    assert!(!ok, "two invalid entities make the exit status fail");
    assert!(
        stderr.contains("services/catalog-info.yaml")
            && stderr.contains("`Bad Name!`")
            && stderr.contains("metadata.name"),
        "{stderr}"
    );
    assert!(stderr.contains("`no-lifecycle`") && stderr.contains("spec.lifecycle"), "{stderr}");
    assert!(stdout.contains("consumesApi api:payments/catalog-api"), "the dangling reference is reported: {stdout}");

    let checkout = entity(&client, &server, &token, "component", "payments/checkout").await.expect("checkout");
    assert_eq!(
        relations(&checkout),
        [
            "consumesApi api:payments/catalog-api",
            "dependsOn resource:payments/checkout-db",
            "ownedBy group:payments/payments-team",
            "partOf system:default/shop",
            "providesApi api:payments/checkout-api",
        ]
    );
    let d = &checkout["properties"]["descriptor"];
    assert_eq!(d["metadata"]["annotations"]["github.com/project-slug"], "acme/checkout", "kept as authored");
    assert_eq!(d["metadata"]["links"][0]["title"], "Site");
    assert_eq!(checkout["properties"]["lifecycle"], "production");
    let platform = entity(&client, &server, &token, "group", "default/platform").await.expect("platform");
    assert_eq!(
        relations(&platform),
        [
            "childOf group:default/acme",
            "hasMember user:default/jdoe",
            "ownerOf domain:default/commerce",
            "ownerOf system:default/shop",
            "ownerOf template:default/scaffold",
        ]
    );
    let shop = entity(&client, &server, &token, "system", "default/shop").await.expect("shop");
    assert_eq!(
        relations(&shop),
        ["hasPart component:payments/checkout", "ownedBy group:default/platform", "partOf domain:default/commerce"]
    );
    let acme = entity(&client, &server, &token, "group", "default/acme").await.expect("acme");
    assert_eq!(acme["title"], "ACME");
    assert_eq!(relations(&acme), ["parentOf group:default/platform"]);
    let api = entity(&client, &server, &token, "api", "payments/checkout-api").await.expect("api");
    assert_eq!(relations(&api), ["apiProvidedBy component:payments/checkout", "ownedBy group:payments/payments-team"]);
    let jdoe = entity(&client, &server, &token, "user", "default/jdoe").await.expect("jdoe");
    assert_eq!(relations(&jdoe), ["memberOf group:default/platform"]);
    assert!(
        entity(&client, &server, &token, "location", "default/nested").await.is_some(),
        "locations are entities too"
    );
    assert!(entity(&client, &server, &token, "component", "default/no-lifecycle").await.is_none());

    backstage_client(&server, &token);

    // Edited: the database gone, the component's lifecycle changed. Reconciled; the other source untouched.
    author(&catalog, false, "deprecated");
    let (_, stdout, _) = import(&server, &[&root.to_string_lossy(), "--source", "main-repo"]);
    assert!(stdout.contains("deleted    1"), "{stdout}");
    assert!(entity(&client, &server, &token, "resource", "payments/checkout-db").await.is_none());
    let checkout = entity(&client, &server, &token, "component", "payments/checkout").await.expect("checkout");
    assert_eq!(checkout["properties"]["lifecycle"], "deprecated");
    assert!(
        entity(&client, &server, &token, "component", "default/legacy").await.is_some(),
        "another source's entity stays"
    );

    // A descriptor broken for now (the API refused), and a file that is not YAML: what was imported is kept.
    let text = std::fs::read_to_string(catalog.join("services/catalog-info.yaml")).expect("read");
    write(&catalog, "services/catalog-info.yaml", &text.replace("type: openapi,", ""));
    write(&catalog, "org/broken.yaml", "kind: [unclosed\n");
    let (ok, _, stderr) = import(&server, &[&root.to_string_lossy(), "--source", "main-repo"]);
    assert!(!ok && stderr.contains("org/broken.yaml") && stderr.contains("nothing is deleted"), "{stderr}");
    assert!(
        entity(&client, &server, &token, "api", "payments/checkout-api").await.is_some(),
        "kept while its descriptor is broken"
    );
    std::fs::remove_file(catalog.join("org/broken.yaml")).expect("rm");
    let (_, stdout, _) = import(&server, &[&root.to_string_lossy(), "--source", "main-repo"]);
    assert!(stdout.contains("deleted    0"), "a refused descriptor's entity is not deleted: {stdout}");
    assert!(entity(&client, &server, &token, "api", "payments/checkout-api").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backstages_own_example_catalogs_import() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Berth::spawn(dir.path(), &support::sqlite_url(dir.path(), "bs"), &[]);
    let client = support::client();
    let token = server.token(&client).await;
    let examples =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backstage-examples/packages/catalog-model/examples");
    let (_, stdout, stderr) = import(
        &server,
        &[&examples.join("all.yaml").to_string_lossy(), &examples.join("acme-corp.yaml").to_string_lossy()],
    );
    // Only the kinds Backstage's built-in processor does not know are left out.
    for line in stderr.lines().filter(|l| l.trim_start().starts_with('/')) {
        assert!(line.contains("kind `AiResource`"), "{line}");
    }
    assert!(stderr.contains("kind `AiResource`"), "{stderr}");
    assert!(stdout.contains("Component"), "{stdout}");
    // Backstage's own invalid example is refused with its reason.
    let (ok, _, stderr) = import(&server, &[&examples.join("components/invalid-component.yaml").to_string_lossy()]);
    assert!(!ok && stderr.contains("metadata.name") && stderr.contains("invalid component"), "{stderr}");
    let artist = entity(&client, &server, &token, "component", "default/artist-lookup").await.expect("artist-lookup");
    let rels = relations(&artist);
    assert!(rels.iter().any(|r| r.starts_with("ownedBy group:default/")), "{rels:?}");
    assert!(rels.iter().any(|r| r.starts_with("partOf system:default/")), "{rels:?}");
    let infra = entity(&client, &server, &token, "group", "default/infrastructure").await.expect("infrastructure");
    assert!(relations(&infra).contains(&"childOf group:default/acme-corp".to_string()), "{:?}", relations(&infra));
}

/// Backstage's own catalog client against the imported catalog: what the frontend calls, checked.
fn backstage_client(server: &Berth, token: &str) {
    let modules = std::env::var("BERTH_TEST_BACKSTAGE_CLIENT")
        .unwrap_or_else(|_| panic!("BERTH_TEST_BACKSTAGE_CLIENT must name the node_modules holding @backstage/catalog-client (scripts/test installs it)"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backstage-client/run.cjs");
    let out = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &modules)
        .env("BERTH_URL", &server.base)
        .env("BERTH_TOKEN", token)
        .output()
        .expect("node (Node.js 20) on PATH");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("json");
    let names = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|e| e["metadata"]["name"].as_str().map(str::to_string)).collect()
    };
    assert_eq!(
        names(&got["components"]),
        ["legacy", "checkout"],
        "filter kind=component, both sources, by reference: {got}"
    );
    assert_eq!(got["components"][1]["spec"], serde_json::json!({"type": "service"}), "fields honoured");
    assert!(got["components"][0].get("relations").is_none());
    assert_eq!(names(&got["apisAndSystems"]), ["shop", "checkout-api"], "two filters, ordered by name descending");
    assert_eq!(got["byRef"]["metadata"]["namespace"], "payments");
    assert!(got["byRef"]["metadata"]["uid"].is_string() && got["byRef"]["metadata"]["etag"].is_string());
    assert!(got["byRef"]["relations"].as_array().is_some_and(|r| r.iter().any(|r| r["type"] == "ownedBy"
        && r["targetRef"] == "group:payments/payments-team"
        && r["target"]["name"] == "payments-team")));
    assert!(got["missing"].is_null());
    assert_eq!(got["firstPage"]["totalItems"], 3);
    assert_eq!(got["pages"], serde_json::json!([["acme", "payments-team"], ["platform"]]), "cursors follow the order");
    assert_eq!(got["fullText"], serde_json::json!(["checkout"]), "full text over name, title and description");
    assert_eq!(got["byRefs"], serde_json::json!(["Group:platform", null, "API:checkout-api"]));
    assert_eq!(
        got["facets"]["kind"],
        serde_json::json!([{"value": "Component", "count": 2}, {"value": "API", "count": 1}])
    );
    assert_eq!(got["anonymous"], "ResponseError", "no token, no catalog");
    assert_eq!(
        got["ancestry"],
        serde_json::json!({"root": "system:default/shop", "chain": [
            ["shop", ["location:default/nested"]], ["nested", ["location:default/root"]], ["root", []]]}),
        "the Locations an entity was read through"
    );
    assert_eq!(
        got["missingAncestry"],
        serde_json::json!({"name": "ResponseError", "status": 404, "error": "NotFoundError", "cause": "NotFoundError"}),
        "errors in Backstage's shape"
    );
    let annotations = &got["byRef"]["metadata"]["annotations"];
    let at = |k: &str| annotations[k].as_str().unwrap_or_default().to_string();
    assert!(at("backstage.io/managed-by-location").starts_with("file:"), "{annotations}");
    assert!(at("backstage.io/managed-by-location").ends_with("/services/catalog-info.yaml"), "{annotations}");
    assert!(at("backstage.io/managed-by-origin-location").ends_with("/catalog/catalog-info.yaml"), "{annotations}");
    assert_eq!(at("github.com/project-slug"), "acme/checkout", "the authored annotations kept");
}

/// Without `--url`, the import writes into a local data directory's store; a server started on it later
/// serves the catalog, and the app the import made for itself is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_url_the_import_writes_into_the_local_data_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let catalog = dir.path().join("catalog");
    author(&catalog, true, "production");
    let data = dir.path().join("data");
    let store = support::sqlite_url(&data, "local");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["import", "backstage"])
        .arg(catalog.join("org"))
        .args(["--data-dir", &data.to_string_lossy(), "--store", &store, "--source", "org"])
        .env_remove("BERTH_URL")
        .output()
        .expect("import");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("imported 7 entities") && stdout.contains("sqlite"), "{stdout}");
    assert!(stdout.contains("first admin user"), "an empty catalog gets its first admin: {stdout}");

    let server = Berth::spawn_in(&data, &store, &[]);
    let client = support::client();
    let token = server.token(&client).await;
    let platform = entity(&client, &server, &token, "group", "default/platform").await.expect("platform");
    assert_eq!(relations(&platform)[0], "childOf group:default/acme");
    let r = client
        .get(server.url("/api/catalog/entities/by-name/system/default/shop"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("by-name");
    assert_eq!(r.status(), 200);
    let apps: Value =
        client.get(server.url("/v1/apps")).bearer_auth(&token).send().await.expect("apps").json().await.expect("json");
    assert!(!apps.to_string().contains("berth-import-backstage"), "the import's own app is deleted: {apps}");
}
