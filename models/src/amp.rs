//! Automatic mixed precision: autocast regions on the CPU and on CUDA, as `torch.autocast`.
//!
//! tch can only toggle CUDA autocast with its default dtype (fp16); bf16 and CPU autocast go
//! through the small C++ shim `csrc/autocast.cpp`. Inside a region, matmul-like ops run in the
//! lower precision and precision-sensitive ops (softmax, layer norm, losses) in fp32, per
//! PyTorch's autocast policy; parameters stay fp32. fp16 also needs [`GradScaler`], dynamic
//! loss scaling as `torch.amp.GradScaler`.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

extern "C" {
    fn sasrec_autocast_is_enabled(device: c_int) -> c_int;
    fn sasrec_autocast_set(device: c_int, enabled: c_int, dtype: c_int);
    fn sasrec_autocast_dtype(device: c_int) -> c_int;
    fn sasrec_autocast_increment_nesting() -> c_int;
    fn sasrec_autocast_decrement_nesting() -> c_int;
    fn sasrec_cuda_bf16_supported() -> c_int;
    fn sasrec_amp_unscale(
        grads: *const *mut torch_sys::C_tensor,
        n: c_int,
        found_inf: *mut torch_sys::C_tensor,
        inv_scale: *mut torch_sys::C_tensor,
    ) -> c_int;
    fn sasrec_amp_last_error() -> *const c_char;
}

/// The lower-precision type of an autocast region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmpDtype {
    /// IEEE half precision: needs dynamic loss scaling (its range ends at 65504).
    Fp16,
    /// bfloat16: fp32's range, no loss scaling needed.
    Bf16,
}

impl AmpDtype {
    fn code(self) -> c_int {
        match self {
            AmpDtype::Fp16 => 0,
            AmpDtype::Bf16 => 1,
        }
    }
}

/// The device-type codes of the shim: 0 = CPU, 1 = CUDA.
const CPU: c_int = 0;
const CUDA: c_int = 1;

fn code_of(device: Device) -> c_int {
    if device.is_cuda() {
        CUDA
    } else {
        CPU
    }
}

/// Whether autocast is on for `device`'s type.
pub fn is_enabled(device: Device) -> bool {
    // SAFETY: the shim only reads autocast's thread-local state.
    unsafe { sasrec_autocast_is_enabled(code_of(device)) != 0 }
}

/// Whether `device` computes bf16 natively: always on the CPU (PyTorch emulates where the
/// instructions are missing), compute capability ≥ 8 on CUDA.
pub fn bf16_supported(device: Device) -> bool {
    // SAFETY: only called for a CUDA device that tch reported, so the CUDA hooks are loaded.
    !device.is_cuda() || unsafe { sasrec_cuda_bf16_supported() != 0 }
}

/// Saved autocast state of the device types a region changes; restored on drop (also when
/// the closure panics), like leaving a `torch.autocast` context.
struct Region {
    saved: Vec<(c_int, c_int, c_int)>,
}

impl Region {
    /// Sets autocast for each `(device code, enabled)` with `dtype`.
    fn enter(changes: &[(c_int, bool)], dtype: Option<AmpDtype>) -> Self {
        // SAFETY: plain calls into at::autocast's thread-local state.
        let saved = changes
            .iter()
            .map(|&(d, on)| unsafe {
                let prev = (
                    d,
                    sasrec_autocast_is_enabled(d),
                    sasrec_autocast_dtype(d).max(0),
                );
                let code = dtype.map_or(prev.2, AmpDtype::code);
                sasrec_autocast_set(d, on as c_int, code);
                prev
            })
            .collect();
        // SAFETY: balanced by the decrement in `drop`.
        unsafe { sasrec_autocast_increment_nesting() };
        Self { saved }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: restores what `enter` saved; clears the cast cache at the outermost exit.
        unsafe {
            sasrec_autocast_decrement_nesting();
            for &(d, on, dtype) in &self.saved {
                sasrec_autocast_set(d, on, dtype);
            }
        }
    }
}

/// Runs `f` under autocast to `dtype` on `device`'s type (`torch.autocast(device, dtype)`).
pub fn autocast<R>(device: Device, dtype: AmpDtype, f: impl FnOnce() -> R) -> R {
    let _region = Region::enter(&[(code_of(device), true)], Some(dtype));
    f()
}

/// Runs `f` with autocast off on every device type (`torch.autocast(…, enabled=False)`):
/// what the mHC coefficients, Sinkhorn and stream mixing need (docs/MODELS.md, pitfall 12).
pub fn full_precision<R>(f: impl FnOnce() -> R) -> R {
    let _region = Region::enter(&[(CPU, false), (CUDA, false)], None);
    f()
}

/// Dynamic loss scaling for fp16 (`torch.amp.GradScaler` with its defaults): the loss is
/// multiplied by `scale` before backward; before the optimiser step the gradients are divided
/// by it and checked; a step whose gradients hold an inf or NaN is skipped and the scale
/// halved; after `growth_interval` clean steps in a row the scale doubles.
pub struct GradScaler {
    /// Current scale S (1-element fp32 tensor on the training device).
    scale: Tensor,
    /// Clean steps since the last change (1-element int32 tensor).
    growth_tracker: Tensor,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: i64,
}

impl GradScaler {
    /// Starts at `init_scale` (PyTorch: 2¹⁶) with growth ×2, back-off ×0.5, interval 2000.
    pub fn new(device: Device, init_scale: f64) -> Self {
        Self {
            scale: Tensor::full([1], init_scale, (Kind::Float, device)),
            growth_tracker: Tensor::zeros([1], (Kind::Int, device)),
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }

    /// `loss · S`, the value to call `backward` on.
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss * &self.scale
    }

    /// The current scale S.
    pub fn scale_value(&self) -> f64 {
        self.scale.double_value(&[0])
    }

    /// Clean steps since the scale last changed.
    pub fn growth_tracker(&self) -> i64 {
        self.growth_tracker.int64_value(&[0])
    }

    /// Restores a saved scale and growth tracker (resuming a run).
    pub fn restore(&mut self, scale: f64, growth_tracker: i64) {
        let _ = self.scale.fill_(scale);
        let _ = self.growth_tracker.fill_(growth_tracker);
    }

    /// Divides `grads` by S in place, then updates S (halved when a gradient holds an inf or
    /// NaN, doubled after `growth_interval` clean steps). Returns `found_inf`, a 1-element fp32
    /// tensor on the scale's device: 1 after an overflow, when the optimiser step is to be
    /// skipped, and 0 otherwise. Nothing is read on the host (capturable into a CUDA graph);
    /// torch/amp/grad_scaler.py hands the same flag to fused optimisers, which skip on the
    /// device.
    pub fn unscale_and_update_on_device(&mut self, grads: &mut [Tensor]) -> Result<Tensor> {
        let mut found_inf = Tensor::zeros([1], (Kind::Float, self.scale.device()));
        let mut inv_scale = self.scale.reciprocal();
        let ptrs: Vec<*mut torch_sys::C_tensor> =
            grads.iter_mut().map(|g| g.as_mut_ptr()).collect();
        // SAFETY: every pointer is a live at::Tensor owned by `grads`, `found_inf` or
        // `inv_scale` for the duration of the call; the op only writes into their storage.
        let rc = unsafe {
            sasrec_amp_unscale(
                ptrs.as_ptr(),
                ptrs.len() as c_int,
                found_inf.as_mut_ptr(),
                inv_scale.as_mut_ptr(),
            )
        };
        if rc != 0 {
            // SAFETY: the shim returns a NUL-terminated thread-local string.
            let msg = unsafe { CStr::from_ptr(sasrec_amp_last_error()) };
            return Err(Error::Input(format!(
                "unscaling gradients: {}",
                msg.to_string_lossy()
            )));
        }
        let _ = self.scale.internal_amp_update_scale_(
            &self.growth_tracker,
            &found_inf,
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval,
        );
        Ok(found_inf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overflow(s: &mut GradScaler, grads: &mut [Tensor]) -> bool {
        let found_inf = s.unscale_and_update_on_device(grads).unwrap();
        assert_eq!(found_inf.size(), [1]);
        found_inf.double_value(&[0]) != 0.0
    }

    #[test]
    fn grad_scaler_unscales_skips_on_overflow_and_adapts() {
        let mut s = GradScaler::new(Device::Cpu, 1024.0);
        let loss = Tensor::from_slice(&[2.0f32]);
        assert_eq!(s.scale(&loss).double_value(&[0]), 2048.0);
        let mut g = vec![
            Tensor::from_slice(&[1024.0f32, -512.0]),
            Tensor::from_slice(&[2048.0f32]),
        ];
        assert!(!overflow(&mut s, &mut g));
        assert_eq!(Vec::<f32>::try_from(&g[0]).unwrap(), [1.0, -0.5]);
        assert_eq!(Vec::<f32>::try_from(&g[1]).unwrap(), [2.0]);
        assert_eq!((s.scale_value(), s.growth_tracker()), (1024.0, 1));
        let mut bad = vec![
            Tensor::from_slice(&[1.0f32, f32::INFINITY]),
            Tensor::from_slice(&[f32::NAN]),
        ];
        assert!(overflow(&mut s, &mut bad), "overflow found");
        assert_eq!(
            (s.scale_value(), s.growth_tracker()),
            (512.0, 0),
            "backed off"
        );
        s.restore(8.0, 1999);
        assert!(!overflow(&mut s, &mut [Tensor::from_slice(&[8.0f32])]));
        assert_eq!(
            (s.scale_value(), s.growth_tracker()),
            (16.0, 0),
            "grew after 2000 clean steps"
        );
    }

    #[test]
    fn autocast_casts_matmul_and_full_precision_restores_fp32() {
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        assert!(!is_enabled(Device::Cpu));
        let (inner, outer) = autocast(Device::Cpu, AmpDtype::Bf16, || {
            assert!(is_enabled(Device::Cpu));
            let outer = a.matmul(&b).kind();
            let inner = full_precision(|| {
                assert!(!is_enabled(Device::Cpu));
                a.matmul(&b).kind()
            });
            assert!(
                is_enabled(Device::Cpu),
                "state restored after the inner region"
            );
            (inner, outer)
        });
        assert_eq!(outer, Kind::BFloat16);
        assert_eq!(inner, Kind::Float);
        assert!(!is_enabled(Device::Cpu));
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        let half = autocast(Device::Cpu, AmpDtype::Fp16, || a.matmul(&b).kind());
        assert_eq!(half, Kind::Half);
    }

    #[test]
    fn state_is_restored_after_a_panic() {
        let r = std::panic::catch_unwind(|| autocast(Device::Cpu, AmpDtype::Bf16, || panic!("x")));
        assert!(r.is_err());
        assert!(!is_enabled(Device::Cpu));
        assert!(bf16_supported(Device::Cpu));
    }
}
