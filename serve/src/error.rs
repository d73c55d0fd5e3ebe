//! Errors: [`ApiError`] (what an HTTP client sees), [`LoadError`] (loading a model) and
//! [`RunError`] (one inference run).
//!
//! Every error a client can cause is a 4xx whose body is
//! `{"error": {"code": "<machine-readable>", "message": "<what is wrong>"}}`. Internal failures
//! (ONNX Runtime refusing a batch) are a 500 with a generic message; the real error rides along
//! as a response extension ([`InternalError`]) and is logged by the middleware in
//! [`crate::routes`], so `into_response` has no side effects (axum's error-handling example).

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_json`: the body is not JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// 422 `invalid_request`: valid JSON of the wrong shape (missing field, wrong type,
    /// unknown field).
    #[error("{0}")]
    InvalidRequest(String),
    /// 422 with a specific code: a field is well-typed but invalid (`invalid_k`,
    /// `invalid_history`, `invalid_candidates`, `invalid_exclude`, `missing_timestamps`,
    /// `length_mismatch`, `too_many_requests_in_batch`).
    #[error("{message}")]
    Invalid {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `unsupported_media_type`: no `Content-Type: application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 401 `unauthorized`: missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 404 `not_found`.
    #[error("no route for {0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 503 `overloaded` with `Retry-After`: the request queue is full.
    #[error("the request queue is full ({0} waiting); retry later")]
    Overloaded(usize),
    /// 503 `unavailable`: the server is shutting down or the model is being replaced.
    #[error("{0}")]
    Unavailable(String),
    /// 504 `timeout`: the request took longer than `--request_timeout_ms`.
    #[error("the request did not finish within {0:?}")]
    Timeout(Duration),
    /// 500 `reload_failed`: `POST /v1/model/reload` could not load the model on disk; the old
    /// model keeps serving. The message is shown because only the operator can call reload.
    #[error("reload failed, still serving the previous model: {0}")]
    ReloadFailed(String),
    /// 500 `internal`: the message is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The real message of a 500, attached to the response for the logging middleware.
#[derive(Debug, Clone)]
pub struct InternalError(pub String);

/// `{"error": {...}}`.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

/// The `error` object of every error response.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Machine-readable code (`invalid_k`, `overloaded`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// Shorthand for [`ApiError::Invalid`].
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidRequest(_) | ApiError::Invalid { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ReloadFailed(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Invalid { code, .. } => code,
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Timeout(_) => "timeout",
            ApiError::ReloadFailed(_) => "reload_failed",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The message a client sees (generic for internal errors).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal server error (logged)".into(),
            e => e.to_string(),
        }
    }

    /// The `{"code", "message"}` object, as used in batch responses.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code().into(),
            message: self.public_message(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.detail(),
        };
        let mut res = (self.status(), axum::Json(body)).into_response();
        match &self {
            ApiError::Overloaded(_) | ApiError::Unavailable(_) => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Internal(msg) => {
                res.extensions_mut().insert(InternalError(msg.clone()));
            }
            _ => {}
        }
        res
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let msg = r.body_text();
        match r.status() {
            StatusCode::BAD_REQUEST => ApiError::InvalidJson(msg),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(msg),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(msg),
            // 422 and anything axum may add later: the body was read but is not what we expect.
            _ => ApiError::InvalidRequest(msg),
        }
    }
}

/// `axum::Json` whose rejection is an [`ApiError`], so malformed bodies get our error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(AppJson(v))
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Why a model could not be loaded (at start-up or on reload).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The ONNX Runtime shared library was not found or did not load.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// `--model` does not name a `.onnx` file or a directory holding `model.onnx`.
    #[error("model {path}: {msg}")]
    Path {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// `items.tsv` is missing or malformed.
    #[error("item map {path}: {source}")]
    Items {
        /// The `items.tsv` path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: sasrec_shared::Error,
    },
    /// ONNX Runtime refused the model file (builder errors are not `Send + Sync`, so they are
    /// kept as strings).
    #[error("loading {path} into ONNX Runtime: {msg}")]
    Session {
        /// The `.onnx` path.
        path: PathBuf,
        /// ONNX Runtime's message.
        msg: String,
    },
    /// The model's metadata or interface is not what `sasrec-export` writes.
    #[error("{path}: {msg}")]
    Metadata {
        /// The `.onnx` path.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// `--device cuda --strict_device` and CUDA could not be used.
    #[error("--device cuda: {0}")]
    Device(String),
}

/// Why one inference run failed (the job's clients get a 500, the message is logged).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// ONNX Runtime refused the binding or the run, or an output has another element type.
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
    /// A row or an output does not have the graph's shape.
    #[error("{0}")]
    Shape(String),
}
