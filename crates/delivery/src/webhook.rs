//! Webhook destinations: one signed POST per message, no redirects followed, every call timed out, to the
//! host's addresses checked against the allow rules (and pinned, so a name cannot resolve to checked
//! addresses and then to others), tried in order until one answers. One request at a time, in log order; or,
//! with the subscription's `concurrency` above 1, that many lanes side by side, one entity's changes one after
//! another in log order (Port's webhooks carry one event per request: a receiver's round trip caps one lane
//! at a few thousand changes a second).
//!
//! Each lane keeps one HTTP/1.1 connection (TLS for `https`, with the process's roots) from page to page,
//! and drives it in the lane's own task (the first lane in the delivering task, the others in tasks of a
//! page's length, so that the runtime's threads share the lanes): no connection pool, no connection task to
//! wake, no URL parsed per request. The fixed headers are built once; a request adds its timestamp, signature and
//! sequence number. A kept connection the receiver closed is replaced, and a request that failed on it
//! before an answer is sent once more on a new one (at least once: a receiver may see it twice). While the
//! subscription is idle, `Webhook::tidy` closes the connections the receiver closed (rather than leave
//! them half-closed until the next message) and those unused for `KEEP_UNUSED` (30 s).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;

use crate::address::Allow;
use crate::{Outcome, secret};

/// The longest a webhook call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a checked address is trusted before the host is resolved and checked again.
pub(crate) const RECHECK: Duration = Duration::from_secs(60);
/// How long a kept connection may go unused before an idle subscription closes it.
pub(crate) const KEEP_UNUSED: Duration = Duration::from_secs(30);
/// The longest answer body read (to keep the connection); a longer one closes the connection.
const MAX_ANSWER: usize = 64 * 1024;
/// The headers each request adds to the fixed ones.
const TIMESTAMP: HeaderName = HeaderName::from_static("x-port-timestamp");
const SIGNATURE: HeaderName = HeaderName::from_static("x-port-signature");
const SEQ: HeaderName = HeaderName::from_static("x-berth-seq");
/// Headers a subscription cannot set because they frame the request or the connection.
const FRAMING: [&str; 6] = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];

/// What a connection carries: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> Io for T {}
type Stream = TokioIo<Box<dyn Io>>;

/// One lane's kept connection: the request side, and the connection's own future, polled by whoever waits
/// on the request side.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    link: Link,
    /// When it last carried a request.
    used: Instant,
}

struct Link {
    driver: Pin<Box<http1::Connection<Stream, Full<Bytes>>>>,
    /// The connection's future finished (the connection is closed): never polled again.
    ended: bool,
}

impl Link {
    /// Whether the connection is closed, reading what the receiver sent since it was last driven (a close)
    /// without waiting.
    fn closed_now(&mut self) -> bool {
        if !self.ended && self.driver.as_mut().now_or_never().is_some() {
            self.ended = true;
        }
        self.ended
    }

    /// Waits for `f` while driving the connection; `Err` when the connection ended before `f` finished.
    async fn driven<F: Future>(&mut self, f: F) -> Result<F::Output, String> {
        let mut f = std::pin::pin!(f);
        if self.ended {
            return f.as_mut().now_or_never().ok_or_else(|| "the connection is closed".to_string());
        }
        match futures_util::future::select(f.as_mut(), self.driver.as_mut()).await {
            Either::Left((out, _)) => Ok(out),
            Either::Right((end, _)) => {
                self.ended = true;
                // What the connection finished may also have finished `f` (an answer, then a close).
                f.as_mut().now_or_never().ok_or_else(|| match end {
                    Ok(()) => "the receiver closed the connection".to_string(),
                    Err(e) => error_text(&e),
                })
            }
        }
    }
}

/// A hyper error's message with its causes (never a URL: requests carry only their path).
fn error_text(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Where and how to connect.
struct Target {
    /// The host as written (brackets around an IPv6 address), without them, and the port.
    host: String,
    bare: String,
    port: u16,
    /// `https`: the TLS connector and the name the certificate must carry.
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

/// A page's messages, handed to the lanes as they free up: the first not sent yet whose key has no message
/// in flight and none that failed, so one entity's changes arrive in log order and never past a failure.
/// No lane waits on another: a lane that finds nothing it may send stops, and the lanes still sending take
/// what their keys held back.
struct Queue {
    /// The page's messages' keys.
    keys: Vec<Arc<str>>,
    /// Not sent yet, in page order.
    left: std::collections::VecDeque<usize>,
    /// Keys with a message in flight, or one that failed.
    held: std::collections::HashSet<Arc<str>>,
}

impl Queue {
    fn new(messages: &[crate::worker::Message]) -> Queue {
        Queue {
            keys: messages.iter().map(|m| Arc::clone(&m.key)).collect(),
            left: (0..messages.len()).collect(),
            held: std::collections::HashSet::new(),
        }
    }

    /// The next message a free lane may send (a scan of at most the page, 1,000).
    fn take(&mut self) -> Option<usize> {
        let at = self.left.iter().position(|&i| !self.held.contains(&*self.keys[i]))?;
        let i = self.left.remove(at)?;
        self.held.insert(Arc::clone(&self.keys[i]));
        Some(i)
    }

    /// A failed message's key stays held for the rest of the page.
    fn done(&mut self, i: usize, delivered: bool) {
        if delivered {
            self.held.remove(&*self.keys[i]);
        }
    }
}

/// A page's queue, shared by its lanes' tasks. Never held across an await, and nothing done under it
/// panics; were it poisoned, its state is still whole (taking none would end the page with nothing sent and
/// no failure to report).
fn lock(queue: &std::sync::Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a lane needs to send a message, shared by the lanes' tasks: where to connect, and the request's
/// path, fixed headers and signing secret.
struct Requests {
    target: Target,
    /// The path and query every request goes to.
    path: hyper::Uri,
    /// Host, content type, user agent, the subscription and the subscription's own headers.
    fixed: HeaderMap,
    /// The subscription's secret, keyed once.
    signer: secret::Signer,
}

pub struct Webhook {
    requests: Arc<Requests>,
    allow: Allow,
    /// The checked addresses connections go to (tried in order), and when they were checked.
    pinned: Option<(Arc<[SocketAddr]>, Instant)>,
    /// One kept connection per lane (requests in flight at once).
    lanes: Vec<Option<Conn>>,
}

impl Webhook {
    pub fn new(
        url: &str,
        headers: Vec<(String, String)>,
        secret: String,
        subscription: &str,
        allow: Allow,
        lanes: u32,
    ) -> Result<Webhook, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("the URL does not parse: {e}"))?;
        let host = url.host_str().ok_or("the URL has no host")?.to_string();
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tls = match url.scheme() {
            "http" => None,
            "https" => {
                let name = rustls::pki_types::ServerName::try_from(bare.clone())
                    .map_err(|e| format!("`{bare}` is not a name a certificate can carry: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(crate::tls_config()?)), name))
            }
            other => return Err(format!("a webhook URL is http or https, not `{other}`")),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let path = hyper::Uri::try_from(path).map_err(|e| format!("the URL's path: {e}"))?;
        let value = |v: &str| HeaderValue::from_str(v).map_err(|_| format!("`{v}` cannot be a header value"));
        let mut fixed = HeaderMap::new();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        fixed.insert(hyper::header::HOST, value(&authority)?);
        fixed.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        fixed.insert(hyper::header::USER_AGENT, HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"))));
        fixed.insert("x-berth-subscription", value(subscription)?);
        for (name, v) in &headers {
            if FRAMING.contains(&name.to_ascii_lowercase().as_str()) {
                continue;
            }
            let value = HeaderValue::from_str(v).map_err(|_| format!("header `{name}` has a value HTTP refuses"))?;
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("`{name}` cannot be a header name"))?;
            fixed.append(name, value);
        }
        let target = Target { host, bare, port: url.port_or_known_default().unwrap_or(443), tls };
        Ok(Webhook {
            requests: Arc::new(Requests { target, path, fixed, signer: secret::Signer::new(&secret)? }),
            allow,
            pinned: None,
            lanes: (0..lanes.max(1)).map(|_| None).collect(),
        })
    }

    /// Also trusts `roots` (besides the process's) for an `https` receiver's certificate.
    pub fn trusting(mut self, roots: &[rustls::pki_types::CertificateDer<'static>]) -> Result<Webhook, String> {
        if roots.is_empty() {
            return Ok(self);
        }
        // Before the first page, nothing else holds the requests' side.
        let requests = Arc::get_mut(&mut self.requests).ok_or("the webhook is already sending")?;
        if let Some((connector, _)) = &mut requests.target.tls {
            *connector = tokio_rustls::TlsConnector::from(Arc::new(crate::tls_config_with(roots)?));
        }
        Ok(self)
    }

    /// The checked addresses of the URL's host (resolved and checked again each [`RECHECK`], and after a
    /// connection failure); new addresses close the kept connections.
    async fn addresses(&mut self) -> Result<Arc<[SocketAddr]>, String> {
        if let Some((addrs, at)) = &self.pinned {
            if at.elapsed() < RECHECK {
                return Ok(Arc::clone(addrs));
            }
        }
        let target = &self.requests.target;
        let addrs: Arc<[SocketAddr]> =
            checked_addresses(&target.host, &target.bare, target.port, &self.allow).await?.into();
        if self.pinned.as_ref().is_none_or(|(old, _)| *old != addrs) {
            self.lanes.iter_mut().for_each(|c| *c = None);
        }
        self.pinned = Some((Arc::clone(&addrs), Instant::now()));
        Ok(addrs)
    }

    /// Closes the kept connections the receiver closed (they would otherwise stay half-closed until the next
    /// message) and those unused for `unused_for`; called while the subscription is idle.
    pub(crate) fn tidy(&mut self, unused_for: Duration) {
        for lane in &mut self.lanes {
            if lane
                .as_mut()
                .is_some_and(|c| c.link.closed_now() || c.sender.is_closed() || c.used.elapsed() >= unused_for)
            {
                *lane = None;
            }
        }
    }

    /// Sends a page: one message after another, in order; with more than one lane, the lanes side by side,
    /// each taking the page's next message it may send as soon as it is free, where one key's (one entity's)
    /// messages go one after another, never while an earlier one is in flight or failed. A lane stops at its
    /// first failure (a receiver that is down costs one request per lane). Which messages were delivered,
    /// and the outcome of the first failure in page order (or of the last call).
    ///
    /// Each lane beyond the first is a task of its own, so the runtime's threads share a page's requests
    /// (a request's writing, reading and signing, some 20,000 a second at the bench's rate, are more than one
    /// thread gets when the machine is full and the delivery threads run at the lowest priority); dropping
    /// this future (the worker stopped) aborts them.
    pub(crate) async fn send_all(&mut self, messages: &[&crate::worker::Message]) -> (Vec<bool>, Outcome) {
        let started = Instant::now();
        let addrs = match self.addresses().await {
            Ok(a) => a,
            Err(e) => return (vec![false; messages.len()], Outcome::failed(None, e, started)),
        };
        let page: Arc<[crate::worker::Message]> = messages.iter().map(|m| (*m).clone()).collect();
        let queue = Arc::new(std::sync::Mutex::new(Queue::new(&page)));
        let lane = |conn: Option<Conn>| {
            let (requests, addrs, page, queue) =
                (Arc::clone(&self.requests), Arc::clone(&addrs), Arc::clone(&page), Arc::clone(&queue));
            async move {
                let mut conn = conn;
                let mut outcomes = Vec::new();
                loop {
                    let Some(i) = lock(&queue).take() else { break };
                    let outcome = requests.post(&mut conn, &addrs, page[i].seq, &page[i].body).await;
                    let delivered = outcome.delivered;
                    lock(&queue).done(i, delivered);
                    outcomes.push((i, outcome));
                    if !delivered {
                        break;
                    }
                }
                (conn, outcomes)
            }
        };
        let used = self.lanes.len().min(messages.len());
        let mut others = tokio::task::JoinSet::new();
        for (n, conn) in self.lanes.iter_mut().enumerate().take(used).skip(1) {
            let run = lane(conn.take());
            others.spawn(async move { (n, run.await) });
        }
        let mut results = Vec::new();
        // The first lane runs in this task.
        if let Some(conn) = self.lanes.first_mut() {
            let (kept, outcomes) = lane(conn.take()).await;
            *conn = kept;
            results.extend(outcomes);
        }
        let mut stopped = None;
        while let Some(joined) = others.join_next().await {
            match joined {
                Ok((n, (kept, outcomes))) => {
                    if let Some(conn) = self.lanes.get_mut(n) {
                        *conn = kept;
                    }
                    results.extend(outcomes);
                }
                // A lane that panicked: the message it had taken counts as not delivered (sent again).
                Err(e) => stopped = Some(format!("a delivery lane stopped: {e}")),
            }
        }
        let mut delivered = vec![false; messages.len()];
        let mut first_failure: Option<(usize, Outcome)> =
            stopped.map(|e| (usize::MAX, Outcome::failed(None, e, started)));
        let mut last = None;
        for (i, outcome) in results {
            if outcome.delivered {
                delivered[i] = true;
                last = Some(outcome);
            } else if first_failure.as_ref().is_none_or(|(f, _)| i < *f) {
                first_failure = Some((i, outcome));
            }
        }
        match first_failure {
            Some((_, outcome)) => {
                if outcome.status.is_none() {
                    // A connection that failed may have been to an address that changed: resolve again.
                    self.pinned = None;
                }
                (delivered, outcome)
            }
            None => (delivered, last.unwrap_or_else(|| Outcome::delivered(None, started))),
        }
    }
}

impl Requests {
    /// Sends one message on a lane's connection (made if it has none); a 2xx answer delivers it.
    async fn post(&self, conn: &mut Option<Conn>, addrs: &[SocketAddr], seq: u64, body: &Bytes) -> Outcome {
        let started = Instant::now();
        match tokio::time::timeout(CALL_TIMEOUT, self.exchange(conn, addrs, seq, body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => Outcome::delivered(Some(status), started),
            Ok(Ok(status)) => Outcome::failed(Some(status), format!("the receiver answered {status}"), started),
            Ok(Err(e)) => {
                *conn = None;
                Outcome::failed(None, e, started)
            }
            Err(_) => {
                *conn = None;
                Outcome::failed(None, "timed out".into(), started)
            }
        }
    }

    /// The receiver's status for one request. A kept connection can turn out closed (the receiver's
    /// keep-alive ran out, its close not read yet): a request that fails on one before an answer is sent
    /// once more on a new connection (at least once: the receiver may have seen it).
    async fn exchange(
        &self,
        slot: &mut Option<Conn>,
        addrs: &[SocketAddr],
        seq: u64,
        body: &Bytes,
    ) -> Result<u16, String> {
        loop {
            let (conn, kept) = match slot.take() {
                Some(c) if !c.link.ended && !c.sender.is_closed() => (c, true),
                _ => (self.connect(addrs).await?, false),
            };
            let conn = slot.insert(conn);
            let sent = match conn.link.driven(conn.sender.ready()).await {
                Ok(Ok(())) => conn.link.driven(conn.sender.send_request(self.request(seq, body))).await,
                Ok(Err(e)) => Ok(Err(e)),
                Err(e) => Err(e),
            }
            .and_then(|answer| answer.map_err(|e| error_text(&e)));
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    *slot = None;
                    if kept {
                        continue;
                    }
                    return Err(e);
                }
            };
            let status = response.status().as_u16();
            conn.used = Instant::now();
            // The answer's body is read to its end so that the connection can carry the next request.
            let read = conn.link.driven(Limited::new(response.into_body(), MAX_ANSWER).collect()).await;
            if !matches!(read, Ok(Ok(_))) {
                *slot = None;
            }
            return Ok(status);
        }
    }

    /// A new connection to the first checked address that answers (a name with an IPv6 and an IPv4
    /// address still reaches a receiver listening on one of them), TLS for `https`.
    async fn connect(&self, addrs: &[SocketAddr]) -> Result<Conn, String> {
        let mut failed = format!("`{}` resolves to no address", self.target.bare);
        let mut tcp = None;
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    tcp = Some(stream);
                    break;
                }
                Ok(Err(e)) => failed = format!("connecting: {e}"),
                Err(_) => failed = "connecting timed out".to_string(),
            }
        }
        let tcp = tcp.ok_or(failed)?;
        // Requests are written whole; no reason to hold a small one back.
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.target.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| "the TLS handshake timed out".to_string())?
                    .map_err(|e| format!("TLS: {e}"))?,
            ),
        };
        let (sender, driver) = http1::handshake(TokioIo::new(io)).await.map_err(|e| error_text(&e))?;
        Ok(Conn { sender, link: Link { driver: Box::pin(driver), ended: false }, used: Instant::now() })
    }

    /// A message's request: the fixed headers, then its timestamp, signature and sequence number.
    fn request(&self, seq: u64, body: &Bytes) -> hyper::Request<Full<Bytes>> {
        let timestamp = berth_catalog::now().millis() / 1000;
        let mut request = hyper::Request::new(Full::new(body.clone()));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = self.path.clone();
        let headers = request.headers_mut();
        *headers = self.fixed.clone();
        headers.insert(TIMESTAMP, HeaderValue::from(timestamp));
        // Base64 and `v1,`: always a valid header value.
        if let Ok(signature) = HeaderValue::from_bytes(self.signer.sign(timestamp, body).as_bytes()) {
            headers.insert(SIGNATURE, signature);
        }
        headers.insert(SEQ, HeaderValue::from(seq));
        request
    }
}

/// The addresses to connect to for `host` (resolved within 5 s), if the allow rules let it be sent to (all of
/// them are checked).
pub(crate) async fn checked_addresses(
    host: &str,
    bare: &str,
    port: u16,
    allow: &Allow,
) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((bare, port)))
        .await
        .map_err(|_| format!("resolving `{bare}` timed out"))?
        .map_err(|e| format!("`{bare}` does not resolve: {e}"))?
        .collect();
    allow.check(host, &addrs)?;
    if addrs.is_empty() {
        return Err(format!("`{bare}` resolves to no address"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::worker::Message;

    /// A receiver that answers one request per connection, then closes it without saying so (as a keep-alive
    /// timeout that crosses the next request does); the `x-berth-seq` and head (lowercased) of each request
    /// it answered.
    async fn one_answer_per_connection() -> (u16, Arc<Mutex<Vec<(u64, String)>>>) {
        let (port, seen, _) = receiver(false).await;
        (port, seen)
    }

    /// A receiver that answers one request per connection and closes it (`keep` false), or every request
    /// that comes on a connection it keeps open; its port, what it answered, and the connections it took.
    async fn receiver(keep: bool) -> (u16, Arc<Mutex<Vec<(u64, String)>>>, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (kept, count) = (Arc::clone(&seen), Arc::clone(&accepted));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let head_end = loop {
                            if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                                break Some(at + 4);
                            }
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => break None,
                                Ok(n) => request.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let Some(head_end) = head_end else { return };
                        let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                        let header = |name: &str| {
                            head.lines()
                                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                                .unwrap_or_default()
                        };
                        let length: usize = header("content-length:").parse().unwrap_or(0);
                        while request.len() < head_end + length {
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => request.extend_from_slice(&chunk[..n]),
                            }
                        }
                        if let Ok(seq) = header("x-berth-seq:").parse() {
                            kept.lock().expect("lock").push((seq, head.clone()));
                        }
                        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                        if keep {
                            request.drain(..(head_end + length).min(request.len()));
                            continue;
                        }
                        // Closed a moment later with no `Connection: close`, unread what came meanwhile: the next
                        // request on this connection is already on its way.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        return;
                    }
                });
            }
        });
        (port, seen, accepted)
    }

    use proptest::test_runner::TestCaseError;

    fn keyed(keys: &[u8]) -> Vec<Message> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| Message { seq: i as u64 + 1, key: format!("item/{k}").into(), body: Bytes::new() })
            .collect()
    }

    #[test]
    fn a_free_lane_takes_the_next_message_whose_entity_is_not_in_flight_or_failed() {
        let messages = keyed(&[0, 1, 0, 2, 1, 0]);
        let mut q = Queue::new(&messages);
        assert_eq!((q.take(), q.take(), q.take()), (Some(0), Some(1), Some(3)), "the second 0 waits for the first");
        assert_eq!(q.take(), None, "0 and 1 are in flight: nothing a lane may send");
        q.done(0, true);
        assert_eq!(q.take(), Some(2));
        q.done(1, false);
        assert_eq!(q.take(), None, "1 failed: its later change is held; 0 is in flight");
        q.done(2, true);
        q.done(3, true);
        assert_eq!(q.take(), Some(5));
        q.done(5, true);
        assert_eq!(q.take(), None, "held for the rest of the page");
        assert_eq!(q.left, [4]);
    }

    proptest::proptest! {
        /// Whatever the keys and however the lanes finish: one entity's messages are taken in page order, one
        /// at a time, none after one of them failed; with no failure, every message is sent (a lane that
        /// finds nothing to take and stops never strands one).
        #[test]
        fn the_lanes_keep_each_entitys_order_and_strand_nothing(
            keys in proptest::collection::vec(0u8..6, 1..60),
            lanes in 1usize..8,
            fails in proptest::collection::vec(proptest::bool::weighted(0.1), 60),
            order in proptest::collection::vec(0usize..8, 200),
        ) {
            let messages = keyed(&keys);
            let mut q = Queue::new(&messages);
            let mut taken: Vec<usize> = Vec::new();
            let mut failed: std::collections::HashSet<u8> = std::collections::HashSet::new();
            // As `send_all` runs them: each lane takes a message, and after each delivered one the next; a
            // lane that finds nothing, or whose message failed, stops for good.
            let mut flying: Vec<usize> = Vec::new();
            let take = |q: &mut Queue,
                        flying: &mut Vec<usize>,
                        taken: &mut Vec<usize>,
                        failed: &std::collections::HashSet<u8>|
             -> Result<(), TestCaseError> {
                let Some(i) = q.take() else { return Ok(()) };
                proptest::prop_assert!(!failed.contains(&keys[i]), "taken after its entity failed");
                proptest::prop_assert!(flying.iter().all(|f| keys[*f] != keys[i]), "two of one entity in flight");
                proptest::prop_assert!(taken.iter().all(|t| keys[*t] != keys[i] || *t < i), "out of order");
                flying.push(i);
                taken.push(i);
                Ok(())
            };
            for _ in 0..lanes {
                take(&mut q, &mut flying, &mut taken, &failed)?;
            }
            let mut step = order.iter().cycle();
            while !flying.is_empty() {
                let i = flying.remove(step.next().copied().unwrap_or(0) % flying.len());
                q.done(i, !fails[i]);
                if fails[i] {
                    failed.insert(keys[i]);
                } else {
                    take(&mut q, &mut flying, &mut taken, &failed)?;
                }
            }
            if failed.is_empty() {
                proptest::prop_assert_eq!(taken.len(), keys.len(), "with no failure, every message is sent");
            }
        }
    }

    #[tokio::test]
    async fn an_idle_webhook_closes_the_connections_its_receiver_closed_and_keeps_the_others() {
        let message = Message { seq: 1, key: "item/a".into(), body: Bytes::from_static(b"{}") };
        let open = |port: u16| {
            Webhook::new(
                &format!("http://127.0.0.1:{port}/hook"),
                Vec::new(),
                "secret".into(),
                "s",
                Allow::new(&["127.0.0.1".to_string()]),
                1,
            )
            .expect("webhook")
        };
        // Closed by the receiver: let go at the next tidy, not at the next message.
        let (port, _, _) = receiver(false).await;
        let mut webhook = open(port);
        assert!(webhook.send_all(&[&message]).await.0[0]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(webhook.lanes[0].is_some(), "kept after the answer");
        webhook.tidy(KEEP_UNUSED);
        assert!(webhook.lanes[0].is_none(), "the receiver's close is read while idle");

        // Kept open by the receiver: kept, and the next message goes on it; let go once unused for long enough.
        let (port, seen, accepted) = receiver(true).await;
        let mut webhook = open(port);
        assert!(webhook.send_all(&[&message]).await.0[0]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        webhook.tidy(KEEP_UNUSED);
        assert!(webhook.lanes[0].is_some(), "an open connection used a moment ago is kept");
        assert!(webhook.send_all(&[&message]).await.0[0]);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "both messages on one connection");
        assert_eq!(seen.lock().expect("lock").len(), 2);
        webhook.tidy(Duration::from_millis(100));
        assert!(webhook.lanes[0].is_some(), "used less than 100 ms ago");
        tokio::time::sleep(Duration::from_millis(150)).await;
        webhook.tidy(Duration::from_millis(100));
        assert!(webhook.lanes[0].is_none(), "unused for longer than asked");
    }

    #[tokio::test]
    async fn a_receiver_that_closes_each_connection_after_one_answer_still_gets_every_message_once() {
        let (port, seen) = one_answer_per_connection().await;
        for lanes in [1, 4] {
            seen.lock().expect("lock").clear();
            let mut webhook = Webhook::new(
                &format!("http://127.0.0.1:{port}/hook?x=1"),
                vec![("X-Team".into(), "core".into()), ("Transfer-Encoding".into(), "chunked".into())],
                "secret".into(),
                "s",
                Allow::new(&["127.0.0.1".to_string()]),
                lanes,
            )
            .expect("webhook");
            let messages: Vec<Message> = (1..=30)
                .map(|seq| Message { seq, key: format!("item/i{}", seq % 7).into(), body: Bytes::from_static(b"{}") })
                .collect();
            let page: Vec<&Message> = messages.iter().collect();
            // Two pages: the second starts on the connections the first kept, all closed by then.
            for half in page.chunks(15) {
                let (delivered, outcome) = webhook.send_all(half).await;
                assert!(delivered.iter().all(|d| *d), "{lanes} lanes: {:?}", outcome.error);
            }
            let got = seen.lock().expect("lock").clone();
            let mut seqs: Vec<u64> = got.iter().map(|(seq, _)| *seq).collect();
            seqs.sort_unstable();
            assert_eq!(seqs, (1..=30).collect::<Vec<u64>>(), "{lanes} lanes: each message answered once");
            for (seq, head) in &got {
                assert!(head.starts_with("post /hook?x=1 http/1.1\r\n"), "{seq}: {head}");
                assert!(head.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")), "{seq}: {head}");
                assert!(head.contains("\r\nx-team: core\r\n") && head.contains("\r\ncontent-length: 2\r\n"), "{head}");
                assert!(head.contains("\r\nx-port-signature: v1,") && head.contains("\r\nx-berth-subscription: s\r\n"));
                assert!(
                    !head.contains("transfer-encoding"),
                    "a framing header a subscription names is not sent: {head}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_receiver_that_is_not_there_is_a_failure_that_names_the_connection() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut webhook = Webhook::new(
            &format!("http://127.0.0.1:{port}/hook"),
            Vec::new(),
            "secret".into(),
            "s",
            Allow::new(&["127.0.0.1".to_string()]),
            1,
        )
        .expect("webhook");
        let message = Message { seq: 1, key: "item/a".into(), body: Bytes::from_static(b"{}") };
        let (delivered, outcome) = webhook.send_all(&[&message]).await;
        assert_eq!(delivered, vec![false]);
        assert_eq!(outcome.status, None);
        assert!(outcome.error.as_deref().is_some_and(|e| e.starts_with("connecting:")), "{:?}", outcome.error);
    }

    #[tokio::test]
    async fn a_connection_goes_to_the_first_checked_address_that_answers() {
        let (port, _) = one_answer_per_connection().await;
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let live = SocketAddr::from(([127, 0, 0, 1], port));
        let webhook = Webhook::new(
            &format!("http://localhost:{port}/hook"),
            Vec::new(),
            "secret".into(),
            "s",
            Allow::new(&["localhost".to_string()]),
            1,
        )
        .expect("webhook");
        assert!(webhook.requests.connect(&[dead, live]).await.is_ok(), "the second address answers");
        assert!(webhook.requests.connect(&[dead]).await.is_err_and(|e| e.starts_with("connecting:")));
        assert!(webhook.requests.connect(&[]).await.is_err_and(|e| e.contains("resolves to no address")));
    }

    /// An `https` receiver whose certificate comes from a CA the process does not trust gets nothing, unless
    /// the webhook is told to trust that CA too (`Config.webhook_roots`: the delivery bench's receiver).
    #[tokio::test]
    async fn an_https_receiver_signed_by_a_ca_trusted_only_by_the_webhook_gets_its_messages() {
        // The test certificate, from the test CA (made by scripts/test), which the process's roots do not hold.
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(berth_testkit::tls::server_config(&[])));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&answered);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, count) = (acceptor.clone(), Arc::clone(&count));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut request = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // One request: its head and its two-byte body (`{}`).
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") || !request.ends_with(b"{}") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&chunk[..n]),
                        }
                    }
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let open = || {
            Webhook::new(
                &format!("https://localhost:{port}/hook"),
                Vec::new(),
                "secret".into(),
                "s",
                Allow::new(&["localhost".to_string()]),
                1,
            )
            .expect("webhook")
        };
        let message = Message { seq: 1, key: "item/a".into(), body: Bytes::from_static(b"{}") };
        let (delivered, outcome) = open().send_all(&[&message]).await;
        assert_eq!(delivered, vec![false], "the process does not trust the test CA");
        assert!(outcome.error.as_deref().is_some_and(|e| e.contains("certificate")), "{:?}", outcome.error);
        let mut trusting = open().trusting(&[berth_testkit::tls::ca()]).expect("trusting");
        let (delivered, outcome) = trusting.send_all(&[&message]).await;
        assert_eq!(delivered, vec![true], "{:?}", outcome.error);
        assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_webhook_url_is_http_or_https_with_a_host() {
        let open = |url: &str| Webhook::new(url, Vec::new(), "s".into(), "s", Allow::default(), 1).map(|_| ());
        assert!(open("https://hooks.example.com/x?y=1").is_ok());
        assert!(open("http://[::1]:8080/x").is_ok());
        assert!(open("ftp://hooks.example.com/x").is_err_and(|e| e.contains("http or https")));
        assert!(open("not a url").is_err());
        assert!(
            Webhook::new(
                "https://h.example.com/",
                vec![("X-A".into(), "a\nb".into())],
                "s".into(),
                "s",
                Allow::default(),
                1
            )
            .is_err()
        );
    }
}
