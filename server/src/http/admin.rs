//! The operator's API under `/api/admin`: list, remove and ban members, push a notice,
//! and (on the admin socket only) read the whole store for a backup.
//!
//! It is served in two places. On the data dir's Unix socket, `admin.sock` (mode 0600:
//! whoever may read the data dir, which holds the private key, may manage the chat), for
//! the `pushchat` subcommands on the same machine. And on the public listener, only when
//! the operator configured `--admin-token`, behind `Authorization: Bearer TOKEN`; the
//! store's contents (every member's push secret) are never served there.

use std::time::UNIX_EPOCH;

use axum::{
    extract::{Request, State},
    http::{header::AUTHORIZATION, StatusCode},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::{
    chat::ChatError,
    http::{
        error::{ApiError, ApiJson},
        state::AppState,
    },
    model::member::Device,
    push::{DeliveryReport, Outcome},
    store::StoreContents,
};

/// `POST /api/admin/push`: a notice to the member called `to`, or to everyone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NoticeRequest {
    pub to: Option<String>,
    pub text: String,
}

/// The answer to a push: how its fan-out went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySummary {
    pub delivered: usize,
    pub gone: usize,
    pub failed: usize,
    pub retried: usize,
    pub elapsed_ms: u64,
}

impl From<&DeliveryReport> for DeliverySummary {
    fn from(report: &DeliveryReport) -> Self {
        DeliverySummary {
            delivered: report.delivered,
            gone: report.gone,
            failed: report.failed,
            retried: report.retried,
            elapsed_ms: report.elapsed.as_millis() as u64,
        }
    }
}

/// One line of `GET /api/admin/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSummary {
    pub name: String,
    /// The host of the member's push service.
    pub push_service: String,
    /// When it joined, in milliseconds since the Unix epoch.
    pub joined: u64,
    /// How the last push to it ended, since the server started.
    pub last_delivery: Option<LastDelivery>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastDelivery {
    pub outcome: Outcome,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// `POST /api/admin/members/remove`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub name: String,
    /// Also refuse the name to anyone who tries to join with it later.
    #[serde(default)]
    pub ban: bool,
}

/// `POST /api/admin/members/unban`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnbanRequest {
    pub name: String,
}

/// `GET /api/admin/vapid`: who pushes come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VapidIdentity {
    pub public_key: String,
    pub subject: String,
}

/// Where the admin API is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// The data dir's socket: everything, no token.
    Socket,
    /// The public listener: behind the bearer token, without the store's contents.
    Public,
}

/// The admin routes, to be nested under `/api/admin`.
pub fn router(state: &AppState, exposure: Exposure) -> Router<AppState> {
    let routes = Router::new()
        .route("/push", post(push))
        .route("/members", get(members))
        .route("/members/remove", post(remove))
        .route("/members/unban", post(unban))
        .route("/vapid", get(vapid));
    match exposure {
        Exposure::Socket => routes
            .route("/contents", get(contents))
            .route("/vapid-private-key", get(vapid_private_key)),
        Exposure::Public => {
            routes.layer(middleware::from_fn_with_state(state.clone(), require_token))
        }
    }
}

/// Lets a request through only with the configured token; without one the API is off.
async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "The admin API is off; start the server with --admin-token to use it.",
        ));
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "The admin API needs the operator's token: Authorization: Bearer TOKEN.",
        ))
    }
}

async fn push(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<NoticeRequest>,
) -> Result<Json<DeliverySummary>, ApiError> {
    let notice = state
        .chat
        .notice(request.to.as_deref(), &request.text)
        .await?;
    // Sent by this instance rather than queued, so the operator gets its report.
    let report = state.delivery.send(notice).await;
    Ok(Json(DeliverySummary::from(&report)))
}

async fn members(State(state): State<AppState>) -> Result<Json<Vec<MemberSummary>>, ApiError> {
    Ok(Json(member_summaries(&state).await?))
}

/// Every member's devices, sorted by name, with how the last push to each went.
pub async fn member_summaries(state: &AppState) -> Result<Vec<MemberSummary>, ApiError> {
    let devices = state.store.devices().await.map_err(ChatError::from)?;
    Ok(summarize(devices, |endpoint| {
        state
            .delivery
            .last_result(endpoint)
            .map(|last| LastDelivery {
                outcome: last.outcome,
                at: last
                    .at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64),
            })
    }))
}

/// `devices` as the operator sees them, sorted by name; `last_delivery` says how the last
/// push to an endpoint went, where that is known.
pub fn summarize(
    devices: Vec<Device>,
    last_delivery: impl Fn(&str) -> Option<LastDelivery>,
) -> Vec<MemberSummary> {
    let mut summaries: Vec<MemberSummary> = devices
        .into_iter()
        .map(|device| MemberSummary {
            last_delivery: last_delivery(&device.subscription.endpoint),
            push_service: push_service_host(&device.subscription.endpoint),
            name: device.name,
            joined: device.joined,
        })
        .collect();
    summaries.sort_by_cached_key(|summary| app::names::sort_key(&summary.name));
    summaries
}

/// The host of a push endpoint, which says which push service a member uses.
fn push_service_host(endpoint: &str) -> String {
    url::Url::parse(endpoint)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

async fn remove(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RemoveRequest>,
) -> Result<StatusCode, ApiError> {
    state.chat.remove_named(&request.name, request.ban).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unban(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<UnbanRequest>,
) -> Result<StatusCode, ApiError> {
    state.chat.unban(&request.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn vapid(State(state): State<AppState>) -> Json<VapidIdentity> {
    Json(VapidIdentity {
        public_key: state.vapid.public_key_base64(),
        subject: state.vapid.subject().to_owned(),
    })
}

async fn contents(State(state): State<AppState>) -> Result<Json<StoreContents>, ApiError> {
    let contents = state.store.contents().await.map_err(ChatError::from)?;
    Ok(Json(contents))
}

/// For a backup: the private key (PEM), which only the data dir's owner may read.
async fn vapid_private_key(
    State(state): State<AppState>,
) -> Result<Json<Option<String>>, ApiError> {
    let pem = state
        .store
        .vapid_private_key()
        .await
        .map_err(ChatError::from)?;
    Ok(Json(pem))
}
