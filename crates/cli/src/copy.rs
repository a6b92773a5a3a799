//! `berth copy --from URL --to URL`, `berth export --from URL --out FILE` and `berth import FILE --to URL`:
//! a catalog moved between portals through Port's public API only, so it works from Port to Berth, from
//! Berth to Berth and from Berth to Port; or kept as one JSON file.
//!
//! What moves: teams (names and descriptions; members are people, who sign in on each side), blueprints,
//! entities with their relations, scorecards, actions and automations with their permissions, and inbound
//! webhooks. Derived values (mirror, calculation, aggregation properties) are not copied: the target
//! computes them. Writes happen in phases, so relations and blueprint references never point at what is not
//! there yet: blueprints without relations, then with optional relations; entities without relations; their
//! relations; the blueprints whole (required relations, derived properties); then scorecards, actions and
//! webhooks. Every write is an upsert, so a phase done twice does no harm.
//!
//! **Resumable.** A state file (`--state`, by default `berth-copy-<hash of the two ends>.json`) records the
//! phases done and, within the entity phases, the page reached per blueprint; after an interruption the same
//! command goes on from there. **Verified.** At the end both sides are read again: per blueprint, the count
//! and a SHA-256 digest of the entities' content (identifier, title, icon, team, properties, relations; not
//! the times or writers), printed as a table and written with `--report`; a difference fails the command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::port_api::{PortApi, segment};

/// Entities read per page (the API's maximum).
const PAGE: usize = 1_000;
/// Entities per bulk write: Port takes 20, Berth more.
const PORT_BATCH: usize = 20;
const BERTH_BATCH: usize = 500;

#[derive(clap::Args)]
pub struct CopyArgs {
    /// The source portal's API URL (Port: https://api.getport.io)
    #[arg(long)]
    from: String,
    /// The target portal's API URL
    #[arg(long)]
    to: String,
    /// The source app's client id
    #[arg(long, env = "BERTH_FROM_CLIENT_ID")]
    from_client_id: String,
    /// The source app's client secret
    #[arg(long, env = "BERTH_FROM_CLIENT_SECRET", hide_env_values = true)]
    from_client_secret: String,
    /// The target app's client id
    #[arg(long, env = "BERTH_TO_CLIENT_ID")]
    to_client_id: String,
    /// The target app's client secret
    #[arg(long, env = "BERTH_TO_CLIENT_SECRET", hide_env_values = true)]
    to_client_secret: String,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The portal's API URL
    #[arg(long, env = "BERTH_URL")]
    from: String,
    /// An app's client id
    #[arg(long, env = "BERTH_CLIENT_ID")]
    client_id: String,
    /// Its secret
    #[arg(long, env = "BERTH_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// The JSON file to write
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ImportArgs {
    #[command(subcommand)]
    from: Option<ImportFrom>,
    /// A file `berth export` wrote
    file: Option<PathBuf>,
    /// The portal's API URL
    #[arg(long, env = "BERTH_URL")]
    to: Option<String>,
    /// An app's client id
    #[arg(long, env = "BERTH_CLIENT_ID")]
    client_id: Option<String>,
    /// Its secret
    #[arg(long, env = "BERTH_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Subcommand)]
enum ImportFrom {
    /// A Backstage catalog: descriptor files, folders and globs, locations followed, relations derived,
    /// reconciled on a re-run
    Backstage(crate::backstage_import::BackstageArgs),
}

#[derive(clap::Args)]
struct Common {
    /// Where progress is kept to resume an interrupted copy [default: berth-copy-<hash>.json]
    #[arg(long)]
    state: Option<PathBuf>,
    /// Write the verification report (JSON) here too
    #[arg(long)]
    report: Option<PathBuf>,
    /// Entities per bulk write [default: 20 into Port, 500 into Berth]
    #[arg(long)]
    batch: Option<usize>,
}

/// Everything but the entities, as the source's API shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Definitions {
    teams: Vec<Value>,
    blueprints: Vec<Value>,
    scorecards: Vec<Value>,
    actions: Vec<Value>,
    /// Action identifier → its permissions.
    #[serde(default)]
    action_permissions: BTreeMap<String, Value>,
    webhooks: Vec<Value>,
}

/// The export file: the definitions and every blueprint's entities.
#[derive(Serialize, Deserialize)]
struct ExportFile {
    format: String,
    exported_from: String,
    definitions: Definitions,
    entities: BTreeMap<String, Vec<Value>>,
}

const FORMAT: &str = "berth-export/1";

/// Where entities are read from.
enum Source {
    Api(PortApi),
    File(ExportFile),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::Api(api) => api.base.clone(),
            Source::File(f) => format!("an export of {}", f.exported_from),
        }
    }

    async fn definitions(&self) -> anyhow::Result<Definitions> {
        match self {
            Source::Api(api) => read_definitions(api).await,
            Source::File(f) => Ok(f.definitions.clone()),
        }
    }

    /// One page of a blueprint's entities (derived values left out) and the cursor of the next.
    async fn page(&self, blueprint: &str, from: Option<&str>) -> anyhow::Result<(Vec<Value>, Option<String>)> {
        match self {
            Source::Api(api) => entity_page(api, blueprint, from).await,
            Source::File(f) => {
                let all = f.entities.get(blueprint).map(Vec::as_slice).unwrap_or_default();
                let start: usize = from.and_then(|c| c.parse().ok()).unwrap_or(0);
                let end = (start + PAGE).min(all.len());
                let next = (end < all.len()).then(|| end.to_string());
                Ok((all.get(start..end).unwrap_or_default().to_vec(), next))
            }
        }
    }
}

/// The fields a portal sets itself, left out of what is written.
const BOOKKEEPING: [&str; 6] = ["createdAt", "updatedAt", "createdBy", "updatedBy", "id", "$datasource"];

fn strip(v: &Value, more: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        for k in BOOKKEEPING.iter().chain(more) {
            m.remove(*k);
        }
    }
    v
}

fn list(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
}

async fn read_definitions(api: &PortApi) -> anyhow::Result<Definitions> {
    let teams = list(&api.get("/v1/teams").await?, "teams");
    let blueprints = list(&api.get("/v1/blueprints").await?, "blueprints");
    let scorecards = list(&api.get("/v1/scorecards").await?, "scorecards");
    let actions = list(&api.get("/v1/actions").await?, "actions");
    let mut action_permissions = BTreeMap::new();
    for a in &actions {
        let Some(id) = a["identifier"].as_str() else { continue };
        let answer = api.call(Method::GET, &format!("/v1/actions/{}/permissions", segment(id)), None).await?;
        if answer.status.is_success() {
            action_permissions.insert(id.to_string(), answer.body["permissions"].clone());
        }
    }
    // Port answers its webhooks under `integrations`.
    let webhooks = list(&api.get("/v1/webhooks").await?, "integrations");
    Ok(Definitions { teams, blueprints, scorecards, actions, action_permissions, webhooks })
}

async fn entity_page(
    api: &PortApi,
    blueprint: &str,
    from: Option<&str>,
) -> anyhow::Result<(Vec<Value>, Option<String>)> {
    let mut body = json!({"limit": PAGE});
    if let Some(f) = from {
        body["from"] = Value::String(f.to_string());
    }
    let path = format!("/v1/blueprints/{}/entities/search?exclude_calculated_properties=true", segment(blueprint));
    let answer = api.call(Method::POST, &path, Some(&body)).await?.ok(&format!("reading `{blueprint}`"))?;
    Ok((list(&answer, "entities"), answer["next"].as_str().map(str::to_string)))
}

/// What is kept of a run: the phases done and where each entity phase got to.
#[derive(Default, Serialize, Deserialize)]
struct State {
    from: String,
    to: String,
    done: Vec<String>,
    /// `phase/blueprint` → the cursor of the next page to copy (`""`: the blueprint is done).
    pages: BTreeMap<String, String>,
    entities: u64,
}

struct Run {
    source: Source,
    target: PortApi,
    batch: usize,
    state: State,
    state_path: PathBuf,
    started: Instant,
    bar: crate::progress::Progress,
    notes: Vec<String>,
}

impl Run {
    fn save(&self) -> anyhow::Result<()> {
        let tmp = self.state_path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.state)?)?;
        std::fs::rename(&tmp, &self.state_path).context("saving the copy's state")
    }

    fn done(&self, phase: &str) -> bool {
        self.state.done.iter().any(|p| p == phase)
    }

    fn finish(&mut self, phase: &str) -> anyhow::Result<()> {
        self.state.done.push(phase.to_string());
        self.save()?;
        eprintln!("  {phase}: done");
        Ok(())
    }

    /// The progress bar (at most one line a second).
    fn progress(&mut self, label: &str) {
        self.bar.show(self.state.entities, label, false);
    }

    /// An upsert of a definition: PUT where it exists, else POST.
    async fn put_or_post(&self, put: &str, post: &str, body: &Value, what: &str) -> anyhow::Result<()> {
        let answer = self.target.call(Method::PUT, put, Some(body)).await?;
        if answer.status == reqwest::StatusCode::NOT_FOUND {
            self.target.call(Method::POST, post, Some(body)).await?.ok(what)?;
            return Ok(());
        }
        answer.ok(what).map(|_| ())
    }
}

/// A blueprint as a phase writes it: `schema` only, with optional relations, or whole.
fn blueprint_stage(b: &Value, stage: u8) -> Value {
    let mut v = strip(b, &[]);
    let Some(m) = v.as_object_mut() else { return v };
    if stage < 3 {
        for k in ["mirrorProperties", "calculationProperties", "aggregationProperties", "changelogDestination"] {
            m.remove(k);
        }
    }
    match stage {
        1 => {
            m.insert("relations".into(), json!({}));
        }
        2 => {
            if let Some(Value::Object(rels)) = m.get_mut("relations") {
                for r in rels.values_mut() {
                    r["required"] = Value::Bool(false);
                }
            }
        }
        _ => {}
    }
    v
}

/// An entity as the entity phases write it: without relations, or its relations only.
fn entity_stage(e: &Value, relations: bool) -> Value {
    if relations {
        json!({"identifier": e["identifier"], "relations": e.get("relations").cloned().unwrap_or_else(|| json!({}))})
    } else {
        let mut v = strip(e, &["relations", "blueprint", "scorecards"]);
        if let Some(p) = v.get_mut("properties").and_then(Value::as_object_mut) {
            p.retain(|_, v| !v.is_null());
        }
        v
    }
}

async fn copy_entities(run: &mut Run, blueprints: &[String], relations: bool) -> anyhow::Result<()> {
    let phase = if relations { "relations" } else { "entities" };
    for bp in blueprints {
        let key = format!("{phase}/{bp}");
        let mut cursor = match run.state.pages.get(&key) {
            Some(c) if c.is_empty() => continue,
            Some(c) => Some(c.clone()),
            None => None,
        };
        loop {
            let (entities, next) = run.source.page(bp, cursor.as_deref()).await?;
            let query = if relations { "upsert=true&merge=true" } else { "upsert=true" };
            let path = format!("/v1/blueprints/{}/entities/bulk?{query}", segment(bp));
            for chunk in entities.chunks(run.batch.max(1)) {
                let body: Vec<Value> = chunk.iter().map(|e| entity_stage(e, relations)).collect();
                let answer = run.target.call(Method::POST, &path, Some(&json!({"entities": body}))).await?;
                let value = answer.ok(&format!("writing entities of `{bp}`"))?;
                if let Some(errors) = value["errors"].as_array().filter(|e| !e.is_empty()) {
                    bail!("writing entities of `{bp}` was refused: {}", Value::Array(errors.clone()));
                }
                run.state.entities += chunk.len() as u64;
                run.progress(&format!("{phase} of {bp}"));
            }
            run.state.pages.insert(key.clone(), next.clone().unwrap_or_default());
            run.save()?;
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
    }
    Ok(())
}

/// How many entities the source holds, for the progress bar.
async fn count(source: &Source, blueprint: &str) -> u64 {
    match source {
        Source::Api(api) => api
            .get(&format!("/v1/blueprints/{}/entities-count", segment(blueprint)))
            .await
            .ok()
            .and_then(|v| v["count"].as_u64())
            .unwrap_or(0),
        Source::File(f) => f.entities.get(blueprint).map_or(0, |e| e.len() as u64),
    }
}

/// Blueprints in an order where each one's relation targets come first where they can (cycles keep the
/// rest in identifier order; the phases do not depend on it).
fn ordered(blueprints: &[Value]) -> Vec<Value> {
    let mut left: Vec<Value> = blueprints.to_vec();
    left.sort_by(|a, b| a["identifier"].as_str().cmp(&b["identifier"].as_str()));
    let mut out: Vec<Value> = Vec::new();
    while !left.is_empty() {
        let placed: Vec<String> = out.iter().filter_map(|b| b["identifier"].as_str().map(str::to_string)).collect();
        let ready = left.iter().position(|b| {
            b["relations"].as_object().is_none_or(|rels| {
                rels.values().all(|r| {
                    let t = r["target"].as_str().unwrap_or_default();
                    t == b["identifier"].as_str().unwrap_or_default() || placed.iter().any(|p| p == t)
                })
            })
        });
        out.push(left.remove(ready.unwrap_or(0)));
    }
    out
}

async fn write_all(run: &mut Run) -> anyhow::Result<Report> {
    let defs = run.source.definitions().await?;
    let blueprints = ordered(&defs.blueprints);
    let names: Vec<String> = blueprints.iter().filter_map(|b| b["identifier"].as_str().map(str::to_string)).collect();
    let mut total = 0;
    for bp in &names {
        total += count(&run.source, bp).await * 2;
    }
    run.bar = crate::progress::Progress::new(total, "entity writes");
    eprintln!(
        "copying {} blueprints ({} entity writes), {} scorecards, {} actions, {} webhooks, {} teams from {} to {}",
        names.len(),
        total,
        defs.scorecards.len(),
        defs.actions.len(),
        defs.webhooks.len(),
        defs.teams.len(),
        run.source.name(),
        run.target.base
    );
    if !run.state.done.is_empty() || !run.state.pages.is_empty() {
        eprintln!("resuming: {} phases done, {} entity writes made", run.state.done.len(), run.state.entities);
    }
    if !run.done("teams") {
        for t in &defs.teams {
            let name = t["name"].as_str().unwrap_or_default();
            let body = json!({"name": name, "description": t["description"]});
            let answer = run.target.call(Method::POST, "/v1/teams", Some(&body)).await?;
            if !answer.status.is_success() && answer.status != reqwest::StatusCode::CONFLICT {
                answer.ok(&format!("creating team `{name}`"))?;
            }
        }
        run.finish("teams")?;
    }
    for (phase, stage) in [("blueprints", 1u8), ("relations-defined", 2u8)] {
        if run.done(phase) {
            continue;
        }
        for b in &blueprints {
            let id = b["identifier"].as_str().unwrap_or_default();
            let body = blueprint_stage(b, stage);
            // A blueprint that exists keeps what it has until the last stage replaces it whole.
            let exists = run.target.call(Method::GET, &format!("/v1/blueprints/{}", segment(id)), None).await?;
            if exists.status.is_success() && stage == 1 {
                continue;
            }
            run.put_or_post(
                &format!("/v1/blueprints/{}", segment(id)),
                "/v1/blueprints",
                &body,
                &format!("blueprint `{id}`"),
            )
            .await?;
        }
        run.finish(phase)?;
    }
    if !run.done("entities") {
        copy_entities(run, &names, false).await?;
        run.finish("entities")?;
    }
    if !run.done("relations") {
        copy_entities(run, &names, true).await?;
        run.finish("relations")?;
    }
    if !run.done("blueprints-whole") {
        for b in &blueprints {
            let id = b["identifier"].as_str().unwrap_or_default();
            run.put_or_post(
                &format!("/v1/blueprints/{}", segment(id)),
                "/v1/blueprints",
                &blueprint_stage(b, 3),
                &format!("blueprint `{id}`"),
            )
            .await?;
        }
        run.finish("blueprints-whole")?;
    }
    if !run.done("scorecards") {
        for s in &defs.scorecards {
            let (bp, id) = (s["blueprint"].as_str().unwrap_or_default(), s["identifier"].as_str().unwrap_or_default());
            let body = strip(s, &["blueprint"]);
            let one = format!("/v1/blueprints/{}/scorecards/{}", segment(bp), segment(id));
            let all = format!("/v1/blueprints/{}/scorecards", segment(bp));
            run.put_or_post(&one, &all, &body, &format!("scorecard `{id}` of `{bp}`")).await?;
        }
        run.finish("scorecards")?;
    }
    if !run.done("actions") {
        for a in &defs.actions {
            let id = a["identifier"].as_str().unwrap_or_default();
            let body = strip(a, &[]);
            run.put_or_post(&format!("/v1/actions/{}", segment(id)), "/v1/actions", &body, &format!("action `{id}`"))
                .await?;
            if let Some(p) = defs.action_permissions.get(id).filter(|p| p.is_object()) {
                let path = format!("/v1/actions/{}/permissions", segment(id));
                let answer = run.target.call(Method::PATCH, &path, Some(p)).await?;
                if !answer.status.is_success() {
                    run.notes.push(format!("action `{id}`: its permissions were not copied ({})", answer.status));
                }
            }
        }
        run.finish("actions")?;
    }
    if !run.done("webhooks") {
        for w in &defs.webhooks {
            let id = w["identifier"].as_str().unwrap_or_default();
            let mut body = strip(w, &["url", "webhookKey"]);
            let (one, what) = (format!("/v1/webhooks/{}", segment(id)), format!("webhook `{id}`"));
            if let Err(e) = run.put_or_post(&one, "/v1/webhooks", &body, &what).await {
                // A secret sealed by a portal with another key does not open here: the webhook comes without
                // its signature check, and the note says to set it again.
                if !e.to_string().contains("security.secret") {
                    return Err(e);
                }
                if let Some(sec) = body.get_mut("security").and_then(Value::as_object_mut) {
                    for k in ["secret", "signatureAlgorithm", "signatureHeaderName", "signaturePrefix"] {
                        sec.remove(k);
                    }
                }
                run.put_or_post(&one, "/v1/webhooks", &body, &what).await?;
                run.notes.push(format!(
                    "webhook `{id}`: its secret was sealed with the source's key, so it was copied without a signature check: set `security` again (PATCH /v1/webhooks/{id})"
                ));
            }
            let now = run.target.get(&format!("/v1/webhooks/{}", segment(id))).await?;
            if let Some(url) = now["integration"]["url"].as_str() {
                run.notes.push(format!("webhook `{id}` receives at {url}: point its sender there"));
            }
        }
        run.finish("webhooks")?;
    }
    Ok(Report {
        blueprints: names,
        definitions: vec![
            ("teams", defs.teams.len()),
            ("scorecards", defs.scorecards.len()),
            ("actions", defs.actions.len()),
            ("webhooks", defs.webhooks.len()),
        ],
    })
}

/// What the verification compares.
struct Report {
    blueprints: Vec<String>,
    definitions: Vec<(&'static str, usize)>,
}

/// An entity's content as both sides must agree on it.
fn canonical(e: &Value) -> Value {
    let mut team: Vec<Value> = match &e["team"] {
        Value::Array(t) => t.clone(),
        Value::String(s) => vec![Value::String(s.clone())],
        _ => Vec::new(),
    };
    team.sort_by_key(|t| t.to_string());
    let without_nulls = |v: &Value| -> Value {
        let m: Map<String, Value> = v
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(_, v)| !v.is_null() && *v != &json!([]))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Value::Object(m)
    };
    json!({"identifier": e["identifier"], "title": e.get("title").cloned().unwrap_or(Value::Null),
        "icon": e.get("icon").cloned().unwrap_or(Value::Null), "team": team,
        "properties": without_nulls(&e["properties"]), "relations": without_nulls(&e["relations"])})
}

/// The count and content digest of a blueprint's entities as `api` serves them.
async fn digest(api: &PortApi, blueprint: &str) -> anyhow::Result<(u64, String)> {
    let mut lines: Vec<String> = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let (page, next) = entity_page(api, blueprint, from.as_deref()).await?;
        lines.extend(page.iter().map(|e| canonical(e).to_string()));
        match next {
            Some(n) => from = Some(n),
            None => break,
        }
    }
    lines.sort();
    let mut hash = sha2::Sha256::new();
    for l in &lines {
        hash.update(l.as_bytes());
        hash.update(b"\n");
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((lines.len() as u64, hex))
}

async fn digest_of_source(source: &Source, blueprint: &str) -> anyhow::Result<(u64, String)> {
    match source {
        Source::Api(api) => digest(api, blueprint).await,
        Source::File(f) => {
            let mut lines: Vec<String> =
                f.entities.get(blueprint).into_iter().flatten().map(|e| canonical(e).to_string()).collect();
            lines.sort();
            let mut hash = sha2::Sha256::new();
            for l in &lines {
                hash.update(l.as_bytes());
                hash.update(b"\n");
            }
            Ok((lines.len() as u64, hash.finalize().iter().map(|b| format!("{b:02x}")).collect()))
        }
    }
}

/// Compares both sides, prints the table, writes `--report`; an error when anything differs.
async fn verify(run: &Run, report: &Report, out: Option<&Path>) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut same = true;
    println!(
        "{:<32} {:>10} {:>10} {:<14} {:<14} match",
        "blueprint", "source", "target", "source digest", "target digest"
    );
    for bp in &report.blueprints {
        let (sc, sd) = digest_of_source(&run.source, bp).await?;
        let (tc, td) = digest(&run.target, bp).await?;
        let ok = sc == tc && sd == td;
        same &= ok;
        println!("{bp:<32} {sc:>10} {tc:>10} {:<14} {:<14} {}", &sd[..12], &td[..12], if ok { "yes" } else { "NO" });
        rows.push(json!({"blueprint": bp, "source": {"count": sc, "digest": sd}, "target": {"count": tc, "digest": td}, "match": ok}));
    }
    let target_defs = read_definitions(&run.target).await?;
    let mut kinds = Vec::new();
    for (kind, source_count) in &report.definitions {
        let target_count = match *kind {
            "teams" => target_defs.teams.len(),
            "scorecards" => target_defs.scorecards.len(),
            "actions" => target_defs.actions.len(),
            _ => target_defs.webhooks.len(),
        };
        // The target may hold more of its own; it must hold at least what was copied.
        let ok = target_count >= *source_count;
        same &= ok;
        println!("{kind:<32} {source_count:>10} {target_count:>10}{:>32}", if ok { "yes" } else { "NO" });
        kinds.push(json!({"kind": kind, "source": source_count, "target": target_count, "match": ok}));
    }
    for note in &run.notes {
        eprintln!("note: {note}");
    }
    if let Some(path) = out {
        let doc = json!({"from": run.source.name(), "to": run.target.base, "blueprints": rows, "definitions": kinds,
            "notes": run.notes, "match": same, "seconds": run.started.elapsed().as_secs_f64()});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !same {
        bail!("the two sides differ (see the table above)");
    }
    println!(
        "verified: every blueprint's count and content digest match ({:.1} s)",
        run.started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn default_state(from: &str, to: &str) -> PathBuf {
    let hash = sha2::Sha256::digest(format!("{from}\n{to}").as_bytes());
    let short: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    PathBuf::from(format!("berth-copy-{short}.json"))
}

async fn run_into(source: Source, target: PortApi, common: Common) -> anyhow::Result<()> {
    let from = source.name();
    let state_path = common.state.clone().unwrap_or_else(|| default_state(&from, &target.base));
    let state = match std::fs::read(&state_path) {
        Ok(bytes) => {
            let s: State =
                serde_json::from_slice(&bytes).with_context(|| format!("reading {}", state_path.display()))?;
            if s.from != from || s.to != target.base {
                bail!(
                    "{} is the state of a copy from {} to {}; give another --state",
                    state_path.display(),
                    s.from,
                    s.to
                );
            }
            s
        }
        Err(_) => State { from: from.clone(), to: target.base.clone(), ..Default::default() },
    };
    let batch = match common.batch {
        Some(b) => b,
        None if target.is_berth().await => BERTH_BATCH,
        None => PORT_BATCH,
    };
    let mut run = Run {
        source,
        target,
        batch,
        state,
        state_path,
        started: Instant::now(),
        bar: crate::progress::Progress::new(0, "entity writes"),
        notes: Vec::new(),
    };
    run.save()?;
    let report = write_all(&mut run).await?;
    verify(&run, &report, common.report.as_deref()).await?;
    // Done: the next run with these ends starts afresh.
    let _ = std::fs::remove_file(&run.state_path);
    Ok(())
}

pub async fn copy(args: CopyArgs) -> anyhow::Result<()> {
    let source = PortApi::new(&args.from, &args.from_client_id, &args.from_client_secret)?;
    let target = PortApi::new(&args.to, &args.to_client_id, &args.to_client_secret)?;
    run_into(Source::Api(source), target, args.common).await
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    if let Some(ImportFrom::Backstage(b)) = args.from {
        return crate::backstage_import::run(b).await;
    }
    let path = args.file.context("give the file `berth export` wrote (or `berth import backstage PATH...`)")?;
    let to = args.to.context("give the portal's URL: --to or BERTH_URL")?;
    let (Some(client_id), Some(secret)) = (args.client_id, args.client_secret) else {
        bail!("set BERTH_CLIENT_ID and BERTH_CLIENT_SECRET (or --client-id and --client-secret)");
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: ExportFile =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a berth export", path.display()))?;
    if file.format != FORMAT {
        bail!("{} is in the format {:?}; this berth reads {FORMAT:?}", path.display(), file.format);
    }
    let target = PortApi::new(&to, &client_id, &secret)?;
    run_into(Source::File(file), target, args.common).await
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let api = PortApi::new(&args.from, &args.client_id, &args.client_secret)?;
    let definitions = read_definitions(&api).await?;
    let mut entities = BTreeMap::new();
    let mut total = 0usize;
    for b in &definitions.blueprints {
        let Some(bp) = b["identifier"].as_str() else { continue };
        let mut all = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let (page, next) = entity_page(&api, bp, from.as_deref()).await?;
            total += page.len();
            all.extend(page.iter().map(|e| strip(e, &["blueprint", "scorecards"])));
            match next {
                Some(n) => from = Some(n),
                None => break,
            }
        }
        eprintln!("  {bp}: {} entities", all.len());
        entities.insert(bp.to_string(), all);
    }
    let file = ExportFile { format: FORMAT.into(), exported_from: api.base.clone(), definitions, entities };
    let tmp = args.out.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&file)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out)?;
    println!(
        "exported {} blueprints and {total} entities from {} to {}",
        file.entities.len(),
        api.base,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blueprints_come_after_their_relation_targets_and_cycles_do_not_stall() {
        let bps = vec![
            json!({"identifier": "a", "relations": {"b": {"target": "b"}}}),
            json!({"identifier": "b", "relations": {"c": {"target": "c"}, "self": {"target": "b"}}}),
            json!({"identifier": "c"}),
            json!({"identifier": "x", "relations": {"y": {"target": "y"}}}),
            json!({"identifier": "y", "relations": {"x": {"target": "x"}}}),
        ];
        let order: Vec<String> =
            ordered(&bps).iter().map(|b| b["identifier"].as_str().unwrap_or_default().to_string()).collect();
        let at = |id: &str| order.iter().position(|o| o == id).unwrap_or(usize::MAX);
        assert!(at("c") < at("b") && at("b") < at("a"), "{order:?}");
        assert_eq!(order.len(), 5);
    }

    #[test]
    fn stages_leave_out_what_is_not_there_yet() {
        let b = json!({"identifier": "svc", "createdAt": "t", "schema": {"properties": {}},
            "relations": {"team": {"target": "team", "required": true}}, "mirrorProperties": {"m": {"path": "team.$title"}}});
        assert_eq!(blueprint_stage(&b, 1)["relations"], json!({}));
        assert!(
            blueprint_stage(&b, 1).get("mirrorProperties").is_none()
                && blueprint_stage(&b, 1).get("createdAt").is_none()
        );
        assert_eq!(blueprint_stage(&b, 2)["relations"]["team"]["required"], false);
        assert_eq!(blueprint_stage(&b, 3)["relations"]["team"]["required"], true);
        assert!(blueprint_stage(&b, 3).get("mirrorProperties").is_some());
        let e = json!({"identifier": "a", "title": "A", "properties": {"x": 1, "y": null}, "relations": {"team": "t"}, "updatedAt": "t"});
        assert_eq!(entity_stage(&e, false), json!({"identifier": "a", "title": "A", "properties": {"x": 1}}));
        assert_eq!(entity_stage(&e, true), json!({"identifier": "a", "relations": {"team": "t"}}));
        // Content digests ignore times, writers, nulls and team order.
        let other = json!({"identifier": "a", "title": "A", "team": [], "properties": {"x": 1}, "relations": {"team": "t"}, "createdBy": "me"});
        assert_eq!(canonical(&e), canonical(&other));
    }
}
