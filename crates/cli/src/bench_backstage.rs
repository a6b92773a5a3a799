//! `berth bench --backstage`: a generated Backstage catalog of `--entities` descriptors (default 100,000:
//! Components of three types, APIs, Resources, Systems, Groups and Users, each owned by a group and most
//! part of a system) imported with `berth import backstage` into a `berth serve` process, twice: a folder of
//! one file per entity, then all of them in one file. Then Backstage's catalog API on the result:
//! `by-query` with a `kind` + `spec.type` filter, 100 items a page, and `entity-facets` by `spec.type`.
//! Targets (issue 22): import < 30 s; by-query p99 < 5 ms; facets < 20 ms.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::bench::{ID, SECRET, percentile, spawn, token, wait_ready};

const HEAD: &str = "apiVersion: backstage.io/v1alpha1\n";

/// The descriptor of entity `i` of `n`.
fn descriptor(i: usize, n: usize) -> String {
    let groups = (n / 250).max(4);
    let systems = (n / 25).max(4);
    let group = format!("group-{}", i % groups);
    match i % 100 {
        0 => format!("{HEAD}kind: Group\nmetadata: {{name: group-{}}}\nspec: {{type: team, children: []}}\n", i / 100),
        1 => format!("{HEAD}kind: User\nmetadata: {{name: user-{i}}}\nspec: {{memberOf: [{group}]}}\n"),
        2..=5 => format!(
            "{HEAD}kind: System\nmetadata: {{name: system-{}}}\nspec: {{owner: {group}}}\n",
            i / 25 * 4 + i % 100 - 2
        ),
        6..=15 => format!(
            "{HEAD}kind: API\nmetadata: {{name: api-{i}}}\nspec: {{type: openapi, lifecycle: production, owner: {group}, definition: 'openapi: 3.0.0'}}\n"
        ),
        16..=20 => {
            format!("{HEAD}kind: Resource\nmetadata: {{name: db-{i}}}\nspec: {{type: database, owner: {group}}}\n")
        }
        _ => {
            let t = ["service", "website", "library"][i % 3];
            format!(
                "{HEAD}kind: Component\nmetadata: {{name: component-{i}, description: 'Component number {i}', tags: [generated]}}\n\
                 spec: {{type: {t}, lifecycle: production, owner: {group}, system: system-{}}}\n",
                i % systems
            )
        }
    }
}

fn import(base: &str, paths: &[&Path], source: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["import", "backstage"])
        .args(paths)
        .args(["--url", base, "--source", source])
        .env("BERTH_CLIENT_ID", ID)
        .env("BERTH_CLIENT_SECRET", SECRET)
        .output()?;
    if !out.status.success() {
        bail!("the import failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(started.elapsed())
}

async fn timed(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, serde_json::Value)> {
    let mut times = Vec::with_capacity(n);
    let mut last = serde_json::Value::Null;
    for _ in 0..n {
        let started = Instant::now();
        let r = client.get(url).bearer_auth(token).send().await?;
        if !r.status().is_success() {
            bail!("{url}: {}", r.status());
        }
        last = r.json().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok((times, last))
}

pub async fn run(entities: usize) -> anyhow::Result<()> {
    println!(
        "berth bench --backstage: {entities} generated descriptors, imported with berth import backstage into berth serve"
    );
    // The component `by-name` reads: component-521 (the figures in BENCHMARKS.md), or the last one there is.
    let Some(probe) = (0..entities.min(522)).rev().find(|i| i % 100 >= 21) else {
        bail!("--backstage needs at least 22 entities (the first component is the 22nd)");
    };
    let dir = tempfile::tempdir()?;
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files)?;
    let mut big = String::new();
    for i in 0..entities {
        let d = descriptor(i, entities);
        std::fs::write(files.join(format!("e{i}.yaml")), &d)?;
        let _ = write!(big, "---\n{d}");
    }
    std::fs::write(dir.path().join("all.yaml"), big)?;

    for (label, path) in [("a folder of one file per entity", "files"), ("one file of every entity", "all.yaml")] {
        let data = tempfile::tempdir()?;
        let server = spawn(data.path())?;
        let client = reqwest::Client::new();
        wait_ready(&client, &server.base).await?;
        let took = import(&server.base, &[&dir.path().join(path)], "bench")?;
        println!(
            "import ({label}): {entities} entities in {:.1} s ({:.0}/s)",
            took.as_secs_f64(),
            entities as f64 / took.as_secs_f64()
        );
        if path != "all.yaml" {
            continue;
        }
        let token = token(&client, &server.base).await?;
        let base = &server.base;
        // Timed once the server is idle: the snapshot the import's events call for written first.
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(60) {
            let ready: serde_json::Value = client.get(format!("{base}/readyz")).send().await?.json().await?;
            let (applied, snapshot) =
                (ready["applied"].as_u64().unwrap_or(0), ready["snapshotSeq"].as_u64().unwrap_or(0));
            if applied > 0 && applied.saturating_sub(snapshot) < 1_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("waited {:.1} s for the import's snapshot before timing", waited.elapsed().as_secs_f64());
        // The first query builds the index; timed after it.
        let first = Instant::now();
        timed(&client, &format!("{base}/api/catalog/entities/by-query?limit=1"), &token, 1).await?;
        println!("index built on first use: {:.0} ms", first.elapsed().as_secs_f64() * 1e3);
        let (t, page) = timed(
            &client,
            &format!("{base}/api/catalog/entities/by-query?filter=kind=component,spec.type=service&limit=100"),
            &token,
            200,
        )
        .await?;
        println!(
            "by-query kind=component,spec.type=service, 100 a page ({} match): p50 {:.2} ms, p99 {:.2} ms",
            page["totalItems"],
            percentile(&t, 0.5).as_secs_f64() * 1e3,
            percentile(&t, 0.99).as_secs_f64() * 1e3
        );
        for facet in ["spec.type", "relations.ownedBy"] {
            let url = format!("{base}/api/catalog/entity-facets?facet={facet}");
            let (t, _) = timed(&client, &url, &token, 50).await?;
            println!(
                "entity-facets {facet} (every entity): p50 {:.2} ms, p99 {:.2} ms",
                percentile(&t, 0.5).as_secs_f64() * 1e3,
                percentile(&t, 0.99).as_secs_f64() * 1e3
            );
        }
        let (t, _) = timed(
            &client,
            &format!("{base}/api/catalog/entities/by-name/component/default/component-{probe}"),
            &token,
            200,
        )
        .await?;
        println!(
            "by-name: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&t, 0.5).as_secs_f64() * 1e3,
            percentile(&t, 0.99).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
