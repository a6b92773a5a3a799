//! `berth migrate --from URL --to URL [--live [--until-caught-up]]`: copies a catalog's log and snapshot into
//! an empty store of any kind, then proves the copy.
//!
//! The copy reads the source in pages and appends each page to the target with compare-and-append (so a
//! target written by anyone else fails the copy). While copying it rebuilds the source's catalog from the
//! source's snapshot plus the events after it. At the end it re-reads the whole target log, rebuilds the
//! catalog from nothing, and compares: the log digests (every event's bytes, in order) and, per blueprint,
//! the entity count and content digest. Two independent paths (snapshot + tail vs. full replay) agreeing is
//! the proof; the exit code is non-zero if anything differs.
//!
//! Without `--live` it copies up to the source's head at start. With `--live` it keeps tailing the source
//! (which may keep taking writes), printing the lag, until it has caught up (`--until-caught-up`) or until
//! SIGINT / SIGTERM, after which it copies up to the source's head at the time of the signal and stops: the
//! cut-over is "stop writing to the source, signal the migration, start serving on the target". It always
//! stops between pages, at a sequence both sides hold whole.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use berth_engine::State;
use berth_store::StoreError;

use crate::transfer::{self, PAGE, Progress, Replayed, Verification};

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The store to copy from (it may be serving and taking writes)
    #[arg(long)]
    pub from: String,
    /// The store to copy into; it must be empty
    #[arg(long)]
    pub to: String,
    /// Keep copying new events as the source takes them, until caught up or interrupted
    #[arg(long)]
    pub live: bool,
    /// With --live: stop as soon as the target has caught up with the source
    #[arg(long, requires = "live")]
    pub until_caught_up: bool,
    /// Write the verification report as JSON to this file
    #[arg(long)]
    pub report: Option<PathBuf>,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let source = transfer::open_store(&args.from).await?;
    let target = transfer::open_store(&args.to).await?;
    transfer::ensure_empty(target.as_ref()).await?;
    println!("Migrating {} -> {}", source.describe(), target.describe());

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    if args.live {
        tokio::spawn(async move {
            berth_server::shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
    }

    // The source's catalog from its snapshot; events up to the snapshot are digested but not re-applied.
    let snapshot = source.load_snapshot().await?;
    let start_head = source.head().await?;
    let mut replayed = match &snapshot {
        Some(s) => Replayed::from_state(State::from_snapshot(&s.data)?),
        None => Replayed::from_state(State::default()),
    };
    let mut snapshot_copied = snapshot.is_none();
    let mut copied = 0u64;
    let mut source_head = start_head;
    let mut progress = Progress::new("copied");
    // Set once a signal arrives: the head to drain to before stopping.
    let mut drain_to: Option<u64> = None;
    loop {
        if drain_to.is_none() && *stop.borrow() {
            let head = source.head().await?;
            println!("Signal received: copying up to the source's head {head}, then stopping");
            drain_to = Some(head);
        }
        if drain_to.is_some_and(|d| copied >= d) {
            break;
        }
        let page = source.read_from(copied, PAGE).await?;
        if page.is_empty() {
            if !args.live || args.until_caught_up || drain_to.is_some() {
                break;
            }
            // Caught up for now: wait for the source's next event (or a signal).
            let mut stop = stop.clone();
            tokio::select! {
                head = source.wait_for(copied, Duration::from_secs(1)) => source_head = head?,
                _ = stop.changed() => {}
            }
            progress.tick(copied, Some(source_head));
            continue;
        }
        let mut payloads = Vec::with_capacity(page.len());
        for event in page {
            replayed.feed(event.seq, &event.payload)?;
            payloads.push(event.payload);
        }
        let expected = copied;
        copied = match target.append(expected, payloads).await {
            Ok(head) => head,
            Err(StoreError::Conflict { actual, .. }) => {
                bail!("the target was written to during the migration (it is at {actual}, expected {expected})")
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(s) = snapshot.as_ref().filter(|s| !snapshot_copied && s.seq <= copied) {
            target.save_snapshot(s.clone()).await?;
            snapshot_copied = true;
        }
        source_head = source_head.max(copied);
        progress.tick(copied, Some(source_head));
        if !args.live && copied >= start_head {
            break;
        }
    }
    let elapsed = progress.elapsed();
    let copy_rate = transfer::rate(copied, elapsed);
    println!("Copied {copied} events in {:.1} s ({copy_rate:.0} events/s)", elapsed.as_secs_f64());
    match &snapshot {
        Some(s) => println!("Snapshot at event {} copied", s.seq),
        None => println!("The source had no snapshot"),
    }
    let lag = source.head().await?.saturating_sub(copied);
    if lag > 0 {
        println!("The source has {lag} events past {copied}; run a live migration to follow it");
    }

    println!("Verifying: rebuilding the target's catalog from its log...");
    let target_head = target.head().await?;
    if target_head != copied {
        bail!("the target holds {target_head} events, not the {copied} copied: someone else wrote to it");
    }
    let rebuilt = transfer::replay_store(target.as_ref(), copied, "verified").await?;
    let verification = Verification {
        seq: copied,
        source_log: replayed.log.finish(),
        target_log: rebuilt.log.finish(),
        source: replayed.state.digest(),
        target: rebuilt.state.digest(),
    };
    verification.print("source", "target");
    let mut report = verification.to_json();
    report["events"] = copied.into();
    report["eventsPerSecond"] = (copy_rate.round() as u64).into();
    report["sourceLag"] = lag.into();
    transfer::write_report(args.report.as_deref(), &report)?;
    if !verification.equal() {
        bail!("verification FAILED: the target differs from the source (see above)");
    }
    println!(
        "Verified: {} holds exactly the source's log and catalog up to event {copied} ({} entities).",
        target.describe(),
        verification.target.total_entities()
    );
    Ok(())
}
