//! `berth report` and the GitHub Action's script against a live server: every CI's variables read (and none),
//! bad input refused with a clear message and nothing written, the matrix showing what was reported.

mod support;

use std::process::Command;

use serde_json::Value;
use support::Berth;

/// Every CI variable `berth report` reads, removed from the child's environment so the host's CI does not leak in.
const CI_VARS: [&str; 24] = [
    "GITHUB_ACTIONS",
    "GITHUB_SHA",
    "GITHUB_SERVER_URL",
    "GITHUB_REPOSITORY",
    "GITHUB_RUN_ID",
    "GITHUB_ACTOR",
    "GITHUB_OUTPUT",
    "GITLAB_CI",
    "CI_COMMIT_SHA",
    "CI_PIPELINE_URL",
    "CI_JOB_URL",
    "GITLAB_USER_LOGIN",
    "BUILDKITE",
    "BUILDKITE_COMMIT",
    "BUILDKITE_BUILD_URL",
    "BUILDKITE_BUILD_CREATOR",
    "BUILDKITE_BUILD_AUTHOR",
    "JENKINS_URL",
    "BUILD_URL",
    "GIT_COMMIT",
    "BUILD_USER_ID",
    "CHANGE_AUTHOR",
    "BERTH_URL",
    "BERTH_CLIENT_ID",
];

/// Runs `berth report ...` with `env` (and the test credential unless `credentials` is false).
fn report(server: &Berth, args: &[&str], env: &[(&str, &str)], credentials: bool) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("report").args(args).args(["--base-url", &server.base, "--retries", "1"]);
    for v in CI_VARS {
        cmd.env_remove(v);
    }
    cmd.env_remove("BERTH_CLIENT_SECRET");
    if credentials {
        cmd.env("BERTH_CLIENT_ID", support::ID).env("BERTH_CLIENT_SECRET", support::SECRET);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run berth report");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CI, its variables, and the commit, run URL and actor a report should carry.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str, &'a str);

/// The `checkout` service's row of the matrix.
async fn checkout_row(client: &reqwest::Client, server: &Berth, token: &str) -> Value {
    let r = client.get(server.url("/v1/deployments/matrix")).bearer_auth(token).send().await.expect("matrix");
    let matrix: Value = r.json().await.expect("json");
    let row = matrix["services"].as_array().expect("services").iter().find(|r| r["service"] == "checkout").cloned();
    row.expect("checkout in the matrix")
}

async fn deployment(client: &reqwest::Client, server: &Berth, token: &str, id: &str) -> Value {
    let r = client
        .get(server.url(&format!("/v1/blueprints/deployment/entities/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    assert!(r.status().is_success(), "{id}: {}", r.status());
    r.json::<Value>().await.expect("json")["entity"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_every_ci_land_in_the_catalog_and_bad_ones_write_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = Berth::spawn(dir.path(), &support::sqlite_url(dir.path(), "report.db"), &[]);
    let client = support::client();
    let token = server.token(&client).await;

    let base = ["deployment", "--service", "payments", "--version"];
    let cases: [Case<'_>; 5] = [
        (
            "github",
            vec![
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_SHA", "a1"),
                ("GITHUB_SERVER_URL", "https://github.com"),
                ("GITHUB_REPOSITORY", "acme/payments"),
                ("GITHUB_RUN_ID", "11"),
                ("GITHUB_ACTOR", "ada"),
            ],
            "a1",
            "https://github.com/acme/payments/actions/runs/11",
            "ada",
        ),
        (
            "gitlab",
            vec![
                ("GITLAB_CI", "true"),
                ("CI_COMMIT_SHA", "b2"),
                ("CI_PIPELINE_URL", "https://gitlab.example/acme/payments/-/pipelines/22"),
                ("GITLAB_USER_LOGIN", "bob"),
            ],
            "b2",
            "https://gitlab.example/acme/payments/-/pipelines/22",
            "bob",
        ),
        (
            "jenkins",
            vec![
                ("JENKINS_URL", "https://jenkins.example/"),
                ("GIT_COMMIT", "c3"),
                ("BUILD_URL", "https://jenkins.example/job/payments/33/"),
                ("BUILD_USER_ID", "cy"),
            ],
            "c3",
            "https://jenkins.example/job/payments/33/",
            "cy",
        ),
        (
            "buildkite",
            vec![
                ("BUILDKITE", "true"),
                ("BUILDKITE_COMMIT", "d4"),
                ("BUILDKITE_BUILD_URL", "https://buildkite.com/acme/payments/builds/44"),
                ("BUILDKITE_BUILD_CREATOR", "dee"),
            ],
            "d4",
            "https://buildkite.com/acme/payments/builds/44",
            "dee",
        ),
        ("none", vec![], "", "", ""),
    ];
    for (i, (ci, env, commit, url, actor)) in cases.iter().enumerate() {
        let version = format!("1.{i}.0");
        let env_name = format!("env-{ci}");
        let mut args: Vec<&str> = base.to_vec();
        args.extend([version.as_str(), "--environment", env_name.as_str()]);
        let (ok, out, err) = report(&server, &args, env, true);
        assert!(ok, "{ci}: {out}\n{err}");
        assert!(out.contains(&format!("{}/entities/deployment/", server.base)), "{ci}: prints the page: {out}");
        let id = out.split(' ').nth(2).map(|s| s.trim_end_matches(':')).expect("identifier printed");
        let e = deployment(&client, &server, &token, id).await;
        let p = &e["properties"];
        assert_eq!(p["version"], version.as_str(), "{ci}");
        assert_eq!(p["status"], "success", "{ci}");
        let field = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        assert_eq!(
            (field("commitSha"), field("runUrl"), field("actor")),
            (commit.to_string(), url.to_string(), actor.to_string()),
            "{ci}"
        );
        assert_eq!(e["relations"]["service"], "payments");
        assert_eq!(e["relations"]["environment"], env_name.as_str());
    }
    let count = |client: reqwest::Client, token: String, url: String| async move {
        let r: Value = client.get(url).bearer_auth(token).send().await.expect("count").json().await.expect("json");
        r["count"].as_u64().expect("count")
    };
    let count_url = server.url("/v1/blueprints/deployment/entities-count");
    let before = count(client.clone(), token.clone(), count_url.clone()).await;
    // Bad input: refused before anything is sent, with the field named.
    for (args, needle) in [
        (
            vec!["deployment", "--service", "payments", "--environment", "prod", "--version", "2", "--status", "meh"],
            "`status`",
        ),
        (
            vec![
                "deployment",
                "--service",
                "payments",
                "--environment",
                "prod",
                "--version",
                "2",
                "--started-at",
                "yesterday",
            ],
            "`startedAt`",
        ),
        (vec!["deployment", "--service", "pay ments", "--environment", "prod", "--version", "2"], "`service`"),
        (
            vec![
                "incident",
                "--identifier",
                "inc-1",
                "--service",
                "payments",
                "--environment",
                "prod",
                "--severity",
                "apocalyptic",
            ],
            "`severity`",
        ),
    ] {
        let (ok, out, err) = report(&server, &args, &[], true);
        assert!(!ok, "{args:?} should fail: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // No credentials, or wrong ones: a clear error, nothing written.
    let (ok, _, err) =
        report(&server, &["deployment", "--service", "a", "--environment", "b", "--version", "1"], &[], false);
    assert!(!ok && err.contains("BERTH_CLIENT_ID"), "{err}");
    let wrong = [("BERTH_CLIENT_ID", support::ID), ("BERTH_CLIENT_SECRET", "wrong-secret-0123456789")];
    let (ok, _, err) =
        report(&server, &["deployment", "--service", "a", "--environment", "b", "--version", "1"], &wrong, false);
    assert!(!ok && err.contains("refused"), "{err}");
    assert_eq!(count(client.clone(), token.clone(), count_url.clone()).await, before, "nothing written");

    // An incident, opened then resolved.
    let (ok, out, err) = report(
        &server,
        &[
            "incident",
            "--identifier",
            "inc-7",
            "--service",
            "payments",
            "--environment",
            "env-none",
            "--severity",
            "high",
            "--opened-at",
            "2026-12-01T10:00:00Z",
        ],
        &[],
        true,
    );
    assert!(ok, "{out}\n{err}");
    let (ok, _, err) = report(
        &server,
        &[
            "incident",
            "--identifier",
            "inc-7",
            "--service",
            "payments",
            "--environment",
            "env-none",
            "--resolved-at",
            "2026-12-01T11:30:00Z",
        ],
        &[],
        true,
    );
    assert!(ok, "{err}");
    let inc: Value = client
        .get(server.url("/v1/blueprints/incident/entities/inc-7"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(inc["entity"]["properties"]["severity"], "high");
    assert_eq!(inc["entity"]["properties"]["openedAt"], "2026-12-01T10:00:00.000Z");
    assert_eq!(inc["entity"]["properties"]["resolvedAt"], "2026-12-01T11:30:00.000Z");

    // The GitHub Action's script, run as the action runs it.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../integrations/github-action/report.sh");
    let outputs = dir.path().join("github-output");
    let mut cmd = Command::new("bash");
    cmd.arg(script).current_dir(dir.path());
    for v in CI_VARS {
        cmd.env_remove(v);
    }
    let out = cmd
        .envs([
            ("BERTH_URL", server.base.as_str()),
            ("BERTH_CLIENT_ID", support::ID),
            ("BERTH_CLIENT_SECRET", support::SECRET),
            ("REPORT_SERVICE", "checkout"),
            ("REPORT_ENVIRONMENT", "production"),
            ("REPORT_VERSION", "v9"),
            ("REPORT_STATUS", "success"),
            ("REPORT_COMMIT", "e5"),
            ("REPORT_URL", "https://github.com/acme/checkout/actions/runs/55"),
            ("REPORT_ACTOR", "eve"),
            ("GITHUB_OUTPUT", outputs.to_str().expect("utf-8 path")),
        ])
        .output()
        .expect("run the action's script");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let written = std::fs::read_to_string(&outputs).expect("outputs");
    assert!(written.contains(&format!("url={}/entities/deployment/", server.base)), "{written}");
    let checkout = checkout_row(&client, &server, &token).await;
    assert_eq!(checkout["environments"]["production"]["version"], "v9");
    assert_eq!(checkout["environments"]["production"]["by"], "eve");
    // A cancelled job is a failure: the matrix keeps v9 running.
    let out = cmd.env("REPORT_VERSION", "v10").env("REPORT_STATUS", "cancelled").output().expect("run again");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let row = checkout_row(&client, &server, &token).await;
    assert_eq!(row["environments"]["production"]["version"], "v9");
    server.terminate();
}

/// The script of the GitLab CI template's `.berth-report` job, as GitLab's runner hands it to the shell:
/// the block after `script: - |`, its indentation removed.
fn gitlab_script() -> String {
    let template = include_str!("../../../integrations/gitlab/berth-report.yml");
    let mut lines = template.lines().skip_while(|l| l.trim() != "- |").skip(1);
    let mut script = String::new();
    for line in lines.by_ref() {
        if !line.is_empty() && !line.starts_with("      ") {
            break;
        }
        script.push_str(line.strip_prefix("      ").unwrap_or(line));
        script.push('\n');
    }
    assert!(script.contains("/v1/deployments"), "the template's script: {script}");
    script
}

/// The GitLab CI template's job run as a runner runs it (GitLab's variables set, the job's own variables
/// from the template) against a live server: the deploy lands in the matrix with the commit, pipeline URL
/// and actor; the `.berth-report-failure` variant's `failure` keeps the version before running; a report the
/// portal refuses fails the job with the portal's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gitlab_template_reports_a_deploy() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = Berth::spawn(dir.path(), &support::sqlite_url(dir.path(), "gitlab.db"), &[]);
    let client = support::client();
    let token = server.token(&client).await;
    let script = gitlab_script();
    let job = |version: &str, status: &str| {
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(&script).current_dir(dir.path());
        for v in CI_VARS {
            cmd.env_remove(v);
        }
        cmd.envs([
            ("GITLAB_CI", "true"),
            ("CI_COMMIT_SHA", "9f8e7d6c5b4a"),
            ("CI_COMMIT_SHORT_SHA", "9f8e7d6c"),
            ("CI_PIPELINE_URL", "https://gitlab.example.com/acme/checkout/-/pipelines/812"),
            ("GITLAB_USER_LOGIN", "grace"),
            ("BERTH_URL", server.base.as_str()),
            ("BERTH_CLIENT_ID", support::ID),
            ("BERTH_CLIENT_SECRET", support::SECRET),
            ("BERTH_SERVICE", "checkout"),
            ("BERTH_ENVIRONMENT", "production"),
            ("BERTH_VERSION", version),
            ("BERTH_STATUS", status),
        ]);
        let out = cmd.output().expect("run the template's script");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = job("v3", "success");
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("{}/entities/deployment/", server.base)), "prints the portal's page: {stdout}");
    let row = checkout_row(&client, &server, &token).await;
    assert_eq!(row["environments"]["production"]["version"], "v3");
    assert_eq!(row["environments"]["production"]["by"], "grace");
    let id = row["environments"]["production"]["deployment"].as_str().expect("deployment").to_string();
    let d = deployment(&client, &server, &token, &id).await;
    assert_eq!(d["properties"]["commitSha"], "9f8e7d6c5b4a");
    assert_eq!(d["properties"]["runUrl"], "https://gitlab.example.com/acme/checkout/-/pipelines/812");
    // The failure variant: v4 failed, v3 still runs.
    let (ok, stdout, stderr) = job("v4", "failure");
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(checkout_row(&client, &server, &token).await["environments"]["production"]["version"], "v3");
    // A status the portal does not know: the job fails, saying why, and nothing is written.
    let (ok, _, stderr) = job("v5", "exploded");
    assert!(!ok, "a refused report fails the job");
    assert!(stderr.contains("the portal refused the report (422)") && stderr.contains("status"), "{stderr}");
    assert_eq!(checkout_row(&client, &server, &token).await["environments"]["production"]["version"], "v3");
    server.terminate();
}
