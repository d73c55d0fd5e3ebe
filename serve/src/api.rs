//! Request and response bodies of `POST /recommend`, `POST /recommend/batch`,
//! `POST /similar` and `POST /v1/items`.

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetail;

/// Default number of recommendations.
pub const DEFAULT_K: i64 = 10;

/// `POST /recommend`.
///
/// Unknown fields are rejected (422 `invalid_request`) so that a misspelt option
/// (`"exclude_Seen"`) is not silently ignored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// Raw item ids as in the training data (JSON numbers or strings), oldest first.
    pub history: Vec<serde_json::Value>,
    /// Unix seconds, one per history entry. Required by time-aware models; optional otherwise.
    /// When given, the history is stably sorted by them (as training sorts each user's events).
    #[serde(default)]
    pub timestamps: Option<Vec<i64>>,
    /// How many items to return, 1..=number of items (default 10).
    #[serde(default)]
    pub k: Option<i64>,
    /// Exclude every known item of the history from the results (default true).
    #[serde(default)]
    pub exclude_seen: Option<bool>,
    /// Score only these items (raw ids); unknown ones are skipped and reported. At least one.
    #[serde(default)]
    pub candidates: Option<Vec<serde_json::Value>>,
    /// Never return these items (raw ids), beyond `exclude_seen`; unknown ones are skipped and
    /// reported.
    #[serde(default)]
    pub exclude: Option<Vec<serde_json::Value>>,
}

/// One recommended item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScoredItem {
    /// The raw item id: a JSON number when the id is a canonical unsigned integer, else a
    /// string.
    pub item: serde_json::Value,
    /// The model's score (higher is better).
    pub score: f32,
}

/// The answer to one recommendation request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecommendResponse {
    /// Best first; fewer than `k` when exclusions leave fewer items.
    pub items: Vec<ScoredItem>,
    /// `<kind>@<first 12 hex digits of the checkpoint's SHA-256>`.
    pub model: String,
    /// History, `candidates` and `exclude` entries not in the model's item map (skipped), in
    /// that order, without duplicates.
    pub unknown_items: Vec<serde_json::Value>,
}

/// `POST /similar`: the items nearest to one item by the item vectors (unknown fields are
/// rejected, as for `/recommend`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimilarRequest {
    /// The raw id of the item (JSON number or string).
    pub item: serde_json::Value,
    /// How many items to return, 1..=number of items (default 10).
    #[serde(default)]
    pub k: Option<i64>,
    /// Never return these items (raw ids); unknown ones are skipped and reported.
    #[serde(default)]
    pub exclude: Option<Vec<serde_json::Value>>,
}

/// The answer to `POST /similar`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimilarResponse {
    /// `<kind>@<first 12 hex digits of the checkpoint's SHA-256>`.
    pub model: String,
    /// The item asked about (raw id).
    pub item: serde_json::Value,
    /// The nearest items, best first, without the item itself: `score` is `v_a · v_i`
    /// (`--similar_metric ip`) or `v_a · v_i / (|v_a| |v_i|)` (`cosine`).
    pub items: Vec<ScoredItem>,
    /// `exclude` entries not in the model's item map (skipped), without duplicates.
    pub unknown_items: Vec<serde_json::Value>,
}

/// `POST /recommend/batch`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Independent requests, each a JSON object.
    #[serde(deserialize_with = "objects")]
    pub requests: Vec<RecommendRequest>,
}

/// A list of requests in which each entry is a JSON object: serde alone would also read a
/// request from an array of its fields in order (`[[1, 2]]` as `{"history": [1, 2]}`). Each
/// entry is read once, through the same object-only reader as whole bodies
/// ([`crate::error::object_entries`]).
fn objects<'de, D>(deserializer: D) -> Result<Vec<RecommendRequest>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    crate::error::object_entries(deserializer, "requests")
}

/// One entry of a batch answer: a response, or the error this entry alone caused.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum BatchItem {
    /// Success.
    Ok(RecommendResponse),
    /// `{"error": {"code", "message"}}` for this entry.
    Err {
        /// What went wrong with this entry.
        error: ErrorDetail,
    },
}

/// The answer to `POST /recommend/batch`: one entry per request, same order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchResponse {
    /// Per-request answers.
    pub responses: Vec<BatchItem>,
}

/// A raw id as it is written in the answer: a number when the token is a canonical unsigned
/// integer (`"2355"` → `2355`, but `"007"` stays a string), else a string.
pub fn raw_id_json(token: &str) -> serde_json::Value {
    match token.parse::<u64>() {
        Ok(n) if n.to_string() == token => serde_json::Value::from(n),
        _ => serde_json::Value::from(token),
    }
}

/// The item-map key of a history entry: strings as they are, numbers as their JSON text.
/// Anything else is `None`.
pub fn history_key(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ids_round_trip() {
        assert_eq!(raw_id_json("2355"), serde_json::json!(2355));
        assert_eq!(raw_id_json("007"), serde_json::json!("007"));
        assert_eq!(raw_id_json("tt0111161"), serde_json::json!("tt0111161"));
        assert_eq!(history_key(&serde_json::json!(1193)).unwrap(), "1193");
        assert_eq!(history_key(&serde_json::json!("a b")).unwrap(), "a b");
        assert_eq!(history_key(&serde_json::json!(null)), None);
    }

    #[test]
    fn batch_items_serialise_flat() {
        let e = BatchItem::Err {
            error: ErrorDetail {
                code: "invalid_k".into(),
                message: "m".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"error": {"code": "invalid_k", "message": "m"}})
        );
    }
}

/// `POST /v1/items`: items to add, or to update when added before.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AddItemsRequest {
    /// At least one item; ids distinct.
    pub items: Vec<AddItem>,
}

/// One item of [`AddItemsRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    /// The raw item id (JSON string or number, looked up as in histories).
    pub id: serde_json::Value,
    /// `{column: value}` for the model's feature columns: a token column takes a string
    /// (`|`-separated for multi-valued columns) or a list of strings, a numeric column a
    /// number, a dense column a list of numbers; a missing column is "no value".
    pub features: serde_json::Map<String, serde_json::Value>,
}

/// The answer to `POST /v1/items`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AddItemsResponse {
    /// The model now serving (the same checkpoint; its additions changed).
    pub model: String,
    /// Items that were new.
    pub added: usize,
    /// Items added before whose features were replaced.
    pub updated: usize,
    /// Items the model was trained on.
    pub trained_items: usize,
    /// Items added so far, these included.
    pub added_items: usize,
}
