//! `berth bench --hostile`: generated hostile inputs against every parser a caller reaches, then against a
//! live server, then a restart.
//!
//! - **Parsers, in process** (`--count` inputs each): the rules language (`Query::parse`, then evaluated on a
//!   small catalog under a deadline), entity bodies (the server's `EntityBody` reader, then the engine's
//!   write), blueprint definitions (the engine's create), and the UI's entity form. Inputs are valid seeds
//!   mutated at random (subtrees replaced, keys of the grammar inserted, nesting deepened past every limit,
//!   lists lengthened, odd numbers and strings): most are refused, enough are accepted. Every accepted write
//!   is encoded as the log stores it, decoded, applied to a second catalog, and the catalogs' snapshots must
//!   load to the same digest. A panic or a write that does not read back is a failure.
//! - **HTTP** (a tenth of `--count` per route): the same inputs sent to search, aggregate, entity writes,
//!   bulk and blueprint routes of a real server; any 5xx but a 503 that says why (timeouts, busy) is a
//!   failure. Then the server is stopped and started again: it must come back ready with the same catalog.
//!
//! Exits non-zero on any failure. `cargo test` runs it small (`crates/cli/tests/hostile.rs`).

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use anyhow::bail;
use berth_engine::{Command, State, WriteMeta, WriteMode, decode_event, execute};
use berth_model::query::Query;
use berth_model::{EntityBody, Origin, Timestamp};
use serde_json::{Map, Value, json};

use crate::bench::{spawn, token, wait_ready};

/// A small deterministic generator (SplitMix64): the same seed gives the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Words of the grammars: keys and values a hostile caller would try.
const WORDS: &[&str] = &[
    "combinator",
    "rules",
    "conditions",
    "property",
    "operator",
    "value",
    "relation",
    "propertySchema",
    "scorecard",
    "blueprint",
    "identifier",
    "title",
    "icon",
    "team",
    "properties",
    "relations",
    "schema",
    "type",
    "format",
    "enum",
    "items",
    "default",
    "required",
    "pattern",
    "maxLength",
    "minimum",
    "$blueprint",
    "$identifier",
    "$team",
    "$title",
    "$createdAt",
    "and",
    "or",
    "=",
    "!=",
    "in",
    "notIn",
    "contains",
    "between",
    "relatedTo",
    "matchAny",
    "isEmpty",
    "string",
    "number",
    "object",
    "array",
    "boolean",
    "date-time",
    "url",
    "service",
    "svc",
    "deps",
    "owner",
    "cfg",
    "n",
    "tags",
    "path",
    "maxHops",
    "direction",
    "preset",
    "timeZone",
    "lastWeek",
    "Europe/Paris",
    "many",
    "target",
];

fn string(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => "x".repeat(rng.below(2_000)),
        1 => "\u{0}\u{1f}\t\n\"\\/\u{2028}\u{feff}".into(),
        2 => "é日本\u{10FFFF}😀".repeat(1 + rng.below(10)),
        3 => format!("{}-{}", rng.pick(WORDS), rng.below(100)),
        4 => String::new(),
        _ => rng.pick(WORDS).to_string(),
    }
}

fn number(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => json!(u64::MAX),
        1 => json!(i64::MIN),
        2 => json!(1e308),
        3 => json!(-0.0),
        4 => json!(1e-320),
        5 => json!(rng.below(100)),
        _ => json!((rng.next() as f64) / 3.0),
    }
}

/// A random JSON value of at most `depth` levels.
fn value(rng: &mut Rng, depth: usize) -> Value {
    let kinds = if depth == 0 { 5 } else { 7 };
    match rng.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 => number(rng),
        3 | 4 => Value::String(string(rng)),
        5 => Value::Array((0..rng.below(5)).map(|_| value(rng, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(5) {
                m.insert(string(rng), value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// Wraps `v` in `levels` arrays or objects.
fn nest(rng: &mut Rng, v: Value, levels: usize) -> Value {
    let arrays = rng.chance(50);
    (0..levels).fold(v, |v, _| if arrays { json!([v]) } else { json!({ "k": v }) })
}

/// One random change somewhere in `v`.
fn mutate(rng: &mut Rng, v: &mut Value, depth: usize) {
    let here = depth == 0 || rng.chance(30);
    match v {
        Value::Object(m) if !here && !m.is_empty() => {
            let key = m.keys().nth(rng.below(m.len())).cloned().unwrap_or_default();
            if let Some(inner) = m.get_mut(&key) {
                return mutate(rng, inner, depth.saturating_sub(1));
            }
        }
        Value::Array(a) if !here && !a.is_empty() => {
            let i = rng.below(a.len());
            return mutate(rng, &mut a[i], depth.saturating_sub(1));
        }
        _ => {}
    }
    match rng.below(8) {
        0 => *v = value(rng, 3),
        1 => {
            let levels = 30 + rng.below(110);
            *v = nest(rng, v.take(), levels);
        }
        2 => {
            if let Value::Object(m) = v {
                let key = rng.pick(WORDS).to_string();
                let val = value(rng, 2);
                m.insert(key, val);
            } else {
                *v = json!({ *rng.pick(WORDS): v.take() });
            }
        }
        3 => {
            // Long lists: of scalars up to 20,000 items, of anything else a few.
            let item = match &*v {
                Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
                other => other.clone(),
            };
            let n = if item.is_array() || item.is_object() { 1 + rng.below(8) } else { rng.below(20_000) };
            if let Value::Array(a) = v {
                a.extend(std::iter::repeat_n(item, n));
            } else {
                *v = Value::Array(vec![item; n.max(1)]);
            }
        }
        4 => *v = number(rng),
        5 => *v = Value::String(string(rng)),
        6 => {
            if let Value::Object(m) = v {
                if let Some(key) = m.keys().nth(rng.below(m.len().max(1))).cloned() {
                    m.remove(&key);
                }
            }
        }
        _ => *v = json!(rng.pick(WORDS)),
    }
}

/// The largest input generated (the API takes at most 1 MiB anyway).
const MAX_INPUT: usize = 256 << 10;

fn hostile(rng: &mut Rng, seeds: &[Value]) -> Value {
    let mut v = rng.pick(seeds).clone();
    for _ in 0..1 + rng.below(3) {
        let before = v.clone();
        mutate(rng, &mut v, 4);
        if serde_json::to_vec(&v).map_or(true, |b| b.len() > MAX_INPUT) {
            v = before;
        }
    }
    v
}

fn query_seeds() -> Vec<Value> {
    vec![
        json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "svc"}]}),
        json!({"combinator": "or", "rules": [{"property": "n", "operator": ">", "value": 3},
            {"relation": "deps", "operator": "in", "value": ["a", "b"]}]}),
        json!({"combinator": "and", "rules": [{"operator": "relatedTo", "blueprint": "svc", "value": "a"},
            {"property": "$createdAt", "operator": "between", "value": {"preset": "lastWeek", "timeZone": "Europe/Paris"}}]}),
        json!({"combinator": "and", "rules": [{"operator": "matchAny", "property": {"path": [{"relation": "deps", "maxHops": 3}]}, "value": ["a"]},
            {"propertySchema": {"type": "string"}, "operator": "contains", "value": "x"}]}),
    ]
}

fn entity_seeds() -> Vec<Value> {
    vec![
        json!({"identifier": "a", "title": "A", "properties": {"n": 1, "tags": ["x"], "cfg": {"k": [1, 2]}, "s": "t"}}),
        json!({"identifier": "b", "team": [], "relations": {"deps": ["a"]}, "properties": {"when": "2024-01-01T00:00:00Z"}}),
        json!({"identifier": {"combinator": "and", "rules": [{"property": "$identifier", "operator": "=", "value": "a"}]},
            "properties": {"n": 2}}),
        json!({"identifier": "c", "relations": {"deps": {"combinator": "and", "rules": [{"property": "n", "operator": ">", "value": 0}]}}}),
    ]
}

fn blueprint_seeds() -> Vec<Value> {
    vec![
        json!({"identifier": "x", "title": "X", "schema": {"properties": {"n": {"type": "number", "minimum": 0},
            "s": {"type": "string", "enum": ["a", "b"], "enumColors": {"a": "red"}}, "o": {"type": "object"},
            "u": {"type": "string", "format": "url"}}, "required": ["n"]},
            "relations": {"r": {"target": "svc", "many": true, "required": false}}}),
        json!({"identifier": "y", "title": "Y", "schema": {"properties": {"l": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}}}},
            "ownership": {"type": "Inherited", "path": "r"}, "relations": {"r": {"target": "svc"}}}),
    ]
}

/// Actions the battery mutates: a self-service one with every kind of input rule, an automation.
fn action_seeds() -> Vec<Value> {
    vec![
        json!({"title": "Deploy", "trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "svc",
            "condition": {"type": "SEARCH", "combinator": "and", "rules": [{"property": "n", "operator": ">", "value": 0}]},
            "userInputs": {"properties": {
                "v": {"type": "string", "pattern": "^v[0-9]+$", "maxLength": 12},
                "n": {"type": "number", "minimum": 1, "maximum": 9, "default": 2},
                "env": {"type": "string", "enum": ["a", "b"], "visible": {"jqQuery": ".form.n > 1"}},
                "dep": {"type": "string", "format": "entity", "blueprint": "svc",
                    "dataset": {"combinator": "and", "rules": [{"property": "n", "operator": "=", "value": {"jqQuery": ".form.n"}}]}},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                "secret": {"type": "string", "encryption": "aes256-gcm"}},
                "required": {"jqQuery": "if .form.n > 3 then [\"v\"] else [] end"}, "order": ["v", "n"],
                "steps": [{"title": "One", "order": ["v"]}]}},
            "invocationMethod": {"type": "WEBHOOK", "url": "https://x.example.com/{{ .inputs.v }}",
                "headers": {"A": "{{ .secrets.S }}"}, "body": {"v": "{{ .inputs.v | ascii_downcase }}", "n": "{{ .inputs.n * 2 }}"}},
            "requiredApproval": {"type": "ALL"}}),
        json!({"title": "On update", "trigger": {"type": "automation", "event": {"type": "ENTITY_UPDATED", "blueprintIdentifier": "svc"},
            "condition": {"type": "JQ", "combinator": "or", "expressions": [".diff.after.properties.n > 1"]}},
            "invocationMethod": {"type": "UPSERT_ENTITY", "blueprintIdentifier": "svc",
                "mapping": {"identifier": "{{ .event.diff.after.identifier }}", "properties": {"n": 1}}}}),
    ]
}

/// Run inputs the battery mutates, for the first action seed.
fn run_seeds() -> Vec<Value> {
    vec![
        json!({"properties": {"v": "v1", "n": 3, "env": "a", "dep": "a", "tags": ["x"]}, "entity": "a"}),
        json!({"properties": {"v": "v2", "n": 5, "secret": {"sealed": "AAAA"}}, "entity": "b"}),
    ]
}

fn meta(now: i64) -> WriteMeta {
    WriteMeta {
        actor: "hostile".into(),
        origin: Origin::Api,
        now: Timestamp::from_millis(1_700_000_000_000 + now),
        datasource: None,
        run_id: None,
        principal: None,
    }
}

/// The catalog the parsers write into, and a second one rebuilt only from the encoded log.
struct Catalogs {
    state: State,
    replica: State,
    writes: i64,
}

impl Catalogs {
    fn new() -> anyhow::Result<Catalogs> {
        let mut c = Catalogs { state: State::default(), replica: State::default(), writes: 0 };
        let svc = json!({"identifier": "svc", "title": "Service", "schema": {"properties": {
            "n": {"type": "number"}, "tags": {"type": "array"}, "cfg": {"type": "object"}, "s": {"type": "string"},
            "when": {"type": "string", "format": "date-time"}}},
            "relations": {"deps": {"target": "svc", "many": true, "required": false}}});
        if c.write(&Command::CreateBlueprint { body: svc })?.is_err() {
            bail!("the battery's blueprint was refused");
        }
        for id in ["a", "b"] {
            let input = berth_model::EntityInput::from_value(&json!({"identifier": id, "properties": {"n": 1}}))?;
            let cmd = Command::WriteEntity {
                blueprint: "svc".into(),
                path_id: None,
                input,
                mode: WriteMode::Upsert,
                create_missing_related: false,
            };
            if c.write(&cmd)?.is_err() {
                bail!("the battery's entities were refused");
            }
        }
        Ok(c)
    }

    /// Executes `cmd`; an accepted one is applied, and must encode, decode and apply to the replica.
    /// `Err` is a broken invariant; `Ok(Err(_))` a refusal.
    fn write(&mut self, cmd: &Command) -> anyhow::Result<Result<(), berth_model::DomainError>> {
        self.writes += 1;
        let meta = meta(self.writes);
        let (changes, _) = match execute(&self.state, &meta, cmd) {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        for change in changes {
            let before = self.state.previous_of(&change);
            let event = meta.event_after(&self.state, change, before);
            self.state.apply(&event)?;
            let bytes = berth_engine::encode_event(&event)?;
            let back = decode_event(event.seq, &bytes)
                .map_err(|e| anyhow::anyhow!("an accepted event does not decode: {e}"))?;
            self.replica.apply(&back).map_err(|e| anyhow::anyhow!("an accepted event does not replay: {e}"))?;
        }
        Ok(Ok(()))
    }

    /// The snapshot of the catalog loads to the same catalog as the replay.
    fn check_snapshot(&self) -> anyhow::Result<()> {
        let loaded = State::from_snapshot(&self.state.to_snapshot()?)?;
        if loaded.digest() != self.replica.digest() || self.state.digest() != self.replica.digest() {
            bail!("the snapshot or the replay differs from the catalog");
        }
        Ok(())
    }
}

#[derive(Default)]
struct Tally {
    inputs: usize,
    accepted: usize,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, outcome: std::thread::Result<anyhow::Result<bool>>, what: &str, input: &Value) {
        self.inputs += 1;
        match outcome {
            Ok(Ok(true)) => self.accepted += 1,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => self.failures.push(format!("{what}: {e:#} for {}", short(input))),
            Err(_) => self.failures.push(format!("{what}: PANIC for {}", short(input))),
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 { format!("{}… ({} bytes)", &s[..s.floor_char_boundary(300)], s.len()) } else { s }
}

/// Inputs after which the catalogs are checked (snapshot and replay) and started afresh: a catalog that grew
/// with every accepted write (blueprints by the hundred thousand) would make later inputs cost more and
/// more, and the battery's time and memory would not be linear in `--count`.
const CATALOG_ROUNDS: usize = 20_000;

/// The in-process battery: `count` inputs per parser.
fn parsers(count: usize, seed: u64) -> anyhow::Result<Vec<(&'static str, Tally)>> {
    let mut rng = Rng(seed);
    let mut catalogs = Catalogs::new()?;
    let mut snapshot_failures = Vec::new();
    // Checks the catalogs that have taken CATALOG_ROUNDS inputs, and starts new ones.
    let mut renew = |catalogs: &mut Catalogs, i: usize| -> anyhow::Result<()> {
        if i > 0 && i.is_multiple_of(CATALOG_ROUNDS) {
            if let Err(e) = catalogs.check_snapshot() {
                snapshot_failures.push(format!("{e:#}"));
            }
            *catalogs = Catalogs::new()?;
        }
        Ok(())
    };
    let (queries, entities, blueprints) = (query_seeds(), entity_seeds(), blueprint_seeds());
    let mut out = Vec::new();

    let mut tally = Tally::default();
    for i in 0..count {
        renew(&mut catalogs, i)?;
        let input = hostile(&mut rng, &queries);
        let state = &catalogs.state;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<bool> {
            let Ok(q) = Query::parse(&input) else { return Ok(false) };
            let deadline = Instant::now() + Duration::from_secs(2);
            let now = Timestamp::from_millis(1_800_000_000_000);
            let _ = berth_engine::search::with_deadline(deadline, || {
                berth_engine::search::for_each_match(state, &q, now, |_| {})
            });
            Ok(true)
        }));
        tally.record(outcome, "rules", &input);
    }
    out.push(("rules (Query::parse, then evaluated)", tally));

    let mut tally = Tally::default();
    for i in 0..count {
        renew(&mut catalogs, i)?;
        let input = hostile(&mut rng, &entities);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<bool> {
            let Ok(bytes) = serde_json::to_vec(&input) else { return Ok(false) };
            let Ok(body) = serde_json::from_slice::<EntityBody>(&bytes) else { return Ok(false) };
            let Ok(input) = body.input else { return Ok(false) };
            let mode = [WriteMode::Upsert, WriteMode::UpsertMerge, WriteMode::Create][i % 3];
            let cmd = Command::WriteEntity {
                blueprint: "svc".into(),
                path_id: None,
                input,
                mode,
                create_missing_related: i % 2 == 0,
            };
            Ok(catalogs.write(&cmd)?.is_ok())
        }));
        tally.record(outcome, "entity body", &input);
    }
    out.push(("entity bodies (EntityBody, then written)", tally));

    let mut tally = Tally::default();
    for i in 0..count {
        renew(&mut catalogs, i)?;
        let mut input = hostile(&mut rng, &blueprints);
        if let Value::Object(m) = &mut input {
            // A fresh identifier most of the time, so creates are not all conflicts.
            if rng.chance(80) {
                m.insert("identifier".into(), json!(format!("bp{i}")));
            }
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<bool> {
            Ok(catalogs.write(&Command::CreateBlueprint { body: input.clone() })?.is_ok())
        }));
        tally.record(outcome, "blueprint", &input);
    }
    out.push(("blueprint definitions (created)", tally));

    let mut tally = Tally::default();
    let def = catalogs.state.blueprint("svc").map(|b| (*b.def).clone());
    let Some(def) = def else { bail!("the battery's blueprint is missing") };
    let fields = ["identifier", "title", "icon", "team", "p.n", "p.tags", "p.cfg", "p.s", "p.when", "r.deps", "p.nope"];
    for i in 0..count {
        renew(&mut catalogs, i)?;
        let mut pairs: Vec<(String, String)> = Vec::new();
        for _ in 0..rng.below(12) {
            let field = rng.pick(&fields).to_string();
            pairs.push((field, string(&mut rng)));
        }
        if rng.chance(30) {
            // An object field given hostile JSON text.
            let text = hostile(&mut rng, &entities).to_string();
            pairs.push(("p.cfg".to_string(), text));
        }
        let input = json!(pairs);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<bool> {
            let form = berth_web::form::FormData(pairs.clone());
            let Ok(body) = berth_web::entity_form::body_of(&def, &form, None) else { return Ok(false) };
            let input = berth_model::EntityInput::from_value(&body)
                .map_err(|e| anyhow::anyhow!("the form gave a body the API refuses: {e}"))?;
            let cmd = Command::WriteEntity {
                blueprint: "svc".into(),
                path_id: None,
                input,
                mode: WriteMode::Upsert,
                create_missing_related: false,
            };
            Ok(catalogs.write(&cmd)?.is_ok())
        }));
        tally.record(outcome, "UI form", &input);
    }
    out.push(("UI entity forms (body_of, then written)", tally));

    // Actions: hostile bodies created (parsed, checked against the catalog, every jq compiled), templates
    // rendered over hostile data; runs of a fixed action with hostile inputs (checked, then written).
    let actions = action_seeds();
    let mut tally = Tally::default();
    for i in 0..count {
        renew(&mut catalogs, i)?;
        let input = hostile(&mut rng, &actions);
        let data = hostile(&mut rng, &run_seeds());
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<bool> {
            if let Some(method) = input.get("invocationMethod") {
                let _ = berth_engine::runs::template::render(method, &data);
            }
            let cmd = Command::WriteDefinition {
                kind: berth_model::DefinitionKind::Action,
                identifier: format!("a{}", i % 50),
                how: berth_engine::definitions::DefinitionWrite::Upsert(input.clone()),
            };
            Ok(catalogs.write(&cmd)?.is_ok())
        }));
        tally.record(outcome, "action", &input);
    }
    out.push(("actions (created; templates rendered over hostile data)", tally));

    let runs = run_seeds();
    let mut tally = Tally::default();
    let mut made = 0usize;
    for i in 0..count {
        renew(&mut catalogs, i)?;
        if catalogs.state.definition(berth_model::DefinitionKind::Action, "deploy").is_none() {
            let how = berth_engine::definitions::DefinitionWrite::Upsert(actions[0].clone());
            let cmd = Command::WriteDefinition {
                kind: berth_model::DefinitionKind::Action,
                identifier: "deploy".into(),
                how,
            };
            if catalogs.write(&cmd)?.is_err() {
                bail!("the battery's action was refused");
            }
        }
        // A quarter of them valid, so that the accepted path (inputs kept, the run written) is exercised too.
        let input = if rng.chance(25) { rng.pick(&runs).clone() } else { hostile(&mut rng, &runs) };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<bool> {
            let Ok(request) = berth_model::run::RunRequest::parse(&input) else { return Ok(false) };
            made += 1;
            let cmd = Command::CreateRun(Box::new(berth_engine::runs::NewRun {
                id: format!("r_hostile{made:09}"),
                action: "deploy".into(),
                request,
                source: berth_model::run::Source::Api,
                run_as: None,
                event: None,
            }));
            Ok(catalogs.write(&cmd)?.is_ok())
        }));
        tally.record(outcome, "run", &input);
    }
    out.push(("runs (RunRequest, inputs checked, written)", tally));

    if let Err(e) = catalogs.check_snapshot() {
        snapshot_failures.push(format!("{e:#}"));
    }
    let checks =
        Tally { inputs: (6 * count).div_ceil(CATALOG_ROUNDS), failures: snapshot_failures, ..Tally::default() };
    out.push(("snapshots and replays of the catalogs written", checks));
    Ok(out)
}

/// Whether an HTTP status is acceptable for a hostile request: anything below 500, or a 503 that says why.
fn acceptable(status: u16, body: &Value) -> bool {
    status < 500
        || (status == 503 && ["search_timeout", "busy", "rate_limited"].contains(&body["error"].as_str().unwrap_or("")))
}

/// A route of the HTTP battery: its name, path, how an input becomes its body, and the seeds of its inputs.
type Route<'a> = (&'static str, &'static str, fn(Value) -> Value, &'a [Value]);

/// The HTTP battery: `count` requests per route against a live server, then a restart.
async fn over_http(count: usize, seed: u64) -> anyhow::Result<Vec<(&'static str, Tally)>> {
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let server = spawn(dir.path())?;
    wait_ready(&client, &server.base).await?;
    let token = token(&client, &server.base).await?;
    let svc = json!({"identifier": "svc", "title": "Service", "schema": {"properties": {
        "n": {"type": "number"}, "tags": {"type": "array"}, "cfg": {"type": "object"}, "s": {"type": "string"}}},
        "relations": {"deps": {"target": "svc", "many": true, "required": false}}});
    client.post(format!("{}/v1/blueprints", server.base)).bearer_auth(&token).json(&svc).send().await?;
    let mut rng = Rng(seed);
    let (queries, entities, blueprints) = (query_seeds(), entity_seeds(), blueprint_seeds());
    let routes: [Route; 5] = [
        ("POST /v1/entities/search", "/v1/entities/search", |v| v, &queries),
        (
            "POST /v1/blueprints/svc/entities/search",
            "/v1/blueprints/svc/entities/search",
            |v| json!({"query": v}),
            &queries,
        ),
        (
            "POST /v1/entities/aggregate",
            "/v1/entities/aggregate",
            |v| json!({"func": "countValues", "property": "s", "query": v}),
            &queries,
        ),
        (
            "POST /v1/blueprints/svc/entities/bulk",
            "/v1/blueprints/svc/entities/bulk?upsert=true",
            |v| json!({"entities": [v]}),
            &entities,
        ),
        ("POST /v1/blueprints", "/v1/blueprints", |v| v, &blueprints),
    ];
    let mut out = Vec::new();
    for (name, path, wrap, seeds) in routes {
        let mut tally = Tally::default();
        for _ in 0..count {
            let input = wrap(hostile(&mut rng, seeds));
            let r = client.post(format!("{}{path}", server.base)).bearer_auth(&token).json(&input).send().await;
            tally.inputs += 1;
            match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    if status < 300 {
                        tally.accepted += 1;
                    }
                    if !acceptable(status, &body) {
                        tally.failures.push(format!("{name}: {status} {} for {}", short(&body), short(&input)));
                    }
                }
                Err(e) => tally.failures.push(format!("{name}: no answer ({e}) for {}", short(&input))),
            }
        }
        out.push((name, tally));
    }
    // Whatever was accepted, the server starts again from its log and snapshot, with the same catalog.
    let before = summary(&client, &server.base, &token).await?;
    server.stop_gracefully();
    let server = spawn(dir.path())?;
    let mut restart = Tally { inputs: 1, ..Tally::default() };
    match wait_ready(&client, &server.base).await {
        Ok(_) => {
            let token = crate::bench::token(&client, &server.base).await?;
            let after = summary(&client, &server.base, &token).await?;
            if after != before {
                restart.failures.push(format!("restart: {before} before, {after} after"));
            } else {
                restart.accepted = 1;
            }
        }
        Err(e) => restart.failures.push(format!("the server did not start again: {e:#}")),
    }
    out.push(("restart after the battery", restart));
    Ok(out)
}

/// What a restart must keep: the log's head, the blueprints, and the count of the battery's blueprint.
async fn summary(client: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<Value> {
    let get = |path: &str| {
        let request = client.get(format!("{base}{path}")).bearer_auth(token);
        async move { anyhow::Ok(request.send().await?.json::<Value>().await?) }
    };
    let blueprints: Vec<Value> = get("/v1/blueprints").await?["blueprints"]
        .as_array()
        .map(|list| list.iter().map(|b| b["identifier"].clone()).collect())
        .unwrap_or_default();
    Ok(json!({
        "seq": get("/healthz").await?["seq"],
        "blueprints": blueprints,
        "svc": get("/v1/blueprints/svc/entities-count").await?["count"],
    }))
}

pub async fn run(count: usize, seed: u64) -> anyhow::Result<()> {
    println!("berth bench --hostile: {count} inputs per parser, {} per HTTP route, seed {seed}", (count / 10).max(1));
    let started = Instant::now();
    let mut rows = tokio::task::spawn_blocking(move || parsers(count, seed)).await??;
    let parsers_took = started.elapsed();
    rows.extend(over_http((count / 10).max(1), seed ^ 0x5eed).await?);
    println!();
    println!("| target | inputs | accepted | failures |");
    println!("|---|---:|---:|---:|");
    let mut failures = Vec::new();
    for (name, tally) in &rows {
        println!("| {name} | {} | {} | {} |", tally.inputs, tally.accepted, tally.failures.len());
        failures.extend(tally.failures.iter().cloned());
    }
    println!();
    println!("parsers: {:.1} s; total {:.1} s", parsers_took.as_secs_f64(), started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        for f in failures.iter().take(20) {
            eprintln!("FAILED: {f}");
        }
        bail!("{} hostile inputs broke an invariant", failures.len());
    }
    let total: usize = rows.iter().map(|(_, t)| t.inputs).sum();
    println!("all {total} hostile inputs were handled");
    Ok(())
}
