// The optimiser's multi-tensor kernels, which tch's generated API leaves out (tensor-list
// in-place ops): `_fused_adam_` (torch.optim.Adam(fused=True): one fused kernel launch for all
// parameters, on CUDA and on the CPU) and `_foreach_zero_` (zeroing every gradient at once).
// On a model this small a training step is bound by kernel launches, and a per-parameter Adam
// costs ~14 launches per tensor. Conventions: build/shim.h (errors through
// sasrec_train_last_error(), defined in c10d.cpp).
#include <vector>

#include <ATen/ops/_foreach_zero.h>
#include <ATen/ops/_fused_adam.h>
#include <shim.h>

using sasrec_shim::guarded;
using sasrec_shim::tensor_list;

extern "C" {

// One Adam step (no weight decay, no AMSGrad) over n parameters with their gradients and
// moments; `step` (fp32, 1 element, on the parameters' device) holds the step number t >= 1
// used by the bias corrections.
int sasrec_fused_adam(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                      at::Tensor** exp_avg_sqs, int n, at::Tensor* step, double lr,
                      double beta1, double beta2, double eps) {
  return guarded([&] {
    std::vector<at::Tensor> steps(n, *step);
    at::_fused_adam_(tensor_list(params, n), tensor_list(grads, n), tensor_list(exp_avgs, n),
                     tensor_list(exp_avg_sqs, n), {}, steps, lr, beta1, beta2,
                     /*weight_decay=*/0.0, eps, /*amsgrad=*/false, /*maximize=*/false);
  });
}

// Zeroes n tensors in place.
int sasrec_foreach_zero(at::Tensor** ts, int n) {
  return guarded([&] { at::_foreach_zero_(tensor_list(ts, n)); });
}

}  // extern "C"
