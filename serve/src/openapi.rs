//! The OpenAPI 3.0 document served at `GET /openapi.json`.
//!
//! Written by hand with `serde_json::json!` rather than generated with `utoipa`: the API is
//! small, and a test (`document_lists_exactly_the_routes`) checks the document against the
//! router's own table ([`crate::routes::routes`]) in both directions, which is the part that
//! drifts.

use serde_json::{json, Value};

fn error_response(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The document: the API's metadata, its [`schemas`] and its [`paths`].
pub fn document() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "sasrec-serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Next-item recommendations from a SASRec / TiSASRec model exported by sasrec-export, on ONNX Runtime. Every error is {\"error\": {\"code\", \"message\"}}."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas()
        },
        "paths": paths()
    })
}

/// The request, response and error bodies (`components.schemas`).
fn schemas() -> Value {
    let mut all = recommend_schemas();
    if let (Some(all), Value::Object(items)) = (all.as_object_mut(), item_schemas()) {
        all.extend(items);
    }
    all
}

/// The bodies of `POST /v1/items`.
fn item_schemas() -> Value {
    json!({
        "AddItemsRequest": {"type": "object", "additionalProperties": false, "required": ["items"], "properties": {
            "items": {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": false, "required": ["id", "features"], "properties": {
                "id": {"$ref": "#/components/schemas/RawId"},
                "features": {"type": "object", "description": "{column: value} for the model's feature columns: token columns a string (|-separated when multi-valued) or a list of strings, numeric columns a number, dense columns a list of numbers; a missing column has no value"}
            }}, "description": "new ids are added (indices after the trained items); ids added before are updated; ids distinct, none a trained item"}
        }},
        "AddItemsResponse": {"type": "object", "required": ["model", "added", "updated", "trained_items", "added_items"], "properties": {
            "model": {"type": "string"},
            "added": {"type": "integer", "description": "items that were new"},
            "updated": {"type": "integer", "description": "items added before whose features were replaced"},
            "trained_items": {"type": "integer"},
            "added_items": {"type": "integer", "description": "added items in all, these included"}
        }}
    })
}

/// The bodies of `/recommend*` and `/similar`, and the error body.
fn recommend_schemas() -> Value {
    json!({
        "RawId": {"description": "a raw item id as in the training data", "oneOf": [{"type": "integer"}, {"type": "number"}, {"type": "string"}]},
        "RecommendRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["history"],
            "properties": {
                "history": {"type": "array", "items": {"$ref": "#/components/schemas/RawId"}, "description": "oldest first; only the newest maxlen known items are used; unknown ids are skipped and reported"},
                "timestamps": {"type": "array", "items": {"type": "integer", "format": "int64"}, "description": "unix seconds, one per history entry; required by time-aware models; when given the history is stably sorted by them"},
                "k": {"type": "integer", "minimum": 1, "default": 10, "description": "at most the number of items"},
                "exclude_seen": {"type": "boolean", "default": true, "description": "never recommend a known history item"},
                "candidates": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/RawId"}, "description": "rank only these items (unknown ids are skipped and reported)"},
                "exclude": {"type": "array", "items": {"$ref": "#/components/schemas/RawId"}, "description": "never recommend these items (unknown ids are skipped and reported)"}
            }
        },
        "ScoredItem": {"type": "object", "required": ["item", "score"], "properties": {
            "item": {"description": "raw id: a JSON number when it is a canonical unsigned integer, else a string", "oneOf": [{"type": "integer"}, {"type": "string"}]},
            "score": {"type": "number", "format": "float"}
        }},
        "RecommendResponse": {"type": "object", "required": ["items", "model", "unknown_items"], "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/ScoredItem"}, "description": "best first; fewer than k when exclusions leave fewer items"},
            "model": {"type": "string", "description": "<kind>@<first 12 hex digits of the checkpoint SHA-256>"},
            "unknown_items": {"type": "array", "items": {"$ref": "#/components/schemas/RawId"}, "description": "history, candidates and exclude entries not in the item map"}
        }},
        "SimilarRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["item"],
            "properties": {
                "item": {"$ref": "#/components/schemas/RawId"},
                "k": {"type": "integer", "minimum": 1, "default": 10, "description": "at most the number of items"},
                "exclude": {"type": "array", "items": {"$ref": "#/components/schemas/RawId"}, "description": "never return these items (unknown ids are skipped and reported)"}
            }
        },
        "SimilarResponse": {"type": "object", "required": ["model", "item", "items", "unknown_items"], "properties": {
            "model": {"type": "string", "description": "<kind>@<first 12 hex digits of the checkpoint SHA-256>"},
            "item": {"description": "the item asked about (raw id)", "oneOf": [{"type": "integer"}, {"type": "string"}]},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/ScoredItem"}, "description": "nearest first, without the item itself; score = v_a · v_i (--similar_metric ip) or v_a · v_i / (|v_a| |v_i|) (cosine); exact under --retrieval exact, from the ANN index under --retrieval ann"},
            "unknown_items": {"type": "array", "items": {"$ref": "#/components/schemas/RawId"}, "description": "exclude entries not in the item map"}
        }},
        "BatchRequest": {"type": "object", "additionalProperties": false, "required": ["requests"], "properties": {
            "requests": {"type": "array", "items": {"$ref": "#/components/schemas/RecommendRequest"}}
        }},
        "BatchResponse": {"type": "object", "required": ["responses"], "properties": {
            "responses": {"type": "array", "items": {"oneOf": [{"$ref": "#/components/schemas/RecommendResponse"}, {"$ref": "#/components/schemas/Error"}]}}
        }},
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}
            }}
        }}
    })
}

/// Every route of [`crate::routes::routes`] with its answers.
fn paths() -> Value {
    let client_errors = json!({
        "400": error_response("`invalid_json`: the body is not JSON, or not a JSON object"),
        "401": error_response("`unauthorized`: bearer token missing or wrong (only when the server has a token)"),
        "413": error_response("`payload_too_large`: body larger than --body_limit"),
        "415": error_response("`unsupported_media_type`: Content-Type is not application/json"),
        "422": error_response("`invalid_request` (wrong shape or type, unknown field), `invalid_k`, `invalid_history`, `invalid_candidates`, `invalid_exclude`, `missing_timestamps`, `length_mismatch`, `too_many_requests_in_batch`"),
        "503": error_response("`overloaded` (queue full) or `unavailable`; carries Retry-After"),
        "504": error_response("`timeout`: longer than --request_timeout_ms"),
    });
    let mut rec_responses = client_errors.clone();
    rec_responses["200"] = json!({"description": "top-k items", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecommendResponse"}}}});
    let mut similar_responses = client_errors.clone();
    similar_responses["200"] = json!({"description": "the k nearest items", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SimilarResponse"}}}});
    similar_responses["404"] = error_response("`no_item_vectors`: the model has no usable item vectors (exported before the two-tower files); the message says why");
    similar_responses["422"] = error_response("`invalid_request` (wrong shape or type, unknown field), `invalid_k`, `invalid_item` (not a string or number), `unknown_item` (not in the item map; the message names it), `invalid_exclude`");
    let mut batch_responses = client_errors;
    batch_responses["200"] = json!({"description": "one entry per request, in order; an invalid entry gets its own error object", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResponse"}}}});
    json!({
        "/recommend": json_post("Top-k next items for one history", "RecommendRequest", rec_responses),
        "/recommend/batch": json_post("Top-k next items for several histories", "BatchRequest", batch_responses),
        "/similar": json_post("The k items nearest to one item by the model's item vectors (inner product or cosine, --similar_metric)", "SimilarRequest", similar_responses),
        "/v1/model/reload": {"post": {
            "summary": "Load --model from disk again; the old model keeps serving if that fails (also on SIGHUP)",
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "reloaded", "content": {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}, "model": {"type": "string"}, "previous": {"type": "string"}}}}}},
                "401": error_response("`unauthorized`"),
                "500": error_response("`reload_failed`: the message says why; the previous model is still serving")
            }
        }},
        "/v1/items": {"post": {
            "summary": "Add items from their features (models exported with item features): embedded by item_tower.onnx, kept in the additions file, recommendable and readable in histories at once; requests in flight finish on the catalogue they started with",
            "security": [{"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AddItemsRequest"}}}},
            "responses": {
                "200": {"description": "added", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AddItemsResponse"}}}},
                "400": error_response("`invalid_json`"),
                "401": error_response("`unauthorized`"),
                "409": error_response("`no_additions`: the model has no item tower, or --max_added_items is 0"),
                "413": error_response("`payload_too_large`: body larger than --body_limit"),
                "422": error_response("`invalid_request` (wrong shape), `invalid_items` (no items, id not a string or number, repeated or trained id, more than --max_added_items), `invalid_features` (names the item and the column)"),
                "500": error_response("`add_failed`: the additions file could not be written; nothing was added")
            }
        }},
        "/v1/model": {"get": {"summary": "Metadata of the model serving (id, kind, maxlen, num_items, time_aware, intervals, device, paths, ONNX metadata_props, batching settings, retrieval: mode, user tower, item vectors, similar metric, ANN index parameters; items: trained, added, max_added, item tower, additions file)",
            "responses": {"200": {"description": "metadata", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "{\"status\": \"ok\"}"}}}},
        "/readyz": {"get": {"summary": "Readiness: a model is loaded and the server is not shutting down",
            "responses": {"200": {"description": "{\"status\": \"ready\", \"model\": ...}"}, "503": error_response("`unavailable`: shutting down")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (OpenMetrics text)", "responses": {"200": {"description": "metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.0 document"}}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_exactly_the_routes() {
        use std::collections::BTreeSet;
        let served: BTreeSet<(String, String)> = crate::routes::routes()
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        let doc = document();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        assert_eq!(served.len(), 10);
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let not_served: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "served, not documented: {undocumented:?}"
        );
        assert!(
            not_served.is_empty(),
            "documented, not served: {not_served:?}"
        );
        // The protected routes are the ones the document marks with the bearer scheme.
        for r in crate::routes::routes() {
            let op = &doc["paths"][r.path][r.method];
            assert_eq!(
                op["security"].is_array(),
                r.protected,
                "{} {}",
                r.method,
                r.path
            );
        }
    }
}

/// A POST operation guarded by the bearer token whose JSON body is the component `schema`.
fn json_post(summary: &str, schema: &str, responses: Value) -> Value {
    json!({"post": {
        "summary": summary,
        "security": [{"bearer": []}],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
        "responses": responses
    }})
}
