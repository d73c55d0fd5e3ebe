//! Errors: [`ApiError`] (what an HTTP client sees), [`LoadError`] (loading a model) and
//! [`RunError`] (one inference run).
//!
//! Every error a client can cause is a 4xx whose body is
//! `{"error": {"code": "<machine-readable>", "message": "<what is wrong>"}}`. Internal failures
//! (ONNX Runtime refusing a batch) are a 500 with a generic message; the real error rides along
//! as a response extension ([`InternalError`]) and is logged by the middleware in
//! [`crate::routes`], so `into_response` has no side effects (axum's error-handling example).

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// An error answered to an HTTP client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_json`: the body is not JSON, or JSON but not an object.
    #[error("{0}")]
    InvalidJson(String),
    /// 422 `invalid_request`: valid JSON of the wrong shape (missing field, wrong type,
    /// unknown field).
    #[error("{0}")]
    InvalidRequest(String),
    /// 422 with a specific code: a field is well-typed but invalid (`invalid_k`,
    /// `invalid_history`, `invalid_candidates`, `invalid_exclude`, `missing_timestamps`,
    /// `length_mismatch`, `too_many_requests_in_batch`, `invalid_item`, `unknown_item`).
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
    /// 404 `no_item_vectors`: `POST /similar` on a model whose item vectors are missing or
    /// unusable (exported before the two-tower files); the message says why.
    #[error("{0}")]
    NoItemVectors(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 with a specific code: the request cannot work on this model (`no_additions`:
    /// `POST /v1/items` on a model without an item tower, or with `--max_added_items 0`).
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
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
    /// 500 `add_failed`: `POST /v1/items` could not write the additions file; nothing was
    /// added. The message is shown because only the operator can add items.
    #[error("the items were not added: {0}")]
    AddFailed(String),
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
            ApiError::NotFound(_) | ApiError::NoItemVectors(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Overloaded(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ReloadFailed(_) | ApiError::AddFailed(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
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
            ApiError::NoItemVectors(_) => "no_item_vectors",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Timeout(_) => "timeout",
            ApiError::ReloadFailed(_) => "reload_failed",
            ApiError::AddFailed(_) => "add_failed",
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
///
/// As an extractor it takes only a JSON object: serde would also read a struct from a JSON
/// array of its fields in order (`[[1, 2]]` as `{"history": [1, 2]}`), and any other JSON
/// value (an array, a string, a number, `true`, `null`) is a 400 `invalid_json`, as a body that
/// is not JSON at all. As a response it is `axum::Json`, except that a value that does not
/// serialise is a 500 `internal` with our error body (logged by the middleware) rather than
/// axum's plain-text 500.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<JsonBody<T>>::from_request(req, state).await? {
            axum::Json(JsonBody::Object(v)) => Ok(AppJson(v)),
            axum::Json(JsonBody::Other(what)) => Err(ApiError::InvalidJson(format!(
                "the request body must be a JSON object, not {what}"
            ))),
        }
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(e) => ApiError::Internal(format!("serialising the response: {e}")).into_response(),
        }
    }
}

/// A JSON request body: `T` read from a JSON object, or which other kind of JSON value it was.
///
/// `T` reads the object's entries exactly as it would on its own (same errors, same paths in
/// them); only the other kinds, which serde would try as `T` too, are set apart.
enum JsonBody<T> {
    /// The body was an object.
    Object(T),
    /// The body was another JSON value: "an array", "a string", ...
    Other(&'static str),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonBody<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonBodyVisitor(PhantomData))
    }
}

/// A JSON array whose entries must be objects, each read as `T` by [`JsonBody`] (one pass, no
/// intermediate `serde_json::Value`); an entry of another kind is an error naming
/// `{field}[i]` and its kind.
pub(crate) fn object_entries<'de, D, T>(deserializer: D, field: &str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Vec::<JsonBody<T>>::deserialize(deserializer)?
        .into_iter()
        .enumerate()
        .map(|(i, entry)| match entry {
            JsonBody::Object(v) => Ok(v),
            JsonBody::Other(what) => Err(de::Error::custom(format!(
                "{field}[{i}] must be a JSON object, not {what}"
            ))),
        })
        .collect()
}

/// Tells a JSON object from the other values for [`JsonBody`].
struct JsonBodyVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for JsonBodyVisitor<T> {
    type Value = JsonBody<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(JsonBody::Object)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Read to the end, so that malformed JSON further on is still a syntax error.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(JsonBody::Other("an array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(JsonBody::Other("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(JsonBody::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(JsonBody::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(JsonBody::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(JsonBody::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(JsonBody::Other("null"))
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
    /// The two-tower files (user tower, item vectors) or the ANN index cannot be used; the
    /// message names the file.
    #[error("{0}")]
    Retrieval(String),
    /// The additions file cannot be read, or holds items that cannot be added; the message
    /// names the file (and line or item).
    #[error("added items {0}")]
    Additions(String),
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
    /// The ANN search refused a query.
    #[error("ANN search: {0}")]
    Retrieval(#[from] sasrec_ann::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BatchRequest, RecommendRequest};

    /// `AppJson`'s reading of a body: the status and error message it answers.
    fn read<T: DeserializeOwned>(body: &str) -> Result<T, (StatusCode, String)> {
        match axum::Json::<JsonBody<T>>::from_bytes(body.as_bytes()).map_err(ApiError::from) {
            Ok(axum::Json(JsonBody::Object(v))) => Ok(v),
            Ok(axum::Json(JsonBody::Other(what))) => Err((StatusCode::BAD_REQUEST, what.into())),
            Err(e) => Err((e.status(), e.to_string())),
        }
    }

    /// What plain `axum::Json` answers.
    fn plain<T: DeserializeOwned>(body: &str) -> Result<T, (StatusCode, String)> {
        axum::Json::<T>::from_bytes(body.as_bytes())
            .map(|axum::Json(v)| v)
            .map_err(|r| {
                let e = ApiError::from(r);
                (e.status(), e.to_string())
            })
    }

    #[test]
    fn objects_read_exactly_as_plain_json_does() {
        let bodies = [
            r#"{"history": [1, "a"], "k": 3, "timestamps": [5, 6]}"#,
            r#"{"k": 5}"#,
            r#"{"history": [1], "exclude_Seen": false}"#,
            r#"{"history": [1], "k": "5"}"#,
            r#"{"history": [1], "timestamps": [1.5]}"#,
            r#"{"history": [1], "candidates": "x"}"#,
            r#"{"history": [1] "k": 2}"#,
            r#"{"history": [1]} trailing"#,
            r#"{"history": [1], "history": [2]}"#,
            r#"{"history": [1],"#,
        ];
        for body in bodies {
            assert_eq!(
                read::<RecommendRequest>(body),
                plain::<RecommendRequest>(body),
                "{body}"
            );
        }
        for body in [r#"{"requests": [{"history": []}]}"#, r#"{"requests": 3}"#] {
            assert_eq!(
                read::<BatchRequest>(body),
                plain::<BatchRequest>(body),
                "{body}"
            );
        }
    }

    #[test]
    fn other_json_values_are_invalid_json() {
        // What serde alone does: a struct read from a JSON array of its fields in order.
        assert!(plain::<RecommendRequest>("[[1, 2, 3]]").is_ok());
        for (body, what) in [
            ("[[1, 2, 3]]", "an array"),
            ("[1]", "an array"),
            ("[]", "an array"),
            (r#""history""#, "a string"),
            ("7", "a number"),
            ("-7", "a number"),
            ("7.5", "a number"),
            ("true", "a boolean"),
            ("null", "null"),
        ] {
            let got = read::<RecommendRequest>(body);
            assert_eq!(got, Err((StatusCode::BAD_REQUEST, what.into())), "{body}");
        }
        // Syntax errors inside an array stay syntax errors.
        let (status, msg) = read::<RecommendRequest>("[1, }").unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.contains("expected value"), "{msg}");
    }
}
