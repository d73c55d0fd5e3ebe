//! The exported models pass `onnx.checker.check_model(full_check=True)` (the venv's `onnx`
//! package) and carry the header and metadata that the server reads.

mod common;

use common::*;
use sasrec_export::Variant;
use serde_json::json;

#[test]
fn every_kind_passes_the_full_checker_and_carries_metadata() {
    for (i, name) in KINDS.iter().enumerate() {
        let cfg = kind(name);
        let run = make_run(&cfg, 20 + i as i64);
        for variant in [Variant::LastPosition, Variant::FullSequence] {
            let path = run.path().join(format!("{}.onnx", variant.as_str()));
            let out = run.export(variant, Some(path.clone()));
            let h = python_check(&path);
            let what = format!("{name} {variant:?}");
            assert_eq!(h["ir_version"], 10, "{what}");
            assert_eq!(h["opsets"], json!({"": 17}), "{what}");
            assert_eq!(h["producer"], "sasrec-rs", "{what}");

            // interface
            let (t, cols) = (cfg.maxlen as i64, cfg.num_items as i64 + 1);
            let mut inputs = json!({
                "seq": [7, ["batch", t]],
                "exclude": [7, ["batch", "num_exclude"]],
                "k": [7, [1]],
            });
            if cfg.is_time_aware() {
                inputs["time_matrix"] = json!([7, ["batch", t, t]]);
            }
            assert_eq!(h["inputs"], inputs, "{what}");
            assert_eq!(
                h["outputs"],
                json!({
                    "scores": [1, ["batch", cols]],
                    "topk_scores": [1, ["batch", "k"]],
                    "topk_items": [7, ["batch", "k"]],
                }),
                "{what}"
            );

            // initializers are exactly the checkpoint tensors, by name
            let mut names: Vec<String> = run.vs.variables().into_keys().collect();
            names.sort();
            assert_eq!(h["initializers"], json!(names), "{what}");

            // metadata
            let md = &h["metadata"];
            let digest = sasrec_export::run_dir::sha256_hex(
                &std::fs::read(run.path().join("model.safetensors")).unwrap(),
            );
            assert_eq!(md["source_sha256"], digest.as_str(), "{what}");
            assert_eq!(out.source_sha256, digest);
            assert_eq!(md["kind"], *name, "{what}");
            assert_eq!(md["maxlen"], t.to_string());
            assert_eq!(md["num_items"], cfg.num_items.to_string());
            assert_eq!(md["hidden_units"], cfg.hidden_units.to_string());
            assert_eq!(md["num_blocks"], "2");
            assert_eq!(md["num_heads"], "2");
            assert_eq!(md["sasrec_rs_version"], env!("CARGO_PKG_VERSION"));
            assert_eq!(md["graph_variant"], variant.as_str());
            assert_eq!(md["mhc"], cfg.mhc.is_some().to_string());
            let model_cfg: sasrec_shared::config::ModelConfig =
                serde_json::from_str(md["model_config"].as_str().unwrap()).unwrap();
            assert_eq!(model_cfg, cfg, "{what}");
            match cfg.mhc {
                Some(m) => {
                    assert_eq!(md["mhc_expansion_rate"], m.expansion_rate.to_string());
                    assert_eq!(md["mhc_sinkhorn_iter"], m.sinkhorn_iter.to_string());
                    assert_eq!(md["mhc_hres"], m.h_res.as_str());
                    assert_eq!(md["mhc_init_gate"], m.init_gate.to_string());
                    assert_eq!(md["mhc_no_amp"], m.no_amp.to_string());
                }
                None => assert!(md.get("mhc_expansion_rate").is_none()),
            }
            match run.intervals {
                Some(iv) => {
                    assert_eq!(md["time_unit"], iv.unit.to_string());
                    assert_eq!(md["time_span"], iv.span.to_string());
                    let parsed: sasrec_shared::time::Intervals =
                        serde_json::from_str(md["intervals"].as_str().unwrap()).unwrap();
                    assert_eq!(parsed, iv);
                }
                None => {
                    assert_eq!(md["time_unit"], "none");
                    assert_eq!(md["time_span"], "none");
                    assert_eq!(md["intervals"], "null");
                }
            }
        }
    }
}

/// ONNX Runtime sees the same metadata through its own API (what the server will use).
#[test]
fn onnx_runtime_reads_the_metadata() {
    let cfg = kind("tisasrec");
    let run = make_run(&cfg, 30);
    let path = run.path().join("model.onnx");
    run.export(Variant::LastPosition, None);
    let s = session(&path);
    let md = s.metadata().unwrap();
    assert_eq!(md.producer().unwrap(), "sasrec-rs");
    assert_eq!(md.custom("kind").unwrap(), "tisasrec");
    assert_eq!(md.custom("time_unit").unwrap(), "personal");
    assert_eq!(md.custom("maxlen").unwrap(), cfg.maxlen.to_string());
}

/// The graph outputs are written in place by the nodes that compute them (no `Identity` copy
/// of the `(batch, I+1)` scores on every run), and `TopK` reads the scores under their output
/// name.
#[test]
fn graph_outputs_are_written_in_place() {
    for name in KINDS {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let model = sasrec_models::SeqRecModel::new(&vs.root(), &kind(name)).unwrap();
        let graph = sasrec_export::graph::record(&model, Variant::LastPosition).unwrap();
        assert!(
            graph
                .node
                .iter()
                .all(|n| n.op_type.as_deref() != Some("Identity")),
            "{name}: an Identity node remains"
        );
        for out in &graph.output {
            let out = out.name.as_deref().unwrap();
            let producers = graph
                .node
                .iter()
                .filter(|n| n.output.iter().any(|o| o == out));
            assert_eq!(producers.count(), 1, "{name}: {out}");
        }
        assert!(
            graph
                .node
                .iter()
                .any(|n| n.op_type.as_deref() == Some("TopK")
                    && n.input.iter().any(|i| i == "scores")),
            "{name}: TopK does not read `scores`"
        );
    }
}
