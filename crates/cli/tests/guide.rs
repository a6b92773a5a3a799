//! The guide (`docs/`): its configuration reference is what `berth serve --help` prints, so it cannot drift
//! (`BERTH_UPDATE_GUIDE=1` rewrites it from the binary); every page is in the book's table of contents; the
//! quick start runs as written; every `berth` command the guide shows is one the binary takes. (The links between pages are checked where
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

/// The quick start as written: `berth serve --demo` started in an empty directory (as `cargo run --release --
/// serve --demo` does; on a free port rather than 7070), then its curl calls, in order, in one shell, with the
/// credential file that first start wrote. (`scripts/check-quick-start`, run by `.ci/run`, also follows it
/// literally: `cargo run --release` in a fresh clone, on port 7070.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_as_written() {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/quick-start.md"))
        .expect("quick-start.md");
    let blocks: Vec<&str> =
        page.split("```sh\n").skip(1).filter_map(|b| b.split_once("```").map(|(code, _)| code)).collect();
    let start = blocks.first().expect("a first block").trim();
    assert_eq!(start, "cargo run --release -- serve --demo", "the quick start starts the portal");
    let dir = tempfile::tempdir().expect("dir");
    let port = support::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(start.trim_start_matches("cargo run --release -- ").split_whitespace())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("BERTH_DATA_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("berth serve --demo");
    let base = format!("http://127.0.0.1:{port}");
    let client = support::client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(std::time::Instant::now() < deadline, "the portal did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(dir.path().join("berth-data/bootstrap-credentials.json").exists(), "the first start's credential");
    let calls: Vec<&str> = blocks.iter().copied().filter(|code| code.contains("curl ")).collect();
    assert!(calls.len() >= 2, "the quick start calls the API");
    let script = format!("set -euo pipefail\n{}", calls.join("\n")).replace("http://127.0.0.1:7070", &base);
    let out = Command::new("bash").arg("-c").arg(&script).current_dir(dir.path()).output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let status = client.get(format!("{base}/v1/blueprints/microservice")).send().await.expect("get").status();
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{script}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("\"ok\":false"), "no call was refused: {stdout}");
    assert!(stdout.contains("\"identifier\":\"payments\""), "the entity was written: {stdout}");
    assert_eq!(status, 401, "the portal answers (and wants a token)");
}

/// Every `berth` command the guide shows names a subcommand and flags this binary has (each checked against
/// its `--help`).
#[test]
fn every_berth_command_in_the_guide_is_one_this_binary_takes() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).expect("docs/src") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("page");
        for block in text.split("```sh\n").skip(1).filter_map(|b| b.split_once("```").map(|(code, _)| code)) {
            // Continued lines joined; environment assignments before the command left out.
            let joined = block.replace("\\\n", " ");
            for line in joined.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
                let words: Vec<&str> = line.split_whitespace().skip_while(|w| w.contains('=')).collect();
                let command: Vec<&str> = match words.first() {
                    Some(&"berth") => words[1..].to_vec(),
                    Some(&"cargo") if line.contains("cargo run --release --") => {
                        line.split("-- ").nth(1).unwrap_or_default().split_whitespace().collect()
                    }
                    _ => continue,
                };
                // The subcommand: the words before the first flag or path.
                let sub: Vec<&str> = command
                    .iter()
                    .copied()
                    .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
                    .take(2)
                    .collect();
                let help = Command::new(env!("CARGO_BIN_EXE_berth")).args(&sub).arg("--help").output().expect("help");
                assert!(help.status.success(), "{}: `berth {}` is not a command", path.display(), sub.join(" "));
                let help = String::from_utf8_lossy(&help.stdout).to_string();
                for flag in command.iter().filter(|w| w.starts_with("--")) {
                    let name = flag.split('=').next().unwrap_or(flag);
                    assert!(help.contains(name), "{}: `berth {}` has no {name}", path.display(), sub.join(" "));
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 7, "the guide's berth commands are checked ({checked})");
}
