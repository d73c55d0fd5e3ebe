//! Fused CPU kernels behind [`crate::tch_ops::TchOps`] (C++ in `csrc/`), each equal to the
//! tensor-op definition it replaces (tested against it).

use std::ffi::CStr;
use std::os::raw::c_char;

use tch::Tensor;

use crate::sinkhorn::SINKHORN_EPS;

extern "C" {
    fn sasrec_sinkhorn(
        shifted: *mut torch_sys::C_tensor,
        iters: i64,
        eps: f64,
        out: *mut *mut torch_sys::C_tensor,
    ) -> i32;
    fn sasrec_sinkhorn_last_error() -> *const c_char;
}

/// The largest stream count n the fused Sinkhorn kernel handles (`kMaxStreams` in C++).
pub(crate) const MAX_SINKHORN_STREAMS: i64 = 8;

/// [`crate::sinkhorn::sinkhorn_unrolled`] as one autograd node (`csrc/sinkhorn.cpp`): `K = exp(L −
/// max L)` per matrix by tensor ops, then the rounds and their hand-written backward per matrix.
/// `logits` fp32 on the CPU, (…, n, n) with n ≤ [`MAX_SINKHORN_STREAMS`].
pub(crate) fn sinkhorn_cpu(logits: &Tensor, iters: usize) -> Tensor {
    let mx = logits.amax([-1, -2], true); // (…, 1, 1)
    let mut shifted = logits - mx;
    let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
    // SAFETY: `shifted` is a live tensor for the call; on success the shim stores a new,
    // owned at::Tensor in `out`, which `Tensor::from_ptr` takes over (and frees).
    let rc = unsafe { sasrec_sinkhorn(shifted.as_mut_ptr(), iters as i64, SINKHORN_EPS, &mut out) };
    if rc != 0 {
        // SAFETY: the shim returns a NUL-terminated thread-local string.
        let msg = unsafe { CStr::from_ptr(sasrec_sinkhorn_last_error()) };
        // The caller checked device and dtype, the shim's only failure modes besides running
        // out of memory, where libtorch's own ops fail the same way.
        panic!("fused Sinkhorn: {}", msg.to_string_lossy());
    }
    // SAFETY: see above.
    unsafe { Tensor::from_ptr(out) }
}
