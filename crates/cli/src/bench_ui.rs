//! `berth bench --ui`: the web UI's entity table over a blueprint of `--entities` services (default 100,000):
//! sign in like a browser, then time whole page loads (request → last byte, so server render time plus
//! loopback) for the table as people use it: first page, an enum filter, a text search, a number range, a
//! sort, a later page, and an entity page. The target is p99 < 50 ms for the table.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{bodies, ingest_into, percentile, setup_service_catalog, spawn, token, wait_ready};

/// Page loads timed per case.
const LOADS: usize = 200;

pub async fn run(entities: usize) -> anyhow::Result<()> {
    if entities == 0 {
        anyhow::bail!("--ui needs at least 1 entity (it opens one's page)");
    }
    let dir = tempfile::tempdir()?;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let server = spawn(dir.path())?;
    wait_ready(&client, &server.base).await?;
    let tok = token(&client, &server.base).await?;
    let base = server.base.clone();
    setup_service_catalog(&client, &base, &tok).await?;
    let t = ingest_into(&client, &base, &tok, "service", bodies("svc", entities, 1000), 2).await?;
    println!("berth bench --ui: {entities} services ingested in {:.1} s", t.as_secs_f64());
    println!(
        "machine: {} cores; client and server share them",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let form = format!("email={}&password={}", crate::bench::UI_EMAIL.replace('@', "%40"), crate::bench::UI_PASSWORD);
    let r = client
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("sign-in gave no cookie")?
        .to_string();

    // A cursor into the middle of the table, from walking a few pages.
    let mut later = "/blueprints/service/entities".to_string();
    for _ in 0..20 {
        let page = client.get(format!("{base}{later}")).header("cookie", &cookie).send().await?.text().await?;
        let Some(at) = page.find(r#"id="next-page""#).and_then(|_| page.find(r#"rel="next""#)) else { break };
        let start = page[..at].rfind("href=\"").context("next link")? + 6;
        let end = start + page[start..].find('"').context("next link end")?;
        later = page[start..end].replace("&amp;", "&");
    }

    let cases = [
        ("table, first page (50 rows, default columns)", "/blueprints/service/entities".to_string()),
        ("table, enum filter language=Rust", "/blueprints/service/entities?f.language=Rust".to_string()),
        ("table, text search q=Service 4242", "/blueprints/service/entities?q=Service+4242".to_string()),
        (
            "table, number range 5 <= replicas <= 6",
            "/blueprints/service/entities?min.replicas=5&max.replicas=6".to_string(),
        ),
        ("table, sorted by replicas desc", "/blueprints/service/entities?sort=replicas&order=desc".to_string()),
        ("table, 21st page (cursor)", later),
        ("table, 500 rows per page", "/blueprints/service/entities?limit=500".to_string()),
        // svc-777 in every catalog that has it (the figures in BENCHMARKS.md), one that exists in smaller ones.
        ("entity page (with history)", format!("/entities/service/svc-{}", 777 % entities)),
    ];
    println!("\n| page | p50 | p95 | p99 |\n|---|---|---|---|");
    for (name, path) in cases {
        let mut lat = Vec::with_capacity(LOADS);
        for _ in 0..LOADS {
            let started = Instant::now();
            let r = client.get(format!("{base}{path}")).header("cookie", &cookie).send().await?;
            if r.status() != 200 {
                bail!("{path} answered {}", r.status());
            }
            let _ = r.bytes().await?;
            lat.push(started.elapsed());
        }
        lat.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.95)),
            ms(percentile(&lat, 0.99))
        );
    }
    Ok(())
}
