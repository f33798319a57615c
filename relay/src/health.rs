//! The relay's HTTP endpoint: `GET /healthz` (health check) and `GET /metrics` (Prometheus).
//!
//! A deliberately tiny HTTP/1.1 server: one request per connection, request head at most
//! [`MAX_HEAD`] bytes read within [`READ_TIMEOUT`], at most [`MAX_CONNECTIONS`] served at
//! once, `Connection: close` on every answer. Bind it to a private interface: it has no
//! authentication (the metrics reveal traffic volumes, never keys or addresses).
//!
//! `/healthz` answers `200 ok` while the libp2p node's loop runs (the TURN server, when
//! enabled, has started before the endpoint binds), and `503` naming what stopped otherwise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// Longest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 32;

/// Liveness of the relay's parts, set by each part.
#[derive(Debug, Default)]
pub struct Health {
    /// The libp2p node's loop runs.
    pub node: AtomicBool,
    /// The TURN listeners run (or TURN is disabled).
    pub turn: AtomicBool,
}

impl Health {
    /// `None` when healthy, else what is down.
    pub fn problem(&self) -> Option<&'static str> {
        if !self.node.load(Ordering::Relaxed) {
            Some("libp2p node stopped")
        } else if !self.turn.load(Ordering::Relaxed) {
            Some("TURN server stopped")
        } else {
            None
        }
    }
}

/// Binds `addr` and serves until `cancel`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(addr = %local, "metrics and health endpoint listening");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                permit = Arc::clone(&slots).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        debug!(error = %err, "accept failed");
                        continue;
                    }
                },
            };
            let (metrics, health) = (Arc::clone(&metrics), Arc::clone(&health));
            tokio::spawn(async move {
                if let Err(err) = answer(stream, &metrics, &health).await {
                    debug!(%peer, error = %err, "HTTP request failed");
                }
                drop(permit);
            });
        }
    });
    Ok(local)
}

async fn answer(mut stream: TcpStream, metrics: &Metrics, health: &Health) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    match read {
        Ok(result) => result?,
        Err(_) => return Ok(()),
    }
    let (status, content_type, body) = route(&head, metrics, health);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Status line, content type and body for a request head.
fn route(head: &[u8], metrics: &Metrics, health: &Health) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    match (method, path) {
        (Some(b"GET"), Some(b"/healthz")) => match health.problem() {
            None => ("200 OK", TEXT, "ok\n".into()),
            Some(problem) => ("503 Service Unavailable", TEXT, format!("{problem}\n")),
        },
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (Some(b"GET"), _) => ("404 Not Found", TEXT, "not found\n".into()),
        _ => ("400 Bad Request", TEXT, "bad request\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let metrics = Metrics::new();
        let health = Health::default();
        let (status, _, body) = route(b"GET /healthz HTTP/1.1\r\n\r\n", &metrics, &health);
        assert_eq!(
            (status, body.as_str()),
            ("503 Service Unavailable", "libp2p node stopped\n")
        );
        health.node.store(true, Ordering::Relaxed);
        health.turn.store(true, Ordering::Relaxed);
        let (status, _, _) = route(b"GET /healthz HTTP/1.1\r\n\r\n", &metrics, &health);
        assert_eq!(status, "200 OK");
        let (status, _, body) = route(b"GET /metrics HTTP/1.1\r\n\r\n", &metrics, &health);
        assert_eq!(status, "200 OK");
        assert!(body.contains("conclave_relay_turn_allocations"));
        assert_eq!(
            route(b"GET /x HTTP/1.1\r\n", &metrics, &health).0,
            "404 Not Found"
        );
        assert_eq!(route(b"\xff\x00", &metrics, &health).0, "400 Bad Request");
    }
}
