//! The serving error type. Variants are grouped by what the caller can do about them, so
//! the HTTP layer maps each to one status code and a stable machine-readable `code`.

use axum::http::{header, HeaderValue, StatusCode};
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
    /// The service holds no clustering result to review (started without `--review`).
    #[error("{0}")]
    NoReview(String),
    /// The request raced a change published meanwhile and must be sent again.
    #[error("{0}")]
    Conflict(String),
    /// The upload did not arrive within the body timeout (a stalled or trickling client).
    #[error("{0}")]
    BodyTimeout(String),

    // --- the service or its environment is at fault (5xx) ---
    /// No deployment is loaded yet.
    #[error("{0}")]
    NotReady(String),
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Every inference slot is busy and the wait queue is full (or the wait ran out):
    /// answered 503 with `Retry-After`.
    #[error("the service is at capacity ({reason}): retry in {retry_after:?}")]
    Overloaded {
        retry_after: std::time::Duration,
        reason: String,
    },
    /// Reading or writing the registry failed.
    #[error("registry error at {location}: {reason}")]
    Registry { location: String, reason: String },
    /// Loading or running a network failed (a condition the service found).
    #[error("model error: {0}")]
    Model(String),
    /// The network, its weights or its artifact failed (the cause kept for the log).
    #[error("model error: {0}")]
    Network(#[source] facepipe_model::Error),
    /// Storage, I/O or a worker failed beneath the service (the cause kept for the log).
    #[error("internal error: {0}")]
    Pipeline(#[source] facepipe_pipeline::Error),
    #[error("internal error: {0}")]
    Internal(String),

    // --- starting the service ---
    /// The listening socket could not be opened (never an HTTP answer).
    #[error("cannot listen on {addr}: {source} (is another server using the port?)")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
            Error::NotFound(_) | Error::NoReview(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::NotReady(_) | Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Registry { .. }
            | Error::Model(_)
            | Error::Network(_)
            | Error::Pipeline(_)
            | Error::Internal(_)
            | Error::Listen { .. } => StatusCode::INTERNAL_SERVER_ERROR,
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
            Error::NoReview(_) => "no_review",
            Error::Conflict(_) => "conflict",
            Error::BodyTimeout(_) => "body_timeout",
            Error::NotReady(_) => "not_ready",
            Error::Timeout(_) => "timeout",
            Error::Overloaded { .. } => "overloaded",
            Error::Registry { .. } => "registry_error",
            Error::Model(_) | Error::Network(_) => "model_error",
            Error::Pipeline(_) => "internal_error",
            Error::Internal(_) => "internal_error",
            Error::Listen { .. } => "listen_error",
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
        // Exhaustive: a new pipeline variant must be given its answer here.
        match e {
            P::Unreadable { .. } => Error::BadImage(e.to_string()),
            P::TooLarge { .. } | P::TooManyBytes { .. } | P::LimitExceeded { .. } => {
                Error::TooLarge(e.to_string())
            }
            P::Invalid(_) | P::NoPhotos { .. } | P::NotAFolder { .. } => {
                Error::BadRequest(e.to_string())
            }
            P::NotFound(_) => Error::NotFound(e.to_string()),
            P::ModelsMissing { .. } | P::BadModel { .. } => Error::Model(e.to_string()),
            P::Storage { .. } | P::Worker(_) | P::Timeout(_) | P::Io { .. } | P::Json { .. } => {
                Error::Pipeline(e)
            }
        }
    }
}

impl From<facepipe_model::Error> for Error {
    fn from(e: facepipe_model::Error) -> Self {
        use facepipe_model::Error as M;
        match e {
            M::Pipeline(p) => Error::from(p),
            M::EmptyCrop { .. } => Error::BadImage(e.to_string()),
            // Only a deadline stops a recognition; callers that set one map it to their
            // timeout first, so reaching here is a bug.
            M::Cancelled => Error::Internal(e.to_string()),
            M::InputSize { .. }
            | M::BadArtifact { .. }
            | M::UnknownArch(_)
            | M::WeightsMismatch(_)
            | M::NothingToSave
            | M::OutputShape { .. }
            | M::SelfCheck
            | M::Torch(_)
            | M::Io { .. }
            | M::Json { .. } => Error::Network(e),
        }
    }
}

/// The JSON body of every error answer:
/// `{"error": {"code": "...", "message": "..."}, "request_id": "..."}` (plus
/// `retry_after_s` on 503 overload answers).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// The `x-request-id` of the request: quote it to the operator, who finds it in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Seconds to wait before retrying (the `Retry-After` header too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// A JSON error response with an explicit status and code (used for rejections the
/// framework produces before a handler runs).
pub fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_response(status, code, message.into(), None)
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: String,
    retry_after: Option<std::time::Duration>,
) -> Response {
    // Whole seconds, at least one: `Retry-After: 0` would invite an immediate retry storm.
    let retry_after_s = retry_after.map(|d| d.as_secs_f64().ceil().max(1.0) as u64);
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message,
        },
        request_id: crate::request::current_id(),
        retry_after_s,
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

impl Error {
    /// What the client is told. Failures of the service itself get a generic sentence (the
    /// detail can name files, hosts or internals); the log keeps the detail under the
    /// request id the answer carries.
    pub fn public_message(&self) -> String {
        match self {
            Error::Registry { .. }
            | Error::Model(_)
            | Error::Network(_)
            | Error::Pipeline(_)
            | Error::Internal(_)
            | Error::Listen { .. } => {
                "the service failed to answer this request; the failure is logged under the \
                 request id: quote it when reporting the problem"
                    .into()
            }
            Error::NotReady(_) => {
                "the service is not ready to answer yet (no deployment loaded): retry shortly"
                    .into()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let request_id = crate::request::current_id().unwrap_or_default();
        if matches!(self, Error::Overloaded { .. }) {
            // Shedding load is the service working as designed (counted in /metrics).
            tracing::debug!(code = self.code(), request_id, "{self}");
        } else if status.is_server_error() {
            tracing::error!(code = self.code(), request_id, "{self}");
        } else {
            tracing::debug!(code = self.code(), request_id, "{self}");
        }
        let retry_after = match &self {
            Error::Overloaded { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        error_response(status, self.code(), self.public_message(), retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_below_the_service_keep_their_cause_and_stay_out_of_the_answer() {
        let secret = "/srv/registry/models/abc/model.json";
        let io = std::io::Error::other("disk on fire");
        let cases = [
            Error::from(facepipe_model::Error::io(secret, io)),
            Error::from(facepipe_pipeline::Error::Storage {
                location: secret.into(),
                reason: "denied".into(),
            }),
            Error::from(facepipe_model::Error::Pipeline(
                facepipe_pipeline::Error::ModelsMissing {
                    dir: secret.into(),
                    hint: "install".into(),
                },
            )),
        ];
        for e in cases {
            assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR, "{e}");
            assert!(e.to_string().contains(secret), "the log names it: {e}");
            assert!(
                !e.public_message().contains(secret),
                "{}",
                e.public_message()
            );
        }
        let chained = Error::from(facepipe_model::Error::io(
            secret,
            std::io::Error::other("disk on fire"),
        ));
        let cause = std::error::Error::source(&chained).map(ToString::to_string);
        assert!(
            cause.is_some_and(|c| c.contains(secret)),
            "the cause is kept"
        );
    }

    #[test]
    fn bad_input_from_below_is_the_request_s_fault() {
        let e = Error::from(facepipe_model::Error::EmptyCrop {
            width: 0,
            height: 3,
        });
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = Error::from(facepipe_pipeline::Error::TooManyBytes {
            bytes: 10,
            limit: 5,
        });
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.public_message().contains("exceeds the limit"));
    }
}
