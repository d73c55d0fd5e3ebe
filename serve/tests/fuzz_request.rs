//! Fuzz target for the request parser, without a model or a socket: generated and mutated
//! bodies go through the JSON deserialisation the handlers use (`RecommendRequest`,
//! `BatchRequest`) and then [`sasrec_serve::request::prepare`], under `catch_unwind`, for a
//! SASRec spec and TiSASRec specs in every time unit.
//!
//! Oracle: no panic; a body that does not deserialise is what the handlers answer 400/422;
//! `prepare` gives exactly the error code an independent re-statement of the validation rules
//! (serve/src/request.rs module docs) gives, always a 4xx, and its rows hold: the window is the
//! newest known history items in time order (stable), `exclude` / `candidates` sorted and
//! distinct, every index in 1..=I, interval buckets in 0..=k.
//!
//! Budget and replay: see tests/fuzzgen/mod.rs (`FUZZ_CASES`, `FUZZ_SECONDS`, `FUZZ_SEED`,
//! `FUZZ_CASE`); scripts/fuzz.sh runs it for a bounded time.

mod fuzzgen;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use fuzzgen::{Budget, Rng, Tally, Vocabulary};
use sasrec_serve::api::{history_key, BatchRequest, RecommendRequest};
use sasrec_serve::catalogue::Catalogue;
use sasrec_serve::request::{prepare, Prepared};
use sasrec_shared::config::{Backbone, ModelConfig};
use sasrec_shared::run::ModelSpec;
use sasrec_shared::time::{left_pad, Intervals, TimeUnit};
use sasrec_shared::IdMap;
use serde_json::{json, Value};

const MAXLEN: usize = 8;
const SPAN: usize = 16;

/// 40 numeric ids and a few string ones (a mixed map sorts lexicographically).
fn items() -> IdMap {
    let mut t: Vec<String> = (1..=40).map(|i| (i * 3).to_string()).collect();
    t.extend(["007", "tt0111161", "a b", "é", ""].map(String::from));
    IdMap::from_tokens(t)
}

fn spec(items: &IdMap, unit: Option<TimeUnit>) -> ModelSpec {
    let mut m = ModelConfig::sasrec_ml1m();
    m.num_items = items.len();
    m.maxlen = MAXLEN;
    m.time_span = SPAN;
    m.backbone = if unit.is_some() {
        Backbone::Tisasrec
    } else {
        Backbone::Sasrec
    };
    ModelSpec::new(m, unit.map(|unit| Intervals { unit, span: SPAN }))
}

/// The validation rules, re-stated: the error code a request must get, in the order the
/// module docs of serve/src/request.rs give them.
fn expected_code(req: &RecommendRequest, spec: &ModelSpec) -> Option<&'static str> {
    let k = req.k.unwrap_or(10);
    if k < 1 || k > spec.model.num_items as i64 {
        return Some("invalid_k");
    }
    match &req.timestamps {
        Some(ts) if ts.len() != req.history.len() => return Some("length_mismatch"),
        None if spec.model.is_time_aware() => return Some("missing_timestamps"),
        _ => {}
    }
    let is_id = |v: &Value| v.is_string() || v.is_number();
    if !req.history.iter().all(is_id) {
        return Some("invalid_history");
    }
    if let Some(c) = &req.candidates {
        if c.is_empty() || !c.iter().all(is_id) {
            return Some("invalid_candidates");
        }
    }
    if !req.exclude.iter().flatten().all(is_id) {
        return Some("invalid_exclude");
    }
    None
}

/// Sorted, distinct known indices of `ids`.
fn known_sorted(map: &IdMap, ids: &[Value]) -> Vec<i64> {
    let mut v: Vec<i64> = ids
        .iter()
        .filter_map(|x| map.index_of(&history_key(x)?).map(i64::from))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The row `prepare` must build for a valid request.
fn check_row(
    p: &Prepared,
    req: &RecommendRequest,
    spec: &ModelSpec,
    map: &IdMap,
) -> Result<(), String> {
    let r = &p.row;
    let n = map.len() as i64;
    let k = req.k.unwrap_or(10) as usize;
    if r.k != k {
        return Err(format!("k {} for {k}", r.k));
    }
    // Known history in stable time order.
    let mut order: Vec<usize> = (0..req.history.len()).collect();
    if let Some(ts) = &req.timestamps {
        order.sort_by_key(|&i| ts[i]);
    }
    let known: Vec<i64> = order
        .iter()
        .filter_map(|&i| map.index_of(&history_key(&req.history[i])?).map(i64::from))
        .collect();
    let mut want = vec![0i64; MAXLEN];
    left_pad(&known, 0i64, &mut want);
    if r.seq != want {
        return Err(format!("seq {:?}, expected {want:?}", r.seq));
    }
    let mut exclude = known_sorted(map, req.exclude.as_deref().unwrap_or_default());
    if req.exclude_seen.unwrap_or(true) {
        exclude.extend(&known);
        exclude.sort_unstable();
        exclude.dedup();
    }
    if r.exclude != exclude {
        return Err(format!("exclude {:?}, expected {exclude:?}", r.exclude));
    }
    let candidates = req.candidates.as_deref().map(|c| known_sorted(map, c));
    if r.candidates != candidates {
        return Err(format!(
            "candidates {:?}, expected {candidates:?}",
            r.candidates
        ));
    }
    let in_range = |i: &i64| (1..=n).contains(i);
    if !r.exclude.iter().all(in_range) || !r.candidates.iter().flatten().all(in_range) {
        return Err("an index outside 1..=I".into());
    }
    match (&r.time_matrix, spec.model.is_time_aware()) {
        (Some(m), true) => {
            if m.len() != MAXLEN * MAXLEN || !m.iter().all(|&b| (0..=SPAN as i64).contains(&b)) {
                return Err(format!("time matrix {m:?}"));
            }
        }
        (None, false) => {}
        (m, _) => return Err(format!("time matrix {m:?} for this model")),
    }
    // Unknown entries: distinct keys, none of them in the map.
    let keys: Vec<String> = p.unknown.iter().filter_map(history_key).collect();
    let distinct: HashSet<&String> = keys.iter().collect();
    if keys.len() != p.unknown.len()
        || distinct.len() != keys.len()
        || keys.iter().any(|k| map.index_of(k).is_some())
    {
        return Err(format!("unknown_items {:?}", p.unknown));
    }
    Ok(())
}

/// One request through `prepare`: `Ok(true)` answered, `Ok(false)` refused as it must be.
fn check_request(req: &RecommendRequest, spec: &ModelSpec, map: &IdMap) -> Result<bool, String> {
    let want = expected_code(req, spec);
    match (prepare(req, spec, &Catalogue::trained(map), "fuzz@0"), want) {
        (Ok(p), None) => check_row(&p, req, spec, map).map(|()| true),
        (Ok(_), Some(code)) => Err(format!("accepted; expected {code}")),
        (Err(e), want) => {
            let status = e.status().as_u16();
            if !(400..500).contains(&status) {
                return Err(format!("status {status} for {e}"));
            }
            if want != Some(e.code()) || e.public_message().is_empty() {
                return Err(format!("{} ({e}); expected {want:?}", e.code()));
            }
            Ok(false)
        }
    }
}

#[test]
fn fuzz_request_parser() {
    let map = items();
    let vocab = Vocabulary {
        known: (1..=map.len() as u32)
            .filter_map(|i| map.raw_of(i).map(String::from))
            .collect(),
    };
    let specs: Vec<ModelSpec> = [
        None,
        Some(TimeUnit::Personal),
        Some(TimeUnit::Second),
        Some(TimeUnit::Day),
    ]
    .into_iter()
    .map(|u| spec(&map, u))
    .collect();
    let budget = Budget::from_env(6000);
    let mut tally = Tally::new("request");
    while let Some(i) = budget.next_case(tally.cases) {
        tally.cases += 1;
        let mut rng: Rng = budget.rng(i);
        let spec = &specs[rng.below(specs.len())];
        let batch = rng.chance(30);
        let value = if batch {
            fuzzgen::batch(&mut rng, &vocab, 256)
        } else {
            fuzzgen::request(&mut rng, &vocab)
        };
        let body = fuzzgen::body_bytes(&mut rng, &value);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if batch {
                let Ok(b) = serde_json::from_slice::<BatchRequest>(&body) else {
                    return Ok(false); // 400 / 422 from the extractor
                };
                let mut answered = false;
                for r in &b.requests {
                    answered |= check_request(r, spec, &map)?;
                }
                Ok(answered)
            } else {
                match serde_json::from_slice::<RecommendRequest>(&body) {
                    Ok(r) => check_request(&r, spec, &map),
                    Err(_) => Ok(false),
                }
            }
        }));
        match outcome {
            Ok(Ok(true)) => tally.accepted += 1,
            Ok(Ok(false)) => tally.refused += 1,
            Ok(Err(why)) => tally.fail(&budget, i, format!("{why} [{}]", spec.kind), &body),
            Err(p) => tally.fail(
                &budget,
                i,
                format!("PANIC: {} [{}]", fuzzgen::panic_message(&*p), spec.kind),
                &body,
            ),
        }
    }
    tally.finish(&budget);
}

/// Regression: timestamps at the ends of i64 overflowed in the interval codes, a panic in
/// `prepare` under overflow checks (this fuzz: case 5265 of the default seed; fixed in
/// sasrec_shared::time).
#[test]
fn extreme_timestamps_are_answered() {
    let map = items();
    for unit in [TimeUnit::Personal, TimeUnit::Second, TimeUnit::Day] {
        let spec = spec(&map, Some(unit));
        let req: RecommendRequest = serde_json::from_value(json!({
            "history": [3, 6, 9, 12],
            "timestamps": [i64::MAX, i64::MIN, 0, -1],
        }))
        .unwrap();
        let p = prepare(&req, &spec, &Catalogue::trained(&map), "t@0").unwrap();
        check_row(&p, &req, &spec, &map).unwrap();
        let m = p.row.time_matrix.unwrap();
        // Time order: 6 (MIN), 12 (−1), 9 (0), 3 (MAX) in the last four window positions.
        assert_eq!(
            &p.row.seq[4..],
            &[6, 12, 9, 3].map(|r| i64::from(map.index_of(&r.to_string()).unwrap()))
        );
        // MIN against the others: far apart in every unit → k. −1 and 0: 1 s apart.
        let at = |i: usize, j: usize| m[(4 + i) * MAXLEN + 4 + j];
        assert_eq!(at(0, 3), SPAN as i64, "{unit}");
        assert_eq!(at(0, 1), SPAN as i64, "{unit}");
        // (Personal: both codes saturate at i64::MAX, gap 0.)
        let near = match unit {
            TimeUnit::Second => 1,
            _ => 0,
        };
        assert_eq!(at(1, 2), near, "{unit}");
    }
}
