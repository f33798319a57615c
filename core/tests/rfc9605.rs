//! The SFrame layer against the RFC 9605 test vectors (`tests/data/rfc9605-test-vectors.json`,
//! from RFC 9605 Appendix C): header encoding for every vector, and encryption/decryption for
//! the AES-GCM cipher suites Conclave's backend implements.

use std::convert::Infallible;

use sframe::CipherSuite;
use sframe::frame::{EncryptedFrameView, FrameCounter, MediaFrameView};
use sframe::header::SframeHeader;
use sframe::key::{DecryptionKey, EncryptionKey};

const VECTORS: &str = include_str!("data/rfc9605-test-vectors.json");

struct FixedCounter(u64);

impl FrameCounter for FixedCounter {
    type Error = Infallible;
    fn try_next(&mut self) -> Result<u64, Infallible> {
        Ok(self.0)
    }
}

fn hex(value: &serde_json::Value) -> Vec<u8> {
    hex::decode(value.as_str().expect("hex string")).expect("valid hex")
}

#[test]
fn headers_encode_and_decode_as_the_rfc_says() {
    let vectors: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let headers = vectors["header"].as_array().unwrap();
    assert_eq!(headers.len(), 289);
    for vector in headers {
        let (kid, ctr) = (
            vector["kid"].as_u64().unwrap(),
            vector["ctr"].as_u64().unwrap(),
        );
        let encoded = hex(&vector["encoded"]);
        let header = SframeHeader::new(kid, ctr);
        let mut buffer = vec![0u8; header.len()];
        header.serialize(&mut buffer).unwrap();
        assert_eq!(buffer, encoded, "kid {kid} ctr {ctr}");
        let decoded = SframeHeader::deserialize(&encoded).unwrap();
        assert_eq!((decoded.key_id(), decoded.counter()), (kid, ctr));
    }
}

#[test]
fn aes_gcm_frames_match_the_rfc_vectors() {
    let vectors: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let mut checked = Vec::new();
    for vector in vectors["sframe"].as_array().unwrap() {
        let suite = match vector["cipher_suite"].as_u64().unwrap() {
            4 => CipherSuite::AesGcm128Sha256,
            5 => CipherSuite::AesGcm256Sha512,
            _ => continue, // AES-CTR-HMAC suites: not implemented by the ring backend
        };
        let kid = vector["kid"].as_u64().unwrap();
        let ctr = vector["ctr"].as_u64().unwrap();
        let (base_key, metadata, pt, ct) = (
            hex(&vector["base_key"]),
            hex(&vector["metadata"]),
            hex(&vector["pt"]),
            hex(&vector["ct"]),
        );

        let key = EncryptionKey::derive_from(suite, kid, &base_key).unwrap();
        let frame =
            MediaFrameView::try_with_meta_data(&mut FixedCounter(ctr), &pt, &metadata).unwrap();
        let sealed = frame.encrypt(&key).unwrap();
        assert_eq!(
            sealed.sframe_cipher_text(),
            ct.as_slice(),
            "suite {suite:?}"
        );

        let key = DecryptionKey::derive_from(suite, kid, &base_key).unwrap();
        let opened = EncryptedFrameView::try_with_meta_data(&ct, &metadata)
            .unwrap()
            .decrypt(&key)
            .unwrap();
        assert_eq!(opened.payload(), pt.as_slice());
        checked.push(vector["cipher_suite"].as_u64().unwrap());
    }
    assert_eq!(checked, vec![4, 5], "both AES-GCM suites were checked");
}
