//! Adam with explicit, checkpointable state (Kingma & Ba 2015).
//!
//! `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
//! `θ ← θ − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)` — the update of `torch.optim.Adam` without
//! weight decay. Written out (rather than tch's `nn::Adam`) so that the moments and the step
//! count can be saved in the resumable checkpoint and restored exactly.

use tch::{Kind, Tensor};

/// Adam over a fixed list of named parameters.
pub struct Adam {
    /// (name, parameter) in a fixed order.
    params: Vec<(String, Tensor)>,
    /// First moments, same order.
    pub m: Vec<Tensor>,
    /// Second moments, same order.
    pub v: Vec<Tensor>,
    /// Steps taken.
    pub t: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    /// β = (0.9, 0.98), ε = 1e-8: the SASRec reference settings.
    pub fn new(params: Vec<(String, Tensor)>) -> Self {
        let zeros = |p: &Tensor| p.zeros_like().to_kind(Kind::Float);
        let m = params.iter().map(|(_, p)| zeros(p)).collect();
        let v = params.iter().map(|(_, p)| zeros(p)).collect();
        Self {
            params,
            m,
            v,
            t: 0,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
        }
    }

    /// Parameter names in state order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    /// Clears the gradients.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// One update with learning rate `lr`; parameters without a gradient are skipped.
    pub fn step(&mut self, lr: f64) {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        tch::no_grad(|| {
            for ((_, p), (m, v)) in self
                .params
                .iter_mut()
                .zip(self.m.iter_mut().zip(&mut self.v))
            {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(Kind::Float);
                let _ = m
                    .g_mul_scalar_(self.beta1)
                    .g_add_(&(&g * (1.0 - self.beta1)));
                let _ = v
                    .g_mul_scalar_(self.beta2)
                    .g_add_(&(g.square() * (1.0 - self.beta2)));
                let denom = (v.sqrt() / bc2.sqrt()) + self.eps;
                let update = (&*m / denom) * (lr / bc1);
                let _ = p.g_sub_(&update.to_kind(p.kind()));
            }
        });
    }
}
