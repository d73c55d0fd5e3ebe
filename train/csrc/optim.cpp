// The optimiser's multi-tensor kernels, which tch's generated API leaves out (tensor-list
// in-place ops): `_fused_adam_` (torch.optim.Adam(fused=True): one fused kernel launch for all
// parameters, on CUDA and on the CPU) and `_foreach_zero_` (zeroing every gradient at once).
// On a model this small a training step is bound by kernel launches, and a per-parameter Adam
// costs ~14 launches per tensor. Every function is `extern "C"`, catches all exceptions and
// returns 0, or 1 with the message in sasrec_optim_last_error().
#include <string>
#include <vector>

#include <ATen/ops/_foreach_zero.h>
#include <ATen/ops/_fused_adam.h>

namespace {
thread_local std::string last_error;

std::vector<at::Tensor> list(at::Tensor** ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}
}  // namespace

extern "C" {

// One Adam step (no weight decay, no AMSGrad) over n parameters with their gradients and
// moments; `step` (fp32, 1 element, on the parameters' device) holds the step number t >= 1
// used by the bias corrections.
int sasrec_fused_adam(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                      at::Tensor** exp_avg_sqs, int n, at::Tensor* step, double lr,
                      double beta1, double beta2, double eps) {
  try {
    std::vector<at::Tensor> steps(n, *step);
    at::_fused_adam_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n),
                     {}, steps, lr, beta1, beta2, /*weight_decay=*/0.0, eps,
                     /*amsgrad=*/false, /*maximize=*/false);
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
}

// Zeroes n tensors in place.
int sasrec_foreach_zero(at::Tensor** ts, int n) {
  try {
    at::_foreach_zero_(list(ts, n));
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
}

// The message of this thread's last failed call.
const char* sasrec_optim_last_error() { return last_error.c_str(); }

}  // extern "C"
