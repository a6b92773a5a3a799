//! `berth report deployment|incident`: what a pipeline runs after it deploys (or a pager after an incident).
//!
//! It sends one report to a running portal (`--base-url` or `BERTH_URL`, credentials from
//! `BERTH_CLIENT_ID` / `BERTH_CLIENT_SECRET`): `POST /v1/deployments` or `POST /v1/incidents`, the same call
//! any pipeline can make with curl. A flag left out is read from the CI's own variables where it has one
//! (GitHub Actions, GitLab CI, Jenkins, Buildkite: the commit, the run's URL, the actor). Bad input is
//! refused before anything is sent; a refusal from the server is printed with its reason; a transient failure
//! (a connection error, 429, 502, 503, 504) is retried with back-off, so a report is not lost to a blip.
//! Prints the deployment's page in the portal.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

#[derive(clap::Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    what: What,
    /// The portal's URL
    #[arg(long, env = "BERTH_URL", global = true)]
    base_url: Option<String>,
    /// How many times a transient failure is retried
    #[arg(long, default_value_t = 5, global = true)]
    retries: u32,
}

#[derive(clap::Subcommand)]
enum What {
    /// Report a deployment (`status` defaults to success)
    Deployment(DeploymentArgs),
    /// Report an incident (opened, then again when resolved)
    Incident(IncidentArgs),
}

#[derive(clap::Args)]
struct DeploymentArgs {
    /// The service deployed (created in the catalog if it does not exist)
    #[arg(long)]
    service: String,
    /// The environment deployed to (created if it does not exist)
    #[arg(long)]
    environment: String,
    /// The version deployed
    #[arg(long)]
    version: String,
    /// The commit deployed [default: the CI's commit variable]
    #[arg(long)]
    commit: Option<String>,
    /// When that commit was made, ISO 8601 (for lead time)
    #[arg(long)]
    commit_time: Option<String>,
    /// in_progress, success, failure or rolled_back
    #[arg(long)]
    status: Option<String>,
    /// The pipeline run's URL [default: the CI's run URL]
    #[arg(long)]
    url: Option<String>,
    /// When the deployment started, ISO 8601
    #[arg(long)]
    started_at: Option<String>,
    /// When it finished, ISO 8601
    #[arg(long)]
    finished_at: Option<String>,
    /// Who deployed [default: the CI's actor]
    #[arg(long)]
    actor: Option<String>,
    /// What changed (markdown)
    #[arg(long)]
    summary: Option<String>,
    /// The deployment's identifier [default: service-environment-version, with a hash of the run URL]
    #[arg(long)]
    identifier: Option<String>,
}

#[derive(clap::Args)]
struct IncidentArgs {
    /// The incident's identifier (report it again with the same one when it is resolved)
    #[arg(long)]
    identifier: String,
    #[arg(long)]
    service: String,
    #[arg(long)]
    environment: String,
    #[arg(long)]
    title: Option<String>,
    /// critical, high, medium or low
    #[arg(long)]
    severity: Option<String>,
    /// When it was opened, ISO 8601
    #[arg(long)]
    opened_at: Option<String>,
    /// When it was resolved, ISO 8601
    #[arg(long)]
    resolved_at: Option<String>,
    /// A link to it (the pager's page)
    #[arg(long)]
    url: Option<String>,
}

/// What a CI system says about the run, from its environment variables.
#[derive(Debug, Default, PartialEq)]
pub struct CiContext {
    pub commit: Option<String>,
    pub url: Option<String>,
    pub actor: Option<String>,
}

/// The run's commit, URL and actor from GitHub Actions, GitLab CI, Jenkins or Buildkite variables.
pub fn ci_context(var: &dyn Fn(&str) -> Option<String>) -> CiContext {
    let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
    if get("GITHUB_ACTIONS").is_some() {
        let url = match (get("GITHUB_SERVER_URL"), get("GITHUB_REPOSITORY"), get("GITHUB_RUN_ID")) {
            (Some(s), Some(r), Some(id)) => Some(format!("{s}/{r}/actions/runs/{id}")),
            _ => None,
        };
        return CiContext { commit: get("GITHUB_SHA"), url, actor: get("GITHUB_ACTOR") };
    }
    if get("GITLAB_CI").is_some() {
        return CiContext {
            commit: get("CI_COMMIT_SHA"),
            url: get("CI_PIPELINE_URL").or_else(|| get("CI_JOB_URL")),
            actor: get("GITLAB_USER_LOGIN"),
        };
    }
    if get("BUILDKITE").is_some() {
        return CiContext {
            commit: get("BUILDKITE_COMMIT"),
            url: get("BUILDKITE_BUILD_URL"),
            actor: get("BUILDKITE_BUILD_CREATOR").or_else(|| get("BUILDKITE_BUILD_AUTHOR")),
        };
    }
    if get("JENKINS_URL").is_some() || get("BUILD_URL").is_some() {
        return CiContext {
            commit: get("GIT_COMMIT"),
            url: get("BUILD_URL"),
            actor: get("BUILD_USER_ID").or_else(|| get("CHANGE_AUTHOR")),
        };
    }
    CiContext::default()
}

fn put(body: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
        body.insert(key.into(), Value::String(v));
    }
}

/// The request body of a deployment report, flags first, then the CI's variables.
fn deployment_body(a: DeploymentArgs, ci: CiContext) -> Value {
    let mut b = Map::new();
    put(&mut b, "service", Some(a.service));
    put(&mut b, "environment", Some(a.environment));
    put(&mut b, "version", Some(a.version));
    put(&mut b, "commit", a.commit.or(ci.commit));
    put(&mut b, "commitTime", a.commit_time);
    put(&mut b, "status", a.status);
    put(&mut b, "url", a.url.or(ci.url));
    put(&mut b, "startedAt", a.started_at);
    put(&mut b, "finishedAt", a.finished_at);
    put(&mut b, "actor", a.actor.or(ci.actor));
    put(&mut b, "summary", a.summary);
    put(&mut b, "identifier", a.identifier);
    Value::Object(b)
}

fn incident_body(a: IncidentArgs) -> Value {
    let mut b = Map::new();
    put(&mut b, "identifier", Some(a.identifier));
    put(&mut b, "service", Some(a.service));
    put(&mut b, "environment", Some(a.environment));
    put(&mut b, "title", a.title);
    put(&mut b, "severity", a.severity);
    put(&mut b, "openedAt", a.opened_at);
    put(&mut b, "resolvedAt", a.resolved_at);
    put(&mut b, "url", a.url);
    Value::Object(b)
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let base = args
        .base_url
        .context("no portal to report to: pass --base-url or set BERTH_URL")?
        .trim_end_matches('/')
        .to_string();
    let client_id = std::env::var("BERTH_CLIENT_ID").ok().filter(|v| !v.is_empty());
    let secret = std::env::var("BERTH_CLIENT_SECRET").ok().filter(|v| !v.is_empty());
    let (Some(client_id), Some(secret)) = (client_id, secret) else {
        bail!("set BERTH_CLIENT_ID and BERTH_CLIENT_SECRET (an app's credentials, from the portal's Apps page)");
    };
    let (route, body) = match args.what {
        What::Deployment(a) => {
            let body = deployment_body(a, ci_context(&|k| std::env::var(k).ok()));
            // Refused here, with the field named, before anything is sent.
            berth_model::deployment::DeploymentReport::parse(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
            ("/v1/deployments", body)
        }
        What::Incident(a) => {
            let body = incident_body(a);
            berth_model::deployment::IncidentReport::parse(&body).map_err(|e| anyhow::anyhow!("{e}"))?;
            ("/v1/incidents", body)
        }
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("berth-report/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let token_body = json!({"clientId": client_id, "clientSecret": secret});
    let token = send(&client, &format!("{base}/v1/auth/access_token"), None, &token_body, args.retries).await?;
    let token = token["accessToken"].as_str().context("the portal answered no access token")?.to_string();
    let answer = send(&client, &format!("{base}{route}"), Some(&token), &body, args.retries).await?;
    let page = answer["url"].as_str().unwrap_or_default();
    let what = if route == "/v1/deployments" { "deployment" } else { "incident" };
    let id = answer["entity"]["identifier"].as_str().unwrap_or_default();
    println!("Reported {what} {id}: {base}{page}");
    if let Some(ignored) = answer["ignored"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = ignored.iter().filter_map(Value::as_str).collect();
        eprintln!("note: the portal's `{what}` blueprint has no {}: left out", names.join(", "));
    }
    Ok(())
}

/// POSTs `body`, retrying a transient failure with back-off (0.5 s, doubling, at most 8 s); answers the JSON
/// body of a success, or the server's reason for a refusal.
async fn send(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
    retries: u32,
) -> anyhow::Result<Value> {
    let mut wait = Duration::from_millis(500);
    let mut attempt = 0;
    loop {
        let mut request = client.post(url).json(body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let failure = match request.send().await {
            Ok(r) if r.status().is_success() => return r.json().await.context("the portal's answer is not JSON"),
            Ok(r) => {
                let status = r.status();
                let transient = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                let text = r.text().await.unwrap_or_default();
                let reason = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or(text);
                if !transient {
                    bail!("the portal refused the report ({status}): {reason}");
                }
                format!("{status}: {reason}")
            }
            Err(e) => format!("{e}"),
        };
        if attempt >= retries {
            bail!("the report did not reach the portal after {} attempts: {failure}", attempt + 1);
        }
        attempt += 1;
        eprintln!("retrying in {:.1} s ({failure})", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn each_ci_is_read_from_its_own_variables() {
        let gh = ci_context(&vars(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_SHA", "abc"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "acme/api"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_ACTOR", "ada"),
        ]));
        assert_eq!(
            gh,
            CiContext {
                commit: Some("abc".into()),
                url: Some("https://github.com/acme/api/actions/runs/42".into()),
                actor: Some("ada".into())
            }
        );
        let gl = ci_context(&vars(&[
            ("GITLAB_CI", "true"),
            ("CI_COMMIT_SHA", "def"),
            ("CI_PIPELINE_URL", "https://gitlab.example/acme/api/-/pipelines/7"),
            ("GITLAB_USER_LOGIN", "bob"),
        ]));
        assert_eq!(gl.commit.as_deref(), Some("def"));
        assert_eq!(gl.url.as_deref(), Some("https://gitlab.example/acme/api/-/pipelines/7"));
        assert_eq!(gl.actor.as_deref(), Some("bob"));
        let bk = ci_context(&vars(&[
            ("BUILDKITE", "true"),
            ("BUILDKITE_COMMIT", "123"),
            ("BUILDKITE_BUILD_URL", "https://buildkite.com/acme/api/builds/9"),
            ("BUILDKITE_BUILD_CREATOR", "cy"),
        ]));
        assert_eq!((bk.commit.as_deref(), bk.actor.as_deref()), (Some("123"), Some("cy")));
        let jk = ci_context(&vars(&[
            ("JENKINS_URL", "https://jenkins.example/"),
            ("GIT_COMMIT", "456"),
            ("BUILD_URL", "https://jenkins.example/job/api/3/"),
        ]));
        assert_eq!(
            (jk.commit.as_deref(), jk.url.as_deref()),
            (Some("456"), Some("https://jenkins.example/job/api/3/"))
        );
        assert_eq!(ci_context(&vars(&[])), CiContext::default());
    }
}
