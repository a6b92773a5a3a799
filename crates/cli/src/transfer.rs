//! What `migrate`, `backup` and `restore` share: opening stores, progress lines, replaying a log into a
//! state while digesting it, and the verification report that compares two catalogs.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_engine::{CatalogDigest, LogDigest, State, decode_event};
use berth_store::LogStore;
use serde_json::{Value, json};

/// Events read or written per store call.
pub const PAGE: usize = 5_000;

/// The store `serve` uses when told nothing.
pub const DEFAULT_STORE: &str = "sqlite://berth-data/berth.db";

pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn LogStore>> {
    let store = berth_store::open(url).await.with_context(|| format!("cannot open the store {url}"))?;
    Ok(Arc::from(store))
}

/// Refuses a store that holds anything: copies go into empty stores only, so nothing is ever overwritten.
pub async fn ensure_empty(store: &dyn LogStore) -> anyhow::Result<()> {
    let head = store.head().await?;
    let snapshot = store.load_snapshot().await?;
    if head > 0 || snapshot.is_some() {
        bail!("the target {} is not empty (it holds {head} events); use an empty store", store.describe());
    }
    Ok(())
}

/// Progress lines on stderr, at most one a second.
pub struct Progress {
    label: &'static str,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(label: &'static str) -> Progress {
        let now = Instant::now();
        Progress { label, started: now, last: now }
    }

    pub fn tick(&mut self, done: u64, of: Option<u64>) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let rate = rate(done, self.started.elapsed());
        let mut err = std::io::stderr().lock();
        let _ = match of {
            Some(total) => writeln!(
                err,
                "{}: {done} / {total} events ({rate:.0} events/s, lag {})",
                self.label,
                total.saturating_sub(done)
            ),
            None => writeln!(err, "{}: {done} events ({rate:.0} events/s)", self.label),
        };
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

pub fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A catalog built by applying events one by one, digesting the log as it goes.
pub struct Replayed {
    pub state: State,
    pub log: LogDigest,
}

impl Replayed {
    /// Starts from a snapshot's state (events up to its sequence are digested but not applied again).
    pub fn from_state(state: State) -> Replayed {
        Replayed { state, log: LogDigest::default() }
    }

    /// Feeds the next event of the log; it must follow the previous one.
    pub fn feed(&mut self, seq: u64, payload: &[u8]) -> anyhow::Result<()> {
        let (_, last) = self.log.position();
        if seq != last + 1 {
            bail!("the log jumps from event {last} to {seq}");
        }
        self.log.update(seq, payload);
        if seq > self.state.seq() {
            let event = decode_event(seq, payload)?;
            self.state.apply(&event)?;
        }
        Ok(())
    }
}

/// Reads a store's log from the first event to `upto`, rebuilding the catalog from nothing.
pub async fn replay_store(store: &dyn LogStore, upto: u64, label: &'static str) -> anyhow::Result<Replayed> {
    let mut replayed = Replayed::from_state(State::default());
    let mut progress = Progress::new(label);
    let mut at = 0;
    while at < upto {
        let page = store.read_from(at, PAGE.min((upto - at) as usize)).await?;
        if page.is_empty() {
            bail!("{} ends at event {at}, before {upto}", store.describe());
        }
        for event in page {
            replayed.feed(event.seq, &event.payload)?;
            at = event.seq;
        }
        progress.tick(at, Some(upto));
    }
    Ok(replayed)
}

/// The comparison of a source catalog and log with a copy's.
pub struct Verification {
    pub seq: u64,
    pub source_log: String,
    pub target_log: String,
    pub source: CatalogDigest,
    pub target: CatalogDigest,
}

impl Verification {
    pub fn equal(&self) -> bool {
        self.source_log == self.target_log && self.source == self.target
    }

    /// Prints the per-blueprint table and the verdict.
    pub fn print(&self, source_name: &str, target_name: &str) {
        let mark = |ok: bool| if ok { "equal" } else { "DIFFERENT" };
        println!("  log digest (events 1..={}): {}", self.seq, mark(self.source_log == self.target_log));
        println!("    {source_name}: {}", self.source_log);
        println!("    {target_name}: {}", self.target_log);
        println!("  {:<32} {:>10} {:>10}  {:<16} result", "blueprint", "source", "target", "digest");
        let names: std::collections::BTreeSet<&String> =
            self.source.blueprints.keys().chain(self.target.blueprints.keys()).collect();
        for name in names {
            let s = self.source.blueprints.get(name);
            let t = self.target.blueprints.get(name);
            let count = |d: Option<&berth_engine::BlueprintDigest>| d.map_or("-".into(), |d| d.entities.to_string());
            let digest = s.or(t).map(|d| d.digest.get(..16).unwrap_or(&d.digest).to_string()).unwrap_or_default();
            println!("  {:<32} {:>10} {:>10}  {:<16} {}", name, count(s), count(t), digest, mark(s == t));
        }
        println!(
            "  {:<32} {:>10} {:>10}",
            "total entities",
            self.source.total_entities(),
            self.target.total_entities()
        );
        println!(
            "  credentials, teams, users, permissions and signing key: {}",
            mark(self.source.access == self.target.access)
        );
        println!("  definition objects (pages, ...): {}", mark(self.source.definitions == self.target.definitions));
    }

    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "equal": self.equal(),
            "logDigest": {"source": self.source_log, "target": self.target_log},
            "source": self.source,
            "target": self.target,
        })
    }
}

/// Writes a JSON report, if asked for one.
pub fn write_report(path: Option<&std::path::Path>, report: &Value) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    Ok(())
}
