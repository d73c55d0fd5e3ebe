//! The two-tower files beside `model.onnx`: for every model kind and both graph variants,
//! `user_vector · item_vectors[i]` (ONNX Runtime on `user_tower.onnx`, the safetensors table)
//! equals `model.onnx`'s `scores[:, i]` within 1e-5 on batches with empty, short, full and
//! truncated histories; the table is the model's item table with its metadata; both `.onnx`
//! files pass the full checker and carry the manifest (the model's naming the two-tower files);
//! the user tower takes the external-data path; the CLI names the files.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use safetensors::{Dtype, SafeTensors};
use sasrec_export::external_data::DEFAULT_THRESHOLD;
use sasrec_export::Variant;
use sasrec_shared::run::two_tower::{
    self, ITEM_VECTORS_FILE, ITEM_VECTORS_TENSOR, USER_TOWER_FILE,
};
use sasrec_shared::run::{GraphRole, ModelManifest};
use serde_json::json;

const TOL: f32 = 1e-5;

/// History lengths of the test batch: empty, short, full window, longer than the window.
fn lens() -> Vec<usize> {
    vec![0, 1, 3, T, 3 * T, 0, T - 1]
}

/// `item_vectors.safetensors` read with the `safetensors` crate: the one tensor's values
/// (row-major) and shape, after checking its name and dtype; and the `__metadata__`.
fn read_item_vectors(path: &Path) -> (Vec<f32>, Vec<usize>, BTreeMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names(), [ITEM_VECTORS_TENSOR], "{}", path.display());
    let t = st.tensor(ITEM_VECTORS_TENSOR).unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    let values = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    (values, t.shape().to_vec(), meta.into_iter().collect())
}

/// Asserts `scores[b, i] = user[b] · table[i]` for i in 1..=I (1e-5 absolute, relative above
/// 1) and `scores[b, 0] = −∞`; returns the largest |score| (to rule out a vacuous test).
fn assert_dot_products(scores: &[f32], user: &[f32], table: &[f32], d: usize, what: &str) -> f32 {
    let cols = table.len() / d;
    let (mut biggest, mut worst) = (0f32, 0f32);
    for (b, u) in user.chunks_exact(d).enumerate() {
        let row = &scores[b * cols..(b + 1) * cols];
        assert_eq!(row[0], f32::NEG_INFINITY, "{what} row {b}: padding column");
        for (i, e) in table.chunks_exact(d).enumerate().skip(1) {
            let dot = u
                .iter()
                .zip(e)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum::<f64>();
            let (got, want) = (dot as f32, row[i]);
            assert!(
                (got - want).abs() <= TOL * want.abs().max(1.0),
                "{what} row {b} item {i}: user_vector · item_vectors = {got}, scores = {want}"
            );
            biggest = biggest.max(want.abs());
            worst = worst.max((got - want).abs());
        }
    }
    eprintln!(
        "{what}: max |user_vector · item_vectors − scores| = {worst:e} (max |score| {biggest})"
    );
    biggest
}

/// One kind and variant: exports into a fresh directory and checks the tower against the model.
fn check_two_tower(run: &Run, variant: Variant, seed: u64) {
    let what = format!("{} {variant:?}", run.cfg.kind());
    let dir = tempfile::tempdir().unwrap();
    let out = run.export(variant, Some(dir.path().join("model.onnx")));
    assert_eq!(out.user_tower.path, dir.path().join(USER_TOWER_FILE));
    assert_eq!(out.item_vectors, dir.path().join(ITEM_VECTORS_FILE));
    assert_eq!(list(dir.path()), beside_model(&[]), "{what}");
    assert_eq!(
        out.item_tower, None,
        "{what}: no item tower without features"
    );
    assert_eq!(out.open_user_tower, None, "{what}: nor an open user tower");

    let (table, shape, meta) = read_item_vectors(&out.item_vectors);
    let (i, d) = (run.cfg.num_items, run.cfg.hidden_units);
    assert_eq!(shape, [i + 1, d], "{what}");
    let want = Vec::<f32>::try_from(&run.model.item_vectors().reshape([-1])).unwrap();
    assert_eq!(
        table, want,
        "{what}: item_vectors is not the model's item table"
    );
    let want_meta = [
        ("source_sha256", out.source_sha256.clone()),
        ("num_items", i.to_string()),
        ("dim", d.to_string()),
        ("kind", run.cfg.kind().to_string()),
    ];
    let want_meta = BTreeMap::from(want_meta.map(|(k, v)| (k.to_string(), v)));
    assert_eq!(meta, want_meta, "{what}");

    let mut rng = Rng::new(seed);
    let b = batch(&run.cfg, run.intervals, &lens(), &mut rng);
    let none = vec![0i64; b.b];
    let scores = run_onnx(&mut session(&out.onnx), &b, &none, 5, T).scores;
    let (user, dim) = run_user_tower(&mut session(&out.user_tower.path), &b, T);
    assert_eq!(dim, d, "{what}");
    let biggest = assert_dot_products(&scores, &user, &table, d, &what);
    assert!(biggest > 0.5, "{what}: scores all near 0 (max {biggest})");
}

#[test]
fn user_vector_times_item_vectors_equals_the_scores_for_every_kind() {
    for (k, name) in KINDS.iter().enumerate() {
        let run = make_run(&kind(name), 80 + k as i64);
        for variant in [Variant::LastPosition, Variant::FullSequence] {
            check_two_tower(&run, variant, 80 + k as u64);
        }
    }
}

/// A model with item features (docs/MODELS.md §6.2) exports folded: `model.onnx` scores
/// exactly as the tch model with features does (within 1e-5), the item vectors are its
/// composed table, the user tower agrees with both; without `item_features.safetensors` the
/// export fails naming it.
#[test]
fn item_features_are_folded_into_every_exported_graph() {
    use sasrec_models::test_util::{encoded_features, with_features};
    use sasrec_shared::config::ItemRepr;
    for (k, name) in KINDS.iter().enumerate() {
        let repr = if k % 2 == 0 {
            ItemRepr::IdFeatures
        } else {
            ItemRepr::Features
        };
        let cfg = with_features(&kind(name), repr);
        let run = make_run(&cfg, 70 + k as i64);
        let what = format!("{name} {repr}");
        let path = run.path().join("item_features.safetensors");
        let e = run.export_err(Variant::LastPosition);
        assert!(e.contains("item_features.safetensors"), "{what}: {e}");
        run.model
            .items()
            .set_features(&encoded_features(cfg.num_items))
            .unwrap();
        tch::Tensor::write_safetensors(&run.model.items().feature_tensors(), &path).unwrap();
        let out = run.export(Variant::LastPosition, None);
        let (table, _, _) = read_item_vectors(&out.item_vectors);
        let want = Vec::<f32>::try_from(&run.model.item_vectors().reshape([-1])).unwrap();
        let worst = table
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "{what}: item vectors differ by {worst}");
        let mut rng = Rng::new(70 + k as u64);
        let b = batch(&cfg, run.intervals, &lens(), &mut rng);
        let none = vec![0i64; b.b];
        let scores = run_onnx(&mut session(&out.onnx), &b, &none, 5, T).scores;
        for (got, want) in scores.iter().zip(tch_scores(&run.model, &b)) {
            assert!(
                got == &want || (got - want).abs() <= TOL * want.abs().max(1.0),
                "{what}: model.onnx {got}, tch {want}"
            );
        }
        let (user, d) = run_user_tower(&mut session(&out.user_tower.path), &b, T);
        assert!(
            assert_dot_products(&scores, &user, &table, d, &what) > 0.1,
            "{what}"
        );
        check_item_tower(&run, &out, &what);
        check_open_user_tower(&out, &b, (&user, &table, d), &what);
    }
}

/// The open user tower (docs/MODELS.md §6.5): its metadata and interface; fed the whole item
/// vectors table and the item indices it gives the user tower's vectors (within 1e-6), and
/// fed only the rows the batch reads, renumbered, exactly the same vectors as with the whole
/// table.
fn check_open_user_tower(
    out: &sasrec_export::Exported,
    b: &Batch,
    (user, table, d): (&[f32], &[f32], usize),
    what: &str,
) {
    let open = out
        .open_user_tower
        .as_ref()
        .expect("open user tower written");
    let header = python_check(&open.path);
    let meta = metadata(&header);
    assert_eq!(meta["tower"], "user_open", "{what}");
    assert_eq!(
        header["inputs"]["item_rows"],
        json!([1, ["rows", d]]),
        "{what}"
    );
    assert!(
        !header["initializers"].to_string().contains("item_emb"),
        "{what}: the item table is an input, not a weight"
    );
    let mut s = session(&open.path);
    let whole = run_open_user_tower(&mut s, b, T, (&b.seq, table, d));
    let worst = whole
        .iter()
        .zip(user)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-6,
        "{what}: open tower differs from the user tower by {worst}"
    );
    let mut read: Vec<i64> = b.seq.iter().copied().filter(|&i| i != 0).collect();
    read.sort_unstable();
    read.dedup();
    let mut rows = table[..d].to_vec(); // row 0: padding
    for &i in &read {
        rows.extend_from_slice(&table[i as usize * d..(i as usize + 1) * d]);
    }
    let local = |i: &i64| match i {
        0 => 0,
        i => read.binary_search(i).unwrap() as i64 + 1,
    };
    let seq: Vec<i64> = b.seq.iter().map(local).collect();
    let compact = run_open_user_tower(&mut s, b, T, (&seq, &rows, d));
    assert_eq!(
        compact, whole,
        "{what}: renumbered rows give other user vectors"
    );
    eprintln!("{what}: max |open tower − user tower| = {worst:e}; renumbered rows equal");
}

/// The item tower of a model with features: on every item's encoded features it gives the
/// composed vector without the ID row (`features`: the item vector itself), within 1e-5; its
/// manifest carries the feature schema and the model names it.
fn check_item_tower(run: &Run, out: &sasrec_export::Exported, what: &str) {
    let tower = out.item_tower.as_ref().expect("item tower written");
    assert_eq!(tower.path, run.path().join(two_tower::ITEM_TOWER_FILE));
    let header = python_check(&tower.path);
    let meta = metadata(&header);
    assert_eq!(meta["tower"], "item", "{what}");
    let manifest = ModelManifest::from_metadata(&meta).unwrap();
    assert_eq!(
        &manifest.spec.model, &run.cfg,
        "{what}: the tower's config is the model's"
    );
    let model_meta = metadata(&python_check(&out.onnx));
    assert_eq!(
        model_meta["item_tower"],
        two_tower::ITEM_TOWER_FILE,
        "{what}"
    );
    let want_inputs = json!({
        "item_features.genres": [7, ["batch", 2]],
        "item_features.year": [1, ["batch", 1]],
        "item_features.emb": [1, ["batch", 2]],
    });
    assert_eq!(header["inputs"], want_inputs, "{what}");

    let items = run.model.items();
    let feats = items.feature_tensors(); // genres (I+1, 2) i64, year (I+1, 1), emb (I+1, 2)
    let col = |name: &str| &feats.iter().find(|(n, _)| n.contains(name)).unwrap().1;
    let rows = col("genres").size()[0] as usize;
    let genres = Vec::<i64>::try_from(&col("genres").reshape([-1])).unwrap();
    let year = Vec::<f32>::try_from(&col("year").reshape([-1])).unwrap();
    let emb = Vec::<f32>::try_from(&col("emb").reshape([-1])).unwrap();
    let inputs = ort::inputs![
        "item_features.genres" => ort::value::Tensor::from_array(([rows, 2], genres)).unwrap(),
        "item_features.year" => ort::value::Tensor::from_array(([rows, 1], year)).unwrap(),
        "item_features.emb" => ort::value::Tensor::from_array(([rows, 2], emb)).unwrap(),
    ];
    let mut s = session(&tower.path);
    let result = s.run(inputs).unwrap();
    let (shape, got) = result["item_vector"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(shape.to_vec(), [rows as i64, run.cfg.hidden_units as i64]);
    let want = match items.id_param() {
        Some(id) => run.model.item_vectors() - id.tensor(),
        None => run.model.item_vectors(),
    };
    let want = Vec::<f32>::try_from(&want.reshape([-1])).unwrap();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let biggest = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(worst <= TOL, "{what}: item tower differs by {worst}");
    assert!(biggest > 0.1, "{what}: item vectors all near 0 ({biggest})");
    eprintln!("{what}: max |item_vector − composed features| = {worst:e}");
}

/// The metadata of an exported `.onnx` as the server reads it.
fn metadata(header: &serde_json::Value) -> BTreeMap<String, String> {
    serde_json::from_value(header["metadata"].clone()).unwrap()
}

#[test]
fn both_files_pass_the_checker_and_the_model_names_the_two_tower_files() {
    for (k, name) in KINDS.iter().enumerate() {
        let cfg = kind(name);
        let run = make_run(&cfg, 90 + k as i64);
        let out = run.export(Variant::LastPosition, None);
        let model = metadata(&python_check(&out.onnx));
        let tower_header = python_check(&out.user_tower.path);
        let tower = metadata(&tower_header);

        assert_eq!(model["user_tower"], USER_TOWER_FILE, "{name}");
        assert_eq!(model["item_vectors"], ITEM_VECTORS_FILE, "{name}");
        assert!(!model.contains_key("tower"), "{name}");
        let manifest = ModelManifest::from_metadata(&model).unwrap();
        assert_eq!(manifest.role, GraphRole::Scoring);
        assert_eq!(manifest.two_tower, Some(two_tower::Files::default()));
        let paths = manifest.two_tower_paths(run.path()).unwrap();
        assert_eq!(paths.user_tower, out.user_tower.path);
        assert_eq!(paths.item_vectors, out.item_vectors);

        // the tower: the same manifest, its own role and interface
        assert_eq!(tower["tower"], "user", "{name}");
        let tower_manifest = ModelManifest::from_metadata(&tower).unwrap();
        assert_eq!(tower_manifest, manifest.with_role(GraphRole::UserTower));
        let t = cfg.maxlen as i64;
        let mut inputs = json!({"seq": [7, ["batch", t]]});
        if cfg.is_time_aware() {
            inputs["time_matrix"] = json!([7, ["batch", t, t]]);
        }
        assert_eq!(tower_header["inputs"], inputs, "{name}");
        let d = cfg.hidden_units as i64;
        let outputs = json!({"user_vector": [1, ["batch", d]]});
        assert_eq!(tower_header["outputs"], outputs, "{name}");
    }
}

/// The user tower always keeps its weights in `user_tower.onnx.data`, whatever
/// `--external_data_threshold` says of the model; ONNX Runtime reads the pair, and an inline
/// export of the model that follows gives the same vectors, removes the model's stale data
/// file and keeps the tower's.
#[test]
fn the_user_tower_takes_the_external_data_path() {
    let cfg = kind("tisasrec-mhc");
    let run = make_run(&cfg, 95);
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("model.onnx");
    let ext = run.export_with_threshold(Variant::LastPosition, Some(onnx.clone()), 0);
    assert_eq!(list(dir.path()), beside_model(&EXTERNAL));
    let data = dir.path().join("user_tower.onnx.data");
    let file = ext
        .user_tower
        .external
        .clone()
        .expect("user tower external data");
    assert_eq!(file.path, data);
    assert_eq!(file.bytes, std::fs::metadata(&data).unwrap().len());
    assert!(file.tensors > 0);
    python_check(&ext.user_tower.path);

    let mut rng = Rng::new(95);
    let b = batch(&cfg, run.intervals, &lens(), &mut rng);
    let got = run_user_tower(&mut session(&ext.user_tower.path), &b, T);
    let inline = run.export(Variant::LastPosition, Some(onnx));
    assert_eq!(inline.external, None);
    let tower_data = inline.user_tower.external.as_ref().expect("tower data");
    assert_eq!(tower_data.path, data);
    assert_eq!(list(dir.path()), beside_model(&[]));
    let want = run_user_tower(&mut session(&inline.user_tower.path), &b, T);
    assert_eq!(got, want);
}

/// A standard reader (Python's `safetensors`, numpy) loads the table and its metadata.
#[test]
fn python_safetensors_reads_the_item_vectors() {
    const SCRIPT: &str = r#"
import json, sys
from safetensors import safe_open
with safe_open(sys.argv[1], framework="numpy") as f:
    t = f.get_tensor("item_vectors")
    print(json.dumps({"keys": list(f.keys()), "dtype": str(t.dtype), "shape": list(t.shape),
                      "sum": float(t.astype("float64").sum()), "metadata": f.metadata()}))
"#;
    let cfg = kind("sasrec");
    let run = make_run(&cfg, 96);
    let out = run.export(Variant::LastPosition, None);
    let got: serde_json::Value =
        serde_json::from_slice(&python(SCRIPT, &[&out.item_vectors], "safetensors")).unwrap();
    assert_eq!(got["keys"], json!(["item_vectors"]));
    assert_eq!(got["dtype"], "float32");
    assert_eq!(got["shape"], json!([cfg.num_items + 1, cfg.hidden_units]));
    assert_eq!(got["metadata"]["kind"], "sasrec");
    assert_eq!(got["metadata"]["source_sha256"], out.source_sha256.as_str());
    let sum: f64 = Vec::<f32>::try_from(&run.model.item_vectors().reshape([-1]))
        .unwrap()
        .iter()
        .map(|&x| f64::from(x))
        .sum();
    assert!((got["sum"].as_f64().unwrap() - sum).abs() < 1e-9);
}

#[test]
fn cli_names_the_two_tower_files() {
    let run = make_run(&kind("tisasrec"), 97);
    let dir = run.path();
    let out = Command::new(bin())
        .args(["--onnx", "--external_data_threshold", "0", "--train_dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let size = |f: &str| std::fs::metadata(dir.join(f)).unwrap().len();
    for (name, note) in [
        ("user_tower.onnx", "the user tower"),
        ("user_tower.onnx.data", ""),
        ("item_vectors.safetensors", "the item vectors"),
    ] {
        let want = format!("{note} {} ({} bytes", dir.join(name).display(), size(name));
        assert!(
            stdout.contains(want.trim_start()),
            "`{want}` not in: {stdout}"
        );
    }
    assert_eq!(
        list(dir),
        run_dir_files(&[&EXPORTED[..], &EXTERNAL].concat())
    );
}

/// `--output` may not take the name of a file written beside the model; nothing is written.
#[test]
fn output_named_like_a_two_tower_file_is_refused() {
    let run = make_run(&kind("sasrec"), 98);
    let dest = tempfile::tempdir().unwrap();
    for name in [USER_TOWER_FILE, ITEM_VECTORS_FILE] {
        let path = dest.path().join(name);
        let err = sasrec_export::export(&sasrec_export::ExportOptions {
            train_dir: run.path().to_path_buf(),
            output: Some(path.clone()),
            variant: Variant::LastPosition,
            external_data_threshold: DEFAULT_THRESHOLD,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: is the name of a file written beside the model (--output)",
                path.display()
            )
        );
        assert!(list(dest.path()).is_empty());
    }
}
