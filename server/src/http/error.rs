//! The API's one error type: every refusal is an HTTP status with a JSON body
//! `{"error": "..."}` a person can read. Internal failures are logged in full and shown
//! only as a short apology, never with their detail.

use axum::{
    extract::rejection::JsonRejection,
    http::{header::RETRY_AFTER, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use app::wire;

use crate::chat::ChatError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Why a browser is not a member, for the page to act on.
    code: Option<wire::NotMember>,
    /// Seconds to wait before trying again, sent as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            code: None,
            retry_after: None,
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> Self {
        let status = match &error {
            ChatError::BadBefore | ChatError::BadLimit => StatusCode::BAD_REQUEST,
            ChatError::InvalidName(_)
            | ChatError::InvalidSubscription(_)
            | ChatError::EmptyMessage
            | ChatError::NulInMessage => StatusCode::UNPROCESSABLE_ENTITY,
            ChatError::NameTaken { .. }
            | ChatError::AlreadyMember(_)
            | ChatError::SubscriptionTaken => StatusCode::CONFLICT,
            ChatError::NotMember(why) => {
                let mut error = ApiError::new(StatusCode::NOT_FOUND, error.to_string());
                error.code = Some(*why);
                return error;
            }
            ChatError::NoSuchMember(_) | ChatError::NotBanned(_) => StatusCode::NOT_FOUND,
            ChatError::Banned(_)
            | ChatError::WrongPassphrase
            | ChatError::MembersOnly
            | ChatError::UnknownDeviceCode => StatusCode::FORBIDDEN,
            ChatError::WrongSecret => StatusCode::FORBIDDEN,
            ChatError::MessageTooLong(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ChatError::TooManyFromAddress(_) => StatusCode::TOO_MANY_REQUESTS,
            ChatError::TooMany { wait, .. } => {
                let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string());
                error.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
                return error;
            }
            ChatError::Store(source) => {
                tracing::error!(error = ?source, "store failure");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server could not save this; please try again.",
                );
            }
        };
        ApiError::new(status, error.to_string())
    }
}

/// A body that is not JSON, or not the JSON this route takes.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self
            .retry_after
            .map(|secs| [(RETRY_AFTER, secs.to_string())]);
        (
            self.status,
            retry_after,
            Json(wire::ApiError {
                error: self.message,
                code: self.code,
            }),
        )
            .into_response()
    }
}

/// `axum::Json`, but a rejected body answers in the API's error shape.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);
