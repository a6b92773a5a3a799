//! Headless Chromium driven through chromedriver (Debian's `chromium` and `chromium-driver`) for the
//! browser tests, and the helpers they share. A missing chromedriver fails the test, unless
//! `BERTH_SKIP_BROWSER=1` asks to skip it on purpose (a developer's machine without Chromium), and says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var("BERTH_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

pub async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

pub async fn path_of(c: &Client) -> String {
    let url = c.current_url().await.expect("url");
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// The text of the element `css` finds, retried while the page is still changing (an element found on the
/// page being left goes stale).
pub async fn text(c: &Client, css: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                return t;
            }
        }
        assert!(Instant::now() < deadline, "no element {css} at {}", path_of(c).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Types `value` into the element `css` finds (emptied first), retried while the page is still changing.
pub async fn fill(c: &Client, css: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.clear().await.is_ok() && e.send_keys(value).await.is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "cannot type into {css} at {}", path_of(c).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element `css` finds, retried while the page is still changing.
pub async fn click(c: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.click().await.is_ok() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "cannot click {css} at {}", path_of(c).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the current path and query satisfy `ok`.
pub async fn wait_url(c: &Client, what: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let url = path_of(c).await;
        if ok(&url) {
            return;
        }
        assert!(Instant::now() < deadline, "waited for {what}; at {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebDriver session in a fresh headless Chromium (its profile under `dir`), and its chromedriver.
pub struct Chromium {
    pub client: Client,
    pub driver: super::KillOnDrop,
}

impl Chromium {
    /// `None` only when the browser is missing and `BERTH_SKIP_BROWSER=1`.
    pub async fn start(dir: &Path) -> Option<Chromium> {
        if !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var("BERTH_SKIP_BROWSER").is_ok_and(|v| v == "1"),
                "{CHROMEDRIVER} is missing: apt-get install chromium chromium-driver (or set BERTH_SKIP_BROWSER=1 to skip this test on purpose)"
            );
            eprintln!("SKIPPED on purpose (BERTH_SKIP_BROWSER=1): the browser test did not run");
            return None;
        }
        let port = super::free_port();
        let driver = super::KillOnDrop(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
        );
        let profile = dir.join("chromium-profile");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display())]}),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => return Some(Chromium { client, driver }),
                Err(e) => {
                    assert!(Instant::now() < deadline, "no WebDriver session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
