//! The demo catalog: a small, believable engineering organisation, so a newcomer sees a living portal.
//! Deterministic: the same catalog every time.

use berth_engine::{Command, WriteMode};
use berth_model::EntityInput;
use serde_json::{Value, json};

use berth_catalog::pipeline::Pipeline;

fn blueprints() -> Vec<Value> {
    vec![
        json!({"identifier": "team", "title": "Team", "icon": "Team", "description": "A team that owns software",
            "schema": {"properties": {
                "slack": {"type": "string", "format": "url", "title": "Slack channel"},
                "size": {"type": "number", "minimum": 1, "title": "Members"},
                "manager": {"type": "string", "format": "email", "title": "Manager"}}}}),
        json!({"identifier": "user", "title": "User", "icon": "User",
            "schema": {"properties": {
                "email": {"type": "string", "format": "email", "title": "Email"},
                "role": {"type": "string", "enum": ["engineer", "sre", "manager", "designer"], "enumColors": {"engineer": "blue", "sre": "orange", "manager": "purple", "designer": "pink"}},
                "onCall": {"type": "boolean", "default": false, "title": "On call"}},
                "required": ["email"]},
            "relations": {"team": {"title": "Team", "target": "team", "required": false, "many": false}}}),
        json!({"identifier": "domain", "title": "Domain", "icon": "Domain",
            "schema": {"properties": {"description": {"type": "string", "format": "markdown"}}},
            "relations": {"owner": {"title": "Owner", "target": "team", "required": false, "many": false}}}),
        json!({"identifier": "system", "title": "System", "icon": "System",
            "schema": {"properties": {"tier": {"type": "string", "enum": ["tier-1", "tier-2", "tier-3"], "enumColors": {"tier-1": "red", "tier-2": "orange", "tier-3": "green"}}}},
            "relations": {"domain": {"title": "Domain", "target": "domain", "required": true, "many": false}}}),
        json!({"identifier": "environment", "title": "Environment", "icon": "Environment",
            "schema": {"properties": {
                "type": {"type": "string", "enum": ["production", "staging", "development"]},
                "region": {"type": "string", "title": "Region"},
                "url": {"type": "string", "format": "url"}}}}),
        json!({"identifier": "service", "title": "Service", "icon": "Microservice", "description": "A deployable service",
            "schema": {"properties": {
                "language": {"type": "string", "enum": ["Rust", "Go", "Python", "TypeScript", "Java"], "enumColors": {"Rust": "orange", "Go": "blue", "Python": "yellow", "TypeScript": "turquoise", "Java": "red"}},
                "repo": {"type": "string", "format": "url", "title": "Repository"},
                "readme": {"type": "string", "format": "markdown", "title": "README"},
                "lifecycle": {"type": "string", "enum": ["experimental", "production", "deprecated"], "default": "production"},
                "replicas": {"type": "number", "minimum": 0, "maximum": 100},
                "public": {"type": "boolean", "default": false},
                "tags": {"type": "array", "items": {"type": "string"}},
                "config": {"type": "object", "title": "Runtime config"},
                "healthUrl": {"type": "string", "format": "url"},
                "owner": {"type": "string", "format": "user"},
                "onCallTeam": {"type": "string", "format": "team"},
                "lastIncident": {"type": "string", "format": "date-time"},
                "ip": {"type": "string", "format": "ipv4"},
                "ipv6": {"type": "string", "format": "ipv6"},
                "openapi": {"type": "string", "format": "yaml"},
                "freezeUntil": {"type": "string", "format": "timer"}},
                "required": ["language"]},
            "relations": {
                "system": {"title": "System", "target": "system", "required": false, "many": false},
                "dependsOn": {"title": "Depends on", "target": "service", "required": false, "many": true}}}),
        json!({"identifier": "deployment", "title": "Deployment", "icon": "Deployment",
            "schema": {"properties": {
                "version": {"type": "string", "pattern": "^v[0-9]+\\.[0-9]+\\.[0-9]+$"},
                "status": {"type": "string", "enum": ["success", "failed", "rolled-back"], "enumColors": {"success": "green", "failed": "red", "rolled-back": "yellow"}},
                "deployedAt": {"type": "string", "format": "date-time"},
                "deployedBy": {"type": "string", "format": "email"},
                "durationSeconds": {"type": "number", "minimum": 0}},
                "required": ["version"]},
            "relations": {
                "service": {"title": "Service", "target": "service", "required": true, "many": false},
                "environment": {"title": "Environment", "target": "environment", "required": true, "many": false}}}),
        json!({"identifier": "incident", "title": "Incident", "icon": "Alert",
            "schema": {"properties": {
                "severity": {"type": "string", "enum": ["SEV1", "SEV2", "SEV3"], "enumColors": {"SEV1": "red", "SEV2": "orange", "SEV3": "yellow"}},
                "status": {"type": "string", "enum": ["open", "mitigated", "resolved"]},
                "openedAt": {"type": "string", "format": "date-time"},
                "postmortem": {"type": "string", "format": "url"}}},
            "relations": {"services": {"title": "Services", "target": "service", "required": false, "many": true}}}),
    ]
}

/// The service's derived properties (added once deployments and incidents exist): what a team reads first on
/// a service page.
fn service_derived() -> Value {
    json!({
        "mirrorProperties": {
            "systemTier": {"title": "System tier", "path": "system.tier"},
            "domain": {"title": "Domain", "path": "system.domain.$title"}
        },
        "aggregationProperties": {
            "deployments": {"title": "Deployments", "type": "number", "target": "deployment",
                "calculationSpec": {"func": "count", "calculationBy": "entities"}},
            "failedDeployments": {"title": "Failed deployments", "type": "number", "target": "deployment",
                "calculationSpec": {"func": "count", "calculationBy": "entities"},
                "query": {"combinator": "and", "rules": [{"property": "status", "operator": "=", "value": "failed"}]}},
            "medianDeploySeconds": {"title": "Median deploy (s)", "type": "number", "target": "deployment",
                "calculationSpec": {"func": "median", "calculationBy": "property", "property": "durationSeconds"}},
            "openIncidents": {"title": "Open incidents", "type": "number", "target": "incident",
                "calculationSpec": {"func": "count", "calculationBy": "entities"},
                "query": {"combinator": "and", "rules": [{"property": "status", "operator": "=", "value": "open"}]}}
        },
        "calculationProperties": {
            "failureRate": {"title": "Deploy failure rate (%)", "type": "number",
                "calculation": "if .properties.deployments > 0 then (.properties.failedDeployments * 100 / .properties.deployments | floor) else 0 end"}
        }
    })
}

/// A tiny deterministic generator (an LCG), so the demo is the same everywhere.
struct Dice(u64);

impl Dice {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }
}

fn entities() -> Vec<(&'static str, Value)> {
    let mut d = Dice(42);
    let mut out = Vec::new();
    let teams = ["platform", "payments", "search", "identity", "growth", "data", "mobile", "sre"];
    for (i, t) in teams.iter().enumerate() {
        out.push(("team", json!({"identifier": t, "title": format!("{}{} team", &t[..1].to_uppercase(), &t[1..]),
            "properties": {"slack": format!("https://slack.example.com/channels/team-{t}"), "size": 4 + i, "manager": format!("lead.{t}@example.com")}})));
    }
    let first = ["ada", "linus", "grace", "ken", "barbara", "dennis", "margaret", "alan", "edsger", "frances"];
    let roles = ["engineer", "engineer", "sre", "manager", "designer"];
    for (i, name) in first.iter().enumerate() {
        for k in 0..4 {
            let id = format!("{name}.{k}");
            out.push(("user", json!({"identifier": id, "title": format!("{}{} #{k}", &name[..1].to_uppercase(), &name[1..]),
                "properties": {"email": format!("{name}.{k}@example.com"), "role": roles[(i + k) % roles.len()], "onCall": (i + k) % 5 == 0},
                "relations": {"team": teams[(i * 4 + k) % teams.len()]}})));
        }
    }
    let domains =
        [("commerce", "payments"), ("discovery", "search"), ("foundation", "platform"), ("customer", "identity")];
    for (dom, owner) in domains {
        out.push((
            "domain",
            json!({"identifier": dom, "title": format!("{}{}", &dom[..1].to_uppercase(), &dom[1..]),
            "properties": {"description": format!("The **{dom}** domain.")}, "relations": {"owner": owner}}),
        ));
    }
    let systems = [
        "checkout",
        "billing",
        "catalog",
        "recommendations",
        "auth",
        "observability",
        "storage",
        "notifications",
        "analytics",
        "mobile-backend",
    ];
    for (i, s) in systems.iter().enumerate() {
        out.push(("system", json!({"identifier": s, "title": s.replace('-', " "),
            "properties": {"tier": (["tier-1", "tier-2", "tier-3"][i % 3])}, "relations": {"domain": domains[i % domains.len()].0}})));
    }
    let envs = [
        ("production", "production", "eu-west-1"),
        ("staging", "staging", "eu-west-1"),
        ("dev", "development", "us-east-1"),
        ("production-us", "production", "us-east-1"),
    ];
    for (id, ty, region) in envs {
        out.push(("environment", json!({"identifier": id, "title": id, "properties": {"type": ty, "region": region, "url": format!("https://{id}.example.com")}})));
    }
    let langs = ["Rust", "Go", "Python", "TypeScript", "Java"];
    let words = ["api", "worker", "gateway", "indexer", "scheduler", "ledger", "cache", "router"];
    let mut services = Vec::new();
    for (i, sys) in systems.iter().enumerate() {
        for w in words.iter().take(6) {
            let id = format!("{sys}-{w}");
            let team = teams[d.next(teams.len())];
            let deps: Vec<String> = services.iter().rev().take(3).filter(|_| d.next(3) == 0).cloned().collect();
            out.push(("service", json!({"identifier": id, "title": format!("{sys} {w}"), "team": [team],
                "properties": {"language": langs[d.next(langs.len())], "repo": format!("https://git.example.com/{sys}/{w}"),
                    "readme": format!("# {sys} {w}\n\nOwned by *{team}*."), "lifecycle": (["production", "production", "experimental", "deprecated"][d.next(4)]),
                    "replicas": 1 + d.next(12), "public": d.next(4) == 0, "tags": [sys, w], "config": {"timeoutMs": 500 + 100 * d.next(10)},
                    "healthUrl": format!("https://{id}.internal.example.com/healthz"), "owner": format!("{}.0@example.com", first[d.next(first.len())]),
                    "onCallTeam": team, "lastIncident": format!("2026-{:02}-{:02}T{:02}:00:00Z", 1 + d.next(10), 1 + d.next(28), d.next(24)),
                    "ip": format!("10.{i}.{}.{}", d.next(255), 1 + d.next(254)), "ipv6": format!("fd00::{i:x}:{:x}", d.next(65535)),
                    "openapi": "openapi: 3.1.0\ninfo:\n  title: demo\n", "freezeUntil": "2026-12-31T00:00:00Z"},
                "relations": {"system": sys, "dependsOn": deps}})));
            services.push(id);
        }
    }
    for n in 0..220 {
        let svc = &services[d.next(services.len())];
        let env = envs[d.next(envs.len())].0;
        out.push(("deployment", json!({"identifier": format!("deploy-{n:04}"), "title": format!("{svc} to {env}"),
            "properties": {"version": format!("v1.{}.{}", d.next(20), d.next(10)), "status": (["success", "success", "success", "failed", "rolled-back"][d.next(5)]),
                "deployedAt": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + d.next(25), d.next(24), d.next(60)),
                "deployedBy": format!("{}.{}@example.com", first[d.next(first.len())], d.next(4)), "durationSeconds": 30 + d.next(600)},
            "relations": {"service": svc, "environment": env}})));
    }
    for n in 0..40 {
        let affected: Vec<&String> = (0..1 + d.next(3)).map(|_| &services[d.next(services.len())]).collect();
        out.push(("incident", json!({"identifier": format!("INC-{:04}", 1000 + n), "title": format!("Incident {}", 1000 + n),
            "properties": {"severity": (["SEV1", "SEV2", "SEV3", "SEV3"][d.next(4)]), "status": (["open", "mitigated", "resolved", "resolved"][d.next(4)]),
                "openedAt": format!("2026-{:02}-{:02}T{:02}:00:00Z", 1 + d.next(11), 1 + d.next(28), d.next(24)),
                "postmortem": format!("https://wiki.example.com/postmortems/INC-{}", 1000 + n)},
            "relations": {"services": affected}})));
    }
    out
}

/// The demo's actions: self-contained (they write entities, so they run without any backend): scaffold a
/// service (a form with an entity picker, a default, a rule that shows an input), change a service's
/// lifecycle (DAY-2, approved by an Admin), and an automation that makes deprecated services private.
fn actions() -> Vec<(&'static str, Value, Value)> {
    let members = json!({"execute": {"roles": ["Admin", "Member"]}});
    vec![
        (
            "scaffold-service",
            json!({"title": "Scaffold a service", "icon": "Microservice",
                "description": "Registers a new service in the catalog.",
                "trigger": {"type": "self-service", "operation": "CREATE", "blueprintIdentifier": "service",
                    "userInputs": {"properties": {
                        "name": {"type": "string", "title": "Name", "pattern": "^[a-z][a-z0-9-]*$",
                            "description": "Lower case letters, digits and dashes."},
                        "language": {"type": "string", "title": "Language", "enum": ["Rust", "Go", "Python", "TypeScript", "Java"], "default": "Rust"},
                        "system": {"type": "string", "title": "System", "format": "entity", "blueprint": "system"},
                        "public": {"type": "boolean", "title": "Public", "default": false},
                        "healthUrl": {"type": "string", "title": "Health URL", "format": "url",
                            "visible": {"jqQuery": ".form.public == true"}}},
                        "required": ["name", "system"], "order": ["name", "language", "system", "public", "healthUrl"]},
                    "actionCardButtonText": "Scaffold", "executeActionButtonText": "Scaffold"},
                "invocationMethod": {"type": "UPSERT_ENTITY", "blueprintIdentifier": "service",
                    "mapping": {"identifier": "{{ .inputs.name }}", "title": "{{ .inputs.name }}",
                        "properties": {"language": "{{ .inputs.language }}", "lifecycle": "experimental",
                            "public": "{{ .inputs.public }}", "healthUrl": "{{ .inputs.healthUrl }}"},
                        "relations": {"system": "{{ .inputs.system }}"}}}}),
            members.clone(),
        ),
        (
            "set-lifecycle",
            json!({"title": "Change lifecycle", "icon": "Microservice",
                "trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "service",
                    "condition": {"type": "SEARCH", "combinator": "and",
                        "rules": [{"property": "lifecycle", "operator": "!=", "value": "deprecated"}]},
                    "userInputs": {"properties": {
                        "lifecycle": {"type": "string", "title": "New lifecycle", "enum": ["experimental", "production", "deprecated"]},
                        "reason": {"type": "string", "title": "Why", "format": "multi-line"}},
                        "required": ["lifecycle", "reason"]},
                    "actionCardButtonText": "Change lifecycle"},
                "invocationMethod": {"type": "UPSERT_ENTITY", "blueprintIdentifier": "service",
                    "mapping": {"identifier": "{{ .entity.identifier }}", "properties": {"lifecycle": "{{ .inputs.lifecycle }}"}}},
                "requiredApproval": {"type": "ANY"}}),
            members,
        ),
        (
            "private-when-deprecated",
            json!({"title": "Deprecated services are private",
                "trigger": {"type": "automation", "event": {"type": "ENTITY_UPDATED", "blueprintIdentifier": "service"},
                    "condition": {"type": "JQ", "combinator": "and", "expressions": [
                        ".diff.after.properties.lifecycle == \"deprecated\"", ".diff.after.properties.public == true"]}},
                "invocationMethod": {"type": "UPSERT_ENTITY", "blueprintIdentifier": "service",
                    "mapping": {"identifier": "{{ .event.diff.after.identifier }}", "properties": {"public": false}}}}),
            json!({}),
        ),
    ]
}

/// Writes the demo catalog. Fails if any part is refused (that would be a bug in the demo).
pub async fn seed(catalog: &Pipeline) -> Result<usize, String> {
    let meta = crate::system_meta;
    let mut commands: Vec<Command> = blueprints().into_iter().map(|body| Command::CreateBlueprint { body }).collect();
    commands.push(Command::PatchBlueprint { id: "service".into(), patch: service_derived() });
    let result = catalog.write(meta(), commands).await.map_err(|e| e.to_string())?;
    if let Some(Err(e)) = result.outcomes.into_iter().find(Result::is_err) {
        return Err(format!("demo blueprint refused: {e}"));
    }
    let mut commands = Vec::new();
    for (bp, body) in entities() {
        let input = EntityInput::from_value(&body).map_err(|e| e.to_string())?;
        commands.push(Command::WriteEntity {
            blueprint: bp.into(),
            path_id: None,
            input,
            mode: WriteMode::Upsert,
            create_missing_related: false,
        });
    }
    let n = commands.len();
    let result = catalog.write(meta(), commands).await.map_err(|e| e.to_string())?;
    if let Some(Err(e)) = result.outcomes.into_iter().find(Result::is_err) {
        return Err(format!("demo entity refused: {e}"));
    }
    let mut commands = Vec::new();
    for (id, body, permissions) in actions() {
        commands.push(Command::WriteDefinition {
            kind: berth_model::DefinitionKind::Action,
            identifier: id.into(),
            how: berth_engine::definitions::DefinitionWrite::Create(body),
        });
        commands.push(Command::SetActionPermissions { action: id.into(), patch: permissions });
    }
    let result = catalog.write(meta(), commands).await.map_err(|e| e.to_string())?;
    if let Some(Err(e)) = result.outcomes.into_iter().find(Result::is_err) {
        return Err(format!("demo action refused: {e}"));
    }
    Ok(n)
}
