//! Video over a real WebRTC connection on loopback (webrtc-rs: ICE, DTLS-SRTP, its VP8
//! payloader and interceptors): SFrame-sealed VP8 frames of testsrc cross packetized, are
//! put back together, open and decode to the picture sent; no RTP payload carries VP8 in
//! the clear; every packet carries the frame information a forwarding unit needs
//! (keyframe, number) outside the seal; a shared screen crosses beside the camera on its
//! own track, each arriving tagged with its kind; a keyframe request (RTCP PLI) from the
//! receiver reaches the sender for the video it names; and transport-wide feedback gives
//! the sender a bandwidth estimate.

mod support;

use std::time::Instant;

use conclave_core::group::media_keys::sender_base_key;
use conclave_core::media::crypto::keyring::Opener;
use conclave_core::media::transport::peer::PeerEvent;
use conclave_core::media::video::VideoKind;
use conclave_core::media::video::receiver::VideoReceiver;
use conclave_core::media::video::sender::VideoSender;
use conclave_core::media::video::source::StampedTestSource;
use conclave_core::media::video::testsrc::read_stamp;

#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_vp8_crosses_a_real_webrtc_connection_and_keyframes_can_be_asked_for() {
    let start = now();
    let ((offerer, mut offerer_events), (answerer, mut answerer_events)) =
        support::connected_pair(start).await;

    let secret = [5u8; 32];
    let mut video = VideoSender::new(Box::new(StampedTestSource::new(640, 360).unwrap())).unwrap();
    video.install(3, 1, &sender_base_key(&secret, 1)).unwrap();
    let mut opener = Opener::default();
    opener.install(start, 3, secret);
    let mut receiver = VideoReceiver::new(start).unwrap();
    let mut screen = VideoSender::of_kind(
        VideoKind::Screen,
        Box::new(StampedTestSource::new(320, 180).unwrap()),
    )
    .unwrap();
    screen.install(3, 1, &sender_base_key(&secret, 1)).unwrap();
    let mut screen_receiver = VideoReceiver::for_kind(start, VideoKind::Screen).unwrap();
    let mut screen_shown = 0;
    let mut screen_requests_heard = 0;

    let interval = video.frame_interval();
    let mut ticker = tokio::time::interval(interval);
    let mut shown = Vec::new();
    let mut keyframes_sent = 0;
    let mut requests_heard = 0;
    let mut packets = 0;
    let mut sent_keyframes = std::collections::BTreeSet::new();
    let mut seen_keyframes = std::collections::BTreeSet::new();
    for n in 0..60u64 {
        ticker.tick().await;
        let frame = video.capture(now(), n * 33).unwrap().expect("a frame");
        keyframes_sent += u32::from(frame.keyframe);
        assert_eq!(frame.info.number, n as u16);
        if frame.keyframe {
            sent_keyframes.insert(frame.info.number);
        }
        offerer
            .send_video(VideoKind::Camera, now(), frame.sealed, interval, frame.info)
            .await
            .unwrap();
        if let Some(frame) = screen.capture(now(), n * 33).unwrap() {
            offerer
                .send_video(VideoKind::Screen, now(), frame.sealed, interval, frame.info)
                .await
                .unwrap();
        }
        // What arrived so far.
        while let Ok(event) = answerer_events.try_recv() {
            if let PeerEvent::VideoPacket {
                seq,
                timestamp,
                marker,
                payload,
                info,
                kind,
            } = event
            {
                if kind == VideoKind::Screen {
                    let got = screen_receiver.push(
                        now(),
                        0,
                        &mut opener,
                        1,
                        (seq, timestamp, marker, &payload),
                    );
                    screen_shown += got.pictures.len();
                    continue;
                }
                packets += 1;
                let info = info.expect("every video packet carries the frame information");
                if info.keyframe {
                    seen_keyframes.insert(info.number);
                }
                assert!(
                    !payload.windows(3).any(|w| w == [0x9d, 0x01, 0x2a]),
                    "VP8 keyframe start code in the clear"
                );
                let got =
                    receiver.push(now(), 0, &mut opener, 1, (seq, timestamp, marker, &payload));
                for picture in got.pictures {
                    shown.push(read_stamp(&picture.image).expect("stamped").frame);
                }
            }
        }
        while let Ok(event) = offerer_events.try_recv() {
            match event {
                PeerEvent::KeyframeRequested(VideoKind::Camera) => {
                    requests_heard += 1;
                    video.request_keyframe(now());
                }
                PeerEvent::KeyframeRequested(VideoKind::Screen) => screen_requests_heard += 1,
                _ => {}
            }
        }
        if n == 30 {
            answerer.request_keyframe(VideoKind::Camera).await.unwrap();
        }
        if n == 40 {
            answerer.request_keyframe(VideoKind::Screen).await.unwrap();
        }
    }
    assert!(packets > 60, "only {packets} packets: frames span several");
    assert!(
        shown.len() >= 50,
        "only {} of 60 pictures shown: {shown:?}",
        shown.len()
    );
    assert!(shown.windows(2).all(|w| w[0] < w[1]), "in order: {shown:?}");
    assert!(
        screen_shown >= 50,
        "only {screen_shown} of 60 screen pictures shown"
    );
    assert_eq!(
        screen_receiver.counts().undecryptable,
        0,
        "the screen's frames open as the screen's"
    );
    assert!(requests_heard >= 1, "the PLI reached the sender");
    assert!(
        screen_requests_heard >= 1,
        "the screen's PLI reached the sender as the screen's"
    );
    assert!(keyframes_sent >= 2, "and it answered with a keyframe");
    // The keyframes a forwarding unit sees without keys are the ones sent (those that
    // arrived before the end).
    assert!(seen_keyframes.len() >= 2 && seen_keyframes.is_subset(&sent_keyframes));
    // Two seconds of video brought transport-wide feedback back: the sender has an
    // estimate of the path (loopback: at least what 360p needs).
    let estimate = offerer
        .send_estimate()
        .expect("TWCC feedback reached the sender's estimator");
    assert!(estimate.bps >= 800_000.0, "{estimate:?}");
    assert!(estimate.loss < 0.01, "{estimate:?}");
    offerer.close().await.unwrap();
    answerer.close().await.unwrap();
}
