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

use std::collections::HashSet;

use sasrec_shared::run::ModelSpec;
use sasrec_shared::time::{left_pad, time_codes};
use sasrec_shared::IdMap;

use crate::api::{self, RecommendRequest};
use crate::batcher::Row;
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
/// row (rules in the [module docs](self)).
pub fn prepare(
    req: &RecommendRequest,
    spec: &ModelSpec,
    items: &IdMap,
    id: &str,
) -> Result<Prepared, ApiError> {
    let k = req.k.unwrap_or(api::DEFAULT_K);
    if k < 1 || k > spec.model.num_items as i64 {
        return Err(ApiError::invalid(
            "invalid_k",
            format!(
                "k = {k}: must be between 1 and {} (the number of items)",
                spec.model.num_items
            ),
        ));
    }
    if let Some(ts) = &req.timestamps {
        if ts.len() != req.history.len() {
            return Err(ApiError::invalid(
                "length_mismatch",
                format!(
                    "timestamps has {} entries but history has {}",
                    ts.len(),
                    req.history.len()
                ),
            ));
        }
    } else if spec.model.is_time_aware() {
        return Err(ApiError::invalid(
            "missing_timestamps",
            format!(
                "model {} is time-aware: `timestamps` (unix seconds, one per history entry) \
                 is required",
                id
            ),
        ));
    }
    let keys = id_keys(&req.history, "history", "invalid_history")?;
    // Stable sort by time, as training orders each user's events.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    if let Some(ts) = &req.timestamps {
        order.sort_by_key(|&i| ts[i]);
    }
    let mut known = Vec::with_capacity(keys.len());
    let mut known_ts = Vec::with_capacity(keys.len());
    let mut unknown = Vec::new();
    let mut unknown_seen: HashSet<String> = HashSet::new();
    for &i in &order {
        match items.index_of(&keys[i]) {
            Some(idx) => {
                known.push(i64::from(idx));
                if let Some(ts) = &req.timestamps {
                    known_ts.push(ts[i]);
                }
            }
            None => {
                if unknown_seen.insert(keys[i].clone()) {
                    unknown.push(req.history[i].clone());
                }
            }
        }
    }
    let t = spec.model.maxlen;
    let mut seq = vec![0i64; t];
    left_pad(&known, 0i64, &mut seq);
    let time_matrix = spec.intervals.map(|iv| {
        let mut out = vec![0i32; t * t];
        iv.window_matrix(&time_codes(iv.unit, &known_ts), t, &mut out);
        out.into_iter().map(i64::from).collect()
    });
    let mut lookup = |field: &'static str, code: &'static str, ids: &[serde_json::Value]| {
        let mut found = Vec::with_capacity(ids.len());
        for (key, v) in id_keys(ids, field, code)?.iter().zip(ids) {
            match items.index_of(key) {
                Some(idx) => found.push(i64::from(idx)),
                None if unknown_seen.insert(key.clone()) => unknown.push(v.clone()),
                None => {}
            }
        }
        found.sort_unstable();
        found.dedup();
        Ok::<_, ApiError>(found)
    };
    let candidates = match &req.candidates {
        Some(c) if c.is_empty() => {
            return Err(ApiError::invalid(
                "invalid_candidates",
                "candidates = []: name at least one item, or leave the field out to rank all",
            ))
        }
        Some(c) => Some(lookup("candidates", "invalid_candidates", c)?),
        None => None,
    };
    let mut exclude = lookup(
        "exclude",
        "invalid_exclude",
        req.exclude.as_deref().unwrap_or_default(),
    )?;
    if req.exclude_seen.unwrap_or(true) {
        exclude.extend(known);
        exclude.sort_unstable();
        exclude.dedup();
    }
    Ok(Prepared {
        row: Row {
            seq,
            time_matrix,
            exclude,
            candidates,
            k: k as usize,
        },
        unknown,
    })
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
