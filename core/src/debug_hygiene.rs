//! One test over every public type that can hold a secret: its `Debug` output (plain and
//! pretty) contains none of the secret's bytes, in any of the encodings a log line could
//! carry them (hex, decimal list, base64, the invite URI, the text itself).
//!
//! Add a type here when it starts holding a key, a secret, an invite or private text.

use std::time::Instant;

use base64::Engine;

use crate::admission::MeetingKeys;
use crate::group::StorageDelta;
use crate::group::media_keys::MediaKeys;
use crate::identity::Identity;
use crate::invite::{Invite, MeetingId, MeetingSecret};
use crate::media::crypto::keyring::Opener;
use crate::media::crypto::sframe::Sealer;
use crate::media::{EpochSecret, MediaCommand};
use crate::meeting::Output;
use crate::store::{ChatRecord, KeySource, MeetingRecord, StoreKey};

/// Every rendering of `bytes` a careless `Debug` could produce.
fn encodings(bytes: &[u8]) -> Vec<String> {
    let decimal: Vec<String> = bytes.iter().take(6).map(u8::to_string).collect();
    vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        decimal.join(", "),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ]
}

fn assert_hidden(name: &str, value: &dyn std::fmt::Debug, needles: &[String]) {
    let rendered = format!("{value:?}\n{value:#?}");
    for needle in needles {
        assert!(
            !rendered.contains(needle.as_str()),
            "Debug of {name} shows a secret ({needle}): {rendered}"
        );
    }
}

#[test]
fn no_public_type_prints_its_secret_in_debug() {
    // Distinct, recognisable secret bytes per type.
    let secret = |seed: u8| -> [u8; 32] { std::array::from_fn(|i| seed.wrapping_add(i as u8 * 7)) };

    let identity = Identity::generate();
    assert_hidden(
        "Identity",
        &identity,
        &encodings(identity.secret_bytes().as_ref()),
    );

    let store_key = StoreKey::from_slice(&secret(11)).expect("32 bytes");
    assert_hidden("StoreKey", &store_key, &encodings(&secret(11)));

    let passphrase = "a passphrase nobody may log";
    assert_hidden(
        "KeySource",
        &KeySource::passphrase(passphrase),
        &[passphrase.to_owned()],
    );

    let meeting_secret = MeetingSecret::from_bytes(secret(23));
    assert_hidden("MeetingSecret", &meeting_secret, &encodings(&secret(23)));
    let invite = Invite {
        meeting_id: MeetingId([5; 16]),
        secret: meeting_secret.clone(),
        host: Some(identity.peer_id()),
        relays: Vec::new(),
        lobby: false,
    };
    let uri = invite.to_uri();
    let mut invite_needles = encodings(&secret(23));
    invite_needles.push(uri.clone());
    assert_hidden("Invite", &invite, &invite_needles);

    let keys = MeetingKeys::derive(MeetingId([5; 16]), &meeting_secret);
    assert_hidden("MeetingKeys", &keys, &encodings(&secret(23)));

    let record = MeetingRecord::new(uri.clone(), 1);
    assert_hidden("MeetingRecord", &record, std::slice::from_ref(&uri));

    let text = "the chat line only members may read";
    let line = ChatRecord {
        from: identity.peer_id().to_string(),
        name: "Ada".into(),
        text: text.into(),
        unix_ms: 1,
    };
    assert_hidden("ChatRecord", &line, &[text.to_owned()]);

    let epoch_secret = EpochSecret(secret(37));
    assert_hidden("EpochSecret", &epoch_secret, &encodings(&secret(37)));
    let command = MediaCommand::Epoch {
        epoch: 3,
        secret: epoch_secret,
        own_leaf: 0,
        members: Vec::new(),
        replaced: Vec::new(),
    };
    assert_hidden("MediaCommand::Epoch", &command, &encodings(&secret(37)));

    let mls_value = secret(53).to_vec();
    let delta = StorageDelta {
        puts: vec![(b"mls key".to_vec(), mls_value.clone())],
        deletes: Vec::new(),
    };
    assert_hidden("StorageDelta", &delta, &encodings(&mls_value));
    assert_hidden(
        "Output::Persist",
        &Output::Persist(delta),
        &encodings(&mls_value),
    );

    #[allow(clippy::disallowed_methods)] // an arbitrary origin for simulated time
    let now = Instant::now();
    let mut media_keys = MediaKeys::default();
    media_keys.install(now, 1, secret(67));
    assert_hidden("MediaKeys", &media_keys, &encodings(&secret(67)));
    let mut opener = Opener::default();
    opener.install(now, 1, secret(67));
    assert_hidden("Opener", &opener, &encodings(&secret(67)));
    let mut sealer = Sealer::new(0);
    sealer
        .install(1, 0, &secret(79))
        .expect("leaf 0 fits the KID");
    assert_hidden("Sealer", &sealer, &encodings(&secret(79)));
}
