//! The route table, the handlers and the middleware.
//!
//! | route | auth | what |
//! | --- | --- | --- |
//! | `POST /recommend` | bearer (if configured) | top-k for one history |
//! | `POST /recommend/batch` | bearer (if configured) | top-k for several histories |
//! | `POST /similar` | bearer (if configured) | the items nearest to one item (item vectors) |
//! | `POST /v1/model/reload` | bearer (if configured) | load `--model` again, keep the old one on failure |
//! | `POST /v1/items` | bearer (if configured) | add items from their features ([`crate::catalogue`]) |
//! | `GET /v1/model` | | metadata of the model serving |
//! | `GET /healthz` | | 200 while the process runs |
//! | `GET /readyz` | | 200 with a model loaded, 503 while shutting down |
//! | `GET /metrics` | | Prometheus / OpenMetrics text |
//! | `GET /openapi.json` | | OpenAPI 3.0 document |
//!
//! Layers, innermost first (the last `.layer()` call is the outermost): the body limit
//! (`DefaultBodyLimit`, honoured by the JSON extractor, so an oversized body is a 413 with our
//! error body), the request timeout (504 `timeout`, our own middleware rather than
//! tower-http's `TimeoutLayer` so the answer carries the JSON error body), metrics + logging
//! of internal errors, and tower-http's `TraceLayer`.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tower_http::trace::TraceLayer;

use crate::api::{AddItemsRequest, AddItemsResponse, SimilarRequest, SimilarResponse};
use crate::api::{BatchItem, BatchRequest, BatchResponse, RecommendRequest, RecommendResponse};
use crate::batcher::{JobResult, Row, RowResult, SubmitError};
use crate::catalogue::NewItem;
use crate::error::{ApiError, AppJson, InternalError};
use crate::model::LoadedModel;
use crate::state::AppState;

/// One entry of the route table: what [`app`] serves and what the OpenAPI document must list.
pub struct Route {
    /// The method, lower case as in an OpenAPI document (`get`, `post`).
    pub method: &'static str,
    /// The path.
    pub path: &'static str,
    /// Behind the bearer token (`--auth_token`).
    pub protected: bool,
    handler: MethodRouter<AppState>,
}

/// The route table (module docs), in the order of the table above.
pub fn routes() -> Vec<Route> {
    let route = |method, path, protected, handler| Route {
        method,
        path,
        protected,
        handler,
    };
    vec![
        route("post", "/recommend", true, post(recommend)),
        route("post", "/recommend/batch", true, post(recommend_batch)),
        route("post", "/similar", true, post(similar)),
        route("post", "/v1/model/reload", true, post(reload)),
        route("post", "/v1/items", true, post(add_items)),
        route("get", "/v1/model", false, get(model_info)),
        route("get", "/healthz", false, get(healthz)),
        route("get", "/readyz", false, get(readyz)),
        route("get", "/metrics", false, get(metrics)),
        route("get", "/openapi.json", false, get(openapi)),
    ]
}

/// The application: every route of [`routes`] and the layers, bound to `state`. Tests drive it
/// without a socket (`tower::ServiceExt::oneshot`) or serve it on `127.0.0.1:0`.
pub fn app(state: AppState) -> Router {
    let (mut public, mut protected) = (Router::new(), Router::new());
    for r in routes() {
        if r.protected {
            protected = protected.route(r.path, r.handler);
        } else {
            public = public.route(r.path, r.handler);
        }
    }
    let protected =
        protected.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let body_limit = state.config().body_limit;
    public
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `POST /recommend`: validate, queue the row, answer with raw item ids.
async fn recommend(
    State(state): State<AppState>,
    AppJson(req): AppJson<RecommendRequest>,
) -> Result<AppJson<RecommendResponse>, ApiError> {
    let model = state.model();
    let p = model.prepare(&req)?;
    state.metrics().count_unknown(p.unknown.len());
    let rx = model
        .submit(vec![p.row])
        .map_err(|e| submit_error(&state, e))?;
    let mut rows = await_job(rx).await?;
    let row = rows
        .pop()
        .ok_or_else(|| ApiError::Internal("worker answered no rows".into()))?;
    Ok(AppJson(model.answer(row, p.unknown)))
}

/// `POST /similar`: validate, then rank on a blocking thread (exact mode scores every item),
/// answer with raw item ids.
async fn similar(
    State(state): State<AppState>,
    AppJson(req): AppJson<SimilarRequest>,
) -> Result<AppJson<SimilarResponse>, ApiError> {
    let model = state.model();
    let query = model.prepare_similar(&req)?;
    state.metrics().count_unknown(query.unknown.len());
    let answer = tokio::task::spawn_blocking(move || model.similar(query))
        .await
        .map_err(|e| ApiError::Internal(format!("similar task failed: {e}")))??;
    Ok(AppJson(answer))
}

/// `POST /recommend/batch`. Entries are validated one by one: an invalid entry gets its own
/// `{"error": ...}` in `responses` (the others are answered), while a body that is not a
/// `{"requests": [...]}` object, more than `--max_batch_requests` entries (422
/// `too_many_requests_in_batch`) or a full queue (503) fail the whole batch. The valid entries
/// travel as one job, so they share ONNX Runtime runs.
async fn recommend_batch(
    State(state): State<AppState>,
    AppJson(req): AppJson<BatchRequest>,
) -> Result<AppJson<BatchResponse>, ApiError> {
    check_batch_len(&state, &req)?;
    let model = state.model();
    let (rows, entries) = prepare_entries(&state, &model, &req.requests);
    let results = run_job(&state, &model, rows).await?;
    let responses = answer_entries(&model, entries, results)?;
    Ok(AppJson(BatchResponse { responses }))
}

/// At most `--max_batch_requests` entries, else 422 `too_many_requests_in_batch`.
fn check_batch_len(state: &AppState, req: &BatchRequest) -> Result<(), ApiError> {
    let max = state.config().max_batch_requests;
    if req.requests.len() > max {
        return Err(ApiError::invalid(
            "too_many_requests_in_batch",
            format!(
                "{} requests in one batch; at most {max} (--max_batch_requests)",
                req.requests.len()
            ),
        ));
    }
    Ok(())
}

/// A batch entry after validation: its unknown items, or the error it alone gets.
type Entry = Result<Vec<serde_json::Value>, ApiError>;

/// Validates every entry: the rows of the valid ones (in order) and one [`Entry`] per request.
fn prepare_entries(
    state: &AppState,
    model: &LoadedModel,
    requests: &[RecommendRequest],
) -> (Vec<Row>, Vec<Entry>) {
    let mut rows = Vec::new();
    let mut entries = Vec::with_capacity(requests.len());
    for r in requests {
        match model.prepare(r) {
            Ok(p) => {
                state.metrics().count_unknown(p.unknown.len());
                rows.push(p.row);
                entries.push(Ok(p.unknown));
            }
            Err(e) => entries.push(Err(e)),
        }
    }
    (rows, entries)
}

/// Runs `rows` as one job (none when there are no rows) and checks one result per row.
async fn run_job(
    state: &AppState,
    model: &LoadedModel,
    rows: Vec<Row>,
) -> Result<Vec<RowResult>, ApiError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let n = rows.len();
    let rx = model.submit(rows).map_err(|e| submit_error(state, e))?;
    let results = await_job(rx).await?;
    if results.len() != n {
        return Err(ApiError::Internal(format!(
            "worker answered {} rows for {n}",
            results.len()
        )));
    }
    Ok(results)
}

/// One [`BatchItem`] per entry: the valid entries take the results in order.
fn answer_entries(
    model: &LoadedModel,
    entries: Vec<Entry>,
    results: Vec<RowResult>,
) -> Result<Vec<BatchItem>, ApiError> {
    let mut results = results.into_iter();
    entries
        .into_iter()
        .map(|entry| match entry {
            Ok(unknown) => results
                .next()
                .map(|r| BatchItem::Ok(model.answer(r, unknown)))
                .ok_or_else(|| ApiError::Internal("worker answered too few rows".into())),
            Err(e) => Ok(BatchItem::Err { error: e.detail() }),
        })
        .collect()
}

fn submit_error(state: &AppState, e: SubmitError) -> ApiError {
    match e {
        SubmitError::Full(n) => {
            state.metrics().rejected.inc();
            ApiError::Overloaded(n)
        }
        SubmitError::Closed => ApiError::Unavailable("the model is being replaced; retry".into()),
    }
}

async fn await_job(
    rx: tokio::sync::oneshot::Receiver<JobResult>,
) -> Result<Vec<RowResult>, ApiError> {
    rx.await
        .map_err(|_| ApiError::Internal("inference worker dropped the job".into()))?
        .map_err(ApiError::Internal)
}

async fn reload(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match state.reload().await {
        Ok(r) => Ok(Json(
            json!({"status": "reloaded", "model": r.model, "previous": r.previous}),
        )),
        Err(e) => Err(ApiError::ReloadFailed(e.to_string())),
    }
}

/// `POST /v1/items`: adds items from their features (or updates items added before) and
/// swaps the extended catalogue in ([`AppState::add_items`]).
async fn add_items(
    State(state): State<AppState>,
    AppJson(req): AppJson<AddItemsRequest>,
) -> Result<AppJson<AddItemsResponse>, ApiError> {
    let items = new_items(req)?;
    Ok(AppJson(state.add_items(items).await?))
}

/// The items of a `POST /v1/items` body with their ids as item-map keys: at least one, ids
/// JSON strings or numbers (422 `invalid_items` otherwise).
fn new_items(req: AddItemsRequest) -> Result<Vec<NewItem>, ApiError> {
    if req.items.is_empty() {
        return Err(ApiError::invalid(
            "invalid_items",
            "items = []: add at least one item",
        ));
    }
    req.items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let id = crate::api::history_key(&item.id).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_items",
                    format!(
                        "items[{i}].id = {}: item ids must be JSON strings or numbers",
                        item.id
                    ),
                )
            })?;
            Ok(NewItem {
                id,
                features: item.features,
            })
        })
        .collect()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_shutting_down() {
        return ApiError::Unavailable("shutting down".into()).into_response();
    }
    Json(json!({"status": "ready", "model": state.model().id()})).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics().render(state.model().queue_len());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `GET /v1/model`: [`ModelInfo`](crate::model::ModelInfo) plus the batching settings.
async fn model_info(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut v = to_json(state.model().info())?;
    if let Some(o) = v.as_object_mut() {
        o.insert("batching".into(), to_json(&state.config().batch)?);
    }
    Ok(Json(v))
}

/// `value` as JSON; a failure is a 500 `internal` whose message [`track`] logs.
fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value)
        .map_err(|e| ApiError::Internal(format!("serialising {}: {e}", std::any::type_name::<T>())))
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// 401 unless the request carries `Authorization: Bearer <token>` (when a token is set).
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.config().auth_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so timing does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config().request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// Counts the request and logs internal errors (whose message the client does not see).
///
/// A refusal that can leave the request body unread (401, 404, 405, 413, 415: answered before
/// or while reading it) carries `Connection: close` when the request has a body: hyper closes
/// such a connection after the answer anyway, and without the header a client would reuse it
/// and lose its next request (found by tests/fuzz_http.rs: a 70 kB body without a content type,
/// 415, then a broken pipe on the next request of the same client).
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let start = Instant::now();
    let mut res = next.run(req).await;
    if has_body
        && matches!(
            res.status(),
            StatusCode::UNAUTHORIZED
                | StatusCode::NOT_FOUND
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
        )
    {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(InternalError(msg)) = res.extensions().get::<InternalError>() {
        tracing::error!(%route, %method, error = %msg, "internal error");
    }
    let status = res.status();
    if status == StatusCode::INTERNAL_SERVER_ERROR || status.is_client_error() {
        tracing::debug!(%route, %method, status = status.as_u16(), "request failed");
    }
    state.metrics().observe_request(
        &route,
        &method,
        status.as_u16(),
        start.elapsed().as_secs_f64(),
    );
    res
}
