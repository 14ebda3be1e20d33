//! HTTPS for `serve --tls-cert PEM --tls-key PEM`, with rustls. Service workers, and so
//! push, need a secure context: off `localhost`, the page must come over HTTPS.
//!
//! [`TlsListener`] accepts TCP connections and completes each TLS handshake in a task of
//! its own (bounded by a timeout), so a client that stalls mid-handshake holds up nobody;
//! axum receives finished TLS streams. Each handshake is served the pair that
//! [`ServedCertificate`] holds at that moment, which `renewal` replaces when the files
//! are renewed: a certificate renews without a restart, and a broken new pair never
//! replaces a working one.

mod renewal;

use std::{io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};

use crate::config::TlsFiles;

pub use renewal::answer_hangups_without_tls;

/// Longer than any real client needs to say hello and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificates in --tls-cert {path}: {source}")]
    Certificates {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("--tls-cert {0} holds no certificate")]
    NoCertificate(String),
    #[error("cannot read a private key in --tls-key {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("--tls-cert {cert} and --tls-key {key} do not make a usable pair: {source}")]
    Mismatch {
        cert: String,
        key: String,
        source: rustls::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Setup(#[from] rustls::Error),
    #[error("cannot listen for HTTPS: {0}")]
    Listen(#[from] io::Error),
}

/// The certificate chain and key in `files` (PEM), checked to belong together.
fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let shown = |path: &Path| path.display().to_string();
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: shown(&files.cert),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(shown(&files.cert)));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Key {
        path: shown(&files.key),
        source,
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Mismatch {
        cert: shown(&files.cert),
        key: shown(&files.key),
        source,
    })
}

/// The pair new handshakes are served, replaced whole when the files are renewed.
/// Handshakes read it without a lock (`arc-swap`), so a renewal never waits on them.
#[derive(Debug)]
pub struct ServedCertificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl ServedCertificate {
    /// The pair in `files`, or why it cannot be served.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = load_pair(files, &provider)?;
        Ok(ServedCertificate {
            files: files.clone(),
            provider,
            current: ArcSwap::from_pointee(pair),
        })
    }

    /// Reads the files again and serves their pair from the next handshake on; a pair
    /// that cannot be served leaves the current one in place.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load_pair(&self.files, &self.provider)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    /// The TLS settings that serve this certificate, offering HTTP/2 and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A listener that hands out TLS streams whose handshake is done, and keeps its
/// certificate renewed while it listens.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
    renewing: JoinHandle<()>,
}

impl TlsListener {
    /// Serves `certificate` on `tcp`. From now on SIGHUP, or a change to its files,
    /// reloads it (see `renewal`).
    pub fn new(tcp: TcpListener, certificate: ServedCertificate) -> Result<Self, TlsError> {
        let local = tcp.local_addr()?;
        let certificate = Arc::new(certificate);
        let acceptor = TlsAcceptor::from(Arc::new(certificate.server_config()?));
        let renewing = renewal::keep_renewed(certificate)?;
        let (done, handshaken) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, done) = (acceptor.clone(), done.clone());
                tokio::spawn(async move {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => {
                            let _ = done.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            handshaken,
            local,
            accepting,
            renewing,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stop accepting: the port closes with the listener.
        self.accepting.abort();
        self.renewing.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accepting task ended, which only happens when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
