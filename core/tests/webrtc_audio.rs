//! A real WebRTC connection on loopback (webrtc-rs: ICE, DTLS-SRTP) carrying SFrame-sealed
//! Opus frames: every frame arrives, opens with the MLS-derived key, decodes, and the RTP
//! payloads never contain the Opus bytes in the clear (the SFrame layer is really applied,
//! not only DTLS).

mod support;

use std::time::{Duration, Instant};

use conclave_core::group::media_keys::sender_base_key;
use conclave_core::media::audio::codec::{Decoder, Encoder};
use conclave_core::media::audio::source::{AudioSource, Tone};
use conclave_core::media::audio::{FRAME_SAMPLES, Frame};
use conclave_core::media::crypto::keyring::Opener;
use conclave_core::media::crypto::sframe::Sealer;
use conclave_core::media::transport::peer::PeerEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_opus_crosses_a_real_webrtc_connection() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let ((offerer, _offerer_events), (answerer, mut answerer_events)) =
        support::connected_pair(now).await;

    let secret = [3u8; 32];
    let mut sealer = Sealer::new(4);
    sealer.install(2, 4, &sender_base_key(&secret, 4)).unwrap();
    let mut opener = Opener::default();
    opener.install(now, 2, secret);
    let mut encoder = Encoder::new().unwrap();
    let mut decoder = Decoder::new().unwrap();
    let mut tone = Tone::new(440.0, 0.3);

    let mut packets = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..50 {
        ticker.tick().await;
        let mut pcm: Frame = [0; FRAME_SAMPLES];
        tone.next_frame(&mut pcm);
        let packet = encoder.encode(&pcm).unwrap();
        #[allow(clippy::disallowed_methods)]
        let sent_at = Instant::now();
        offerer
            .send(sent_at, sealer.seal(&packet).unwrap())
            .await
            .unwrap();
        packets.push(packet);
    }

    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(event) = answerer_events.recv().await {
            if let PeerEvent::Frame { payload, seq, .. } = event {
                received.push((seq, payload));
                if received.len() == packets.len() {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        received.len() >= 45,
        "only {} of 50 frames arrived",
        received.len()
    );
    for (seq, payload) in &received {
        for packet in packets.iter().filter(|p| p.len() >= 8) {
            assert!(
                !payload
                    .windows(packet.len())
                    .any(|w| w == packet.as_slice()),
                "frame {seq} carries Opus in the clear"
            );
        }
        let opened = opener
            .open(now, payload)
            .expect("the frame opens with the sender's MLS-derived key");
        assert_eq!(opened.sender, 4);
        let mut pcm: Frame = [0; FRAME_SAMPLES];
        decoder
            .decode(&opened.payload, &mut pcm)
            .expect("Opus decodes");
        assert!(packets.contains(&opened.payload));
    }
    offerer.close().await.unwrap();
    answerer.close().await.unwrap();
}
