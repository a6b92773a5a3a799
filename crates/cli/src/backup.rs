//! `berth backup FILE` and `berth restore FILE`: a consistent online backup of any store into one file, and
//! its restore into an empty store of any kind.
//!
//! File format (version 1): the line `BERTH-BACKUP 1\n`, then frames `kind: u8, seq: u64 BE, len: u64 BE,
//! bytes`: at most one snapshot frame (kind 1), the events 1..=head in order (kind 2), and one trailer
//! (kind 3) whose bytes are JSON: the head, the log digest and the catalog digest at the head. The backup is
//! consistent because the log is append-only: the snapshot is read first, then the head, then the events up
//! to that head, while the server keeps writing past it. Restore first reads the whole file and checks it
//! against its trailer (a damaged backup writes nothing; a snapshot frame is loaded and, with the events
//! after it, must give the trailer's catalog digest), then writes, then re-reads what it wrote, rebuilds the
//! catalog from the log alone and from the stored snapshot, and checks the digests against the trailer.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use berth_engine::{CatalogDigest, State};
use berth_store::Snapshot;
use serde::{Deserialize, Serialize};

use crate::transfer::{self, DEFAULT_STORE, PAGE, Progress, Replayed, Verification};

const MAGIC: &[u8] = b"BERTH-BACKUP 1\n";
const SNAPSHOT: u8 = 1;
const EVENT: u8 = 2;
const TRAILER: u8 = 3;
/// No frame is larger than this (a snapshot of a very large catalog included).
const MAX_FRAME: u64 = 8 << 30;

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// The file to write (written to FILE.partial, then renamed)
    pub file: PathBuf,
    /// The store to back up; it may be serving
    #[arg(long, env = "BERTH_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// A file written by `berth backup`
    pub file: PathBuf,
    /// The store to restore into; it must be empty
    #[arg(long, env = "BERTH_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
    /// Write the verification report as JSON to this file
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trailer {
    head: u64,
    log_digest: String,
    catalog: CatalogDigest,
    source: String,
    created_at_ms: i64,
}

fn write_frame(out: &mut impl Write, kind: u8, seq: u64, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(&[kind])?;
    out.write_all(&seq.to_be_bytes())?;
    out.write_all(&(bytes.len() as u64).to_be_bytes())?;
    out.write_all(bytes)
}

/// The next frame, or `None` at a clean end of file.
fn read_frame(input: &mut impl Read) -> anyhow::Result<Option<(u8, u64, Vec<u8>)>> {
    let mut kind = [0u8; 1];
    match input.read_exact(&mut kind) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut word = [0u8; 8];
    input.read_exact(&mut word).context("the backup is truncated")?;
    let seq = u64::from_be_bytes(word);
    input.read_exact(&mut word).context("the backup is truncated")?;
    let len = u64::from_be_bytes(word);
    if len > MAX_FRAME {
        bail!("the backup is corrupt: a frame claims {len} bytes");
    }
    let mut bytes = Vec::new();
    input.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        bail!("the backup is truncated");
    }
    Ok(Some((kind[0], seq, bytes)))
}

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let store = transfer::open_store(&args.store).await?;
    let snapshot = store.load_snapshot().await?;
    let head = store.head().await?;
    println!("Backing up {} (events 1..={head}) to {}", store.describe(), args.file.display());
    let partial = partial_path(&args.file);
    // A backup holds credential and password hashes: readable only by its owner.
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let file = opts.open(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(MAGIC)?;
    let mut replayed = match &snapshot {
        Some(s) => {
            write_frame(&mut out, SNAPSHOT, s.seq, &s.data)?;
            Replayed::from_state(State::from_snapshot(&s.data)?)
        }
        None => Replayed::from_state(State::default()),
    };
    let mut progress = Progress::new("backed up");
    let mut at = 0;
    while at < head {
        let page = store.read_from(at, PAGE.min((head - at) as usize)).await?;
        if page.is_empty() {
            bail!("the store's log ends at {at}, before its head {head}");
        }
        for event in page {
            replayed.feed(event.seq, &event.payload)?;
            write_frame(&mut out, EVENT, event.seq, &event.payload)?;
            at = event.seq;
        }
        progress.tick(at, Some(head));
    }
    let trailer = Trailer {
        head,
        log_digest: replayed.log.finish(),
        catalog: replayed.state.digest(),
        source: store.describe(),
        created_at_ms: berth_server::now().millis(),
    };
    write_frame(&mut out, TRAILER, head, &serde_json::to_vec(&trailer)?)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, &args.file)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), args.file.display()))?;
    let size = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    println!(
        "Backed up {head} events and {} entities in {:.1} s ({} bytes); log digest {}",
        trailer.catalog.total_entities(),
        progress.elapsed().as_secs_f64(),
        size,
        trailer.log_digest
    );
    Ok(())
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Opens a backup and checks its header.
fn open_backup(path: &Path) -> anyhow::Result<BufReader<std::fs::File>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut magic = vec![0u8; MAGIC.len()];
    if input.read_exact(&mut magic).is_err() || magic != MAGIC {
        bail!("{} is not a Berth backup (version 1)", path.display());
    }
    Ok(input)
}

/// The first pass of a restore: reads the whole file, checks its frames, their order and the log digest
/// against the trailer, and, when it holds a snapshot, that the snapshot loads and, with the events after it
/// applied, gives exactly the catalog the trailer describes (a flipped byte inside the snapshot is caught
/// here, not served later). A damaged backup is refused before anything is written.
fn check_backup(path: &Path) -> anyhow::Result<Trailer> {
    let mut input = open_backup(path)?;
    let mut log = berth_engine::LogDigest::default();
    let mut trailer: Option<Trailer> = None;
    let mut snapshot_seq = None;
    // The catalog rebuilt from the snapshot and the events after it.
    let mut from_snapshot: Option<State> = None;
    while let Some((kind, seq, bytes)) = read_frame(&mut input)? {
        if trailer.is_some() {
            bail!("the backup has data after its trailer");
        }
        let (events, last) = log.position();
        match kind {
            SNAPSHOT if snapshot_seq.is_none() && events == 0 => {
                snapshot_seq = Some(seq);
                let state = State::from_snapshot(&bytes)
                    .map_err(|e| anyhow::anyhow!("the backup's snapshot is corrupt: it does not load ({e})"))?;
                if state.seq() != seq {
                    bail!("the backup's snapshot is corrupt: it says event {} where its frame says {seq}", state.seq());
                }
                from_snapshot = Some(state);
            }
            EVENT if seq == last + 1 => {
                log.update(seq, &bytes);
                if let Some(state) = from_snapshot.as_mut().filter(|s| seq > s.seq()) {
                    let event = berth_engine::decode_event(seq, &bytes)?;
                    state.apply(&event)?;
                }
            }
            EVENT => bail!("the backup's events jump from {last} to {seq}"),
            TRAILER => trailer = Some(serde_json::from_slice(&bytes).context("the backup's trailer is corrupt")?),
            other => bail!("the backup is corrupt: unexpected frame kind {other}"),
        }
    }
    let Some(trailer) = trailer else {
        bail!("the backup is incomplete: it has no trailer (was the backup interrupted?)");
    };
    let (events, _) = log.position();
    if events != trailer.head || log.finish() != trailer.log_digest {
        bail!("the backup is corrupt: its events do not match its trailer's digest");
    }
    if snapshot_seq.is_some_and(|s| s > trailer.head) {
        bail!("the backup is corrupt: its snapshot is past its last event");
    }
    if let Some(state) = from_snapshot {
        if state.digest() != trailer.catalog {
            bail!(
                "the backup is corrupt: its snapshot, with the events after it, is not the catalog its trailer describes"
            );
        }
    }
    Ok(trailer)
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let trailer = check_backup(&args.file)?;
    let store = transfer::open_store(&args.store).await?;
    transfer::ensure_empty(store.as_ref()).await?;
    println!("Restoring {} ({} events) into {}", args.file.display(), trailer.head, store.describe());
    let mut input = open_backup(&args.file)?;
    let mut snapshot: Option<Snapshot> = None;
    let mut pending: Vec<Vec<u8>> = Vec::with_capacity(PAGE);
    let mut appended = 0u64;
    let mut progress = Progress::new("restored");
    while let Some((kind, seq, bytes)) = read_frame(&mut input)? {
        match kind {
            SNAPSHOT => snapshot = Some(Snapshot { seq, data: bytes }),
            EVENT => {
                pending.push(bytes);
                if pending.len() >= PAGE {
                    appended = store.append(appended, std::mem::take(&mut pending)).await?;
                    progress.tick(appended, Some(trailer.head));
                }
            }
            _ => {}
        }
    }
    if !pending.is_empty() {
        appended = store.append(appended, std::mem::take(&mut pending)).await?;
    }
    if let Some(s) = snapshot {
        store.save_snapshot(s).await?;
    }
    println!("Restored {appended} events in {:.1} s; verifying...", progress.elapsed().as_secs_f64());
    let rebuilt = transfer::replay_store(store.as_ref(), appended, "verified").await?;
    let verification = Verification {
        seq: appended,
        source_log: trailer.log_digest.clone(),
        target_log: rebuilt.log.finish(),
        source: trailer.catalog.clone(),
        target: rebuilt.state.digest(),
    };
    verification.print("backup", "restored");
    transfer::write_report(args.report.as_deref(), &verification.to_json())?;
    if !verification.equal() {
        bail!("verification FAILED: the restored store differs from the backup");
    }
    // The store's snapshot is what a server starts from: it too must give the backup's catalog.
    if let Some(snap) = store.load_snapshot().await? {
        let mut state = Replayed::from_state(State::from_snapshot(&snap.data)?);
        let mut at = 0;
        while at < appended {
            let page = store.read_from(at, PAGE).await?;
            let Some(last) = page.last().map(|e| e.seq) else { break };
            for event in page {
                state.feed(event.seq, &event.payload)?;
            }
            at = last;
        }
        if state.state.digest() != trailer.catalog {
            bail!(
                "verification FAILED: the restored snapshot differs from the backup; empty the store before retrying"
            );
        }
    }
    println!("Verified: {} holds the backup of {} exactly.", store.describe(), trailer.source);
    Ok(())
}
