//! Kafka destinations: each message produced to the topic (`--kafka-brokers`), keyed by `blueprint/entity`
//! and sent to the partition Kafka's default partitioner picks for that key (murmur2, as the Java client
//! does), so one entity's changes stay in order in one partition and other producers' consumers agree on
//! where a key lives. Headers: `berth-seq`, `berth-subscription`. A missing topic is created (one
//! partition, replication 1: production topics are better made by their owners). The brokers are reached
//! as [`KafkaSecurity`] says: TLS (the process's roots, or a CA file's) and SASL (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512), as managed Kafka services ask.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;

use crate::Outcome;

/// How Berth reaches the Kafka brokers (`--kafka-tls`, `--kafka-ca-file`, `--kafka-sasl-*`): the same for
/// every Kafka destination and for KAFKA actions. The default is plain TCP without authentication.
#[derive(Clone, Default)]
pub struct KafkaSecurity {
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<KafkaSasl>,
}

/// SASL credentials for the brokers.
#[derive(Clone)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

/// The SASL mechanisms Berth offers (the ones managed Kafka services use with a username and password).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl std::str::FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<SaslMechanism, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            other => Err(format!("unknown SASL mechanism `{other}` (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")),
        }
    }
}

impl KafkaSecurity {
    /// TLS when `tls` is set or a CA file is given (trusting that file's certificates instead of the
    /// process's roots); SASL when credentials are given. A CA file that does not read, or holds no
    /// certificate, is an error here, at start-up, rather than at the first delivery.
    pub fn new(tls: bool, ca_file: Option<&str>, sasl: Option<KafkaSasl>) -> Result<KafkaSecurity, String> {
        let tls = if tls || ca_file.is_some() {
            let roots = match ca_file {
                Some(path) => {
                    berth_store::tls::pem_roots(path).map_err(|e| format!("the Kafka CA file {path}: {e}"))?
                }
                None => berth_store::tls::roots(None).map_err(|e| e.to_string())?,
            };
            let config = rustls::ClientConfig::builder_with_provider(berth_store::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        } else {
            None
        };
        if let Some(s) = &sasl {
            if s.username.is_empty() || s.password.is_empty() {
                return Err("SASL needs a username and a password".into());
            }
        }
        Ok(KafkaSecurity { tls, sasl })
    }

    /// Whether the brokers are reached over TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The SASL mechanism, if any.
    pub fn sasl_mechanism(&self) -> Option<SaslMechanism> {
        self.sasl.as_ref().map(|s| s.mechanism)
    }

    fn builder(&self, brokers: Vec<String>) -> ClientBuilder {
        // Connections retried for half a call's time at most, so that a broker that refuses (a TLS
        // handshake that fails, a password refused) is reported as itself rather than as a timeout.
        let backoff = rskafka::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 3.0,
            deadline: Some(CALL_TIMEOUT / 2),
        };
        let mut builder = ClientBuilder::new(brokers).client_id("berth").backoff_config(backoff);
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some(s) = &self.sasl {
            let credentials = Credentials::new(s.username.clone(), s.password.clone());
            builder = builder.sasl_config(match s.mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(credentials),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
            });
        }
        builder
    }
}

/// The password never shows: configurations are logged and printed with `{:?}`.
impl std::fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSecurity")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl.as_ref().map(|s| (s.mechanism, s.username.as_str(), "<redacted>")))
            .finish()
    }
}

/// The longest a connection, metadata request or produce may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Kafka {
    brokers: Vec<String>,
    security: KafkaSecurity,
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
    pub fn new(brokers: &str, security: &KafkaSecurity, topic: &str, subscription: &str) -> Kafka {
        Kafka {
            brokers: brokers.split(',').map(|b| b.trim().to_string()).filter(|b| !b.is_empty()).collect(),
            security: security.clone(),
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
        let client = within("connecting to Kafka", self.security.builder(self.brokers.clone()).build()).await?;
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

    /// A TLS front for a broker (standing in for a managed Kafka's TLS listener), on `listener`: each
    /// connection's TLS ends here, with the test certificate (`scripts/test` makes it), and its bytes go on
    /// to `broker` in clear.
    fn tls_front(listener: tokio::net::TcpListener, broker: String) -> tokio::task::JoinHandle<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(berth_testkit::tls::server_config(&[])));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, broker) = (acceptor.clone(), broker.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(&broker).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        })
    }

    /// SASL is offered to the broker before anything else: tansu without `--authentication` refuses every
    /// mechanism, and the refusal is the delivery's error, naming the cause and not the password; the same
    /// broker takes the messages from a client without SASL. (tansu 0.6 cannot make a user while it
    /// requires authentication, so a successful SCRAM exchange cannot be shown here.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sasl_is_offered_to_the_broker_and_its_refusal_is_the_error() {
        let broker = berth_testkit::brokers::broker();
        let messages = [message(1, "service/a")];
        let page: Vec<&crate::worker::Message> = messages.iter().collect();
        let sasl =
            KafkaSasl { mechanism: SaslMechanism::ScramSha512, username: "berth".into(), password: "pw-7f3a".into() };
        let security = KafkaSecurity::new(false, None, Some(sasl)).expect("SCRAM");
        let (delivered, outcome) = Kafka::new(&broker.address, &security, "berth.sasl", "scram").send_all(&page).await;
        assert_eq!(delivered, vec![false]);
        let error = outcome.error.unwrap_or_default();
        assert!(error.contains("UnsupportedSaslMechanism"), "the broker's refusal: {error}");
        assert!(!error.contains("pw-7f3a"), "no password in the error");
        let plain = KafkaSecurity::default();
        let (delivered, outcome) = Kafka::new(&broker.address, &plain, "berth.sasl", "plain").send_all(&page).await;
        assert_eq!((delivered, outcome.error), (vec![true], None));
    }

    fn message(seq: u64, key: &str) -> crate::worker::Message {
        crate::worker::Message { seq, key: key.into(), body: format!("{{\"seq\":{seq}}}").into_bytes().into() }
    }

    /// Over TLS to a broker whose certificate the test CA signed: delivered when Berth trusts that CA (the
    /// records read back through the same TLS), refused when it trusts only the system's roots or speaks
    /// plain TCP to the TLS listener.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_behind_tls_gets_the_messages_only_from_a_client_that_trusts_its_ca() {
        // The front's port is held from the start: the broker tells clients to come back to it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let front = listener.local_addr().expect("addr").to_string();
        let broker = berth_testkit::brokers::broker_advertising(Some(&front));
        let _front = tls_front(listener, broker.address.clone());
        let ca = berth_testkit::stores::tls_ca();
        let trusting = KafkaSecurity::new(false, Some(&ca), None).expect("the test CA");
        assert!(trusting.tls(), "a CA file means TLS");

        let messages = [message(1, "service/a"), message(2, "service/b"), message(3, "service/a")];
        let page: Vec<&crate::worker::Message> = messages.iter().collect();
        let mut kafka = Kafka::new(&front, &trusting, "berth.tls", "over-tls");
        let (delivered, outcome) = kafka.send_all(&page).await;
        assert_eq!(outcome.error, None);
        assert_eq!(delivered, vec![true, true, true]);

        // Read back over TLS: the three records, in order, with their keys.
        let client = trusting.builder(vec![front.clone()]).build().await.expect("a TLS client");
        let partition =
            client.partition_client("berth.tls", 0, UnknownTopicHandling::Error).await.expect("the topic's partition");
        let (records, _) = partition.fetch_records(0, 1..10_000_000, 1_000).await.expect("fetch");
        let read: Vec<(String, String)> = records
            .iter()
            .map(|r| {
                let seq = r.record.headers.get("berth-seq").map(|v| String::from_utf8_lossy(v).into_owned());
                let key = r.record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned());
                (seq.unwrap_or_default(), key.unwrap_or_default())
            })
            .collect();
        let expected = [("1", "service/a"), ("2", "service/b"), ("3", "service/a")];
        assert_eq!(read, expected.map(|(s, k)| (s.to_string(), k.to_string())).to_vec());

        // The system's roots do not hold the test CA: the handshake fails, nothing is delivered.
        let system = KafkaSecurity::new(true, None, None).expect("the system's roots");
        let (delivered, outcome) = Kafka::new(&front, &system, "berth.tls", "untrusted").send_all(&page).await;
        assert_eq!(delivered, vec![false, false, false]);
        let error = outcome.error.unwrap_or_default();
        assert!(
            error.starts_with("connecting to Kafka") && error.contains("UnknownIssuer"),
            "the cause named: {error}"
        );
        // Plain TCP to the TLS listener is no better.
        let plain = KafkaSecurity::default();
        let (delivered, outcome) = Kafka::new(&front, &plain, "berth.tls", "plain").send_all(&page).await;
        assert_eq!(delivered, vec![false, false, false]);
        assert!(outcome.error.is_some_and(|e| e.starts_with("connecting to Kafka")));
    }
}
