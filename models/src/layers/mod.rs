//! Building blocks shared by SASRec and TiSASRec: LayerNorm, the attention core and its two
//! wrappers, the point-wise feed-forward network, and the transformer block with its residual
//! wiring ([`NormPlacement`] or mHC).

pub mod attention;
pub mod block;
pub mod ffn;
pub mod norm;

pub use attention::{
    attention_core, MultiHeadSelfAttention, Relation, TimeAwareAttention, TimeContext,
};
pub use block::{Block, NormPlacement, Residual};
pub use ffn::PointWiseFeedForward;
pub use norm::LayerNorm;
