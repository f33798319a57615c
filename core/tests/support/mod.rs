//! What the WebRTC integration tests share: two real `MediaPeer`s connected on loopback.

use std::time::{Duration, Instant};

use conclave_core::media::ConnectionState;
use conclave_core::media::transport::peer::{MediaPeer, PeerConfig, PeerEvent};
use tokio::sync::mpsc::Receiver;

/// One side of a connection and its events.
pub(crate) type Side = (MediaPeer, Receiver<PeerEvent>);

async fn wait_connected(events: &mut Receiver<PeerEvent>) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.recv().await {
            if event == PeerEvent::State(ConnectionState::Connected) {
                return;
            }
        }
        panic!("event stream ended before connecting");
    })
    .await
    .expect("connected within 10 s");
}

/// An offerer and an answerer on 127.0.0.1, negotiated and connected (ICE, DTLS-SRTP).
pub(crate) async fn connected_pair(now: Instant) -> (Side, Side) {
    let config = PeerConfig {
        udp_addrs: vec!["127.0.0.1:0".to_owned()],
        ..PeerConfig::default()
    };
    let (offerer, mut offerer_events) = MediaPeer::new(now, &config).await.unwrap();
    let (answerer, mut answerer_events) = MediaPeer::new(now, &config).await.unwrap();
    let offer = offerer.create_offer().await.unwrap();
    let answer = answerer.accept_offer(offer).await.unwrap();
    offerer.accept_answer(answer, Duration::ZERO).await.unwrap();
    wait_connected(&mut offerer_events).await;
    wait_connected(&mut answerer_events).await;
    ((offerer, offerer_events), (answerer, answerer_events))
}
