//! Row-wise Adagrad for the item table (`--item_optimizer rowwise_adagrad`, docs/MODELS.md §7):
//! FBGEMM's / TorchRec's `EXACT_ROWWISE_ADAGRAD`, one accumulator per row instead of one per
//! element. For every row r of a step's row-sparse gradient `g` (duplicates summed):
//!
//! ```text
//! G_r ← G_r + (1/C) Σ_c g_rc²        θ_r ← θ_r − lr · g_r / (√G_r + ε)
//! ```
//!
//! with `G` starting at 0 and ε = 1e-8; rows a step does not touch are left as they are. The
//! state is (I+1) floats, against Adam's 2·(I+1)·C.

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::optim::touched_rows;

/// FBGEMM's default ε.
const EPS: f64 = 1e-8;

/// Row-wise Adagrad over one table.
pub struct RowwiseAdagrad {
    /// The table's parameter name.
    name: String,
    /// The table (rows, C).
    param: Tensor,
    /// `G` (rows) fp32.
    pub sum: Tensor,
}

impl RowwiseAdagrad {
    /// Zero accumulators for the table `param`, called `name`.
    pub fn new(name: &str, param: Tensor) -> Self {
        let sum = Tensor::zeros([param.size()[0]], (Kind::Float, param.device()));
        Self {
            name: name.to_string(),
            param,
            sum,
        }
    }

    /// The table's parameter name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Empties the table's row-sparse gradient.
    pub fn zero_grad(&mut self) {
        let mut g = self.param.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }

    /// One update of the rows the gradient holds, with learning rate `lr` ([module docs](self)).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let g = self.param.grad();
        if !g.defined() {
            return Ok(());
        }
        let (rows, values) = touched_rows(&g, &self.name)?;
        tch::no_grad(|| {
            let mean_square = values
                .square()
                .mean_dim([1i64].as_slice(), false, Kind::Float);
            let sum = self.sum.index_select(0, &rows) + mean_square; // G_r
            let _ = self.sum.index_copy_(0, &rows, &sum);
            let scale = (sum.sqrt() + EPS).reciprocal() * lr; // lr / (√G_r + ε)
            let update = values * scale.unsqueeze(1);
            let _ = self.param.index_add_(0, &rows, &(-update));
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two steps on a 4-row table, row 2 touched twice in the first step and row 3 never, equal
    /// the update written out by hand; the untouched rows keep their bits.
    #[test]
    fn steps_equal_the_written_out_update() {
        let init = [[1.0f32, -2.0], [0.5, 0.25], [3.0, -1.0], [-0.5, 2.0]];
        let table = Tensor::from_slice(&init.concat())
            .reshape([4, 2])
            .set_requires_grad(true);
        let mut opt = RowwiseAdagrad::new("item_emb.weight", table.shallow_clone());
        let lr = 0.1f64;
        let mut theta: Vec<[f64; 2]> = init.iter().map(|r| [r[0] as f64, r[1] as f64]).collect();
        let mut acc = [0f64; 4];
        let ids_of_step = [vec![1i64, 2, 2, 0], vec![2i64, 1]];
        for ids in &ids_of_step {
            opt.zero_grad();
            let rows = Tensor::embedding(&table, &Tensor::from_slice(ids), 0, false, true);
            // L = Σ_k Σ_c (k+1)·c_weight·e(id_k)_c: each gather gets gradient (k+1)·w.
            let w = Tensor::from_slice(&[1.0f32, -3.0]);
            let k = Tensor::arange_start(1, ids.len() as i64 + 1, (Kind::Float, tch::Device::Cpu));
            (rows * w.unsqueeze(0) * k.unsqueeze(1))
                .sum(Kind::Float)
                .backward();
            opt.step(lr).unwrap();
            let mut g = vec![[0f64; 2]; 4];
            for (k, &id) in ids.iter().enumerate() {
                g[id as usize][0] += (k + 1) as f64;
                g[id as usize][1] += -3.0 * (k + 1) as f64;
            }
            for r in 1..4 {
                if g[r] == [0.0, 0.0] && !ids.contains(&(r as i64)) {
                    continue;
                }
                acc[r] += (g[r][0] * g[r][0] + g[r][1] * g[r][1]) / 2.0;
                for c in 0..2 {
                    theta[r][c] -= lr * g[r][c] / (acc[r].sqrt() + EPS);
                }
            }
        }
        let got: Vec<f32> = Vec::try_from(table.detach().reshape([-1])).unwrap();
        for r in 0..4 {
            for c in 0..2 {
                let (a, b) = (got[2 * r + c] as f64, theta[r][c]);
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "row {r}: {a} vs {b}"
                );
            }
        }
        assert_eq!(
            &got[6..8],
            &init[3],
            "row 3 was never touched: bit-unchanged"
        );
        assert_eq!(&got[0..2], &init[0], "row 0 (padding) gets no gradient");
        let sums: Vec<f32> = Vec::try_from(&opt.sum).unwrap();
        for r in 0..4 {
            assert!(
                (sums[r] as f64 - acc[r]).abs() <= 1e-5 * acc[r].max(1.0),
                "G_{r}: {sums:?} vs {acc:?}"
            );
        }
    }
}
