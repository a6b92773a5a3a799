//! One subscription's delivery loop (see the crate's documentation).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_catalog::Pipeline;
use berth_model::subscription::{self, DeadLetter, Destination, Subscription};
use berth_model::{Change, DefinitionKind, Entity, Event, Origin, Previous};

use crate::messages::{Built, Messages};
use crate::redis_stream::RedisStream;
use crate::webhook::Webhook;
use crate::{Config, Outcome, Statuses, position_name};

/// How long a replica holds a subscription's lease between renewals.
pub(crate) const LEASE: Duration = Duration::from_secs(15);
/// How often a replica on standby asks for a lease (another replica may have given it up).
const STANDBY_EVERY: Duration = Duration::from_secs(2);
/// The most events one page reads: a webhook delivering in log order one at a time reads 200, brokers
/// (a page in one round trip) and webhooks with lanes (a page spread over them) 1,000.
const PAGE: usize = 200;
const PAGE_AT_ONCE: usize = 1_000;
/// How often the position is committed while delivering: a crash makes a destination receive again what
/// was delivered since and the page in flight.
const COMMIT_EVERY: Duration = Duration::from_millis(100);
/// How often an idle worker looks at its stored position (a replay moves it).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long after the previous page a page that would not be full waits for more changes (see [`gather`]).
const LINGER: Duration = Duration::from_millis(10);
/// The first retry's wait, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

enum Sink {
    Webhook(Webhook),
    Redis(RedisStream),
    Nats(crate::nats::Nats),
    Kafka(crate::kafka::Kafka),
}

impl Sink {
    fn open(config: &Config, id: &str, s: &Subscription) -> Result<Sink, String> {
        config.supports(&s.destination)?;
        match &s.destination {
            Destination::Webhook { url, headers } => Ok(Sink::Webhook(
                Webhook::new(
                    url,
                    config.open_headers(id, headers)?,
                    config.secret(id, s.secret_version),
                    id,
                    crate::address::Allow::new(&config.allow),
                    s.concurrency,
                )?
                .trusting(&config.webhook_roots)?,
            )),
            Destination::RedisStream { stream } => {
                let url = config.redis_stream_url.as_deref().unwrap_or_default();
                Ok(Sink::Redis(RedisStream::new(url, stream, id)?))
            }
            Destination::Nats { subject } => {
                Ok(Sink::Nats(crate::nats::Nats::new(config.nats_url.as_deref().unwrap_or_default(), subject, id)))
            }
            Destination::Kafka { topic } => Ok(Sink::Kafka(crate::kafka::Kafka::new(
                config.kafka_brokers.as_deref().unwrap_or_default(),
                &config.kafka_security,
                topic,
                id,
            ))),
        }
    }

    /// Sends a page; which messages were delivered, and the outcome of the first failure (or of the last
    /// call). Brokers take a page at once (a Redis pipeline, NATS publishes whose acknowledgements are
    /// awaited in order, one produce per Kafka partition); webhooks a request per message, on lanes.
    /// Whatever the destination, one key's messages are delivered in order: a message is never delivered
    /// while an earlier one of its key is not.
    async fn send_all(&mut self, messages: &[&Message]) -> (Vec<bool>, Outcome) {
        match self {
            Sink::Redis(r) => r.send_all(messages).await,
            Sink::Nats(n) => n.send_all(messages).await,
            Sink::Kafka(k) => k.send_all(messages).await,
            Sink::Webhook(w) => w.send_all(messages).await,
        }
    }

    /// While the subscription is idle: lets go of what only delivering needs (a webhook's kept connections
    /// the receiver closed or that went unused for a while; the brokers' clients keep their own).
    fn tidy(&mut self) {
        if let Sink::Webhook(w) = self {
            w.tidy(crate::webhook::KEEP_UNUSED);
        }
    }

    /// Sends one message (a page of one).
    async fn send(&mut self, message: Message) -> Outcome {
        self.send_all(&[&message]).await.1
    }
}

/// A wait before retry `n` (from 0): doubling from [`BACKOFF_FIRST`] up to [`BACKOFF_MAX`], with jitter
/// (between half and all of it), so many failing subscriptions do not retry in step.
pub(crate) fn backoff(n: u32) -> Duration {
    let full = BACKOFF_FIRST.saturating_mul(1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX)).min(BACKOFF_MAX);
    let mut byte = [0u8; 1];
    let jitter = if getrandom::fill(&mut byte).is_ok() { f64::from(byte[0]) / 255.0 } else { 0.5 };
    full.mul_f64(0.5 + jitter / 2.0)
}

/// The entity a change is about (the version after it, or before it for a deletion).
fn entity_of(event: &Event) -> Option<&Entity> {
    match (&event.change, &event.before) {
        (Change::EntityPut { entity }, _) => Some(entity),
        (Change::EntityDeleted { .. }, Some(Previous::Entity { entity })) => Some(entity),
        _ => None,
    }
}

fn set(statuses: &Statuses, id: &str, f: impl FnOnce(&mut crate::Status)) {
    if let Ok(mut all) = statuses.lock() {
        f(all.entry(id.to_string()).or_default());
    }
}

/// What every worker shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub pipeline: Arc<Pipeline>,
    pub config: Config,
    pub statuses: Statuses,
    pub messages: Arc<Messages>,
    pub yielding: Arc<crate::yielding::Yielding>,
}

/// Delivers one subscription until the task is aborted.
pub(crate) async fn run(shared: Shared, id: String, s: Subscription) {
    let Shared { pipeline, config, statuses, messages, yielding } = shared;
    set(&statuses, &id, |st| st.state = "standby");
    let mut sink = match Sink::open(&config, &id, &s) {
        Ok(sink) => sink,
        Err(e) => {
            tracing::warn!(subscription = %id, error = %e, "a subscription cannot be delivered");
            set(&statuses, &id, |st| {
                st.state = "stopped";
                st.last_error = Some(e);
            });
            // Nothing changes that until the definition does (then the supervisor starts a new worker): wait
            // here rather than end, so that it is not restarted, and logged, every second.
            std::future::pending::<()>().await;
            return;
        }
    };
    let page_size = match s.destination {
        Destination::Webhook { .. } if s.concurrency == 1 => PAGE,
        _ => PAGE_AT_ONCE,
    };
    let mut consumer = pipeline.consumer(&position_name(&id), &config.holder, LEASE);
    // While this replica holds the lease: delivered up to `.0` (kept here), committed up to `.1`.
    let mut at: Option<(u64, u64)> = None;
    let mut checked = Instant::now();
    // When the last page with changes was read.
    let mut last_page: Option<Instant> = None;
    loop {
        let Some((position, committed)) = at else {
            // A subscription without a position (its creation's position was not recorded) starts at the head.
            let head = pipeline.view().seq();
            let begun = match consumer.begin_at(head).await {
                Ok(true) => consumer.position().await.map(|p| p.unwrap_or(head)),
                Ok(false) => {
                    set(&statuses, &id, |st| st.state = "standby");
                    tokio::time::sleep(STANDBY_EVERY).await;
                    continue;
                }
                Err(e) => Err(e),
            };
            match begun {
                Ok(p) => {
                    at = Some((p, p));
                    checked = Instant::now();
                    set(&statuses, &id, |st| st.position = p);
                }
                Err(e) => {
                    set(&statuses, &id, |st| st.last_error = Some(e.to_string()));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        // The position is committed every COMMIT_EVERY while delivering and before waiting for changes; the
        // stored one is checked then too, and each second when idle (a replay moves it), and the dead letters
        // an administrator asked to retry are sent.
        let idle = pipeline.view().seq() <= position;
        if (position > committed && (idle || checked.elapsed() >= COMMIT_EVERY)) || checked.elapsed() >= CHECK_EVERY {
            checked = Instant::now();
            if idle {
                sink.tidy();
            }
            retry_dead_letters(&pipeline, &statuses, &messages, &id, &s, &mut sink).await;
            at = match settle(&mut consumer, position, committed).await {
                Ok(Some(p)) => {
                    set(&statuses, &id, |st| st.position = p.1);
                    Some(p)
                }
                // Another replica took over: it delivers from the last commit.
                Ok(None) => {
                    set(&statuses, &id, |st| st.state = "standby");
                    None
                }
                Err(e) => {
                    set(&statuses, &id, |st| st.last_error = Some(e.to_string()));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    at
                }
            };
            continue;
        }
        let wait = if position > committed { Duration::ZERO } else { CHECK_EVERY };
        let reading = Instant::now();
        let page = match consumer.next_after(position, page_size, wait).await {
            Ok(Some(page)) => page,
            Ok(None) => {
                at = None;
                set(&statuses, &id, |st| st.state = "standby");
                tokio::time::sleep(STANDBY_EVERY).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(subscription = %id, error = %e, "reading the log for delivery failed");
                set(&statuses, &id, |st| st.last_error = Some(e.to_string()));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        set(&statuses, &id, |st| {
            st.head = page.head;
            if st.state == "standby" {
                st.state = "delivering";
            }
        });
        let Some(mut last) = page.events.last().map(|e| e.seq) else { continue };
        // A full page did not wait for changes: its reading (from the store, for a worker far behind) is part
        // of what the page cost.
        let read = if page.events.len() == page_size { reading.elapsed() } else { Duration::ZERO };
        let mut events = page.events;
        let gathering = gather(events.len(), page_size, last_page.map(|at| at.elapsed()));
        if !gathering.is_zero() {
            tokio::time::sleep(gathering).await;
            match consumer.next_after(last, page_size - events.len(), Duration::ZERO).await {
                Ok(Some(more)) => events.extend(more.events),
                // The lease was lost meanwhile: the new holder delivers the page.
                Ok(None) => {
                    at = None;
                    continue;
                }
                // What was read is delivered; the rest comes with the next page.
                Err(e) => tracing::debug!(subscription = %id, error = %e, "reading more of a page failed"),
            }
            last = events.last().map_or(last, |e| e.seq);
        }
        let started = Instant::now();
        last_page = Some(started);
        let built = messages.of(&events);
        if !deliver_page(&pipeline, &statuses, &id, &s, &mut sink, &mut consumer, &built).await {
            at = None;
            continue;
        }
        at = Some((last, committed));
        // Writes first (see `yielding`): a worker rests while the writer is busy.
        let rest = events.last().map_or(Duration::ZERO, |e| yielding.rest(read + started.elapsed(), e.time));
        if !rest.is_zero() {
            set(&statuses, &id, |st| st.yielded += rest);
            tokio::time::sleep(rest).await;
        }
    }
}

/// How long a page of `read` changes (of at most `page`) waits for more before it is sent, the previous page
/// having been read `since_last` ago (`None`: none yet). Under a steady stream of writes a worker that keeps
/// up would send a page per write, each with its fixed costs (a broker round trip, the webhook's lanes
/// starting and draining, the filters' preparation, a status update): a page that is not full waits until
/// [`LINGER`] after the previous one and takes what arrived meanwhile, so pages come at most every `LINGER`
/// and fuller (what Kafka producers call `linger.ms`). A change is delayed by at most `LINGER`; one after a
/// quiet moment, and a full page, go at once.
fn gather(read: usize, page: usize, since_last: Option<Duration>) -> Duration {
    match since_last {
        Some(since) if read > 0 && read < page => LINGER.saturating_sub(since),
        _ => Duration::ZERO,
    }
}

/// Commits `position` unless the stored position moved away from `committed` (an administrator's replay,
/// or a subscription re-created: delivery goes on from there, nothing committed). The position and commit
/// now, or `None` when the lease was lost.
async fn settle(
    consumer: &mut berth_catalog::feed::Consumer,
    position: u64,
    committed: u64,
) -> Result<Option<(u64, u64)>, berth_catalog::ReadError> {
    match consumer.position().await? {
        Some(stored) if stored != committed => return Ok(Some((stored, stored))),
        _ => {}
    }
    if position == committed {
        return Ok(Some((position, committed)));
    }
    Ok(consumer.commit(position).await?.then_some((position, position)))
}

/// Delivers a page's admitted changes in order, each retried until delivered; `false` when the lease was
/// lost on the way (the page is left to the new holder).
async fn deliver_page(
    pipeline: &Pipeline,
    statuses: &Statuses,
    id: &str,
    s: &Subscription,
    sink: &mut Sink,
    consumer: &mut berth_catalog::feed::Consumer,
    built: &[Arc<Built>],
) -> bool {
    let view = pipeline.view();
    let now = berth_catalog::now();
    // A query's prepared form per blueprint, for the page.
    let mut contexts: HashMap<&str, Option<berth_engine::search::Ctx>> = HashMap::new();
    let mut messages: Vec<Message> = Vec::with_capacity(built.len());
    let mut skipped = 0;
    for b in built {
        let event = &b.event;
        let change = &b.change;
        // Never its own definition's changes (recording a dead letter is one: delivering it to a failing
        // destination would make another, without end).
        let own = change.resource == "subscription" && change.identifier.as_deref() == Some(id);
        let mut admitted = !own && s.filter.admits(change);
        if admitted {
            if let Some(query) = &s.filter.query {
                // Judged against the catalog as it is now (a rule that reads related entities reads today's).
                admitted = entity_of(event).is_some_and(|e| {
                    let ctx = contexts
                        .entry(&*e.blueprint)
                        .or_insert_with(|| berth_engine::search::Ctx::new(&view, query, now, Some(&e.blueprint)).ok());
                    ctx.as_ref().is_some_and(|ctx| berth_engine::search::matches(ctx, e, query))
                });
            }
        }
        if !admitted {
            skipped += 1;
            continue;
        }
        messages.push(Message::of(event.seq, b, id));
    }
    if skipped > 0 {
        set(statuses, id, |st| st.skipped += skipped);
    }
    // Each round sends what is left; a failure is the first message left, in log order.
    let mut pending: Vec<&Message> = messages.iter().collect();
    let mut failures = 0u32;
    while !pending.is_empty() {
        let (delivered, outcome) = sink.send_all(&pending).await;
        let mut left = Vec::with_capacity(pending.len());
        let (mut n, mut last) = (0u64, 0u64);
        for (m, done) in pending.into_iter().zip(delivered) {
            if done {
                n += 1;
                last = last.max(m.seq);
            } else {
                left.push(m);
            }
        }
        pending = left;
        if n > 0 {
            set(statuses, id, |st| st.record_delivered(n, last, outcome.millis));
            failures = 0;
        }
        let Some(&failed) = pending.first() else { break };
        set(statuses, id, |st| st.record(failed.seq, &outcome));
        if failures + 1 >= s.max_attempts {
            let letter = DeadLetter {
                seq: failed.seq,
                attempts: failures + 1,
                error: outcome.error.clone().unwrap_or_default(),
                at: berth_catalog::now(),
                retry: false,
            };
            // Recorded (durably, in the log) before delivery moves past it; if it cannot be, the message is
            // retried rather than lost.
            match edit_dead_letters(pipeline, id, |list| list.push(letter)).await {
                Ok(()) => {
                    tracing::warn!(subscription = %id, seq = failed.seq, attempts = failures + 1, "a message went to the dead letters");
                    set(statuses, id, |st| st.dead_lettered += 1);
                    pending.remove(0);
                    failures = 0;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(subscription = %id, error = %e, "recording a dead letter failed; retrying the message")
                }
            }
        }
        tokio::time::sleep(backoff(failures)).await;
        failures = failures.saturating_add(1);
        // Still ours? (renews the lease through long outages)
        if !consumer.hold().await.unwrap_or(false) {
            set(statuses, id, |st| st.state = "standby");
            return false;
        }
    }
    true
}

/// One message on its way: the change's sequence number, its key, its body.
#[derive(Clone)]
pub(crate) struct Message {
    pub seq: u64,
    pub key: Arc<str>,
    pub body: bytes::Bytes,
}

/// `n` messages of which the first `delivered` were.
pub(crate) fn prefix(n: usize, delivered: usize) -> Vec<bool> {
    (0..n).map(|i| i < delivered).collect()
}

impl Message {
    fn of(seq: u64, built: &Built, subscription: &str) -> Message {
        Message { seq, key: Arc::clone(&built.key), body: subscription::addressed(&built.body, subscription).into() }
    }
}

/// Changes the subscription's dead letters as the delivery worker.
async fn edit_dead_letters(
    pipeline: &Pipeline,
    id: &str,
    edit: impl FnOnce(&mut Vec<DeadLetter>),
) -> Result<(), String> {
    let meta = berth_engine::WriteMeta {
        actor: "berth-delivery".into(),
        origin: Origin::System,
        now: berth_catalog::now(),
        datasource: None,
        run_id: None,
        principal: None,
    };
    crate::dead_letters::edit(pipeline, meta, id, edit).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Sends again the dead letters an administrator asked to retry: each delivered one leaves the list; one
/// that fails again stays, not marked for retry, with its attempts counted.
async fn retry_dead_letters(
    pipeline: &Pipeline,
    statuses: &Statuses,
    messages: &Messages,
    id: &str,
    s: &Subscription,
    sink: &mut Sink,
) {
    let view = pipeline.view();
    let Some(current) =
        view.definition(DefinitionKind::Subscription, id).and_then(|d| Subscription::parse(&d.body).ok())
    else {
        return;
    };
    let asked: Vec<u64> = current.dead_letters.iter().filter(|l| l.retry).map(|l| l.seq).collect();
    if asked.is_empty() {
        return;
    }
    let events: Vec<Arc<Event>> = match pipeline.events(asked.clone()).await {
        Ok(events) => events.into_iter().map(Arc::new).collect(),
        Err(e) => {
            set(statuses, id, |st| st.last_error = Some(e.to_string()));
            return;
        }
    };
    let mut outcomes: Vec<(u64, Option<String>)> = Vec::new();
    for (event, built) in events.iter().zip(messages.of(&events)) {
        let mut error = None;
        for attempt in 0..s.max_attempts.min(3) {
            let outcome = sink.send(Message::of(event.seq, &built, id)).await;
            set(statuses, id, |st| st.record(event.seq, &outcome));
            if outcome.delivered {
                error = None;
                break;
            }
            error = outcome.error.or(Some("not delivered".into()));
            tokio::time::sleep(backoff(attempt)).await;
        }
        outcomes.push((event.seq, error));
    }
    // A sequence number the log no longer has cannot be sent: it leaves the list.
    let found: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let result = edit_dead_letters(pipeline, id, |list| {
        list.retain(|l| !l.retry || found.contains(&l.seq));
        for (seq, error) in &outcomes {
            match error {
                None => list.retain(|l| l.seq != *seq),
                Some(e) => {
                    for l in list.iter_mut().filter(|l| l.seq == *seq) {
                        l.retry = false;
                        l.attempts = l.attempts.saturating_add(1);
                        l.error = e.clone();
                    }
                }
            }
        }
    })
    .await;
    if let Err(e) = result {
        set(statuses, id, |st| st.last_error = Some(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_that_would_not_be_full_waits_at_most_the_linger_after_the_previous_one() {
        let ms = Duration::from_millis;
        // Right after a page, a few changes wait for more; the wait shrinks as time passes since it.
        assert_eq!(gather(5, PAGE_AT_ONCE, Some(ms(0))), LINGER);
        assert_eq!(gather(5, PAGE_AT_ONCE, Some(ms(4))), LINGER - ms(4));
        assert_eq!(gather(PAGE_AT_ONCE - 1, PAGE_AT_ONCE, Some(ms(1))), LINGER - ms(1));
        // At once: after a quiet moment, for a full page, with nothing to send, or before any page.
        assert_eq!(gather(5, PAGE_AT_ONCE, Some(LINGER)), Duration::ZERO);
        assert_eq!(gather(5, PAGE_AT_ONCE, Some(ms(1_000))), Duration::ZERO);
        assert_eq!(gather(PAGE_AT_ONCE, PAGE_AT_ONCE, Some(ms(0))), Duration::ZERO);
        assert_eq!(gather(PAGE, PAGE, Some(ms(0))), Duration::ZERO);
        assert_eq!(gather(0, PAGE_AT_ONCE, Some(ms(0))), Duration::ZERO);
        assert_eq!(gather(5, PAGE_AT_ONCE, None), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for n in 0..40 {
            let b = backoff(n);
            let full = BACKOFF_FIRST.saturating_mul(1u32 << n.min(16)).min(BACKOFF_MAX);
            assert!(b >= full / 2 && b <= full, "retry {n}: {b:?} within [{:?}, {full:?}]", full / 2);
        }
        assert!(backoff(30) <= BACKOFF_MAX);
    }
}
