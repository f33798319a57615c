//! TURN over TCP and over TLS for networks that drop UDP, in front of webrtc-rs' UDP-only
//! TURN client.
//!
//! webrtc-rs 0.21 allocates TURN relays over UDP only (`transport=tcp` and `turns:` URLs
//! are skipped). A [`TcpTurnBridge`] listens on a loopback UDP port and carries each
//! datagram of a local TURN client over its own TCP connection to the TURN server (RFC 8656
//! §3.1: one TCP connection per client 5-tuple), and the server's messages back; with a
//! [`CertificatePin`] that connection is TLS to the server holding the pinned certificate
//! ([`super::turn_tls`]; a server with another certificate is refused). ICE is then given
//! `turn:127.0.0.1:<bridge port>` instead of `turn:<server>?transport=tcp` or
//! `turns:<server>`; the relayed candidates it learns are the server's, exactly as over
//! UDP. The bridge sees only TURN framing (STUN messages and ChannelData around
//! DTLS-SRTP), never media keys.
//!
//! [`StreamFramer`] (sans-IO) splits the TCP byte stream back into messages: a STUN message
//! is 20 bytes plus its length field; a ChannelData message 4 bytes plus its length, padded
//! to a multiple of four on a stream (RFC 8656 §12.5).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::turn_tls;
use crate::proto::turn::CertificatePin;

/// Largest message accepted from the stream (a STUN/ChannelData length is 16 bits).
pub const MAX_MESSAGE: usize = 4 + 0xffff + 3;
/// Datagrams queued towards one TCP connection before new ones are dropped (UDP semantics).
pub const QUEUE: usize = 256;
/// How long connecting to the server (TCP and TLS handshakes) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a server failed the pin (or the TLS handshake), new connections through the bridge
/// wait this long: the local TURN client's retransmissions would each try again.
pub const REFUSED_PAUSE: Duration = Duration::from_secs(10);

/// Errors of the stream framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// The first two bits are neither STUN (00) nor ChannelData (01).
    #[error("not a STUN or ChannelData message (first byte {0:#04x})")]
    NotTurn(u8),
}

/// Splits a TURN-over-TCP byte stream into messages.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buffer: Vec<u8>,
}

impl StreamFramer {
    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message (without stream padding), if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let length = usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]]));
        let (message, padded) = match self.buffer[0] >> 6 {
            0b00 => (20 + length, 20 + length),
            0b01 => (4 + length, (4 + length).next_multiple_of(4)),
            _ => return Err(FramingError::NotTurn(self.buffer[0])),
        };
        if self.buffer.len() < padded {
            return Ok(None);
        }
        let rest = self.buffer.split_off(padded);
        let mut message_bytes = std::mem::replace(&mut self.buffer, rest);
        message_bytes.truncate(message);
        Ok(Some(message_bytes))
    }
}

/// Pads a ChannelData message to a multiple of four for a stream; STUN messages already are.
pub fn pad_for_stream(datagram: &mut Vec<u8>) {
    if datagram.first().is_some_and(|b| b >> 6 == 0b01) {
        let padded = datagram.len().next_multiple_of(4);
        datagram.resize(padded, 0);
    }
}

/// Where a bridge carries its clients: a TURN server's TCP address, and for TLS the pin
/// of its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BridgeTarget {
    /// The server as `HOST:PORT`: an IP address (IPv6 in brackets) or a host name, resolved
    /// at each connection.
    pub server: String,
    /// TLS to the server holding this certificate; plain TCP when `None`.
    pub tls: Option<CertificatePin>,
}

/// How ICE uses one URL of an ICE server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlUse {
    /// As it is (STUN, TURN over UDP).
    AsIs,
    /// Through a bridge to this target.
    Bridge(BridgeTarget),
    /// Not at all, and why.
    Skip(&'static str),
}

/// How ICE uses each URL of a server whose `turns:` URLs present the certificate `tls_pin`.
/// TURN over TCP and over TLS go through bridges (a host, IP or name, and a port; TLS also
/// a pin).
/// With a usable `turns:` URL, the plain `turn:…?transport=tcp` URLs are skipped: TLS
/// carries the same and hides the username, and each bridged URL costs the server one
/// allocation per connection.
pub fn url_uses(urls: &[String], tls_pin: Option<CertificatePin>) -> Vec<UrlUse> {
    let mut uses: Vec<UrlUse> = urls.iter().map(|url| url_use(url, tls_pin)).collect();
    let has_tls = uses
        .iter()
        .any(|u| matches!(u, UrlUse::Bridge(t) if t.tls.is_some()));
    if has_tls {
        for url_use in &mut uses {
            if matches!(url_use, UrlUse::Bridge(t) if t.tls.is_none()) {
                *url_use = UrlUse::Skip("TURN over TLS is used instead of TCP");
            }
        }
    }
    uses
}

fn url_use(url: &str, tls_pin: Option<CertificatePin>) -> UrlUse {
    let (rest, tls) = if let Some(rest) = url.strip_prefix("turns:") {
        (rest, true)
    } else if let Some(rest) = url.strip_prefix("turn:") {
        match rest.strip_suffix("?transport=tcp") {
            Some(rest) => (rest, false),
            None => return UrlUse::AsIs,
        }
    } else {
        return UrlUse::AsIs;
    };
    let server = rest.strip_suffix("?transport=tcp").unwrap_or(rest);
    let valid = server.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) && !host.contains('?')
    });
    if !valid {
        return UrlUse::Skip("TURN over TCP or TLS needs a host and a port");
    }
    let server = server.to_owned();
    match (tls, tls_pin) {
        (false, _) => UrlUse::Bridge(BridgeTarget { server, tls: None }),
        (true, Some(pin)) => UrlUse::Bridge(BridgeTarget {
            server,
            tls: Some(pin),
        }),
        (true, None) => UrlUse::Skip("TURN over TLS without a pinned certificate"),
    }
}

/// How a bridge reaches its server: the address, the pinned TLS client if any, and whether
/// the server was just refused (new connections wait [`REFUSED_PAUSE`]).
#[derive(Clone)]
struct Upstream {
    server: String,
    tls: Option<TlsConnector>,
    refused: Arc<AtomicBool>,
}

impl Upstream {
    /// The server failed the pin or the handshake: warns the first time, and pauses new
    /// connections for [`REFUSED_PAUSE`] (a timer clears the pause; no clock is read).
    fn refuse(&self, why: &str) {
        if self.refused.swap(true, Ordering::Relaxed) {
            debug!(server = %self.server, why, "TURN over TLS refused again");
            return;
        }
        warn!(
            server = %self.server,
            why,
            "TURN over TLS refused: the server's certificate is not the pinned one, or the \
             handshake failed; trying again in {REFUSED_PAUSE:?}"
        );
        let refused = Arc::clone(&self.refused);
        tokio::spawn(async move {
            tokio::time::sleep(REFUSED_PAUSE).await;
            refused.store(false, Ordering::Relaxed);
        });
    }
}

/// A loopback UDP port that relays local TURN clients to a TURN server over TCP or TLS.
#[derive(Debug)]
pub struct TcpTurnBridge {
    local: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for TcpTurnBridge {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TcpTurnBridge {
    /// Binds `127.0.0.1:0` and starts relaying to `target`.
    pub async fn start(target: BridgeTarget) -> std::io::Result<Self> {
        let tls = target
            .tls
            .map(turn_tls::pinned_connector)
            .transpose()
            .map_err(std::io::Error::other)?;
        let upstream = Upstream {
            server: target.server,
            tls,
            refused: Arc::new(AtomicBool::new(false)),
        };
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let local = socket.local_addr()?;
        let cancel = CancellationToken::new();
        tokio::spawn(run(socket, upstream, cancel.clone()));
        Ok(Self { local, cancel })
    }

    /// The UDP address to give ICE as the TURN server.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn run(socket: Arc<UdpSocket>, upstream: Upstream, cancel: CancellationToken) {
    let mut clients: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let (len, client) = tokio::select! {
            () = cancel.cancelled() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(err) => {
                    warn!(error = %err, "TURN bridge socket failed");
                    return;
                }
            },
        };
        clients.retain(|_, tx| !tx.is_closed());
        if !clients.contains_key(&client) && upstream.refused.load(Ordering::Relaxed) {
            debug!(%client, "TURN bridge paused after a refusal; datagram dropped");
            continue;
        }
        let tx = clients.entry(client).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(connection(
                Arc::clone(&socket),
                client,
                upstream.clone(),
                rx,
                cancel.child_token(),
            ));
            tx
        });
        if tx.try_send(buffer[..len].to_vec()).is_err() {
            debug!(%client, "TURN bridge queue full; datagram dropped");
        }
    }
}

/// One local client's connection to the server.
async fn connection(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    upstream: Upstream,
    datagrams: mpsc::Receiver<Vec<u8>>,
    cancel: CancellationToken,
) {
    let server = upstream.server.as_str();
    let connected = tokio::select! {
        () = cancel.cancelled() => return,
        connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server)) => connected,
    };
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            warn!(%server, error = %err, "cannot reach the TURN server over TCP");
            return;
        }
        Err(_) => {
            warn!(%server, "cannot reach the TURN server over TCP: timed out");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let Some(connector) = &upstream.tls else {
        return carry(stream, &socket, client, datagrams, &cancel).await;
    };
    let handshake = tokio::select! {
        () = cancel.cancelled() => return,
        handshake = tokio::time::timeout(
            CONNECT_TIMEOUT,
            turn_tls::connect(connector, server, stream),
        ) => handshake,
    };
    match handshake {
        Ok(Ok(tls)) => carry(tls, &socket, client, datagrams, &cancel).await,
        Ok(Err(err)) => upstream.refuse(&err.to_string()),
        Err(_) => upstream.refuse("the handshake timed out"),
    }
}

/// Carries `client`'s datagrams onto `stream` and the server's messages back.
async fn carry<S: AsyncRead + AsyncWrite>(
    stream: S,
    socket: &UdpSocket,
    client: SocketAddr,
    mut datagrams: mpsc::Receiver<Vec<u8>>,
    cancel: &CancellationToken,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut framer = StreamFramer::default();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            datagram = datagrams.recv() => {
                let Some(mut datagram) = datagram else { return };
                pad_for_stream(&mut datagram);
                if let Err(err) = writer.write_all(&datagram).await {
                    debug!(error = %err, "TURN TCP connection closed");
                    return;
                }
            }
            read = reader.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                framer.push(&chunk[..n]);
                loop {
                    match framer.next_message() {
                        Ok(Some(message)) => {
                            let _ = socket.send_to(&message, client).await;
                        }
                        Ok(None) => break,
                        Err(err) => {
                            warn!(error = %err, "TURN server sent garbage; connection dropped");
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(length: u16) -> Vec<u8> {
        let mut message = vec![0x00, 0x01];
        message.extend_from_slice(&length.to_be_bytes());
        message.extend(std::iter::repeat_n(7u8, 16 + usize::from(length)));
        message
    }

    fn channel_data(length: u16) -> Vec<u8> {
        let mut message = vec![0x40, 0x00];
        message.extend_from_slice(&length.to_be_bytes());
        message.extend(std::iter::repeat_n(9u8, usize::from(length)));
        message
    }

    #[test]
    fn messages_are_split_whatever_the_chunking() {
        let messages = [
            stun(8),
            channel_data(5),
            channel_data(8),
            stun(0),
            channel_data(1),
        ];
        let mut stream = Vec::new();
        for message in &messages {
            let mut padded = message.clone();
            pad_for_stream(&mut padded);
            stream.extend(padded);
        }
        for chunk_size in [1, 3, 7, 64] {
            let mut framer = StreamFramer::default();
            let mut out = Vec::new();
            for chunk in stream.chunks(chunk_size) {
                framer.push(chunk);
                while let Some(message) = framer.next_message().unwrap() {
                    out.push(message);
                }
            }
            assert_eq!(out, messages, "chunks of {chunk_size}");
        }
    }

    #[test]
    fn tls_urls_are_bridged_with_their_pin_and_replace_plain_tcp() {
        let pin = CertificatePin::of(b"relay certificate");
        let urls: Vec<String> = [
            "stun:198.51.100.7:3478",
            "turn:198.51.100.7:3478?transport=udp",
            "turn:198.51.100.7:3478?transport=tcp",
            "turns:198.51.100.7:443?transport=tcp",
            "turns:turn.example.org:443?transport=tcp",
        ]
        .map(String::from)
        .to_vec();
        let tls = BridgeTarget {
            server: "198.51.100.7:443".into(),
            tls: Some(pin),
        };
        let named = BridgeTarget {
            server: "turn.example.org:443".into(),
            tls: Some(pin),
        };
        assert_eq!(
            url_uses(&urls, Some(pin)),
            [
                UrlUse::AsIs,
                UrlUse::AsIs,
                UrlUse::Skip("TURN over TLS is used instead of TCP"),
                UrlUse::Bridge(tls),
                UrlUse::Bridge(named),
            ]
        );
        let without_pin = url_uses(&urls, None);
        assert_eq!(
            without_pin[2],
            UrlUse::Bridge(BridgeTarget {
                server: "198.51.100.7:3478".into(),
                tls: None,
            })
        );
        assert_eq!(
            without_pin[3],
            UrlUse::Skip("TURN over TLS without a pinned certificate")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_hang() {
        let mut framer = StreamFramer::default();
        framer.push(&[0xff, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(framer.next_message(), Err(FramingError::NotTurn(0xff)));
    }
}
