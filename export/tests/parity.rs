//! ONNX Runtime on the exported graph equals tch (`SeqRecModel::score_all`) for every model
//! kind: scores within 1e-5 absolute, consistent top-k, exclusions honoured; for short
//! (left-padded) histories and full windows, batch sizes 1 and 33, and both graph variants.

mod common;

use common::*;
use sasrec_export::Variant;

const TOL: f32 = 1e-5;
const K: i64 = 10;

/// Checks one batch: scores against tch, then top-k against the tch scores with the row's
/// exclusions applied.
fn check_batch(
    run: &Run,
    s: &mut ort::session::Session,
    batch: &Batch,
    exclude: &[i64],
    what: &str,
) {
    let cols = run.cfg.num_items + 1;
    let want = tch_scores(&run.model, batch);
    let got = run_onnx(s, batch, exclude, K, run.cfg.maxlen);
    assert_eq!(got.scores.len(), want.len(), "{what}");
    let mut worst = 0f32;
    for (i, (g, w)) in got.scores.iter().zip(&want).enumerate() {
        if i % cols == 0 {
            assert!(
                *g == f32::NEG_INFINITY && *w == f32::NEG_INFINITY,
                "{what}: padding column is {g} (onnx) / {w} (tch)"
            );
            continue;
        }
        assert!(g.is_finite(), "{what}: non-finite score {g} at {i}");
        worst = worst.max((g - w).abs());
    }
    assert!(worst <= TOL, "{what}: max |onnx − tch| = {worst:e}");
    let biggest = want
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f32, |m, x| m.max(x.abs()));
    assert!(
        biggest > 0.5,
        "{what}: scores are all near 0 (max {biggest}): a vacuous test"
    );
    eprintln!("{what}: max |onnx − tch| = {worst:e} (max |score| {biggest})");

    let e = exclude.len() / batch.b;
    let k = K as usize;
    for r in 0..batch.b {
        let excl = &exclude[r * e..(r + 1) * e];
        let row = &want[r * cols..(r + 1) * cols];
        let mut allowed: Vec<f32> = (1..cols)
            .filter(|j| !excl.contains(&(*j as i64)))
            .map(|j| row[j])
            .collect();
        allowed.sort_by(|a, b| b.total_cmp(a));
        let items = &got.topk_items[r * k..(r + 1) * k];
        let scores = &got.topk_scores[r * k..(r + 1) * k];
        for (j, (&item, &sc)) in items.iter().zip(scores).enumerate() {
            assert!(
                (1..cols as i64).contains(&item),
                "{what} row {r}: top-k item {item} out of range"
            );
            assert!(
                !excl.contains(&item),
                "{what} row {r}: excluded item {item} in the top-k {items:?}"
            );
            assert!(
                (row[item as usize] - sc).abs() <= TOL,
                "{what} row {r}: top-k score {sc} of item {item}, tch says {}",
                row[item as usize]
            );
            assert!(
                (allowed[j] - sc).abs() <= TOL,
                "{what} row {r}: rank {j} score {sc}, tch's {j}-th best allowed is {}",
                allowed[j]
            );
            if j > 0 {
                assert!(scores[j - 1] >= sc, "{what} row {r}: top-k not sorted");
            }
        }
        let mut uniq = items.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), k, "{what} row {r}: duplicate items {items:?}");
    }
}

/// The history of each row (its `seq` row, padding zeros included) plus three random items.
fn exclusions(batch: &Batch, t: usize, rng: &mut Rng) -> Vec<i64> {
    let mut v = Vec::new();
    for r in 0..batch.b {
        v.extend_from_slice(&batch.seq[r * t..(r + 1) * t]);
        for _ in 0..3 {
            v.push(rng.range(1, I as i64));
        }
    }
    v
}

fn parity(kind_name: &str, seed: i64) {
    parity_cfg(&kind(kind_name), kind_name, seed);
}

fn parity_cfg(cfg: &sasrec_shared::config::ModelConfig, kind_name: &str, seed: i64) {
    let cfg = cfg.clone();
    let run = make_run(&cfg, seed);
    let out_dir = tempfile::tempdir().unwrap();
    let t = cfg.maxlen;
    let mut rng = Rng::new(seed as u64);
    for variant in [Variant::LastPosition, Variant::FullSequence] {
        let path = out_dir.path().join(format!("{}.onnx", variant.as_str()));
        run.export(variant, Some(path.clone()));
        let mut s = session(&path);
        // batch 1: a short history and a full (truncated) window; batch 33: lengths 1..=T+…
        // mixing left-padded rows and full windows
        let lens33: Vec<usize> = (0..33).map(|r| 1 + (r * 5) % (3 * t)).collect();
        let mut b = None;
        for (lens, what) in [
            (vec![3], "B=1 len=3".to_string()),
            (vec![3 * t], format!("B=1 len={}", 3 * t)),
            (lens33, "B=33".to_string()),
        ] {
            let batch = batch(&cfg, run.intervals, &lens, &mut rng);
            let excl = exclusions(&batch, t, &mut rng);
            check_batch(
                &run,
                &mut s,
                &batch,
                &excl,
                &format!("{kind_name} {variant:?} {what}"),
            );
            b = Some(batch);
        }
        let b = b.unwrap();
        // no exclusions: a single padding column per row
        let none = vec![0i64; b.b];
        check_batch(
            &run,
            &mut s,
            &b,
            &none,
            &format!("{kind_name} {variant:?} B=33 no exclusions"),
        );
    }
}

#[test]
fn sasrec_matches_tch() {
    parity("sasrec", 1);
}

#[test]
fn tisasrec_matches_tch() {
    parity("tisasrec", 2);
}

#[test]
fn sasrec_mhc_matches_tch() {
    parity("sasrec-mhc", 3);
}

#[test]
fn tisasrec_mhc_matches_tch() {
    parity("tisasrec-mhc", 4);
}

/// mHC-lite's permutation mix (`--mhc_hres lite`) on both backbones.
#[test]
fn mhc_lite_matches_tch() {
    for (i, name) in ["sasrec-mhc", "tisasrec-mhc"].iter().enumerate() {
        let mut cfg = kind(name);
        cfg.mhc.as_mut().unwrap().h_res = sasrec_shared::config::HresProjection::Lite;
        parity_cfg(&cfg, &format!("{name} lite"), 30 + i as i64);
    }
}

/// The Pre-LN wiring (`--norm_first`) of both backbones, one head, one block.
#[test]
fn norm_first_and_single_head_match_tch() {
    for name in ["sasrec", "tisasrec"] {
        let mut cfg = kind(name);
        cfg.norm_first = true;
        parity_cfg(&cfg, &format!("{name} norm_first"), 5);
        cfg.num_heads = 1;
        cfg.num_blocks = 1;
        parity_cfg(&cfg, &format!("{name} norm_first 1 head 1 block"), 6);
    }
}

/// The wirings `--block_wiring` adds to each backbone's two: SASRec's original wiring (with its
/// timeline mask after every block) and gated residual, and TiSASRec's Post-LN.
#[test]
fn other_block_wirings_match_tch() {
    use sasrec_shared::config::BlockWiring;
    for (name, w) in [
        ("sasrec", BlockWiring::Original),
        ("sasrec", BlockWiring::Gated),
        ("tisasrec", BlockWiring::PostLn),
    ] {
        let mut cfg = kind(name);
        cfg.block_wiring = Some(w);
        parity_cfg(&cfg, &format!("{name} {}", w.as_str()), 7);
    }
}

/// SASRec's `--padding masked` and `right` (padded keys blocked; positions from the newest or
/// the oldest item), plain and with mHC, including rows with an empty history.
#[test]
fn padding_modes_match_tch() {
    use sasrec_shared::config::{BlockWiring, Padding};
    for padding in [Padding::Masked, Padding::Right] {
        for name in ["sasrec", "sasrec-mhc"] {
            let mut cfg = kind(name);
            cfg.padding = padding;
            if name == "sasrec" {
                cfg.block_wiring = Some(BlockWiring::Original);
            }
            let label = format!("{name} {}", padding.as_str());
            parity_cfg(&cfg, &label, 11);
            // Empty histories: every key of the last query is blocked, still finite and equal.
            let run = make_run(&cfg, 12);
            let path = run.path().join("model.onnx");
            run.export(Variant::LastPosition, None);
            let b = batch(&cfg, run.intervals, &[0, 2, 0], &mut Rng::new(7));
            check_batch(
                &run,
                &mut session(&path),
                &b,
                &[0, 0, 0],
                &format!("{label} empty"),
            );
        }
    }
}

/// Rows with an empty history (all padding) still give finite scores equal to tch's.
#[test]
fn empty_history_matches_tch() {
    for (i, name) in KINDS.iter().enumerate() {
        let cfg = kind(name);
        let run = make_run(&cfg, 10 + i as i64);
        let path = run.path().join("model.onnx");
        run.export(Variant::LastPosition, None);
        let mut s = session(&path);
        let mut rng = Rng::new(7);
        let b = batch(&cfg, run.intervals, &[0, 2, 0], &mut rng);
        check_batch(&run, &mut s, &b, &[0, 0, 0], &format!("{name} empty rows"));
    }
}
