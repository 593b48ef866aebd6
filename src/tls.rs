//! The optional TLS listener for clients. rustls and its blocking stream
//! type keep the design synchronous: a TLS connection is served by the same
//! thread-per-connection code as a plain one, and only its handshake (bounded
//! by the auth timeout) happens first, on the worker. The certificate and key
//! (and the CA that client certificates must chain to, when set) are read at
//! startup and again on SIGHUP, so they can be rotated without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Where the TLS listener listens and what it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub addr: String,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate
    /// that chains to one of them.
    pub ca: Option<PathBuf>,
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {cause}", .path.display())]
    File { path: PathBuf, cause: String },
    #[error("{}: no certificate in the file", .0.display())]
    NoCertificate(PathBuf),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA {}: {cause}", .path.display())]
    ClientCa { path: PathBuf, cause: String },
}

/// The server side of TLS, its configuration swappable while running.
pub(crate) struct TlsAcceptor {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    pub(crate) fn new(settings: TlsSettings) -> Result<TlsAcceptor, TlsError> {
        let config = load(&settings)?;
        Ok(TlsAcceptor { settings, current: RwLock::new(Arc::new(config)) })
    }

    /// The configuration new connections use.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the files; on any error the current configuration stays.
    /// Connections already open keep the certificate they were served.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.settings)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }
}

fn load(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let certs = certificates(&settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| TlsError::File { path: settings.key.clone(), cause: e.to_string() })?;
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &settings.ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
    };
    Ok(builder.with_single_cert(certs, key)?)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error =
        |e: rustls::pki_types::pem::Error| TlsError::File { path: path.to_owned(), cause: e.to_string() };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(file_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa { path: ca.to_owned(), cause: e.to_string() })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::ClientCa { path: ca.to_owned(), cause: e.to_string() })
}

/// The client side of TLS (databus's own producer to a cluster's brokers):
/// the certificates of the `ca` file, or the system's when there is none,
/// and a client certificate and its key (PEM files) if given.
pub(crate) fn client_config(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::File { path: ca.to_owned(), cause: e.to_string() })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unreadable system certificate does not stop the others.
                let _ = roots.add(cert);
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsError::File { path: key.to_owned(), cause: e.to_string() })?;
            builder.with_client_auth_cert(certificates(cert)?, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
