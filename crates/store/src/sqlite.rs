//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so an acknowledged append
//! survives `kill -9` and power loss (a consumer's leased position alone commits without its own sync: it
//! survives `kill -9`, and the next append syncs it). One connection writes, another reads; blocking calls
//! run on tokio's blocking pool. Checkpoints (copying the WAL into the database file) run on a thread of their
//! own with its own connection, so an append's commit never waits for one, except for a moment each time
//! the WAL has grown past [`WAL_LIMIT_BYTES`], when the writer starts it over (see [`Checkpoints`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::head_watch::HeadWatch;
use crate::{BoxFuture, LogStore, Snapshot, StoreError, StoredEvent};

/// Snapshots are stored in chunks so that no single row grows past SQLite's limits.
const SNAPSHOT_CHUNK: usize = 16 << 20;
/// Bytes written between two checkpoints (SQLite's automatic checkpoint would run every ~4 MB, inside the
/// commit that crossed the line: a few milliseconds more for one append in five at bulk-ingest rates).
const CHECKPOINT_BYTES: usize = 4 << 20;
/// The WAL's size past which the writer starts it over. A passive checkpoint copies the frames that were in
/// the WAL when it began, but SQLite only starts the WAL over once every frame is copied: under sustained
/// writes new frames always arrive meanwhile, so the WAL grew as long as the writes went on (540-830 MB in
/// `berth bench --delivery`, BENCHMARKS.md session 30; 3 GB in `berth bench`'s ingest), taking disk and
/// slowing reads that look a page up in the WAL's index. It is also the WAL file's `journal_size_limit`:
/// the file keeps up to this much of its space when the WAL starts over, so that the appends after
/// overwrite it rather than grow the file again (an append's sync that also grows the file is dearer).
const WAL_LIMIT_BYTES: u64 = 64 << 20;
/// How long the writer, starting the WAL over, waits for a passive checkpoint under way and for the
/// readers of the WAL's frames; the append it follows waits meanwhile, so it gives up soon and tries again
/// after the next checkpoint.
const RESTART_WAIT: Duration = Duration::from_millis(100);
/// How long a connection waits for a lock another holds (SQLite's busy timeout).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SqliteStore {
    path: String,
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    heads: Arc<HeadWatch>,
    checkpoints: Arc<Checkpoints>,
}

/// Asks the checkpoint thread for a checkpoint once enough has been written since the last one, or at once
/// (waiting for it) after a snapshot. Each is passive: it never holds up an append. When the WAL is then
/// still past its limit, the writer itself starts it over after its next commit (a restarting checkpoint,
/// which copies what is left and makes the next append write at the WAL's start). The writer, because a
/// restarting checkpoint must hold the write lock, and another connection waiting for it between appends
/// in a tight loop almost never gets it (SQLite's lock waits are polls, not a queue). That append waits
/// for it: the frames written since the passive checkpoint, copied and synced, at most [`RESTART_WAIT`]
/// for readers and a passive checkpoint under way, once per [`WAL_LIMIT_BYTES`] at most. Its time grows
/// with the WAL (in the test below, with a reader reading all along: 45-60 ms at 64 MiB, 130-180 ms at
/// 256 MiB; a truncating checkpoint, which also frees the file's blocks, 330 ms at 256 MiB).
struct Checkpoints {
    written: std::sync::atomic::AtomicUsize,
    wake: std::sync::mpsc::SyncSender<CheckpointRequest>,
    /// Set by the checkpoint thread when the WAL is past its limit; the writer starts it over.
    restart: Arc<std::sync::atomic::AtomicBool>,
}

/// A checkpoint request, with where to answer when the asker waits for it.
type CheckpointRequest = Option<std::sync::mpsc::Sender<Result<(), StoreError>>>;

impl Checkpoints {
    /// Starts the checkpoint thread on its own connection to `path`, keeping the WAL under `wal_limit`
    /// bytes; it ends when the store is dropped.
    fn start(path: &Path, wal_limit: u64) -> Result<Checkpoints, StoreError> {
        let conn = connect(path)?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(unavailable)?;
        let (wake, asked) = std::sync::mpsc::sync_channel::<CheckpointRequest>(1);
        let restart = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let past_limit = Arc::clone(&restart);
        std::thread::Builder::new()
            .name("berth-sqlite-checkpoint".into())
            .spawn(move || {
                for reply in asked {
                    let done = checkpoint(&conn, page_size, wal_limit, &past_limit);
                    match (reply, done) {
                        (Some(reply), done) => {
                            let _ = reply.send(done);
                        }
                        (None, Err(e)) => {
                            tracing::warn!(error = %e, "SQLite checkpoint failed; the next one will retry")
                        }
                        (None, Ok(())) => {}
                    }
                }
            })
            .map_err(|e| unavailable(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpoints { written: std::sync::atomic::AtomicUsize::new(0), wake, restart })
    }

    /// After each append's commit, on the writer's connection: starts the WAL over if the checkpoint
    /// thread found it past its limit, and asks for a checkpoint once enough has been written.
    fn committed(&self, writer: &Connection, bytes: usize) {
        if self.restart.swap(false, std::sync::atomic::Ordering::Relaxed) {
            // Not the append's error: it is committed, and a WAL still past the limit is asked again.
            if let Err(e) = restart(writer) {
                tracing::warn!(error = %e, "the SQLite WAL could not start over; the next checkpoint asks again");
            }
        }
        self.wrote(bytes);
    }

    fn wrote(&self, bytes: usize) {
        use std::sync::atomic::Ordering;
        if self.written.fetch_add(bytes, Ordering::Relaxed) + bytes >= CHECKPOINT_BYTES {
            self.written.store(0, Ordering::Relaxed);
            // A full channel means a checkpoint is already asked for.
            let _ = self.wake.try_send(None);
        }
    }

    /// A checkpoint now, waited for (blocking: call it from a blocking thread).
    fn now(&self) -> Result<(), StoreError> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.wake.send(Some(reply)).map_err(|_| unavailable("the checkpoint thread has stopped"))?;
        answer.recv().map_err(|_| unavailable("the checkpoint thread has stopped"))?
    }
}

/// A passive checkpoint (it copies what no reader still needs and never blocks the writer); if the WAL is
/// still past `wal_limit` bytes, sets `past_limit` for the writer (see [`Checkpoints`]).
fn checkpoint(
    conn: &Connection,
    page_size: i64,
    wal_limit: u64,
    past_limit: &std::sync::atomic::AtomicBool,
) -> Result<(), StoreError> {
    // The answer: busy, the WAL's frames, the frames copied.
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).map_err(unavailable)?;
    // A frame is a page and its 24-byte header.
    let wal_bytes = frames.max(0) as u64 * (page_size.max(0) as u64 + 24);
    if wal_bytes > wal_limit {
        past_limit.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// A restarting checkpoint on the writer's connection, outside any transaction: copies what is left of the
/// WAL, so that the next append writes at its start, waiting at most [`RESTART_WAIT`] for readers and a
/// checkpoint under way (busy then: the WAL goes on, and the next checkpoint asks again).
fn restart(writer: &Connection) -> Result<(), StoreError> {
    writer.busy_timeout(RESTART_WAIT).map_err(unavailable)?;
    let busy = writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
    writer.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    if busy.map_err(unavailable)? != 0 {
        tracing::debug!("the SQLite WAL could not start over yet; the next checkpoint asks again");
    }
    Ok(())
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Creates the database file readable only by its owner (SQLite gives its WAL and shared-memory files the
/// same permissions): the catalog holds credential and password hashes.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map(drop).map_err(|e| unavailable(format!("cannot create {}: {e}", path.display())))
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(unavailable)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-65536;",
    )
    .map_err(unavailable)?;
    Ok(conn)
}

impl SqliteStore {
    /// Replaces the stored snapshot's bytes (`None`: removes the snapshot), bypassing every check: for tests
    /// of start-up without a snapshot, or with one that does not load.
    #[doc(hidden)]
    pub async fn tamper_snapshot_for_tests(&self, data: Option<Vec<u8>>) -> Result<(), StoreError> {
        Self::blocking(&self.writer, move |c| {
            match data {
                None => c.execute("DELETE FROM snapshot_chunks", []).map(drop),
                Some(bytes) => c.execute("UPDATE snapshot_chunks SET data = ?1", params![bytes]).map(drop),
            }
            .map_err(unavailable)
        })
        .await
    }

    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with_wal_limit(path, WAL_LIMIT_BYTES)
    }

    fn open_with_wal_limit(path: &Path, wal_limit: u64) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        create_private(path)?;
        let writer = connect(path)?;
        writer
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS snapshot_chunks (seq INTEGER NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (seq, idx));
                 CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL,
                     expires_ms INTEGER NOT NULL, token INTEGER NOT NULL);",
            )
            .map_err(unavailable)?;
        // Checkpoints are the checkpoint thread's (see `Checkpoints`), and the WAL file keeps at most its
        // limit's worth of space when it starts over.
        writer
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit={};",
                wal_limit.min(i64::MAX as u64)
            ))
            .map_err(unavailable)?;
        let head = query_head(&writer)?;
        let reader = connect(path)?;
        Ok(SqliteStore {
            path: path.display().to_string(),
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            heads: Arc::new(HeadWatch::new(head)),
            checkpoints: Arc::new(Checkpoints::start(path, wal_limit)?),
        })
    }

    fn blocking<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let conn = Arc::clone(conn);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut guard = conn.lock().map_err(|_| unavailable("connection lock poisoned"))?;
                f(&mut guard)
            })
            .await
            .map_err(unavailable)?
        })
    }
}

impl SqliteStore {
    /// Events by a query of the form `... WHERE seq <op> ?1 ... LIMIT ?2`.
    fn events(
        &self,
        sql: &'static str,
        bound: u64,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<StoredEvent>, StoreError>> {
        Self::blocking(&self.reader, move |c| {
            let mut stmt = c.prepare_cached(sql).map_err(unavailable)?;
            let rows = stmt
                .query_map(params![bound.min(i64::MAX as u64) as i64, limit.min(i64::MAX as usize) as i64], |r| {
                    Ok(StoredEvent { seq: r.get::<_, i64>(0)? as u64, payload: r.get(1)? })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
    }
}

fn query_head(conn: &Connection) -> Result<u64, StoreError> {
    let head: Option<i64> = conn.query_row("SELECT max(seq) FROM events", [], |r| r.get(0)).map_err(unavailable)?;
    Ok(head.unwrap_or(0).max(0) as u64)
}

/// Appends `events` after `expected_head` in one transaction on the writer's connection (blocking, `fsync`
/// included); a conflict if the head has moved.
fn append_in(
    c: &mut Connection,
    checkpoints: &Checkpoints,
    expected_head: u64,
    events: &[Vec<u8>],
) -> Result<u64, StoreError> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(unavailable)?;
    let actual = query_head(&tx)?;
    if actual != expected_head {
        return Err(StoreError::Conflict { expected: expected_head, actual });
    }
    {
        let mut stmt = tx.prepare_cached("INSERT INTO events (seq, payload) VALUES (?1, ?2)").map_err(unavailable)?;
        for (i, payload) in events.iter().enumerate() {
            let seq = expected_head + 1 + i as u64;
            stmt.execute(params![seq as i64, payload]).map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)?;
    checkpoints.committed(c, events.iter().map(Vec::len).sum());
    Ok(expected_head + events.len() as u64)
}

impl LogStore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite://{}", self.path)
    }

    fn head(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Self::blocking(&self.reader, |c| query_head(c))
    }

    fn append(&self, expected_head: u64, events: Vec<Vec<u8>>) -> BoxFuture<'_, Result<u64, StoreError>> {
        let heads = Arc::clone(&self.heads);
        let checkpoints = Arc::clone(&self.checkpoints);
        let fut = Self::blocking(&self.writer, move |c| append_in(c, &checkpoints, expected_head, &events));
        Box::pin(async move {
            let head = fut.await?;
            heads.note(head);
            Ok(head)
        })
    }

    fn append_blocking(&self, expected_head: u64, events: &[Vec<u8>]) -> Option<Result<u64, StoreError>> {
        let appended = match self.writer.lock() {
            Ok(mut c) => append_in(&mut c, &self.checkpoints, expected_head, events),
            Err(_) => Err(unavailable("connection lock poisoned")),
        };
        if let Ok(head) = appended {
            self.heads.note(head);
        }
        Some(appended)
    }

    fn read_from(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.events("SELECT seq, payload FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2", after, limit)
    }

    fn read_before(&self, before: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        self.events("SELECT seq, payload FROM events WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2", before, limit)
    }

    fn read_seqs(&self, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Self::blocking(&self.reader, move |c| {
            let mut stmt = c.prepare_cached("SELECT seq, payload FROM events WHERE seq = ?1").map_err(unavailable)?;
            let mut out = Vec::with_capacity(seqs.len().min(crate::MAX_READ_SEQS));
            for seq in seqs.into_iter().take(crate::MAX_READ_SEQS) {
                let found = stmt
                    .query_row(params![seq.min(i64::MAX as u64) as i64], |r| {
                        Ok(StoredEvent { seq: r.get::<_, i64>(0)? as u64, payload: r.get(1)? })
                    })
                    .optional()
                    .map_err(unavailable)?;
                out.extend(found);
            }
            Ok(out)
        })
    }

    fn wait_for(&self, after: u64, timeout: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.heads.wait_or_ask(after, timeout, self.head()))
    }

    fn save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        let checkpoints = Arc::clone(&self.checkpoints);
        let saved = Self::blocking(&self.writer, move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let head = query_head(&tx)?;
            if snapshot.seq > head {
                return Err(StoreError::Corrupt(format!(
                    "snapshot at {} is ahead of the log head {head}",
                    snapshot.seq
                )));
            }
            let stored: Option<i64> =
                tx.query_row("SELECT max(seq) FROM snapshot_chunks", [], |r| r.get(0)).map_err(unavailable)?;
            if stored.is_some_and(|s| s > snapshot.seq as i64) {
                return Ok(());
            }
            tx.execute("DELETE FROM snapshot_chunks", []).map_err(unavailable)?;
            for (idx, chunk) in snapshot.data.chunks(SNAPSHOT_CHUNK).enumerate() {
                tx.execute(
                    "INSERT INTO snapshot_chunks (seq, idx, data) VALUES (?1, ?2, ?3)",
                    params![snapshot.seq as i64, idx as i64, chunk],
                )
                .map_err(unavailable)?;
            }
            if snapshot.data.is_empty() {
                tx.execute(
                    "INSERT INTO snapshot_chunks (seq, idx, data) VALUES (?1, 0, x'')",
                    params![snapshot.seq as i64],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)
        });
        Box::pin(async move {
            saved.await?;
            // A snapshot is the catalog's size: it is checkpointed into the database file before the save
            // counts as done (by the checkpoint thread, so appends go on meanwhile), rather than later while
            // whatever comes next is running.
            tokio::task::spawn_blocking(move || checkpoints.now()).await.map_err(unavailable)?
        })
    }

    fn load_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, StoreError>> {
        Self::blocking(&self.reader, |c| {
            let seq: Option<i64> =
                c.query_row("SELECT max(seq) FROM snapshot_chunks", [], |r| r.get(0)).map_err(unavailable)?;
            let Some(seq) = seq else { return Ok(None) };
            let size: i64 = c
                .query_row(
                    "SELECT coalesce(sum(length(data)), 0) FROM snapshot_chunks WHERE seq = ?1",
                    params![seq],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            let mut stmt =
                c.prepare("SELECT data FROM snapshot_chunks WHERE seq = ?1 ORDER BY idx").map_err(unavailable)?;
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            let mut rows = stmt.query(params![seq]).map_err(unavailable)?;
            while let Some(row) = rows.next().map_err(unavailable)? {
                // Borrowed from SQLite's row buffer: one copy per chunk, straight into `data`.
                let chunk = row.get_ref(0).map_err(unavailable)?.as_blob().map_err(unavailable)?;
                data.extend_from_slice(chunk);
            }
            Ok(Some(Snapshot { seq: seq as u64, data }))
        })
    }

    fn get_cursor(&self, name: &str) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let name = name.to_string();
        Self::blocking(&self.reader, move |c| {
            c.prepare_cached("SELECT seq FROM cursors WHERE name = ?1")
                .and_then(|mut stmt| stmt.query_row(params![name], |r| r.get::<_, i64>(0)).optional())
                .map(|v| v.map(|s| s as u64))
                .map_err(unavailable)
        })
    }

    fn set_cursor(&self, name: &str, seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        let name = name.to_string();
        Self::blocking(&self.writer, move |c| {
            c.execute(
                "INSERT INTO cursors (name, seq) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET seq = excluded.seq",
                params![name, seq as i64],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
    }

    fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let ttl = crate::check_lease(&holder, ttl);
        Self::blocking(&self.writer, move |c| {
            let ttl = ttl?;
            let now = now_millis();
            c.query_row(LEASE_SQL, params![name, holder, now, now + ttl], |r| r.get::<_, i64>(0))
                .optional()
                .map(|t| t.map(|t| t as u64))
                .map_err(unavailable)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Self::blocking(&self.writer, move |c| {
            c.execute(
                "UPDATE leases SET holder = '', expires_ms = 0 WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
    }

    fn set_cursor_leased(
        &self,
        name: &str,
        holder: &str,
        token: u64,
        seq: u64,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Self::blocking(&self.writer, move |c| {
            // A worker's progress (each delivery worker's, every 100 ms and whenever it catches up) is not
            // synced on its own: the next append's commit syncs it with the rest of the WAL. Synced, each one
            // held the writer's connection (and so every append behind it) for a WAL fsync. A power loss may
            // take the last positions back: a worker then repeats what it delivered since, never skips.
            c.execute_batch("PRAGMA synchronous=NORMAL").map_err(unavailable)?;
            let moved = c
                .prepare_cached(
                    "INSERT INTO cursors (name, seq)
                     SELECT name, ?4 FROM leases WHERE name = ?1 AND holder = ?2 AND token = ?3
                     ON CONFLICT(name) DO UPDATE SET seq = excluded.seq",
                )
                .and_then(|mut stmt| stmt.execute(params![name, holder, token as i64, seq as i64]))
                .map(|n| n == 1)
                .map_err(unavailable);
            // Appends are synced again before anything else runs on this connection.
            c.execute_batch("PRAGMA synchronous=FULL").map_err(unavailable)?;
            moved
        })
    }
}

/// Takes a free or expired lease, or renews the holder's own: the token stays while the holder is the last
/// one to have taken it, and grows when it changes hands (or after a release). No row: another holds it.
const LEASE_SQL: &str = "INSERT INTO leases (name, holder, expires_ms, token) VALUES (?1, ?2, ?4, 1)
     ON CONFLICT(name) DO UPDATE SET
         token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END,
         holder = excluded.holder, expires_ms = excluded.expires_ms
     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?3
     RETURNING token";

/// Milliseconds since the epoch by this machine's clock (an embedded store has one machine).
fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        let store = SqliteStore::open(&path).expect("open");
        crate::conformance::run_all(&store).await;
        drop(store);
        // Everything survives a reopen.
        let store = SqliteStore::open(&path).expect("reopen");
        crate::conformance::check_reopened(&store).await;
        crate::conformance::binary_payloads(&store).await;
        crate::conformance::blocking_appends(&store).await;
    }

    /// A leased position is committed without its own sync, and the writer's connection is back to syncing
    /// every commit afterwards (appends must survive power loss), whether the position moved or not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leased_position_leaves_appends_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("log.db")).expect("open");
        let synchronous = |store: &SqliteStore| -> i64 {
            let c = store.writer.lock().expect("lock");
            c.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("pragma")
        };
        assert_eq!(synchronous(&store), 2, "FULL");
        let token = store.take_lease("c", "me", Duration::from_secs(30)).await.expect("lease").expect("taken");
        assert!(store.set_cursor_leased("c", "me", token, 7).await.expect("moved"));
        assert_eq!(synchronous(&store), 2, "FULL again after a position");
        assert!(!store.set_cursor_leased("c", "someone else", token, 9).await.expect("not moved"));
        assert_eq!(synchronous(&store), 2, "FULL again after a refused position");
        assert_eq!(store.get_cursor("c").await.expect("cursor"), Some(7));
    }

    /// The writer's connection never checkpoints; the checkpoint thread must, or the WAL would hold
    /// everything until the store closes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpoint_thread_moves_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        let store = SqliteStore::open(&path).expect("open");
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let before = size();
        let mut head = 0;
        while (head as usize) * 10_000 < 2 * CHECKPOINT_BYTES {
            head = store.append(head, (0..10).map(|i| vec![i as u8; 10_000]).collect()).await.expect("append");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while size() < before + CHECKPOINT_BYTES as u64 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(size() >= before + CHECKPOINT_BYTES as u64, "database file still {} bytes", size());
        assert_eq!(store.read_from(head - 1, 10).await.expect("read").len(), 1);
    }

    /// Under sustained appends, with a reader reading all along, the WAL stays near its limit (it grew as
    /// long as the appends went on when only passive checkpoints ran), and every event is still there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sustained_appends_keep_the_wal_near_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        let limit = 2 << 20;
        let store = Arc::new(SqliteStore::open_with_wal_limit(&path, limit).expect("open"));
        let wal = dir.path().join("log.db-wal");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let head = store.head().await.expect("head");
                    store.read_from(head.saturating_sub(20), 20).await.expect("read");
                    reads += 1;
                }
                reads
            })
        };
        let (mut head, mut largest) = (0u64, 0u64);
        let written = 24 * CHECKPOINT_BYTES;
        while (head as usize) * 10_000 < written {
            head = store.append(head, (0..10).map(|i| vec![i as u8; 10_000]).collect()).await.expect("append");
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.await.expect("reader") > 0, "the reader read");
        // What a checkpoint finds past the limit, plus what is appended until the next.
        let bound = limit + 3 * CHECKPOINT_BYTES as u64;
        assert!(largest <= bound, "the WAL reached {largest} bytes (bound {bound}) for {written} bytes written");
        assert_eq!(store.read_from(0, 5).await.expect("read").len(), 5);
        assert_eq!(store.read_from(head - 3, 10).await.expect("read").len(), 3);
        assert_eq!(store.head().await.expect("head"), head);
    }

    /// A snapshot save returns once its pages are in the database file (checkpointed, no waiting after).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_save_checkpoints_its_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        let store = SqliteStore::open(&path).expect("open");
        let head = store.append(0, vec![b"{}".to_vec()]).await.expect("append");
        let before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let data = vec![7u8; CHECKPOINT_BYTES / 2];
        store.save_snapshot(Snapshot { seq: head, data }).await.expect("snapshot");
        let after = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(after >= before + (CHECKPOINT_BYTES / 2) as u64, "database file {before} -> {after} bytes");
    }
}

#[cfg(test)]
mod concurrency_tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appenders_leave_no_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn LogStore> = Arc::new(SqliteStore::open(&dir.path().join("log.db")).expect("open"));
        crate::conformance::concurrent_appenders(&[store], 8, 25).await;
    }
}
