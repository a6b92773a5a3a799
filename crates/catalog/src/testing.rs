//! A test kit (feature `testing`): the store the catalog's and the server's unit tests run on: SQLite underneath, with failures injected on demand and
//! the log reads counted.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use berth_store::sqlite::SqliteStore;
use berth_store::{BoxFuture, LogStore, Snapshot, StoreError, StoredEvent};

/// How appends fail.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Failures {
    None,
    /// Every third append fails before it reaches the store.
    Before,
    /// Every third append is committed, then reported failed (a connection lost after COMMIT).
    AfterCommit,
    /// Every third append is not committed and reported undecided (a request that may still arrive).
    Undecided,
}

pub struct TestStore {
    pub inner: SqliteStore,
    failures: Failures,
    appends: AtomicUsize,
    /// Whether the store offers [`LogStore::append_blocking`] (as SQLite does), with the same failures.
    in_place: bool,
    /// Appends made through [`LogStore::append_blocking`].
    pub blocking_appends: AtomicUsize,
    /// While set, reading the log (head, reads) fails.
    pub blind: AtomicBool,
    /// While set, forward log reads (`read_from`) never answer: a network gone silent.
    pub silent: AtomicBool,
    /// While set, `wait_for` sees nothing new until its timeout: other replicas' writes go unnoticed (as
    /// between two polls) until the writer runs into them.
    pub deaf: AtomicBool,
    /// Forward log reads (`read_from`) asked for.
    pub reads: AtomicUsize,
    /// Forward log reads answered: the read numbered this (counting from 0, as `reads` does) and those after
    /// it never answer, as when `silent` is set.
    pub answer_reads: AtomicUsize,
    /// Backward log scans (`read_before`) and point reads (`read_seqs`) made.
    pub scans: AtomicUsize,
    pub point_reads: AtomicUsize,
}

impl TestStore {
    pub fn new(path: &std::path::Path, failures: Failures) -> TestStore {
        TestStore {
            inner: SqliteStore::open(path).expect("open"),
            failures,
            appends: AtomicUsize::new(0),
            in_place: false,
            blocking_appends: AtomicUsize::new(0),
            blind: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            deaf: AtomicBool::new(false),
            reads: AtomicUsize::new(0),
            answer_reads: AtomicUsize::new(usize::MAX),
            scans: AtomicUsize::new(0),
            point_reads: AtomicUsize::new(0),
        }
    }

    /// A test store that also appends on the caller's thread ([`LogStore::append_blocking`]); its failures
    /// count both kinds of append.
    pub fn appending_in_place(path: &std::path::Path, failures: Failures) -> TestStore {
        TestStore { in_place: true, ..TestStore::new(path, failures) }
    }

    /// Appends asked for so far, of both kinds.
    pub fn appends(&self) -> usize {
        self.appends.load(Ordering::SeqCst)
    }

    /// Whether the `n`th append (counting both kinds from 0) is one that fails.
    fn fails(&self, n: usize) -> bool {
        n % 3 == 2 && self.failures != Failures::None
    }

    fn unreadable(&self) -> bool {
        self.blind.load(Ordering::SeqCst)
    }
}

fn injected<T: Send + 'static>(what: &'static str) -> BoxFuture<'static, Result<T, StoreError>> {
    Box::pin(async move { Err(StoreError::Unavailable(format!("injected: {what}"))) })
}

impl LogStore for TestStore {
    fn describe(&self) -> String {
        "test".into()
    }
    fn head(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        if self.unreadable() { injected("unreadable") } else { self.inner.head() }
    }
    fn append(&self, expected: u64, events: Vec<Vec<u8>>) -> BoxFuture<'_, Result<u64, StoreError>> {
        let n = self.appends.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if self.fails(n) {
                match self.failures {
                    Failures::AfterCommit => {
                        self.inner.append(expected, events).await?;
                    }
                    Failures::Undecided => return Err(StoreError::Undecided("injected failure".into())),
                    Failures::None | Failures::Before => {}
                }
                return Err(StoreError::Unavailable("injected failure".into()));
            }
            self.inner.append(expected, events).await
        })
    }
    fn append_blocking(&self, expected: u64, events: &[Vec<u8>]) -> Option<Result<u64, StoreError>> {
        if !self.in_place {
            return None;
        }
        let n = self.appends.fetch_add(1, Ordering::SeqCst);
        self.blocking_appends.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(2));
        if self.fails(n) {
            match self.failures {
                Failures::AfterCommit => {
                    if let Some(Err(e)) = self.inner.append_blocking(expected, events) {
                        return Some(Err(e));
                    }
                }
                Failures::Undecided => return Some(Err(StoreError::Undecided("injected failure".into()))),
                Failures::None | Failures::Before => {}
            }
            return Some(Err(StoreError::Unavailable("injected failure".into())));
        }
        self.inner.append_blocking(expected, events)
    }
    fn read_from(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        if self.silent.load(Ordering::SeqCst) || n >= self.answer_reads.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        if self.unreadable() { injected("unreadable") } else { self.inner.read_from(after, limit) }
    }
    fn read_before(&self, before: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        self.inner.read_before(before, limit)
    }
    fn read_seqs(&self, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.point_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_seqs(seqs)
    }
    fn wait_for(&self, after: u64, timeout: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        if self.deaf.load(Ordering::SeqCst) {
            return Box::pin(async move {
                tokio::time::sleep(timeout).await;
                Ok(after)
            });
        }
        self.inner.wait_for(after, timeout)
    }
    fn save_snapshot(&self, s: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.save_snapshot(s)
    }
    fn load_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, StoreError>> {
        self.inner.load_snapshot()
    }
    fn get_cursor(&self, name: &str) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        self.inner.get_cursor(name)
    }
    fn set_cursor(&self, name: &str, seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.set_cursor(name, seq)
    }
    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        self.inner.take_lease(name, holder, ttl)
    }
    fn release_lease(&self, name: &str, holder: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.release_lease(name, holder)
    }
    fn set_cursor_leased(
        &self,
        name: &str,
        holder: &str,
        token: u64,
        seq: u64,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.inner.set_cursor_leased(name, holder, token, seq)
    }
}

/// A write made by the test writer `t`, unchecked (no principal), now.
pub fn meta() -> berth_engine::WriteMeta {
    berth_engine::WriteMeta {
        actor: "t".into(),
        origin: berth_model::Origin::Api,
        now: crate::now(),
        datasource: None,
        run_id: None,
        principal: None,
    }
}

/// An upsert of entity `id` of blueprint `s` with these properties.
pub fn upsert(id: &str, properties: serde_json::Value) -> berth_engine::Command {
    let body = serde_json::json!({"identifier": id, "properties": properties});
    berth_engine::Command::WriteEntity {
        blueprint: "s".into(),
        path_id: None,
        input: berth_model::EntityInput::from_value(&body).expect("input"),
        mode: berth_engine::WriteMode::Upsert,
        create_missing_related: false,
    }
}
