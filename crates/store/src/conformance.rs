//! The conformance suite every [`LogStore`] backend must pass. Backends call [`run_all`] from their tests on
//! an empty store; [`check_reopened`] then checks that a reopened store still holds what `run_all` left.
//! Failures panic with a message naming the broken guarantee.

use std::sync::Arc;
use std::time::Duration;

use crate::{LogStore, Snapshot, StoreError};

fn ev(n: u64) -> Vec<u8> {
    format!("{{\"n\":{n}}}").into_bytes()
}

/// Runs every check, in order, on an empty store.
pub async fn run_all(store: &dyn LogStore) {
    append_and_conflict(store).await;
    read_from(store).await;
    waiting(store).await;
    snapshots(store).await;
    cursors(store).await;
    leases(store, store).await;
}

/// Concurrent appenders (each retrying on conflict), spread over several handles on one store (replicas),
/// never leave a gap or a duplicate.
pub async fn concurrent_appenders(handles: &[Arc<dyn LogStore>], writers: usize, per_writer: usize) {
    let store = Arc::clone(&handles[0]);
    let start = store.head().await.expect("head");
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&handles[w % handles.len()]);
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                loop {
                    let head = store.head().await.expect("head");
                    let payload = format!("{{\"w\":{w},\"i\":{i}}}").into_bytes();
                    match store.append(head, vec![payload]).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let events = store.read_from(start, usize::MAX).await.expect("read");
    assert_eq!(events.len(), writers * per_writer, "every append is stored exactly once");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, start + 1 + i as u64, "sequence has no gaps");
    }
    let mut seen: Vec<&Vec<u8>> = events.iter().map(|e| &e.payload).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), writers * per_writer, "no payload is duplicated");
}

async fn append_and_conflict(store: &dyn LogStore) {
    assert_eq!(store.head().await.expect("head"), 0, "a new store is empty");
    assert_eq!(store.append(0, vec![ev(1), ev(2)]).await.expect("append"), 2);
    assert_eq!(store.head().await.expect("head"), 2);
    match store.append(1, vec![ev(99)]).await {
        Err(StoreError::Conflict { expected: 1, actual: 2 }) => {}
        other => panic!("a stale expected head must conflict, got {other:?}"),
    }
    match store.append(5, vec![ev(99)]).await {
        Err(StoreError::Conflict { expected: 5, actual: 2 }) => {}
        other => panic!("a future expected head must conflict, got {other:?}"),
    }
    assert_eq!(store.head().await.expect("head"), 2, "a conflicting append writes nothing");
    assert_eq!(store.append(2, vec![ev(3)]).await.expect("append"), 3);
}

async fn read_from(store: &dyn LogStore) {
    let all = store.read_from(0, 100).await.expect("read");
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[0].payload, ev(1));
    assert_eq!(all[2].payload, ev(3));
    let tail = store.read_from(1, 1).await.expect("read");
    assert_eq!(tail.len(), 1, "limit is honoured");
    assert_eq!(tail[0].seq, 2);
    assert!(store.read_from(3, 10).await.expect("read").is_empty());
    let back = store.read_before(4, 10).await.expect("read before");
    assert_eq!(back.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 2, 1], "newest first");
    assert_eq!(back[0].payload, ev(3));
    let back = store.read_before(3, 1).await.expect("read before");
    assert_eq!(back.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2], "limit is honoured");
    assert!(store.read_before(1, 10).await.expect("read before").is_empty());
    assert!(store.read_before(0, 10).await.expect("read before").is_empty());
    // Events by sequence number, in the order asked; missing ones left out.
    let some = store.read_seqs(vec![3, 1, 99, 0]).await.expect("read seqs");
    assert_eq!(some.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 1]);
    assert_eq!(some[0].payload, ev(3));
    assert_eq!(some[1].payload, ev(1));
    assert!(store.read_seqs(Vec::new()).await.expect("none asked").is_empty());
}

async fn waiting(store: &dyn LogStore) {
    let head = store.head().await.expect("head");
    let started = std::time::Instant::now();
    let h = store.wait_for(head, Duration::from_millis(100)).await.expect("wait");
    assert_eq!(h, head, "nothing new: the wait times out with the same head");
    assert!(started.elapsed() >= Duration::from_millis(90), "the wait lasted its timeout");
    assert_eq!(
        store.wait_for(head - 1, Duration::from_secs(5)).await.expect("wait"),
        head,
        "already past: returns at once"
    );

    let (h, _) = tokio::join!(store.wait_for(head, Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.append(head, vec![ev(4)]).await.expect("append");
    });
    assert_eq!(h.expect("wait"), head + 1, "a waiter wakes on a new event");
}

async fn snapshots(store: &dyn LogStore) {
    assert!(store.load_snapshot().await.expect("load").is_none(), "no snapshot at first");
    store.save_snapshot(Snapshot { seq: 2, data: b"two".to_vec() }).await.expect("save");
    let big: Vec<u8> = (0..40_000_000u32).map(|i| (i % 251) as u8).collect();
    store.save_snapshot(Snapshot { seq: 4, data: big.clone() }).await.expect("save big");
    let s = store.load_snapshot().await.expect("load").expect("some");
    assert_eq!(s.seq, 4, "the newest snapshot wins");
    assert!(s.data == big, "snapshot bytes round-trip");
    store.save_snapshot(Snapshot { seq: 3, data: b"older".to_vec() }).await.expect("save older");
    let s = store.load_snapshot().await.expect("load").expect("some");
    assert_eq!(s.seq, 4, "an older snapshot does not replace a newer one");
    assert!(s.data == big, "the newer snapshot is intact");
    let head = store.head().await.expect("head");
    assert!(
        store.save_snapshot(Snapshot { seq: head + 10, data: vec![] }).await.is_err(),
        "a snapshot ahead of the log is refused"
    );
}

async fn cursors(store: &dyn LogStore) {
    assert_eq!(store.get_cursor("webhooks").await.expect("get"), None);
    store.set_cursor("webhooks", 3).await.expect("set");
    store.set_cursor("webhooks", 4).await.expect("set");
    store.set_cursor("kafka", 1).await.expect("set");
    assert_eq!(store.get_cursor("webhooks").await.expect("get"), Some(4));
    assert_eq!(store.get_cursor("kafka").await.expect("get"), Some(1));
    assert_eq!(store.get_cursor("names with spaces/and:colons").await.expect("get"), None);
}

/// Leases on a named cursor, held through `a` and `b` (one handle, or two replicas' handles): one holder at
/// a time, renewals keep the token, expiry lets another take over with a greater token, the old holder's
/// token no longer moves the cursor, release frees the lease at once.
pub async fn leases(a: &dyn LogStore, b: &dyn LogStore) {
    let name = format!("lease-{}", a.head().await.expect("head"));
    let short = Duration::from_millis(400);
    let long = Duration::from_secs(30);
    let first = a.take_lease(&name, "replica-a", short).await.expect("take").expect("a free lease is taken");
    assert_eq!(b.take_lease(&name, "replica-b", long).await.expect("take"), None, "one holder at a time");
    assert_eq!(a.take_lease(&name, "replica-a", short).await.expect("renew"), Some(first), "a renewal keeps the token");
    assert!(a.set_cursor_leased(&name, "replica-a", first, 7).await.expect("set"), "the holder moves the cursor");
    assert!(!b.set_cursor_leased(&name, "replica-b", first, 8).await.expect("set"), "another holder cannot");
    assert_eq!(b.get_cursor(&name).await.expect("get"), Some(7));
    // The holder pauses past its lease: another takes over, and the old token is fenced off.
    tokio::time::sleep(short + Duration::from_millis(300)).await;
    let second = b.take_lease(&name, "replica-b", long).await.expect("take").expect("an expired lease is taken over");
    assert!(second > first, "a takeover gets a greater token ({second} after {first})");
    assert!(!a.set_cursor_leased(&name, "replica-a", first, 9).await.expect("set"), "the old holder is fenced off");
    assert_eq!(a.take_lease(&name, "replica-a", short).await.expect("take"), None);
    assert!(b.set_cursor_leased(&name, "replica-b", second, 10).await.expect("set"));
    assert_eq!(a.get_cursor(&name).await.expect("get"), Some(10));
    // Release: free at once, for anyone; a release by a non-holder changes nothing.
    a.release_lease(&name, "replica-a").await.expect("release by a non-holder");
    assert_eq!(a.take_lease(&name, "replica-a", short).await.expect("take"), None, "still held by b");
    b.release_lease(&name, "replica-b").await.expect("release");
    let third = a.take_lease(&name, "replica-a", short).await.expect("take").expect("released, so free");
    assert!(third > second);
    assert!(!b.set_cursor_leased(&name, "replica-b", second, 11).await.expect("set"), "released means fenced");
    // Leases are per name.
    assert!(b.take_lease(&format!("{name}-other"), "replica-b", short).await.expect("take").is_some());
    // Bad arguments are refused, not stored.
    assert!(a.take_lease(&name, "", short).await.is_err(), "an empty holder");
    assert!(a.take_lease(&name, "replica-a", Duration::ZERO).await.is_err(), "a zero lease");
    assert!(a.take_lease(&name, "replica-a", crate::MAX_LEASE * 2).await.is_err(), "an endless lease");
    a.release_lease(&name, "replica-a").await.expect("release");
}

/// Payloads are bytes: every byte value and a 1 MiB event survive a round trip.
pub async fn binary_payloads(store: &dyn LogStore) {
    let head = store.head().await.expect("head");
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let large: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 256) as u8).collect();
    let batch: Vec<Vec<u8>> = (0..500).map(|i| format!("{{\"i\":{i}}}").into_bytes()).collect();
    store.append(head, vec![all_bytes.clone(), large.clone(), vec![]]).await.expect("append binary");
    store.append(head + 3, batch.clone()).await.expect("append a batch of 500");
    let back = store.read_from(head, 1000).await.expect("read");
    assert_eq!(back.len(), 503);
    assert!(back[0].payload == all_bytes, "every byte value round-trips");
    assert!(back[1].payload == large, "a 1 MiB event round-trips");
    assert!(back[2].payload.is_empty(), "an empty event round-trips");
    assert!(back[3..].iter().map(|e| &e.payload).eq(batch.iter()), "a batch keeps its order");
}

/// [`LogStore::append_blocking`], where the store offers it, keeps [`LogStore::append`]'s guarantees: the
/// events land after the expected head, in order; a stale head conflicts and writes nothing; a waiter wakes;
/// the asynchronous path goes on from its head. A store that does not offer it writes nothing. Blocks the
/// calling thread for the appends (run it on a multi-threaded runtime).
pub async fn blocking_appends(store: &dyn LogStore) {
    let head = store.head().await.expect("head");
    let Some(appended) = store.append_blocking(head, &[ev(2001), ev(2002)]) else {
        assert_eq!(store.head().await.expect("head"), head, "a store without blocking appends writes nothing");
        return;
    };
    assert_eq!(appended.expect("a blocking append"), head + 2);
    assert_eq!(store.head().await.expect("head"), head + 2);
    let back = store.read_from(head, 10).await.expect("read");
    assert_eq!(
        back.iter().map(|e| (e.seq, e.payload.clone())).collect::<Vec<_>>(),
        vec![(head + 1, ev(2001)), (head + 2, ev(2002))]
    );
    match store.append_blocking(head, &[ev(2099)]) {
        Some(Err(StoreError::Conflict { expected, actual })) => assert_eq!((expected, actual), (head, head + 2)),
        other => panic!("a stale expected head must conflict, got {other:?}"),
    }
    assert_eq!(store.head().await.expect("head"), head + 2, "a conflicting blocking append writes nothing");
    let (woke, _) = tokio::join!(store.wait_for(head + 2, Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.append_blocking(head + 2, &[ev(2003)]).expect("offered").expect("append");
    });
    assert_eq!(woke.expect("wait"), head + 3, "a waiter wakes on a blocking append");
    assert_eq!(store.append(head + 3, vec![ev(2004)]).await.expect("then an async append"), head + 4);
}

/// After [`run_all`] and a reopen: the log, the snapshot and the cursors are all still there.
pub async fn check_reopened(store: &dyn LogStore) {
    assert_eq!(store.head().await.expect("head"), 4);
    assert_eq!(store.read_from(0, 10).await.expect("read").len(), 4);
    assert_eq!(store.load_snapshot().await.expect("load").expect("snapshot").seq, 4);
    assert_eq!(store.get_cursor("webhooks").await.expect("get"), Some(4));
}

/// Two handles on one store (two replicas): a waiter on `b` wakes on an append made through `a`, and `b`
/// reads it.
pub async fn two_handles(a: &dyn LogStore, b: &dyn LogStore) {
    let head = a.head().await.expect("head");
    assert_eq!(b.head().await.expect("head"), head, "both handles see one log");
    let started = std::time::Instant::now();
    let (woke, _) = tokio::join!(b.wait_for(head, Duration::from_secs(20)), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.append(head, vec![ev(1000)]).await.expect("append through a");
    });
    assert_eq!(woke.expect("wait"), head + 1, "the other handle wakes on the append");
    assert!(started.elapsed() < Duration::from_secs(5), "woken by the store, not by the timeout");
    let read = b.read_from(head, 10).await.expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].payload, ev(1000));
    match b.append(head, vec![ev(1001)]).await {
        Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, head + 1),
        other => panic!("a stale append through the other handle must conflict, got {other:?}"),
    }
    leases(a, b).await;
}
