//! `config.json`'s model section: the block wiring and initialisation added after the first
//! release, read from configs written before and after them.

use sasrec_shared::config::{Backbone, BlockWiring, InitScheme, ModelConfig};

/// A config as written before `block_wiring` and `init` existed.
fn old_config(backbone: &str, norm_first: bool) -> ModelConfig {
    let json = format!(
        r#"{{"backbone": "{backbone}", "num_items": 10, "maxlen": 8, "hidden_units": 4,
            "num_blocks": 1, "num_heads": 1, "dropout_rate": 0.2, "norm_first": {norm_first},
            "time_span": 4, "mhc": null}}"#
    );
    serde_json::from_str(&json).unwrap()
}

#[test]
fn configs_without_a_wiring_keep_their_meaning() {
    for (backbone, norm_first, want) in [
        ("sasrec", false, BlockWiring::PostLn),
        ("sasrec", true, BlockWiring::PreLn),
        ("tisasrec", false, BlockWiring::Original),
        ("tisasrec", true, BlockWiring::PreLn),
    ] {
        let cfg = old_config(backbone, norm_first);
        assert_eq!(cfg.block_wiring, None);
        assert_eq!(cfg.wiring(), want, "{backbone} norm_first={norm_first}");
        assert_eq!(cfg.init, InitScheme::Pmixer);
        cfg.validate().unwrap();
    }
}

#[test]
fn wiring_and_init_round_trip_and_pmixer_is_left_out() {
    let mut cfg = ModelConfig::sasrec_ml1m();
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(
        !text.contains("block_wiring") && !text.contains("init"),
        "{text}"
    );
    cfg.block_wiring = Some(BlockWiring::Original);
    cfg.init = InitScheme::Normal002;
    let text = serde_json::to_string(&cfg).unwrap();
    assert!(
        text.contains(r#""block_wiring":"original""#) && text.contains(r#""init":"normal_0.02""#),
        "{text}"
    );
    let back: ModelConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(back.wiring(), BlockWiring::Original);
}

#[test]
fn contradicting_wirings_are_refused() {
    let mut cfg = ModelConfig::sasrec_ml1m();
    cfg.block_wiring = Some(BlockWiring::Original);
    cfg.norm_first = true;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(
        e.contains("--norm_first means --block_wiring pre_ln; it was combined with original"),
        "{e}"
    );
    cfg.norm_first = false;
    cfg.backbone = Backbone::Tisasrec;
    cfg.mhc = Some(Default::default());
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("mHC sub-layers are always Pre-LN"), "{e}");
    cfg.mhc = None;
    cfg.block_wiring = Some(BlockWiring::Gated);
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("--block_wiring gated is SASRec's"), "{e}");
    cfg.backbone = Backbone::Sasrec;
    cfg.validate().unwrap();
}

#[test]
fn flag_values_parse_by_name() {
    for name in BlockWiring::NAMES {
        assert_eq!(name.parse::<BlockWiring>().unwrap().as_str(), name);
    }
    for name in InitScheme::NAMES {
        assert_eq!(name.parse::<InitScheme>().unwrap().as_str(), name);
    }
    let e = "sandwich".parse::<BlockWiring>().unwrap_err();
    assert_eq!(
        e,
        "unknown block wiring 'sandwich'; expected one of post_ln, pre_ln, original, gated"
    );
    assert!("xavier".parse::<InitScheme>().is_err());
}
