//! Kafka destinations: each message produced to the topic (`--kafka-brokers`), keyed by `blueprint/entity`
//! and sent to the partition Kafka's default partitioner picks for that key (murmur2, as the Java client
//! does), so one entity's changes stay in order in one partition and other producers' consumers agree on
//! where a key lives. Headers: `berth-seq`, `berth-subscription`. A missing topic is created (one
//! partition, replication 1: production topics are better made by their owners).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

use crate::Outcome;

/// The longest a connection, metadata request or produce may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Kafka {
    brokers: Vec<String>,
    topic: String,
    subscription: String,
    client: Option<Client>,
    partitions: Vec<i32>,
    clients: HashMap<i32, PartitionClient>,
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), for the default partitioner.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives `key` among `count` partitions.
pub fn partition_of(key: &[u8], count: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % count.max(1)
}

async fn within<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map_err(|e| format!("{what}: {e}"))
}

impl Kafka {
    pub fn new(brokers: &str, topic: &str, subscription: &str) -> Kafka {
        Kafka {
            brokers: brokers.split(',').map(|b| b.trim().to_string()).filter(|b| !b.is_empty()).collect(),
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            client: None,
            partitions: Vec::new(),
            clients: HashMap::new(),
        }
    }

    /// Connects, and learns (or creates) the topic's partitions.
    async fn connect(&mut self) -> Result<(), String> {
        if self.client.is_some() && !self.partitions.is_empty() {
            return Ok(());
        }
        let client =
            within("connecting to Kafka", ClientBuilder::new(self.brokers.clone()).client_id("berth").build()).await?;
        let mut partitions = topic_partitions(&client, &self.topic).await?;
        if partitions.is_empty() {
            let controller = client.controller_client().map_err(|e| format!("the Kafka controller: {e}"))?;
            // Created by a concurrent producer meanwhile is as good.
            let _ = within("creating the topic", controller.create_topic(self.topic.clone(), 1, 1, 5_000)).await;
            partitions = topic_partitions(&client, &self.topic).await?;
        }
        if partitions.is_empty() {
            return Err(format!("the topic `{}` has no partition", self.topic));
        }
        self.partitions = partitions;
        self.client = Some(client);
        self.clients.clear();
        Ok(())
    }

    /// Produces a page: one request per partition, each partition's records in order. Delivered: the
    /// messages of the partitions whose request succeeded; the outcome is the first failure's.
    pub(crate) async fn send_all(&mut self, messages: &[&crate::worker::Message]) -> (Vec<bool>, Outcome) {
        let started = Instant::now();
        if let Err(e) = self.connect().await {
            self.client = None;
            return (vec![false; messages.len()], Outcome::failed(None, e, started));
        }
        let mut delivered = vec![false; messages.len()];
        let count = self.partitions.len();
        let mut groups: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, m) in messages.iter().enumerate() {
            groups.entry(self.partitions[partition_of(m.key.as_bytes(), count)]).or_default().push(i);
        }
        let mut first_failed: Option<(usize, String)> = None;
        for (partition, indexes) in groups {
            let records =
                indexes.iter().map(|i| self.record(&messages[*i].key, messages[*i].seq, &messages[*i].body)).collect();
            match self.produce(partition, records).await {
                Ok(()) => indexes.iter().for_each(|i| delivered[*i] = true),
                Err(e) => {
                    let at = indexes[0];
                    if first_failed.as_ref().is_none_or(|(f, _)| at < *f) {
                        first_failed = Some((at, e));
                    }
                }
            }
        }
        match first_failed {
            None => (delivered, Outcome::delivered(None, started)),
            Some((_, e)) => {
                self.client = None;
                self.clients.clear();
                (delivered, Outcome::failed(None, e, started))
            }
        }
    }

    fn record(&self, key: &str, seq: u64, body: &[u8]) -> Record {
        Record {
            key: Some(key.as_bytes().to_vec()),
            value: Some(body.to_vec()),
            headers: BTreeMap::from([
                ("berth-seq".to_string(), seq.to_string().into_bytes()),
                ("berth-subscription".to_string(), self.subscription.clone().into_bytes()),
            ]),
            timestamp: rskafka::chrono::DateTime::from_timestamp_millis(berth_catalog::now().millis())
                .unwrap_or_default(),
        }
    }

    async fn produce(&mut self, partition: i32, records: Vec<Record>) -> Result<(), String> {
        if !self.clients.contains_key(&partition) {
            let client = self.client.as_ref().ok_or("not connected")?;
            let made = within(
                "opening the partition",
                client.partition_client(self.topic.clone(), partition, UnknownTopicHandling::Retry),
            )
            .await?;
            self.clients.insert(partition, made);
        }
        let producer = self.clients.get(&partition).ok_or("no partition client")?;
        within("producing", producer.produce(records, Compression::NoCompression)).await.map(|_| ())
    }
}

async fn topic_partitions(client: &Client, topic: &str) -> Result<Vec<i32>, String> {
    let topics = within("listing topics", client.list_topics()).await?;
    Ok(topics.into_iter().find(|t| t.name == topic).map(|t| t.partitions.into_iter().collect()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of the Java client's `Utils.murmur2` (Kafka's own test vectors).
    #[test]
    fn murmur2_matches_kafkas() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58_897_971);
        assert_eq!(murmur2(b"abc"), 479_470_107);
        assert!(partition_of(b"service/a", 6) < 6);
    }
}
