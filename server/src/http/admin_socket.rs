//! The admin API's local transport: a Unix socket in the data dir, `admin.sock`. The
//! server binds it next to its database; the operator's subcommands connect to it, so
//! they reach a running server without a token, a port or TLS, and only someone who may
//! read the data dir can.

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context};
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::{UnixListener, UnixStream};

use app::wire;

pub const SOCKET_FILE: &str = "admin.sock";

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Binds the data dir's socket, replacing a stale one (the caller holds the database's
/// lock, so no other server uses it), readable and writable by the owner only.
pub fn bind(data_dir: &Path) -> io::Result<UnixListener> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A client of a running server's admin socket.
pub struct AdminClient {
    path: PathBuf,
}

impl AdminClient {
    /// The server running on `data_dir`, if one answers on its socket.
    pub async fn connect(data_dir: &Path) -> Option<AdminClient> {
        let path = socket_path(data_dir);
        UnixStream::connect(&path).await.ok()?;
        Some(AdminClient { path })
    }

    pub async fn get<T: DeserializeOwned>(&self, route: &str) -> anyhow::Result<T> {
        self.call(Method::GET, route, Vec::new()).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        route: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.call(Method::POST, route, serde_json::to_vec(body)?)
            .await
    }

    /// One request on a fresh connection; a refusal becomes an error with the server's
    /// sentence; an empty answer reads as JSON `null` (for `()`).
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<T> {
        let lost = || format!("the server stopped answering on {}", self.path.display());
        let stream = UnixStream::connect(&self.path).await.with_context(lost)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(lost)?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(format!("/api/admin{route}"))
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(axum::body::Bytes::from(body)))?;
        let response = sender.send_request(request).await.with_context(lost)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(lost)?
            .to_bytes();
        if !status.is_success() {
            let refusal: Option<wire::ApiError> = serde_json::from_slice(&bytes).ok();
            return Err(match refusal {
                Some(refusal) => anyhow!(refusal.error),
                None => anyhow!("the server answered {status}"),
            });
        }
        let json: &[u8] = if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(json)
            .context("the server's answer is not what this pushchat expects")
    }
}
