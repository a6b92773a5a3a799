//! The PostgreSQL store, for many Berth replicas on one database.
//!
//! - The log is a table keyed by sequence number; an append is one transaction that checks the head and
//!   inserts the events, so the primary key makes two replicas appending at the same head impossible: the
//!   loser gets a unique violation, answered as [`StoreError::Conflict`].
//! - Each append `NOTIFY`s the new head on a channel; a listener connection turns notifications into wake-ups
//!   for [`LogStore::wait_for`] (other replicas' writes included), and a timed-out wait asks the head itself,
//!   so a lost notification costs latency, never correctness.
//! - Connections are re-established on the next call after a loss; the listener reconnects with backoff.
//! - An append that times out or loses its connection is fenced: its server process is terminated from a new
//!   connection, and waited for, so the request cannot run after the pipeline read the log back and answered
//!   "not applied" (a request held up in the network would otherwise commit once the network recovered).
//! - URL: `postgres://user@host:port/db?schema=NAME` (default schema `berth`); every table lives in that
//!   schema, so one database can hold several independent catalogs.
//! - TLS: libpq's `sslmode=require | verify-ca | verify-full` and `sslrootcert=PEM` (see [`crate::tls`]),
//!   with rustls; without them (or with `prefer`, the default) Berth connects without TLS.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Config, GenericClient};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::head_watch::{HeadWatch, take_param};
use crate::{BoxFuture, LogStore, Snapshot, StoreError, StoredEvent};

/// Snapshots are stored in chunks so that no single value grows past PostgreSQL's 1 GiB limit.
const SNAPSHOT_CHUNK: usize = 16 << 20;
/// Advisory-lock keys (any constants, used only by Berth): schema creation and snapshot writes.
const LOCK_SCHEMA: i64 = 0x6265_7274_6801;
const LOCK_SNAPSHOT: i64 = 0x6265_7274_6802;

pub struct PostgresStore {
    config: Config,
    /// The TLS connector (used only when `config`'s ssl mode asks for TLS).
    tls: MakeRustlsConnect,
    description: String,
    schema: String,
    channel: String,
    writer: Mutex<Option<Client>>,
    /// What belongs to `writer`'s current connection (`None` while it connects); used under `writer`'s lock.
    writer_conn: std::sync::Mutex<Option<WriterConn>>,
    reader: Mutex<Option<Client>>,
    heads: Arc<HeadWatch>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Unavailable(format!("postgres: {} ({})", db.message(), db.code().code())),
        None => StoreError::Unavailable(format!("postgres: {e}")),
    }
}

/// Splits Berth's own `schema` parameter off the URL; the rest goes to the driver.
fn split_url(url: &str) -> Result<(String, String), StoreError> {
    let (driver_url, schema) = take_param(url, "schema");
    let schema = schema.unwrap_or_else(|| "berth".into());
    if schema.is_empty()
        || schema.len() > 48
        || !schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || schema.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(StoreError::Config(format!(
            "schema `{schema}`: use 1-48 lowercase letters, digits and underscores, not starting with a digit"
        )));
    }
    Ok((driver_url, schema))
}

/// Berth's reading of the URL's TLS parameters (tokio-postgres knows only `disable`, `prefer`, `require`):
/// the URL without them, and the connector and ssl mode to use.
fn tls_of(url: &str) -> Result<(String, MakeRustlsConnect, tokio_postgres::config::SslMode), StoreError> {
    let (url, mode) = take_param(url, "sslmode");
    let (url, root) = take_param(&url, "sslrootcert");
    let mode = crate::tls::SslMode::parse(mode.as_deref())?;
    // A connector is always built (one type for every connection); with TLS off it is never used.
    let config = match crate::tls::client_config(mode, root.as_deref())? {
        Some(c) => c,
        None => crate::tls::client_config(crate::tls::SslMode::Require, None)?
            .ok_or_else(|| StoreError::Config("tls: no client configuration".into()))?,
    };
    let ssl = if mode == crate::tls::SslMode::Off {
        tokio_postgres::config::SslMode::Disable
    } else {
        tokio_postgres::config::SslMode::Require
    };
    Ok((url, MakeRustlsConnect::new(config), ssl))
}

async fn connect(config: &Config, tls: &MakeRustlsConnect) -> Result<Client, StoreError> {
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), config.connect(tls.clone()))
        .await
        .map_err(|_| StoreError::Unavailable("postgres: connecting timed out after 10 s".into()))?
        .map_err(pg_error)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection lost; the next call reconnects");
        }
    });
    Ok(client)
}

/// What belongs to one writer connection: its server process (the one an undecided append fences) and the
/// append statement prepared on it (an append is then one round trip: bind, execute, sync).
#[derive(Clone)]
struct WriterConn {
    process: Process,
    append: tokio_postgres::Statement,
}

/// A server process: its id, and when it started (so that a fence never ends another process that was given
/// the same id since).
#[derive(Clone, Debug)]
struct Process {
    pid: i32,
    started: String,
}

impl WriterConn {
    async fn of(client: &Client, schema: &str) -> Result<WriterConn, StoreError> {
        let row = client
            .query_one("SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()", &[])
            .await
            .map_err(pg_error)?;
        let process = Process { pid: row.get(0), started: row.get(1) };
        let append = client.prepare(&append_sql(schema)).await.map_err(pg_error)?;
        Ok(WriterConn { process, append })
    }
}

/// Inserts `$2` as the events `$1` if the head is `$3`, and announces the new head `$5` on the channel `$4`
/// when rows went in: one statement, so one round trip and atomic on its own. Answers the rows inserted.
fn append_sql(schema: &str) -> String {
    format!(
        "WITH ins AS (
             INSERT INTO {s}.events (seq, payload)
             SELECT u.seq, u.payload FROM UNNEST($1::BIGINT[], $2::BYTEA[]) AS u(seq, payload)
             WHERE (SELECT COALESCE(MAX(seq), 0) FROM {s}.events) = $3
             RETURNING 1)
         SELECT n, CASE WHEN n > 0 THEN pg_notify($4, $5) END
         FROM (SELECT count(*) AS n FROM ins) c",
        s = schema
    )
}

/// How long fencing an undecided append may take (connecting, terminating its process, seeing it gone).
const FENCE_TIMEOUT: Duration = Duration::from_secs(8);

/// Ends the server `process` (the writer connection of an undecided append) from a new connection and
/// waits until it is gone, so nothing it was sent can still run; whether it is now gone. A process of the
/// same role may be terminated without further privileges.
async fn fence(config: &Config, tls: &MakeRustlsConnect, process: &Process) -> bool {
    let Process { pid, started } = process;
    let fenced = tokio::time::timeout(FENCE_TIMEOUT, async {
        let client = connect(config, tls).await?;
        client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2",
                &[pid, started],
            )
            .await
            .map_err(pg_error)?;
        loop {
            let alive = client
                .query_opt(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2",
                    &[pid, started],
                )
                .await
                .map_err(pg_error)?
                .is_some();
            if !alive {
                return Ok::<(), StoreError>(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match fenced {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(pid, error = %e, "cannot end the connection of an undecided append");
            false
        }
        Err(_) => {
            tracing::warn!(pid, "ending the connection of an undecided append timed out");
            false
        }
    }
}

async fn query_head(client: &impl GenericClient, schema: &str) -> Result<u64, StoreError> {
    let row =
        client.query_one(&format!("SELECT COALESCE(MAX(seq), 0) FROM {schema}.events"), &[]).await.map_err(pg_error)?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

impl PostgresStore {
    /// Connects, creates the schema and tables if missing, and starts the listener.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let (driver_url, schema) = split_url(url)?;
        let (driver_url, tls, ssl_mode) = tls_of(&driver_url)?;
        let mut config: Config = driver_url.parse().map_err(|e| StoreError::Config(format!("postgres URL: {e}")))?;
        config.ssl_mode(ssl_mode);
        harden(&mut config);
        let description = describe_config(&config, &schema);
        let mut client = connect(&config, &tls).await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_SCHEMA]).await.map_err(pg_error)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.events (seq BIGINT PRIMARY KEY, payload BYTEA NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.snapshot_chunks (seq BIGINT NOT NULL, idx INT NOT NULL,
                 data BYTEA NOT NULL, PRIMARY KEY (seq, idx));
             CREATE TABLE IF NOT EXISTS {schema}.cursors (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL,
                 expires_ms BIGINT NOT NULL, token BIGINT NOT NULL);"
        ))
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let writer_conn = WriterConn::of(&client, &schema).await?;
        let head = query_head(&client, &schema).await?;
        let heads = Arc::new(HeadWatch::new(head));
        let channel = format!("berth_log_{schema}");
        let listener =
            tokio::spawn(listen(config.clone(), tls.clone(), schema.clone(), channel.clone(), Arc::clone(&heads)));
        Ok(PostgresStore {
            config,
            tls,
            description,
            schema,
            channel,
            writer: Mutex::new(Some(client)),
            writer_conn: std::sync::Mutex::new(Some(writer_conn)),
            reader: Mutex::new(None),
            heads,
            listener,
        })
    }

    /// A setting as the writer's session has it now (for tests: a position's relaxed commit must leave the
    /// session's own `synchronous_commit` alone).
    #[doc(hidden)]
    pub async fn writer_setting_for_tests(&self, name: &str) -> Result<String, StoreError> {
        let mut slot = self.writer.lock().await;
        let client = self.writer_client(&mut slot).await?;
        let row = client.query_one("SELECT current_setting($1)", &[&name]).await.map_err(pg_error)?;
        Ok(row.get(0))
    }

    /// The writer connection in `slot`, reconnecting if needed; a new connection's process id is recorded
    /// before anything is sent on it, so an undecided append can be fenced.
    async fn writer_client<'a>(&self, slot: &'a mut Option<Client>) -> Result<&'a mut Client, StoreError> {
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            self.set_writer_conn(None);
            let client = connect(&self.config, &self.tls).await?;
            self.set_writer_conn(Some(WriterConn::of(&client, &self.schema).await?));
            *slot = Some(client);
        }
        slot.as_mut().ok_or_else(|| unavailable("postgres: no connection"))
    }

    fn set_writer_conn(&self, conn: Option<WriterConn>) -> Option<WriterConn> {
        match self.writer_conn.lock() {
            Ok(mut guard) => std::mem::replace(&mut *guard, conn),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), conn),
        }
    }

    fn writer_conn(&self) -> Option<WriterConn> {
        match self.writer_conn.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Events `WHERE <condition>` (on `$1` = `bound`), at most `limit`.
    async fn events(&self, condition: &str, bound: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut slot = self.reader.lock().await;
        let read = tokio::time::timeout(CALL_TIMEOUT, async {
            let client = ensure(&mut slot, &self.config, &self.tls).await?;
            let rows = client
                .query(
                    &format!("SELECT seq, payload FROM {}.events WHERE {condition} LIMIT $2", self.schema),
                    &[&(bound.min(i64::MAX as u64) as i64), &(limit.min(i64::MAX as usize) as i64)],
                )
                .await
                .map_err(pg_error)?;
            Ok(rows.iter().map(|r| StoredEvent { seq: r.get::<_, i64>(0) as u64, payload: r.get(1) }).collect())
        })
        .await;
        settle_call(&mut slot, read)
    }

    /// Drops the schema and everything in it (tests and `berth restore --force` clean up with it).
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        let mut slot = self.writer.lock().await;
        let call = tokio::time::timeout(CALL_TIMEOUT, async {
            let client = self.writer_client(&mut slot).await?;
            client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)).await.map_err(pg_error)
        })
        .await;
        settle_call(&mut slot, call)
    }
}

fn describe_config(config: &Config, schema: &str) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{host}:{port}/{db}?schema={schema}")
}

/// The client in `slot`, reconnecting if it is missing or its connection was lost.
/// How long one store call may take (a silent network drop must end in an error, not a hang).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Snapshot calls move much more data.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The result of a call run under a timeout: on a timeout the connection is dropped (it may be half-open:
/// the next call connects anew) and the call fails.
fn settle_call<T>(
    slot: &mut Option<Client>,
    result: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
) -> Result<T, StoreError> {
    match result {
        Ok(r) => r,
        Err(_) => {
            *slot = None;
            Err(unavailable("postgres: the server did not answer in time; reconnecting"))
        }
    }
}

/// Connection settings that notice a dead peer: TCP keepalives and a user timeout, unless the URL set them.
fn harden(config: &mut Config) {
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives(true).keepalives_idle(Duration::from_secs(15));
        config.keepalives_interval(Duration::from_secs(5)).keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(CALL_TIMEOUT);
    }
}

async fn ensure<'a>(
    slot: &'a mut Option<Client>,
    config: &Config,
    tls: &MakeRustlsConnect,
) -> Result<&'a mut Client, StoreError> {
    if slot.as_ref().is_none_or(Client::is_closed) {
        *slot = Some(connect(config, tls).await?);
    }
    slot.as_mut().ok_or_else(|| unavailable("postgres: no connection"))
}

/// Holds a LISTEN connection and feeds every announced head into `head_tx`; reconnects with backoff.
async fn listen(config: Config, tls: MakeRustlsConnect, schema: String, channel: String, heads: Arc<HeadWatch>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::time::timeout(Duration::from_secs(10), config.connect(tls.clone())).await;
        let Ok(Ok((client, mut connection))) = connected else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        };
        // Drive the connection: forward notifications, stop when it ends.
        let (note_tx, mut note_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message {
                    if let Ok(head) = n.payload().parse::<u64>() {
                        let _ = note_tx.send(head);
                    }
                }
            }
        });
        let listening = client.batch_execute(&format!("LISTEN {channel}")).await;
        if listening.is_ok() {
            backoff = Duration::from_millis(100);
            // Events appended while no one listened: ask the head once.
            if let Ok(head) = query_head(&client, &schema).await {
                heads.note(head);
            }
            while let Some(head) = note_rx.recv().await {
                heads.note(head);
            }
        }
        driver.abort();
        drop(client);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl LogStore for PostgresStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn head(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut slot = self.reader.lock().await;
            let read = tokio::time::timeout(CALL_TIMEOUT, async {
                let client = ensure(&mut slot, &self.config, &self.tls).await?;
                query_head(client, &self.schema).await
            })
            .await;
            let head = settle_call(&mut slot, read)?;
            self.heads.note(head);
            Ok(head)
        })
    }

    fn append(&self, expected_head: u64, events: Vec<Vec<u8>>) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let new_head = expected_head + events.len() as u64;
            let seqs: Vec<i64> = (expected_head + 1..=new_head).map(|s| s as i64).collect();
            let mut slot = self.writer.lock().await;
            let expected = expected_head as i64;
            // Err(Undecided) once the insert may have been sent and its answer is missing.
            let call = tokio::time::timeout(CALL_TIMEOUT, async {
                let client = self.writer_client(&mut slot).await?;
                let statement = self.writer_conn().ok_or_else(|| unavailable("postgres: no writer connection"))?.append;
                let inserted = client
                    .query_one(&statement, &[&seqs, &events, &expected, &self.channel, &new_head.to_string()])
                    .await;
                let inserted: i64 = match inserted {
                    Ok(row) => row.get(0),
                    // A racing replica committed the same sequence numbers first.
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => 0,
                    // The server answered with an error: the statement did not commit.
                    Err(e) if e.as_db_error().is_some() => return Err(pg_error(e)),
                    Err(e) => return Err(StoreError::Undecided(pg_error(e).to_string())),
                };
                if inserted as usize != events.len() {
                    let actual = query_head(client, &self.schema).await?;
                    return Err(StoreError::Conflict { expected: expected_head, actual });
                }
                Ok(())
            })
            .await;
            let call = match call {
                Ok(Err(StoreError::Undecided(m))) => Err(m),
                Err(_) => Err(format!("postgres: no answer within {} s", CALL_TIMEOUT.as_secs())),
                Ok(other) => Ok(other),
            };
            match call {
                Ok(Err(e @ StoreError::Conflict { .. })) => return Err(e),
                Ok(Err(e)) => {
                    // The server refused the statement (say its prepared plan went stale): a new connection
                    // prepares it anew.
                    slot.take();
                    self.set_writer_conn(None);
                    return Err(e);
                }
                Ok(Ok(())) => {}
                Err(why) => {
                    // Drop the connection, then end its server process, so the insert cannot commit later.
                    slot.take();
                    let Some(WriterConn { process, .. }) = self.set_writer_conn(None) else {
                        // Still connecting: the insert was not sent.
                        return Err(StoreError::Unavailable(why));
                    };
                    if fence(&self.config, &self.tls, &process).await {
                        return Err(StoreError::Unavailable(format!("{why}; its connection was ended")));
                    }
                    return Err(StoreError::Undecided(why));
                }
            }
            drop(slot);
            self.heads.note(new_head);
            Ok(new_head)
        })
    }

    fn read_from(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(self.events("seq > $1 ORDER BY seq", after, limit))
    }

    fn read_before(&self, before: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(self.events("seq < $1 ORDER BY seq DESC", before, limit))
    }

    fn read_seqs(&self, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(async move {
            let wanted: Vec<i64> =
                seqs.iter().take(crate::MAX_READ_SEQS).map(|s| (*s).min(i64::MAX as u64) as i64).collect();
            let mut slot = self.reader.lock().await;
            let read = tokio::time::timeout(CALL_TIMEOUT, async {
                let client = ensure(&mut slot, &self.config, &self.tls).await?;
                let rows = client
                    .query(&format!("SELECT seq, payload FROM {}.events WHERE seq = ANY($1)", self.schema), &[&wanted])
                    .await
                    .map_err(pg_error)?;
                Ok(rows.iter().map(|r| StoredEvent { seq: r.get::<_, i64>(0) as u64, payload: r.get(1) }).collect())
            })
            .await;
            let mut found: Vec<StoredEvent> = settle_call(&mut slot, read)?;
            // In the order asked.
            let order: std::collections::HashMap<i64, usize> =
                wanted.iter().enumerate().map(|(i, s)| (*s, i)).collect();
            found.sort_by_key(|e| order.get(&(e.seq as i64)).copied().unwrap_or(usize::MAX));
            Ok(found)
        })
    }

    fn wait_for(&self, after: u64, timeout: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.heads.wait_or_ask(after, timeout, self.head()))
    }

    fn save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut slot = self.writer.lock().await;
            let call = tokio::time::timeout(SNAPSHOT_TIMEOUT, async {
                let client = self.writer_client(&mut slot).await?;
                let tx = client.transaction().await.map_err(pg_error)?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_SNAPSHOT]).await.map_err(pg_error)?;
                let head = query_head(&tx, &self.schema).await?;
                if snapshot.seq > head {
                    return Err(StoreError::Corrupt(format!(
                        "snapshot at {} is ahead of the log head {head}",
                        snapshot.seq
                    )));
                }
                let stored: i64 = tx
                    .query_one(&format!("SELECT COALESCE(MAX(seq), -1) FROM {}.snapshot_chunks", self.schema), &[])
                    .await
                    .map_err(pg_error)?
                    .get(0);
                if stored > snapshot.seq as i64 {
                    // Another replica saved a newer one: keep it.
                    return Ok(());
                }
                tx.execute(&format!("DELETE FROM {}.snapshot_chunks", self.schema), &[]).await.map_err(pg_error)?;
                let insert =
                    format!("INSERT INTO {}.snapshot_chunks (seq, idx, data) VALUES ($1, $2, $3)", self.schema);
                let seq = snapshot.seq as i64;
                let mut chunks: Vec<&[u8]> = snapshot.data.chunks(SNAPSHOT_CHUNK).collect();
                if chunks.is_empty() {
                    chunks.push(&[]);
                }
                for (idx, chunk) in chunks.into_iter().enumerate() {
                    tx.execute(&insert, &[&seq, &(idx as i32), &chunk]).await.map_err(pg_error)?;
                }
                tx.commit().await.map_err(pg_error)
            })
            .await;
            settle_call(&mut slot, call)
        })
    }

    fn load_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, StoreError>> {
        Box::pin(async move {
            let mut slot = self.reader.lock().await;
            let call = tokio::time::timeout(SNAPSHOT_TIMEOUT, async {
                let client = ensure(&mut slot, &self.config, &self.tls).await?;
                // One transaction, so a concurrent save cannot hand us chunks of two snapshots.
                let tx = client
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .start()
                    .await
                    .map_err(pg_error)?;
                let seq: Option<i64> = tx
                    .query_one(&format!("SELECT MAX(seq) FROM {}.snapshot_chunks", self.schema), &[])
                    .await
                    .map_err(pg_error)?
                    .get(0);
                let Some(seq) = seq else { return Ok(None) };
                let rows = tx
                    .query(
                        &format!("SELECT data FROM {}.snapshot_chunks WHERE seq = $1 ORDER BY idx", self.schema),
                        &[&seq],
                    )
                    .await
                    .map_err(pg_error)?;
                let mut data = Vec::new();
                for row in rows {
                    data.extend_from_slice(row.get::<_, &[u8]>(0));
                }
                tx.commit().await.map_err(pg_error)?;
                Ok(Some(Snapshot { seq: seq as u64, data }))
            })
            .await;
            settle_call(&mut slot, call)
        })
    }

    fn get_cursor(&self, name: &str) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let name = name.to_string();
        Box::pin(async move {
            let mut slot = self.reader.lock().await;
            let read = tokio::time::timeout(CALL_TIMEOUT, async {
                let client = ensure(&mut slot, &self.config, &self.tls).await?;
                let row = client
                    .query_opt(&format!("SELECT seq FROM {}.cursors WHERE name = $1", self.schema), &[&name])
                    .await
                    .map_err(pg_error)?;
                Ok(row.map(|r| r.get::<_, i64>(0) as u64))
            })
            .await;
            settle_call(&mut slot, read)
        })
    }

    fn set_cursor(&self, name: &str, seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        let name = name.to_string();
        Box::pin(async move {
            let sql = format!(
                "INSERT INTO {}.cursors (name, seq) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                self.schema
            );
            let mut slot = self.writer.lock().await;
            let call = tokio::time::timeout(CALL_TIMEOUT, async {
                let client = self.writer_client(&mut slot).await?;
                client.execute(&sql, &[&name, &(seq as i64)]).await.map(|_| ()).map_err(pg_error)
            })
            .await;
            settle_call(&mut slot, call)
        })
    }

    fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(async move {
            let ttl = crate::check_lease(&holder, ttl)?;
            // The database's clock decides expiry, so replicas' clocks need not agree.
            let sql = format!(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT AS ms)
                 INSERT INTO {s}.leases AS l (name, holder, expires_ms, token)
                 SELECT $1, $2, now.ms + $3, 1 FROM now
                 ON CONFLICT (name) DO UPDATE SET
                     token = CASE WHEN l.holder = excluded.holder THEN l.token ELSE l.token + 1 END,
                     holder = excluded.holder, expires_ms = excluded.expires_ms
                 WHERE l.holder = excluded.holder OR l.expires_ms <= (SELECT ms FROM now)
                 RETURNING token",
                s = self.schema
            );
            let mut slot = self.writer.lock().await;
            let call = tokio::time::timeout(CALL_TIMEOUT, async {
                let client = self.writer_client(&mut slot).await?;
                let row = client.query_opt(&sql, &[&name, &holder, &ttl]).await.map_err(pg_error)?;
                Ok(row.map(|r| r.get::<_, i64>(0) as u64))
            })
            .await;
            settle_call(&mut slot, call)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(async move {
            let sql = format!(
                "UPDATE {}.leases SET holder = '', expires_ms = 0 WHERE name = $1 AND holder = $2",
                self.schema
            );
            let mut slot = self.writer.lock().await;
            let call = tokio::time::timeout(CALL_TIMEOUT, async {
                let client = self.writer_client(&mut slot).await?;
                client.execute(&sql, &[&name, &holder]).await.map(|_| ()).map_err(pg_error)
            })
            .await;
            settle_call(&mut slot, call)
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
        Box::pin(async move {
            // A worker's progress (each delivery worker's, every 100 ms and whenever it catches up) commits
            // without waiting for the WAL flush: `synchronous_commit` off for this statement's transaction
            // alone (`set_config(.., true)`; the session keeps its own). Appends queue behind this call on the
            // writer's connection. A database crash can take back the last positions (delivery repeats,
            // never skips); a commit is never reordered before an earlier one's flush.
            let sql = format!(
                "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
                 INSERT INTO {s}.cursors (name, seq)
                 SELECT name, $4 FROM {s}.leases, relaxed WHERE name = $1 AND holder = $2 AND token = $3
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                s = self.schema
            );
            let mut slot = self.writer.lock().await;
            let call = tokio::time::timeout(CALL_TIMEOUT, async {
                let client = self.writer_client(&mut slot).await?;
                client
                    .execute(&sql, &[&name, &holder, &(token as i64), &(seq as i64)])
                    .await
                    .map(|n| n == 1)
                    .map_err(pg_error)
            })
            .await;
            settle_call(&mut slot, call)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parameter_is_berths_own() {
        let (url, schema) = split_url("postgres://u@h:5432/db?schema=t_1&sslmode=disable").expect("url");
        assert_eq!(url, "postgres://u@h:5432/db?sslmode=disable");
        assert_eq!(schema, "t_1");
        let (url, schema) = split_url("postgres://h/db").expect("url");
        assert_eq!((url.as_str(), schema.as_str()), ("postgres://h/db", "berth"));
        for bad in ["x;drop", "Upper", "", "1abc"] {
            assert!(split_url(&format!("postgres://h/db?schema={bad}")).is_err(), "{bad}");
        }
    }
}
