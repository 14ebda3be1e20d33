//! The TLS transport, as real push services answer: a self-signed certificate made at
//! start for `127.0.0.1` and `localhost` (a client trusts it by adding its DER as a root),
//! HTTP/2 and HTTP/1.1 offered over ALPN, and a listener that hands axum finished TLS
//! streams, so the same `axum::serve` and routes serve both transports.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    rustls::{
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
        ServerConfig,
    },
    server::TlsStream,
    TlsAcceptor,
};

/// Longer than any client on loopback needs to finish a handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The names the certificate is good for: the addresses endpoints are handed out on.
const NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A certificate made at start and the server settings that present it.
pub(crate) struct SelfSigned {
    /// The certificate, DER: what a client adds as a trusted root.
    pub(crate) der: Vec<u8>,
    pub(crate) config: ServerConfig,
}

impl SelfSigned {
    /// A fresh key pair and certificate, offered with ALPN `h2` then `http/1.1`.
    pub(crate) fn generate() -> io::Result<Self> {
        let made = rcgen::generate_simple_self_signed(NAMES.map(str::to_owned))
            .map_err(io::Error::other)?;
        let der = made.cert.der().to_vec();
        let key = PrivatePkcs8KeyDer::from(made.key_pair.serialize_der());
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder.with_no_client_auth().with_single_cert(
                    vec![CertificateDer::from(der.clone())],
                    PrivateKeyDer::Pkcs8(key),
                )
            })
            .map_err(io::Error::other)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(SelfSigned { der, config })
    }
}

/// A listener that hands out TLS streams whose handshake is done. Handshakes are done
/// one at a time, in `accept`: the only clients are tests and the bench on loopback, so a
/// handshake that stalls is a bug to see (it times out), not an attack to outlast.
pub(crate) struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, config: ServerConfig) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(config));
        TlsListener { tcp, acceptor }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // axum's own TCP listener waits out accept errors (out of descriptors, say).
            let (stream, peer) = axum::serve::Listener::accept(&mut self.tcp).await;
            let handshake = self.acceptor.accept(stream);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => return (tls, peer),
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
