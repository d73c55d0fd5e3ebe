//! Model configuration shared by training, export and serving (`config.json`).
//!
//! Lives in the pure-Rust crate because the server reads it too and must not link
//! libtorch. Constructors in `sasrec-models` take a validated [`ModelConfig`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::FeatureSchema;

/// The attention backbone (docs/MODELS.md §1 SASRec, §2 TiSASRec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backbone {
    /// Self-attentive sequential recommendation (Kang & McAuley 2018).
    Sasrec,
    /// Time-interval-aware self-attention (Li, Wang & McAuley 2020).
    Tisasrec,
}

/// How mHC makes the residual mixing matrix `H_res` doubly stochastic (`--mhc_hres`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HresProjection {
    /// Sinkhorn-Knopp on `exp(H̃_res)` (mHC paper Eq. 9): rows exact, columns approximate.
    #[default]
    Sinkhorn,
    /// mHC-lite (arXiv:2601.05732): `H_res = Σ_k softmax(a)_k P_k` over the n! permutation
    /// matrices P_k, exactly doubly stochastic; refused for n > [`MAX_LITE_STREAMS`].
    Lite,
}

impl HresProjection {
    /// The flag values, in declaration order.
    pub const NAMES: [&'static str; 2] = ["sinkhorn", "lite"];

    /// The flag value (`sinkhorn`, `lite`).
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::str::FromStr for HresProjection {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "sinkhorn" => Ok(Self::Sinkhorn),
            "lite" => Ok(Self::Lite),
            _ => Err(format!(
                "unknown H_res projection '{s}'; expected sinkhorn or lite"
            )),
        }
    }
}

/// The largest stream count mHC-lite accepts: n! = 120 permutations at n = 5.
pub const MAX_LITE_STREAMS: usize = 5;

/// How TiSASRec applies dropout to the interval embeddings `E_K[rᵢⱼ]`, `E_V[rᵢⱼ]`
/// (`--time_dropout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeDropout {
    /// One dropout mask per sample on the two (k+1, C) tables, shared by every (i, j) pair of
    /// that sample: the relation attention runs bucketed, in O(B·h·T·(T + k)) memory.
    #[default]
    Table,
    /// The reference: an independent mask on every (i, j, c) element of the two gathered
    /// (B, T, T, C) tensors, which must then be built (memory O(B·T²·C)).
    Elementwise,
}

impl TimeDropout {
    /// The flag values, in declaration order.
    pub const NAMES: [&'static str; 2] = ["table", "elementwise"];
}

impl std::str::FromStr for TimeDropout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "table" => Ok(Self::Table),
            "elementwise" => Ok(Self::Elementwise),
            _ => Err(format!(
                "unknown time dropout '{s}'; expected table or elementwise"
            )),
        }
    }
}

/// The residual wiring of a plain (non-mHC) block (`--block_wiring`, docs/MODELS.md §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockWiring {
    /// `X ← LN(X + MHA(X))`, `X ← LN(X + FFN(X))`: pmixer's current SASRec, its default.
    PostLn,
    /// `X ← X + MHA(LN(X))`, `X ← X + FFN(LN(X))` (`--norm_first`).
    PreLn,
    /// `Q = LN(X)`, `X ← Q + MHA(Q, X, X)`, `Y = LN(X)`, `X ← (Y + FFN(Y))·¬pad`: the SASRec
    /// paper's code, SASRec+ (Klenitskiy & Vasilev 2023) and TiSASRec, TiSASRec's default.
    Original,
    /// `X ← X + σ(W_a X + b_a) ⊙ MHA(LN(X))`, `X ← X + σ(W_f X + b_f) ⊙ FFN(LN(X))`: Pre-LN with
    /// LiGR's learned gate on each residual branch (arXiv 2502.03417), SASRec only — the
    /// learned-residual control of mHC.
    Gated,
}

impl BlockWiring {
    /// The flag values, in declaration order.
    pub const NAMES: [&'static str; 4] = ["post_ln", "pre_ln", "original", "gated"];

    /// The flag value (`post_ln`, `pre_ln`, `original`, `gated`).
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::str::FromStr for BlockWiring {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [Self::PostLn, Self::PreLn, Self::Original, Self::Gated]
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                let names = Self::NAMES.join(", ");
                format!("unknown block wiring '{s}'; expected one of {names}")
            })
    }
}

/// How the parameters are first drawn (`--init`, docs/MODELS.md §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum InitScheme {
    /// The backbone's pmixer code: Xavier-normal (SASRec) or Xavier-uniform (TiSASRec) on every
    /// tensor of rank ≥ 2, torch's constructor defaults on rank-1 tensors.
    #[default]
    #[serde(rename = "pmixer")]
    Pmixer,
    /// SASRec+, RecBole and GPT-2: N(0, 0.02²) on embeddings and Linear/Conv1d weights, their
    /// biases 0, LayerNorm 1/0; the fused attention in-projection is not a Linear and keeps
    /// torch's Xavier-uniform.
    #[serde(rename = "normal_0.02")]
    Normal002,
}

impl InitScheme {
    /// The flag values, in declaration order.
    pub const NAMES: [&'static str; 2] = ["pmixer", "normal_0.02"];

    /// The flag value (`pmixer`, `normal_0.02`).
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether this is the default, [`InitScheme::Pmixer`] (left out of `config.json`).
    pub fn is_pmixer(&self) -> bool {
        *self == Self::Pmixer
    }
}

impl std::str::FromStr for InitScheme {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "pmixer" => Ok(Self::Pmixer),
            "normal_0.02" => Ok(Self::Normal002),
            _ => Err(format!(
                "unknown initialisation '{s}'; expected pmixer or normal_0.02"
            )),
        }
    }
}

/// How SASRec's left-padded window meets attention and positions (`--padding`,
/// docs/MODELS.md §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// pmixer's SASRec: padded keys take part in attention (their keys and values are the
    /// projections' biases) and positions count back from the newest item, which is at T.
    #[default]
    Pmixer,
    /// Padded keys are masked out of attention; positions as `pmixer`.
    Masked,
    /// As if the window were right-padded (SASRec+'s code): padded keys masked out and
    /// positions counted from the oldest item in the window, which is at 1.
    Right,
}

impl Padding {
    /// The flag values, in declaration order.
    pub const NAMES: [&'static str; 3] = ["pmixer", "masked", "right"];

    /// The flag value (`pmixer`, `masked`, `right`).
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether this is the default, [`Padding::Pmixer`] (left out of `config.json`).
    pub fn is_pmixer(&self) -> bool {
        *self == Self::Pmixer
    }
}

impl std::str::FromStr for Padding {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [Self::Pmixer, Self::Masked, Self::Right]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names = Self::NAMES.join(", ");
                format!("unknown padding '{s}'; expected one of {names}")
            })
    }
}

/// Manifold-constrained hyper-connections (docs/MODELS.md §3), `None` for a plain residual.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MhcConfig {
    /// Number of residual streams n (`--mhc_expansion_rate`, default 4).
    pub expansion_rate: usize,
    /// Sinkhorn-Knopp iterations t_max (`--mhc_sinkhorn_iter`, default 20).
    pub sinkhorn_iter: usize,
    /// Initial value of the gates α_pre, α_post, α_res (`--mhc_init_gate`, default 0.01).
    pub init_gate: f64,
    /// Keep the whole mHC path out of autocast (`--mhc_no_amp`).
    pub no_amp: bool,
    /// The projection that makes `H_res` doubly stochastic (`--mhc_hres`).
    #[serde(default)]
    pub h_res: HresProjection,
}

impl Default for MhcConfig {
    fn default() -> Self {
        Self {
            expansion_rate: 4,
            sinkhorn_iter: 20,
            init_gate: 0.01,
            no_amp: false,
            h_res: HresProjection::Sinkhorn,
        }
    }
}

/// Every hyper-parameter that determines the network's parameters and forward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// SASRec or TiSASRec.
    pub backbone: Backbone,
    /// Number of items I; item ids are 1..=I and 0 is padding.
    pub num_items: usize,
    /// Window length T (`--maxlen`).
    pub maxlen: usize,
    /// Hidden size C = d (`--hidden_units`).
    pub hidden_units: usize,
    /// Number of transformer blocks (`--num_blocks`).
    pub num_blocks: usize,
    /// Attention heads h; C must be divisible by h (`--num_heads`).
    pub num_heads: usize,
    /// Dropout rate for embeddings, attention probabilities and the FFN (`--dropout_rate`).
    pub dropout_rate: f64,
    /// Pre-LN blocks (`--norm_first`); `false`: the wiring [`ModelConfig::wiring`] resolves.
    pub norm_first: bool,
    /// The wiring of plain blocks (`--block_wiring`); absent from configs written before the
    /// flag existed, where `norm_first` and the backbone decide ([`ModelConfig::wiring`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_wiring: Option<BlockWiring>,
    /// How the parameters are first drawn (`--init`; left out of `config.json` when pmixer).
    #[serde(default, skip_serializing_if = "InitScheme::is_pmixer")]
    pub init: InitScheme,
    /// SASRec's padding semantics (`--padding`; left out of `config.json` when pmixer).
    #[serde(default, skip_serializing_if = "Padding::is_pmixer")]
    pub padding: Padding,
    /// Largest time-interval bucket k; TiSASRec has k+1 interval embeddings (`--time_span`).
    pub time_span: usize,
    /// mHC settings, `None` for the plain residual models (`--no_mhc`).
    pub mhc: Option<MhcConfig>,
    /// TiSASRec's dropout on the interval embeddings (`--time_dropout`).
    #[serde(default)]
    pub time_dropout: TimeDropout,
    /// The item features the item vectors are composed from (`--item_features`,
    /// `--item_repr`); `None`: the ID table alone, as before features existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_features: Option<ItemFeaturesConfig>,
}

/// How an item is represented (`--item_repr`, docs/MODELS.md §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ItemRepr {
    /// `e(i) = E_id[i]`: one trained row per item.
    #[default]
    #[serde(rename = "id")]
    Id,
    /// `e(i) = E_id[i] + features(i)`.
    #[serde(rename = "id+features")]
    IdFeatures,
    /// `e(i) = features(i)`: every item, trained or not, has a vector from its features.
    #[serde(rename = "features")]
    Features,
}

impl ItemRepr {
    /// `id`, `id+features` or `features`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::IdFeatures => "id+features",
            Self::Features => "features",
        }
    }

    /// The representation named `name` ([`ItemRepr::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Id, Self::IdFeatures, Self::Features]
            .into_iter()
            .find(|r| r.name() == name)
    }

    /// Whether the representation has an ID table.
    pub fn has_id(self) -> bool {
        self != Self::Features
    }
}

impl fmt::Display for ItemRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The item features of a model: the representation and the encoding of each column
/// ([`FeatureSchema`], fitted on the training items).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemFeaturesConfig {
    /// `id+features` or `features`.
    pub repr: ItemRepr,
    /// The columns, their vocabularies, widths and moments.
    pub schema: FeatureSchema,
}

impl ModelConfig {
    /// The SASRec paper's ML-1M setting (pmixer's README flags): I = 3416, T = 200, C = 50,
    /// 2 blocks, 1 head, dropout 0.2, Post-LN, no mHC — 212,000 parameters.
    pub fn sasrec_ml1m() -> Self {
        Self {
            backbone: Backbone::Sasrec,
            num_items: 3416,
            maxlen: 200,
            hidden_units: 50,
            num_blocks: 2,
            num_heads: 1,
            dropout_rate: 0.2,
            norm_first: false,
            block_wiring: None,
            init: InitScheme::Pmixer,
            padding: Padding::Pmixer,
            time_span: 100,
            mhc: None,
            time_dropout: TimeDropout::Table,
            item_features: None,
        }
    }

    /// The wiring of plain blocks: `block_wiring` when set, else Pre-LN with `norm_first`, else
    /// the backbone's reference (SASRec Post-LN as pmixer's current code, TiSASRec original).
    /// mHC models ignore it: their sub-layers are always Pre-LN (docs/MODELS.md §3.4).
    pub fn wiring(&self) -> BlockWiring {
        match (self.block_wiring, self.norm_first, self.backbone) {
            (Some(w), _, _) => w,
            (None, true, _) => BlockWiring::PreLn,
            (None, false, Backbone::Sasrec) => BlockWiring::PostLn,
            (None, false, Backbone::Tisasrec) => BlockWiring::Original,
        }
    }

    /// Whether the model reads time-interval matrices.
    pub fn is_time_aware(&self) -> bool {
        self.backbone == Backbone::Tisasrec
    }

    /// The model kind: backbone × residual (`sasrec`, `tisasrec`, `sasrec-mhc`,
    /// `tisasrec-mhc`).
    pub fn kind(&self) -> ModelKind {
        match (self.backbone, self.mhc.is_some()) {
            (Backbone::Sasrec, false) => ModelKind::Sasrec,
            (Backbone::Sasrec, true) => ModelKind::SasrecMhc,
            (Backbone::Tisasrec, false) => ModelKind::Tisasrec,
            (Backbone::Tisasrec, true) => ModelKind::TisasrecMhc,
        }
    }

    /// `block_wiring` agrees with `norm_first` and is only set for plain blocks; `gated` and
    /// a padding other than pmixer are SASRec's.
    fn validate_wiring(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if !self.padding.is_pmixer() && self.is_time_aware() {
            return bad(format!(
                "--padding {} is SASRec's (add --no_time); TiSASRec masks padded query rows as \
                 its reference",
                self.padding.as_str()
            ));
        }
        if let Some(w) = self.block_wiring {
            if self.norm_first != (w == BlockWiring::PreLn) {
                return bad(format!(
                    "--norm_first means --block_wiring pre_ln; it was combined with {}",
                    w.as_str()
                ));
            }
            if self.mhc.is_some() {
                return bad(format!(
                    "--block_wiring {} applies to plain residual blocks; mHC sub-layers are \
                     always Pre-LN (pass --no_mhc)",
                    w.as_str()
                ));
            }
            if w == BlockWiring::Gated && self.backbone != Backbone::Sasrec {
                return bad(
                    "--block_wiring gated is SASRec's (add --no_time); TiSASRec has post_ln, \
                     pre_ln and original"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// Checks the invariants once so that model constructors can stay infallible.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.num_items == 0 {
            return bad("num_items must be at least 1".into());
        }
        if self.maxlen == 0 {
            return bad("--maxlen must be at least 1".into());
        }
        if self.hidden_units == 0 || self.num_heads == 0 {
            return bad("--hidden_units and --num_heads must be at least 1".into());
        }
        if !self.hidden_units.is_multiple_of(self.num_heads) {
            return bad(format!(
                "--hidden_units {} is not divisible by --num_heads {}",
                self.hidden_units, self.num_heads
            ));
        }
        if !(0.0..1.0).contains(&self.dropout_rate) {
            return bad(format!(
                "--dropout_rate {} is not in [0, 1)",
                self.dropout_rate
            ));
        }
        self.validate_wiring()?;
        if self.is_time_aware() && self.time_span == 0 {
            return bad("--time_span must be at least 1".into());
        }
        if let Some(f) = &self.item_features {
            if f.repr == ItemRepr::Id {
                return bad(
                    "--item_repr id has no item features: use id+features or features".into(),
                );
            }
            if f.schema.columns.is_empty() {
                return bad("--item_features: no feature columns".into());
            }
        }
        if let Some(m) = &self.mhc {
            if m.expansion_rate == 0 {
                return bad("--mhc_expansion_rate must be at least 1".into());
            }
            if m.sinkhorn_iter == 0 {
                return bad("--mhc_sinkhorn_iter must be at least 1".into());
            }
            if m.h_res == HresProjection::Lite && m.expansion_rate > MAX_LITE_STREAMS {
                return bad(format!(
                    "--mhc_hres lite mixes all n! permutation matrices; --mhc_expansion_rate {} \
                     would need {} of them (at most n = {MAX_LITE_STREAMS}); use --mhc_hres \
                     sinkhorn",
                    m.expansion_rate,
                    (1..=m.expansion_rate as u128)
                        .try_fold(1u128, |a, b| a.checked_mul(b))
                        .map_or("more than 10^38".to_string(), |f| f.to_string())
                ));
            }
        }
        Ok(())
    }
}

/// The four model kinds (docs/MODELS.md §1–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// SASRec.
    Sasrec,
    /// TiSASRec.
    Tisasrec,
    /// SASRec with mHC residuals.
    SasrecMhc,
    /// TiSASRec with mHC residuals.
    TisasrecMhc,
}

impl ModelKind {
    /// `sasrec`, `tisasrec`, `sasrec-mhc` or `tisasrec-mhc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sasrec => "sasrec",
            Self::Tisasrec => "tisasrec",
            Self::SasrecMhc => "sasrec-mhc",
            Self::TisasrecMhc => "tisasrec-mhc",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
