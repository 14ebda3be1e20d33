//! The delivery client for `https` push services: HTTP/2 straight on the `h2` crate, one
//! TLS connection per push-service origin shared by every push to it (each push one
//! stream), so a push costs one stream and a few frames, not a pass through a general
//! client's layers (pool lookup, redirect policy, URL parsing again per request).
//!
//! Promises, as the general client (`reqwest`, kept for `http` endpoints) keeps them: a
//! host name may resolve to public addresses only (`public_dns`); the server's
//! certificate must chain to the public roots, or to the extra roots tests and
//! `pushchat bench` add; redirects are never followed (a 3xx is just an answer). A
//! service that does not offer HTTP/2 in ALPN is answered [`Sent::NotHttp2`] with the push given back, and its
//! pushes go through the general client. A connection that ends (closed, refused, a
//! GOAWAY) is replaced by a new one at the next push; pushes on it when it ended fail
//! and are retried under the status policy.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{header::CONTENT_LENGTH, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use reqwest::dns::{Name, Resolve};
use tokio::net::TcpStream;
use tokio_rustls::{
    rustls::{self, pki_types::CertificateDer, pki_types::ServerName, RootCertStore},
    TlsConnector,
};

use super::public_dns::PublicOnly;

/// Why a push was not answered.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    #[error("the endpoint has no host")]
    NoHost,
    #[error("the host name is not a valid DNS name")]
    BadName,
    #[error("could not resolve the push service: {0}")]
    Resolve(String),
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error("could not connect")]
    Connect(#[from] std::io::Error),
    #[error("HTTP/2 failed")]
    Http2(#[from] h2::Error),
}

/// Why the client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("an extra trusted root is not a usable certificate")]
    Root(#[from] rustls::Error),
}

/// How a push service answered one push.
pub(super) enum Sent {
    Answered(StatusCode, HeaderMap),
    /// The service does not speak HTTP/2: send them with the general client.
    NotHttp2 {
        headers: HeaderMap,
        body: Vec<u8>,
    },
}

/// The connections, one per origin, shared behind [`Delivery`](super::Delivery).
pub(super) struct Http2Client {
    tls: TlsConnector,
    resolver: PublicOnly,
    connect_timeout: Duration,
    /// By origin (`push_origin`): the few push services in use.
    origins: Mutex<HashMap<Arc<str>, Arc<OriginConnection>>>,
}

/// One origin's connection, made by one push while the others wait for it.
#[derive(Default)]
struct OriginConnection {
    route: Mutex<Option<Route>>,
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
enum Route {
    Http2 {
        send: SendRequest<Bytes>,
        /// Set when the connection's task ends.
        closed: Arc<AtomicBool>,
    },
    Http1,
}

impl Route {
    fn usable(&self) -> bool {
        match self {
            Route::Http2 { closed, .. } => !closed.load(Ordering::Acquire),
            Route::Http1 => true,
        }
    }
}

impl Http2Client {
    /// A client trusting the public roots and `extra_roots` (DER).
    pub(super) fn new(
        resolver: PublicOnly,
        extra_roots: &[Vec<u8>],
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for root in extra_roots {
            roots.add(CertificateDer::from(root.clone()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Http2Client {
            tls: TlsConnector::from(Arc::new(config)),
            resolver,
            connect_timeout,
            origins: Mutex::default(),
        })
    }

    /// POSTs `body` with `headers` to `endpoint`, of `origin`, over the origin's
    /// connection (made first if it has none).
    pub(super) async fn post(
        &self,
        origin: &str,
        endpoint: &Uri,
        mut headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Sent, SendError> {
        let Route::Http2 { send, .. } = self.route(origin, endpoint).await? else {
            return Ok(Sent::NotHttp2 { headers, body });
        };
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = endpoint.clone();
        *request.headers_mut() = headers;
        let mut send = send.ready().await?;
        let (response, mut stream) = send.send_request(request, false)?;
        // Buffered by h2 until the stream and the connection have room for it.
        stream.send_data(Bytes::from(body), true)?;
        let (head, mut answer) = response.await?.into_parts();
        // Read to its end, handing the window back, so the connection's window does not
        // shrink answer after answer (a push service's answers are short, mostly empty).
        while let Some(chunk) = answer.data().await {
            answer.flow_control().release_capacity(chunk?.len())?;
        }
        Ok(Sent::Answered(head.status, head.headers))
    }

    /// The origin's route, connecting once for all the pushes that wait for it.
    async fn route(&self, origin: &str, endpoint: &Uri) -> Result<Route, SendError> {
        let connection = {
            let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
            match origins.get(origin) {
                Some(connection) => Arc::clone(connection),
                None => Arc::clone(origins.entry(origin.into()).or_default()),
            }
        };
        if let Some(route) = connection.usable_route() {
            return Ok(route);
        }
        let _connecting = connection.connecting.lock().await;
        if let Some(route) = connection.usable_route() {
            return Ok(route);
        }
        let route = tokio::time::timeout(self.connect_timeout, self.connect(endpoint))
            .await
            .map_err(|_| SendError::ConnectTimeout(self.connect_timeout))??;
        *connection.route.lock().unwrap_or_else(|p| p.into_inner()) = Some(route.clone());
        Ok(route)
    }

    async fn connect(&self, endpoint: &Uri) -> Result<Route, SendError> {
        let host = endpoint.host().ok_or(SendError::NoHost)?;
        let port = endpoint.port_u16().unwrap_or(443);
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = match bare_host.parse::<IpAddr>() {
            // `subscription` refused non-public addresses when it stored the endpoint.
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                let name = Name::from_str(host).map_err(|_| SendError::BadName)?;
                self.resolver
                    .resolve(name)
                    .await
                    .map_err(|error| SendError::Resolve(error.to_string()))?
                    .map(|address| SocketAddr::new(address.ip(), port))
                    .collect()
            }
        };
        let tcp = TcpStream::connect(addresses.as_slice()).await?;
        tcp.set_nodelay(true)?;
        let server_name =
            ServerName::try_from(bare_host.to_owned()).map_err(|_| SendError::BadName)?;
        let tls = self.tls.connect(server_name, tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Ok(Route::Http1);
        }
        let (send, connection) = h2::client::handshake(tls).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let closed_when_done = Arc::clone(&closed);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "a push service's HTTP/2 connection ended");
            }
            closed_when_done.store(true, Ordering::Release);
        });
        Ok(Route::Http2 { send, closed })
    }
}

impl OriginConnection {
    fn usable_route(&self) -> Option<Route> {
        self.route
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|route| route.usable())
            .cloned()
    }
}
