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

    /// Clears the gradients (one multi-tensor kernel).
    pub fn zero_grad(&mut self) -> Result<()> {
        let mut grads = defined_grads(self.params.iter().map(|(_, p)| p));
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
        self.t += 1;
        let Some(device) = self.params.first().map(|(_, p)| p.device()) else {
            return Ok(());
        };
        let mut step = Tensor::full([1], self.t as f64, (Kind::Float, device));
        self.fused(LearningRate::Host(lr), &mut step, None)
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
        let _ = sched.t.g_add_scalar_(1.0);
        self.fused(LearningRate::Device(&sched.lr), &mut sched.t, found_inf)?;
        if let Some(inf) = found_inf {
            let _ = sched.t.g_sub_(inf);
        }
        Ok(())
    }

    /// The fused kernel over the parameters that have a gradient, with step count `step`.
    fn fused(&self, lr: LearningRate, step: &mut Tensor, found_inf: Option<&Tensor>) -> Result<()> {
        let (mut ps, mut gs, mut ms, mut vs) = (vec![], vec![], vec![], vec![]);
        for (((_, p), m), v) in self.params.iter().zip(&self.m).zip(&self.v) {
            let g = p.grad();
            if g.defined() {
                if g.kind() != p.kind() || m.kind() != p.kind() {
                    bail!("fused Adam needs gradients and moments of the parameter's dtype");
                }
                ps.push(p.shallow_clone());
                gs.push(g);
                ms.push(m.shallow_clone());
                vs.push(v.shallow_clone());
            }
        }
        if ps.is_empty() {
            return Ok(());
        }
        let (lr, mut lr_tensor) = match lr {
            LearningRate::Host(lr) => (lr, None),
            LearningRate::Device(t) => (0.0, Some(t.shallow_clone())),
        };
        let mut found_inf = found_inf.map(Tensor::shallow_clone);
        let nullable =
            |t: &mut Option<Tensor>| t.as_mut().map_or(ptr::null_mut(), |t| t.as_mut_ptr());
        let (p, g, m, v) = (ptrs(&mut ps), ptrs(&mut gs), ptrs(&mut ms), ptrs(&mut vs));
        // SAFETY: all handles point at live tensors owned by the vectors and options above for
        // the call (null for an absent option); the kernel updates parameters and moments in
        // place.
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
                self.beta1,
                self.beta2,
                self.eps,
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

    /// Two steps on a quadratic equal the update written out by hand (torch.optim.Adam).
    #[test]
    fn fused_step_equals_the_written_out_update() {
        let p = Tensor::from_slice(&[1.0f32, -2.0, 0.5]).set_requires_grad(true);
        let mut adam = Adam::new(vec![("w".into(), p.shallow_clone())]);
        let (b1, b2, eps, lr) = (0.9f64, 0.98f64, 1e-8f64, 0.01f64);
        let mut theta = [1.0f64, -2.0, 0.5];
        let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
        for t in 1..=2 {
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
            assert!(
                (got[i] as f64 - theta[i]).abs() < 1e-6,
                "{got:?} vs {theta:?}"
            );
        }
        assert_eq!(adam.t, 2);
        let mv: Vec<f32> = Vec::try_from(&adam.m[0]).unwrap();
        assert!((mv[0] as f64 - m[0]).abs() < 1e-6);
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
