//! pmixer's `PointWiseFeedForward`: two 1×1 convolutions (docs/MODELS.md §1.4 step 5).

use tch::nn;

use crate::init::{InitRules, Param};
use crate::ops::Ops;

/// `FFN(x) = Dropout(Conv2(ReLU(Dropout(Conv1(x)))))` with 1×1 convolutions, i.e. position-wise
/// `Linear(C, C)` layers. The weights keep the checkpoint shape (C, C, 1) and are viewed as
/// (C, C). No residual inside: the block adds it (SASRec current code; for TiSASRec the
/// reference's internal residual is written out in the block instead).
#[derive(Debug)]
pub struct PointWiseFeedForward {
    conv1_w: Param,
    conv1_b: Param,
    conv2_w: Param,
    conv2_b: Param,
    c: i64,
    dropout: f64,
}

impl PointWiseFeedForward {
    /// Creates `{p}.conv1.weight` (C, C, 1), `{p}.conv1.bias` (C) and the same for `conv2`.
    /// Weights by `init.weight`, biases by `init.bias(C)`.
    pub fn new(p: &nn::Path, c: i64, dropout: f64, init: &InitRules) -> Self {
        let (p1, p2) = (p / "conv1", p / "conv2");
        Self {
            conv1_w: Param::new(&p1, "weight", &[c, c, 1], init.weight.clone()),
            conv1_b: Param::new(&p1, "bias", &[c], init.bias(c)),
            conv2_w: Param::new(&p2, "weight", &[c, c, 1], init.weight.clone()),
            conv2_b: Param::new(&p2, "bias", &[c], init.bias(c)),
            c,
            dropout,
        }
    }

    /// `FFN(x)`: (B, T, C) → (B, T, C).
    pub fn forward<O: Ops>(&self, o: &O, x: &O::T, train: bool) -> O::T {
        let w1 = o.reshape(&o.param(&self.conv1_w), &[self.c, self.c]); // (C, C)
        let w2 = o.reshape(&o.param(&self.conv2_w), &[self.c, self.c]); // (C, C)
        let h = o.linear(x, &w1, Some(&o.param(&self.conv1_b))); // (B, T, C)
        let h = o.dropout(&h, self.dropout, train);
        let h = o.relu(&h);
        let y = o.linear(&h, &w2, Some(&o.param(&self.conv2_b))); // (B, T, C)
        o.dropout(&y, self.dropout, train)
    }

    /// The parameters, in state-dict order.
    pub fn params(&self) -> Vec<&Param> {
        vec![&self.conv1_w, &self.conv1_b, &self.conv2_w, &self.conv2_b]
    }
}
