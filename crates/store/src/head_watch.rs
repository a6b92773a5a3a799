//! What every backend's `wait_for` is made of: the newest head this process knows of (from its own appends
//! and from the backend's announcements), and a way to wait for it to pass a sequence number.

use std::time::Duration;

use std::future::Future;

use tokio::sync::watch;

use crate::StoreError;

pub(crate) struct HeadWatch {
    tx: watch::Sender<u64>,
}

impl HeadWatch {
    pub(crate) fn new(head: u64) -> HeadWatch {
        HeadWatch { tx: watch::channel(head).0 }
    }

    /// Records a head seen; heads only move forward.
    pub(crate) fn note(&self, head: u64) {
        self.tx.send_if_modified(|h| {
            let changed = *h < head;
            *h = (*h).max(head);
            changed
        });
    }

    /// The newest head known.
    pub(crate) fn known(&self) -> u64 {
        *self.tx.borrow()
    }

    /// `LogStore::wait_for` for every backend: waits until the known head is past `after`; after `timeout`,
    /// asks the store itself (`ask`), so a missed announcement costs latency, never correctness.
    pub(crate) async fn wait_or_ask(
        &self,
        after: u64,
        timeout: Duration,
        ask: impl Future<Output = Result<u64, StoreError>>,
    ) -> Result<u64, StoreError> {
        let mut rx = self.tx.subscribe();
        let seen = match tokio::time::timeout(timeout, rx.wait_for(|h| *h > after)).await {
            Ok(Ok(h)) => Some(*h),
            _ => None,
        };
        match seen {
            Some(head) => Ok(head),
            None => ask.await,
        }
    }
}

/// Splits one of Berth's own query parameters off a store URL: returns the URL without it (for the driver)
/// and its value, if present.
pub(crate) fn take_param(url: &str, key: &str) -> (String, Option<String>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut value = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if k == key => value = Some(v.to_string()),
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (url, value)
}
