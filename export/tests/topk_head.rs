//! The two-stage top-k head (`TopKHead::Blocked`) returns exactly what one `TopK` returns:
//! the same `topk_items` and bit-identical `topk_scores`, the same `scores` on the item columns
//! and −∞ on the padding columns, over several seeds, block widths that do and do not divide
//! `I+1` (one block, one column per block, more blocks picked than exist), `k` up to `I+1`,
//! with and without exclusions, and on models whose items tie in score (ties go to the lower
//! item index in both heads, checked against a host-side ranking).

mod common;

use std::path::Path;

use common::*;
use sasrec_export::{model_bytes, Source, TopKHead, Variant};
use sasrec_models::SeqRecModel;
use sasrec_shared::config::ModelConfig;
use tch::Tensor;

/// Block widths against `I+1 = 41`: one column per block, 11 blocks with a padded last one,
/// 6 blocks (fewer than the 10+ blocks `k'` asks for), exactly one block, one padded block.
const WIDTHS: [i64; 5] = [1, 4, 7, 41, 64];

/// `(k, exclude the history + 3 random items)`: `k' = k + E` from 1 to past `I+1` (capped).
const CASES: [(i64, bool); 6] = [
    (1, false),
    (10, false),
    (5, true),
    (30, true),
    (40, false),
    (41, false),
];

/// Writes `model` with `head` to `dir` and opens it.
fn open(model: &SeqRecModel, head: TopKHead, dir: &Path) -> ort::session::Session {
    let source = Source {
        sha256: "test".into(),
        intervals: intervals_for(model.config()),
    };
    let path = dir.join(format!("{head:?}.onnx").replace([' ', '{', '}', ':'], ""));
    let bytes = model_bytes(model, &source, Variant::LastPosition, head).unwrap();
    std::fs::write(&path, bytes).unwrap();
    session(&path)
}

/// Item `j ≥ 1` gets the embedding of item `1 + (j − 1) mod groups`, so every score is shared
/// by ⌈I / groups⌉ items spread over the catalogue (and over blocks).
fn tie_items(vs: &tch::nn::VarStore, groups: i64) {
    let vars = vs.variables();
    let table = vars["item_emb.weight"].shallow_clone();
    let rows = table.size()[0];
    let source =
        Tensor::arange_start(1, rows, (tch::Kind::Int64, tch::Device::Cpu)).remainder(groups) + 1;
    tch::no_grad(|| {
        let copied = table.index_select(0, &source);
        table.narrow(0, 1, rows - 1).copy_(&copied);
    });
}

/// The first `k` columns of each row of `scores` (width `cols`, the first `I+1` of them
/// items) that are not excluded, by score descending then column ascending: `TopK`'s order.
fn host_ranking(scores: &[f32], width: usize, exclude: &[i64], b: usize, k: usize) -> Vec<i64> {
    let e = exclude.len() / b;
    let mut out = Vec::new();
    for r in 0..b {
        let row = &scores[r * width..r * width + I + 1];
        let excl = &exclude[r * e..(r + 1) * e];
        let mut cols: Vec<i64> = (0..=I as i64).filter(|c| !excl.contains(c)).collect();
        cols.sort_by(|&x, &y| row[y as usize].total_cmp(&row[x as usize]).then(x.cmp(&y)));
        out.extend(cols.into_iter().chain(std::iter::repeat(-1)).take(k));
    }
    out
}

/// Both heads on `model` for every width and case, on a batch of one and of five rows.
fn heads_agree(cfg: &ModelConfig, model: &SeqRecModel, seed: u64, tied: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut ties_in_top_k = 0;
    let t = cfg.maxlen;
    let mut one = open(model, TopKHead::OneStage, dir.path());
    let mut rng = Rng::new(seed);
    let batches = [
        batch(cfg, intervals_for(cfg), &[t], &mut rng),
        batch(cfg, intervals_for(cfg), &[1, 3, t, 2 * t, 0], &mut rng),
    ];
    for width in WIDTHS {
        let head = TopKHead::Blocked { width };
        let mut two = open(model, head, dir.path());
        let padded = head.scores_width(I as i64 + 1) as usize;
        for b in &batches {
            for (k, exclude_some) in CASES {
                let exclude = if exclude_some {
                    exclusions(b, t, &mut rng)
                } else {
                    Vec::new()
                };
                let what = format!("seed {seed} W {width} B {} k {k} E {}", b.b, exclude.len());
                let want = run_onnx(&mut one, b, &exclude, k, t);
                let got = run_onnx(&mut two, b, &exclude, k, t);
                assert_eq!(got.topk_items, want.topk_items, "{what}");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got.topk_scores), bits(&want.topk_scores), "{what}");
                assert_eq!(got.scores.len(), b.b * padded, "{what}");
                for r in 0..b.b {
                    let row = &got.scores[r * padded..(r + 1) * padded];
                    let want_row = &want.scores[r * (I + 1)..(r + 1) * (I + 1)];
                    assert_eq!(bits(&row[..=I]), bits(want_row), "{what} row {r}");
                    assert!(
                        row[I + 1..].iter().all(|&x| x == f32::NEG_INFINITY),
                        "{what} row {r}: padding columns {:?}",
                        &row[I + 1..]
                    );
                }
                ties_in_top_k += got
                    .topk_scores
                    .windows(2)
                    .filter(|p| p[0] == p[1] && p[0].is_finite())
                    .count();
                if tied {
                    let host = host_ranking(&got.scores, padded, &exclude, b.b, k as usize);
                    // where fewer than k columns are allowed the graph pads with −∞ columns
                    // that the host ranking has already used up (k > allowed): compare the
                    // finite part only
                    for (j, (&g, &h)) in got.topk_items.iter().zip(&host).enumerate() {
                        if got.topk_scores[j].is_finite() {
                            assert_eq!(g, h, "{what}: rank {j} of {:?}", got.topk_items);
                        }
                    }
                }
            }
        }
    }
    assert_eq!(
        tied,
        ties_in_top_k > 0,
        "seed {seed}: {ties_in_top_k} tied top-k pairs"
    );
}

#[test]
fn two_stage_head_equals_one_topk() {
    for (i, name) in ["sasrec", "tisasrec", "sasrec", "sasrec-mhc"]
        .iter()
        .enumerate()
    {
        let cfg = kind(name);
        let (_vs, model) = random_model(&cfg, 300 + i as i64);
        heads_agree(&cfg, &model, 300 + i as u64, false);
    }
}

#[test]
fn two_stage_head_keeps_ties_in_index_order() {
    for (seed, groups) in [(400, 3), (401, 7), (402, 13)] {
        let cfg = kind("sasrec");
        let (vs, model) = random_model(&cfg, seed);
        tie_items(&vs, groups);
        heads_agree(&cfg, &model, seed as u64, true);
    }
}

#[test]
fn catalogue_size_chooses_the_head_and_the_blocked_graph_passes_the_checker() {
    assert_eq!(TopKHead::for_columns(3_417), TopKHead::OneStage);
    assert_eq!(
        TopKHead::for_columns(TopKHead::MIN_BLOCKED_COLUMNS - 1),
        TopKHead::OneStage
    );
    let big = TopKHead::for_columns(1_000_001);
    assert_eq!(
        big,
        TopKHead::Blocked {
            width: TopKHead::BLOCK_WIDTH
        }
    );
    assert_eq!(big.scores_width(1_000_001), 1_000_192);
    assert_eq!(big.scores_width(1_000_192), 1_000_192);

    let dir = tempfile::tempdir().unwrap();
    for name in KINDS {
        let cfg = kind(name);
        let (_vs, model) = random_model(&cfg, 500);
        let source = Source {
            sha256: "test".into(),
            intervals: intervals_for(&cfg),
        };
        let path = dir.path().join(format!("{name}.onnx"));
        let head = TopKHead::Blocked { width: 7 };
        std::fs::write(
            &path,
            model_bytes(&model, &source, Variant::LastPosition, head).unwrap(),
        )
        .unwrap();
        let h = python_check(&path);
        assert_eq!(h["outputs"]["scores"][1][1], 42, "{name}: scores width");
    }
}
