//! Action runs sent to their backends ([`invoke`]), and automations fired by the changes and timers they
//! wait for ([`automations`]).
//!
//! - The **invoker** holds the lease `actions:invoker` (one replica sends at a time) and sends every run the
//!   catalog marks `pendingExecution` (a new run that needs no approval, or one just approved), up to
//!   [`IN_FLIGHT`] at once, then records what it sent (`Command::RecordInvocation`, which clears the mark;
//!   the invocations ready together are recorded in one write).
//!   The mark is in the log, so a crash or a failover sends again what was in flight (at least once), never
//!   skips a run. A run whose backend's run is followed (a GitHub workflow run, `reportWorkflowStatus`) is
//!   asked about every `github_poll` until it ends.
//! - The **automations** worker reads the log feed as the consumer `actions:automations` (a durable
//!   position shared by every replica, one at a time by lease) and makes one run per automation whose
//!   event and condition a change matches, with an id derived from the automation and the change: a page
//!   read again after a crash makes the same ids, which the catalog refuses as existing, so every match
//!   makes exactly one run. Timers are checked each second on the same lease.

pub mod automations;
pub mod invoke;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_catalog::Pipeline;
use berth_engine::runs::Invocation;
use berth_engine::{Command, WriteMeta};
use berth_model::Origin;

use crate::Config;

/// How long a replica holds the invoker's lease between renewals.
const LEASE: Duration = Duration::from_secs(15);
/// The most runs sent at once.
pub const IN_FLIGHT: usize = 256;
/// How long a run whose record could not be written waits before it is sent again.
const RETRY_RECORD: Duration = Duration::from_secs(5);

/// The metadata of the server's own writes about runs.
pub(crate) fn system_meta(run: Option<&str>) -> WriteMeta {
    WriteMeta {
        actor: "berth".into(),
        origin: Origin::Automation,
        now: berth_catalog::now(),
        datasource: None,
        run_id: run.map(str::to_string),
        principal: None,
    }
}

/// Sends pending runs while this replica holds the invoker's lease; runs until the task is aborted.
pub(crate) async fn invoker(pipeline: Arc<Pipeline>, config: Config) {
    let mut lease = pipeline.consumer("actions:invoker", &config.holder, LEASE);
    let senders = Arc::new(invoke::Senders::new(config.clone()));
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut later: HashMap<String, Instant> = HashMap::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    let (sent_tx, sent_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Invocation)>();
    let recorder = tokio::spawn(record(Arc::clone(&pipeline), sent_rx, done_tx.clone()));
    // When each followed run was last asked about.
    let mut polled: HashMap<String, Instant> = HashMap::new();
    let _stop_recorder = AbortOnDrop(recorder);
    loop {
        if !crate::hold_lease(&mut lease, "the action invoker").await {
            continue;
        }
        let view = pipeline.view();
        later.retain(|_, at| at.elapsed() < RETRY_RECORD);
        for id in view.pending_runs() {
            if in_flight.len() >= IN_FLIGHT {
                break;
            }
            if in_flight.contains(id) || later.contains_key(id) {
                continue;
            }
            let Some((_, run)) = berth_engine::runs::get(&view, id) else { continue };
            let following = !run.pending_execution && !run.pending_notification;
            if following {
                if polled.get(id).is_some_and(|at| at.elapsed() < config.actions.github_poll) {
                    continue;
                }
                polled.insert(id.clone(), Instant::now());
            }
            in_flight.insert(id.clone());
            let (pipeline, senders, sent, done, id, view) = (
                Arc::clone(&pipeline),
                Arc::clone(&senders),
                sent_tx.clone(),
                done_tx.clone(),
                id.clone(),
                Arc::clone(&view),
            );
            tokio::spawn(async move {
                let invocation = if run.pending_notification {
                    Some(senders.notify(&view, &id, &run).await)
                } else if run.pending_execution {
                    Some(senders.invoke(&pipeline, &view, &id, &run).await)
                } else {
                    senders.report(&view, &run).await
                };
                match invocation {
                    Some(invocation) => {
                        let _ = sent.send((id, invocation));
                    }
                    // Still running: asked again after `github_poll`.
                    None => {
                        let _ = done.send((id, true));
                    }
                }
            });
        }
        polled.retain(|id, _| view.run_is_pending(id) || in_flight.contains(id));
        let seq = view.seq();
        drop(view);
        let wait = if polled.is_empty() { LEASE / 3 } else { config.actions.github_poll.min(LEASE / 3) };
        tokio::select! {
            _ = pipeline.wait_past(seq, wait) => {}
            Some(first) = done_rx.recv() => {
                let mut finished = vec![first];
                while let Ok(more) = done_rx.try_recv() {
                    finished.push(more);
                }
                for (id, recorded) in finished {
                    in_flight.remove(&id);
                    if !recorded {
                        later.insert(id, Instant::now());
                    }
                }
            }
        }
    }
}

/// Aborts a task when dropped (the recorder ends with its invoker).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The most invocations one write records.
const RECORD_BATCH: usize = 500;

/// Records sent runs, as many as are ready in one write (a run is recorded once: a second record of the
/// same invocation changes nothing); tells the invoker which were.
async fn record(
    pipeline: Arc<Pipeline>,
    mut sent: tokio::sync::mpsc::UnboundedReceiver<(String, Invocation)>,
    done: tokio::sync::mpsc::UnboundedSender<(String, bool)>,
) {
    while let Some(first) = sent.recv().await {
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH {
            match sent.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        let commands = batch
            .into_iter()
            .map(|(id, invocation)| Command::RecordInvocation { id, invocation: Box::new(invocation) })
            .collect();
        match pipeline.write(system_meta(None), commands).await {
            Ok(result) => {
                for (id, outcome) in ids.into_iter().zip(result.outcomes) {
                    if let Err(e) = &outcome {
                        tracing::warn!(run = %id, error = %e, "recording a run's invocation was refused");
                    }
                    let _ = done.send((id, outcome.is_ok()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording runs' invocations failed; they are sent again");
                for id in ids {
                    let _ = done.send((id, false));
                }
            }
        }
    }
}
