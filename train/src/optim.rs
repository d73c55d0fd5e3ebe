//! Adam with explicit, checkpointable state (Kingma & Ba 2015).
//!
//! `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
//! `θ ← θ − lr·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)` — `torch.optim.Adam(fused=True)` without
//! weight decay: the step runs ATen's `_fused_adam_` (one multi-tensor kernel for every
//! parameter, CPU or CUDA) through the C++ shim `csrc/optim.cpp`. The moments and the step
//! count are fields here (not hidden in an optimiser object) so that the resumable checkpoint
//! saves and restores them exactly.
//!
//! A CUDA-graph step ([`Adam::step_on_device`]) takes the learning rate and the step count from
//! device tensors ([`DeviceSchedule`]) and skips an fp16 overflow on the device, as
//! `torch.optim.Adam(fused=True, capturable=True)` under `torch.amp.GradScaler`
//! (torch/optim/adam.py, `_fused_adam`): the same kernel, no host synchronisation.
//!
//! A parameter named by [`Adam::with_lazy_rows`] is updated lazily (TensorFlow `LazyAdam`,
//! docs/MODELS.md §7): its gradient is row-sparse, and only the rows it holds have their moments
//! and weights updated — by the same kernel, run on those rows gathered, then copied back. The
//! bias correction uses the global step `t`, so a row touched every step gets exactly the dense
//! update, and an untouched row and its moments stay bit-unchanged (dense Adam would still move
//! it by its decaying momentum).

use std::os::raw::c_int;
use std::ptr;

use tch::{Device, Kind, Tensor};

use crate::error::{bail, failed, Error, Result};
use crate::shim::{handles as ptrs, last_error};

extern "C" {
    fn sasrec_fused_adam(
        params: *const *mut torch_sys::C_tensor,
        grads: *const *mut torch_sys::C_tensor,
        exp_avgs: *const *mut torch_sys::C_tensor,
        exp_avg_sqs: *const *mut torch_sys::C_tensor,
        n: c_int,
        step: *mut torch_sys::C_tensor,
        lr: f64,
        lr_tensor: *mut torch_sys::C_tensor,
        found_inf: *mut torch_sys::C_tensor,
        beta1: f64,
        beta2: f64,
        eps: f64,
    ) -> c_int;
    fn sasrec_foreach_zero(ts: *const *mut torch_sys::C_tensor, n: c_int) -> c_int;
}

/// The shim's message after a failed call.
fn shim_error(what: &str) -> Error {
    failed!("{what}: {}", last_error())
}

/// The defined gradients of `params` (a parameter outside the graph has none).
pub fn defined_grads<'a>(params: impl IntoIterator<Item = &'a Tensor>) -> Vec<Tensor> {
    params
        .into_iter()
        .map(Tensor::grad)
        .filter(Tensor::defined)
        .collect()
}

/// The defined gradients of `params` as dense tensors to scale in place: a row-sparse gradient
/// as its values (its uncoalesced `_values()`, which it shares).
pub fn grad_values<'a>(params: impl IntoIterator<Item = &'a Tensor>) -> Vec<Tensor> {
    defined_grads(params)
        .into_iter()
        .map(|g| match g.is_sparse() {
            true => g.internal_values(),
            false => g,
        })
        .collect()
}

/// The learning rate and step count of steps taken without the host (CUDA-graph replays):
/// 1-element fp32 tensors on the parameters' device, read by the kernel.
pub struct DeviceSchedule {
    /// The learning rate of the next step, written before each replay.
    pub lr: Tensor,
    /// Steps taken (Adam's t), advanced on the device.
    pub t: Tensor,
}

impl DeviceSchedule {
    /// Learning rate 0 and t = 0 on `device`.
    pub fn new(device: Device) -> Self {
        Self {
            lr: Tensor::zeros([1], (Kind::Float, device)),
            t: Tensor::zeros([1], (Kind::Float, device)),
        }
    }
}

/// Where a step's learning rate comes from.
enum LearningRate<'a> {
    /// A host value, fixed into the kernel launch.
    Host(f64),
    /// A device tensor, read when the kernel runs.
    Device(&'a Tensor),
}

/// The rows a row-sparse gradient holds: `(rows (n) int64, values (n, C))`, duplicates summed
/// (the gradient coalesced). A dense gradient is an error naming `name`: something in the step
/// used the whole table.
pub fn touched_rows(grad: &Tensor, name: &str) -> Result<(Tensor, Tensor)> {
    if !grad.is_sparse() {
        bail!(
            "the gradient of `{name}` is dense: a row-sparse optimizer needs every use of it in \
             the step to gather rows"
        );
    }
    let g = grad.coalesce();
    Ok((g.indices().get(0), g.values()))
}

/// Adam's hyper-parameters.
#[derive(Clone, Copy)]
struct Betas {
    beta1: f64,
    beta2: f64,
    eps: f64,
}

/// Adam over a fixed list of named parameters.
pub struct Adam {
    /// (name, parameter) in a fixed order.
    params: Vec<(String, Tensor)>,
    /// Whether each parameter is updated lazily, on the rows of its row-sparse gradient.
    lazy: Vec<bool>,
    /// First moments, same order.
    pub m: Vec<Tensor>,
    /// Second moments, same order.
    pub v: Vec<Tensor>,
    /// Steps taken.
    pub t: u64,
    betas: Betas,
}

impl Adam {
    /// β = (0.9, 0.98), ε = 1e-8: the SASRec reference settings.
    pub fn new(params: Vec<(String, Tensor)>) -> Self {
        let zeros = |p: &Tensor| p.zeros_like().to_kind(Kind::Float);
        let m = params.iter().map(|(_, p)| zeros(p)).collect();
        let v = params.iter().map(|(_, p)| zeros(p)).collect();
        let lazy = vec![false; params.len()];
        Self {
            params,
            lazy,
            m,
            v,
            t: 0,
            betas: Betas {
                beta1: 0.9,
                beta2: 0.98,
                eps: 1e-8,
            },
        }
    }

    /// [`Adam::new`] with the parameter `name` updated lazily ([module docs](self)).
    pub fn with_lazy_rows(params: Vec<(String, Tensor)>, name: &str) -> Self {
        let mut adam = Self::new(params);
        adam.lazy = adam.params.iter().map(|(n, _)| n == name).collect();
        adam
    }

    /// Sets β₂ (`--adam_beta2`).
    pub fn set_beta2(&mut self, beta2: f64) {
        self.betas.beta2 = beta2;
    }

    /// Parameter names in state order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    /// Clears the gradients (one multi-tensor kernel; a row-sparse one is emptied).
    pub fn zero_grad(&mut self) -> Result<()> {
        let (sparse, mut grads): (Vec<Tensor>, Vec<Tensor>) =
            defined_grads(self.params.iter().map(|(_, p)| p))
                .into_iter()
                .partition(Tensor::is_sparse);
        for mut g in sparse {
            let _ = g.zero_();
        }
        if grads.is_empty() {
            return Ok(());
        }
        let handles = ptrs(&mut grads);
        // SAFETY: the handles point at live tensors owned by `grads` for the call.
        if unsafe { sasrec_foreach_zero(handles.as_ptr(), handles.len() as c_int) } != 0 {
            return Err(shim_error("zeroing the gradients"));
        }
        Ok(())
    }

    /// One update with learning rate `lr`; parameters without a gradient are skipped.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step_with(lr, lr)
    }

    /// One update: the dense parameters with learning rate `lr`, the lazy one's touched rows
    /// with `lazy_lr`.
    pub fn step_with(&mut self, lr: f64, lazy_lr: f64) -> Result<()> {
        self.t += 1;
        let Some(device) = self.params.first().map(|(_, p)| p.device()) else {
            return Ok(());
        };
        let mut step = Tensor::full([1], self.t as f64, (Kind::Float, device));
        self.fused(LearningRate::Host(lr), &mut step, None)?;
        self.lazy_step(lazy_lr, &mut step)
    }

    /// One update with the learning rate and step count of `sched`, without reading anything
    /// on the host (capturable into a CUDA graph): `t += 1`, the kernel, and with `found_inf`
    /// (fp16 overflow, 0 or 1) the update skipped on the device and `t -= found_inf`.
    /// [`Adam::t`] is left as it was: the caller copies `sched.t` back when it needs it.
    pub fn step_on_device(
        &mut self,
        sched: &mut DeviceSchedule,
        found_inf: Option<&Tensor>,
    ) -> Result<()> {
        if self.lazy.contains(&true) {
            bail!("a lazily updated parameter has data-dependent rows: no device-scheduled step");
        }
        let _ = sched.t.g_add_scalar_(1.0);
        self.fused(LearningRate::Device(&sched.lr), &mut sched.t, found_inf)?;
        if let Some(inf) = found_inf {
            let _ = sched.t.g_sub_(inf);
        }
        Ok(())
    }

    /// The parameters that have a gradient, lazy (`true`) or dense: (name, θ, g, m, v).
    fn with_grads(
        &self,
        lazy: bool,
    ) -> impl Iterator<Item = (&str, &Tensor, Tensor, &Tensor, &Tensor)> + '_ {
        self.params
            .iter()
            .zip(self.m.iter().zip(&self.v))
            .zip(&self.lazy)
            .filter(move |(_, &l)| l == lazy)
            .map(|(((name, p), (m, v)), _)| (name.as_str(), p, p.grad(), m, v))
            .filter(|(_, _, g, _, _)| g.defined())
    }

    /// The fused kernel over the dense parameters that have a gradient, with step count `step`.
    fn fused(&self, lr: LearningRate, step: &mut Tensor, found_inf: Option<&Tensor>) -> Result<()> {
        let mut group = Group::default();
        for (_, p, g, m, v) in self.with_grads(false) {
            group.push(p.shallow_clone(), g, m.shallow_clone(), v.shallow_clone())?;
        }
        group.run(lr, step, found_inf, self.betas)
    }

    /// The lazy parameters' touched rows: gathered, stepped by the fused kernel with step count
    /// `step` (the global t), and copied back into the parameter and its moments.
    fn lazy_step(&self, lr: f64, step: &mut Tensor) -> Result<()> {
        for (name, p, g, m, v) in self.with_grads(true) {
            let (rows, values) = touched_rows(&g, name)?;
            let mut group = Group::default();
            let gather = |t: &Tensor| t.index_select(0, &rows);
            tch::no_grad(|| group.push(gather(p), values, gather(m), gather(v)))?;
            group.run(LearningRate::Host(lr), step, None, self.betas)?;
            tch::no_grad(|| {
                for (dst, src) in [(p, &group.ps[0]), (m, &group.ms[0]), (v, &group.vs[0])] {
                    let _ = dst.shallow_clone().index_copy_(0, &rows, src);
                }
            });
        }
        Ok(())
    }
}

/// Parameters, gradients and moments of one fused-kernel launch.
#[derive(Default)]
struct Group {
    ps: Vec<Tensor>,
    gs: Vec<Tensor>,
    ms: Vec<Tensor>,
    vs: Vec<Tensor>,
}

impl Group {
    /// Adds a parameter with its gradient and moments (all of the parameter's dtype).
    fn push(&mut self, p: Tensor, g: Tensor, m: Tensor, v: Tensor) -> Result<()> {
        if g.kind() != p.kind() || m.kind() != p.kind() {
            bail!("fused Adam needs gradients and moments of the parameter's dtype");
        }
        self.ps.push(p);
        self.gs.push(g);
        self.ms.push(m);
        self.vs.push(v);
        Ok(())
    }

    /// ATen's `_fused_adam_` on the group, in place, with step count `step`.
    fn run(
        &mut self,
        lr: LearningRate,
        step: &mut Tensor,
        found_inf: Option<&Tensor>,
        b: Betas,
    ) -> Result<()> {
        if self.ps.is_empty() {
            return Ok(());
        }
        let (lr, mut lr_tensor) = match lr {
            LearningRate::Host(lr) => (lr, None),
            LearningRate::Device(t) => (0.0, Some(t.shallow_clone())),
        };
        let mut found_inf = found_inf.map(Tensor::shallow_clone);
        let nullable =
            |t: &mut Option<Tensor>| t.as_mut().map_or(ptr::null_mut(), |t| t.as_mut_ptr());
        let (p, g) = (ptrs(&mut self.ps), ptrs(&mut self.gs));
        let (m, v) = (ptrs(&mut self.ms), ptrs(&mut self.vs));
        // SAFETY: all handles point at live tensors owned by the group and the options above
        // for the call (null for an absent option); the kernel updates parameters and moments
        // in place.
        let rc = unsafe {
            sasrec_fused_adam(
                p.as_ptr(),
                g.as_ptr(),
                m.as_ptr(),
                v.as_ptr(),
                p.len() as c_int,
                step.as_mut_ptr(),
                lr,
                nullable(&mut lr_tensor),
                nullable(&mut found_inf),
                b.beta1,
                b.beta2,
                b.eps,
            )
        };
        if rc != 0 {
            return Err(shim_error("the Adam step"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twenty steps on a quadratic equal the update written out by hand (torch.optim.Adam), with
    /// the SASRec β₂ = 0.98 and with `--adam_beta2 0.999`, whose results differ.
    #[test]
    fn fused_step_equals_the_written_out_update() {
        let run = |b2: f64| {
            let p = Tensor::from_slice(&[1.0f32, -2.0, 0.5]).set_requires_grad(true);
            let mut adam = Adam::new(vec![("w".into(), p.shallow_clone())]);
            adam.set_beta2(b2);
            let (b1, eps, lr) = (0.9f64, 1e-8f64, 0.01f64);
            let mut theta = [1.0f64, -2.0, 0.5];
            let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
            for t in 1..=20 {
                adam.zero_grad().unwrap();
                (&p * &p).sum(Kind::Float).backward(); // g = 2θ
                adam.step(lr).unwrap();
                for i in 0..3 {
                    let g = 2.0 * theta[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * g;
                    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                    let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                    theta[i] -= lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                }
            }
            let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
            for i in 0..3 {
                let d = (got[i] as f64 - theta[i]).abs();
                assert!(d < 1e-5, "β₂ {b2}: {got:?} vs {theta:?}");
            }
            assert_eq!(adam.t, 20);
            let mv: Vec<f32> = Vec::try_from(&adam.m[0]).unwrap();
            assert!((mv[0] as f64 - m[0]).abs() < 1e-5);
            got
        };
        let (sasrec, torch) = (run(0.98), run(0.999));
        assert!((sasrec[1] - torch[1]).abs() > 1e-4, "{sasrec:?} {torch:?}");
    }

    /// The loss `Σ w ∘ E(ids)²` over the gathered rows of a (5, C) table (row 0 is padding),
    /// `w` = (0.5, −1.5, 2.0, 0.5, −1.5, …).
    fn table_loss(table: &Tensor, ids: &[i64], sparse: bool) -> Tensor {
        let rows = Tensor::embedding(table, &Tensor::from_slice(ids), 0, false, sparse);
        let w: Vec<f32> = (0..table.size()[1])
            .map(|c| [0.5f32, -1.5, 2.0][c as usize % 3])
            .collect();
        (&rows * &rows * Tensor::from_slice(&w)).sum(Kind::Float)
    }

    fn table(seed: i64, c: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([5, c], (Kind::Float, Device::Cpu)).set_requires_grad(true)
    }

    /// Every row touched in every step: LazyAdam on the row-sparse gradient equals dense Adam
    /// bit for bit (weights and moments; the padding row is never touched by either). C = 16:
    /// the CPU kernel's SIMD body and scalar tail round differently (fused multiply-add), so bit
    /// equality needs every element on the same path in the gathered rows as in the whole table;
    /// with C = 3 the two agree within 1e-6.
    #[test]
    fn lazy_rows_touched_every_step_equal_dense_adam_exactly() {
        check_lazy_equals_dense(16, 0.0);
        check_lazy_equals_dense(3, 1e-6);
    }

    fn check_lazy_equals_dense(c: i64, tol: f64) {
        let (dense_p, lazy_p) = (table(3, c), table(3, c));
        let name = "item_emb.weight".to_string();
        let mut dense = Adam::new(vec![(name.clone(), dense_p.shallow_clone())]);
        let mut lazy = Adam::with_lazy_rows(vec![(name.clone(), lazy_p.shallow_clone())], &name);
        for (step, ids) in [[4i64, 2, 1, 3, 0], [1, 0, 3, 4, 2], [2, 3, 4, 1, 0]]
            .iter()
            .enumerate()
        {
            for (adam, p, sparse) in [(&mut dense, &dense_p, false), (&mut lazy, &lazy_p, true)] {
                adam.zero_grad().unwrap();
                table_loss(p, ids, sparse).backward();
                adam.step(0.01 * (step + 1) as f64).unwrap();
            }
            assert!(lazy_p.grad().is_sparse());
        }
        let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        let worst = [
            diff(&dense_p, &lazy_p),
            diff(&dense.m[0], &lazy.m[0]),
            diff(&dense.v[0], &lazy.v[0]),
        ];
        assert!(worst.iter().all(|&d| d <= tol), "C = {c}: {worst:?}");
        assert_eq!(lazy.t, 3);
    }

    /// Rows a step does not touch keep their weights and moments bit for bit; touched rows take
    /// the step with bias correction by the global t.
    #[test]
    fn lazy_adam_leaves_untouched_rows_and_moments_unchanged() {
        let p = table(4, 3);
        let init = p.detach().copy();
        let name = "item_emb.weight".to_string();
        let mut lazy = Adam::with_lazy_rows(vec![(name.clone(), p.shallow_clone())], &name);
        lazy.zero_grad().unwrap();
        table_loss(&p, &[1, 2, 2], true).backward();
        lazy.step(0.01).unwrap();
        let (after1, m1, v1) = (p.detach().copy(), lazy.m[0].copy(), lazy.v[0].copy());
        for r in [0, 3, 4] {
            assert!(
                after1.get(r).equal(&init.get(r)),
                "row {r} untouched by step 1"
            );
            assert_eq!(m1.get(r).abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
        lazy.zero_grad().unwrap();
        table_loss(&p, &[2], true).backward();
        lazy.step(0.01).unwrap();
        assert!(p.get(1).equal(&after1.get(1)), "row 1 untouched by step 2");
        assert!(lazy.m[0].get(1).equal(&m1.get(1)) && lazy.v[0].get(1).equal(&v1.get(1)));
        assert!(!p.get(2).equal(&after1.get(2)), "row 2 stepped");
        // Row 2 by hand: g = 2·w·θ·count, t = 1 then 2.
        let (b1, b2, eps) = (0.9f64, 0.98f64, 1e-8f64);
        let w = [0.5f64, -1.5, 2.0];
        for c in 0..3 {
            let mut theta = init.double_value(&[2, c as i64]);
            let (mut m, mut v) = (0.0, 0.0);
            for (t, count) in [(1, 2.0), (2, 1.0)] {
                let g = 2.0 * w[c] * theta * count;
                m = b1 * m + (1.0 - b1) * g;
                v = b2 * v + (1.0 - b2) * g * g;
                let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                theta -= 0.01 * (m / bc1) / ((v / bc2).sqrt() + eps);
            }
            let got = p.double_value(&[2, c as i64]);
            assert!(
                (got - theta).abs() < 1e-6,
                "row 2 col {c}: {got} vs {theta}"
            );
        }
    }

    /// Steps with the learning rate and t on the device equal host-scheduled steps bit for bit;
    /// an overflow flag of 1 leaves parameters, moments and t unchanged.
    #[test]
    fn device_schedule_equals_host_schedule_and_found_inf_skips() {
        let init = [1.0f32, -2.0, 0.5];
        let host_p = Tensor::from_slice(&init).set_requires_grad(true);
        let dev_p = Tensor::from_slice(&init).set_requires_grad(true);
        let mut host = Adam::new(vec![("w".into(), host_p.shallow_clone())]);
        let mut dev = Adam::new(vec![("w".into(), dev_p.shallow_clone())]);
        let mut sched = DeviceSchedule::new(Device::Cpu);
        let clean = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        for lr in [0.01, 0.005, 0.02] {
            for (adam, p) in [(&mut host, &host_p), (&mut dev, &dev_p)] {
                adam.zero_grad().unwrap();
                (p * p * p).sum(Kind::Float).backward();
            }
            host.step(lr).unwrap();
            let _ = sched.lr.fill_(lr);
            dev.step_on_device(&mut sched, Some(&clean)).unwrap();
        }
        assert!(host_p.equal(&dev_p), "{host_p} vs {dev_p}");
        assert!(host.m[0].equal(&dev.m[0]) && host.v[0].equal(&dev.v[0]));
        assert_eq!(sched.t.double_value(&[0]), 3.0);
        assert_eq!(dev.t, 0, "the host count is the caller's to update");

        let (p, m) = (dev_p.detach().copy(), dev.m[0].copy());
        let inf = Tensor::ones([1], (Kind::Float, Device::Cpu));
        dev.step_on_device(&mut sched, Some(&inf)).unwrap();
        assert!(dev_p.equal(&p) && dev.m[0].equal(&m), "skipped");
        assert_eq!(
            sched.t.double_value(&[0]),
            3.0,
            "t not advanced by a skipped step"
        );
    }
}
