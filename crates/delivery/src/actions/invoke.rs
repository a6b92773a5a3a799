//! One run sent to its backend, by its action's invocation method, every string templated with `{{ jq }}`
//! over the run's trigger data (`inputs` with encrypted ones opened, `entity`, `trigger`, `event`, `action`,
//! `run`, and `secrets`: the organisation's, opened):
//!
//! - `WEBHOOK`: the method (POST by default), headers and body (the trigger data when no body is given) to
//!   the URL, signed as Port signs (`x-port-timestamp`, `x-port-signature` with the action's secret), to an
//!   address the allow rules accept; retried on a connection failure or a 5xx (3 attempts). `synchronized`
//!   ends the run with the answer (2xx SUCCESS, else FAILURE) and keeps the answer as the run's `response`.
//!   `agent: true` sends the body to the runs topic instead, for an execution agent to consume.
//! - `KAFKA`: the `payload` (or the trigger data) to `--kafka-runs-topic`, keyed by run id.
//! - `GITHUB`: a `workflow_dispatch` of the workflow on the repository's default branch with the rendered
//!   `workflowInputs` (values that are not strings as JSON text, as GitHub takes only strings), through
//!   `--github-url` with `--github-token` (or the secret `GITHUB_TOKEN`); with `reportWorkflowStatus` (the
//!   default), the workflow run GitHub names is followed ([`Senders::report`]) and ends the run with its
//!   conclusion.
//! - `GITLAB`: a pipeline trigger of `groupName/projectName` on `defaultRef` (`main`) with the rendered
//!   `pipelineVariables` and `PORT_RUN_ID` (a JSON body: `{token, ref, variables}`), through `--gitlab-url` with `--gitlab-token` (or the secret
//!   `GITLAB_TRIGGER_TOKEN`).
//! - `AZURE_DEVOPS`: the `payload` to the organisation's incoming webhook `webhook` on `--azure-devops-url`.
//! - `UPSERT_ENTITY`: the rendered `mapping` written as an entity of `blueprintIdentifier` by the run's
//!   creator (its permissions apply), tied to the run; the run ends with the write's outcome.
//! - `INTEGRATION_ACTION`: runs claimed by an Ocean integration, which Berth does not serve: the run fails
//!   saying so.
//!
//! A run waiting for approval whose action has `approvalNotification: {"type": "webhook"}` has its approvers
//! told first ([`Senders::notify`]).
//!
//! What the run keeps (`payload`) is rendered again with every secret shown as `********` and encrypted
//! inputs sealed: no secret reaches the log, the API or the event feed through a run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_catalog::Pipeline;
use berth_engine::runs::template::render;
use berth_engine::runs::{Invocation, Record};
use berth_engine::{Command, State, WriteMeta, WriteMode};
use berth_model::run::{Run, Source, Status};
use berth_model::{DefinitionKind, EntityInput, Origin};
use serde_json::{Map, Value, json};

use crate::Config;
use crate::address::Allow;

/// How a masked secret reads in what a run keeps.
const MASK: &str = "********";
/// The largest backend answer a run keeps.
const MAX_RESPONSE: usize = 64 * 1024;
/// Attempts of a webhook call (a connection failure or a 5xx is retried).
const ATTEMPTS: u32 = 3;

/// What sends runs: the configuration, an HTTP client for the configured CI servers, a Kafka producer.
pub struct Senders {
    config: Config,
    ci: Option<reqwest::Client>,
    kafka: tokio::sync::Mutex<Option<crate::kafka::Kafka>>,
    /// Webhook clients by scheme, host and port, each pinned to the address checked when it was made,
    /// kept for [`RECHECK`] (a client per call would cost a resolution and a connection every time).
    webhooks: std::sync::Mutex<HashMap<String, (reqwest::Client, Instant)>>,
}

/// How long a webhook client (and the address it checked) is used before the host is resolved again.
const RECHECK: Duration = Duration::from_secs(60);

fn failed(payload: Option<Value>, why: impl Into<String>) -> Invocation {
    let why = why.into();
    Invocation {
        payload,
        response: None,
        end: Some((Status::Failure, Some("Invocation failed".into()))),
        log: Some(why),
        ..Default::default()
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => false,
    }
}

/// A backend's answer as a run keeps it: its JSON, else its text, cut to [`MAX_RESPONSE`].
fn response_of(text: &str) -> Value {
    let text = berth_model::limits::truncate(text, MAX_RESPONSE);
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl Senders {
    pub fn new(config: Config) -> Senders {
        let ci = crate::tls_config().ok().and_then(|tls| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(crate::webhook::CALL_TIMEOUT)
                .connect_timeout(Duration::from_secs(5))
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .tls_backend_preconfigured(tls)
                .build()
                .ok()
        });
        Senders { config, ci, kafka: tokio::sync::Mutex::new(None), webhooks: Default::default() }
    }

    /// The trigger data as the backend gets it (encrypted inputs and secrets opened) and as the run keeps it
    /// (secrets masked); `Err` when a sealed value does not open.
    fn data(&self, view: &State, id: &str, run: &Run) -> Result<(Value, Value), String> {
        let mut sent = run.trigger.clone();
        let mut shown = run.trigger.clone();
        if let Some(inputs) = sent.get_mut("inputs").and_then(Value::as_object_mut) {
            for (name, value) in inputs.iter_mut() {
                if let Some(sealed) = value.get("sealed").and_then(Value::as_str) {
                    *value = Value::String(self.config.open_input(id, name, sealed)?);
                }
            }
        }
        let (mut open, mut masked) = (Map::new(), Map::new());
        for d in view.definitions(DefinitionKind::Secret) {
            let Some(sealed) = berth_model::secret::sealed(&d.body) else { continue };
            open.insert(d.identifier.clone(), Value::String(self.config.open_org_secret(&d.identifier, sealed)?));
            masked.insert(d.identifier.clone(), Value::String(MASK.into()));
        }
        sent["secrets"] = Value::Object(open);
        shown["secrets"] = Value::Object(masked);
        Ok((sent, shown))
    }

    /// Sends run `id` and says what to record.
    pub async fn invoke(&self, pipeline: &Pipeline, view: &State, id: &str, run: &Run) -> Invocation {
        let Some(action) = view.definition(DefinitionKind::Action, &run.action.identifier) else {
            return failed(None, format!("action `{}` was deleted before the run was sent", run.action.identifier));
        };
        let method = action.body.get("invocationMethod").cloned().unwrap_or(Value::Null);
        let (sent, shown) = match self.data(view, id, run) {
            Ok(d) => d,
            Err(e) => return failed(None, format!("a sealed value does not open: {e}")),
        };
        // What the run keeps: rendered over the masked data. A template that fails fails the run.
        let mut fields = method.clone();
        if let Some(map) = fields.as_object_mut() {
            map.remove("type");
        }
        let payload = render(&fields, &shown).ok().map(|mut v| {
            v["type"] = method.get("type").cloned().unwrap_or(Value::Null);
            v
        });
        let rendered = match render(&fields, &sent) {
            Ok(v) => v,
            Err(e) => return failed(payload, format!("a template failed: {e}")),
        };
        let kind = method.get("type").and_then(Value::as_str).unwrap_or_default();
        let default_body = || {
            let mut body = shown.clone();
            if let Some(map) = body.as_object_mut() {
                map.remove("secrets");
            }
            // The backend gets the opened inputs.
            body["inputs"] = sent.get("inputs").cloned().unwrap_or(Value::Null);
            body
        };
        match kind {
            "WEBHOOK" => {
                let body = rendered.get("body").cloned().unwrap_or_else(default_body);
                if rendered.get("agent").is_some_and(truthy) {
                    return self.produce(id, &body, payload).await;
                }
                self.webhook(id, &run.action.identifier, &rendered, &body, payload).await
            }
            "KAFKA" => {
                let body = rendered.get("payload").cloned().unwrap_or_else(default_body);
                self.produce(id, &body, payload).await
            }
            "GITHUB" => self.github(view, id, &rendered, payload).await,
            "GITLAB" => self.gitlab(view, id, &rendered, payload).await,
            "AZURE_DEVOPS" => {
                let body = rendered.get("payload").cloned().unwrap_or_else(default_body);
                self.azure(&rendered, &body, payload).await
            }
            "UPSERT_ENTITY" => upsert(pipeline, view, id, run, &rendered, payload).await,
            other => failed(
                payload,
                format!("{other} runs are claimed by an Ocean integration, which this Berth server does not serve"),
            ),
        }
    }

    async fn webhook(
        &self,
        id: &str,
        action: &str,
        rendered: &Value,
        body: &Value,
        payload: Option<Value>,
    ) -> Invocation {
        let method = rendered.get("method").and_then(Value::as_str).unwrap_or("POST");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let headers: Vec<(String, String)> = rendered
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), if let Value::String(s) = v { s.clone() } else { v.to_string() }))
                    .collect()
            })
            .unwrap_or_default();
        let url = rendered.get("url").and_then(Value::as_str).unwrap_or_default();
        let synchronized = rendered.get("synchronized").is_some_and(truthy);
        match self.signed(id, action, url, method, &headers, body).await {
            Ok((status, text)) => {
                let log = format!("sent to the webhook, which answered {status}");
                let success = (200..300).contains(&status);
                if synchronized {
                    let end = if success { Status::Success } else { Status::Failure };
                    return Invocation {
                        payload,
                        response: Some(response_of(&text)),
                        end: Some((end, None)),
                        log: Some(log),
                        ..Default::default()
                    };
                }
                if success {
                    return Invocation { payload, response: None, end: None, log: Some(log), ..Default::default() };
                }
                failed(payload, format!("the webhook answered {status}"))
            }
            Err(e) => failed(payload, e),
        }
    }

    /// A signed JSON request to a webhook the allow rules accept, retried on a connection failure or a 5xx
    /// ([`ATTEMPTS`] attempts): the answer's status and text, or why there was none.
    async fn signed(
        &self,
        id: &str,
        action: &str,
        url: &str,
        method: reqwest::Method,
        headers: &[(String, String)],
        body: &Value,
    ) -> Result<(u16, String), String> {
        let url = match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            _ => return Err("the webhook URL is not an http(s) URL once rendered".into()),
        };
        let client = self.client_for(&url).await.map_err(|e| format!("the webhook cannot be called: {e}"))?;
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let secret = self.config.action_secret(action);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(crate::worker::backoff(attempt - 1)).await;
            }
            let timestamp = berth_catalog::now().millis() / 1000;
            let mut req = client
                .request(method.clone(), url.clone())
                .header("content-type", "application/json")
                .header("x-port-timestamp", timestamp.to_string())
                .header("x-port-signature", crate::secret::signature(&secret, timestamp, &bytes))
                .header("x-berth-run", id);
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            match req.body(bytes.clone()).send().await {
                Ok(r) if r.status().is_server_error() => last = format!("the webhook answered {}", r.status().as_u16()),
                Ok(r) => {
                    let status = r.status().as_u16();
                    return Ok((status, r.text().await.unwrap_or_default()));
                }
                Err(e) => {
                    self.forget_client(&url);
                    last = format!("the webhook could not be reached: {}", without_url(&e));
                }
            }
        }
        Err(format!("{last} ({ATTEMPTS} attempts)"))
    }

    /// A client for `url`'s host, checked against the allow rules and pinned (kept for [`RECHECK`]; dropped
    /// after a connection failure, so a moved host is resolved again).
    async fn client_for(&self, url: &reqwest::Url) -> Result<reqwest::Client, String> {
        let key = client_key(url);
        if let Ok(cached) = self.webhooks.lock() {
            if let Some((client, _)) = cached.get(&key).filter(|(_, at)| at.elapsed() < RECHECK) {
                return Ok(client.clone());
            }
        }
        let client = pinned_client(url, &Allow::new(&self.config.allow)).await?;
        if let Ok(mut cached) = self.webhooks.lock() {
            cached.retain(|_, (_, at)| at.elapsed() < RECHECK);
            cached.insert(key, (client.clone(), Instant::now()));
        }
        Ok(client)
    }

    fn forget_client(&self, url: &reqwest::Url) {
        let key = client_key(url);
        if let Ok(mut cached) = self.webhooks.lock() {
            cached.remove(&key);
        }
    }

    /// Tells a waiting run's approvers, by the action's `approvalNotification` webhook: Port's JSON
    /// (`{type: APPROVAL_REQUESTED, run, action, requestedBy}`) or a Slack message (`format: slack`), signed
    /// like the action's webhooks. A notification that cannot be sent is logged on the run, not retried.
    pub async fn notify(&self, view: &State, id: &str, run: &Run) -> Invocation {
        let done = |log: String| Invocation { log: Some(log), kind: Record::Notified, ..Default::default() };
        let Some(action) = view.definition(DefinitionKind::Action, &run.action.identifier) else {
            return done("the approvers were not told: the action was deleted".into());
        };
        let notification = action.body.get("approvalNotification").cloned().unwrap_or(Value::Null);
        let url = notification.get("url").and_then(Value::as_str).unwrap_or_default();
        let title = run.action.title.clone().unwrap_or_else(|| run.action.identifier.clone());
        let on = run.entity.as_ref().map(|e| format!(" on `{}`", e.identifier)).unwrap_or_default();
        let body = if notification.get("format").and_then(Value::as_str) == Some("slack") {
            json!({"text": format!("{} asks to run *{title}*{on}: approve or decline run `{id}` in Berth.", run.created_by)})
        } else {
            json!({"type": "APPROVAL_REQUESTED", "run": run.view(id),
                "action": {"identifier": run.action.identifier, "title": title}, "requestedBy": run.created_by})
        };
        match self.signed(id, &run.action.identifier, url, reqwest::Method::POST, &[], &body).await {
            Ok((status, _)) if (200..300).contains(&status) => done(format!("the approvers were told ({status})")),
            Ok((status, _)) => done(format!("the approvers were not told: the notification webhook answered {status}")),
            Err(e) => done(format!("the approvers were not told: {e}")),
        }
    }

    async fn produce(&self, id: &str, body: &Value, payload: Option<Value>) -> Invocation {
        let Some(brokers) = self.config.kafka_brokers.as_deref() else {
            return failed(payload, "KAFKA runs need the server started with --kafka-brokers");
        };
        let topic = &self.config.actions.kafka_runs_topic;
        let mut producer = self.kafka.lock().await;
        let kafka = producer
            .get_or_insert_with(|| crate::kafka::Kafka::new(brokers, &self.config.kafka_security, topic, "actions"));
        let message = crate::worker::Message {
            seq: 0,
            key: id.into(),
            body: serde_json::to_vec(body).unwrap_or_default().into(),
        };
        let (_, outcome) = kafka.send_all(&[&message]).await;
        match outcome.error {
            None => Invocation {
                payload,
                response: None,
                end: None,
                log: Some(format!("sent to Kafka topic `{topic}`")),
                ..Default::default()
            },
            Some(e) => failed(payload, format!("Kafka topic `{topic}`: {e}")),
        }
    }

    /// A configured token, else the organisation secret `name`.
    fn token(&self, view: &State, configured: &Option<String>, name: &str) -> Option<String> {
        configured.clone().or_else(|| {
            let d = view.definition(DefinitionKind::Secret, name)?;
            self.config.open_org_secret(name, berth_model::secret::sealed(&d.body)?).ok()
        })
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<(u16, String), String> {
        let r = req.send().await.map_err(|e| without_url(&e))?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.unwrap_or_default()))
    }

    async fn github(&self, view: &State, id: &str, rendered: &Value, payload: Option<Value>) -> Invocation {
        let Some(client) = &self.ci else { return failed(payload, "no HTTP client") };
        let Some(token) = self.token(view, &self.config.actions.github_token, "GITHUB_TOKEN") else {
            return failed(payload, "GITHUB runs need --github-token or the organisation secret GITHUB_TOKEN");
        };
        let field = |k: &str| rendered.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (org, repo, workflow) = (field("org"), field("repo"), field("workflow"));
        let base = self.config.actions.github_url.trim_end_matches('/');
        let seg = |s: &str| utf8_percent(s);
        let auth = |r: reqwest::RequestBuilder| {
            r.bearer_auth(&token)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
        };
        let repo_url = format!("{base}/repos/{}/{}", seg(&org), seg(&repo));
        let branch = match self.call(auth(client.get(&repo_url))).await {
            Ok((200, text)) => serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("default_branch").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| "main".into()),
            Ok((status, _)) => return failed(payload, format!("GitHub answered {status} for repository {org}/{repo}")),
            Err(e) => return failed(payload, format!("GitHub could not be reached: {e}")),
        };
        let inputs: Map<String, Value> = match rendered.get("workflowInputs") {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), if v.is_string() { v.clone() } else { Value::String(v.to_string()) }))
                .collect(),
            _ => [("port_context".to_string(), Value::String(json!({"runId": id}).to_string()))].into_iter().collect(),
        };
        let url = format!("{repo_url}/actions/workflows/{}/dispatches", seg(&workflow));
        // GitHub answers the workflow run it started when asked (`return_run_details`); a server that does not
        // know the parameter refuses it (422), and is asked again without it.
        let mut answer = self
            .call(auth(client.post(&url)).json(&json!({"ref": branch, "inputs": inputs, "return_run_details": true})))
            .await;
        if matches!(&answer, Ok((422, text)) if text.contains("return_run_details")) {
            answer = self.call(auth(client.post(&url)).json(&json!({"ref": branch, "inputs": inputs}))).await;
        }
        match answer {
            Ok((status, text)) if (200..300).contains(&status) => {
                let details: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let run_id = details
                    .get("workflow_run_id")
                    .map(|v| if let Value::String(s) = v { s.clone() } else { v.to_string() });
                let api = details.get("run_url").and_then(Value::as_str).map(str::to_string);
                // Port reports the workflow's status unless told not to.
                let report = rendered.get("reportWorkflowStatus").is_none_or(|v| v.is_null() || truthy(v));
                let log = match (&api, report) {
                    (Some(_), true) => format!(
                        "GitHub workflow `{workflow}` of {org}/{repo} dispatched on `{branch}`; its status is followed"
                    ),
                    (None, true) => format!(
                        "GitHub workflow `{workflow}` of {org}/{repo} dispatched on `{branch}` (GitHub did not say which run: the workflow reports the status)"
                    ),
                    (_, false) => format!("GitHub workflow `{workflow}` of {org}/{repo} dispatched on `{branch}`"),
                };
                Invocation {
                    payload,
                    log: Some(log),
                    external_run_id: run_id,
                    link: details.get("html_url").and_then(Value::as_str).map(str::to_string),
                    follow: api.filter(|_| report),
                    ..Default::default()
                }
            }
            Ok((status, text)) => failed(
                payload,
                format!("GitHub answered {status} to the dispatch: {}", berth_model::limits::truncate(&text, 500)),
            ),
            Err(e) => failed(payload, format!("GitHub could not be reached: {e}")),
        }
    }

    /// Follows a backend's run (a GitHub workflow run): when it has completed, what to record (the run ends
    /// SUCCESS on a `success` conclusion, else FAILURE, labelled with the conclusion); `None` while it runs or
    /// when GitHub does not answer (asked again later).
    pub async fn report(&self, view: &State, run: &Run) -> Option<Invocation> {
        let client = self.ci.as_ref()?;
        let url = run.follow.as_deref()?;
        let token = self.token(view, &self.config.actions.github_token, "GITHUB_TOKEN")?;
        let req = client
            .get(url)
            .bearer_auth(&token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28");
        let (status, text) = self.call(req).await.ok()?;
        if status == 404 {
            return Some(Invocation {
                kind: Record::Reported,
                log: Some("GitHub no longer knows the workflow run: its status is not followed".into()),
                ..Default::default()
            });
        }
        let body: Value = serde_json::from_str(&text).ok()?;
        if body.get("status").and_then(Value::as_str) != Some("completed") {
            return None;
        }
        let conclusion = body.get("conclusion").and_then(Value::as_str).unwrap_or("unknown").to_string();
        let end = if conclusion == "success" { Status::Success } else { Status::Failure };
        Some(Invocation {
            kind: Record::Reported,
            end: Some((end, Some(conclusion.clone()))),
            log: Some(format!("the GitHub workflow run ended: {conclusion}")),
            ..Default::default()
        })
    }

    async fn gitlab(&self, view: &State, id: &str, rendered: &Value, payload: Option<Value>) -> Invocation {
        let Some(client) = &self.ci else { return failed(payload, "no HTTP client") };
        let Some(token) = self.token(view, &self.config.actions.gitlab_token, "GITLAB_TRIGGER_TOKEN") else {
            return failed(payload, "GITLAB runs need --gitlab-token or the organisation secret GITLAB_TRIGGER_TOKEN");
        };
        let field = |k: &str| rendered.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let project = format!("{}/{}", field("groupName"), field("projectName"));
        let reference = Some(field("defaultRef")).filter(|r| !r.is_empty()).unwrap_or_else(|| "main".into());
        // GitLab takes variables as strings.
        let mut variables = Map::new();
        variables.insert("PORT_RUN_ID".into(), Value::String(id.into()));
        if let Some(Value::Object(vars)) = rendered.get("pipelineVariables") {
            for (k, v) in vars {
                let v = if let Value::String(s) = v { s.clone() } else { v.to_string() };
                variables.insert(k.clone(), Value::String(v));
            }
        }
        let form = json!({"token": token, "ref": reference, "variables": variables});
        let base = self.config.actions.gitlab_url.trim_end_matches('/');
        let url = format!("{base}/api/v4/projects/{}/trigger/pipeline", utf8_percent(&project));
        match self.call(client.post(&url).json(&form)).await {
            Ok((status, text)) if (200..300).contains(&status) => Invocation {
                payload,
                response: Some(response_of(&text)),
                end: None,
                log: Some(format!("GitLab pipeline of {project} triggered on `{reference}`")),
                ..Default::default()
            },
            Ok((status, text)) => failed(
                payload,
                format!("GitLab answered {status} to the trigger: {}", berth_model::limits::truncate(&text, 500)),
            ),
            Err(e) => failed(payload, format!("GitLab could not be reached: {e}")),
        }
    }

    async fn azure(&self, rendered: &Value, body: &Value, payload: Option<Value>) -> Invocation {
        let Some(client) = &self.ci else { return failed(payload, "no HTTP client") };
        let field = |k: &str| rendered.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let base = self.config.actions.azure_devops_url.trim_end_matches('/');
        let url = format!(
            "{base}/{}/_apis/public/distributedtask/webhooks/{}?api-version=6.0-preview",
            utf8_percent(&field("org")),
            utf8_percent(&field("webhook"))
        );
        match self.call(client.post(&url).json(body)).await {
            Ok((status, _)) if (200..300).contains(&status) => Invocation {
                payload,
                response: None,
                end: None,
                log: Some("sent to the Azure DevOps webhook".into()),
                ..Default::default()
            },
            Ok((status, _)) => failed(payload, format!("Azure DevOps answered {status}")),
            Err(e) => failed(payload, format!("Azure DevOps could not be reached: {e}")),
        }
    }
}

/// What a webhook client is kept by: scheme, host and port.
fn client_key(url: &reqwest::Url) -> String {
    format!("{}://{}:{}", url.scheme(), url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0))
}

/// A path segment percent-encoded (a `/` in a GitLab project path included).
fn utf8_percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// UPSERT_ENTITY: the mapping written by the run's creator, tied to the run.
async fn upsert(
    pipeline: &Pipeline,
    view: &State,
    id: &str,
    run: &Run,
    rendered: &Value,
    payload: Option<Value>,
) -> Invocation {
    let Some(blueprint) = rendered.get("blueprintIdentifier").and_then(Value::as_str).map(str::to_string) else {
        return failed(payload, "`blueprintIdentifier` is not a string once rendered");
    };
    let mapping = rendered.get("mapping").cloned().unwrap_or(Value::Null);
    let input = match EntityInput::from_owned(mapping) {
        Ok(i) => i,
        Err(e) => return failed(payload, format!("the mapping is not an entity: {e}")),
    };
    // An automation's runs write as the server; anyone else's as its creator, who must still exist.
    let principal = match (run.source, principal_of(view, &run.created_by)) {
        (_, Some(p)) => Some(p),
        (Source::Automation, None) => None,
        (_, None) => return failed(payload, format!("`{}`, who ran it, no longer exists", run.created_by)),
    };
    let meta = WriteMeta {
        actor: run.created_by.clone(),
        origin: if run.source == Source::Automation { Origin::Automation } else { Origin::Api },
        now: berth_catalog::now(),
        datasource: Some("berth-actions".into()),
        run_id: Some(id.to_string()),
        principal,
    };
    let command = Command::WriteEntity {
        blueprint: blueprint.clone(),
        path_id: None,
        input,
        mode: WriteMode::UpsertMerge,
        create_missing_related: false,
    };
    let started = Instant::now();
    match pipeline.write_one(meta, command).await {
        Ok((Ok(berth_engine::Outcome::Entity { entity, .. }), _)) => Invocation {
            payload,
            response: None,
            end: Some((Status::Success, None)),
            log: Some(format!(
                "entity `{}` of blueprint `{blueprint}` written in {} ms",
                entity.identifier,
                started.elapsed().as_millis()
            )),
            ..Default::default()
        },
        Ok((Ok(_), _)) => {
            Invocation { payload, response: None, end: Some((Status::Success, None)), log: None, ..Default::default() }
        }
        Ok((Err(e), _)) => failed(payload, format!("the entity was refused: {e}")),
        Err(e) => failed(payload, format!("the entity was not written: {e}")),
    }
}

/// Whose permissions a run's own writes are judged with: its creator's (a user, or an app); the server's
/// (`None`) for runs an automation made.
fn principal_of(view: &State, who: &str) -> Option<berth_engine::access::Principal> {
    if let Some(u) = view.user(who) {
        return Some(berth_engine::access::Principal {
            id: u.email.clone(),
            roles: u.roles.clone(),
            teams: view.teams_of(who),
        });
    }
    if let Some(c) = view.credential(who) {
        let mut teams = c.teams.clone();
        teams.extend(view.teams_of(who));
        return Some(berth_engine::access::Principal { id: who.to_string(), roles: c.roles.clone(), teams });
    }
    None
}

/// A client whose only address for `url`'s host is one that passed the allow rules (so a name cannot resolve
/// to a checked address and then to another): no redirects, every call timed out.
async fn pinned_client(url: &reqwest::Url, allow: &Allow) -> Result<reqwest::Client, String> {
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let addrs = crate::webhook::checked_addresses(&host, &bare, port, allow).await?;
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(crate::webhook::CALL_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(crate::tls_config()?)
        .resolve_to_addrs(&bare, &addrs)
        .build()
        .map_err(|e| format!("an HTTP client: {e}"))
}

/// A request error's message without the URL (which may carry a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    last.unwrap_or_else(|| "the request failed".into())
}
