//! A standard TURN client (the `turn` crate's) run from inside a network namespace, over
//! UDP or TCP, and UDP listeners that record what reaches them: the tools of the relay's
//! peer-policy and TCP-limit tests (`tests/tests/system/relay_policy.rs`).
//!
//! - [`in_namespace`] runs a closure on a thread that entered a namespace (`setns`), so
//!   every socket it opens lives there; [`block_on_in`] runs async code that way.
//! - [`Tap`] is the UDP socket under a TURN client: it remembers the client's NONCE and can
//!   send a hand-built request on the client's 5-tuple (e.g. a ChannelBind the client
//!   would never send) and return its answer.
//! - [`TcpConn`] frames STUN and ChannelData over one TCP connection (RFC 6062 framing,
//!   read with the relay's own codec, `conclave_relay::turn::read_tcp_frame`) for a TURN
//!   client over TCP.
//! - [`UdpSink`] counts datagrams per listening address, optionally echoing them.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use conclave_relay::turn::{decode_stun, read_tcp_frame};
use stun::attributes::ATTR_NONCE;
use stun::message::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use webrtc_util::Conn;

/// Runs `f` on a new thread inside network namespace `ns` (as named by `ip netns`) and
/// returns its result; a panic in `f` is re-raised here.
pub fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    match spawn_in(ns, f).join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Starts `f` on a new thread inside namespace `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<anyhow::Result<T>> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("enter {path}"))?;
        Ok(f())
    })
}

/// Runs the future `f()` makes on a single-threaded runtime inside namespace `ns`.
pub fn block_on_in<F, Fut, T>(ns: &str, f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    in_namespace(ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("runtime")?;
        Ok(runtime.block_on(f()))
    })?
}

/// Raises this process's soft limit of open files to `want` (or the hard limit, if lower);
/// returns the limit in effect. Children inherit it.
pub fn raise_open_files(want: u64) -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    let target = want.min(hard);
    if soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard).context("setrlimit")?;
    }
    Ok(target.max(soft))
}

/// `GET path` over HTTP/1.1 from the current namespace; the whole answer.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut stream =
        std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// The value of one series (`name{labels}`) in an OpenMetrics exposition, 0 if absent.
pub fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Credentials and server of a TURN client.
#[derive(Debug, Clone)]
pub struct Login {
    /// The TURN server.
    pub server: SocketAddr,
    /// REST-API username.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl Login {
    /// Credentials for `identity` under the relay's `secret`, valid ten minutes.
    pub fn mint(server: SocketAddr, secret: &str, identity: &str) -> Self {
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 600;
        let username = format!("{expires}:{identity}");
        let password = conclave_relay::access::password_for(secret.trim().as_bytes(), &username);
        Self {
            server,
            username,
            password,
        }
    }

    /// A listening TURN client on `conn`.
    pub async fn client(
        &self,
        conn: Arc<dyn Conn + Send + Sync>,
    ) -> anyhow::Result<turn::client::Client> {
        let addr = self.server.to_string();
        let client = turn::client::Client::new(turn::client::ClientConfig {
            stun_serv_addr: addr.clone(),
            turn_serv_addr: addr,
            username: self.username.clone(),
            password: self.password.clone(),
            realm: "conclave".into(),
            software: String::new(),
            rto_in_ms: 0,
            conn,
            vnet: None,
        })
        .await
        .context("TURN client")?;
        client.listen().await.context("TURN client listens")?;
        Ok(client)
    }
}

type Waiting = Mutex<HashMap<[u8; 12], oneshot::Sender<Message>>>;

/// The UDP socket under a TURN client, which can also send hand-built requests on the
/// client's 5-tuple.
#[derive(Debug)]
pub struct Tap {
    socket: UdpSocket,
    nonce: Mutex<Option<String>>,
    waiting: Waiting,
}

impl Tap {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            socket: UdpSocket::bind(addr)
                .await
                .with_context(|| format!("bind {addr}"))?,
            nonce: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
        }))
    }

    /// The NONCE the client last sent (after its first authenticated request).
    pub fn nonce(&self) -> Option<String> {
        self.nonce.lock().ok()?.clone()
    }

    /// Sends `request` to `server` and waits (at most 5 s) for its answer.
    pub async fn request(&self, request: &Message, server: SocketAddr) -> anyhow::Result<Message> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .map_err(|_| anyhow!("tap poisoned"))?
            .insert(request.transaction_id.0, tx);
        self.socket.send_to(&request.raw, server).await?;
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .context("no answer within 5 s")?
            .context("tap closed")
    }
}

#[async_trait]
impl Conn for Tap {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.recv(buf).await?)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if let Some(msg) = decode_stun(&buf[..n]) {
                let waiter = self
                    .waiting
                    .lock()
                    .ok()
                    .and_then(|mut w| w.remove(&msg.transaction_id.0));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(msg);
                    continue;
                }
            }
            return Ok((n, from));
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if let Some(msg) = decode_stun(buf)
            && let Ok(nonce) = stun::textattrs::TextAttribute::get_from_as(&msg, ATTR_NONCE)
            && let Ok(mut slot) = self.nonce.lock()
        {
            *slot = Some(nonce.text);
        }
        Ok(self.socket.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// One TCP connection to a TURN server, framed for a TURN client (STUN messages and padded
/// ChannelData back to back).
#[derive(Debug)]
pub struct TcpConn {
    server: SocketAddr,
    local: SocketAddr,
    write: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    frames: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
}

impl TcpConn {
    /// Connects to `server` from `local` (port 0: any).
    pub async fn connect(local: SocketAddr, server: SocketAddr) -> anyhow::Result<Arc<Self>> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(local)?;
        let stream: TcpStream = socket
            .connect(server)
            .await
            .with_context(|| format!("connect {server}"))?;
        let local = stream.local_addr()?;
        let (mut read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            // Framed by the relay's own codec; ends with the stream or at a framing error.
            while let Ok(frame) = read_tcp_frame(&mut read).await {
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
        Ok(Arc::new(Self {
            server,
            local,
            write: tokio::sync::Mutex::new(write),
            frames: tokio::sync::Mutex::new(rx),
        }))
    }
}

#[async_trait]
impl Conn for TcpConn {
    async fn connect(&self, _: SocketAddr) -> webrtc_util::Result<()> {
        Ok(())
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let frame = self
            .frames
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| webrtc_util::Error::Other("TCP connection closed".into()))?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok((n, self.server))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.write.lock().await.write_all(buf).await?;
        Ok(buf.len())
    }

    async fn send_to(&self, buf: &[u8], _: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.server)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// What each listening address received: sender and payload of each datagram, in order.
pub type Received = HashMap<SocketAddr, Vec<(SocketAddr, Vec<u8>)>>;

/// UDP listeners in one namespace, counting what reaches them until stopped.
#[derive(Debug)]
pub struct UdpSink {
    stop: Arc<AtomicBool>,
    tally: Tally,
    thread: Option<JoinHandle<anyhow::Result<anyhow::Result<Received>>>>,
}

/// What a [`UdpSink`] has received so far, readable while it runs (from any thread), so a
/// test can wait for datagrams instead of sleeping.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<Mutex<Received>>);

impl Tally {
    /// How many datagrams carrying `payload` reached `to` from `from` so far.
    pub fn count(&self, to: SocketAddr, from: SocketAddr, payload: &[u8]) -> usize {
        self.0.lock().map_or(0, |received| {
            received.get(&to).map_or(0, |datagrams| {
                datagrams
                    .iter()
                    .filter(|(src, p)| *src == from && p == payload)
                    .count()
            })
        })
    }

    fn record(&self, to: SocketAddr, from: SocketAddr, payload: &[u8]) {
        if let Ok(mut received) = self.0.lock() {
            received
                .entry(to)
                .or_default()
                .push((from, payload.to_vec()));
        }
    }
}

impl UdpSink {
    /// Listens on every address of `addrs` inside `ns`; with `echo`, sends each datagram
    /// back to its sender.
    pub fn start(ns: &str, addrs: &[SocketAddr], echo: bool) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let addrs = addrs.to_vec();
        let flag = Arc::clone(&stop);
        let tally = Tally::default();
        let seen = tally.clone();
        let thread = spawn_in(ns, move || -> anyhow::Result<Received> {
            let bound: anyhow::Result<Vec<std::net::UdpSocket>> = addrs
                .iter()
                .map(|addr| {
                    let socket =
                        std::net::UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
                    socket.set_nonblocking(true)?;
                    Ok(socket)
                })
                .collect();
            let sockets = match bound {
                Ok(sockets) => {
                    let _ = ready_tx.send(Ok(()));
                    sockets
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(format!("{err:#}")));
                    return Err(err);
                }
            };
            let mut received: Received = addrs.iter().map(|a| (*a, Vec::new())).collect();
            let mut buf = [0u8; 2048];
            // Bounded: the test stops it; at most ten minutes anyway.
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                let mut idle = true;
                for (socket, addr) in sockets.iter().zip(&addrs) {
                    while let Ok((n, from)) = socket.recv_from(&mut buf) {
                        idle = false;
                        received
                            .entry(*addr)
                            .or_default()
                            .push((from, buf[..n].to_vec()));
                        seen.record(*addr, from, &buf[..n]);
                        if echo {
                            let _ = socket.send_to(&buf[..n], from);
                        }
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Ok(received)
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Self {
                stop,
                tally,
                thread: Some(thread),
            }),
            Ok(Err(err)) => Err(anyhow!("UDP sink in {ns}: {err}")),
            Err(_) => Err(anyhow!("UDP sink in {ns} did not start")),
        }
    }

    /// What it has received so far, as it goes on.
    pub fn tally(&self) -> Tally {
        self.tally.clone()
    }

    /// Stops listening; what each address received.
    pub fn stop(mut self) -> anyhow::Result<Received> {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread.take().context("stopped once")?;
        match thread.join() {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
