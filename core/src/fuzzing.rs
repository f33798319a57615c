//! Fuzz targets: what must hold for every input that can reach Conclave from the network or
//! from a user, whatever the bytes.
//!
//! Each [`Target`] takes arbitrary bytes and says whether they were *accepted* (decoded into
//! a message, opened, parsed). No input may panic, and what is accepted must keep the
//! target's invariants — a decoded message encodes back to the same message, an opened media
//! frame is refused the second time, a description stripped of its reflexive candidates has
//! none left, a reassembled video frame is bounded — checked with `assert!`, so that the fuzzer reports a violation as a crash.
//!
//! The targets run three ways:
//! - `make fuzz`: cargo-fuzz (libFuzzer) on each target for a fixed time (`core/fuzz`,
//!   `relay/fuzz`), growing its corpus in `core/fuzz/corpus/<target>`;
//! - `make test`: every corpus file is replayed through its target
//!   (`core/tests/fuzz_corpora.rs`, `relay/tests/fuzz_corpora.rs`), so a crash the fuzzer
//!   once found and whose input was kept stays fixed;
//! - [`Target::seeds`]: valid examples of every message, which start each corpus (written by
//!   `make fuzz`) and are replayed with it.
//!
//! Not public API: the fuzz crates and the replay tests are its only users.

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::group::epoch_proof::{AUTHENTICATOR_HASH_LEN, SIGNATURE_LEN};
use crate::group::media_keys::{NH, sender_base_key};
use crate::invite::{Invite, MeetingId};
use crate::media::crypto::MediaError;
use crate::media::crypto::keyring::Opener;
use crate::media::crypto::sframe::{MAX_PAYLOAD, Sealer};
use crate::media::engine::signal::Signal;
use crate::media::transport::sdp::hold_back_reflexive;
use crate::media::video::rtp::{Assembler, MAX_FRAME_BYTES};
use crate::meeting::AppMessage;
use crate::proto::control::{
    Approval, CommitReasons, EpochProof, Evidence, Hello, MemberInfo, Removal, RemovalReason,
    Request, Response, StatementSignature,
};
use crate::proto::turn::{CertificatePin, IceServer, TurnRefusal, TurnRequest, TurnResponse};
use crate::proto::{Message, framing};

/// One fuzzed input surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Control-protocol requests and responses (also as a framed byte stream), and the
    /// commit reasons a commit's authenticated data carries.
    ControlMessage,
    /// The payload of an MLS application message: chat lines, states, media signals (and
    /// the session descriptions inside them).
    ApplicationMessage,
    /// A session description from another member: our candidate hold-back, and the WebRTC
    /// stack's parser that `set_remote_description` runs.
    SessionDescription,
    /// A sealed media frame as it arrives from the transport (SFrame header, key lookup,
    /// replay window, authentication).
    SframeFrame,
    /// Invite text, as pasted by a user.
    Invite,
    /// The relay's answer on the TURN credential protocol.
    TurnMessage,
    /// A run of VP8 RTP packets from another member, reassembled into frames: each packet
    /// is `seq (2) ‖ timestamp (4) ‖ marker (1) ‖ length (1) ‖ payload`.
    VideoRtp,
}

/// What a corpus replay saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replay {
    /// Inputs run.
    pub inputs: usize,
    /// Inputs the target accepted.
    pub accepted: usize,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 7] = [
        Target::ControlMessage,
        Target::ApplicationMessage,
        Target::SessionDescription,
        Target::SframeFrame,
        Target::Invite,
        Target::TurnMessage,
        Target::VideoRtp,
    ];

    /// The target's name: its cargo-fuzz binary and corpus directory.
    pub fn name(self) -> &'static str {
        match self {
            Target::ControlMessage => "control_msg",
            Target::ApplicationMessage => "app_msg",
            Target::SessionDescription => "sdp",
            Target::SframeFrame => "sframe",
            Target::Invite => "invite",
            Target::TurnMessage => "turn_msg",
            Target::VideoRtp => "video_rtp",
        }
    }

    /// Runs one input; `true` if it was accepted. Panics if an invariant is broken.
    pub fn run(self, data: &[u8]) -> bool {
        match self {
            Target::ControlMessage => control_message(data),
            Target::ApplicationMessage => application_message(data),
            Target::SessionDescription => session_description(data),
            Target::SframeFrame => sframe_frame(data),
            Target::Invite => invite(data),
            Target::TurnMessage => turn_message(data),
            Target::VideoRtp => video_rtp(data),
        }
    }

    /// Valid examples of every message of the target (deterministic).
    pub fn seeds(self) -> Vec<Vec<u8>> {
        match self {
            Target::ControlMessage => control_seeds(),
            Target::ApplicationMessage => application_seeds(),
            Target::SessionDescription => vec![SEED_OFFER.as_bytes().to_vec()],
            Target::SframeFrame => sframe_seeds(),
            Target::Invite => invite_seeds(),
            Target::TurnMessage => turn_seeds(),
            Target::VideoRtp => video_rtp_seeds(),
        }
    }
}

/// Runs `run` on every file in `dir` (a corpus).
pub fn replay_dir(dir: &Path, run: impl Fn(&[u8]) -> bool) -> std::io::Result<Replay> {
    let mut replay = Replay::default();
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    for path in paths.into_iter().filter(|p| p.is_file()) {
        let data = std::fs::read(&path)?;
        replay.inputs += 1;
        if run(&data) {
            replay.accepted += 1;
        }
    }
    Ok(replay)
}

/// Writes into `dir` each of `seeds` that no file there holds already (named by its
/// content's SHA-256, as libFuzzer names corpus files by content); returns how many were
/// new.
pub fn write_seeds(dir: &Path, seeds: &[Vec<u8>]) -> std::io::Result<usize> {
    use sha2::Digest;
    std::fs::create_dir_all(dir)?;
    let mut present = std::collections::HashSet::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            present.insert(std::fs::read(path)?);
        }
    }
    let mut written = 0;
    for seed in seeds {
        if present.insert(seed.clone()) {
            let name = hex(&sha2::Sha256::digest(seed)[..20]);
            std::fs::write(dir.join(format!("seed-{name}")), seed)?;
            written += 1;
        }
    }
    Ok(written)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that `decoded` encodes to bytes that decode to itself.
fn assert_round_trip<M: Message + PartialEq + std::fmt::Debug>(decoded: &M) {
    let again = M::decode(&decoded.encode());
    assert_eq!(
        again.as_ref(),
        Ok(decoded),
        "a decoded message re-decodes to itself"
    );
}

fn control_message(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(request) = Request::decode(data) {
        assert_round_trip(&request);
        accepted = true;
    }
    if let Ok(response) = Response::decode(data) {
        assert_round_trip(&response);
        accepted = true;
    }
    if let Ok(reasons) = CommitReasons::from_aad(data) {
        assert_eq!(
            CommitReasons::from_aad(&reasons.to_aad()).as_ref(),
            Ok(&reasons)
        );
        accepted = true;
    }
    // The same bytes as a stream: a length-prefixed frame must give what its body decodes to.
    if let Ok(request) = read_framed::<Request>(data) {
        let body = data.get(4..).unwrap_or_default();
        assert_eq!(Request::decode(body).as_ref(), Ok(&request));
        accepted = true;
    }
    accepted
}

/// Reads one framed message from `data` as from a stream.
fn read_framed<M: Message>(data: &[u8]) -> std::io::Result<M> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let runtime =
        RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().ok());
    let Some(runtime) = runtime else {
        return Err(std::io::Error::other("no runtime"));
    };
    let mut stream = data;
    runtime.block_on(framing::read_message::<M, _>(&mut stream))
}

fn application_message(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Some(message) = AppMessage::decode(data) {
        assert_eq!(AppMessage::decode(&message.encode()), Some(message.clone()));
        if let AppMessage::Signal { payload, .. } = &message {
            signal(payload);
        }
        accepted = true;
    }
    signal(data) || accepted
}

fn signal(data: &[u8]) -> bool {
    let Some(signal) = Signal::decode(data) else {
        return false;
    };
    assert_eq!(Signal::decode(&signal.encode()), Some(signal.clone()));
    if let Signal::Offer(sdp) | Signal::Restart(sdp) | Signal::Answer { sdp, .. } = &signal {
        session_description(sdp.as_bytes());
    }
    true
}

fn session_description(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let (kept, held) = hold_back_reflexive(text);
    for candidate in &held {
        assert!(
            text.contains(&candidate.candidate),
            "a held candidate came from the text"
        );
    }
    assert!(
        hold_back_reflexive(&kept).1.is_empty(),
        "no reflexive candidate is left behind"
    );
    assert!(kept.len() <= text.len());
    rtc::sdp::SessionDescription::unmarshal(&mut Cursor::new(data)).is_ok()
}

/// The epoch the SFrame target's opener holds a key for.
const FUZZ_EPOCH: u64 = 7;
/// Its epoch secret.
const FUZZ_EPOCH_SECRET: [u8; NH] = [0x5a; NH];

fn sframe_frame(data: &[u8]) -> bool {
    // An entry point, like the async edges: it reads the clock once per input.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut opener = Opener::default();
    opener.install(now, FUZZ_EPOCH, FUZZ_EPOCH_SECRET);
    let Ok(opened) = opener.open(now, data) else {
        return false;
    };
    assert_eq!(opened.epoch, FUZZ_EPOCH);
    assert!(opened.payload.len() <= data.len());
    assert!(
        matches!(opener.open(now, data), Err(MediaError::Replayed { .. })),
        "a frame opens once"
    );
    let mut other = Opener::default();
    other.install(now, FUZZ_EPOCH, FUZZ_EPOCH_SECRET);
    assert!(
        other
            .open_from(now, data, opened.sender.wrapping_add(1))
            .is_err(),
        "a frame never opens as another member's"
    );
    true
}

fn invite(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(invite) = text.parse::<Invite>() else {
        return false;
    };
    let again: Result<Invite, _> = invite.to_uri().parse();
    assert_eq!(
        again.ok(),
        Some(invite),
        "a formatted invite parses to itself"
    );
    true
}

fn turn_message(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(response) = TurnResponse::decode(data) {
        assert_round_trip(&response);
        accepted = true;
    }
    TurnRequest::decode(data).is_ok() || accepted
}

fn video_rtp(data: &[u8]) -> bool {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut assembler = Assembler::default();
    let mut rest = data;
    let mut frames = 0u64;
    let mut packets = 0u64;
    while let Some((head, tail)) = rest.split_first_chunk::<8>() {
        // One packet every 10 ms: a repair wait runs out after 30 of them.
        let now = start + std::time::Duration::from_millis(packets * 10);
        packets += 1;
        let seq = u16::from_be_bytes([head[0], head[1]]);
        let timestamp = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        let marker = head[6] & 1 == 1;
        let (payload, next) = tail.split_at(usize::from(head[7]).min(tail.len()));
        for frame in assembler.push(now, seq, timestamp, marker, payload) {
            assert!(frame.data.len() <= MAX_FRAME_BYTES);
            frames += 1;
        }
        rest = next;
    }
    assert_eq!(assembler.stats().frames, frames);
    frames > 0
}

// ---- seeds ----------------------------------------------------------------------------

fn peer(n: u8) -> PeerId {
    Keypair::ed25519_from_bytes([n; 32])
        .map_or_else(|_| PeerId::random(), |key| key.public().to_peer_id())
}

fn member(n: u8) -> MemberInfo {
    MemberInfo {
        peer_id: peer(n),
        name: format!("member {n}"),
        addrs: vec![
            format!("/ip4/10.0.{n}.2/udp/4001/quic-v1")
                .parse()
                .unwrap_or_else(|_| libp2p::Multiaddr::empty()),
        ],
    }
}

fn control_seeds() -> Vec<Vec<u8>> {
    let meeting_id = MeetingId([3; 16]);
    let signature = StatementSignature([9; SIGNATURE_LEN]);
    let requests = vec![
        Request::Hello(Hello {
            meeting_id,
            nonce: [1; crate::admission::NONCE_LEN],
            unix_ms: 1_700_000_000_000,
            mac: [2; crate::admission::MAC_LEN],
            name: "Ada".into(),
            addrs: member(1).addrs,
            key_package: vec![0x42; 300],
        }),
        Request::Heartbeat {
            meeting_id,
            members: vec![member(1), member(2)],
            epoch: Some(4),
            proof: Some(EpochProof {
                authenticator_hash: [5; AUTHENTICATOR_HASH_LEN],
                signature: [6; SIGNATURE_LEN],
            }),
        },
        Request::Heartbeat {
            meeting_id,
            members: vec![member(3)],
            epoch: None,
            proof: None,
        },
        Request::Bye {
            meeting_id,
            leave: Some(signature),
        },
        Request::Commit {
            meeting_id,
            epoch: 4,
            commit: vec![0x17; 200],
        },
        Request::Confirm {
            meeting_id,
            epoch: 4,
        },
        Request::Abort {
            meeting_id,
            epoch: 4,
        },
        Request::Welcome {
            meeting_id,
            welcome: vec![0x33; 500],
            banned: vec![peer(7)],
        },
        Request::Group {
            meeting_id,
            message: vec![0x44; 120],
        },
        Request::Approve {
            meeting_id,
            peer_id: peer(2),
            signature: Some(signature),
        },
        Request::Kick {
            meeting_id,
            peer_id: peer(3),
            signature: Some(signature),
        },
    ];
    let responses = [
        Response::Welcome {
            mac: [8; crate::admission::MAC_LEN],
            members: vec![member(1)],
        },
        Response::Refused,
        Response::Ack,
        Response::NotMember,
        Response::Nack { epoch: 9 },
    ];
    let reasons = CommitReasons {
        removals: [
            RemovalReason::Left,
            RemovalReason::Kicked,
            RemovalReason::TimedOut,
            RemovalReason::Replaced,
            RemovalReason::Withheld,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, reason)| Removal {
            peer_id: peer(10 + i as u8),
            reason,
            evidence: (i % 2 == 0).then_some(Evidence {
                signer: peer(1),
                signature,
            }),
        })
        .collect(),
        approvals: vec![Approval {
            joiner: peer(4),
            signature,
        }],
    };
    let mut seeds: Vec<Vec<u8>> = requests.iter().map(Message::encode).collect();
    seeds.extend(
        requests
            .iter()
            .take(2)
            .map(|request| framed(&request.encode())),
    );
    seeds.extend(responses.iter().map(Message::encode));
    seeds.push(reasons.to_aad());
    seeds
}

/// `body` with its stream length prefix.
fn framed(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// A WebRTC offer like the ones our media engine sends (host, reflexive and relayed
/// candidates).
const SEED_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=candidate:1 1 udp 2130706431 10.0.1.2 50000 typ host\r\n\
a=candidate:2 1 udp 1694498815 203.0.113.7 40000 typ srflx raddr 10.0.1.2 rport 50000\r\n\
a=candidate:3 1 udp 16777215 198.51.100.1 3478 typ relay raddr 203.0.113.7 rport 40000\r\n\
a=end-of-candidates\r\n";

fn application_seeds() -> Vec<Vec<u8>> {
    let signals = [
        Signal::Offer(SEED_OFFER.into()),
        Signal::Answer {
            sdp: SEED_OFFER.into(),
            offer: 0x0123_4567_89ab_cdef,
            took_ms: 40,
        },
        Signal::Restart(SEED_OFFER.into()),
        Signal::Punch { offer: 7 },
    ];
    let mut seeds: Vec<Vec<u8>> = signals
        .iter()
        .map(|signal| {
            AppMessage::Signal {
                to: peer(2).to_bytes(),
                payload: signal.encode(),
            }
            .encode()
        })
        .collect();
    seeds.extend(signals.iter().map(Signal::encode));
    seeds.push(
        AppMessage::Chat {
            session: 11,
            seq: 1,
            unix_ms: 1_700_000_000_000,
            text: "Budget vote at 10:00 — bring the draft ✓".into(),
            id: 99,
        }
        .encode(),
    );
    seeds.push(
        AppMessage::State {
            session: 11,
            seq: 2,
            muted: true,
        }
        .encode(),
    );
    seeds
}

fn sframe_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for sender in [0u32, 1, 5, 63] {
        let base = sender_base_key(&FUZZ_EPOCH_SECRET, sender);
        let mut sealer = Sealer::new(sender);
        if sealer.install(FUZZ_EPOCH, sender, &base).is_err() {
            continue;
        }
        for payload in [
            &[][..],
            &[0xfc; 19][..],
            &[0x78; 133][..],
            &[1; MAX_PAYLOAD][..],
        ] {
            if let Ok(frame) = sealer.seal(payload) {
                seeds.push(frame);
            }
        }
    }
    // A frame of the next epoch, which the opener has no key for yet.
    let next = sender_base_key(&[0xa5; NH], 1);
    let mut sealer = Sealer::new(1);
    if sealer.install(FUZZ_EPOCH + 1, 1, &next).is_ok()
        && let Ok(frame) = sealer.seal(&[0x78; 133])
    {
        seeds.push(frame);
    }
    seeds
}

fn invite_seeds() -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut plain = Invite::new_meeting(&mut rng);
    let mut seeds = vec![plain.to_uri().into_bytes()];
    plain.host = Some(peer(1));
    plain.lobby = true;
    plain.relays = vec![
        format!("/ip4/192.0.2.10/udp/4001/quic-v1/p2p/{}", peer(5))
            .parse()
            .unwrap_or_else(|_| libp2p::Multiaddr::empty()),
    ];
    seeds.push(plain.to_uri().into_bytes());
    seeds
}

/// Frames split by the WebRTC stack's VP8 payloader (MTU 200, so each packet fits the
/// target's one-byte length), in order, reordered, and with a packet lost.
fn video_rtp_seeds() -> Vec<Vec<u8>> {
    use rtc::rtp::codec::vp8::Vp8Payloader;
    use rtc::rtp::packetizer::Payloader;
    let mut payloader = Vp8Payloader::default();
    payloader.enable_picture_id = true;
    let mut packets: Vec<(u16, u32, bool, Vec<u8>)> = Vec::new();
    let mut seq = 65_530u16;
    for (n, len) in [10usize, 600, 1].into_iter().enumerate() {
        let frame: Vec<u8> = (0..len).map(|i| (i * 7 + n) as u8).collect();
        let parts = payloader
            .payload(200, &bytes::Bytes::from(frame))
            .unwrap_or_default();
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            packets.push((seq, 3000 * n as u32, i + 1 == count, part.to_vec()));
            seq = seq.wrapping_add(1);
        }
    }
    let encode = |packets: &[(u16, u32, bool, Vec<u8>)]| {
        let mut out = Vec::new();
        for (seq, timestamp, marker, payload) in packets {
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.push(u8::from(*marker));
            out.push(u8::try_from(payload.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(payload);
        }
        out
    };
    let mut reordered = packets.clone();
    reordered.swap(1, 3);
    let mut lossy = packets.clone();
    lossy.remove(2);
    vec![encode(&packets), encode(&reordered), encode(&lossy)]
}

fn turn_seeds() -> Vec<Vec<u8>> {
    vec![
        TurnRequest::default().encode(),
        TurnResponse::Credentials(IceServer {
            urls: vec![
                "stun:192.0.2.10:3478".into(),
                "turn:192.0.2.10:3478?transport=udp".into(),
                "turn:192.0.2.10:3478?transport=tcp".into(),
                "turns:192.0.2.10:443?transport=tcp".into(),
            ],
            username: format!("1700003600:{}", peer(1)),
            credential: "c2VjcmV0IGNyZWRlbnRpYWw=".into(),
            expires_unix: 1_700_003_600,
            tls_pin: Some(CertificatePin::of(b"relay certificate")),
        })
        .encode(),
        TurnResponse::Refused(TurnRefusal::NotAllowed).encode(),
        TurnResponse::Refused(TurnRefusal::Unavailable).encode(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_is_accepted_by_its_target() {
        for target in Target::ALL {
            let seeds = target.seeds();
            assert!(!seeds.is_empty(), "{} has seeds", target.name());
            let accepted = seeds.iter().filter(|seed| target.run(seed)).count();
            // The SFrame seeds include one frame under an unknown key, on purpose.
            let refused_on_purpose = usize::from(target == Target::SframeFrame);
            assert_eq!(
                accepted + refused_on_purpose,
                seeds.len(),
                "{}: every valid seed is accepted",
                target.name()
            );
        }
    }

    #[test]
    fn garbage_is_refused_by_every_target() {
        for target in Target::ALL {
            assert!(!target.run(&[0xff, 0x00, 0x13]), "{}", target.name());
        }
    }

    #[test]
    fn a_tampered_media_frame_is_refused() {
        let mut frame = sframe_seeds().remove(1);
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(!Target::SframeFrame.run(&frame));
    }
}
