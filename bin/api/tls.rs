//! TLS for the API (`api_tls_cert`, `api_tls_key`), with rustls: the
//! certificate chain and key are read once, at the configuration check, so
//! a bad file stops `kiln serve` before anything starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The API's TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read a PEM certificate chain from {path}: {why}")]
    Cert { path: PathBuf, why: String },
    #[error("cannot read a PEM private key from {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("{cert} and {key} do not make a TLS server: {why}")]
    Config { cert: PathBuf, key: PathBuf, why: String },
}

/// The server's TLS configuration from a PEM certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert { path: cert.to_path_buf(), why: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Cert { path: cert.to_path_buf(), why: "no certificate in it".into() });
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key { path: key.to_path_buf(), why: e.to_string() })?;
    let config_error = |why: String| TlsError::Config { cert: cert.to_path_buf(), key: key.to_path_buf(), why };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| config_error(e.to_string()))?;
    Ok(Arc::new(config))
}
