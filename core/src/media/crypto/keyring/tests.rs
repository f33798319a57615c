//! Sealing and opening with MLS-derived keys: round trip, replay, forgery, unknown keys,
//! the epoch grace window, and no plaintext on the wire.

use std::time::Duration;

use super::*;
use crate::group::media_keys::sender_base_key;
use crate::group::{MeetingGroup, MlsIdentity, Provider};
use crate::identity::Identity;
use crate::invite::MeetingId;
use crate::media::crypto::sframe::{Sealer, Stream, key_id, stream_key_id};

use crate::test_clock::t0;

fn sealer(epoch: u64, sender: u32, secret: [u8; NH]) -> Sealer {
    let mut sealer = Sealer::new(sender);
    sealer
        .install(epoch, sender, &sender_base_key(&secret, sender))
        .unwrap();
    sealer
}

#[test]
fn sender_base_key_matches_an_independent_hkdf_expand() {
    // Python: hmac.new(bytes([1]*32), (2).to_bytes(4, 'big') + b'\x01', sha256)
    assert_eq!(
        hex::encode(sender_base_key(&[1; NH], 2).as_ref()),
        "587dfd2ddfc7e5161907c6ae66294dcc389823b4e6797e7f5ac87b1357d2a47b"
    );
}

#[test]
fn frames_round_trip_and_bad_ones_are_dropped_and_counted() {
    let now = t0();
    let mut opener = Opener::default();
    opener.install(now, 5, [7; NH]);
    let mut sealer = sealer(5, 2, [7; NH]);
    let payload = b"OpusHead-like payload that must not appear on the wire".to_vec();
    let sealed = sealer.seal(&payload).unwrap();
    assert!(
        !sealed
            .windows(8)
            .any(|w| payload.windows(8).any(|p| p == w)),
        "no plaintext on the wire"
    );
    let opened = opener.open(now, &sealed).unwrap();
    assert_eq!(
        opened,
        Opened {
            sender: 2,
            stream: Stream::Audio,
            epoch: 5,
            counter: 0,
            payload: payload.clone()
        }
    );
    // The counter rises by one per frame sealed: it orders the sender's frames whichever
    // connection brings them.
    let next = sealer.seal(&payload).unwrap();
    assert_eq!(opener.open(now, &next).unwrap().counter, 1);

    assert!(matches!(
        opener.open(now, &sealed),
        Err(MediaError::Replayed { .. })
    ));
    let mut forged = sealer.seal(&payload).unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 0x80;
    assert_eq!(opener.open(now, &forged), Err(MediaError::Forged));
    assert_eq!(opener.open(now, &[0xff]), Err(MediaError::Malformed));
    assert_eq!(opener.open(now, &[]), Err(MediaError::Malformed));
    let mut other_epoch = self::sealer(9, 2, [7; NH]);
    assert!(matches!(
        opener.open(now, &other_epoch.seal(b"x").unwrap()),
        Err(MediaError::UnknownKey { .. })
    ));
    // A sender claiming another leaf's KID cannot open: its key is not that leaf's key.
    let mut impostor = Sealer::new(3);
    impostor
        .install(5, 3, &sender_base_key(&[7; NH], 2))
        .unwrap();
    assert_eq!(
        opener.open(now, &impostor.seal(b"x").unwrap()),
        Err(MediaError::Forged)
    );

    let stats = opener.stats();
    assert_eq!(
        (
            stats.opened,
            stats.replayed,
            stats.forged,
            stats.malformed,
            stats.unknown_key
        ),
        (2, 1, 2, 2, 1)
    );
    assert_eq!(key_id(5, 2).unwrap(), (2 << 4) | 5);
}

#[test]
fn late_frames_of_the_previous_epoch_open_only_within_the_grace_window() {
    let now = t0();
    let mut opener = Opener::default();
    opener.install(now, 1, [1; NH]);
    let mut old = sealer(1, 0, [1; NH]);
    let mut new = sealer(2, 0, [2; NH]);
    let late = old.seal(b"sealed just before the change").unwrap();
    let later = old.seal(b"arrives too late").unwrap();
    opener.install(now, 2, [2; NH]);
    assert!(
        opener.open(now + Duration::from_secs(1), &late).is_ok(),
        "no gap at an epoch change"
    );
    assert!(
        opener
            .open(now + Duration::from_secs(1), &new.seal(b"new").unwrap())
            .is_ok()
    );
    let after = now + MediaKeys::GRACE + Duration::from_millis(1);
    assert!(matches!(
        opener.open(after, &later),
        Err(MediaError::UnknownKey { .. })
    ));
    assert!(Sealer::new(0).seal(b"x").is_err(), "no key, no sealing");
}

#[test]
fn keys_come_from_the_mls_group_and_a_removed_member_is_locked_out() {
    let now = t0();
    let ids: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
    let mes: Vec<MlsIdentity> = ids.iter().map(MlsIdentity::new).collect();
    let providers: Vec<Provider> = (0..3).map(|_| Provider::default()).collect();
    let mut host = MeetingGroup::create(&providers[0], &mes[0], MeetingId([1; 16])).unwrap();
    let packages = (1..3)
        .map(|i| {
            let kp = mes[i].key_package(&providers[i]).unwrap();
            crate::group::mls::validate_key_package(&providers[0], &kp, ids[i].peer_id()).unwrap()
        })
        .collect();
    let out = host
        .commit(&providers[0], &mes[0], packages, vec![], Vec::new())
        .unwrap();
    host.merge_pending(&providers[0]).unwrap();
    let welcome = out.welcome.unwrap();
    let b = MeetingGroup::join(&providers[1], &welcome).unwrap();
    let c = MeetingGroup::join(&providers[2], &welcome).unwrap();

    // B seals with its own leaf; C opens with keys from its own copy of the group.
    let secret_b = b.media_epoch_secret(&providers[1]).unwrap();
    let mut sealer = sealer(b.epoch(), b.own_leaf(), secret_b);
    let mut opener_c = Opener::default();
    opener_c.install(now, c.epoch(), c.media_epoch_secret(&providers[2]).unwrap());
    let opened = opener_c.open(now, &sealer.seal(b"voice").unwrap()).unwrap();
    assert_eq!(
        (opened.sender, opened.payload.as_slice()),
        (b.own_leaf(), b"voice".as_slice())
    );

    // The host removes C; what B seals in the new epoch does not open with C's keys.
    let out = host
        .commit(
            &providers[0],
            &mes[0],
            vec![],
            vec![c.own_leaf()],
            Vec::new(),
        )
        .unwrap();
    host.merge_pending(&providers[0]).unwrap();
    let mut b = b;
    let crate::group::Received::Commit { staged, .. } = b
        .receive(&providers[1], &out.commit, ids[0].peer_id())
        .unwrap()
    else {
        panic!("a commit")
    };
    b.merge_staged(&providers[1], *staged).unwrap();
    sealer
        .install(
            b.epoch(),
            b.own_leaf(),
            &sender_base_key(&b.media_epoch_secret(&providers[1]).unwrap(), b.own_leaf()),
        )
        .unwrap();
    let after_removal = sealer.seal(b"private again").unwrap();
    assert!(
        opener_c.open(now, &after_removal).is_err(),
        "the removed member opened a frame of the new epoch"
    );
    let mut opener_host = Opener::default();
    opener_host.install(
        now,
        host.epoch(),
        host.media_epoch_secret(&providers[0]).unwrap(),
    );
    assert!(opener_host.open(now, &after_removal).is_ok());
}

#[test]
fn a_connection_carries_only_its_own_members_frames() {
    let now = t0();
    let mut opener = Opener::default();
    opener.install(now, 5, [7; NH]);
    // Every member can derive every sender's key; member 3 forges leaf 2's KID on its own
    // connection, with a huge counter meant to push leaf 2's replay window ahead.
    let mut forger = sealer(5, 2, [7; NH]);
    let forged = forger.seal(b"pretending to be leaf 2").unwrap();
    assert_eq!(opener.open_from(now, &forged, 3), Err(MediaError::Forged));
    // Leaf 2's own frames (arriving on its connection) still open.
    let mut honest = sealer(5, 2, [7; NH]);
    assert!(
        opener
            .open_from(now, &honest.seal(b"really leaf 2").unwrap(), 2)
            .is_ok()
    );
}

#[test]
fn a_failed_key_install_stops_sealing_instead_of_using_the_old_key() {
    let mut sealer = sealer(1, 3, [1; NH]);
    assert!(sealer.seal(b"ok").is_ok());
    // Leaf 64 does not fit the KID's six index bits: the install fails...
    assert!(
        sealer
            .install(2, 64, &sender_base_key(&[2; NH], 64))
            .is_err()
    );
    // ...and nothing is sealed under epoch 1's key any more.
    assert_eq!(sealer.epoch(), None);
    assert!(matches!(sealer.seal(b"late"), Err(MediaError::NoKey)));
    sealer.install(2, 3, &sender_base_key(&[2; NH], 3)).unwrap();
    assert!(sealer.seal(b"again").is_ok());
    sealer.reset();
    assert!(matches!(
        sealer.seal(b"after reset"),
        Err(MediaError::NoKey)
    ));
}

#[test]
fn reset_forgets_every_key() {
    let now = t0();
    let mut opener = Opener::default();
    opener.install(now, 4, [4; NH]);
    let mut sealer = sealer(4, 1, [4; NH]);
    opener.open(now, &sealer.seal(b"one").unwrap()).unwrap();
    let second = sealer.seal(b"two").unwrap();
    opener.reset();
    assert!(matches!(
        opener.open(now, &second),
        Err(MediaError::UnknownKey { .. })
    ));
    assert_eq!(opener.stats().opened, 1, "counters survive a reset");
}

/// The cache is keyed by (KID, epoch): the same epoch number installed again with a new
/// secret (a new group) never opens frames with the key cached for the old one.
#[test]
fn a_reinstalled_epoch_never_reuses_a_cached_key() {
    let now = t0();
    let mut opener = Opener::default();
    opener.install(now, 3, [0xA; NH]);
    let mut old = sealer(3, 0, [0xA; NH]);
    opener.open(now, &old.seal(b"cached").unwrap()).unwrap();
    opener.install(now, 3, [0xB; NH]);
    assert!(opener.open(now, &old.seal(b"stale").unwrap()).is_err());
    let mut new = sealer(3, 0, [0xB; NH]);
    opener.open(now, &new.seal(b"fresh").unwrap()).unwrap();
}

/// After a rejoin whose epoch equals an old one modulo 16 (same KID), the old key is gone:
/// an old frame does not open, long after its grace window.
#[test]
fn a_rejoin_with_the_same_kid_drops_the_old_groups_keys() {
    let now = t0();
    let mut opener = Opener::default();
    opener.install(now, 17, [0x11; NH]);
    let mut old = sealer(17, 2, [0x11; NH]);
    opener.open(now, &old.seal(b"old group").unwrap()).unwrap();
    let later = now + MediaKeys::GRACE * 10;
    // The new group starts at epoch 1: 17 mod 16 == 1, the same KID for leaf 2.
    assert_eq!(key_id(1, 2).unwrap(), key_id(17, 2).unwrap());
    opener.install(later, 1, [0x01; NH]);
    assert!(
        opener
            .open(later, &old.seal(b"replayed key").unwrap())
            .is_err()
    );
    let mut new = sealer(1, 2, [0x01; NH]);
    let opened = opener
        .open(later, &new.seal(b"new group").unwrap())
        .unwrap();
    assert_eq!(opened.epoch, 1);
}

#[test]
fn audio_and_video_of_one_member_never_share_a_key_or_a_counter() {
    let now = t0();
    let secret = [9; NH];
    let base = sender_base_key(&secret, 3);
    let mut audio = Sealer::new(3);
    let mut video = Sealer::for_stream(3, Stream::Video);
    audio.install(4, 3, &base).unwrap();
    video.install(4, 3, &base).unwrap();
    assert_ne!(
        stream_key_id(Stream::Audio, 4, 3).unwrap(),
        stream_key_id(Stream::Video, 4, 3).unwrap()
    );
    // Both counters start at 0: the same payload under the same counter must still give
    // different ciphertexts, because the keys differ.
    let payload = [0x5a; 64];
    let a = audio.seal(&payload).unwrap();
    let v = video.seal(&payload).unwrap();
    let header = |frame: &[u8]| *EncryptedFrameView::try_new(&frame).unwrap().header();
    assert_eq!(header(&a).counter(), header(&v).counter());
    assert_ne!(header(&a).key_id(), header(&v).key_id());
    assert_ne!(a[a.len() - 64..], v[v.len() - 64..], "different keys");
    let mut opener = Opener::default();
    opener.install(now, 4, secret);
    assert_eq!(opener.open_from(now, &a, 3).unwrap().stream, Stream::Audio);
    assert_eq!(opener.open_from(now, &v, 3).unwrap().stream, Stream::Video);
    // Each stream has its own replay window: the video frame with counter 0 after the
    // audio one with counter 0 was not a replay, but either again is.
    assert!(matches!(
        opener.open(now, &v),
        Err(MediaError::Replayed { .. })
    ));
    // Video frames may be larger than audio ones, within their own bound.
    assert!(video.seal(&vec![1; 50_000]).is_ok());
    assert!(audio.seal(&vec![1; 50_000]).is_err());
}
