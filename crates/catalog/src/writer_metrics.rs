//! What the writer measures, for `/metrics`: each batch made durable (how many writes it held, and the time
//! from the start of its execution to durable, which is what a write waits for), and the batches that failed
//! (the store refused or could not confirm them; every write in them was answered with an error).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

#[derive(Clone, Debug)]
pub struct WriterMetrics {
    /// Writes (requests) per durable batch: 1, 4, 16, ... 16,384.
    pub batch_writes: Histogram,
    /// Seconds from a batch's execution to its events durable: 0.5 ms ... 4 s.
    pub batch_seconds: Histogram,
    pub failed_batches: Counter,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            batch_writes: Histogram::new(exponential_buckets(1.0, 4.0, 8)),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            failed_batches: Counter::default(),
        }
    }
}
