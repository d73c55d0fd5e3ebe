// The optimiser's multi-tensor kernels, which tch's generated API leaves out (tensor-list
// in-place ops): `_fused_adam_` (torch.optim.Adam(fused=True): one fused kernel launch for all
// parameters, on CUDA and on the CPU) and `_foreach_zero_` (zeroing every gradient at once).
// On a model this small a training step is bound by kernel launches, and a per-parameter Adam
// costs ~14 launches per tensor. Conventions: build/shim.h (errors through
// sasrec_train_last_error(), defined in c10d.cpp).
#include <optional>
#include <vector>

#include <ATen/ops/_foreach_zero.h>
#include <ATen/ops/_fused_adam.h>
#include <shim.h>

using sasrec_shim::guarded;
using sasrec_shim::tensor_list;

extern "C" {

// One Adam step (no weight decay, no AMSGrad) over n parameters with their gradients and
// moments; `step` (fp32, 1 element, on the parameters' device) holds the step number t >= 1
// used by the bias corrections. The learning rate is `lr`, or the 1-element fp32 tensor
// `lr_tensor` on the parameters' device when that is not null (torch.optim.Adam's
// capturable form: the value is read by the kernel, so a CUDA graph replays the current one).
// A non-null `found_inf` (fp32, 1 element) skips the update on the device when it holds 1,
// as torch.amp.GradScaler passes it to fused optimisers (torch/optim/adam.py, _fused_adam).
int sasrec_fused_adam(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                      at::Tensor** exp_avg_sqs, int n, at::Tensor* step, double lr,
                      at::Tensor* lr_tensor, at::Tensor* found_inf, double beta1, double beta2,
                      double eps) {
  return guarded([&] {
    std::vector<at::Tensor> steps(n, *step);
    std::optional<at::Tensor> inf;
    if (found_inf != nullptr) inf = *found_inf;
    auto ps = tensor_list(params, n), gs = tensor_list(grads, n);
    auto ms = tensor_list(exp_avgs, n), vs = tensor_list(exp_avg_sqs, n);
    if (lr_tensor != nullptr) {
      at::_fused_adam_(ps, gs, ms, vs, {}, steps, *lr_tensor, beta1, beta2,
                       /*weight_decay=*/0.0, eps, /*amsgrad=*/false, /*maximize=*/false,
                       /*grad_scale=*/std::nullopt, inf);
    } else {
      at::_fused_adam_(ps, gs, ms, vs, {}, steps, lr, beta1, beta2, /*weight_decay=*/0.0, eps,
                       /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, inf);
    }
  });
}

// Zeroes n tensors in place.
int sasrec_foreach_zero(at::Tensor** ts, int n) {
  return guarded([&] { at::_foreach_zero_(tensor_list(ts, n)); });
}

}  // extern "C"
