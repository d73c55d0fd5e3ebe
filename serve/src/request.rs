//! A [`RecommendRequest`] turned into a graph [`Row`]: validation and the model inputs.
//!
//! # From request to row
//!
//! 1. `k` defaults to 10 and must lie in 1..=number of items (422 `invalid_k`).
//! 2. History entries must be JSON strings or numbers (422 `invalid_history`); numbers are
//!    looked up by their JSON text (`1193` → `"1193"`).
//! 3. `timestamps` are required by time-aware models (422 `missing_timestamps`) and, when
//!    present, must have one entry per history entry (422 `length_mismatch`). When present,
//!    the history is **stably sorted** by them, as training sorts each user's events, so
//!    out-of-order timestamps are accepted, not rejected.
//! 4. Entries not in the item map are skipped and reported in `unknown_items` (with their
//!    timestamps).
//! 5. `seq` is the newest `maxlen` known items, left-padded with 0
//!    ([`sasrec_shared::time::left_pad`]).
//! 6. Time-aware models: codes = `time_codes(unit, timestamps of all known entries)` (the
//!    personal scale uses the whole given history, as training uses the user's whole
//!    sequence), then `Intervals::window_matrix` — the function training and evaluation use.
//! 7. `exclude_seen` (default true) excludes every known history item, not only the window;
//!    `exclude` adds raw ids to that.
//! 8. `candidates`, when given, restricts the answer to those items (at least one, 422
//!    `invalid_candidates` otherwise); they are ranked by the same scores as the full ranking.
//! 9. `candidates` and `exclude` entries must be JSON strings or numbers (422
//!    `invalid_candidates` / `invalid_exclude`); ids not in the item map are skipped and
//!    reported in `unknown_items` after the history's.
//!
//! An empty known history (no entries, or only unknown ones) is not an error: the model
//! scores the all-padding sequence, which gives a fixed, history-independent ranking (what
//! the model learned as a prior); `unknown_items` tells the client why.
//!
//! # `/similar`
//!
//! [`prepare_similar`] applies rule 1 to `k`, then requires `item` to be a JSON string or
//! number (422 `invalid_item`) in the item map (422 `unknown_item`, naming it), then rule 9 to
//! `exclude`.

use std::collections::HashSet;

use sasrec_shared::run::ModelSpec;
use sasrec_shared::time::{left_pad, time_codes};

use crate::api::{self, RecommendRequest, SimilarRequest};
use crate::batcher::Row;
use crate::catalogue::Catalogue;
use crate::error::ApiError;

/// A request turned into a graph row.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The row for the batcher.
    pub row: Row,
    /// History entries not in the item map.
    pub unknown: Vec<serde_json::Value>,
}

/// Validates `req` for the model `id` with `spec` and item map `items`, and builds its graph
/// row (rules in the [module docs](self)). The steps run in the order of the rules, so the
/// first rule a request breaks names its error.
pub fn prepare(
    req: &RecommendRequest,
    spec: &ModelSpec,
    items: &Catalogue,
    id: &str,
) -> Result<Prepared, ApiError> {
    let k = check_k(req.k, items.len())?;
    check_timestamps(req, spec, id)?;
    let mut unknown = Unknown::default();
    let history = known_history(req, items, &mut unknown)?;
    let (seq, time_matrix) = model_inputs(spec, &history);
    let candidates = candidate_indices(req, items, &mut unknown)?;
    let exclude = excluded_indices(req, items, &history.items, &mut unknown)?;
    Ok(Prepared {
        row: Row {
            seq,
            time_matrix,
            exclude,
            candidates,
            k,
            added: None,
        },
        unknown: unknown.entries,
    })
}

/// A `/similar` request after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarQuery {
    /// The item index whose neighbours are asked for.
    pub item: u32,
    /// How many neighbours.
    pub k: usize,
    /// Item indices never returned (sorted, distinct).
    pub exclude: Vec<i64>,
    /// `exclude` entries not in the item map.
    pub unknown: Vec<serde_json::Value>,
}

/// Validates a `/similar` request against the item map `items` ([module docs](self)).
pub fn prepare_similar(req: &SimilarRequest, items: &Catalogue) -> Result<SimilarQuery, ApiError> {
    let k = check_k(req.k, items.len())?;
    let key = api::history_key(&req.item).ok_or_else(|| {
        ApiError::invalid(
            "invalid_item",
            format!(
                "item = {}: item ids must be JSON strings or numbers",
                req.item
            ),
        )
    })?;
    let item = items.index_of(&key).ok_or_else(|| {
        ApiError::invalid(
            "unknown_item",
            format!("item {}: not in the model's item map", req.item),
        )
    })?;
    let mut unknown = Unknown::default();
    let given = req.exclude.as_deref().unwrap_or_default();
    let exclude = known_indices(given, "exclude", "invalid_exclude", items, &mut unknown)?;
    Ok(SimilarQuery {
        item,
        k,
        exclude,
        unknown: unknown.entries,
    })
}

/// Rule 1: `k` (default 10) in 1..=`num_items`, else 422 `invalid_k`.
fn check_k(k: Option<i64>, num_items: usize) -> Result<usize, ApiError> {
    let k = k.unwrap_or(api::DEFAULT_K);
    if k < 1 || k > num_items as i64 {
        return Err(ApiError::invalid(
            "invalid_k",
            format!("k = {k}: must be between 1 and {num_items} (the number of items)"),
        ));
    }
    Ok(k as usize)
}

/// Rule 3: one timestamp per history entry when given (422 `length_mismatch`), and given for
/// time-aware models (422 `missing_timestamps`).
fn check_timestamps(req: &RecommendRequest, spec: &ModelSpec, id: &str) -> Result<(), ApiError> {
    match &req.timestamps {
        Some(ts) if ts.len() != req.history.len() => Err(ApiError::invalid(
            "length_mismatch",
            format!(
                "timestamps has {} entries but history has {}",
                ts.len(),
                req.history.len()
            ),
        )),
        None if spec.model.is_time_aware() => Err(ApiError::invalid(
            "missing_timestamps",
            format!(
                "model {id} is time-aware: `timestamps` (unix seconds, one per history entry) \
                 is required"
            ),
        )),
        _ => Ok(()),
    }
}

/// Entries not in the item map, each reported once (by item-map key), in the order met.
#[derive(Debug, Default)]
struct Unknown {
    /// The raw entries, as the client wrote them.
    entries: Vec<serde_json::Value>,
    /// Their item-map keys.
    seen: HashSet<String>,
}

impl Unknown {
    /// Records `raw` (key `key`) unless an entry with that key was recorded before.
    fn note(&mut self, key: &str, raw: &serde_json::Value) {
        if self.seen.insert(key.to_string()) {
            self.entries.push(raw.clone());
        }
    }
}

/// The known history entries in time order.
#[derive(Debug, Default)]
struct KnownHistory {
    /// Item indices, oldest first.
    items: Vec<i64>,
    /// Their timestamps (empty when the request has none).
    timestamps: Vec<i64>,
}

/// Rules 2–4: the history's item-map keys (422 `invalid_history` for an entry that is not a
/// string or number), stably sorted by timestamp when given, split into known items (with
/// their timestamps) and unknown entries (noted in `unknown`).
fn known_history(
    req: &RecommendRequest,
    items: &Catalogue,
    unknown: &mut Unknown,
) -> Result<KnownHistory, ApiError> {
    let keys = id_keys(&req.history, "history", "invalid_history")?;
    let mut known = KnownHistory {
        items: Vec::with_capacity(keys.len()),
        timestamps: Vec::with_capacity(keys.len()),
    };
    for i in time_order(req.timestamps.as_deref(), keys.len()) {
        match items.index_of(&keys[i]) {
            Some(idx) => {
                known.items.push(i64::from(idx));
                if let Some(ts) = &req.timestamps {
                    known.timestamps.push(ts[i]);
                }
            }
            None => unknown.note(&keys[i], &req.history[i]),
        }
    }
    Ok(known)
}

/// The positions `0..n`, stably sorted by `timestamps` when given, as training orders each
/// user's events.
fn time_order(timestamps: Option<&[i64]>, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(ts) = timestamps {
        order.sort_by_key(|&i| ts[i]);
    }
    order
}

/// Rules 5–6: `seq`, the newest `maxlen` (T) known items left-padded with 0, and for
/// time-aware models the T×T relation matrix `R[i][j] = min(|τᵢ − τⱼ|, k)` over the window,
/// with τ = `time_codes(unit, timestamps of all known entries)` (docs/MODELS.md §2.3), built
/// by `Intervals::window_matrix` as in training and evaluation.
fn model_inputs(spec: &ModelSpec, history: &KnownHistory) -> (Vec<i64>, Option<Vec<i64>>) {
    let t = spec.model.maxlen;
    let mut seq = vec![0i64; t];
    left_pad(&history.items, 0i64, &mut seq);
    let time_matrix = spec.intervals.map(|iv| {
        let mut out = vec![0i32; t * t];
        iv.window_matrix(&time_codes(iv.unit, &history.timestamps), t, &mut out);
        out.into_iter().map(i64::from).collect()
    });
    (seq, time_matrix)
}

/// Rule 8: the item indices of `candidates` (at least one entry, else 422
/// `invalid_candidates`), `None` to rank every item.
fn candidate_indices(
    req: &RecommendRequest,
    items: &Catalogue,
    unknown: &mut Unknown,
) -> Result<Option<Vec<i64>>, ApiError> {
    match &req.candidates {
        Some(c) if c.is_empty() => Err(ApiError::invalid(
            "invalid_candidates",
            "candidates = []: name at least one item, or leave the field out to rank all",
        )),
        Some(c) => known_indices(c, "candidates", "invalid_candidates", items, unknown).map(Some),
        None => Ok(None),
    }
}

/// Rule 7: the item indices of `exclude` plus, when `exclude_seen` (default true), every known
/// history item; sorted and distinct.
fn excluded_indices(
    req: &RecommendRequest,
    items: &Catalogue,
    history: &[i64],
    unknown: &mut Unknown,
) -> Result<Vec<i64>, ApiError> {
    let given = req.exclude.as_deref().unwrap_or_default();
    let mut exclude = known_indices(given, "exclude", "invalid_exclude", items, unknown)?;
    if req.exclude_seen.unwrap_or(true) {
        exclude.extend_from_slice(history);
        exclude.sort_unstable();
        exclude.dedup();
    }
    Ok(exclude)
}

/// Rule 9: the sorted, distinct item indices of raw ids (`candidates`, `exclude`: 422 `code`
/// for an entry that is not a string or number); ids not in the item map go to `unknown`.
fn known_indices(
    ids: &[serde_json::Value],
    field: &'static str,
    code: &'static str,
    items: &Catalogue,
    unknown: &mut Unknown,
) -> Result<Vec<i64>, ApiError> {
    let mut found = Vec::with_capacity(ids.len());
    for (key, raw) in id_keys(ids, field, code)?.iter().zip(ids) {
        match items.index_of(key) {
            Some(idx) => found.push(i64::from(idx)),
            None => unknown.note(key, raw),
        }
    }
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

/// The item-map keys of a list of raw ids (`history`, `candidates`, `exclude`): JSON strings
/// or numbers, else 422 with `code` naming the entry.
fn id_keys(
    ids: &[serde_json::Value],
    field: &'static str,
    code: &'static str,
) -> Result<Vec<String>, ApiError> {
    ids.iter()
        .enumerate()
        .map(|(i, v)| {
            api::history_key(v).ok_or_else(|| {
                ApiError::invalid(
                    code,
                    format!("{field}[{i}] = {v}: item ids must be JSON strings or numbers"),
                )
            })
        })
        .collect()
}
