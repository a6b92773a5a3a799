//! The guide (`docs/`): its configuration reference is what `berth serve --help` prints, so it cannot drift
//! (`BERTH_UPDATE_GUIDE=1` rewrites it from the binary); every page is in the book's table of contents; the
//! quick start's curl calls run as written against a live server. (The links between pages are checked where
//! the guide is served: `berth-web`'s tests.)

use std::path::Path;
use std::process::Command;

const FENCE: &str = "```text\n";

#[test]
fn the_configuration_reference_is_berth_serve_help() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/configuration.md");
    let page = std::fs::read_to_string(&path).expect("configuration.md");
    // The environment's own BERTH_* values would show in the help: none are passed.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--help"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("berth serve --help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let start = page.find(FENCE).expect("a ```text block") + FENCE.len();
    let end = start + page[start..].find("```").expect("its end");
    if std::env::var("BERTH_UPDATE_GUIDE").is_ok_and(|v| v == "1") {
        std::fs::write(&path, format!("{}{help}{}", &page[..start], &page[end..])).expect("rewrite");
        return;
    }
    assert_eq!(
        &page[start..end],
        help,
        "docs/src/configuration.md is not `berth serve --help`: run BERTH_UPDATE_GUIDE=1 cargo test -p berth --test guide"
    );
}

#[test]
fn every_page_of_the_guide_is_in_its_table_of_contents() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).expect("SUMMARY.md");
    for entry in std::fs::read_dir(&src).expect("docs/src") {
        let name = entry.expect("entry").file_name().to_string_lossy().to_string();
        if name.ends_with(".md") && name != "SUMMARY.md" {
            assert!(summary.contains(&format!("({name})")), "{name} is not in SUMMARY.md");
        }
    }
}

mod support;

/// The quick start's curl calls, run as written (in order, in one shell) against a live server: its address
/// and credential file stand for the ones the reader's first start printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_starts_curl_calls_run_as_written() {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/quick-start.md"))
        .expect("quick-start.md");
    let dir = tempfile::tempdir().expect("dir");
    let server = support::Berth::spawn(dir.path(), &support::sqlite_url(dir.path(), "guide"), &[]);
    let client = support::client();
    let token = server.token(&client).await;
    let data = dir.path().join("berth-data");
    std::fs::create_dir_all(&data).expect("dir");
    let credentials = serde_json::json!({"clientId": support::ID, "clientSecret": support::SECRET});
    std::fs::write(data.join("bootstrap-credentials.json"), credentials.to_string()).expect("credentials");
    let blocks: Vec<&str> = page
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(code, _)| code))
        .filter(|code| code.contains("curl "))
        .collect();
    assert!(blocks.len() >= 2, "the quick start calls the API");
    let script = format!("set -euo pipefail\n{}", blocks.join("\n")).replace("http://127.0.0.1:7070", &server.base);
    let out = Command::new("bash").arg("-c").arg(&script).current_dir(dir.path()).output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{script}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("\"ok\":false"), "no call was refused: {stdout}");
    let r = client
        .get(server.url("/v1/blueprints/microservice/entities/payments"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "the quick start's entity exists");
}
