//! The serving error type. Variants are grouped by what the caller can do about them, so
//! the HTTP layer maps each to one status code and a stable machine-readable `code`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- the request is at fault (4xx) ---
    /// Bytes that are not a decodable image.
    #[error("{0}")]
    BadImage(String),
    /// An image (or a body) larger than the configured limits; refused before decoding.
    #[error("{0}")]
    TooLarge(String),
    /// A malformed request: missing field, bad parameter.
    #[error("{0}")]
    BadRequest(String),
    /// The image decoded but holds no face where one was required (enroll, verify).
    #[error("{0}")]
    NoFace(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),

    // --- the service or its environment is at fault (5xx) ---
    /// No deployment is loaded yet.
    #[error("{0}")]
    NotReady(String),
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Reading or writing the registry failed.
    #[error("registry error at {location}: {reason}")]
    Registry { location: String, reason: String },
    /// Loading or running a network failed.
    #[error("model error: {0}")]
    Model(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn registry(location: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::Registry {
            location: location.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadImage(_) | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NoFace(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Registry { .. } | Error::Model(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The stable code clients switch on (`error.code` in the JSON body).
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadImage(_) => "bad_image",
            Error::TooLarge(_) => "too_large",
            Error::BadRequest(_) => "bad_request",
            Error::NoFace(_) => "no_face",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::NotReady(_) => "not_ready",
            Error::Timeout(_) => "timeout",
            Error::Registry { .. } => "registry_error",
            Error::Model(_) => "model_error",
            Error::Internal(_) => "internal_error",
        }
    }

    /// True when the request is at fault (4xx), false for service failures.
    pub fn is_client_error(&self) -> bool {
        self.status().is_client_error()
    }
}

impl From<facepipe_pipeline::Error> for Error {
    fn from(e: facepipe_pipeline::Error) -> Self {
        use facepipe_pipeline::Error as P;
        // if-chains instead of a match: the pipeline may grow variants without breaking us.
        let msg = e.to_string();
        if matches!(e, P::Unreadable { .. }) {
            Error::BadImage(msg)
        } else if matches!(e, P::TooLarge { .. } | P::TooManyBytes { .. }) {
            Error::TooLarge(msg)
        } else if e.is_bad_input() {
            Error::BadRequest(msg)
        } else if matches!(e, P::NotFound(_)) {
            Error::NotFound(msg)
        } else if matches!(e, P::ModelsMissing { .. } | P::BadModel { .. }) {
            Error::Model(msg)
        } else {
            Error::Internal(msg)
        }
    }
}

/// The JSON body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// A JSON error response with an explicit status and code (used for rejections the
/// framework produces before a handler runs).
pub fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message: message.into(),
        },
    };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The client gets the message; the log keeps it too, for the operator.
            tracing::error!(code = self.code(), "{self}");
        } else {
            tracing::debug!(code = self.code(), "{self}");
        }
        json_error(status, self.code(), self.to_string())
    }
}
