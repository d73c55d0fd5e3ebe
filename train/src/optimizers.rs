//! The optimisers of a run as `--item_optimizer` chooses them (docs/MODELS.md §7): fused dense
//! Adam over every parameter (`adam`), over every parameter with the item table's touched rows
//! updated lazily (`lazy_adam`), or over every parameter but the item table, which row-wise
//! Adagrad updates (`rowwise_adagrad`). One step count `t` (Adam's) for all.

use tch::Tensor;

use crate::adagrad::RowwiseAdagrad;
use crate::config::ItemOptimizer;
use crate::error::Result;
use crate::optim::Adam;

/// The ID table's parameter name.
pub const ITEM_TABLE: &str = "item_emb.weight";

/// Adam and, under `rowwise_adagrad`, the item table's own optimiser.
pub struct Optimizers {
    /// Dense (and lazy) Adam.
    pub adam: Adam,
    /// Row-wise Adagrad of the item table.
    pub adagrad: Option<RowwiseAdagrad>,
}

impl Optimizers {
    /// The optimisers of `params` (name, parameter) under `choice`, Adam with β₂ = `beta2`.
    pub fn new(params: &[(String, Tensor)], choice: ItemOptimizer, beta2: f64) -> Self {
        let all = || params.iter().map(|(n, p)| (n.clone(), p.shallow_clone()));
        let mut set = Self::with_default_betas(params, choice, all);
        set.adam.set_beta2(beta2);
        set
    }

    fn with_default_betas<I: Iterator<Item = (String, Tensor)>>(
        params: &[(String, Tensor)],
        choice: ItemOptimizer,
        all: impl Fn() -> I,
    ) -> Self {
        match choice {
            ItemOptimizer::Adam => Self {
                adam: Adam::new(all().collect()),
                adagrad: None,
            },
            ItemOptimizer::LazyAdam => Self {
                adam: Adam::with_lazy_rows(all().collect(), ITEM_TABLE),
                adagrad: None,
            },
            ItemOptimizer::RowwiseAdagrad => {
                let table = params.iter().find(|(n, _)| n == ITEM_TABLE);
                Self {
                    adam: Adam::new(all().filter(|(n, _)| n != ITEM_TABLE).collect()),
                    adagrad: table.map(|(n, p)| RowwiseAdagrad::new(n, p.shallow_clone())),
                }
            }
        }
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) -> Result<()> {
        if let Some(a) = &mut self.adagrad {
            a.zero_grad();
        }
        self.adam.zero_grad()
    }

    /// One update: the dense parameters with learning rate `lr`, the item table's rows with
    /// `item_lr`.
    pub fn step(&mut self, lr: f64, item_lr: f64) -> Result<()> {
        self.adam.step_with(lr, item_lr)?;
        match &mut self.adagrad {
            Some(a) => a.step(item_lr),
            None => Ok(()),
        }
    }

    /// The state beyond Adam's moments, named for the checkpoint: `rowwise_adagrad.sum.<name>`.
    pub fn extra_state(&self) -> Vec<(String, Tensor)> {
        self.adagrad
            .iter()
            .map(|a| {
                (
                    format!("rowwise_adagrad.sum.{}", a.name()),
                    a.sum.shallow_clone(),
                )
            })
            .collect()
    }
}
