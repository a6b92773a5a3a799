//! `berth bench --ingest-webhooks`: inbound webhook requests against a `berth serve` process (the embedded
//! store): GitHub push payloads signed with HMAC-SHA256, one mapping (the repository), sent at `--rate`
//! requests/s (default 5,000) for `--read-seconds` over 64 connections. Printed: the requests answered 202
//! per second, and request-to-entity-visible p50 / p99 over one request in 50 (each sampled request names a
//! repository of its own, read back until it is there).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use crate::bench::{percentile, spawn, token, wait_ready};

const SECRET: &str = "bench-webhook-secret";
/// One request in this many is followed to its entity.
const SAMPLE_EVERY: usize = 50;

fn signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!("sha256={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn push(repo: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"ref": "refs/heads/main", "before": "0000000", "after": format!("{n:040x}"),
        "repository": {"name": repo, "full_name": format!("acme/{repo}"), "private": false, "default_branch": "main"},
        "pusher": {"name": "ada", "email": "ada@example.com"},
        "commits": [{"id": format!("{n:040x}"), "message": "fix the build", "author": {"name": "ada"}}]}))
    .unwrap_or_default()
}

pub async fn run(rate: u64, seconds: u64) -> anyhow::Result<()> {
    let seconds = seconds.max(3);
    println!(
        "berth bench --ingest-webhooks: {rate} requests/s for {seconds} s, GitHub pushes, one mapping, against berth serve"
    );
    let dir = tempfile::tempdir()?;
    let server = spawn(dir.path())?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(128).build()?;
    wait_ready(&client, &server.base).await?;
    let token = token(&client, &server.base).await?;
    let bp = json!({"identifier": "repo", "title": "Repository", "schema": {"properties": {
        "branch": {"type": "string"}, "private": {"type": "boolean"}}}});
    let r = client.post(format!("{}/v1/blueprints", server.base)).bearer_auth(&token).json(&bp).send().await?;
    if !r.status().is_success() {
        bail!("the blueprint was refused: {}", r.text().await?);
    }
    let hook = json!({"identifier": "github", "title": "GitHub",
        "security": {"secret": SECRET, "signatureHeaderName": "X-Hub-Signature-256", "signatureAlgorithm": "sha256",
            "signaturePrefix": "sha256=", "requestIdentifierPath": ".headers.\"x-github-delivery\""},
        "mappings": [{"blueprint": "repo", "filter": ".headers.\"x-github-event\" == \"push\"",
            "entity": {"identifier": ".body.repository.name", "title": ".body.repository.full_name",
                "properties": {"branch": ".body.ref | sub(\"refs/heads/\"; \"\")", "private": ".body.repository.private"}}}]});
    let r = client.post(format!("{}/v1/webhooks", server.base)).bearer_auth(&token).json(&hook).send().await?;
    let created: Value = r.json().await?;
    let Some(url) = created["integration"]["url"].as_str().map(str::to_string) else {
        bail!("the webhook was refused: {created}");
    };

    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let answers: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let per_tick = (rate / 100).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut n = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        for _ in 0..per_tick {
            n += 1;
            let sampled = n.is_multiple_of(SAMPLE_EVERY);
            let repo = if sampled { format!("sampled-{n}") } else { format!("repo-{}", n % 5_000) };
            let body = push(&repo, n);
            let (client, url, base, token) = (client.clone(), url.clone(), server.base.clone(), token.clone());
            let (accepted, failed, latencies, gate, answers) = (
                Arc::clone(&accepted),
                Arc::clone(&failed),
                Arc::clone(&latencies),
                Arc::clone(&gate),
                Arc::clone(&answers),
            );
            tasks.spawn(async move {
                let Ok(_permit) = gate.acquire_owned().await else { return };
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", format!("delivery-{n}"))
                    .header("x-hub-signature-256", signature(&body))
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        answers.lock().map(|mut a| a.push(sent.elapsed())).ok();
                    }
                    _ => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                }
                if sampled {
                    let entity = format!("{base}/v1/blueprints/repo/entities/{repo}");
                    let deadline = sent + Duration::from_secs(30);
                    while Instant::now() < deadline {
                        if let Ok(r) = client.get(&entity).bearer_auth(&token).send().await {
                            if r.status().is_success() {
                                latencies.lock().map(|mut l| l.push(sent.elapsed())).ok();
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    let sending = started.elapsed();
    while tasks.join_next().await.is_some() {}
    let accepted = accepted.load(std::sync::atomic::Ordering::Relaxed);
    let mut latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut answers = answers.lock().map(|a| a.clone()).unwrap_or_default();
    answers.sort();
    println!(
        "requests:    {n} sent, {accepted} answered 202 ({:.0}/s), {} failed; answered in p50 {:.1} ms, p99 {:.1} ms",
        accepted as f64 / sending.as_secs_f64(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        ms(percentile(&answers, 0.50)),
        ms(percentile(&answers, 0.99))
    );
    println!(
        "visible:     {} sampled; request-to-entity-visible p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99))
    );
    server.stop_gracefully();
    Ok(())
}
