// Mixed-precision support for tch. Autocast control: tch, which only toggles CUDA autocast with its default dtype (fp16):
// bf16, and autocast on the CPU, need at::autocast's per-device calls
// (docs/TOOLCHAIN.md, "libtorch through tch"). Loss scaling: tch's generated API has
// `_amp_update_scale_` but not the tensor-list op `_amp_foreach_non_finite_check_and_unscale_`,
// which torch.amp.GradScaler uses; it is wrapped here. Every function is `extern "C"` and
// never throws; the one that can fail follows build/shim.h.
#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/ops/_amp_foreach_non_finite_check_and_unscale.h>
#include <shim.h>

namespace {
// 0 = CPU, 1 = CUDA (the only devices sasrec-rs trains on).
at::DeviceType device_of(int device) { return device == 1 ? at::kCUDA : at::kCPU; }
// 0 = float16, 1 = bfloat16.
at::ScalarType dtype_of(int dtype) { return dtype == 1 ? at::kBFloat16 : at::kHalf; }}  // namespace

extern "C" {

// Whether autocast is on for `device`.
int sasrec_autocast_is_enabled(int device) {
  return at::autocast::is_autocast_enabled(device_of(device)) ? 1 : 0;
}

// Switches autocast on or off for `device` with the lower-precision `dtype`.
void sasrec_autocast_set(int device, int enabled, int dtype) {
  at::autocast::set_autocast_dtype(device_of(device), dtype_of(dtype));
  at::autocast::set_autocast_enabled(device_of(device), enabled != 0);
}

// The autocast dtype of `device` (0 = float16, 1 = bfloat16, -1 = anything else).
int sasrec_autocast_dtype(int device) {
  auto t = at::autocast::get_autocast_dtype(device_of(device));
  return t == at::kHalf ? 0 : (t == at::kBFloat16 ? 1 : -1);
}

// Entering an autocast region (torch.autocast.__enter__ does the same).
int sasrec_autocast_increment_nesting() { return at::autocast::increment_nesting(); }

// Leaving one; the cast-weight cache is cleared when the outermost region ends.
int sasrec_autocast_decrement_nesting() {
  int n = at::autocast::decrement_nesting();
  if (n == 0) at::autocast::clear_cache();
  return n;
}

// Whether the current CUDA device runs bf16 natively (compute capability >= 8; the hook
// answers `major >= 8` when cuDNN is present, as in the PyPI wheels).
int sasrec_cuda_bf16_supported() {
  return at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8() ? 1 : 0;
}

// `grads[i] *= inv_scale` for all i, and `found_inf = 1` if any of them holds an inf or NaN
// (torch.amp.GradScaler.unscale_). Returns 0, or -1 with the message in sasrec_amp_last_error.
int sasrec_amp_unscale(at::Tensor** grads, int n, at::Tensor* found_inf, at::Tensor* inv_scale) {
  return sasrec_shim::guarded([&] {
    at::_amp_foreach_non_finite_check_and_unscale_(sasrec_shim::tensor_list(grads, n),
                                                   *found_inf, *inv_scale);
  });
}

// The message of this thread's last failed call.
const char* sasrec_amp_last_error() { return sasrec_shim::last_error().c_str(); }

}  // extern "C"
