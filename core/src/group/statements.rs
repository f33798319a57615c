//! Signed statements that justify a commit to every receiver (`docs/protocol.md` §6,
//! "Commit rules"): "I leave", "remove this member" and "let this joiner in".
//!
//! A committer cannot prove by itself that a member left or that the host asked for a
//! removal: the member or the host signs the statement, the committer carries it in the
//! commit's authenticated data, and every receiver verifies it against its own copy of the
//! tree before it stages the commit.
//!
//! A leave or a removal names one *leaf*, not only a person: it is bound to the hash of
//! the leaf's HPKE encryption key, which is fresh for every leaf (it comes from the key
//! package the member joined with). A statement about a member's earlier leaf therefore
//! cannot remove the same person after it joined again.
//!
//! Format, version 1: ed25519 (strict verification) over
//! `"conclave statement v1" ‖ kind (1 byte) ‖ meeting id (16) ‖ subject peer id (length-
//! prefixed bytes) ‖ leaf binding (32 bytes; zeros for an approval, which names no leaf)`,
//! where the leaf binding is `SHA-256("conclave leaf binding v1" ‖ encryption key)`.

use ed25519_dalek::{Signature, Signer as _, SigningKey};
use libp2p::PeerId;
use sha2::{Digest, Sha256};

use super::epoch_proof::SIGNATURE_LEN;
use crate::identity::public_key_of;
use crate::invite::MeetingId;

const LABEL: &[u8] = b"conclave statement v1";
const BINDING_LABEL: &[u8] = b"conclave leaf binding v1";

/// What a statement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    /// "I leave the meeting" (subject: the signer).
    Leave,
    /// "Remove this member" (subject: the member; signed by the host, or by any member
    /// once the host is gone).
    Kick,
    /// "Let this joiner in" (subject: the joiner; signed by the host of a lobby meeting).
    Approve,
}

impl Statement {
    fn tag(self) -> u8 {
        match self {
            Statement::Leave => 1,
            Statement::Kick => 2,
            Statement::Approve => 3,
        }
    }
}

/// The hash that binds a statement to one leaf: of the leaf's HPKE encryption key.
pub type LeafBinding = [u8; 32];

/// The binding of a leaf whose encryption key is `encryption_key`.
pub fn leaf_binding(encryption_key: &[u8]) -> LeafBinding {
    let mut hasher = Sha256::new();
    hasher.update(BINDING_LABEL);
    hasher.update(encryption_key);
    hasher.finalize().into()
}

fn payload(
    statement: Statement,
    meeting_id: MeetingId,
    subject: &PeerId,
    binding: &LeafBinding,
) -> Vec<u8> {
    let subject = subject.to_bytes();
    let length = u16::try_from(subject.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    [
        LABEL,
        &[statement.tag()],
        &meeting_id.0,
        &length,
        &subject,
        binding,
    ]
    .concat()
}

/// Signs `statement` about `subject` (and its leaf, by `binding`).
pub fn sign(
    key: &SigningKey,
    statement: Statement,
    meeting_id: MeetingId,
    subject: &PeerId,
    binding: &LeafBinding,
) -> [u8; SIGNATURE_LEN] {
    key.sign(&payload(statement, meeting_id, subject, binding))
        .to_bytes()
}

/// Whether `signature` is `signer`'s signature of `statement` about `subject` and the
/// leaf `binding` (the signer's key is the one its peer id names: identity binding).
pub fn verify(
    signer: &PeerId,
    statement: Statement,
    meeting_id: MeetingId,
    subject: &PeerId,
    binding: &LeafBinding,
    signature: &[u8; SIGNATURE_LEN],
) -> bool {
    let Some(key) = public_key_of(signer) else {
        return false;
    };
    key.verify_strict(
        &payload(statement, meeting_id, subject, binding),
        &Signature::from_bytes(signature),
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_statement_verifies_only_for_its_signer_kind_meeting_subject_and_leaf() {
        let (host, member, other) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let key = SigningKey::from_bytes(&host.secret_bytes());
        let meeting = MeetingId([7; 16]);
        let leaf = leaf_binding(&[1; 32]);
        let subject = member.peer_id();
        let signature = sign(&key, Statement::Kick, meeting, &subject, &leaf);
        let host_id = host.peer_id();
        assert!(verify(
            &host_id,
            Statement::Kick,
            meeting,
            &subject,
            &leaf,
            &signature
        ));
        // Another signer, kind, meeting, subject or leaf: refused.
        assert!(!verify(
            &other.peer_id(),
            Statement::Kick,
            meeting,
            &subject,
            &leaf,
            &signature
        ));
        assert!(!verify(
            &host_id,
            Statement::Leave,
            meeting,
            &subject,
            &leaf,
            &signature
        ));
        assert!(!verify(
            &host_id,
            Statement::Kick,
            MeetingId([8; 16]),
            &subject,
            &leaf,
            &signature
        ));
        assert!(!verify(
            &host_id,
            Statement::Kick,
            meeting,
            &other.peer_id(),
            &leaf,
            &signature
        ));
        let new_leaf = leaf_binding(&[2; 32]);
        assert!(!verify(
            &host_id,
            Statement::Kick,
            meeting,
            &subject,
            &new_leaf,
            &signature
        ));
    }
}
