//! The command lines `deploy/` ships, run as processes: the two PostgreSQL replicas of
//! `deploy/compose/docker-compose.yml` (their `command` and environment exactly as written, but for what
//! only a container has: the database's host, the data directory, the ports) against the local
//! PostgreSQL, a write on one read on the other; and `deploy/systemd/berth.service`'s `ExecStart` with its
//! `Environment`, stopped with its `KillSignal`. No container engine runs here; `deploy/check` lints the
//! files themselves.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

/// `${NAME:-default}` and `${NAME:?message}` as compose reads them, from `vars`.
fn interpolate(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map(|e| start + e).expect("a closing brace");
        let inner = &rest[start + 2..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner.split(":?").next().unwrap_or(inner), None),
        };
        let value = vars.get(name).copied().or(default).unwrap_or_else(|| panic!("{name} must be set"));
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

struct Replica {
    _child: support::KillOnDrop,
    base: String,
    metrics: String,
}

async fn ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "{base} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `berth` with `args` and `env` (and nothing of the test's own environment's BERTH_* settings).
fn spawn(args: &[String], env: &BTreeMap<String, String>) -> Child {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("berth")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_files_replicas_run_as_written_against_postgresql() {
    let text = std::fs::read_to_string(deploy("compose/docker-compose.yml")).expect("compose file");
    let secret = "compose-secret-0123456789";
    let vars: BTreeMap<&str, &str> = [
        ("BERTH_SIGNING_KEY", "compose-signing-key-0123456789abcdef"),
        ("BERTH_DELIVERY_KEY", "compose-delivery-key-0123456789abcdef"),
        ("BERTH_BOOTSTRAP_CLIENT_SECRET", secret),
    ]
    .into_iter()
    .collect();
    let compose: Value = serde_yaml_ng::from_str(&interpolate(&text, &vars)).expect("YAML");
    let postgres = support::postgres_url("compose");
    let dir = tempfile::tempdir().expect("dir");
    let client = support::client();
    let mut replicas = Vec::new();
    for name in ["berth-1", "berth-2"] {
        let service = &compose["services"][name];
        // The anchor's environment, merged into the service (`<<: *berth`), then the service's own.
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for source in [&compose["x-berth"]["environment"], &service["environment"]] {
            for (k, v) in source.as_object().into_iter().flatten() {
                env.insert(k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string));
            }
        }
        let (port, metrics_port) = (support::free_port(), support::free_port());
        assert_eq!(env["BERTH_LISTEN"], "0.0.0.0:7070");
        env.insert("BERTH_LISTEN".into(), format!("127.0.0.1:{port}"));
        assert_eq!(env["BERTH_METRICS_LISTEN"], "0.0.0.0:9100");
        env.insert("BERTH_METRICS_LISTEN".into(), format!("127.0.0.1:{metrics_port}"));
        let data = dir.path().join(name);
        let args: Vec<String> = service["command"]
            .as_array()
            .expect("a command")
            .iter()
            .map(|a| a.as_str().expect("a string").to_string())
            .map(|a| {
                if a.starts_with("postgres://") {
                    assert!(a.starts_with("postgres://berth:berth@postgres:5432/berth?schema="), "{a}");
                    postgres.clone()
                } else if a == "/var/lib/berth" {
                    data.display().to_string()
                } else {
                    a
                }
            })
            .collect();
        let child = spawn(&args, &env);
        replicas.push(Replica {
            _child: support::KillOnDrop(child),
            base: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        });
    }
    for r in &replicas {
        ready(&client, &r.base).await;
    }
    let id = compose["x-berth"]["environment"]["BERTH_BOOTSTRAP_CLIENT_ID"].as_str().expect("client id");
    let t = berth_testkit::server::token(&client, &replicas[0].base, id, secret).await;
    let written = client
        .post(format!("{}/v1/blueprints", replicas[0].base))
        .bearer_auth(&t)
        .json(&json!({"identifier": "service", "title": "Service", "schema": {"properties": {}}}))
        .send()
        .await
        .expect("write");
    assert_eq!(written.status(), 201);
    let seq = written.headers()["x-berth-seq"].to_str().expect("seq").to_string();
    // The other replica: the same signing key, so the same token; it reads the write.
    let read = client
        .get(format!("{}/v1/blueprints/service", replicas[1].base))
        .bearer_auth(&t)
        .header("x-berth-min-seq", seq)
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 200);
    for r in &replicas {
        let metrics = client.get(&r.metrics).send().await.expect("metrics").text().await.expect("text");
        assert!(metrics.contains("berth_entities") && metrics.ends_with("# EOF\n"), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_units_exec_start_runs_and_stops_on_its_kill_signal() {
    let unit = std::fs::read_to_string(deploy("systemd/berth.service")).expect("unit");
    let value = |key: &str| -> Vec<String> {
        unit.lines().filter_map(|l| l.strip_prefix(&format!("{key}="))).map(str::to_string).collect()
    };
    let state = tempfile::tempdir().expect("state directory");
    let exec = value("ExecStart").pop().expect("ExecStart");
    let exec = exec.replace("${STATE_DIRECTORY}", &state.path().display().to_string());
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/berth"), "the binary where the unit expects it");
    let args: Vec<String> = words.map(str::to_string).collect();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for line in value("Environment") {
        for pair in line.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("NAME=value");
            env.insert(k.into(), v.into());
        }
    }
    assert_eq!(env["BERTH_LISTEN"], "127.0.0.1:7070");
    let port = support::free_port();
    env.insert("BERTH_LISTEN".into(), format!("127.0.0.1:{port}"));
    let mut child = spawn(&args, &env);
    let base = format!("http://127.0.0.1:{port}");
    let client = support::client();
    ready(&client, &base).await;
    assert!(state.path().join("bootstrap-credentials.json").exists(), "its state in the StateDirectory");
    assert_eq!(value("KillSignal"), ["SIGTERM"]);
    let signalled = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(signalled.success());
    let stop = value("TimeoutStopSec").pop().expect("TimeoutStopSec");
    let limit = Duration::from_secs(stop.trim_end_matches('s').parse().expect("seconds"));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "stopped within TimeoutStopSec");
        std::thread::sleep(Duration::from_millis(20));
    }
}
