//! NATS JetStream destinations: each message published to the subject and acknowledged by the stream
//! that captures it, with `Nats-Msg-Id: <subscription>:<seq>` (JetStream drops a re-delivery within its
//! duplicate window; the subscription is in it so two subscriptions on one stream do not drop each
//! other's messages) and `Berth-Seq`, `Berth-Key`, `Berth-Subscription` headers. When no stream captures
//! the subject, Berth creates one (`berth-<subject>`, dots as `_`; file storage, the subject only).

use std::time::{Duration, Instant};

use async_nats::HeaderName;
use async_nats::jetstream;

use crate::Outcome;

/// The longest a connection or one acknowledged publish may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Nats {
    url: String,
    subject: String,
    subscription: String,
    context: Option<jetstream::Context>,
    stream_checked: bool,
}

impl Nats {
    pub fn new(url: &str, subject: &str, subscription: &str) -> Nats {
        Nats {
            url: url.to_string(),
            subject: subject.to_string(),
            subscription: subscription.to_string(),
            context: None,
            stream_checked: false,
        }
    }

    async fn context(&mut self) -> Result<jetstream::Context, String> {
        if let Some(c) = &self.context {
            return Ok(c.clone());
        }
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(CALL_TIMEOUT)
            .name(format!("berth subscription {}", self.subscription));
        let client = tokio::time::timeout(CALL_TIMEOUT, options.connect(self.url.as_str()))
            .await
            .map_err(|_| "connecting to NATS timed out".to_string())?
            .map_err(|e| format!("connecting to NATS: {e}"))?;
        let context = jetstream::new(client);
        self.context = Some(context.clone());
        Ok(context)
    }

    /// Makes sure a stream captures the subject (once per connection).
    async fn ensure_stream(&mut self, context: &jetstream::Context) -> Result<(), String> {
        if self.stream_checked {
            return Ok(());
        }
        let captured = tokio::time::timeout(CALL_TIMEOUT, context.stream_by_subject(self.subject.as_str()))
            .await
            .map_err(|_| "asking NATS for the subject's stream timed out".to_string())?;
        if captured.is_err() {
            let name: String = format!("berth-{}", self.subject)
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect();
            let config = jetstream::stream::Config { name, subjects: vec![self.subject.clone()], ..Default::default() };
            tokio::time::timeout(CALL_TIMEOUT, context.get_or_create_stream(config))
                .await
                .map_err(|_| "creating the JetStream stream timed out".to_string())?
                .map_err(|e| format!("creating a JetStream stream for `{}`: {e}", self.subject))?;
        }
        self.stream_checked = true;
        Ok(())
    }

    /// Publishes a page, then awaits the stream's acknowledgements in order: the delivered prefix is the
    /// messages acknowledged before the first that was not.
    pub(crate) async fn send_all(&mut self, messages: &[&crate::worker::Message]) -> (Vec<bool>, Outcome) {
        let (n, outcome) = self.send_prefix(messages).await;
        (crate::worker::prefix(messages.len(), n), outcome)
    }

    async fn send_prefix(&mut self, messages: &[&crate::worker::Message]) -> (usize, Outcome) {
        let started = Instant::now();
        let context = match self.context().await {
            Ok(c) => c,
            Err(e) => return (0, Outcome::failed(None, e, started)),
        };
        if let Err(e) = self.ensure_stream(&context).await {
            self.context = None;
            self.stream_checked = false;
            return (0, Outcome::failed(None, e, started));
        }
        let mut acks = Vec::with_capacity(messages.len());
        for m in messages {
            match tokio::time::timeout(
                CALL_TIMEOUT,
                context.publish_with_headers(self.subject.clone(), self.headers(m.seq, &m.key), m.body.clone()),
            )
            .await
            {
                Ok(Ok(ack)) => acks.push(ack),
                Ok(Err(e)) => {
                    self.stream_checked = false;
                    return self.settle(acks, Some(format!("publishing: {e}")), started).await;
                }
                Err(_) => {
                    self.context = None;
                    return self.settle(acks, Some("publishing to NATS timed out".into()), started).await;
                }
            }
        }
        self.settle(acks, None, started).await
    }

    /// Awaits acknowledgements in order; the count before the first missing one.
    async fn settle(
        &mut self,
        acks: Vec<async_nats::jetstream::context::PublishAckFuture>,
        error: Option<String>,
        started: Instant,
    ) -> (usize, Outcome) {
        let mut delivered = 0;
        for ack in acks {
            match tokio::time::timeout(CALL_TIMEOUT, ack.into_future()).await {
                Ok(Ok(_)) => delivered += 1,
                Ok(Err(e)) => {
                    return (delivered, Outcome::failed(None, format!("the stream did not acknowledge: {e}"), started));
                }
                Err(_) => {
                    return (
                        delivered,
                        Outcome::failed(None, "waiting for the stream's acknowledgement timed out".into(), started),
                    );
                }
            }
        }
        match error {
            Some(e) => (delivered, Outcome::failed(None, e, started)),
            None => (delivered, Outcome::delivered(None, started)),
        }
    }

    /// A message's headers; the names are constants (a name given as text is checked and copied each time).
    fn headers(&self, seq: u64, key: &str) -> async_nats::HeaderMap {
        const SEQ: HeaderName = HeaderName::from_static("Berth-Seq");
        const KEY: HeaderName = HeaderName::from_static("Berth-Key");
        const SUBSCRIPTION: HeaderName = HeaderName::from_static("Berth-Subscription");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{}:{seq}", self.subscription));
        headers.insert(SEQ, seq.to_string());
        headers.insert(KEY, key);
        headers.insert(SUBSCRIPTION, self.subscription.as_str());
        headers
    }
}
