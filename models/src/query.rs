//! Which positions a layer queries: all of them, or only the last one (`last_only`, what
//! serving and the exported graph compute). Used by the blocks, the mHC mixing and TiSASRec's
//! padding mask; depends on the [`Ops`] trait only.

use crate::ops::Ops;

/// `x[:, -1:]` when only the last position is queried, else `x`.
pub(crate) fn queries<O: Ops>(o: &O, x: &O::T, last_only: bool) -> O::T {
    if last_only {
        o.slice(x, 1, -1, i64::MAX) // (B, 1, …)
    } else {
        o.identity(x)
    }
}
