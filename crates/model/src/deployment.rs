//! What is deployed where: the deployments and incidents pipelines report, their validation, and the ready
//! model (the `service`, `environment`, `deployment` and `incident` blueprints) a first report creates.
//!
//! A report is one JSON object (the body of `POST /v1/deployments` or `POST /v1/incidents`, or what
//! `berth report` sends); [`DeploymentReport::parse`] and [`IncidentReport::parse`] refuse an unknown field, a
//! wrong type, an unknown status or severity and a malformed time, naming the field. A report becomes an
//! entity write: [`DeploymentReport::properties`] are the ready model's property names, and an existing
//! blueprint of the same name keeps only those it defines (see the catalog layer).

use serde_json::{Map, Value, json};

use crate::{DomainError, Timestamp, ids};

pub const SERVICE: &str = "service";
pub const ENVIRONMENT: &str = "environment";
pub const DEPLOYMENT: &str = "deployment";
pub const INCIDENT: &str = "incident";

/// The longest text a report field may carry (a version, a commit, an actor); a summary may be longer.
const MAX_FIELD: usize = 1_000;
const MAX_SUMMARY: usize = 20_000;

/// A deployment's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    InProgress,
    Success,
    Failure,
    RolledBack,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::InProgress, Status::Success, Status::Failure, Status::RolledBack];

    /// The status as stored (`in_progress`, `success`, `failure`, `rolled_back`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Success => "success",
            Status::Failure => "failure",
            Status::RolledBack => "rolled_back",
        }
    }

    /// A status by its name, or by the words CI systems use for it (`succeeded`, `failed`, `running`,
    /// `rollback`...), case-insensitive.
    pub fn parse(s: &str) -> Option<Status> {
        // The stored spellings first, without allocating (the matrix reads a million of them).
        match s {
            "success" => return Some(Status::Success),
            "failure" => return Some(Status::Failure),
            "in_progress" => return Some(Status::InProgress),
            "rolled_back" => return Some(Status::RolledBack),
            _ => {}
        }
        Some(match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "in_progress" | "inprogress" | "running" | "pending" | "queued" | "started" => Status::InProgress,
            "success" | "succeeded" | "successful" | "ok" | "passed" => Status::Success,
            "failure" | "failed" | "error" | "errored" => Status::Failure,
            "rolled_back" | "rolledback" | "rollback" | "reverted" => Status::RolledBack,
            _ => return None,
        })
    }

    /// Whether the deployment is a change that failed (DORA's change failure).
    pub fn failed(self) -> bool {
        matches!(self, Status::Failure | Status::RolledBack)
    }
}

/// An incident's severity.
pub const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];

/// A deployment as a pipeline reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentReport {
    /// The deployment entity's identifier; derived from the rest when absent ([`DeploymentReport::identifier`]).
    pub identifier: Option<String>,
    pub service: String,
    pub environment: String,
    pub version: String,
    pub commit: Option<String>,
    pub commit_time: Option<Timestamp>,
    pub status: Status,
    /// The pipeline run's URL.
    pub url: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub actor: Option<String>,
    pub summary: Option<String>,
}

/// An incident as a pipeline or a pager reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentReport {
    pub identifier: String,
    pub service: String,
    pub environment: String,
    pub title: Option<String>,
    pub severity: Option<String>,
    pub opened_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    pub url: Option<String>,
}

/// Reads a report's fields, refusing the ones it does not know.
struct Fields<'a> {
    body: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(body: &'a Value, known: &[&str], what: &str) -> Result<Fields<'a>, DomainError> {
        let body =
            body.as_object().ok_or_else(|| DomainError::BadRequest(format!("a {what} report is a JSON object")))?;
        if let Some(unknown) = body.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(DomainError::BadRequest(format!(
                "unknown field `{}` in a {what} report (known: {})",
                ids::truncate(unknown, 60),
                known.join(", ")
            )));
        }
        Ok(Fields { body })
    }

    fn text(&self, name: &str, max: usize) -> Result<Option<String>, DomainError> {
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) if s.chars().count() > max => {
                Err(DomainError::Invalid(format!("`{name}` is longer than {max} characters")))
            }
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(Value::Number(n)) if name == "version" => Ok(Some(n.to_string())),
            Some(_) => Err(DomainError::Invalid(format!("`{name}` must be a string"))),
        }
    }

    fn required(&self, name: &str) -> Result<String, DomainError> {
        self.text(name, MAX_FIELD)?.ok_or_else(|| DomainError::Invalid(format!("`{name}` is required")))
    }

    /// An identifier of a related entity (a service, an environment).
    fn id(&self, name: &str) -> Result<String, DomainError> {
        let id = self.required(name)?;
        ids::validate_entity_id(&id).map_err(|e| DomainError::Invalid(format!("`{name}`: {e}")))?;
        Ok(id)
    }

    fn time(&self, name: &str) -> Result<Option<Timestamp>, DomainError> {
        match self.text(name, 100)? {
            None => Ok(None),
            Some(s) => Timestamp::parse(&s).map(Some).ok_or_else(|| {
                DomainError::Invalid(format!(
                    "`{name}` is not a date-time: {:?} (use ISO 8601, like 2026-12-04T10:00:00Z)",
                    ids::truncate(&s, 60)
                ))
            }),
        }
    }

    fn url(&self, name: &str) -> Result<Option<String>, DomainError> {
        let url = self.text(name, 2_000)?;
        if let Some(u) = &url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(DomainError::Invalid(format!("`{name}` must be an http(s) URL")));
            }
        }
        Ok(url)
    }
}

impl DeploymentReport {
    pub const FIELDS: [&'static str; 12] = [
        "identifier",
        "service",
        "environment",
        "version",
        "commit",
        "commitTime",
        "status",
        "url",
        "startedAt",
        "finishedAt",
        "actor",
        "summary",
    ];

    /// Reads and checks a report (`status` defaults to `success`).
    pub fn parse(body: &Value) -> Result<DeploymentReport, DomainError> {
        let f = Fields::new(body, &Self::FIELDS, "deployment")?;
        let status = match f.text("status", 100)? {
            None => Status::Success,
            Some(s) => Status::parse(&s).ok_or_else(|| {
                DomainError::Invalid(format!(
                    "`status` {:?} is not one of in_progress, success, failure, rolled_back",
                    ids::truncate(&s, 60)
                ))
            })?,
        };
        let identifier = f.text("identifier", ids::MAX_ENTITY_ID_LEN)?;
        if let Some(id) = &identifier {
            ids::validate_entity_id(id)?;
        }
        let report = DeploymentReport {
            identifier,
            service: f.id("service")?,
            environment: f.id("environment")?,
            version: f.required("version")?,
            commit: f.text("commit", MAX_FIELD)?,
            commit_time: f.time("commitTime")?,
            status,
            url: f.url("url")?,
            started_at: f.time("startedAt")?,
            finished_at: f.time("finishedAt")?,
            actor: f.text("actor", MAX_FIELD)?,
            summary: f.text("summary", MAX_SUMMARY)?,
        };
        if let (Some(s), Some(e)) = (report.started_at, report.finished_at) {
            if e < s {
                return Err(DomainError::Invalid("`finishedAt` is before `startedAt`".into()));
            }
        }
        Ok(report)
    }

    /// The deployment entity's identifier: the one given, else `service-environment-version`, with the run
    /// URL's hash when there is one (two runs deploying the same version are two deployments; the reports of
    /// one run, in progress then finished, are one).
    pub fn identifier(&self) -> String {
        if let Some(id) = &self.identifier {
            return id.clone();
        }
        let mut id = format!("{}-{}-{}", slug(&self.service), slug(&self.environment), slug(&self.version));
        if let Some(url) = &self.url {
            id.push_str(&format!("-{:08x}", fnv1a(url) as u32));
        }
        id
    }

    /// The entity's properties, by the ready model's names (absent fields left out, so a later report merges
    /// into an earlier one).
    pub fn properties(&self) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("version".into(), json!(self.version));
        p.insert("status".into(), json!(self.status.as_str()));
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                p.insert(k.into(), v);
            }
        };
        put("commitSha", self.commit.clone().map(Value::String));
        put("commitTime", self.commit_time.map(|t| json!(t.to_rfc3339())));
        put("runUrl", self.url.clone().map(Value::String));
        put("startedAt", self.started_at.map(|t| json!(t.to_rfc3339())));
        put("finishedAt", self.finished_at.map(|t| json!(t.to_rfc3339())));
        put("actor", self.actor.clone().map(Value::String));
        put("summary", self.summary.clone().map(Value::String));
        p
    }
}

impl IncidentReport {
    pub const FIELDS: [&'static str; 8] =
        ["identifier", "service", "environment", "title", "severity", "openedAt", "resolvedAt", "url"];

    /// Reads and checks a report.
    pub fn parse(body: &Value) -> Result<IncidentReport, DomainError> {
        let f = Fields::new(body, &Self::FIELDS, "incident")?;
        let identifier = f.required("identifier")?;
        ids::validate_entity_id(&identifier)?;
        let severity = match f.text("severity", 100)? {
            None => None,
            Some(s) => {
                let lower = s.to_ascii_lowercase();
                if !SEVERITIES.contains(&lower.as_str()) {
                    return Err(DomainError::Invalid(format!(
                        "`severity` {:?} is not one of {}",
                        ids::truncate(&s, 60),
                        SEVERITIES.join(", ")
                    )));
                }
                Some(lower)
            }
        };
        let report = IncidentReport {
            identifier,
            service: f.id("service")?,
            environment: f.id("environment")?,
            title: f.text("title", MAX_FIELD)?,
            severity,
            opened_at: f.time("openedAt")?,
            resolved_at: f.time("resolvedAt")?,
            url: f.url("url")?,
        };
        if let (Some(o), Some(r)) = (report.opened_at, report.resolved_at) {
            if r < o {
                return Err(DomainError::Invalid("`resolvedAt` is before `openedAt`".into()));
            }
        }
        Ok(report)
    }

    /// The entity's properties, by the ready model's names (absent fields left out).
    pub fn properties(&self) -> Map<String, Value> {
        let mut p = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                p.insert(k.into(), v);
            }
        };
        put("severity", self.severity.clone().map(Value::String));
        put("openedAt", self.opened_at.map(|t| json!(t.to_rfc3339())));
        put("resolvedAt", self.resolved_at.map(|t| json!(t.to_rfc3339())));
        put("url", self.url.clone().map(Value::String));
        p
    }
}

/// The ready model, in the order it is created (targets before the blueprints relating to them).
pub fn model() -> Vec<Value> {
    let time = |title: &str| json!({"type": "string", "format": "date-time", "title": title});
    let on = |title: &str, target: &str| json!({"title": title, "target": target, "required": true, "many": false});
    vec![
        json!({"identifier": SERVICE, "title": "Service", "icon": "Service",
            "schema": {"properties": {}, "required": []}}),
        json!({"identifier": ENVIRONMENT, "title": "Environment", "icon": "Environment",
            "schema": {"properties": {"production": {"type": "boolean", "title": "Production"}}, "required": []}}),
        json!({"identifier": DEPLOYMENT, "title": "Deployment", "icon": "Deployment",
            "schema": {"properties": {
                "version": {"type": "string", "title": "Version"},
                "commitSha": {"type": "string", "title": "Commit"},
                "commitTime": time("Commit time"),
                "status": {"type": "string", "title": "Status",
                    "enum": Status::ALL.map(Status::as_str),
                    "enumColors": {"in_progress": "blue", "success": "green", "failure": "red", "rolled_back": "orange"}},
                "runUrl": {"type": "string", "format": "url", "title": "Pipeline run"},
                "startedAt": time("Started at"),
                "finishedAt": time("Finished at"),
                "actor": {"type": "string", "title": "Actor"},
                "summary": {"type": "string", "format": "markdown", "title": "Change summary"}},
                "required": ["version", "status"]},
            "relations": {"service": on("Service", SERVICE), "environment": on("Environment", ENVIRONMENT)}}),
        json!({"identifier": INCIDENT, "title": "Incident", "icon": "Alert",
            "schema": {"properties": {
                "severity": {"type": "string", "title": "Severity", "enum": SEVERITIES,
                    "enumColors": {"critical": "red", "high": "orange", "medium": "yellow", "low": "lightGray"}},
                "openedAt": time("Opened at"),
                "resolvedAt": time("Resolved at"),
                "url": {"type": "string", "format": "url", "title": "Link"}},
                "required": []},
            "relations": {"service": on("Service", SERVICE), "environment": on("Environment", ENVIRONMENT)}}),
    ]
}

/// A part of an identifier: characters the identifier rules refuse become `-`, cut to 200 characters.
fn slug(s: &str) -> String {
    s.chars().take(200).map(|c| if c.is_alphanumeric() || "@_.+:=".contains(c) { c } else { '-' }).collect()
}

/// FNV-1a, 64 bits: a stable hash for identifiers (not for secrets).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_read_with_ci_words_and_refused_with_the_field_named() {
        let r = DeploymentReport::parse(&json!({"service": "api", "environment": "prod", "version": "1.2.3",
            "status": "Succeeded", "commitTime": "2026-12-01T10:00:00Z", "url": "https://ci.example/run/7"}))
        .expect("parses");
        assert_eq!(r.status, Status::Success);
        assert!(r.identifier().starts_with("api-prod-1.2.3-"), "{}", r.identifier());
        assert_eq!(r.properties()["commitTime"], json!("2026-12-01T10:00:00.000Z"));
        let bad = |body: Value, needle: &str| {
            let e = DeploymentReport::parse(&body).expect_err("refused").to_string();
            assert!(e.contains(needle), "{e} should name {needle}");
        };
        bad(json!({"service": "api", "environment": "prod", "version": "1", "status": "meh"}), "`status`");
        bad(json!({"service": "api", "environment": "prod", "version": "1", "startedAt": "yesterday"}), "`startedAt`");
        bad(json!({"service": "api", "environment": "prod"}), "`version`");
        bad(json!({"service": "a b", "environment": "prod", "version": "1"}), "`service`");
        bad(json!({"service": "api", "environment": "prod", "version": "1", "colour": "red"}), "`colour`");
        bad(json!({"service": "api", "environment": "prod", "version": "1", "url": "ftp://x"}), "`url`");
        bad(
            json!({"service": "api", "environment": "prod", "version": "1",
                "startedAt": "2026-12-02T00:00:00Z", "finishedAt": "2026-12-01T00:00:00Z"}),
            "`finishedAt`",
        );
    }

    #[test]
    fn derived_identifiers_are_valid_and_stable() {
        let r = DeploymentReport::parse(&json!({"service": "api", "environment": "prod", "version": "v1 (hotfix)/#2"}))
            .expect("parses");
        let id = r.identifier();
        ids::validate_entity_id(&id).expect("valid");
        assert_eq!(id, r.identifier());
        assert_eq!(id, "api-prod-v1--hotfix--#2".replace('#', "-"));
    }

    proptest::proptest! {
        /// Any JSON object is either a report or a clear refusal (never a panic), and a report's derived
        /// identifier passes the identifier rules.
        #[test]
        fn any_body_is_a_report_or_a_refusal(
            service in ".{0,30}", env in "[a-z]{0,8}", version in ".{0,40}", status in ".{0,12}",
            time in ".{0,30}", url in proptest::option::of(".{0,30}"),
        ) {
            let body = json!({"service": service, "environment": env, "version": version, "status": status,
                "startedAt": time, "url": url});
            if let Ok(r) = DeploymentReport::parse(&body) {
                proptest::prop_assert!(ids::validate_entity_id(&r.identifier()).is_ok());
            }
            let _ = IncidentReport::parse(&body);
        }
    }
}
