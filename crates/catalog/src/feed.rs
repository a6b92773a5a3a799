//! The log feed: the change log read forward from a position, decoded, for consumers of changes (the event
//! route `GET /v1/events` and the delivery workers). What leaves the process is the public form of each
//! event ([`berth_model::public`]), never the stored one.
//!
//! - [`Tail`]: the events after a sequence number, waiting a bounded time for the first when there is none;
//!   recent ones from this process's memory ([`crate::recent`]), older ones read from the store.
//! - [`Consumer`]: a named position shared by every replica through a lease on the store's cursor: one
//!   replica consumes at a time, a replica that lost the lease cannot move the cursor, and a new holder
//!   starts where the last commit left off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_model::Event;
use berth_store::LogStore;
use tokio::sync::watch;

use crate::ReadError;
use crate::recent::Recent;

/// The most events one read answers.
pub const MAX_PAGE: usize = 1_000;
/// The longest a read waits for a first event.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Events after a position, and the log's head when they were read.
#[derive(Debug)]
pub struct FeedPage {
    pub events: Vec<Arc<Event>>,
    pub head: u64,
}

impl FeedPage {
    /// Where the next read starts: after the last event, or where this one started when it had none.
    pub fn next(&self, after: u64) -> u64 {
        self.events.last().map_or(after, |e| e.seq)
    }
}

/// The log read forward (see the module's documentation).
#[derive(Clone)]
pub struct Tail {
    store: Arc<dyn LogStore>,
    recent: Arc<Recent>,
    /// The sequence number of the published state.
    applied: watch::Receiver<u64>,
}

impl Tail {
    pub(crate) fn new(store: Arc<dyn LogStore>, recent: Arc<Recent>, applied: watch::Receiver<u64>) -> Tail {
        Tail { store, recent, applied }
    }

    /// Up to `limit` (at most [`MAX_PAGE`]) events after `after`, in order; when there is none yet, waits up
    /// to `wait` (at most [`MAX_WAIT`]) for one.
    ///
    /// The wait is for the published state (a write this process made is published right after it is
    /// durable, another replica's once this one followed it), then for the store's head (events not
    /// followed yet).
    pub async fn read(&self, after: u64, limit: usize, wait: Duration) -> Result<FeedPage, ReadError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let mut applied = self.applied.clone();
        if *applied.borrow_and_update() <= after && !wait.is_zero() {
            let _ = tokio::time::timeout_at(deadline.into(), applied.wait_for(|s| *s > after)).await;
        }
        if let Some(events) = self.recent.after(after, limit) {
            let last = events.last().map_or(after, |e| e.seq);
            return Ok(FeedPage { events, head: (*applied.borrow()).max(last) });
        }
        let mut head = self.store.head().await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if head <= after && !left.is_zero() {
            head = self.store.wait_for(after, left).await?;
        }
        if head <= after {
            return Ok(FeedPage { events: Vec::new(), head });
        }
        let stored = self.store.read_from(after, limit).await?;
        let mut events = Vec::with_capacity(stored.len());
        for s in stored {
            events.push(Arc::new(ReadError::decode(&s)?));
        }
        Ok(FeedPage { events, head })
    }
}

/// A named consumer of the feed whose position every replica shares (see the module's documentation).
pub struct Consumer {
    tail: Tail,
    store: Arc<dyn LogStore>,
    name: String,
    holder: String,
    ttl: Duration,
    token: Option<u64>,
    /// When the lease was last taken or renewed.
    renewed: Option<Instant>,
}

impl Consumer {
    /// The consumer `name` as `holder` (a replica's own name), holding the lease `ttl` at a time.
    pub fn new(tail: Tail, name: &str, holder: &str, ttl: Duration) -> Consumer {
        let store = Arc::clone(&tail.store);
        Consumer { tail, store, name: name.to_string(), holder: holder.to_string(), ttl, token: None, renewed: None }
    }

    /// Takes or renews the lease; whether this replica holds it now. A lease renewed less than a third of
    /// its time ago is not renewed again (it cannot have been taken over: the store hands an unexpired
    /// lease to no one else, and a commit after a takeover is refused by its token).
    pub async fn hold(&mut self) -> Result<bool, ReadError> {
        if self.token.is_some() && self.renewed.is_some_and(|at| at.elapsed() < self.ttl / 3) {
            return Ok(true);
        }
        let asked = Instant::now();
        self.token = self.store.take_lease(&self.name, &self.holder, self.ttl).await?;
        self.renewed = self.token.map(|_| asked);
        Ok(self.token.is_some())
    }

    /// The next events after the committed position, if this replica holds the lease (renewed first);
    /// `None` when another replica does.
    pub async fn next(&mut self, limit: usize, wait: Duration) -> Result<Option<FeedPage>, ReadError> {
        if !self.hold().await? {
            return Ok(None);
        }
        let after = self.store.get_cursor(&self.name).await?.unwrap_or(0);
        // Wait no longer than the lease lasts, so the holder renews before it runs out.
        let wait = wait.min(self.ttl / 2);
        Ok(Some(self.tail.read(after, limit, wait).await?))
    }

    /// The next events after `after` (a position this consumer keeps itself, ahead of its last commit),
    /// if this replica holds the lease (renewed when due); `None` when another replica does.
    pub async fn next_after(
        &mut self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Option<FeedPage>, ReadError> {
        if !self.hold().await? {
            return Ok(None);
        }
        Ok(Some(self.tail.read(after, limit, wait.min(self.ttl / 2)).await?))
    }

    /// Records that everything up to `seq` was consumed; `false` when the lease was lost (another replica
    /// took over and will consume from the last commit: what this one did since may be delivered twice,
    /// never skipped).
    pub async fn commit(&mut self, seq: u64) -> Result<bool, ReadError> {
        let Some(token) = self.token else { return Ok(false) };
        let moved = self.store.set_cursor_leased(&self.name, &self.holder, token, seq).await?;
        if !moved {
            self.token = None;
        }
        Ok(moved)
    }

    /// Where consumption starts when this consumer has no position yet (a subscription begins after the
    /// write that created it, not at the start of the log): sets the position to `seq` if none is stored,
    /// when this replica holds the lease. Whether a position is in place now.
    pub async fn begin_at(&mut self, seq: u64) -> Result<bool, ReadError> {
        if !self.hold().await? {
            return Ok(false);
        }
        if self.store.get_cursor(&self.name).await?.is_some() {
            return Ok(true);
        }
        self.commit(seq).await
    }

    /// The committed position (`None`: never set).
    pub async fn position(&self) -> Result<Option<u64>, ReadError> {
        Ok(self.store.get_cursor(&self.name).await?)
    }

    /// Gives the lease up at once (a graceful stop), so another replica continues without waiting for it
    /// to run out.
    pub async fn release(&mut self) -> Result<(), ReadError> {
        self.token = None;
        Ok(self.store.release_lease(&self.name, &self.holder).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas' consumers of one name on one store: one consumes at a time, the other takes over from
    /// the last commit when the first stops, and the first, fenced off, cannot move the position back.
    #[tokio::test]
    async fn consumers_share_one_position_through_the_lease() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn LogStore> =
            Arc::new(berth_store::sqlite::SqliteStore::open(&dir.path().join("log.db")).expect("store"));
        let events: Vec<Vec<u8>> = (1..=5)
            .map(|seq| {
                let event = Event {
                    seq,
                    time: berth_model::Timestamp::from_millis(seq as i64),
                    actor: "t".into(),
                    origin: berth_model::Origin::Api,
                    run_id: None,
                    change: berth_model::Change::TeamDeleted { name: format!("t{seq}") },
                    before: None,
                };
                berth_engine::encode_event(&event).expect("encode")
            })
            .collect();
        store.append(0, events).await.expect("append");
        let ttl = Duration::from_secs(30);
        let (_published, applied) = watch::channel(5);
        let tail = Tail::new(Arc::clone(&store), Arc::default(), applied);
        let mut a = Consumer::new(tail.clone(), "webhook:deploys", "replica-a", ttl);
        let mut b = Consumer::new(tail, "webhook:deploys", "replica-b", ttl);
        let page = a.next(2, Duration::ZERO).await.expect("read").expect("a holds the lease");
        assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(a.commit(page.next(0)).await.expect("commit"));
        assert!(b.next(2, Duration::ZERO).await.expect("read").is_none(), "b waits while a holds it");
        // a stops gracefully: b continues after a's last commit.
        a.release().await.expect("release");
        let page = b.next(10, Duration::ZERO).await.expect("read").expect("b holds it now");
        assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(b.commit(5).await.expect("commit"));
        assert!(!a.commit(1).await.expect("commit"), "a no longer holds the lease: fenced off");
        assert_eq!(store.get_cursor("webhook:deploys").await.expect("cursor"), Some(5));
        // Nothing new and no wait: an empty page that does not move.
        let page = b.next(10, Duration::ZERO).await.expect("read").expect("held");
        assert!(page.events.is_empty());
        assert_eq!(page.next(5), 5);
    }
}
