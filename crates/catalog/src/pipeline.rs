//! The write pipeline: the bridge between the pure engine and the store (the catalog itself is the engine's
//! `State`; this is how it is written, followed and snapshotted).
//!
//! - **Reads** take [`Pipeline::view`], an `Arc<State>` published after every durable batch; a read never
//!   waits for a write.
//! - **Writes** go through one writer task. It drains every queued request (group commit), executes each
//!   command against a working copy of the state (an O(1) clone), appends all resulting events in one
//!   compare-and-append, and only then publishes the new state and answers. Batches are pipelined while
//!   requests queue: the next batch executes while the previous one's append is in flight. A batch with
//!   nothing before or behind it (one client writing) is executed, encoded and appended in one stretch on
//!   one thread, where the store allows it (SQLite). If the append conflicts
//!   (another process wrote first) it catches up from the store and re-executes the batch; if the store
//!   fails, every request of the batch fails and nothing is published.
//! - **Replicas**: a watcher task waits on the store for events written by other processes; when the writer
//!   is idle it catches up and publishes them, so every replica converges on the log. The writer is the only
//!   task that publishes, so a follow never races a commit.
//! - **Snapshots** are written by a background task (when the tail reaches `snapshot_every` events and half
//!   the catalog, at most every 30 s unless the tail runs away; or as soon as writes pause after a tail of
//!   `snapshot_every` events) and on shutdown;
//!   start-up loads the newest snapshot and replays only the tail.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_engine::{Command, Outcome, State, WriteMeta, decode_event, execute};
use berth_model::{DomainError, Event};
use berth_store::{LogStore, Snapshot, StoreError};
use tokio::sync::{mpsc, oneshot, watch};

/// How many requests one group commit takes at most.
const MAX_GROUP: usize = 512;
/// How long a batch keeps retrying after append conflicts (other replicas writing) before it fails.
const CONFLICT_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("replay: {0}")]
    Replay(String),
    #[error("the writer has stopped")]
    Stopped,
    /// The store did not confirm an append and could not be read back: the write may or may not be in the log.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// The answer to a write: one result per command, and the sequence number the state reached.
#[derive(Debug)]
pub struct WriteResult {
    pub outcomes: Vec<Result<Outcome, DomainError>>,
    pub seq: u64,
}

struct WriteJob {
    meta: WriteMeta,
    /// Shared with the requesting task, which frees them once answered (a batch's thousands of parsed
    /// entities are not the writer's to drop).
    commands: Arc<Vec<Command>>,
    reply: oneshot::Sender<Result<WriteResult, PipelineError>>,
}

pub struct Pipeline {
    store: Arc<dyn LogStore>,
    view: RwLock<Arc<State>>,
    jobs: mpsc::Sender<WriteJob>,
    /// The sequence number of the published state.
    applied: watch::Sender<u64>,
    /// The newest store head the watcher has seen (other replicas' writes included).
    store_head: watch::Sender<u64>,
    /// The sequence number of the newest snapshot this process loaded or wrote: a crash now would replay
    /// the log from there.
    snapshot_seq: std::sync::atomic::AtomicU64,
    /// The deployments index, kept current with the published state (see [`Pipeline::deployments`]).
    deployments: crate::deployments::Kept,
    /// The catalog as Backstage's API shows it (see [`Pipeline::backstage`]).
    backstage: crate::backstage::Kept,
    /// The events this writer committed lately, for the feed (see [`crate::recent`]).
    recent: Arc<crate::recent::Recent>,
    /// Nanoseconds the writer has spent executing batches (see [`Pipeline::writer_busy`]).
    busy: std::sync::atomic::AtomicU64,
    /// The time the writer has waited for work (see [`Pipeline::writer_idle`]).
    idle: crate::writer_idle::Idle,
    /// Batch sizes, times to durable and failures (see [`crate::writer_metrics`]).
    metrics: crate::writer_metrics::WriterMetrics,
}

/// How long the watcher waits on the store before asking again (and re-checking the connection).
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

impl Pipeline {
    /// Loads the newest snapshot, replays the tail, and starts the writer and snapshot tasks.
    pub async fn open(store: Arc<dyn LogStore>, snapshot_every: u64) -> Result<Arc<Pipeline>, PipelineError> {
        Pipeline::open_measured(store, snapshot_every, crate::writer_metrics::WriterMetrics::default()).await
    }

    /// [`Pipeline::open`], the writer measuring into `metrics` (which a metrics registry holds clones of).
    pub async fn open_measured(
        store: Arc<dyn LogStore>,
        snapshot_every: u64,
        metrics: crate::writer_metrics::WriterMetrics,
    ) -> Result<Arc<Pipeline>, PipelineError> {
        let started = std::time::Instant::now();
        let snapshot = store.load_snapshot().await?;
        let read = started.elapsed();
        let mut state = match snapshot {
            // The property indexes are built by the writer before its first batch (see `build_pending_indexes`).
            Some(snap) => {
                let seq = snap.seq;
                let loaded =
                    tokio::task::spawn_blocking(move || State::from_snapshot_without_property_indexes(&snap.data))
                        .await
                        .map_err(|e| PipelineError::Replay(e.to_string()))?;
                match loaded {
                    Ok(state) => state,
                    // A snapshot is only a shortcut: the log alone rebuilds the catalog.
                    Err(e) => {
                        tracing::warn!(snapshot_seq = seq, error = %e, "the snapshot does not load; replaying the whole log");
                        State::default()
                    }
                }
            }
            None => State::default(),
        };
        let snapshot_seq = state.seq();
        let loaded = started.elapsed();
        catch_up(store.as_ref(), &mut state).await?;
        // Where start-up time goes, for operators (and for the start-up target).
        tracing::info!(
            snapshot_seq,
            snapshot_read_ms = read.as_millis() as u64,
            snapshot_ms = loaded.as_millis() as u64,
            replayed = state.seq() - snapshot_seq,
            replay_ms = (started.elapsed() - loaded).as_millis() as u64,
            entities = state.total_entities(),
            "catalog loaded"
        );
        let (jobs_tx, jobs_rx) = mpsc::channel(4096);
        let seq = state.seq();
        let catalog = Arc::new(Pipeline {
            store: Arc::clone(&store),
            view: RwLock::new(Arc::new(state)),
            jobs: jobs_tx,
            applied: watch::channel(seq).0,
            store_head: watch::channel(seq).0,
            snapshot_seq: std::sync::atomic::AtomicU64::new(snapshot_seq),
            deployments: crate::deployments::Kept::new(),
            backstage: crate::backstage::Kept::new(),
            recent: Arc::default(),
            busy: std::sync::atomic::AtomicU64::new(0),
            idle: crate::writer_idle::Idle::default(),
            metrics,
        });
        let store_head = catalog.store_head.subscribe();
        tokio::spawn(writer_loop(Arc::clone(&catalog), jobs_rx, store_head));
        tokio::spawn(watch_store(Arc::downgrade(&catalog), seq));
        if snapshot_every > 0 {
            tokio::spawn(snapshot_loop(Arc::downgrade(&catalog), snapshot_every, snapshot_seq));
        }
        tokio::spawn(keep_deployments(Arc::downgrade(&catalog), catalog.applied.subscribe()));
        Ok(catalog)
    }

    /// The deployments index of the published state: answers call [`crate::deployments::Kept::with`] with
    /// [`Pipeline::view`]. A background task catches it up a moment after writes, so an answer rarely
    /// waits for more than the last few, and the state it keeps never holds on to much more than the
    /// published one.
    pub fn deployments(&self) -> &crate::deployments::Kept {
        &self.deployments
    }

    /// The catalog in Backstage's shape, indexed for its catalog API: answers call
    /// [`crate::backstage::Kept::with`] with the view they read (built on first use, caught up after).
    pub fn backstage(&self) -> &crate::backstage::Kept {
        &self.backstage
    }

    /// The current state: one consistent version, cheap to take.
    pub fn view(&self) -> Arc<State> {
        match self.view.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn publish(&self, state: State) {
        let seq = state.seq();
        let state = Arc::new(state);
        let old = match self.view.write() {
            Ok(mut guard) => std::mem::replace(&mut *guard, state),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), state),
        };
        self.applied.send_replace(seq);
        // Freed after the lock is released (readers never wait for it): the old copies of every tree node the
        // batch touched, a tenth of a write's cost. A thread of its own for this was tried; its effect on
        // ingest and memory was within this machine's noise, so the simpler code stayed.
        drop(old);
    }

    /// Waits until the published state has reached `seq`, a write known to be in the store (made on another
    /// replica, say), at most `timeout`; answers whether it has. The writer is told to read the store now
    /// rather than at the watcher's next wake-up, so `seq` must not be a write still to come: waiting for the
    /// next write is [`Pipeline::wait_past`].
    pub async fn wait_applied(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        if *rx.borrow_and_update() >= seq {
            return true;
        }
        self.store_head.send_modify(|h| *h = (*h).max(seq));
        matches!(tokio::time::timeout(timeout, rx.wait_for(|s| *s >= seq)).await, Ok(Ok(_)))
    }

    /// Waits until the published state is past `seq` (the next write, from this replica or another), at most
    /// `timeout`; answers whether it is. Unlike [`Pipeline::wait_applied`] it does not send the writer to the
    /// store: a worker waiting for work that did once made the writer read the store after every write, and,
    /// with the store silent, hang there with every write queued behind it.
    pub async fn wait_past(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        matches!(tokio::time::timeout(timeout, rx.wait_for(|s| *s > seq)).await, Ok(Ok(_)))
    }

    /// The log store: only the catalog layer reads it (history, audit, the feed).
    pub(crate) fn store(&self) -> &Arc<dyn LogStore> {
        &self.store
    }

    /// The store's head (the newest sequence number in the log, whoever wrote it).
    pub async fn store_head(&self) -> Result<u64, StoreError> {
        self.store.head().await
    }

    /// The kind of store (`sqlite`, `postgres`, `redis`), without its location.
    pub fn store_kind(&self) -> String {
        self.store.describe().split("://").next().unwrap_or_default().to_string()
    }

    /// A consumer of the log feed whose position every replica shares ([`crate::feed::Consumer`]).
    pub fn consumer(&self, name: &str, holder: &str, ttl: Duration) -> crate::feed::Consumer {
        crate::feed::Consumer::new(self.tail(), name, holder, ttl)
    }

    /// The log's tail as the feed reads it: recent events from memory, older ones from the store.
    fn tail(&self) -> crate::feed::Tail {
        crate::feed::Tail::new(Arc::clone(&self.store), Arc::clone(&self.recent), self.applied.subscribe())
    }

    /// Sets a consumer's position outside its lease (a consumer created or rewound by an administrator:
    /// the holder, if any, reads from there at its next page).
    pub async fn set_position(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.store.set_cursor(name, seq).await
    }

    /// The events of these sequence numbers, decoded (those the log does not have are left out).
    pub async fn events(&self, seqs: Vec<u64>) -> Result<Vec<berth_model::Event>, crate::ReadError> {
        let stored = self.store.read_seqs(seqs).await?;
        stored.iter().map(crate::ReadError::decode).collect()
    }

    /// The sequence number of the last event written at or before `time` (0: none), found by binary search
    /// of the log (events are appended in time order by the one writer; a few dozen point reads).
    pub async fn seq_at(&self, time: berth_model::Timestamp) -> Result<u64, crate::ReadError> {
        let (mut low, mut high) = (0u64, self.store.head().await?);
        // Invariant: the event `low` (if any) is at or before `time`; every event after `high` is after it.
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            let at = self.store.read_from(mid - 1, 1).await?;
            let Some(stored) = at.first() else { break };
            if crate::ReadError::decode(stored)?.time <= time {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        Ok(low)
    }

    /// Gives up a consumer's lease held by `holder` (a replica stopping gracefully: another takes over at
    /// once, from the last commit, instead of when the lease runs out).
    pub async fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.store.release_lease(name, holder).await
    }

    /// A consumer's committed position, if it has one.
    pub async fn position(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.store.get_cursor(name).await
    }

    /// The events after `after` as the feed reads them ([`crate::feed::Tail::read`]).
    pub async fn feed(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<crate::feed::FeedPage, crate::ReadError> {
        self.tail().read(after, limit, wait).await
    }

    /// Runs commands as one request; each command is atomic on its own.
    pub async fn write(&self, meta: WriteMeta, commands: Vec<Command>) -> Result<WriteResult, PipelineError> {
        let (reply, rx) = oneshot::channel();
        let commands = Arc::new(commands);
        let job = WriteJob { meta, commands: Arc::clone(&commands), reply };
        self.jobs.send(job).await.map_err(|_| PipelineError::Stopped)?;
        let answer = rx.await.map_err(|_| PipelineError::Stopped)?;
        // The writer let go of its reference before answering: the commands are freed here, off its path.
        drop(commands);
        answer
    }

    /// Runs one command.
    pub async fn write_one(
        &self,
        meta: WriteMeta,
        command: Command,
    ) -> Result<(Result<Outcome, DomainError>, u64), PipelineError> {
        let mut result = self.write(meta, vec![command]).await?;
        let outcome = result.outcomes.pop().unwrap_or(Err(DomainError::Invalid("no command".into())));
        Ok((outcome, result.seq))
    }

    /// Validates a command against the current state without writing anything (`validation_only`).
    pub fn dry_run(&self, meta: &WriteMeta, command: &Command) -> Result<Outcome, DomainError> {
        execute(&self.view(), meta, command).map(|(_, outcome)| outcome)
    }

    /// Writes a snapshot of the current state now.
    pub async fn snapshot(&self) -> Result<u64, PipelineError> {
        let state = self.view();
        let seq = state.seq();
        let data = tokio::task::spawn_blocking(move || state.to_snapshot())
            .await
            .map_err(|e| PipelineError::Replay(e.to_string()))?
            .map_err(|e| PipelineError::Replay(e.to_string()))?;
        self.store.save_snapshot(Snapshot { seq, data }).await?;
        self.snapshot_seq.fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
        Ok(seq)
    }

    /// The time the writer has spent executing batches since start: sampled twice, the share of the time
    /// between that it was busy.
    pub fn writer_busy(&self) -> Duration {
        Duration::from_nanos(self.busy.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The time the writer has spent waiting for work since start, the wait under way included: sampled
    /// twice, `1 - idle / elapsed` is the share of the time it had a write to do (executing, appending or
    /// answering one). One client writing as fast as it can keeps it busy most of the time.
    pub fn writer_idle(&self) -> Duration {
        self.idle.total()
    }

    /// Whether the writer task still takes writes (it ends only on a bug; then this replica is not ready).
    pub fn writer_alive(&self) -> bool {
        !self.jobs.is_closed()
    }

    /// The sequence number of the newest snapshot this process loaded or wrote.
    /// What the writer measures (for `/metrics`).
    pub fn writer_metrics(&self) -> &crate::writer_metrics::WriterMetrics {
        &self.metrics
    }

    pub fn snapshot_seq(&self) -> u64 {
        self.snapshot_seq.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Waits on the store for new events (other replicas' writes) and tells the writer the head it saw. A failing
/// store is retried with backoff; readiness reports the failure meanwhile.
async fn watch_store(catalog: std::sync::Weak<Pipeline>, mut known: u64) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(store) = catalog.upgrade().map(|c| Arc::clone(&c.store)) else {
            return;
        };
        match store.wait_for(known, WATCH_INTERVAL).await {
            Ok(head) => {
                backoff = Duration::from_millis(100);
                known = head;
                let Some(catalog) = catalog.upgrade() else {
                    return;
                };
                catalog.store_head.send_replace(head);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot watch the store");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// How long the writer may spend catching up with the store before it turns back to the writes queued
/// meanwhile (it publishes what it has applied and catches up the rest at the next wake-up).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(10);

/// Catches the published state up with the store (events other replicas wrote), for at most
/// [`FOLLOW_TIMEOUT`]: a silent store must not hold the writer, and every write queued behind it, longer.
async fn follow(catalog: &Pipeline) {
    let mut state = (*catalog.view()).clone();
    let before = state.seq();
    let caught_up = tokio::time::timeout(FOLLOW_TIMEOUT, catch_up(catalog.store.as_ref(), &mut state)).await;
    match caught_up {
        // A timeout stops `catch_up` at an await point, where every batch it applied is whole (see
        // `catch_up_in`): what it applied is published. After an error, the state may hold half a batch.
        Ok(Ok(())) | Err(_) => {
            if state.seq() > before {
                tracing::debug!(from = before, to = state.seq(), "caught up with the store");
                catalog.publish(state);
            }
            if caught_up.is_err() {
                tracing::warn!(
                    at = catalog.view().seq(),
                    "catching up with the store took over {} s; writes go first, then it goes on",
                    FOLLOW_TIMEOUT.as_secs()
                );
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot catch up with the store; retrying"),
    }
}

/// Applies every stored event after the state's sequence. Reading and decoding a batch (on a blocking
/// thread) overlaps applying the previous one: at start-up after a crash, replay is decode plus apply, and
/// with two cores they run side by side.
async fn catch_up(store: &dyn LogStore, state: &mut State) -> Result<(), PipelineError> {
    catch_up_in(store, state, 10_000).await
}

/// [`catch_up`], reading `batch` events at a time. At each of its await points every batch applied is whole
/// (its indexes settled), so a caller that stops it there may use the state as it is.
async fn catch_up_in(store: &dyn LogStore, state: &mut State, batch: usize) -> Result<(), PipelineError> {
    let decode = |stored: Vec<berth_store::StoredEvent>| {
        stored
            .into_iter()
            .map(|s| decode_event(s.seq, &s.payload).map_err(|e| PipelineError::Replay(e.to_string())))
            .collect::<Result<Vec<Event>, PipelineError>>()
    };
    let mut read_up_to = state.seq();
    let mut pending: Option<tokio::task::JoinHandle<Result<Vec<Event>, PipelineError>>> = None;
    loop {
        let stored = store.read_from(read_up_to, batch).await?;
        let next = match stored.last() {
            Some(last) => {
                read_up_to = last.seq;
                Some(tokio::task::spawn_blocking(move || decode(stored)))
            }
            None => None,
        };
        if let Some(previous) = pending.take() {
            let events = previous.await.map_err(|e| PipelineError::Replay(e.to_string()))??;
            // The batch's index updates are applied together (on two threads) once its entities are in.
            state.defer_indexes();
            for event in events {
                state.apply_owned(event).map_err(|e| PipelineError::Replay(e.to_string()))?;
            }
            state.settle_indexes().map_err(|e| PipelineError::Replay(e.to_string()))?;
        }
        match next {
            Some(handle) => pending = Some(handle),
            None => return Ok(()),
        }
    }
}

struct Executed {
    state: State,
    /// The events the batch made, in order (encoded by [`encode`] on the way to the store).
    events: Vec<Event>,
    results: Vec<Vec<Result<Outcome, DomainError>>>,
}

/// The events as the log stores them; if one cannot be encoded, nothing of the batch is written.
fn encode(events: &[Event]) -> Result<Vec<Vec<u8>>, PipelineError> {
    events
        .iter()
        .map(berth_engine::encode_event)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PipelineError::Replay(e.to_string()))
}

/// How long the store may take to make a batch durable before the append counts as failed (a silent network
/// drop would otherwise hang the writer, and every write behind it, for hours).
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading the log back to settle a failed append may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Encodes and appends a batch's events after `head` (a task of its own: the writer goes on meanwhile).
///
/// An append that fails for any reason but a conflict (a lost connection, a timeout) may still have been
/// committed by the store. Its outcome is settled by reading the log back: the batch's own events there
/// mean it was applied (answered as a success); the head where it was, or other events, mean it was not,
/// unless the store said the append is undecided (it may still commit: a request held up in the network, or
/// one dropped here on the timeout); a store that cannot be read either is reported as
/// [`PipelineError::Unknown`], never as "not applied".
///
/// Durable events join `recent` (before the batch is published: a consumer woken by the publication finds
/// them there).
async fn append_encoded(
    store: Arc<dyn LogStore>,
    recent: Arc<crate::recent::Recent>,
    head: u64,
    events: Vec<Event>,
) -> Result<u64, PipelineError> {
    let encoded = encode(&events)?;
    append_prepared(store, recent, head, events, encoded).await
}

/// [`append_encoded`] with the events already encoded.
async fn append_prepared(
    store: Arc<dyn LogStore>,
    recent: Arc<crate::recent::Recent>,
    head: u64,
    events: Vec<Event>,
    encoded: Vec<Vec<u8>>,
) -> Result<u64, PipelineError> {
    let prints = prints(&encoded);
    let appended = match tokio::time::timeout(APPEND_TIMEOUT, store.append(head, encoded)).await {
        Ok(appended) => appended,
        // The append was dropped, not refused: the store may still be running it.
        Err(_) => Err(StoreError::Undecided(format!("the store did not answer within {} s", APPEND_TIMEOUT.as_secs()))),
    };
    appended_or_settled(store.as_ref(), &recent, head, events, &prints, appended).await
}

/// A fingerprint of each encoded event, to recognise them in the log without keeping a second copy.
fn prints(encoded: &[Vec<u8>]) -> Vec<(usize, u64)> {
    encoded.iter().map(|e| (e.len(), fingerprint(e))).collect()
}

/// The outcome of a batch's append (see [`append_encoded`]): durable events join `recent`; a failure other
/// than a conflict is settled by reading the log back.
async fn appended_or_settled(
    store: &dyn LogStore,
    recent: &crate::recent::Recent,
    head: u64,
    events: Vec<Event>,
    prints: &[(usize, u64)],
    appended: Result<u64, StoreError>,
) -> Result<u64, PipelineError> {
    let durable = |new_head| {
        recent.push(events.into_iter().zip(prints.iter().map(|p| p.0)));
        Ok(new_head)
    };
    let failure = match appended {
        Ok(new_head) => return durable(new_head),
        Err(e @ StoreError::Conflict { .. }) => return Err(e.into()),
        Err(e) => e,
    };
    match tokio::time::timeout(SETTLE_TIMEOUT, settle(store, head, prints)).await {
        Ok(Ok(Found::Applied)) => {
            tracing::warn!(error = %failure, head, "the store reported a failed append that it had committed");
            let new_head = head + prints.len() as u64;
            durable(new_head)
        }
        // Not in the log yet, but it may still get there: neither applied nor not.
        Ok(Ok(Found::Absent)) if matches!(failure, StoreError::Undecided(_)) => {
            Err(PipelineError::Unknown(format!("{failure}; not in the log yet")))
        }
        Ok(Ok(Found::Absent | Found::Overtaken)) => Err(not_applied(failure)),
        Ok(Err(e)) => Err(PipelineError::Unknown(format!("{failure}; reading the log back failed too: {e}"))),
        Err(_) => Err(PipelineError::Unknown(format!("{failure}; reading the log back timed out"))),
    }
}

/// A failed append settled as not applied. One the store had called undecided no longer is (other events
/// took its place): it says so rather than "undecided" under a "not applied" answer.
fn not_applied(failure: StoreError) -> PipelineError {
    match failure {
        StoreError::Undecided(m) => PipelineError::Store(StoreError::Unavailable(format!(
            "{m}; other events took its place in the log, so it can no longer be applied"
        ))),
        other => other.into(),
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    // SipHash with fixed keys: the same bytes give the same print in every run.
    let mut h = std::hash::DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Where a failed append's events are: what reading the log back after `head` shows.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// They are there, right after `head`: the append was applied.
    Applied,
    /// The log still ends at `head`: not applied so far.
    Absent,
    /// Other events follow `head`: the append (compare-and-append on `head`) can never be applied.
    Overtaken,
}

/// Where the events `prints` describes are, read back from the log after `head`.
async fn settle(store: &dyn LogStore, head: u64, prints: &[(usize, u64)]) -> Result<Found, StoreError> {
    let n = prints.len() as u64;
    let store_head = store.head().await?;
    if store_head == head {
        return Ok(Found::Absent);
    }
    if store_head < head + n {
        // Compare-and-append is all or nothing: not all of them are there, so none of ours is.
        return Ok(Found::Overtaken);
    }
    let mut at = head;
    let mut i = 0;
    while i < prints.len() {
        let page = store.read_from(at, prints.len() - i).await?;
        if page.is_empty() {
            return Ok(Found::Overtaken);
        }
        for event in page {
            let Some(&(len, print)) = prints.get(i) else { return Ok(Found::Applied) };
            if event.seq != at + 1 || event.payload.len() != len || fingerprint(&event.payload) != print {
                return Ok(Found::Overtaken);
            }
            at = event.seq;
            i += 1;
        }
    }
    Ok(Found::Applied)
}

/// Executes every job's commands in order against `base`, each command atomically: a command's changes
/// are computed first (pure, no state touched), then applied. Applying a validated change cannot fail short of
/// a bug; if it does, the batch is rebuilt from `base` without that command.
///
/// Index updates are deferred and applied together at the end (on two threads), or before a command that
/// reads indexes; an error means they could not be, and nothing of the batch may be published.
fn execute_batch(base: &State, jobs: &[WriteJob]) -> Result<Executed, PipelineError> {
    let settle = |state: &mut State| state.settle_indexes().map_err(|e| PipelineError::Replay(e.to_string()));
    let mut state = base.clone();
    state.defer_indexes();
    let mut applied: Vec<Event> = Vec::with_capacity(jobs.iter().map(|j| j.commands.len()).sum());
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut job_results = Vec::with_capacity(job.commands.len());
        for command in job.commands.iter() {
            if state.has_deferred_indexes() && command.reads_indexes(&job.meta) {
                settle(&mut state)?;
                state.defer_indexes();
            }
            let result = execute(&state, &job.meta, command).and_then(|(changes, outcome)| {
                let first = applied.len();
                for change in changes {
                    let before = state.previous_of(&change);
                    let event = job.meta.event_after(&state, change, before);
                    if let Err(e) = state.apply(&event) {
                        // Undo this command's partial application by replaying the batch so far.
                        applied.truncate(first);
                        state = base.clone();
                        for ev in &applied {
                            let _ = state.apply(ev);
                        }
                        state.defer_indexes();
                        tracing::error!(error = %e, "a validated change did not apply; the command is refused");
                        return Err(DomainError::Internal(format!("the change could not be applied ({e})")));
                    }
                    applied.push(event);
                }
                Ok(outcome)
            });
            // A refused write by a caller is recorded, so the audit log shows failed attempts too.
            if let (Err(e), Some(_)) = (&result, &job.meta.principal) {
                let event = job.meta.event_after(&state, command.refusal(e), None);
                if state.apply(&event).is_ok() {
                    applied.push(event);
                }
            }
            job_results.push(result);
        }
        results.push(job_results);
    }
    settle(&mut state)?;
    Ok(Executed { state, events: applied, results })
}

/// An executed batch waiting for its events to be durable; its state is published once they are.
struct Landing {
    /// When the batch began executing.
    started: std::time::Instant,
    state: State,
    jobs: Vec<WriteJob>,
    results: Vec<Vec<Result<Outcome, DomainError>>>,
}

/// A batch whose events are being appended by a task of their own while the writer goes on.
struct InFlight {
    append: tokio::task::JoinHandle<Result<u64, PipelineError>>,
    batch: Landing,
}

/// An in-flight append's outcome; a task that panicked or was cancelled counts as a failed append.
fn joined(outcome: Result<Result<u64, PipelineError>, tokio::task::JoinError>) -> Result<u64, PipelineError> {
    outcome.unwrap_or_else(|join| Err(PipelineError::Store(StoreError::Unavailable(join.to_string()))))
}

fn answer(jobs: Vec<WriteJob>, outcome: Result<Committed, PipelineError>) {
    match outcome {
        Ok((seq, results)) => {
            for (WriteJob { meta, commands, reply }, outcomes) in jobs.into_iter().zip(results) {
                drop((meta, commands));
                let _ = reply.send(Ok(WriteResult { outcomes, seq }));
            }
        }
        Err(e) => {
            let unknown = match &e {
                PipelineError::Unknown(m) => {
                    tracing::error!(error = %m, "write batch outcome unknown: the store did not confirm it");
                    Some(m.clone())
                }
                _ => {
                    tracing::error!(error = %e, "write batch failed; nothing was applied");
                    None
                }
            };
            let msg = e.to_string();
            for WriteJob { meta, commands, reply } in jobs {
                drop((meta, commands));
                let error = match &unknown {
                    Some(m) => PipelineError::Unknown(m.clone()),
                    None => PipelineError::Store(StoreError::Unavailable(msg.clone())),
                };
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// Publishes and answers a batch whose append has ended. Returns whether the published state is the one the
/// batch computed (false after a failure or a conflict, when later batches must be re-executed).
async fn land(catalog: &Pipeline, batch: Landing, appended: Result<u64, PipelineError>) -> bool {
    match appended {
        Ok(_) => {
            let seq = batch.state.seq();
            catalog.metrics.batch_writes.observe(batch.jobs.len() as f64);
            catalog.metrics.batch_seconds.observe(batch.started.elapsed().as_secs_f64());
            catalog.publish(batch.state);
            answer(batch.jobs, Ok((seq, batch.results)));
            true
        }
        Err(PipelineError::Store(StoreError::Conflict { .. })) => {
            // Another process wrote first: redo this batch on the caught-up state, with retries.
            let outcome = commit(catalog, &batch.jobs).await;
            answer(batch.jobs, outcome);
            false
        }
        Err(e) => {
            catalog.metrics.failed_batches.inc();
            answer(batch.jobs, Err(e));
            false
        }
    }
}

/// How long the deployments index waits after a write before catching up (writes in a burst are caught up
/// together).
const KEEP_DEBOUNCE: Duration = Duration::from_secs(1);

/// Keeps the deployments index near the published state: built a moment after start, caught up after
/// writes, off the async workers. Ends with the pipeline.
async fn keep_deployments(catalog: std::sync::Weak<Pipeline>, mut applied: watch::Receiver<u64>) {
    tokio::time::sleep(KEEP_DEBOUNCE * 2).await;
    loop {
        let Some(pipeline) = catalog.upgrade() else { return };
        let view = pipeline.view();
        if pipeline.deployments.seq() != view.seq() {
            let kept = Arc::clone(&pipeline);
            if tokio::task::spawn_blocking(move || kept.deployments.with(&view, |_, _| ())).await.is_err() {
                tracing::warn!("catching the deployments index up failed; the next answer rebuilds it");
            }
        }
        drop(pipeline);
        if applied.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(KEEP_DEBOUNCE).await;
    }
}

/// The writer. Batches are pipelined while requests queue: while batch N's events are being made durable,
/// batch N+1 executes on N's (not yet published) state. N+1's append starts only after N's has succeeded,
/// and N+1 is re-executed on the published state if N failed, so the log stays ordered and nothing
/// unacknowledged is published. A batch with nothing before or behind it is made durable where it executed
/// ([`at_once`]).
async fn writer_loop(catalog: Arc<Pipeline>, mut rx: mpsc::Receiver<WriteJob>, mut store_head: watch::Receiver<u64>) {
    build_pending_indexes(&catalog).await;
    let mut flight: Option<InFlight> = None;
    loop {
        let mut jobs = Vec::new();
        if flight.is_none() {
            // Idle: wait for work, or for another replica's events to follow.
            catalog.idle.begin();
            tokio::select! {
                biased;
                job = rx.recv() => match job {
                    Some(job) => {
                        catalog.idle.end();
                        jobs.push(job);
                    }
                    None => return,
                },
                changed = store_head.changed() => {
                    catalog.idle.end();
                    if changed.is_ok() && *store_head.borrow_and_update() > catalog.view().seq() {
                        follow(&catalog).await;
                    }
                    continue;
                }
            }
        } else if let Some(f) = flight.as_mut() {
            // Something is in flight: take more work if it is queued, else wait for the append or new work.
            enum Wake {
                Job(Option<WriteJob>),
                Landed(Result<Result<u64, PipelineError>, tokio::task::JoinError>),
            }
            let wake = tokio::select! {
                biased;
                job = rx.recv() => Wake::Job(job),
                done = &mut f.append => Wake::Landed(done),
            };
            match wake {
                Wake::Job(Some(job)) => jobs.push(job),
                Wake::Job(None) => {
                    if let Some(f) = flight.take() {
                        land(&catalog, f.batch, joined(f.append.await)).await;
                    }
                    return;
                }
                Wake::Landed(done) => {
                    if let Some(f) = flight.take() {
                        land(&catalog, f.batch, joined(done)).await;
                    }
                    continue;
                }
            }
        }
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            if let Some(f) = flight.take() {
                land(&catalog, f.batch, joined(f.append.await)).await;
            }
            continue;
        }
        if flight.is_none() && rx.is_empty() {
            flight = at_once(&catalog, jobs).await;
            continue;
        }
        let speculative = flight.as_ref().map(|f| f.batch.state.clone());
        let base = speculative.unwrap_or_else(|| (*catalog.view()).clone());
        let started = std::time::Instant::now();
        let mut executed = off_the_runtime(|| execute_batch(&base, &jobs));
        catalog.busy.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(f) = flight.take() {
            if !land(&catalog, f.batch, joined(f.append.await)).await {
                executed = off_the_runtime(|| execute_batch(&catalog.view(), &jobs));
            }
        }
        let executed = match executed {
            Ok(executed) => executed,
            Err(e) => {
                answer(jobs, Err(e));
                continue;
            }
        };
        let events = executed.events;
        if events.is_empty() {
            let seq = catalog.view().seq();
            answer(jobs, Ok((seq, executed.results)));
            continue;
        }
        let head = executed.state.seq() - events.len() as u64;
        let store = Arc::clone(&catalog.store);
        let append = tokio::spawn(append_encoded(store, Arc::clone(&catalog.recent), head, events));
        flight = Some(InFlight {
            append,
            batch: Landing { started, state: executed.state, jobs, results: executed.results },
        });
    }
}

/// A batch with nothing in flight before it and nothing queued behind it (one client writing, or a quiet
/// moment), made durable on the thread that executes it when the store can append there
/// ([`LogStore::append_blocking`], SQLite): execution, encoding and the append are one stretch off the
/// runtime, where the pipelined path hands the batch to an append task and the task to a blocking thread,
/// each waiting to be scheduled (on a busy machine, up to a scheduler slice each). Requests that come in
/// meanwhile wait for the append and then go together into the next batch (one `fsync` for all of them),
/// where the pipelined path would have executed the first of them beside the append: for many small
/// concurrent writes the larger group commit is the faster of the two (BENCHMARKS.md, session 27). A store
/// that appends only asynchronously gets the append as a task in flight, as on the pipelined path.
async fn at_once(catalog: &Pipeline, jobs: Vec<WriteJob>) -> Option<InFlight> {
    let started = std::time::Instant::now();
    let base = catalog.view();
    let store = Arc::clone(&catalog.store);
    let (executed, busy, appended) = off_the_runtime(|| {
        let executed = execute_batch(&base, &jobs);
        let busy = started.elapsed();
        let appended = match &executed {
            Ok(e) if !e.events.is_empty() => {
                let head = e.state.seq() - e.events.len() as u64;
                Some(encode(&e.events).map(|encoded| (store.append_blocking(head, &encoded), encoded)))
            }
            _ => None,
        };
        (executed, busy, appended)
    });
    catalog.busy.fetch_add(busy.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    let Executed { state, events, results } = match executed {
        Ok(executed) => executed,
        Err(e) => {
            answer(jobs, Err(e));
            return None;
        }
    };
    let batch = Landing { started, state, jobs, results };
    let head = batch.state.seq() - events.len() as u64;
    let appended = match appended {
        None => {
            // No events: nothing to append.
            let seq = catalog.view().seq();
            answer(batch.jobs, Ok((seq, batch.results)));
            return None;
        }
        Some(Err(e)) => Err(e),
        Some(Ok((Some(appended), encoded))) => {
            let prints = prints(&encoded);
            appended_or_settled(catalog.store.as_ref(), &catalog.recent, head, events, &prints, appended).await
        }
        Some(Ok((None, encoded))) => {
            let append =
                append_prepared(Arc::clone(&catalog.store), Arc::clone(&catalog.recent), head, events, encoded);
            return Some(InFlight { append: tokio::spawn(append), batch });
        }
    };
    land(catalog, batch, appended).await;
    None
}

/// Runs the writer's CPU-bound work (a batch's execution, ~10 ms for 1,000 entities; for a lone batch, its
/// SQLite append too, see [`at_once`]) so that the tasks queued on this worker thread run meanwhile on
/// another. Without it, the append the writer had just spawned sat in
/// this worker's LIFO slot, which other workers cannot steal, until the batch was done: the append of batch N
/// ran after the execution of N+1 instead of beside it (a third of the writer's time at 100k entities).
/// Inline on a current-thread runtime (tests), where there is no other worker.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Builds the property indexes of a catalog loaded from a snapshot without them, then publishes it. Until then
/// reads are answered by scanning (correct, slower) and writes wait in the queue: at a million entities this
/// is ~2 s after the server is ready that it would otherwise have spent before.
async fn build_pending_indexes(catalog: &Pipeline) {
    let view = catalog.view();
    if !view.property_indexes_pending() {
        return;
    }
    let started = std::time::Instant::now();
    let mut state = (*view).clone();
    drop(view);
    let built = tokio::task::spawn_blocking(move || state.build_property_indexes().map(|()| state))
        .await
        .map_err(|e| e.to_string())
        .and_then(|built| built.map_err(|e| e.to_string()));
    match built {
        Ok(state) => {
            catalog.publish(state);
            tracing::info!(ms = started.elapsed().as_millis() as u64, "property indexes built");
        }
        Err(e) => tracing::error!(error = %e, "building the property indexes failed; searches scan"),
    }
}

type Committed = (u64, Vec<Vec<Result<Outcome, DomainError>>>);

/// Redoes a batch whose append conflicted (another replica wrote first): catches up with the log, then
/// executes and appends the batch again, backing off and catching up again while conflicts go on. The
/// published state is behind the log when this starts (the conflict said so), so it catches up before the
/// first attempt, which would otherwise execute on a state known to be stale and conflict again.
async fn commit(catalog: &Pipeline, jobs: &[WriteJob]) -> Result<Committed, PipelineError> {
    let mut base = (*catalog.view()).clone();
    let published = base.seq();
    caught_up_for_redo(catalog.store.as_ref(), &mut base).await?;
    if base.seq() > published {
        catalog.publish(base.clone());
    }
    let deadline = std::time::Instant::now() + CONFLICT_DEADLINE;
    for attempt in 0u32.. {
        if attempt > 0 && std::time::Instant::now() >= deadline {
            break;
        }
        let started = std::time::Instant::now();
        let executed = off_the_runtime(|| execute_batch(&base, jobs))?;
        if executed.events.is_empty() {
            return Ok((base.seq(), executed.results));
        }
        let executed_in = started.elapsed();
        let count = executed.events.len();
        match append_encoded(Arc::clone(&catalog.store), Arc::clone(&catalog.recent), base.seq(), executed.events).await
        {
            Ok(_) => {
                let seq = executed.state.seq();
                catalog.publish(executed.state);
                tracing::debug!(
                    jobs = jobs.len(),
                    events = count,
                    seq,
                    execute_us = executed_in.as_micros() as u64,
                    append_us = (started.elapsed() - executed_in).as_micros() as u64,
                    "batch committed"
                );
                return Ok((seq, executed.results));
            }
            Err(PipelineError::Store(StoreError::Conflict { .. })) => {
                // Another replica is writing: back off a random while (so two busy replicas do not keep
                // colliding in lockstep), then catch up and re-validate.
                if attempt > 0 {
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                caught_up_for_redo(catalog.store.as_ref(), &mut base).await?;
                catalog.publish(base.clone());
            }
            Err(e) => return Err(e),
        }
    }
    Err(PipelineError::Store(StoreError::Unavailable(format!(
        "append conflicts did not stop for {} s: other replicas are writing too fast; retry",
        CONFLICT_DEADLINE.as_secs()
    ))))
}

/// [`catch_up`] for a batch being redone, for at most [`FOLLOW_TIMEOUT`]: a store that stops answering must
/// not hold the writer, and every write queued behind it, for as long as it is silent. The batch then fails,
/// not applied (its conflicting append wrote nothing); the state caught up so far is not published.
async fn caught_up_for_redo(store: &dyn LogStore, base: &mut State) -> Result<(), PipelineError> {
    match tokio::time::timeout(FOLLOW_TIMEOUT, catch_up(store, base)).await {
        Ok(caught_up) => caught_up,
        Err(_) => Err(PipelineError::Store(StoreError::Unavailable(format!(
            "another replica wrote first, and reading its events back took over {} s; retry",
            FOLLOW_TIMEOUT.as_secs()
        )))),
    }
}

/// A random wait below 2^attempt ms, at most 64 ms.
fn conflict_backoff(attempt: u32) -> Duration {
    let cap_us = 1000u64 << attempt.min(6);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    // The low bits of the clock are noise enough for jitter; mix them so consecutive calls differ.
    let jitter = (u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) % cap_us;
    Duration::from_micros(jitter)
}

/// Snapshots are not taken more often than this, unless the tail grows past four times the threshold.
const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);

async fn snapshot_loop(catalog: std::sync::Weak<Pipeline>, every: u64, mut last: u64) {
    let mut last_at = std::time::Instant::now();
    let mut previous_seq = last;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Some(catalog) = catalog.upgrade() else {
            return;
        };
        let view = catalog.view();
        let seq = view.seq();
        let tail = seq.saturating_sub(last);
        // A snapshot costs as much as the catalog is large: take one when the tail to replay has grown to
        // `every` events and to half the catalog (so the cost per event stays constant as the catalog grows),
        // and at most every 30 s under sustained writes unless the tail runs away. When writes pause (nothing
        // new for a tick) after a tail of at least `every` events, take it at once: a bulk load followed by a
        // crash then restarts from the snapshot instead of replaying the whole load.
        let due = every.max(view.total_entities() as u64 / 2);
        drop(view);
        let idle = seq == previous_seq;
        previous_seq = seq;
        let busy_and_due = tail >= due && (last_at.elapsed() >= MIN_SNAPSHOT_INTERVAL || tail >= 4 * due);
        if busy_and_due || (idle && tail >= every) {
            match catalog.snapshot().await {
                Ok(s) => {
                    tracing::info!(seq = s, "snapshot written");
                    last = s;
                    last_at = std::time::Instant::now();
                }
                Err(e) => tracing::warn!(error = %e, "snapshot failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::testing::{Failures, TestStore, meta, upsert};
    use berth_engine::WriteMode;
    use berth_model::EntityInput;
    use serde_json::json;

    use super::*;

    /// A store whose every third append fails after a delay (as a lost connection would).
    /// A task the writer spawns (its append) runs while the writer's batch executes, not after it: spawned
    /// from a worker, it sits in that worker's LIFO slot, which no other worker steals.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_spawned_before_a_batch_runs_beside_it() {
        let ran = tokio::spawn(async {
            let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = Arc::clone(&started);
            let _spawned = tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
            off_the_runtime(|| {
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while !started.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    std::thread::yield_now();
                }
                started.load(Ordering::SeqCst)
            })
        });
        assert!(ran.await.expect("no panic"), "the spawned task waited for the blocking work to end");
    }

    /// Eight writers at once on a store whose every third append fails: batches are pipelined while
    /// requests queue and appended at once when one comes alone, on a store that appends on the writer's
    /// thread and on one that does not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_appends_publish_nothing_and_later_batches_are_redone() {
        for in_place in [false, true] {
            failed_appends_publish_nothing_and_later_batches_are_redone_on(in_place).await;
        }
    }

    async fn failed_appends_publish_nothing_and_later_batches_are_redone_on(in_place: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        let store = Arc::new(if in_place {
            TestStore::appending_in_place(&path, Failures::Before)
        } else {
            TestStore::new(&path, Failures::Before)
        });
        let catalog = Pipeline::open(store.clone() as Arc<dyn LogStore>, 0).await.expect("catalog");
        let bp = Command::CreateBlueprint {
            body: json!({"identifier": "s", "title": "S", "schema": {"properties": {"n": {"type": "number"}}}}),
        };
        // Appends 0 and 1 succeed, 2 fails: create the blueprint on a good slot.
        let (r, _) = catalog.write_one(meta(), bp).await.expect("write");
        r.expect("blueprint");

        let mut tasks = Vec::new();
        for w in 0..8 {
            let catalog = Arc::clone(&catalog);
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..25 {
                    let id = format!("w{w}-{i}");
                    let input =
                        EntityInput::from_value(&json!({"identifier": id, "properties": {"n": i}})).expect("input");
                    let cmd = Command::WriteEntity {
                        blueprint: "s".into(),
                        path_id: None,
                        input,
                        mode: WriteMode::Upsert,
                        create_missing_related: false,
                    };
                    if let Ok((Ok(_), _)) = catalog.write_one(meta(), cmd).await {
                        acked.push(id);
                    }
                }
                acked
            }));
        }
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.expect("task"));
        }
        assert!(!acked.is_empty() && acked.len() < 200, "some writes failed, some succeeded: {}", acked.len());
        let in_place_appends = store.blocking_appends.load(Ordering::SeqCst);
        assert_eq!(in_place_appends > 0, in_place, "{in_place_appends} appends on the writer's thread");
        let view = catalog.view();
        assert_eq!(view.entity_count("s"), acked.len(), "exactly the acknowledged writes are published");
        for id in &acked {
            assert!(view.entity("s", id).is_some(), "{id} acknowledged but not visible");
        }
        // The log holds the same catalog: a fresh replay equals the published state.
        let mut replayed = State::default();
        catch_up(store.as_ref(), &mut replayed).await.expect("replay");
        assert_eq!(replayed.seq(), view.seq());
        assert_eq!(replayed.to_snapshot().expect("snap"), view.to_snapshot().expect("snap"));
        // Many small batches: decoding one overlaps applying the one before, in order.
        let mut in_batches = State::default();
        catch_up_in(store.as_ref(), &mut in_batches, 7).await.expect("replay in batches");
        assert_eq!(in_batches.seq(), view.seq());
        assert_eq!(in_batches.to_snapshot().expect("snap"), view.to_snapshot().expect("snap"));
    }

    /// A pipeline on a test store failing as `failures` says, holding the blueprint `s` (the store's first
    /// append).
    async fn with_blueprint(failures: Failures) -> (tempfile::TempDir, Arc<TestStore>, Arc<Pipeline>) {
        with_blueprint_on(failures, false).await
    }

    /// [`with_blueprint`], on a store that appends on the writer's thread if `in_place`.
    async fn with_blueprint_on(
        failures: Failures,
        in_place: bool,
    ) -> (tempfile::TempDir, Arc<TestStore>, Arc<Pipeline>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        let store = Arc::new(if in_place {
            TestStore::appending_in_place(&path, failures)
        } else {
            TestStore::new(&path, failures)
        });
        let catalog = Pipeline::open(store.clone() as Arc<dyn LogStore>, 0).await.expect("catalog");
        let bp =
            Command::CreateBlueprint { body: json!({"identifier": "s", "title": "S", "schema": {"properties": {}}}) };
        catalog.write_one(meta(), bp).await.expect("write").0.expect("blueprint");
        (dir, store, catalog)
    }

    /// A failed append is "not applied" only when it cannot land later: one the store reports undecided, and
    /// that is not in the log, is "outcome unknown"; one refused outright is "not applied".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_undecided_append_is_never_answered_not_applied() {
        let cases = [(Failures::Undecided, true), (Failures::Before, false)];
        for ((failures, unknown), in_place) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
            let (_dir, _store, catalog) = with_blueprint_on(failures, in_place).await; // append 0
            catalog.write_one(meta(), upsert("a", json!({}))).await.expect("write").0.expect("a"); // append 1
            let failed = catalog.write_one(meta(), upsert("b", json!({}))).await; // append 2 fails
            match failed {
                Err(PipelineError::Unknown(_)) => assert!(unknown, "a refused append is not unknown"),
                Err(PipelineError::Store(_)) => assert!(!unknown, "an undecided append was answered 'not applied'"),
                other => panic!("{other:?}"),
            }
            assert!(catalog.view().entity("s", "b").is_none());
        }
    }

    /// An undecided append that other events overtook is answered "not applied", in words that do not call it
    /// undecided.
    #[test]
    fn an_overtaken_undecided_append_is_plainly_not_applied() {
        let e = not_applied(StoreError::Undecided("postgres: no answer within 20 s".into()));
        assert!(matches!(&e, PipelineError::Store(StoreError::Unavailable(_))), "{e:?}");
        assert!(!e.to_string().contains("undecided"), "{e}");
        assert!(matches!(not_applied(StoreError::Unavailable("x".into())), PipelineError::Store(_)));
    }

    /// A worker waiting for the next write (the action invoker, webhook ingestion, a run's live page) does not
    /// send the writer to the store: it once did after every write, a log read on the writer's path.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_for_the_next_write_sends_the_writer_nowhere() {
        let (_dir, store, catalog) = with_blueprint(Failures::None).await;
        let waiter = {
            let catalog = Arc::clone(&catalog);
            tokio::spawn(async move {
                let mut woken = 0;
                while woken < 20 {
                    let seq = catalog.view().seq();
                    if catalog.wait_past(seq, Duration::from_secs(5)).await {
                        woken += 1;
                    }
                }
            })
        };
        tokio::task::yield_now().await;
        let reads = store.reads.load(Ordering::SeqCst);
        for i in 0..20 {
            catalog.write_one(meta(), upsert(&format!("e{i}"), json!({}))).await.expect("write").0.expect("entity");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("the waiter saw every write").expect("task");
        assert_eq!(store.reads.load(Ordering::SeqCst), reads, "the writer read the log for writes it made itself");
    }

    /// A store that goes silent while the writer catches up with it holds the writes queued meanwhile for
    /// [`FOLLOW_TIMEOUT`], not for as long as the silence lasts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_store_holds_the_writer_no_longer_than_the_follow_timeout() {
        let (_dir, store, catalog) = with_blueprint(Failures::None).await;
        store.silent.store(true, Ordering::SeqCst);
        // Another replica's write is announced: the writer goes to read it, and the store does not answer.
        let seq = catalog.view().seq();
        assert!(!catalog.wait_applied(seq + 1, Duration::from_millis(200)).await);
        let started = std::time::Instant::now();
        let write = catalog.write_one(meta(), upsert("a", json!({})));
        let (outcome, _) = tokio::time::timeout(FOLLOW_TIMEOUT + Duration::from_secs(10), write)
            .await
            .expect("the write was answered, not held by the silent store")
            .expect("write");
        outcome.expect("entity");
        assert!(started.elapsed() <= FOLLOW_TIMEOUT + Duration::from_secs(5), "{:?}", started.elapsed());
        store.silent.store(false, Ordering::SeqCst);
        assert!(catalog.view().entity("s", "a").is_some());
    }

    /// A catch-up stopped while it waits on the store (the follow's time limit) leaves the state at the end
    /// of a whole batch, which the follow publishes; the next one goes on from there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_catch_up_stopped_mid_way_keeps_whole_batches_and_goes_on() {
        let (_dir, store, catalog) = with_blueprint(Failures::None).await;
        for i in 0..35 {
            catalog.write_one(meta(), upsert(&format!("e{i:02}"), json!({}))).await.expect("write").0.expect("e");
        }
        let head = catalog.view().seq();
        assert_eq!(head, 36);
        // From nothing, ten events a read: the store answers two reads (the second while the first batch is
        // applied), then goes silent.
        store.answer_reads.store(store.reads.load(Ordering::SeqCst) + 2, Ordering::SeqCst);
        let mut state = State::default();
        let stopped = tokio::time::timeout(Duration::from_secs(2), catch_up_in(store.as_ref(), &mut state, 10)).await;
        assert!(stopped.is_err(), "the silent store held the catch-up");
        assert_eq!(state.seq(), 10, "the first batch is applied; the second was read, not applied");
        assert!(!state.has_deferred_indexes(), "the batch applied is whole: its indexes settled");
        let mut expected = State::default();
        for stored in store.inner.read_from(0, 10).await.expect("read") {
            expected.apply(&decode_event(stored.seq, &stored.payload).expect("decodes")).expect("applies");
        }
        assert_eq!(state.digest(), expected.digest());
        assert_eq!(state.entity_count("s"), 9, "the blueprint and nine of its entities");
        // The store answers again: the next catch-up starts where this one stopped.
        store.answer_reads.store(usize::MAX, Ordering::SeqCst);
        catch_up_in(store.as_ref(), &mut state, 10).await.expect("catches up");
        assert_eq!(state.seq(), head);
        assert_eq!(state.digest(), catalog.view().digest());
    }

    /// M4 / T5: a store that commits an append and then reports a failure: the write is settled by reading
    /// the log back and answered as the success it was; with the log unreadable too, it is "outcome unknown"
    /// (never "not applied"), and the catalog catches up once the store answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_committed_then_reported_failed_are_settled_from_the_log() {
        for in_place in [false, true] {
            appends_committed_then_reported_failed_are_settled_from_the_log_on(in_place).await;
        }
    }

    async fn appends_committed_then_reported_failed_are_settled_from_the_log_on(in_place: bool) {
        let (_dir, store, catalog) = with_blueprint_on(Failures::AfterCommit, in_place).await; // append 0
        catalog.write_one(meta(), upsert("a", json!({}))).await.expect("write").0.expect("a"); // append 1
        // Append 2 commits, then fails: read back, it is a success.
        let (outcome, seq) = catalog.write_one(meta(), upsert("b", json!({}))).await.expect("settled as applied");
        outcome.expect("b");
        assert_eq!(seq, store.inner.head().await.expect("head"));
        assert!(catalog.view().entity("s", "b").is_some());
        catalog.write_one(meta(), upsert("c", json!({}))).await.expect("write").0.expect("c"); // append 3
        catalog.write_one(meta(), upsert("d", json!({}))).await.expect("write").0.expect("d"); // append 4
        // Append 5 commits and fails, and the log cannot be read: the answer says so.
        store.blind.store(true, Ordering::SeqCst);
        let unknown = catalog.write_one(meta(), upsert("e", json!({}))).await;
        assert!(matches!(unknown, Err(PipelineError::Unknown(_))), "{unknown:?}");
        store.blind.store(false, Ordering::SeqCst);
        // The next write finds the log moved on, catches up, and so the catalog shows `e` too.
        catalog.write_one(meta(), upsert("f", json!({}))).await.expect("write").0.expect("f");
        let view = catalog.view();
        for id in ["a", "b", "c", "d", "e", "f"] {
            assert!(view.entity("s", id).is_some(), "{id}");
        }
        let mut replayed = State::default();
        catch_up(store.as_ref(), &mut replayed).await.expect("replay");
        assert_eq!(replayed.to_snapshot().expect("snap"), view.to_snapshot().expect("snap"));
        // One writer, one write at a time: every append was made on the writer's thread, where it can be.
        let expected = if in_place { 7 } else { 0 };
        assert_eq!(store.blocking_appends.load(Ordering::SeqCst), expected);
    }

    /// A replica on a test store in `dir` that appends in place and never notices another replica's write
    /// before its own (its store is deaf), with the blueprint `s`.
    async fn a_deaf_replica(dir: &std::path::Path) -> (Arc<TestStore>, Arc<Pipeline>) {
        let store = Arc::new(TestStore::appending_in_place(&dir.join("log.db"), Failures::None));
        store.deaf.store(true, Ordering::SeqCst);
        let catalog = Pipeline::open(store.clone() as Arc<dyn LogStore>, 0).await.expect("catalog");
        let bp =
            Command::CreateBlueprint { body: json!({"identifier": "s", "title": "S", "schema": {"properties": {}}}) };
        catalog.write_one(meta(), bp).await.expect("write").0.expect("blueprint");
        (store, catalog)
    }

    /// Another replica on the log in `dir` writes the entity `x`.
    async fn another_replica_writes_x(dir: &std::path::Path) {
        let other =
            Pipeline::open(Arc::new(berth_store::sqlite::SqliteStore::open(&dir.join("log.db")).expect("open")), 0)
                .await
                .expect("other replica");
        other.write_one(meta(), upsert("x", json!({}))).await.expect("write").0.expect("x");
    }

    /// A batch redone after a conflict, on a store that then stops answering reads, is answered "not
    /// applied" after [`FOLLOW_TIMEOUT`] instead of holding the writer while the store is silent; the writer
    /// goes on once the store answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redo_that_cannot_read_the_log_back_fails_within_the_follow_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, catalog) = a_deaf_replica(dir.path()).await;
        another_replica_writes_x(dir.path()).await;
        store.silent.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        let write = catalog.write_one(meta(), upsert("b", json!({})));
        let failed = tokio::time::timeout(FOLLOW_TIMEOUT + Duration::from_secs(10), write)
            .await
            .expect("answered, not held by the silent store");
        assert!(matches!(&failed, Err(PipelineError::Store(_))), "not applied: {failed:?}");
        assert!(started.elapsed() <= FOLLOW_TIMEOUT + Duration::from_secs(5), "{:?}", started.elapsed());
        store.silent.store(false, Ordering::SeqCst);
        catalog.write_one(meta(), upsert("c", json!({}))).await.expect("write").0.expect("c");
        let view = catalog.view();
        assert!(view.entity("s", "b").is_none() && view.entity("s", "x").is_some() && view.entity("s", "c").is_some());
    }

    /// A lone write appended on the writer's thread that finds the log moved on (another replica wrote
    /// first) is redone on the caught-up catalog, not failed; both writes are in the log and the catalog.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_appended_in_place_after_another_replica_wrote_is_redone() {
        let dir = tempfile::tempdir().expect("tempdir");
        // This replica never notices the other's write before its own: it runs into it.
        let (store, catalog) = a_deaf_replica(dir.path()).await;
        catalog.write_one(meta(), upsert("a", json!({}))).await.expect("write").0.expect("a");
        another_replica_writes_x(dir.path()).await;
        // `b` is appended on the writer's thread after the head this replica knows, conflicts, and is redone
        // after catching up.
        let (in_place, appends) = (store.blocking_appends.load(Ordering::SeqCst), store.appends());
        catalog.write_one(meta(), upsert("b", json!({}))).await.expect("redone").0.expect("b");
        assert_eq!(store.blocking_appends.load(Ordering::SeqCst), in_place + 1, "tried on the writer's thread");
        assert_eq!(store.appends(), appends + 2, "a conflicting append, then the redone one (after catching up)");
        let view = catalog.view();
        for id in ["a", "x", "b"] {
            assert!(view.entity("s", id).is_some(), "{id}");
        }
        let mut replayed = State::default();
        catch_up(store.as_ref(), &mut replayed).await.expect("replay");
        assert_eq!(replayed.digest(), view.digest(), "the log holds what the catalog shows");
    }
}
