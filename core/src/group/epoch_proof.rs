//! Epoch proofs: a member's signed statement "I am at epoch E and its authenticator hashes
//! to H", carried in every heartbeat (`docs/protocol.md` §5, "Epoch proofs").
//!
//! Two members at the same epoch number with different authenticators are on two branches
//! of a fork (someone sent them different commits). A member on one branch cannot open the
//! other branch's MLS messages, so the statement is signed outside MLS, with the sender's
//! leaf signature key — the ed25519 key in its leaf credential, which any member finds in
//! its own copy of the tree. The same signature makes an epoch claim attributable: a claim
//! of a later epoch only counts as evidence for joining again when it verifies
//! ([`super::MeetingGroup::verify_epoch_proof`]).
//!
//! Format, version 1:
//! - `H = SHA-256("conclave epoch authenticator v1" ‖ meeting id (16) ‖ epoch (u64 BE) ‖
//!   MLS epoch_authenticator)` — the authenticator itself never leaves the member;
//! - the signature is ed25519 over `"conclave epoch proof v1" ‖ meeting id ‖ epoch (u64 BE)
//!   ‖ H`.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::invite::MeetingId;

/// Length of an authenticator hash.
pub const AUTHENTICATOR_HASH_LEN: usize = 32;
/// Length of an epoch proof's signature.
pub const SIGNATURE_LEN: usize = 64;

const HASH_LABEL: &[u8] = b"conclave epoch authenticator v1";
const SIGN_LABEL: &[u8] = b"conclave epoch proof v1";

/// The hash of an epoch authenticator that heartbeats carry.
pub fn authenticator_hash(
    meeting_id: MeetingId,
    epoch: u64,
    authenticator: &[u8],
) -> [u8; AUTHENTICATOR_HASH_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(HASH_LABEL);
    hasher.update(meeting_id.0);
    hasher.update(epoch.to_be_bytes());
    hasher.update(authenticator);
    hasher.finalize().into()
}

/// What is signed.
fn signed_payload(meeting_id: MeetingId, epoch: u64, hash: &[u8]) -> Vec<u8> {
    [SIGN_LABEL, &meeting_id.0, &epoch.to_be_bytes(), hash].concat()
}

/// Signs the statement "at `epoch`, the authenticator hash is `hash`".
pub fn sign(
    key: &SigningKey,
    meeting_id: MeetingId,
    epoch: u64,
    hash: &[u8; AUTHENTICATOR_HASH_LEN],
) -> [u8; SIGNATURE_LEN] {
    key.sign(&signed_payload(meeting_id, epoch, hash))
        .to_bytes()
}

/// Whether `signature` is `key`'s signature of "at `epoch`, the authenticator hash is
/// `hash`" (strict ed25519 verification).
pub fn verify(
    key: &VerifyingKey,
    meeting_id: MeetingId,
    epoch: u64,
    hash: &[u8; AUTHENTICATOR_HASH_LEN],
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    let signature = Signature::from_bytes(signature);
    key.verify_strict(&signed_payload(meeting_id, epoch, hash), &signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn key(identity: &Identity) -> SigningKey {
        SigningKey::from_bytes(&identity.secret_bytes())
    }

    #[test]
    fn a_proof_verifies_only_for_its_signer_epoch_and_hash() {
        let (alice, bob) = (Identity::generate(), Identity::generate());
        let meeting = MeetingId([7; 16]);
        let hash = authenticator_hash(meeting, 4, &[1; 32]);
        let signature = sign(&key(&alice), meeting, 4, &hash);
        assert!(verify(&alice.public_key(), meeting, 4, &hash, &signature));
        assert!(!verify(&bob.public_key(), meeting, 4, &hash, &signature));
        assert!(!verify(&alice.public_key(), meeting, 5, &hash, &signature));
        assert!(!verify(
            &alice.public_key(),
            MeetingId([8; 16]),
            4,
            &hash,
            &signature
        ));
        let other = authenticator_hash(meeting, 4, &[2; 32]);
        assert!(!verify(&alice.public_key(), meeting, 4, &other, &signature));
    }

    #[test]
    fn the_hash_binds_meeting_epoch_and_authenticator() {
        let meeting = MeetingId([7; 16]);
        let base = authenticator_hash(meeting, 4, &[1; 32]);
        assert_ne!(base, authenticator_hash(meeting, 5, &[1; 32]));
        assert_ne!(base, authenticator_hash(MeetingId([8; 16]), 4, &[1; 32]));
        assert_ne!(base, authenticator_hash(meeting, 4, &[2; 32]));
    }
}
