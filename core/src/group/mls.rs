//! [`MeetingGroup`]: the meeting's MLS group and the identity rules around it.
//!
//! Identity binding (the impostor rule): every leaf's credential is a `BasicCredential`
//! whose identity is the member's 32-byte ed25519 public key, and the leaf's signature key
//! is that same key. A key package is accepted only if its credential is the public key of
//! the peer id of the connection it arrived on; a group message only if its MLS sender's
//! credential is the peer id of the connection that delivered it.
//!
//! Every call that changes MLS state leaves its writes in the [`Provider`]; the caller takes
//! them with [`Provider::take_delta`] and persists them atomically.

use libp2p::PeerId;
use openmls::framing::errors::{MessageDecryptionError, SecretTreeError};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, Ciphersuite, CredentialWithKey, GroupId, KeyPackage, KeyPackageIn,
    LeafNodeIndex, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, PURE_CIPHERTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent,
    ProtocolVersion, Sender, SenderRatchetConfiguration, StagedCommit, StagedWelcome,
};
use openmls::prelude::{ProcessMessageError, ValidationError};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider;
use openmls_traits::types::SignatureScheme;

use super::epoch_proof::{self, AUTHENTICATOR_HASH_LEN, SIGNATURE_LEN};
use super::media_keys::{NH, SFRAME_EXPORTER_LABEL};
use super::statements::{self, LeafBinding, Statement};
use super::{GroupError, Provider, SecurityCode};
use crate::identity::{Identity, peer_id_of, public_key_of};
use crate::invite::MeetingId;

/// The ciphersuite of every Conclave group.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// How many past epochs can still decrypt late application messages.
pub const MAX_PAST_EPOCHS: usize = 3;
/// MLS exporter label of the meeting secret that a kick rotates in.
pub const MEETING_SECRET_EXPORTER_LABEL: &str = "conclave meeting secret v1";
/// Largest MLS message accepted from the network.
pub const MAX_MLS_MESSAGE: usize = 60 * 1024;

/// Our MLS signer and credential, both from the installation identity.
pub struct MlsIdentity {
    signer: SignatureKeyPair,
    /// The same key as `signer`, for signing outside MLS ([`super::epoch_proof`]).
    signing: ed25519_dalek::SigningKey,
    credential: CredentialWithKey,
    peer_id: PeerId,
}

/// How far out of order a member's application messages may arrive. Each message to each
/// member takes one generation of the sender's ratchet, and a member sees only those sent to
/// it: a window of 16 chat lines to each of up to 24 members, with retries, spans a few
/// hundred generations. openmls's default tolerance (5) rejected lines of a pasted
/// document that arrived a little late.
fn sender_ratchet() -> SenderRatchetConfiguration {
    SenderRatchetConfiguration::new(1024, 4096)
}

impl std::fmt::Debug for MlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsIdentity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl MlsIdentity {
    /// The MLS view of the installation identity (same key).
    pub fn new(identity: &Identity) -> Self {
        let public = identity.public_key().to_bytes().to_vec();
        let signer = SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            identity.secret_bytes().to_vec(),
            public.clone(),
        );
        Self {
            signer,
            signing: ed25519_dalek::SigningKey::from_bytes(&identity.secret_bytes()),
            credential: CredentialWithKey {
                credential: BasicCredential::new(public.clone()).into(),
                signature_key: public.into(),
            },
            peer_id: identity.peer_id(),
        }
    }

    /// A key package for joining, serialized as an MLS message.
    pub fn key_package(&self, provider: &Provider) -> Result<Vec<u8>, GroupError> {
        let bundle = KeyPackage::builder()
            .build(CIPHERSUITE, provider, &self.signer, self.credential.clone())
            .map_err(GroupError::mls)?;
        serialize(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs `statement` about `subject` and its leaf ([`statements`]).
    pub fn sign_statement(
        &self,
        statement: Statement,
        meeting_id: MeetingId,
        subject: &PeerId,
        binding: &LeafBinding,
    ) -> [u8; SIGNATURE_LEN] {
        statements::sign(&self.signing, statement, meeting_id, subject, binding)
    }

    #[cfg(test)]
    pub(crate) fn with_credential_of(identity: &Identity, claimed: &Identity) -> Self {
        let mut me = Self::new(identity);
        let public = claimed.public_key().to_bytes().to_vec();
        me.credential.credential = BasicCredential::new(public).into();
        me
    }
}

/// A decoded MLS message from a peer.
#[derive(Debug)]
pub enum Received {
    /// Application data from the member at `sender` (leaf index).
    Application {
        /// Sender leaf.
        sender: u32,
        /// The plaintext.
        data: Vec<u8>,
    },
    /// A commit, validated as MLS and staged; apply with [`MeetingGroup::merge_staged`].
    /// Whether the meeting's rules allow it is the caller's question
    /// ([`MeetingGroup::contents`]).
    Commit {
        /// Leaf of the committer.
        sender: u32,
        /// The staged commit.
        staged: Box<StagedCommit>,
        /// The commit's authenticated data (signed by the committer with the commit).
        aad: Vec<u8>,
    },
}

/// What a received commit changes, read from its proposals against our current tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitContents {
    /// The peer of each added leaf; `None` for a credential that is not a well-formed
    /// Conclave credential (a member nobody could see in the roster).
    pub added: Vec<Option<PeerId>>,
    /// The leaves removed.
    pub removed: Vec<RemovedLeaf>,
    /// How many proposals are neither adds nor removals (Conclave commits have none).
    pub other_proposals: usize,
}

/// A leaf a commit removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedLeaf {
    /// Its index.
    pub leaf: u32,
    /// Its member (`None` for a leaf that is not in our tree or not well formed).
    pub peer: Option<PeerId>,
}

/// A commit we created, to be sent before [`MeetingGroup::merge_pending`].
#[derive(Debug, Clone)]
pub struct CommitOut {
    /// The commit, for the current members.
    pub commit: Vec<u8>,
    /// The welcome, for the added members (if any).
    pub welcome: Option<Vec<u8>>,
    /// The epoch the commit leaves (the one the receivers must be in).
    pub from_epoch: u64,
}

/// What a merged commit changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChanges {
    /// Members added (leaf, peer).
    pub added: Vec<(u32, PeerId)>,
    /// Members removed (leaf, peer).
    pub removed: Vec<(u32, PeerId)>,
    /// Whether we ourselves were removed.
    pub self_removed: bool,
}

/// A validated key package and the peer it belongs to.
#[derive(Debug, Clone)]
pub struct JoinerPackage {
    /// The joiner.
    pub peer: PeerId,
    key_package: KeyPackage,
}

/// One meeting's MLS group.
#[derive(Debug)]
pub struct MeetingGroup {
    group: MlsGroup,
}

fn serialize(message: &MlsMessageOut) -> Result<Vec<u8>, GroupError> {
    message.tls_serialize_detached().map_err(GroupError::mls)
}

fn deserialize(bytes: &[u8]) -> Result<MlsMessageIn, GroupError> {
    if bytes.len() > MAX_MLS_MESSAGE {
        return Err(GroupError::Malformed(format!(
            "{} bytes exceeds {MAX_MLS_MESSAGE}",
            bytes.len()
        )));
    }
    MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| GroupError::Malformed(e.to_string()))
}

/// The peer id a credential names, if it is a well-formed Conclave credential.
fn peer_of_credential(
    credential: &openmls::prelude::Credential,
    signature_key: &[u8],
) -> Option<PeerId> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    let public: [u8; 32] = basic.identity().try_into().ok()?;
    if signature_key != public {
        return None;
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public).ok()?;
    Some(peer_id_of(&key))
}

/// Checks a key package received from `from`: valid MLS, our ciphersuite, and a credential
/// that is `from`'s own public key.
pub fn validate_key_package(
    provider: &Provider,
    bytes: &[u8],
    from: PeerId,
) -> Result<JoinerPackage, GroupError> {
    let MlsMessageBodyIn::KeyPackage(key_package) = deserialize(bytes)?.extract() else {
        return Err(GroupError::Malformed("expected a key package".into()));
    };
    let key_package: KeyPackage =
        KeyPackageIn::validate(key_package, provider.crypto(), ProtocolVersion::Mls10)
            .map_err(GroupError::mls)?;
    if key_package.ciphersuite() != CIPHERSUITE {
        return Err(GroupError::Malformed("unsupported ciphersuite".into()));
    }
    let leaf = key_package.leaf_node();
    match peer_of_credential(leaf.credential(), leaf.signature_key().as_slice()) {
        Some(peer) if peer == from => Ok(JoinerPackage { peer, key_package }),
        _ => Err(GroupError::Impostor { peer: from }),
    }
}

impl JoinerPackage {
    /// A key package taken as it is, without the credential check (tests of a malicious
    /// committer, which adds whatever it likes).
    #[cfg(test)]
    pub(crate) fn unchecked(provider: &Provider, bytes: &[u8], peer: PeerId) -> Self {
        let MlsMessageBodyIn::KeyPackage(key_package) = deserialize(bytes).unwrap().extract()
        else {
            panic!("not a key package");
        };
        let key_package =
            KeyPackageIn::validate(key_package, provider.crypto(), ProtocolVersion::Mls10).unwrap();
        Self { peer, key_package }
    }
}

impl MeetingGroup {
    /// Creates the meeting's group with us as its only member (leaf 0).
    pub fn create(
        provider: &Provider,
        me: &MlsIdentity,
        meeting_id: MeetingId,
    ) -> Result<Self, GroupError> {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .sender_ratchet_configuration(sender_ratchet())
            .build();
        let group = MlsGroup::new_with_group_id(
            provider,
            &me.signer,
            &config,
            GroupId::from_slice(&meeting_id.0),
            me.credential.clone(),
        )
        .map_err(GroupError::mls)?;
        Ok(Self { group })
    }

    /// Joins from a welcome (which carries the ratchet tree).
    pub fn join(provider: &Provider, welcome: &[u8]) -> Result<Self, GroupError> {
        let MlsMessageBodyIn::Welcome(welcome) = deserialize(welcome)?.extract() else {
            return Err(GroupError::Malformed("expected a welcome".into()));
        };
        let config = MlsGroupJoinConfig::builder()
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .sender_ratchet_configuration(sender_ratchet())
            .build();
        let group = StagedWelcome::new_from_welcome(provider, &config, welcome, None)
            .map_err(GroupError::mls)?
            .into_group(provider)
            .map_err(GroupError::mls)?;
        let meeting = Self { group };
        // The welcome's tree must hold only well-formed Conclave credentials.
        if meeting
            .group
            .members()
            .any(|m| peer_of_credential(&m.credential, &m.signature_key).is_none())
        {
            return Err(GroupError::Malformed(
                "the group contains a malformed credential".into(),
            ));
        }
        Ok(meeting)
    }

    /// Reloads the group of `meeting_id` from storage, if we have one.
    pub fn load(provider: &Provider, meeting_id: MeetingId) -> Result<Option<Self>, GroupError> {
        Ok(
            MlsGroup::load(provider.storage(), &GroupId::from_slice(&meeting_id.0))
                .map_err(GroupError::mls)?
                .map(|group| Self { group }),
        )
    }

    /// Deletes this group's state from storage (before joining the meeting afresh).
    pub fn delete(mut self, provider: &Provider) -> Result<(), GroupError> {
        self.group
            .delete(provider.storage())
            .map_err(GroupError::mls)
    }

    /// Deletes any stored group of `meeting_id`.
    pub fn delete_stored(provider: &Provider, meeting_id: MeetingId) -> Result<(), GroupError> {
        if let Some(group) = Self::load(provider, meeting_id)? {
            group.delete(provider)?;
        }
        Ok(())
    }

    /// Whether this is the group of `meeting_id`.
    pub fn is_meeting(&self, meeting_id: MeetingId) -> bool {
        self.group.group_id().as_slice() == meeting_id.0
    }

    /// Current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.epoch().as_u64()
    }

    /// Our leaf index.
    pub fn own_leaf(&self) -> u32 {
        self.group.own_leaf_index().u32()
    }

    /// Whether we are still a member.
    pub fn is_active(&self) -> bool {
        self.group.is_active()
    }

    /// Members as (leaf index, peer id), in leaf order.
    pub fn members(&self) -> Vec<(u32, PeerId)> {
        let mut members: Vec<(u32, PeerId)> = self
            .group
            .members()
            .filter_map(|m| {
                peer_of_credential(&m.credential, &m.signature_key).map(|p| (m.index.u32(), p))
            })
            .collect();
        members.sort();
        members
    }

    /// The leaf of `peer`, if it is a member.
    pub fn leaf_of(&self, peer: &PeerId) -> Option<u32> {
        self.members()
            .into_iter()
            .find(|(_, p)| p == peer)
            .map(|(leaf, _)| leaf)
    }

    /// The peer at `leaf`.
    pub fn peer_at(&self, leaf: u32) -> Option<PeerId> {
        self.group
            .member_at(LeafNodeIndex::new(leaf))
            .and_then(|m| peer_of_credential(&m.credential, &m.signature_key))
    }

    /// What statements about `peer`'s current leaf are bound to ([`statements`]).
    pub fn leaf_binding(&self, peer: &PeerId) -> Option<LeafBinding> {
        self.group
            .members()
            .find(|m| peer_of_credential(&m.credential, &m.signature_key).as_ref() == Some(peer))
            .map(|m| statements::leaf_binding(&m.encryption_key))
    }

    /// What `staged` (a commit received in our current epoch) adds and removes.
    pub fn contents(&self, staged: &StagedCommit) -> CommitContents {
        let added = staged
            .add_proposals()
            .map(|add| {
                let leaf = add.add_proposal().key_package().leaf_node();
                peer_of_credential(leaf.credential(), leaf.signature_key().as_slice())
            })
            .collect();
        let removed = staged
            .remove_proposals()
            .map(|remove| {
                let leaf = remove.remove_proposal().removed().u32();
                RemovedLeaf {
                    leaf,
                    peer: self.peer_at(leaf),
                }
            })
            .collect();
        let counted = staged.add_proposals().count() + staged.remove_proposals().count();
        CommitContents {
            added,
            removed,
            other_proposals: staged.queued_proposals().count().saturating_sub(counted),
        }
    }

    /// The security code of the current epoch.
    pub fn security_code(&self) -> SecurityCode {
        SecurityCode::from_authenticator(self.group.epoch_authenticator().as_slice())
    }

    /// Our signed epoch proof for the current epoch: the authenticator hash and our leaf
    /// key's signature of it ([`super::epoch_proof`]).
    pub fn epoch_proof(
        &self,
        me: &MlsIdentity,
        meeting_id: MeetingId,
    ) -> ([u8; AUTHENTICATOR_HASH_LEN], [u8; SIGNATURE_LEN]) {
        let epoch = self.epoch();
        let hash = self.authenticator_hash(meeting_id);
        (
            hash,
            epoch_proof::sign(&me.signing, meeting_id, epoch, &hash),
        )
    }

    /// The hash of the current epoch's authenticator, as epoch proofs carry it.
    pub fn authenticator_hash(&self, meeting_id: MeetingId) -> [u8; AUTHENTICATOR_HASH_LEN] {
        epoch_proof::authenticator_hash(
            meeting_id,
            self.epoch(),
            self.group.epoch_authenticator().as_slice(),
        )
    }

    /// Whether `signature` is `peer`'s epoch proof of (`epoch`, `hash`), verified with the
    /// signature key of `peer`'s leaf in *our* tree (so `peer` must be a member here).
    pub fn verify_epoch_proof(
        &self,
        peer: &PeerId,
        meeting_id: MeetingId,
        epoch: u64,
        hash: &[u8; AUTHENTICATOR_HASH_LEN],
        signature: &[u8; SIGNATURE_LEN],
    ) -> bool {
        // The leaf key is the identity key of the peer id (identity binding): derive it from
        // the peer id and check that it is the signature key of `peer`'s leaf in our tree.
        let Some(key) = public_key_of(peer) else {
            return false;
        };
        let in_tree = self.group.members().any(|m| {
            m.signature_key.as_slice() == key.as_bytes()
                && peer_of_credential(&m.credential, &m.signature_key).as_ref() == Some(peer)
        });
        if !in_tree {
            return false;
        }
        epoch_proof::verify(&key, meeting_id, epoch, hash, signature)
    }

    /// The meeting secret that replaces the invite's after a kick: exported from the epoch
    /// the kick started, so every member that merged it derives the same one and the kicked
    /// member cannot (`docs/protocol.md` §6, "A kick locks the door").
    pub fn rotated_meeting_secret(
        &self,
        provider: &Provider,
        meeting_id: MeetingId,
    ) -> Result<crate::invite::MeetingSecret, GroupError> {
        let secret = zeroize::Zeroizing::new(
            self.group
                .export_secret(
                    provider.crypto(),
                    MEETING_SECRET_EXPORTER_LABEL,
                    &meeting_id.0,
                    32,
                )
                .map_err(GroupError::mls)?,
        );
        let bytes: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| GroupError::Mls("exporter returned a wrong length".into()))?;
        Ok(crate::invite::MeetingSecret::from_bytes(bytes))
    }

    /// The RFC 9605 §5.2 `sframe_epoch_secret` of the current epoch.
    pub fn media_epoch_secret(&self, provider: &Provider) -> Result<[u8; NH], GroupError> {
        let secret = self
            .group
            .export_secret(provider.crypto(), SFRAME_EXPORTER_LABEL, &[], NH)
            .map_err(GroupError::mls)?;
        secret
            .try_into()
            .map_err(|_| GroupError::Mls("exporter returned a wrong length".into()))
    }

    /// Commits adding `adds` and removing `removes` in one commit, with `aad` as its
    /// authenticated data. The commit is pending until [`Self::merge_pending`] (after the
    /// members acknowledged) or [`Self::clear_pending`].
    pub fn commit(
        &mut self,
        provider: &Provider,
        me: &MlsIdentity,
        adds: Vec<JoinerPackage>,
        removes: Vec<u32>,
        aad: Vec<u8>,
    ) -> Result<CommitOut, GroupError> {
        let from_epoch = self.epoch();
        self.group.set_aad(aad);
        let bundle = self.build_commit(provider, me, adds, removes);
        // openmls clears the AAD only on success: never let it reach a later message.
        self.group.set_aad(Vec::new());
        let (commit, welcome, _) = bundle?.into_messages();
        Ok(CommitOut {
            commit: serialize(&commit)?,
            welcome: welcome.as_ref().map(serialize).transpose()?,
            from_epoch,
        })
    }

    fn build_commit(
        &mut self,
        provider: &Provider,
        me: &MlsIdentity,
        adds: Vec<JoinerPackage>,
        removes: Vec<u32>,
    ) -> Result<openmls::prelude::CommitMessageBundle, GroupError> {
        self.group
            .commit_builder()
            .propose_adds(adds.into_iter().map(|a| a.key_package))
            .propose_removals(removes.into_iter().map(LeafNodeIndex::new))
            .load_psks(provider.storage())
            .map_err(GroupError::mls)?
            .build(provider.rand(), provider.crypto(), &me.signer, |_| true)
            .map_err(GroupError::mls)?
            .stage_commit(provider)
            .map_err(GroupError::mls)
    }

    /// Applies our pending commit.
    pub fn merge_pending(&mut self, provider: &Provider) -> Result<GroupChanges, GroupError> {
        let planned = self
            .group
            .pending_commit()
            .map(|staged| self.planned_changes(staged))
            .ok_or_else(|| GroupError::Mls("no pending commit".into()))?;
        self.group
            .merge_pending_commit(provider)
            .map_err(GroupError::mls)?;
        Ok(self.settle(planned))
    }

    /// Drops our pending commit (a competing commit won).
    pub fn clear_pending(&mut self, provider: &Provider) -> Result<(), GroupError> {
        self.group
            .clear_pending_commit(provider.storage())
            .map_err(GroupError::mls)
    }

    /// Whether we have a commit pending.
    pub fn has_pending(&self) -> bool {
        self.group.pending_commit().is_some()
    }

    /// Applies a staged commit received from a peer.
    pub fn merge_staged(
        &mut self,
        provider: &Provider,
        staged: StagedCommit,
    ) -> Result<GroupChanges, GroupError> {
        let planned = self.planned_changes(&staged);
        self.group
            .merge_staged_commit(provider, staged)
            .map_err(GroupError::mls)?;
        Ok(self.settle(planned))
    }

    /// What a commit will change, read from its proposals (a member replaced by a new
    /// leaf of the same identity shows up in both lists, even at the same leaf index).
    fn planned_changes(&self, staged: &StagedCommit) -> (Vec<PeerId>, GroupChanges) {
        let added = staged
            .add_proposals()
            .filter_map(|add| {
                let leaf = add.add_proposal().key_package().leaf_node();
                peer_of_credential(leaf.credential(), leaf.signature_key().as_slice())
            })
            .collect();
        let removed = staged
            .remove_proposals()
            .filter_map(|remove| {
                let leaf = remove.remove_proposal().removed().u32();
                self.peer_at(leaf).map(|peer| (leaf, peer))
            })
            .collect();
        let changes = GroupChanges {
            added: Vec::new(),
            removed,
            self_removed: staged.self_removed(),
        };
        (added, changes)
    }

    fn settle(&self, (added, mut changes): (Vec<PeerId>, GroupChanges)) -> GroupChanges {
        changes.added = added
            .into_iter()
            .filter_map(|peer| self.leaf_of(&peer).map(|leaf| (leaf, peer)))
            .collect();
        changes.self_removed |= !self.group.is_active();
        changes
    }

    /// Encrypts application data for the group.
    pub fn encrypt(
        &mut self,
        provider: &Provider,
        me: &MlsIdentity,
        data: &[u8],
    ) -> Result<Vec<u8>, GroupError> {
        let message = self
            .group
            .create_message(provider, &me.signer, data)
            .map_err(GroupError::mls)?;
        serialize(&message)
    }

    /// Decodes a group message that arrived on a connection from `from`.
    pub fn receive(
        &mut self,
        provider: &Provider,
        bytes: &[u8],
        from: PeerId,
    ) -> Result<Received, GroupError> {
        let message = deserialize(bytes)?
            .try_into_protocol_message()
            .map_err(|e| GroupError::Malformed(e.to_string()))?;
        let epoch = message.epoch().as_u64();
        let current = self.epoch();
        if epoch > current {
            return Err(GroupError::WrongEpoch {
                got: epoch,
                current,
            });
        }
        let processed = self
            .group
            .process_message(provider, message)
            .map_err(|err| match err {
                // Outside the sender ratchet's window (it arrived too late, or too early):
                // nothing is wrong with it, it must be sent again.
                ProcessMessageError::ValidationError(ValidationError::UnableToDecrypt(
                    MessageDecryptionError::SecretTreeError(
                        SecretTreeError::TooDistantInThePast
                        | SecretTreeError::TooDistantInTheFuture,
                    ),
                )) => GroupError::OutOfOrder,
                other => GroupError::mls(other),
            })?;
        let Sender::Member(leaf) = processed.sender().clone() else {
            return Err(GroupError::Malformed("sender is not a member".into()));
        };
        let sender = leaf.u32();
        let sender_peer = self
            .group
            .member_at(leaf)
            .and_then(|m| peer_of_credential(&m.credential, &m.signature_key));
        if sender_peer != Some(from) {
            return Err(GroupError::Impostor { peer: from });
        }
        let aad = processed.aad().to_vec();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => Ok(Received::Application {
                sender,
                data: app.into_bytes(),
            }),
            ProcessedMessageContent::StagedCommitMessage(staged) => Ok(Received::Commit {
                sender,
                staged,
                aad,
            }),
            _ => Err(GroupError::Malformed(
                "proposals by reference are not used".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
