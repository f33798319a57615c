//! The installation key pair and its conversions to libp2p.

use ed25519_dalek::{SigningKey, VerifyingKey};
use libp2p::PeerId;
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use super::SafetyNumber;

/// Length of an ed25519 secret key in bytes.
pub const SECRET_KEY_LEN: usize = 32;

/// Errors building an identity from stored bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The stored secret key does not have the length of an ed25519 secret key.
    #[error("stored identity key has {len} bytes, expected {expected}")]
    BadKeyLength {
        /// Bytes found.
        len: usize,
        /// Bytes expected.
        expected: usize,
    },
}

/// The installation's ed25519 identity.
///
/// `Clone` copies the secret; the copy zeroizes on drop like the original. `Debug` shows
/// only the peer id.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    peer_id: PeerId,
}

impl Identity {
    /// Creates a fresh identity from the operating system's random source.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        OsRng.fill_bytes(secret.as_mut());
        Self::from_secret(&secret)
    }

    /// Rebuilds an identity from its 32 secret bytes (as kept by the store).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let secret: &[u8; SECRET_KEY_LEN] =
            bytes.try_into().map_err(|_| IdentityError::BadKeyLength {
                len: bytes.len(),
                expected: SECRET_KEY_LEN,
            })?;
        Ok(Self::from_secret(secret))
    }

    fn from_secret(secret: &[u8; SECRET_KEY_LEN]) -> Self {
        let signing = SigningKey::from_bytes(secret);
        let peer_id = peer_id_of(&signing.verifying_key());
        Self { signing, peer_id }
    }

    /// The secret key bytes, for the store only. Zeroized when dropped.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; SECRET_KEY_LEN]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The libp2p peer id derived from the public key.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The safety number of this identity's public key.
    pub fn safety_number(&self) -> SafetyNumber {
        SafetyNumber::of(&self.public_key())
    }

    /// The same key as a libp2p key pair (same secret, so the same [`PeerId`]).
    pub fn libp2p_keypair(&self) -> libp2p::identity::Keypair {
        let mut secret = self.signing.to_bytes();
        let keypair = libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
            .expect("32 bytes are always a valid ed25519 secret key");
        zeroize::Zeroize::zeroize(&mut secret);
        keypair
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .field("secret", &"SecretKey(..)")
            .finish()
    }
}

/// The libp2p peer id of an ed25519 public key.
pub fn peer_id_of(key: &VerifyingKey) -> PeerId {
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.as_bytes())
        .expect("a dalek verifying key is a valid ed25519 public key");
    libp2p::identity::PublicKey::from(public).to_peer_id()
}

/// The ed25519 public key inside a peer id, when the peer id embeds one (all Conclave peer
/// ids do: ed25519 keys are short enough to be inlined).
pub fn public_key_of(peer: &PeerId) -> Option<VerifyingKey> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None; // not an identity multihash
    }
    let public = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    VerifyingKey::from_bytes(&ed.to_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trips_to_the_same_peer_id() {
        let identity = Identity::generate();
        let again = Identity::from_secret_bytes(identity.secret_bytes().as_ref()).unwrap();
        assert_eq!(identity.peer_id(), again.peer_id());
        assert_eq!(
            identity.libp2p_keypair().public().to_peer_id(),
            identity.peer_id()
        );
    }

    #[test]
    fn public_key_is_recovered_from_the_peer_id() {
        let identity = Identity::generate();
        assert_eq!(
            public_key_of(&identity.peer_id()),
            Some(identity.public_key())
        );
    }

    #[test]
    fn bad_length_is_a_typed_error() {
        let err = Identity::from_secret_bytes(&[1, 2, 3]).unwrap_err();
        assert!(matches!(
            err,
            IdentityError::BadKeyLength {
                len: 3,
                expected: 32
            }
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let identity = Identity::generate();
        let secret = identity.secret_bytes();
        let rendered = format!("{identity:?} {identity:#?}");
        assert!(rendered.contains("SecretKey(..)"));
        assert!(!rendered.contains(&hex::encode(secret.as_ref())));
        assert!(!rendered.contains(&format!("{:?}", secret.as_ref())));
    }
}
