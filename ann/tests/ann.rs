//! sasrec-ann end to end on a generated catalogue (fixed seeds, files only in temporary
//! directories): recall of the index against the exact ranking, exclusions, save/open, damaged
//! files, the item-vector reader's checks, and the exact ranking by hand.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safetensors::tensor::{Dtype, View};
use sasrec_ann::{
    dot, exact_top_k, rescore, sidecar_path, AnnParams, ItemIndex, ItemVectors, Quantization,
    VectorsMeta, DEFAULT_EF,
};
use sasrec_testutil::Rng;

/// Items, dimension and cluster centres of the main catalogue.
const ITEMS: usize = 20_000;
const DIM: usize = 32;
const CENTRES: usize = 300;
/// Queries per recall measurement, the answer size, and the extra candidates asked for (the
/// server's default `--ann_candidates`).
const QUERIES: usize = 200;
const K: usize = 10;
const MARGIN: usize = 100;
/// The recall bar of the default parameters.
const RECALL_BAR: f64 = 0.99;

/// A standard normal draw (Box–Muller).
fn gauss(rng: &mut Rng) -> f32 {
    let uniform = |rng: &mut Rng| ((rng.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (u1, u2) = (uniform(rng), uniform(rng));
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// `centre + sigma · N(0, I/d)`.
fn near(rng: &mut Rng, centre: &[f32], sigma: f32) -> Vec<f32> {
    let s = sigma / (centre.len() as f32).sqrt();
    centre.iter().map(|c| c + s * gauss(rng)).collect()
}

/// A digest-shaped source id.
fn source(n: u64) -> String {
    format!("{n:064x}")
}

/// A clustered catalogue like trained embeddings: `centres` unit-scale centres, each item a
/// noisy copy of one of them times a norm in [0.5, 1.5] (popularity), row 0 zero. Returns
/// the `[items + 1, dim]` table and the centres.
fn catalogue_rows(
    seed: u64,
    items: usize,
    dim: usize,
    centres: usize,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = Rng::new(seed);
    let zero = vec![0.0; dim];
    let centres: Vec<Vec<f32>> = (0..centres).map(|_| near(&mut rng, &zero, 1.0)).collect();
    let mut rows = zero.clone();
    for _ in 0..items {
        let norm = 0.5 + (rng.below(1001) as f32) / 1000.0;
        let centre = rng.pick(&centres);
        let item = near(&mut rng, centre, 0.5);
        rows.extend(item.iter().map(|x| x * norm));
    }
    (rows, centres)
}

/// Writes a table to `dir/name` and opens it.
fn write_vectors(dir: &Path, name: &str, rows: &[f32], dim: usize, src: u64) -> ItemVectors {
    let path = dir.join(name);
    let meta = VectorsMeta {
        source_sha256: source(src),
        kind: "sasrec".into(),
        ..Default::default()
    };
    ItemVectors::write(&path, rows, dim, &meta).unwrap();
    ItemVectors::open(&path).unwrap()
}

/// The main catalogue, its centres and its index at the default parameters, built once.
struct Fixture {
    vectors: ItemVectors,
    centres: Vec<Vec<f32>>,
    index: ItemIndex,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (rows, centres) = catalogue_rows(7, ITEMS, DIM, CENTRES);
        let dir = tempfile::tempdir().unwrap();
        // The map outlives the file: the directory is removed when `dir` drops.
        let vectors = write_vectors(dir.path(), "item_vectors.safetensors", &rows, DIM, 1);
        let started = std::time::Instant::now();
        // One thread: the same graph, so the same recall, on every run.
        let index = ItemIndex::build(&vectors, &AnnParams::default(), 1).unwrap();
        eprintln!("built {ITEMS} x {DIM} in {:.2?}", started.elapsed());
        Fixture {
            vectors,
            centres,
            index,
        }
    })
}

/// [`QUERIES`] queries of a seed, each a point near a random centre.
fn queries(seed: u64, centres: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    (0..QUERIES)
        .map(|_| {
            let centre = rng.pick(centres);
            near(&mut rng, centre, 0.5)
        })
        .collect()
}

/// |found ∩ exact| / |exact| (1 when exact is empty).
fn recall(found: &[(u64, f32)], exact: &[(u64, f32)]) -> f64 {
    let exact_items: HashSet<u64> = exact.iter().map(|p| p.0).collect();
    let hits = found.iter().filter(|p| exact_items.contains(&p.0)).count();
    hits as f64 / exact.len().max(1) as f64
}

/// Checks that `found` holds exact scores, best first, ties to the lower index.
fn assert_exact_order(query: &[f32], vectors: &ItemVectors, found: &[(u64, f32)]) {
    for &(i, s) in found {
        assert_eq!(s, dot(query, vectors.row(i as usize)), "score of item {i}");
    }
    for w in found.windows(2) {
        assert!(
            w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0),
            "{w:?}"
        );
    }
}

/// Checks that the mean recall@K of `recommend` (at [`DEFAULT_EF`], `K + MARGIN`
/// candidates) against `exact_top_k` over the queries of `seed`, with the allowed set of each
/// query from `allowed_for`, reaches `bar`, and prints it under `label`.
fn check_recall(
    index: &ItemIndex,
    seed: u64,
    bar: f64,
    label: &str,
    allowed_for: &dyn Fn(&[f32]) -> Vec<bool>,
) {
    let f = fixture();
    let qs = queries(seed, &f.centres);
    let total: f64 = qs
        .iter()
        .map(|q| {
            let ok = allowed_for(q);
            let allowed = |i: u64| ok[i as usize];
            let found = index.recommend(q, &f.vectors, K, MARGIN, DEFAULT_EF, allowed);
            let found = found.unwrap();
            assert!(
                found.iter().all(|&(i, _)| ok[i as usize]),
                "a disallowed item"
            );
            assert_exact_order(q, &f.vectors, &found);
            recall(&found, &exact_top_k(q, &f.vectors, K, allowed))
        })
        .sum();
    let r = total / qs.len() as f64;
    eprintln!("recall@{K} {label}: {r:.4} (ef {DEFAULT_EF}, {K} + {MARGIN} candidates)");
    assert!(r >= bar, "recall@{K} {label}: {r} < {bar}");
}

/// Every item allowed.
fn everything(_: &[f32]) -> Vec<bool> {
    vec![true; ITEMS + 1]
}

#[test]
fn recall_at_default_params() {
    let label = "default params (f16, M 16, efc 128)";
    check_recall(&fixture().index, 11, RECALL_BAR, label, &everything);
}

#[test]
fn exclusions_never_leak_and_keep_recall() {
    let f = fixture();
    let banned_for = |q: &[f32]| {
        let mut rng = Rng::new(q[0].to_bits() as u64);
        let mut ok: Vec<bool> = (0..=ITEMS).map(|_| !rng.chance(30)).collect();
        for (i, _) in exact_top_k(q, &f.vectors, 5, |_| true) {
            ok[i as usize] = false;
        }
        ok
    };
    let label = "30% + the top 5 excluded";
    check_recall(&f.index, 12, RECALL_BAR, label, &banned_for);
}

#[test]
fn quantizations_recall() {
    let f = fixture();
    for quantization in [Quantization::F32, Quantization::I8] {
        let params = AnnParams {
            quantization,
            ..AnnParams::default()
        };
        let index = ItemIndex::build(&f.vectors, &params, 2).unwrap();
        check_recall(&index, 13, 0.95, quantization.as_str(), &everything);
    }
}

#[test]
fn concurrent_searches_with_mixed_ef_match_sequential_ones() {
    let f = fixture();
    let qs = queries(14, &f.centres);
    let ef_of = |n: usize| [16, DEFAULT_EF][n & 1];
    let alone: Vec<Vec<u64>> = (0..qs.len())
        .map(|n| f.index.search(&qs[n], 20, ef_of(n)).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (qs, alone) = (&qs, &alone);
            s.spawn(move || {
                for n in (t..qs.len()).step_by(8) {
                    assert_eq!(f.index.search(&qs[n], 20, ef_of(n)).unwrap(), alone[n]);
                }
            });
        }
    });
}

#[test]
fn save_then_open_gives_the_same_answers() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.usearch");
    let sidecar = f.index.save(&path).unwrap();
    assert_eq!(sidecar.index_bytes, std::fs::metadata(&path).unwrap().len());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sidecar_path(&path)).unwrap()).unwrap();
    assert_eq!(json["quantization"], "f16");
    assert_eq!(json["num_items"], ITEMS);
    assert_eq!(json["source_sha256"], source(1));
    let opened = ItemIndex::open(&path, &f.vectors).unwrap();
    assert_eq!(opened.info(), f.index.info());
    for q in queries(15, &f.centres).iter().take(50) {
        let (a, b) = (f.index.search(q, 20, 32), opened.search(q, 20, 32));
        assert_eq!(a.unwrap(), b.unwrap());
        let all = |_: u64| true;
        let a = f.index.recommend(q, &f.vectors, K, MARGIN, DEFAULT_EF, all);
        let b = opened.recommend(q, &f.vectors, K, MARGIN, DEFAULT_EF, all);
        assert_eq!(a.unwrap(), b.unwrap());
    }
}

/// A small catalogue and its saved index in `dir`: (vectors, index path).
fn small_saved(dir: &Path) -> (ItemVectors, PathBuf) {
    let (rows, _) = catalogue_rows(21, 2_000, 16, 40);
    let vectors = write_vectors(dir, "item_vectors.safetensors", &rows, 16, 2);
    let index = ItemIndex::build(&vectors, &AnnParams::default(), 1).unwrap();
    let path = dir.join("items.usearch");
    index.save(&path).unwrap();
    (vectors, path)
}

/// The error of opening `path` for `vectors`, which must name `file` and say `what`.
fn assert_open_fails(path: &Path, vectors: &ItemVectors, file: &Path, what: &str) {
    let err = ItemIndex::open(path, vectors).unwrap_err().to_string();
    assert!(
        err.contains(&file.display().to_string()),
        "{err:?} names {}",
        file.display()
    );
    assert!(err.contains(what), "{err:?} says {what:?}");
    assert!(!err.contains('\n'), "{err:?} is one line");
}

#[test]
fn damaged_or_foreign_index_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (vectors, path) = small_saved(dir.path());
    let sidecar = sidecar_path(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    let original = std::fs::read(&path).unwrap();

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    assert_open_fails(&path, &vectors, &path, "truncated");

    let mut flipped = original.clone();
    flipped[len as usize / 2] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    assert_open_fails(&path, &vectors, &path, "corrupt");

    std::fs::write(&path, &original).unwrap();
    ItemIndex::open(&path, &vectors).unwrap();

    let (rows, _) = catalogue_rows(21, 2_000, 16, 40);
    let other_source = write_vectors(dir.path(), "other.safetensors", &rows, 16, 3);
    assert_open_fails(&path, &other_source, &path, "built for other item vectors");
    let fewer = write_vectors(dir.path(), "fewer.safetensors", &rows[..16 * 1_000], 16, 2);
    assert_open_fails(&path, &fewer, &path, "built for other item vectors");

    let sidecar_text = std::fs::read_to_string(&sidecar).unwrap();
    std::fs::write(&sidecar, "{\"format\": ").unwrap();
    assert_open_fails(&path, &vectors, &sidecar, "malformed sidecar");
    std::fs::remove_file(&sidecar).unwrap();
    assert_open_fails(&path, &vectors, &sidecar, "missing");

    std::fs::write(&sidecar, sidecar_text).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_open_fails(&path, &vectors, &path, "No such file");
}

#[test]
fn recommend_refuses_vectors_of_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let (vectors, path) = small_saved(dir.path());
    let index = ItemIndex::open(&path, &vectors).unwrap();
    let (rows, _) = catalogue_rows(21, 2_000, 16, 40);
    let other = write_vectors(dir.path(), "other.safetensors", &rows, 16, 9);
    let err = index
        .recommend(&[0.1; 16], &other, 5, 5, 32, |_| true)
        .unwrap_err();
    assert!(err.to_string().contains("other.safetensors"), "{err}");
    let err = index.search(&[0.1; 15], 5, 32).unwrap_err();
    assert!(err.to_string().contains("16 finite floats"), "{err}");
}

#[test]
fn item_vectors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("item_vectors.safetensors");
    let rows: Vec<f32> = (0..4 * 3).map(|x| x as f32 * 0.5 - 1.0).collect();
    let mut meta = VectorsMeta {
        source_sha256: source(5),
        kind: "tisasrec".into(),
        ..Default::default()
    };
    meta.extra
        .insert("sasrec_rs_version".into(), "0.1.0".into());
    ItemVectors::write(&path, &rows, 3, &meta).unwrap();
    let v = ItemVectors::open(&path).unwrap();
    assert_eq!((v.num_items(), v.dim()), (3, 3));
    assert_eq!(v.row(0), &rows[..3]);
    assert_eq!(v.row(3), &rows[9..]);
    assert_eq!(
        (v.source_sha256(), v.kind()),
        (source(5).as_str(), "tisasrec")
    );
    assert_eq!(v.metadata()["sasrec_rs_version"], "0.1.0");
    assert_eq!(v.metadata()["num_items"], "3");
}

/// Raw tensor bytes of any dtype and shape, to write files the writer would refuse.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.bytes[..]).into()
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes one raw tensor with the given metadata to `path`.
fn write_raw(path: &Path, name: &str, raw: Raw, meta: &[(&str, &str)]) {
    let meta = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize_to_file([(name, raw)], Some(meta), path).unwrap();
}

/// Float32 zeros of `shape`.
fn zeros(shape: &[usize]) -> Raw {
    Raw {
        dtype: Dtype::F32,
        bytes: vec![0; 4 * shape.iter().product::<usize>()],
        shape: shape.to_vec(),
    }
}

#[test]
fn item_vectors_reject_bad_files_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let src = source(1);
    let good = [
        ("source_sha256", src.as_str()),
        ("kind", "sasrec"),
        ("num_items", "2"),
        ("dim", "2"),
    ];
    let reject = |name: &str, raw: Raw, meta: &[(&str, &str)], what: &str| {
        write_raw(&path, name, raw, meta);
        let e = ItemVectors::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains(what),
            "{e:?} vs {what:?}"
        );
    };
    const T: &str = "item_vectors";
    write_raw(&path, T, zeros(&[3, 2]), &good);
    ItemVectors::open(&path).unwrap();
    reject(
        "embeddings",
        zeros(&[3, 2]),
        &good,
        "no tensor \"item_vectors\"",
    );
    let f64s = Raw {
        dtype: Dtype::F64,
        shape: vec![3, 2],
        bytes: vec![0; 48],
    };
    reject(T, f64s, &good, "dtype F64");
    reject(T, zeros(&[6]), &good, "shape [6]");
    reject(T, zeros(&[1, 2]), &good, "shape [1, 2]");
    reject(T, zeros(&[3, 2]), &good[1..], "no \"source_sha256\"");
    reject(T, zeros(&[4, 2]), &good, "num_items = \"2\"");
    let bad_digest = [
        ("source_sha256", "abc"),
        ("kind", "x"),
        ("num_items", "2"),
        ("dim", "2"),
    ];
    reject(T, zeros(&[3, 2]), &bad_digest, "not 64 lower-case hex");
    let mut nan = zeros(&[3, 2]);
    nan.bytes[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
    reject(T, nan, &good, "row 1 holds a non-finite");

    write_raw(&path, T, zeros(&[3, 2]), &good);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 4)
        .unwrap();
    let e = ItemVectors::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn item_vectors_writer_rejects_what_the_reader_would() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let mut meta = VectorsMeta {
        source_sha256: source(1),
        kind: "sasrec".into(),
        ..Default::default()
    };
    let err = |rows: &[f32], dim, meta: &VectorsMeta| {
        ItemVectors::write(&path, rows, dim, meta)
            .unwrap_err()
            .to_string()
    };
    assert!(err(&[0.0; 5], 2, &meta).contains("do not form"));
    assert!(err(&[0.0; 2], 2, &meta).contains("do not form"));
    assert!(err(&[0.0, 1.0, f32::INFINITY, 0.0], 2, &meta).contains("row 1"));
    meta.extra.insert("dim".into(), "3".into());
    assert!(err(&[0.0; 4], 2, &meta).contains("reserved"));
    meta.extra.clear();
    meta.source_sha256 = "ABC".into();
    assert!(err(&[0.0; 4], 2, &meta).contains("w.safetensors"));
    assert!(!path.exists(), "nothing is written on error");
}

/// Five 2-d items: v1 = (1, 0), v2 = (0, 1), v3 = (1, 0), v4 = (½, ½), v5 = (−1, 0).
fn hand_vectors(dir: &Path) -> ItemVectors {
    let rows = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5, -1.0, 0.0];
    write_vectors(dir, "hand.safetensors", &rows, 2, 4)
}

#[test]
fn exact_top_k_by_hand_with_ties() {
    let dir = tempfile::tempdir().unwrap();
    let v = hand_vectors(dir.path());
    let all = |_: u64| true;
    // q = (1, 1): scores 1, 1, 1, 1, −1, all tied but the last: lower index first.
    let q = [1.0, 1.0];
    assert_eq!(
        exact_top_k(&q, &v, 3, all),
        vec![(1, 1.0), (2, 1.0), (3, 1.0)]
    );
    assert_eq!(
        exact_top_k(&q, &v, 3, |i| i != 2),
        vec![(1, 1.0), (3, 1.0), (4, 1.0)]
    );
    // q = (2, 1): scores 2, 1, 2, 1.5, −2.
    let q = [2.0, 1.0];
    let want = vec![(1, 2.0), (3, 2.0), (4, 1.5), (2, 1.0), (5, -2.0)];
    assert_eq!(exact_top_k(&q, &v, 10, all), want);
    assert_eq!(exact_top_k(&q, &v, 0, all), vec![]);
    // Rescoring ignores duplicates, the padding row and unknown items.
    assert_eq!(
        rescore(&q, &v, &[4, 3, 3, 0, 99, 5], 2, all),
        vec![(3, 2.0), (4, 1.5)]
    );
    assert_eq!(rescore(&q, &v, &[5, 4, 3, 2, 1], 5, all), want);
    // q = (−1, 0): scores −1, 0, −1, −½, 1.
    let q = [-1.0, 0.0];
    assert_eq!(exact_top_k(&q, &v, 2, all), vec![(5, 1.0), (2, 0.0)]);
}

#[test]
fn dot_sums_in_the_documented_order() {
    let q: Vec<f32> = (1..=11).map(|x| x as f32).collect();
    let v: Vec<f32> = (1..=11).map(|x| (x % 3) as f32 - 1.0).collect();
    let hand: f32 = q.iter().zip(&v).map(|(a, b)| a * b).sum();
    assert_eq!(dot(&q, &v), hand);
    // Not associative in general: 1e8 + 1 − 1e8 depends on the order; the lanes fix it.
    let mut q = vec![0.0f32; 9];
    q[0] = 1e8;
    q[4] = -1e8;
    q[1] = 1.0;
    q[8] = 1.0;
    assert_eq!(dot(&q, &[1.0; 9]), 2.0);
}
