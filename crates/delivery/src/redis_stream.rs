//! Redis Streams destinations: `XADD <stream> * seq <seq> key <blueprint/entity> subscription <id> message
//! <json>` per message, in order, on one connection (re-made after a failure). Consumers de-duplicate by `seq`.

use std::time::{Duration, Instant};

use crate::Outcome;

/// The longest one XADD may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RedisStream {
    client: redis::Client,
    stream: String,
    subscription: String,
    connection: Option<redis::aio::MultiplexedConnection>,
}

impl RedisStream {
    pub fn new(url: &str, stream: &str, subscription: &str) -> Result<RedisStream, String> {
        let client = redis::Client::open(url).map_err(|e| format!("the Redis stream URL: {e}"))?;
        Ok(RedisStream { client, stream: stream.to_string(), subscription: subscription.to_string(), connection: None })
    }

    /// Sends a page in one pipeline (one round trip); on an error, none of it counts as delivered (Redis
    /// may have added a prefix: at least once).
    pub(crate) async fn send_all(&mut self, messages: &[&crate::worker::Message]) -> (Vec<bool>, Outcome) {
        let (n, outcome) = self.send_pipeline(messages).await;
        (crate::worker::prefix(messages.len(), n), outcome)
    }

    async fn send_pipeline(&mut self, messages: &[&crate::worker::Message]) -> (usize, Outcome) {
        let started = Instant::now();
        let mut connection = match self.connection().await {
            Ok(c) => c,
            Err(e) => return (0, Outcome::failed(None, e, started)),
        };
        let mut pipe = redis::pipe();
        for m in messages {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("seq")
                .arg(m.seq)
                .arg("key")
                .arg(&*m.key)
                .arg("subscription")
                .arg(&self.subscription)
                .arg("message")
                .arg(&m.body[..]);
        }
        match tokio::time::timeout(CALL_TIMEOUT, pipe.query_async::<Vec<String>>(&mut connection)).await {
            Ok(Ok(ids)) if ids.len() == messages.len() => (messages.len(), Outcome::delivered(None, started)),
            Ok(Ok(_)) => (0, Outcome::failed(None, "XADD answered fewer entries than sent".into(), started)),
            Ok(Err(e)) => {
                self.connection = None;
                (0, Outcome::failed(None, format!("XADD: {e}"), started))
            }
            Err(_) => {
                self.connection = None;
                (0, Outcome::failed(None, "XADD timed out".into(), started))
            }
        }
    }

    async fn connection(&mut self) -> Result<redis::aio::MultiplexedConnection, String> {
        if let Some(c) = &self.connection {
            return Ok(c.clone());
        }
        match tokio::time::timeout(CALL_TIMEOUT, self.client.get_multiplexed_async_connection()).await {
            Ok(Ok(c)) => {
                self.connection = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(format!("connecting to Redis: {e}")),
            Err(_) => Err("connecting to Redis timed out".into()),
        }
    }
}
