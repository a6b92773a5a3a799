//! The Redis store (plain Redis 7, no modules), for many Berth replicas on one Redis.
//!
//! - Keys, under a prefix `P` (default `berth`): `P:head` (the sequence number of the newest event), `P:log`
//!   (a Stream whose entry ids are `<seq>-0`, field `p` holding the event), `P:snapshot:seq` and
//!   `P:snapshot:data` (a list of chunks), `P:cursors` (a hash).
//! - Compare-and-append is one Lua script (atomic in Redis): it checks `P:head`, adds the events to the stream
//!   and moves the head. Saving a snapshot is another script, which keeps the newest snapshot.
//! - A waiter task blocks on `XREAD` and turns new entries (other replicas' writes included) into wake-ups for
//!   [`LogStore::wait_for`]; a timed-out wait asks the head itself.
//! - The connection manager reconnects by itself; the waiter reconnects with backoff.
//! - Durability is Redis's: an acknowledged append survives a crash of Berth; to survive a crash of Redis
//!   itself, run Redis with `appendonly yes` and `appendfsync always`.
//! - URL: `redis://[user:password@]host:port[/db][?prefix=NAME]`, or `rediss://...` for TLS (rustls; the
//!   server's certificate checked against the system's roots, or the PEM file of Berth's `ca=PATH` parameter).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, Script, Value};

use crate::head_watch::{HeadWatch, take_param};
use crate::{BoxFuture, LogStore, Snapshot, StoreError, StoredEvent};

/// Snapshots are stored in chunks of this size (Redis strings are limited to 512 MiB).
const SNAPSHOT_CHUNK: usize = 16 << 20;
/// How long one blocking `XREAD` of the waiter lasts.
const WAITER_BLOCK_MS: u64 = 5_000;

/// Compare-and-append. Redis does not undo a script's earlier writes when a later command fails (an
/// out-of-memory error, say), so the script first removes any entries past the head that such a failure
/// left behind (and moves the stream's last id back, so their ids can be used again) before it appends;
/// readers never see entries past the head either ([`RedisStore::range`]). The `#!lua` line makes Redis
/// refuse the whole script up front when it is out of memory, rather than part-way.
const APPEND_SCRIPT: &str = r"#!lua
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local expected = tonumber(ARGV[1])
if head ~= expected then return {0, head} end
local orphans = redis.call('XRANGE', KEYS[2], string.format('(%d-0', head), '+')
if #orphans > 0 then
  for _, entry in ipairs(orphans) do redis.call('XDEL', KEYS[2], entry[1]) end
  redis.call('XSETID', KEYS[2], string.format('%d-0', head))
end
local n = #ARGV - 1
for i = 1, n do
  redis.call('XADD', KEYS[2], string.format('%d-0', expected + i), 'p', ARGV[i + 1])
end
redis.call('SET', KEYS[1], string.format('%d', expected + n))
return {1, expected + n}
";

const SNAPSHOT_SCRIPT: &str = r"
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if seq > head then return {-1, head} end
local stored = tonumber(redis.call('GET', KEYS[2]) or '-1')
if stored > seq then return {0, stored} end
redis.call('DEL', KEYS[3])
for i = 2, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
redis.call('SET', KEYS[2], ARGV[1])
return {1, seq}
";

/// Takes or renews a lease. KEYS: the lease (the holder's name, expiring), the lease hash (per name: the last
/// holder and the fencing token, kept). ARGV: name, holder, ttl in ms. Answers the token, or nil while another
/// holder's lease runs.
const TAKE_LEASE_SCRIPT: &str = r"
local live = redis.call('GET', KEYS[1])
if live and live ~= ARGV[2] then return false end
local token
if redis.call('HGET', KEYS[2], 'holder:' .. ARGV[1]) == ARGV[2] then
  token = tonumber(redis.call('HGET', KEYS[2], 'token:' .. ARGV[1]))
else
  token = redis.call('HINCRBY', KEYS[2], 'token:' .. ARGV[1], 1)
  redis.call('HSET', KEYS[2], 'holder:' .. ARGV[1], ARGV[2])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return token
";

/// Ends a lease if `ARGV[2]` holds it. KEYS: the lease, the lease hash. ARGV: name, holder.
const RELEASE_LEASE_SCRIPT: &str = r"
if redis.call('HGET', KEYS[2], 'holder:' .. ARGV[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'holder:' .. ARGV[1], '')
end
return 1
";

/// Moves a cursor if the holder and token are the lease's. KEYS: the lease hash, the cursors hash. ARGV: name,
/// holder, token, seq. Answers 1 if it moved.
const SET_LEASED_SCRIPT: &str = r"
if redis.call('HGET', KEYS[1], 'holder:' .. ARGV[1]) == ARGV[2]
   and redis.call('HGET', KEYS[1], 'token:' .. ARGV[1]) == ARGV[3] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  return 1
end
return 0
";

static TAKE_LEASE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(TAKE_LEASE_SCRIPT));
static RELEASE_LEASE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(RELEASE_LEASE_SCRIPT));
static SET_LEASED: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(SET_LEASED_SCRIPT));

struct Keys {
    head: String,
    log: String,
    snapshot_seq: String,
    snapshot_data: String,
    cursors: String,
    /// Per cursor name: the last holder and the fencing token (kept when the lease expires).
    leases: String,
    /// `P:lease:NAME`: the live lease, holding the holder's name and expiring with the lease.
    lease_prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            head: format!("{prefix}:head"),
            log: format!("{prefix}:log"),
            snapshot_seq: format!("{prefix}:snapshot:seq"),
            snapshot_data: format!("{prefix}:snapshot:data"),
            cursors: format!("{prefix}:cursors"),
            leases: format!("{prefix}:leases"),
            lease_prefix: format!("{prefix}:lease:"),
        }
    }
}

/// One `XRANGE` entry: its id and its field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

pub struct RedisStore {
    description: String,
    keys: Arc<Keys>,
    conn: ConnectionManager,
    append: Script,
    snapshot: Script,
    heads: Arc<HeadWatch>,
    waiter: tokio::task::JoinHandle<()>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.waiter.abort();
    }
}

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// An append's failure. A connection lost or timed out (not refused) may have carried the script to Redis,
/// which then runs it whatever became of the client: undecided, so that the caller never reads the log back
/// too early and answers "not applied".
fn append_error(e: redis::RedisError) -> StoreError {
    if e.is_io_error() && !e.is_connection_refusal() {
        StoreError::Undecided(format!("redis: {e}"))
    } else {
        redis_error(e)
    }
}

/// Splits Berth's own `prefix` parameter off the URL; returns the driver URL, the prefix and a description
/// without credentials.
fn split_url(url: &str) -> Result<(String, String, String), StoreError> {
    let (driver_url, prefix) = take_param(url, "prefix");
    let prefix = prefix.unwrap_or_else(|| "berth".into());
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return Err(StoreError::Config(format!("prefix `{prefix}`: use 1-64 letters, digits, `_`, `-`, `.` or `:`")));
    }
    let base = driver_url.split_once('?').map_or(driver_url.as_str(), |(b, _)| b);
    let location = base.split_once("://").map(|(_, rest)| rest).unwrap_or(base);
    let location = location.rsplit_once('@').map(|(_, host)| host).unwrap_or(location);
    let description = format!("redis://{location}?prefix={prefix}");
    Ok((driver_url, prefix, description))
}

fn stream_id_seq(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(ms, _)| ms.parse().ok())
}

impl RedisStore {
    pub async fn open(url: &str) -> Result<RedisStore, StoreError> {
        let (driver_url, prefix, description) = split_url(url)?;
        let (driver_url, ca) = take_param(&driver_url, "ca");
        let client = if driver_url.starts_with("rediss://") {
            // The process-wide rustls provider the Redis client looks for.
            crate::tls::provider();
            let root_cert = match &ca {
                Some(path) => {
                    Some(std::fs::read(path).map_err(|e| StoreError::Config(format!("redis ca {path}: {e}")))?)
                }
                None => None,
            };
            let certificates = redis::TlsCertificates { client_tls: None, root_cert };
            Client::build_with_tls(driver_url.as_str(), certificates)
        } else if ca.is_some() {
            return Err(StoreError::Config("redis: `ca` applies to rediss:// URLs only".into()));
        } else {
            Client::open(driver_url.as_str())
        }
        .map_err(|e| StoreError::Config(format!("redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(120)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(Duration::from_secs(15), client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| StoreError::Unavailable("redis: connecting timed out".into()))?
            .map_err(redis_error)?;
        let keys = Arc::new(Keys::new(&prefix));
        let store_head = read_head(&mut conn.clone(), &keys).await?;
        let heads = Arc::new(HeadWatch::new(store_head));
        let waiter = tokio::spawn(wait_loop(client, Arc::clone(&keys), Arc::clone(&heads)));
        Ok(RedisStore {
            description,
            keys,
            conn,
            append: Script::new(APPEND_SCRIPT),
            snapshot: Script::new(SNAPSHOT_SCRIPT),
            heads,
            waiter,
        })
    }

    /// Stream entries between two ids (`XRANGE` / `XREVRANGE`), as stored events: only those at or below the
    /// head, read in the same transaction (an entry past it is what a failed append left behind, never a
    /// committed event).
    async fn range(&self, command: &str, from: String, to: &str, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let (entries, head): (Vec<StreamEntry>, Option<String>) = redis::pipe()
            .atomic()
            .cmd(command)
            .arg(&self.keys.log)
            .arg(from)
            .arg(to)
            .arg("COUNT")
            .arg(limit.min(1_000_000))
            .cmd("GET")
            .arg(&self.keys.head)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        let head: u64 = head.and_then(|h| h.parse().ok()).unwrap_or(0);
        let mut events = stored_events(entries)?;
        events.retain(|e| e.seq <= head);
        Ok(events)
    }

    /// Adds a stream entry past the head, as a script that failed part-way would leave (for tests).
    #[doc(hidden)]
    pub async fn add_orphan_for_tests(&self, seq: u64, payload: &[u8]) -> Result<(), StoreError> {
        redis::cmd("XADD")
            .arg(&self.keys.log)
            .arg(format!("{seq}-0"))
            .arg("p")
            .arg(payload)
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(redis_error)
    }

    /// Deletes every key of this store (tests clean up with it).
    pub async fn delete_all(&self) -> Result<(), StoreError> {
        let k = &self.keys;
        redis::cmd("DEL")
            .arg(&k.head)
            .arg(&k.log)
            .arg(&k.snapshot_seq)
            .arg(&k.snapshot_data)
            .arg(&k.cursors)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }
}

async fn read_head(conn: &mut ConnectionManager, keys: &Keys) -> Result<u64, StoreError> {
    let head: Option<u64> = redis::cmd("GET").arg(&keys.head).query_async(conn).await.map_err(redis_error)?;
    Ok(head.unwrap_or(0))
}

/// Blocks on `XREAD` for entries past the known head and feeds what it sees into `head_tx`.
async fn wait_loop(client: Client, keys: Arc<Keys>, heads: Arc<HeadWatch>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_millis(WAITER_BLOCK_MS + 5_000)));
        let mut conn = match client.get_multiplexed_async_connection_with_config(&config).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let known = heads.known();
            // Returns as soon as an entry past `known` exists (or after the block time); then read the head.
            let reply: Result<Value, _> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(WAITER_BLOCK_MS)
                .arg("STREAMS")
                .arg(&keys.log)
                .arg(format!("{known}-0"))
                .query_async(&mut conn)
                .await;
            if reply.is_err() {
                break;
            }
            let head: Result<Option<u64>, _> = redis::cmd("GET").arg(&keys.head).query_async(&mut conn).await;
            match head {
                Ok(head) => {
                    backoff = Duration::from_millis(100);
                    heads.note(head.unwrap_or(0));
                }
                Err(_) => break,
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Stream entries as stored events.
fn stored_events(entries: Vec<StreamEntry>) -> Result<Vec<StoredEvent>, StoreError> {
    entries
        .into_iter()
        .map(|(id, fields)| {
            let seq = stream_id_seq(&id).ok_or_else(|| StoreError::Corrupt(format!("log entry id `{id}`")))?;
            let payload = fields
                .into_iter()
                .find(|(f, _)| f == "p")
                .map(|(_, v)| v)
                .ok_or_else(|| StoreError::Corrupt(format!("log entry {seq} has no payload")))?;
            Ok(StoredEvent { seq, payload })
        })
        .collect()
}

impl LogStore for RedisStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn head(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let head = read_head(&mut self.conn.clone(), &self.keys).await?;
            self.heads.note(head);
            Ok(head)
        })
    }

    fn append(&self, expected_head: u64, events: Vec<Vec<u8>>) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut invocation = self.append.key(&self.keys.head);
            invocation.key(&self.keys.log).arg(expected_head);
            for event in &events {
                invocation.arg(event.as_slice());
            }
            let (ok, head): (i64, u64) = invocation.invoke_async(&mut self.conn.clone()).await.map_err(append_error)?;
            if ok != 1 {
                return Err(StoreError::Conflict { expected: expected_head, actual: head });
            }
            self.heads.note(head);
            Ok(head)
        })
    }

    fn read_from(&self, after: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(self.range("XRANGE", format!("({after}-0"), "+", limit))
    }

    fn read_before(&self, before: u64, limit: usize) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(async move {
            if before <= 1 {
                return Ok(Vec::new());
            }
            self.range("XREVRANGE", format!("({before}-0"), "-", limit).await
        })
    }

    fn read_seqs(&self, seqs: Vec<u64>) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        Box::pin(async move {
            let wanted: Vec<u64> = seqs.into_iter().take(crate::MAX_READ_SEQS).collect();
            // One round trip: an XRANGE per event, then the head (entries past it are never committed events).
            let mut pipe = redis::pipe();
            pipe.atomic();
            for seq in &wanted {
                pipe.cmd("XRANGE").arg(&self.keys.log).arg(format!("{seq}-0")).arg(format!("{seq}-0"));
            }
            pipe.cmd("GET").arg(&self.keys.head);
            let mut replies: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await.map_err(redis_error)?;
            let head: u64 = match replies.pop() {
                Some(v) => redis::from_redis_value::<Option<String>>(v)
                    .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?
                    .and_then(|h| h.parse().ok())
                    .unwrap_or(0),
                None => 0,
            };
            let mut out = Vec::with_capacity(wanted.len());
            for reply in replies {
                let entries: Vec<StreamEntry> =
                    redis::from_redis_value(reply).map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
                out.extend(stored_events(entries)?.into_iter().filter(|e| e.seq <= head));
            }
            Ok(out)
        })
    }

    fn wait_for(&self, after: u64, timeout: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.heads.wait_or_ask(after, timeout, self.head()))
    }

    fn save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut invocation = self.snapshot.key(&self.keys.head);
            invocation.key(&self.keys.snapshot_seq).key(&self.keys.snapshot_data).arg(snapshot.seq);
            let mut chunks: Vec<&[u8]> = snapshot.data.chunks(SNAPSHOT_CHUNK).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for chunk in chunks {
                invocation.arg(chunk);
            }
            let (status, head): (i64, u64) =
                invocation.invoke_async(&mut self.conn.clone()).await.map_err(redis_error)?;
            if status < 0 {
                return Err(StoreError::Corrupt(format!(
                    "snapshot at {} is ahead of the log head {head}",
                    snapshot.seq
                )));
            }
            Ok(())
        })
    }

    fn load_snapshot(&self) -> BoxFuture<'_, Result<Option<Snapshot>, StoreError>> {
        Box::pin(async move {
            let (seq, chunks): (Option<u64>, Vec<Vec<u8>>) = redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(&self.keys.snapshot_seq)
                .cmd("LRANGE")
                .arg(&self.keys.snapshot_data)
                .arg(0)
                .arg(-1)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            Ok(seq.map(|seq| Snapshot { seq, data: chunks.concat() }))
        })
    }

    fn get_cursor(&self, name: &str) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let name = name.to_string();
        Box::pin(async move {
            redis::cmd("HGET")
                .arg(&self.keys.cursors)
                .arg(name)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)
        })
    }

    fn set_cursor(&self, name: &str, seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        let name = name.to_string();
        Box::pin(async move {
            redis::cmd("HSET")
                .arg(&self.keys.cursors)
                .arg(name)
                .arg(seq)
                .query_async::<()>(&mut self.conn.clone())
                .await
                .map_err(redis_error)
        })
    }

    fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(async move {
            let ttl = crate::check_lease(&holder, ttl)?;
            TAKE_LEASE
                .clone()
                .key(format!("{}{name}", self.keys.lease_prefix))
                .key(&self.keys.leases)
                .arg(&name)
                .arg(&holder)
                .arg(ttl)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        Box::pin(async move {
            RELEASE_LEASE
                .clone()
                .key(format!("{}{name}", self.keys.lease_prefix))
                .key(&self.keys.leases)
                .arg(&name)
                .arg(&holder)
                .invoke_async::<()>(&mut self.conn.clone())
                .await
                .map_err(redis_error)
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
            let moved: i64 = SET_LEASED
                .clone()
                .key(&self.keys.leases)
                .key(&self.keys.cursors)
                .arg(&name)
                .arg(&holder)
                .arg(token)
                .arg(seq)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            Ok(moved == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_prefix_and_hide_the_password() {
        let (url, prefix, description) = split_url("redis://u:secret@h:6379/2?prefix=t-1").expect("url");
        assert_eq!(url, "redis://u:secret@h:6379/2");
        assert_eq!(prefix, "t-1");
        assert_eq!(description, "redis://h:6379/2?prefix=t-1");
        assert!(split_url("redis://h?prefix=a b").is_err());
        assert_eq!(stream_id_seq("42-0"), Some(42));
        assert_eq!(stream_id_seq("x"), None);
    }
}
