//! The HTTP surface: the JSON API under `/api`, the server-rendered page, and the static
//! site (service worker, manifest, icons, wasm bundle). Handlers are thin: they parse,
//! call the chat's rules, hand any broadcast to delivery, and answer.

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, RawQuery, Request, State},
    http::{
        header::{CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS},
        HeaderValue, Method, StatusCode,
    },
    middleware,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use leptos_axum::{generate_route_list, LeptosRoutes};

use app::{
    wire::{
        AliveRequest, ChatLine, DeviceCode, HistoryPage, JoinRules, MemberCredentials, MuteRequest,
        Muted, PostLineRequest, ResubscribeRequest, RoomState, SubscribeRequest,
        UnsubscribeRequest, VapidPublicKey,
    },
    App,
};

use crate::{
    chat::{ChatError, OlderLines},
    http::{
        admin::{self, Exposure},
        client_address::ClientAddress,
        error::{ApiError, ApiJson},
        metrics,
        state::AppState,
        static_files,
    },
};

/// API request bodies are small: a subscription, or one message within the push budget.
const API_BODY_LIMIT: usize = 16 * 1024;

/// Every route of the server, in one place.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/vapid-public-key", get(vapid_public_key))
        .route("/join-rules", get(join_rules))
        .route("/room", get(room))
        .route("/subscribe", post(subscribe))
        .route("/init", post(init))
        .route("/resubscribe", post(resubscribe))
        .route("/unsubscribe", post(unsubscribe))
        .route("/device-code", post(device_code))
        .route("/chat", post(chat))
        .route("/history", post(history))
        .route("/mute", post(mute))
        .route("/alive", post(alive))
        .nest("/admin", admin::router(&state, Exposure::Public))
        .fallback(api_not_found)
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));

    let page = {
        let options = state.leptos.clone();
        move || app::shell(options.clone())
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(exposition))
        .nest("/api", api)
        .leptos_routes(&state, generate_route_list(App), page)
        .fallback(site_file_or_no_such_page)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.metrics),
            metrics::count_requests,
        ))
        .layer(middleware::map_response(security_headers))
        .layer(middleware::map_response(revalidate_by_default))
        .with_state(state)
}

/// The admin socket's routes: the whole admin API, without a token (see `admin`).
pub fn admin_socket_router(state: AppState) -> Router {
    Router::new()
        .nest("/api/admin", admin::router(&state, Exposure::Socket))
        .fallback(api_not_found)
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .with_state(state)
}

/// Headers every answer carries (the page adds its Content-Security-Policy itself, since it
/// names the page's nonce): no content-type sniffing, and no URL leaks to other sites.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Answers without a Cache-Control of their own (the page, the API) may be kept but must
/// be asked for again before every use: a stale page would load a bundle that is gone.
async fn revalidate_by_default(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static(static_files::REVALIDATE),
        );
    }
    response
}

/// A file of the site; anything else is a short page saying there is no such page (404),
/// with the way to the chat. The chat has one page, so the bundle carries no router.
async fn site_file_or_no_such_page(State(state): State<AppState>, request: Request) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        let path = request.uri().path();
        if let Some(file) = static_files::serve(&state.site, path, request.headers()).await {
            return file;
        }
    }
    (StatusCode::NOT_FOUND, Html(NO_SUCH_PAGE)).into_response()
}

const NO_SUCH_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
    <title>No such page · pushchat</title></head>\
    <body><p>There is no such page. <a href=\"/\">Open the chat</a></p></body></html>\n";

/// Up, and the store answers.
async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    match state.store.has_members().await {
        Ok(_) => Ok("ok\n"),
        Err(error) => {
            tracing::error!(error = ?error, "health check: the store cannot be read");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store cannot be read.",
            ))
        }
    }
}

async fn exposition(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let members = state.store.member_count().await.map_err(ChatError::from)?;
    let text = state.metrics.render(members);
    Ok(([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text))
}

async fn vapid_public_key(State(state): State<AppState>) -> Json<VapidPublicKey> {
    Json(VapidPublicKey {
        public_key: state.vapid.public_key_base64(),
    })
}

async fn join_rules(State(state): State<AppState>) -> Json<JoinRules> {
    Json(state.chat.join_rules())
}

/// The room for readers whose browser cannot receive pushes (no service worker or Push
/// API): they may read, not join.
async fn room(State(state): State<AppState>) -> Result<Json<RoomState>, ApiError> {
    Ok(Json(state.chat.public_room().await?))
}

async fn subscribe(
    State(state): State<AppState>,
    ClientAddress(from): ClientAddress,
    ApiJson(request): ApiJson<SubscribeRequest>,
) -> Result<Json<RoomState>, ApiError> {
    let (room, _queued) = state.chat.subscribe(request, from).await?;
    Ok(Json(room))
}

async fn init(
    State(state): State<AppState>,
    ClientAddress(from): ClientAddress,
    ApiJson(request): ApiJson<SubscribeRequest>,
) -> Result<Json<RoomState>, ApiError> {
    Ok(Json(state.chat.reopen(request, from).await?))
}

async fn resubscribe(
    State(state): State<AppState>,
    ClientAddress(from): ClientAddress,
    ApiJson(request): ApiJson<ResubscribeRequest>,
) -> Result<Json<RoomState>, ApiError> {
    Ok(Json(state.chat.resubscribe(request, from).await?))
}

async fn unsubscribe(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<UnsubscribeRequest>,
) -> Result<StatusCode, ApiError> {
    state.chat.unsubscribe(request).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn device_code(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<MemberCredentials>,
) -> Result<Json<DeviceCode>, ApiError> {
    Ok(Json(state.chat.device_code(request).await?))
}

async fn chat(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PostLineRequest>,
) -> Result<Json<ChatLine>, ApiError> {
    let (line, _queued) = state.chat.post_line(request).await?;
    Ok(Json(line))
}

/// Scroll-back: `?before=ID[&limit=N]`, with the member's credentials in the body (a
/// GET could carry them only in its URL, which logs keep).
async fn history(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ApiJson(member): ApiJson<MemberCredentials>,
) -> Result<Json<HistoryPage>, ApiError> {
    let request = OlderLines::from_query(query.as_deref().unwrap_or_default())?;
    Ok(Json(state.chat.older_lines(&member, request).await?))
}

async fn mute(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<MuteRequest>,
) -> Result<Json<Muted>, ApiError> {
    let muted_until = state.chat.mute(request).await?;
    Ok(Json(Muted { muted_until }))
}

/// The service worker's daily word that pushes reach its browser (see `chat::pruning`).
async fn alive(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<AliveRequest>,
) -> Result<StatusCode, ApiError> {
    state.chat.alive(request).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn api_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "There is no such API route; see the README for the API.",
    )
}
