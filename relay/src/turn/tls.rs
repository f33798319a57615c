//! The TURN-over-TLS certificate: read from the configured PEM files, or made self-signed
//! at first start and kept in the data directory, and the pin clients get for it.
//!
//! Clients pin the leaf certificate's SHA-256 ([`CertificatePin`]), which they receive
//! with their credentials over the authenticated libp2p channel, so no CA is needed; a
//! certificate from a site or public CA works the same. Rotating the certificate (new
//! files, then a restart) changes the pin: clients get the new one with their next
//! credentials, and connections made with the old pin fail their next TLS handshake
//! until then.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conclave_core::proto::turn::CertificatePin;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::info;

use super::TurnError;
use crate::config::TlsConfig;

/// File name of the generated certificate inside the data directory.
pub const CERT_FILE: &str = "tls.crt";
/// File name of the generated certificate's key inside the data directory.
pub const KEY_FILE: &str = "tls.key";

/// The TLS server side: the acceptor and the pin of its certificate.
pub(super) struct TlsIdentity {
    pub(super) acceptor: TlsAcceptor,
    pub(super) pin: CertificatePin,
}

/// The certificate and key of `config`, or those in `data_dir` (made self-signed for
/// `names` on first start).
pub(super) fn load_or_create(
    config: &TlsConfig,
    data_dir: &Path,
    names: Vec<String>,
) -> Result<TlsIdentity, TurnError> {
    let (cert_path, key_path) = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let (cert, key) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
            // One without the other (a crash between the two writes) is no use either.
            if !cert.exists() || !key.exists() {
                create_self_signed(&cert, &key, names)?;
            }
            (cert, key)
        }
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&cert_path, &e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(&cert_path, "no certificate in the file"));
    };
    let pin = CertificatePin::of(leaf);
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid(&key_path, &e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| invalid(&key_path, &e.to_string()))?;
    info!(cert = %cert_path.display(), %pin, "TURN over TLS certificate loaded");
    Ok(TlsIdentity {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        pin,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TurnError> {
    std::fs::read(path).map_err(|source| TurnError::TlsFile {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, reason: &str) -> TurnError {
    TurnError::TlsInvalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Makes a self-signed certificate for `names` and its key (mode 0600), replacing either
/// file left alone.
fn create_self_signed(cert: &Path, key: &Path, names: Vec<String>) -> Result<(), TurnError> {
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| invalid(cert, &format!("cannot make a certificate: {e}")))?;
    let io_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| TurnError::TlsFile { path, source }
    };
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(&cert.to_owned()))?;
    }
    // A key left alone by an interrupted first start is replaced with the new pair's.
    match std::fs::remove_file(key) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_err(&key.to_owned())(err)),
    }
    crate::private_file::write_private(key, generated.signing_key.serialize_pem().as_bytes())
        .map_err(io_err(&key.to_owned()))?;
    std::fs::write(cert, generated.cert.pem()).map_err(io_err(&cert.to_owned()))?;
    info!(cert = %cert.display(), "created a self-signed TURN over TLS certificate");
    Ok(())
}
