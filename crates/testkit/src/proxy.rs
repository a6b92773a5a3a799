//! A TCP proxy in front of a database server, to cut the network between Berth and its store and bring it
//! back: `cut` closes every open connection and refuses new ones; `stall` holds every byte without closing
//! anything (a black hole); `stall_open` holds only the connections open now, so new ones get through (one
//! connection's network path gone silent); `restore` lets everything through again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// One proxied connection: its task and its own stall switch.
struct Link {
    task: tokio::task::JoinHandle<()>,
    stalled: Arc<AtomicBool>,
}

pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    /// While set, nothing is forwarded on any connection and nothing is closed.
    stalled: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<Link>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free local port forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<Link>>> = Arc::default();
        let target = target.to_string();
        let accept = {
            let (up, stalled, open) = (up.clone(), stalled.clone(), open.clone());
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection closed
                    }
                    let own = Arc::new(AtomicBool::new(false));
                    let (target, all, mine) = (target.clone(), stalled.clone(), own.clone());
                    let task = tokio::spawn(async move {
                        if let Ok(outbound) = tokio::net::TcpStream::connect(&target).await {
                            let (in_read, in_write) = inbound.into_split();
                            let (out_read, out_write) = outbound.into_split();
                            let up_stream = tokio::spawn(pipe(in_read, out_write, all.clone(), mine.clone()));
                            pipe(out_read, in_write, all, mine).await;
                            up_stream.abort();
                        }
                    });
                    open.lock().expect("lock").push(Link { task, stalled: own });
                }
            })
        };
        Proxy { port, up, stalled, open, accept }
    }

    /// Stops forwarding without closing anything (packets vanish); `restore` resumes.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding on the connections open now, closing nothing; new connections get through.
    pub fn stall_open(&self) {
        for link in self.open.lock().expect("lock").iter() {
            link.stalled.store(true, Ordering::SeqCst);
        }
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.open.lock().expect("lock").drain(..) {
            link.task.abort();
        }
    }

    /// Forwards everything again: what a stall held goes on its way.
    pub fn restore(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        for link in self.open.lock().expect("lock").iter() {
            link.stalled.store(false, Ordering::SeqCst);
        }
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Copies one direction of a proxied connection, holding everything while either switch is set.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, all: Arc<AtomicBool>, mine: Arc<AtomicBool>) {
    let hold = || async {
        while all.load(Ordering::SeqCst) || mine.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        hold().await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        hold().await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
