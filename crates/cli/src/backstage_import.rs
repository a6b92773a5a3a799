//! `berth import backstage PATH... --url URL`: a Backstage catalog (files, folders and globs of
//! `catalog-info.yaml`-style descriptors, several documents per file) read the way Backstage reads it: each
//! `Location` followed (relative `target` / `targets`, nested, each file once), every descriptor validated as
//! Backstage validates it (`berth_model::backstage`), relations derived in both directions, then written
//! into a portal through its API: one blueprint per kind (`component`, `api`, ..., with `--blueprint-prefix`),
//! created when absent, each entity keyed `namespace/name` with its descriptor kept as authored. Re-running it
//! reconciles: what this source wrote before and is no longer in the files is deleted (only that: the source
//! is a property of each entity). An entity Backstage would reject is named with its file and reason, and
//! the exit status says so; a reference to an entity that does not exist stays a reference and is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_model::backstage::{self, Entity};
use reqwest::Method;
use serde_json::{Value, json};

use crate::port_api::{PortApi, segment};

#[derive(clap::Args)]
pub struct BackstageArgs {
    /// Descriptor files, folders (every .yaml / .yml under them) and globs (`*`, `**`)
    #[arg(required = true)]
    paths: Vec<String>,
    /// The portal's API URL; without it, the catalog in --data-dir (or --store) is written directly
    #[arg(long, env = "BERTH_URL")]
    url: Option<String>,
    /// An app's client id (with --url)
    #[arg(long, env = "BERTH_CLIENT_ID", default_value = "")]
    client_id: String,
    /// Its secret
    #[arg(long, env = "BERTH_CLIENT_SECRET", hide_env_values = true, default_value = "")]
    client_secret: String,
    /// Without --url: the data directory written into (no server may be writing it) [default: ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Without --url: the store URL [default: sqlite://<data-dir>/berth.db]
    #[arg(long, env = "BERTH_STORE")]
    store: Option<String>,
    /// This import's name: what a later import of the same name reconciles [default: the first path]
    #[arg(long)]
    source: Option<String>,
    /// A prefix for the blueprints' identifiers (when the catalog has a `system` of its own, say)
    #[arg(long, default_value = "")]
    blueprint_prefix: String,
}

/// Where an entity was read: the Location entity whose target named its file (none for a file given on
/// the command line), its file and the file the chain started from (as Backstage's `managed-by-location`
/// and `managed-by-origin-location` annotations write them: `file:<absolute path>`).
#[derive(Clone, Debug, PartialEq)]
struct Origin {
    parent: Option<String>,
    location: String,
    root: String,
}

/// What was read: the entities (by reference key) and where each came from, the problems found, the files
/// read.
#[derive(Default)]
struct Read {
    entities: BTreeMap<String, (Entity, String)>,
    origins: BTreeMap<String, Origin>,
    invalid: Vec<(String, String)>,
    files: BTreeSet<PathBuf>,
    /// `kind|namespace/name` of entities refused now: what an earlier import wrote of them is kept.
    refused: BTreeSet<String>,
    /// A file or document could not be read at all: nothing is deleted (its entities are not known).
    unreadable: bool,
}

/// Whether `name` matches the glob segment `pattern` (`*` any run of characters, `?` one).
fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Every descriptor file under `dir` (recursively), in name order.
fn yaml_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_under(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

/// The files a path names: a file, a folder's descriptors, or a glob's matches.
fn expand(path: &str) -> Vec<PathBuf> {
    if !path.contains(['*', '?']) {
        let p = PathBuf::from(path);
        if p.is_dir() {
            let mut out = Vec::new();
            yaml_under(&p, &mut out);
            return out;
        }
        return vec![p];
    }
    // The part before the first wildcard is walked; the rest is matched segment by segment (`**`: any depth).
    let parts: Vec<&str> = path.split('/').collect();
    let fixed = parts.iter().take_while(|s| !s.contains(['*', '?'])).count();
    let base = if fixed == 0 { PathBuf::from(".") } else { PathBuf::from(parts[..fixed].join("/")) };
    let pattern = &parts[fixed..];
    let mut all = Vec::new();
    yaml_under(&base, &mut all);
    all.into_iter()
        .filter(|f| {
            let rel: Vec<String> = f
                .strip_prefix(&base)
                .map(|r| r.iter().map(|s| s.to_string_lossy().to_string()).collect())
                .unwrap_or_default();
            glob_match(pattern, &rel)
        })
        .collect()
}

fn glob_match(pattern: &[&str], path: &[String]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => glob_match(&pattern[1..], path) || (!path.is_empty() && glob_match(pattern, &path[1..])),
        (Some(p), Some(n)) => matches(p, n) && glob_match(&pattern[1..], &path[1..]),
        _ => false,
    }
}

/// Reads `file` and the locations it names, once each; `parent` is the Location entity that named it and
/// `root` the location its chain started from (none: `file` itself).
fn read_file(file: &Path, read: &mut Read, parent: Option<&str>, root: Option<&str>) {
    let canonical = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
    if !read.files.insert(canonical.clone()) {
        return;
    }
    let location = format!("file:{}", canonical.display());
    let root = root.unwrap_or(&location).to_string();
    let shown = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            read.invalid.push((shown, format!("cannot be read: {e}")));
            read.unreadable = true;
            return;
        }
    };
    for (i, doc) in backstage::documents(&text).into_iter().enumerate() {
        let doc = match doc {
            Ok(d) => d,
            Err(e) => {
                read.invalid.push((shown.clone(), e));
                read.unreadable = true;
                continue;
            }
        };
        let label = doc.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string);
        let entity = match backstage::parse(&doc) {
            Ok(e) => e,
            Err(reason) => {
                if let (Some(kind), Some(name)) = (doc.get("kind").and_then(Value::as_str), &label) {
                    let ns = doc
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or(backstage::DEFAULT_NAMESPACE);
                    read.refused.insert(format!("{kind}|{ns}/{name}").to_lowercase());
                }
                let at = match label {
                    Some(n) => format!("{shown} (document {}, `{n}`)", i + 1),
                    None => format!("{shown} (document {})", i + 1),
                };
                read.invalid.push((at, reason));
                continue;
            }
        };
        if entity.kind == "Location" {
            let targets: Vec<String> = match (entity.spec.get("target"), entity.spec.get("targets")) {
                (Some(Value::String(t)), _) => vec![t.clone()],
                (_, Some(Value::Array(ts))) => ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
                _ => Vec::new(),
            };
            let remote = entity.spec.get("type").and_then(Value::as_str).is_some_and(|t| t == "url");
            for t in targets {
                if remote || t.contains("://") {
                    read.invalid.push((
                        format!("{shown} (`{}`)", entity.name),
                        format!("target {t:?} is remote: not followed (import its files)"),
                    ));
                    continue;
                }
                let dir = canonical.parent().map(Path::to_path_buf).unwrap_or_default();
                let me = entity.entity_ref().to_string();
                for target in expand(&dir.join(&t).to_string_lossy()) {
                    read_file(&target, read, Some(&me), Some(&root));
                }
            }
        }
        let key = entity.entity_ref().key();
        if let Some((_, first)) = read.entities.get(&key) {
            read.invalid.push((shown.clone(), format!("`{key}` is also defined in {first}; the first one is kept")));
            continue;
        }
        let origin = Origin { parent: parent.map(str::to_string), location: location.clone(), root: root.clone() };
        read.origins.insert(key.clone(), origin);
        read.entities.insert(key, (entity, shown.clone()));
    }
}

/// A kind's blueprint identifier.
fn blueprint_of(prefix: &str, kind: &str) -> String {
    format!("{prefix}{}", kind.to_lowercase())
}

fn blueprint_body(prefix: &str, kind: &str) -> Value {
    let text = |title: &str| json!({"type": "string", "title": title});
    json!({"identifier": blueprint_of(prefix, kind), "title": format!("{kind} (Backstage)"), "icon": "Backstage",
        "schema": {"properties": {
            "name": text("Name"), "namespace": text("Namespace"), "description": text("Description"),
            "type": text("Type"), "lifecycle": text("Lifecycle"), "owner": text("Owner"), "system": text("System"),
            "tags": {"type": "array", "title": "Tags", "items": {"type": "string"}},
            "descriptor": {"type": "object", "title": "Descriptor (as authored)"},
            "relations": {"type": "array", "title": "Relations (as Backstage derives them)", "items": {"type": "object"}},
            "parent": text("The Location it came from"), "source": text("Imported from")}, "required": []}})
}

/// An entity's body in the portal: its descriptor as authored, plus the location annotations Backstage's
/// catalog adds (unless the descriptor has its own).
fn entity_body(e: &Entity, relations: &[Value], source: &str, origin: Option<&Origin>) -> Value {
    let text =
        |v: Option<&Value>| v.and_then(Value::as_str).map(|s| Value::String(s.to_string())).unwrap_or(Value::Null);
    let mut metadata = e.metadata.clone();
    if let Some(o) = origin {
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            a.entry("backstage.io/managed-by-location").or_insert_with(|| json!(o.location));
            a.entry("backstage.io/managed-by-origin-location").or_insert_with(|| json!(o.root));
        }
    }
    let descriptor = json!({"apiVersion": e.api_version, "kind": e.kind, "metadata": metadata, "spec": e.spec});
    let mut properties = json!({"name": e.name, "namespace": e.namespace, "descriptor": descriptor,
        "parent": origin.and_then(|o| o.parent.clone()),
        "relations": relations, "source": source,
        "description": text(e.metadata.get("description")), "type": text(e.spec.get("type")),
        "lifecycle": text(e.spec.get("lifecycle")), "owner": text(e.spec.get("owner")), "system": text(e.spec.get("system")),
        "tags": e.metadata.get("tags").cloned().unwrap_or_else(|| json!([]))});
    if let Some(p) = properties.as_object_mut() {
        p.retain(|_, v| !v.is_null());
    }
    let title = e.metadata.get("title").and_then(Value::as_str).unwrap_or(&e.name);
    json!({"identifier": format!("{}/{}", e.namespace, e.name).to_lowercase(), "title": title, "properties": properties})
}

/// The largest entity written (the API takes 1 MiB a request).
const MAX_ENTITY_BYTES: usize = 1_000_000;

/// Bulk writes of at most 500 entities and about 768 KiB of JSON each (an owner's relations can be long;
/// the API takes 1 MiB a request).
fn chunks(bodies: &[Value]) -> Vec<&[Value]> {
    const MAX_ITEMS: usize = 500;
    const MAX_BYTES: usize = 768 * 1024;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, b) in bodies.iter().enumerate() {
        let size = serde_json::to_vec(b).map(|v| v.len()).unwrap_or(0);
        if i > start && (i - start >= MAX_ITEMS || bytes + size > MAX_BYTES) {
            out.push(&bodies[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    out
}

/// The app `berth import backstage` makes for itself in a local catalog, deleted when it is done.
const LOCAL_CLIENT: &str = "berth-import-backstage";

/// The catalog in a local data directory, served on a loopback port for the length of an import (so it is
/// written through the same checks, audit and log as any other write), by an app of its own.
struct Local {
    api: PortApi,
    shown: String,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), berth_server::StartError>>,
}

impl Local {
    async fn open(args: &BackstageArgs) -> anyhow::Result<Local> {
        let data_dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from("berth-data"));
        let mut config = berth_server::ServerConfig::new(data_dir);
        config.store_url = args.store.clone();
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        // Subscriptions are delivered by the portal's own servers, from the log, when they next run.
        config.deliver = false;
        let secret = berth_server::auth::random_hex(32).map_err(|e| anyhow::anyhow!(e.message))?;
        config.bootstrap_client_id = Some(LOCAL_CLIENT.into());
        config.bootstrap_client_secret = Some(secret.clone());
        let server = berth_server::start(config).await.context("opening the local catalog")?;
        if let Some((email, _, path)) = &server.info.generated_user {
            println!("The catalog was empty: its first admin user is {email}, with the password in {}", path.display());
        }
        let shown = server.info.store.clone();
        let api = PortApi::new(&format!("http://{}", server.info.addr), LOCAL_CLIENT, &secret)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Ok(Local { api, shown, stop, served })
    }

    /// Deletes the import's app, then stops serving (a final snapshot is written).
    async fn close(self) -> anyhow::Result<()> {
        let deleted = self.api.call(Method::DELETE, &format!("/v1/apps/{LOCAL_CLIENT}"), None).await;
        let _ = self.stop.send(());
        self.served.await.context("the local server")?.context("the local server")?;
        deleted?.ok("deleting the import's own app")?;
        Ok(())
    }
}

pub async fn run(args: BackstageArgs) -> anyhow::Result<()> {
    match &args.url {
        Some(url) => {
            let api = PortApi::new(url, &args.client_id, &args.client_secret)?;
            import(&args, &api, &api.base).await
        }
        None => {
            let local = Local::open(&args).await?;
            let result = import(&args, &local.api, &local.shown).await;
            let closed = local.close().await;
            result.and(closed)
        }
    }
}

/// Reads the catalog at `args.paths` and writes it through `api` (`into` names it in the summary).
async fn import(args: &BackstageArgs, api: &PortApi, into: &str) -> anyhow::Result<()> {
    let mut read = Read::default();
    for path in &args.paths {
        let files = expand(path);
        if files.is_empty() {
            bail!("{path} names no descriptor file");
        }
        for f in files {
            read_file(&f, &mut read, None, None);
        }
    }
    let source = args.source.clone().unwrap_or_else(|| {
        std::fs::canonicalize(&args.paths[0]).map(|p| p.display().to_string()).unwrap_or_else(|_| args.paths[0].clone())
    });
    // Relations, both directions; a reference to nothing known stays a reference and is reported.
    let mut relations: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut dangling = BTreeSet::new();
    for (key, (e, file)) in &read.entities {
        let (rels, errors) = backstage::relations(e);
        for err in errors {
            read.invalid.push((format!("{file} (`{}`)", e.name), err));
        }
        for (from, rel) in rels {
            let target_key = rel.target.key();
            if from.key() == *key && !read.entities.contains_key(&target_key) {
                dangling.insert(format!("{} {} {}", e.entity_ref(), rel.kind, rel.target));
            }
            relations.entry(from.key()).or_default().insert((rel.kind.to_string(), rel.target.to_string()));
        }
    }
    let kinds: BTreeSet<&str> = read.entities.values().map(|(e, _)| e.kind.as_str()).collect();
    for kind in &kinds {
        let id = blueprint_of(&args.blueprint_prefix, kind);
        let answer = api.call(Method::GET, &format!("/v1/blueprints/{}", segment(&id)), None).await?;
        if answer.status.is_success() {
            let props = &answer.body["blueprint"]["schema"]["properties"];
            if props.get("descriptor").is_none() || props.get("source").is_none() {
                bail!(
                    "the portal has a blueprint `{id}` of its own: import with --blueprint-prefix (for example `backstage-`)"
                );
            }
            // A blueprint an earlier version made: the properties added since are added to it.
            let wanted = blueprint_body(&args.blueprint_prefix, kind);
            let mut schema = answer.body["blueprint"]["schema"].clone();
            let mut added = false;
            for (name, def) in wanted["schema"]["properties"].as_object().into_iter().flatten() {
                if schema["properties"].get(name).is_none() {
                    schema["properties"][name] = def.clone();
                    added = true;
                }
            }
            if added {
                api.call(Method::PATCH, &format!("/v1/blueprints/{}", segment(&id)), Some(&json!({"schema": schema})))
                    .await?
                    .ok(&format!("adding properties to blueprint `{id}`"))?;
            }
        } else {
            api.call(Method::POST, "/v1/blueprints", Some(&blueprint_body(&args.blueprint_prefix, kind)))
                .await?
                .ok(&format!("creating blueprint `{id}`"))?;
        }
    }
    let mut written = 0usize;
    let started = std::time::Instant::now();
    let mut bar = crate::progress::Progress::new(read.entities.len() as u64, "entities written");
    for kind in &kinds {
        let bp = blueprint_of(&args.blueprint_prefix, kind);
        let mut bodies: Vec<Value> = read
            .entities
            .iter()
            .filter(|(_, (e, _))| e.kind == *kind)
            .map(|(key, (e, _))| {
                let rels: Vec<Value> = relations
                    .get(key)
                    .into_iter()
                    .flatten()
                    .map(|(t, target)| json!({"type": t, "targetRef": target}))
                    .collect();
                entity_body(e, &rels, &source, read.origins.get(key))
            })
            .collect();
        // An entity larger than one request can carry is named, not written.
        bodies.retain(|b| {
            let size = serde_json::to_vec(b).map(|v| v.len()).unwrap_or(usize::MAX);
            let fits = size <= MAX_ENTITY_BYTES;
            if !fits {
                let id = b["identifier"].as_str().unwrap_or_default();
                read.invalid.push((
                    format!("{kind} `{id}`"),
                    format!("{size} bytes once stored; one entity may take at most {MAX_ENTITY_BYTES}"),
                ));
            }
            fits
        });
        for chunk in chunks(&bodies) {
            let path = format!("/v1/blueprints/{}/entities/bulk?upsert=true", segment(&bp));
            let value = api
                .call(Method::POST, &path, Some(&json!({"entities": chunk})))
                .await?
                .ok(&format!("writing `{bp}`"))?;
            if let Some(errors) = value["errors"].as_array().filter(|e| !e.is_empty()) {
                bail!("writing `{bp}` was refused: {}", Value::Array(errors.clone()));
            }
            written += chunk.len();
            bar.show(written as u64, kind, false);
        }
    }
    bar.show(written as u64, "", true);
    // Reconcile: what this source wrote before and the files no longer hold.
    let mut deleted = 0usize;
    let mut wanted: BTreeSet<String> = read
        .entities
        .values()
        .map(|(e, _)| format!("{}|{}/{}", e.kind.to_lowercase(), e.namespace, e.name).to_lowercase())
        .collect();
    wanted.extend(read.refused.iter().cloned());
    // A file that could not be read hides which entities it holds: nothing is deleted this time.
    let kinds_to_reconcile: &[&str] = if read.unreadable { &[] } else { &backstage::KINDS };
    if read.unreadable {
        eprintln!("note: a file could not be read, so nothing is deleted this time");
    }
    for kind in kinds_to_reconcile {
        let bp = blueprint_of(&args.blueprint_prefix, kind);
        let exists = api.call(Method::GET, &format!("/v1/blueprints/{}", segment(&bp)), None).await?;
        if !exists.status.is_success() {
            continue;
        }
        let mut stale = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut body = json!({"limit": 1000, "include": ["identifier"],
                "query": {"combinator": "and", "rules": [{"property": "source", "operator": "=", "value": source}]}});
            if let Some(f) = &from {
                body["from"] = Value::String(f.clone());
            }
            let page = api
                .call(Method::POST, &format!("/v1/blueprints/{}/entities/search", segment(&bp)), Some(&body))
                .await?
                .ok(&format!("reading `{bp}`"))?;
            for e in page["entities"].as_array().into_iter().flatten() {
                let id = e["identifier"].as_str().unwrap_or_default();
                if !wanted.contains(&format!("{}|{id}", kind.to_lowercase())) {
                    stale.push(id.to_string());
                }
            }
            match page["next"].as_str() {
                Some(n) => from = Some(n.to_string()),
                None => break,
            }
        }
        for chunk in stale.chunks(1000) {
            let path = format!("/v1/blueprints/{}/bulk/entities/delete", segment(&bp));
            api.call(Method::POST, &path, Some(&json!({"entities": chunk})))
                .await?
                .ok(&format!("deleting from `{bp}`"))?;
            deleted += chunk.len();
        }
    }
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (e, _) in read.entities.values() {
        *by_kind.entry(e.kind.as_str()).or_default() += 1;
    }
    println!(
        "imported {} entities from {} files into {} ({:.1} s):",
        read.entities.len(),
        read.files.len(),
        into,
        started.elapsed().as_secs_f64()
    );
    for (kind, n) in &by_kind {
        println!("  {kind:<10} {n}");
    }
    println!("  deleted    {deleted} (no longer in the files)");
    if !dangling.is_empty() {
        println!("{} references to entities that do not exist (kept as references):", dangling.len());
        for d in dangling.iter().take(50) {
            println!("  {d}");
        }
    }
    if !read.invalid.is_empty() {
        eprintln!("{} descriptors were not imported:", read.invalid.len());
        for (at, reason) in &read.invalid {
            eprintln!("  {at}: {reason}");
        }
        bail!("{} descriptors were not imported (listed above)", read.invalid.len());
    }
    Ok(())
}

/// What an import found, for tests of the reading alone.
#[cfg(test)]
fn read_paths(paths: &[&str]) -> Read {
    let mut read = Read::default();
    for p in paths {
        for f in expand(p) {
            read_file(&f, &mut read, None, None);
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_writes_are_bounded_by_count_and_size() {
        let small: Vec<Value> = (0..1_200).map(|i| json!({"identifier": format!("e{i}")})).collect();
        assert_eq!(chunks(&small).iter().map(|c| c.len()).collect::<Vec<_>>(), [500, 500, 200]);
        let big: Vec<Value> =
            (0..10).map(|i| json!({"identifier": format!("e{i}"), "p": "x".repeat(300 * 1024)})).collect();
        let sizes: Vec<usize> = chunks(&big).iter().map(|c| c.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(sizes.iter().all(|n| *n <= 2), "{sizes:?}");
    }

    #[test]
    fn globs_match_segments_and_any_depth() {
        assert!(matches("*.yaml", "catalog-info.yaml") && !matches("*.yaml", "x.yml") && matches("a?c", "abc"));
        let p = |s: &str| s.split('/').map(str::to_string).collect::<Vec<_>>();
        assert!(glob_match(&["**", "*.yaml"], &p("a/b/c.yaml")));
        assert!(glob_match(&["**", "*.yaml"], &p("c.yaml")));
        assert!(!glob_match(&["*", "*.yaml"], &p("a/b/c.yaml")));
    }

    #[test]
    fn locations_are_followed_once_and_bad_descriptors_named() {
        let dir = tempfile::tempdir().expect("dir");
        let w = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            std::fs::write(p, text).expect("write");
        };
        w(
            "root.yaml",
            "apiVersion: backstage.io/v1alpha1\nkind: Location\nmetadata: {name: root}\nspec: {targets: [./teams/*.yaml, ./root.yaml]}\n",
        );
        w(
            "teams/a.yaml",
            "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata: {name: a}\nspec: {type: team, children: []}\n---\napiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata: {name: 'bad name'}\nspec: {type: team, children: []}\n",
        );
        let read = read_paths(&[&dir.path().join("root.yaml").to_string_lossy()]);
        assert_eq!(read.files.len(), 2, "the root read once though it names itself");
        assert!(read.entities.contains_key("group:default/a") && read.entities.contains_key("location:default/root"));
        assert_eq!(read.invalid.len(), 1);
        assert!(
            read.invalid[0].0.contains("bad name") && read.invalid[0].1.contains("metadata.name"),
            "{:?}",
            read.invalid
        );
    }
}
