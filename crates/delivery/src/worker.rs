//! One subscription's delivery loop (see the crate's documentation).

use std::sync::Arc;
use std::time::Duration;

use berth_catalog::Pipeline;
use berth_model::subscription::{self, DeadLetter, Destination, Subscription};
use berth_model::{Change, DefinitionKind, Entity, Event, Origin, Previous};

use crate::redis_stream::RedisStream;
use crate::webhook::Webhook;
use crate::{Config, Outcome, Statuses, position_name};

/// How long a replica holds a subscription's lease between renewals.
pub(crate) const LEASE: Duration = Duration::from_secs(15);
/// The most events one page reads (and so the most a crash can make a destination receive twice).
const PAGE: usize = 200;
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
            Destination::Webhook { url, headers } => Ok(Sink::Webhook(Webhook::new(
                url,
                headers.clone(),
                config.secret(id, s.secret_version),
                id,
                crate::address::Allow::new(&config.allow),
            )?)),
            Destination::RedisStream { stream } => {
                let url = config.redis_stream_url.as_deref().unwrap_or_default();
                Ok(Sink::Redis(RedisStream::new(url, stream, id)?))
            }
            Destination::Nats { subject } => {
                Ok(Sink::Nats(crate::nats::Nats::new(config.nats_url.as_deref().unwrap_or_default(), subject, id)))
            }
            Destination::Kafka { topic } => Ok(Sink::Kafka(crate::kafka::Kafka::new(
                config.kafka_brokers.as_deref().unwrap_or_default(),
                topic,
                id,
            ))),
        }
    }

    /// Sends messages in order; how many (a prefix) were delivered, and the outcome of the call that
    /// stopped (or of the last one). Brokers take a page at once (a Redis pipeline, NATS publishes whose
    /// acknowledgements are awaited in order, one produce per Kafka partition); webhooks one at a time.
    async fn send_all(&mut self, messages: &[Message]) -> (usize, Outcome) {
        match self {
            Sink::Redis(r) => r.send_all(messages).await,
            Sink::Nats(n) => n.send_all(messages).await,
            Sink::Kafka(k) => k.send_all(messages).await,
            Sink::Webhook(w) => {
                let mut last = None;
                for (i, m) in messages.iter().enumerate() {
                    let outcome = w.send(m.seq, &m.body).await;
                    if !outcome.delivered {
                        return (i, outcome);
                    }
                    last = Some(outcome);
                }
                (messages.len(), last.unwrap_or_else(|| Outcome::delivered(None, std::time::Instant::now())))
            }
        }
    }

    /// Sends one message (a page of one).
    async fn send(&mut self, seq: u64, key: &str, body: &[u8]) -> Outcome {
        self.send_all(&[Message { seq, key: key.to_string(), body: body.to_vec() }]).await.1
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

/// Delivers one subscription until the task is aborted.
pub(crate) async fn run(pipeline: Arc<Pipeline>, config: Config, statuses: Statuses, id: String, s: Subscription) {
    set(&statuses, &id, |st| st.state = "standby");
    let mut sink = match Sink::open(&config, &id, &s) {
        Ok(sink) => sink,
        Err(e) => {
            tracing::warn!(subscription = %id, error = %e, "a subscription cannot be delivered");
            set(&statuses, &id, |st| {
                st.state = "stopped";
                st.last_error = Some(e);
            });
            return;
        }
    };
    let mut consumer = pipeline.consumer(&position_name(&id), &config.holder, LEASE);
    loop {
        // A subscription without a position (its creation's position was not recorded) starts at the head.
        let head = pipeline.view().seq();
        match consumer.begin_at(head).await {
            Ok(true) => {}
            Ok(false) => {
                set(&statuses, &id, |st| st.state = "standby");
                tokio::time::sleep(LEASE / 3).await;
                continue;
            }
            Err(e) => {
                set(&statuses, &id, |st| st.last_error = Some(e.to_string()));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        retry_dead_letters(&pipeline, &statuses, &id, &s, &mut sink).await;
        let page = match consumer.next(PAGE, Duration::from_secs(2)).await {
            Ok(Some(page)) => page,
            Ok(None) => {
                set(&statuses, &id, |st| st.state = "standby");
                tokio::time::sleep(LEASE / 3).await;
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
        let Some(last) = page.events.last().map(|e| e.seq) else {
            if let Ok(Some(p)) = consumer.position().await {
                set(&statuses, &id, |st| st.position = p);
            }
            continue;
        };
        if !deliver_page(&pipeline, &statuses, &id, &s, &mut sink, &mut consumer, &page.events).await {
            continue;
        }
        match consumer.commit(last).await {
            Ok(true) => set(&statuses, &id, |st| st.position = last),
            // Another replica took over: it delivers from the last commit.
            Ok(false) => set(&statuses, &id, |st| st.state = "standby"),
            Err(e) => set(&statuses, &id, |st| st.last_error = Some(e.to_string())),
        }
    }
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
    events: &[Event],
) -> bool {
    let view = pipeline.view();
    let mut messages: Vec<Message> = Vec::with_capacity(events.len());
    for event in events {
        let change = berth_model::public::change(event);
        // Never its own definition's changes (recording a dead letter is one: delivering it to a failing
        // destination would make another, without end).
        let own = change.resource == "subscription" && change.identifier.as_deref() == Some(id);
        let mut admitted = !own && s.filter.admits(&change);
        if admitted {
            if let Some(query) = &s.filter.query {
                // Judged against the catalog as it is now (a rule that reads related entities reads today's).
                admitted = entity_of(event).is_some_and(|e| {
                    berth_engine::search::Ctx::new(&view, query, berth_catalog::now(), Some(&e.blueprint))
                        .is_ok_and(|ctx| berth_engine::search::matches(&ctx, e, query))
                });
            }
        }
        if !admitted {
            set(statuses, id, |st| st.skipped += 1);
            continue;
        }
        let body = serde_json::to_vec(&subscription::message(event, &change, id)).unwrap_or_default();
        messages.push(Message { seq: event.seq, key: key_of(&change), body });
    }
    // In order: each send delivers a prefix of what is left; a failure is the first message not delivered.
    let (mut start, mut failures) = (0usize, 0u32);
    while start < messages.len() {
        let (delivered, outcome) = sink.send_all(&messages[start..]).await;
        if delivered > 0 {
            let last = messages[start + delivered - 1].seq;
            set(statuses, id, |st| st.record_delivered(delivered as u64, last, outcome.millis));
            start += delivered;
            failures = 0;
        }
        if start == messages.len() {
            break;
        }
        let failed = &messages[start];
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
                    start += 1;
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
pub(crate) struct Message {
    pub seq: u64,
    pub key: String,
    pub body: Vec<u8>,
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
async fn retry_dead_letters(pipeline: &Pipeline, statuses: &Statuses, id: &str, s: &Subscription, sink: &mut Sink) {
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
    let events = match pipeline.events(asked.clone()).await {
        Ok(events) => events,
        Err(e) => {
            set(statuses, id, |st| st.last_error = Some(e.to_string()));
            return;
        }
    };
    let mut outcomes: Vec<(u64, Option<String>)> = Vec::new();
    for event in &events {
        let change = berth_model::public::change(event);
        let body = serde_json::to_vec(&subscription::message(event, &change, id)).unwrap_or_default();
        let key = key_of(&change);
        let mut error = None;
        for attempt in 0..s.max_attempts.min(3) {
            let outcome = sink.send(event.seq, &key, &body).await;
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

/// The key a message is partitioned or de-duplicated by: `blueprint/entity` (or the resource and its
/// identifier).
fn key_of(change: &berth_model::public::PublicChange) -> String {
    format!("{}/{}", change.blueprint.as_deref().unwrap_or(change.resource), change.identifier.as_deref().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

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
