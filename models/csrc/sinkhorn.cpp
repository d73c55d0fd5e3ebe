// Fused Sinkhorn-Knopp for the CPU (docs/MODELS.md, "Sinkhorn-Knopp"): the mHC projection of
// the residual mixing logits, forward and backward as one autograd node, for n ≤ 8 streams.
//
// For each n×n matrix K = exp(S) (S: logits already shifted by their maximum), `iters` rounds
// of the scaling-vector form of the column-then-row normalisation,
//   v ← v / (v ∘ Kᵀu + ε),   u ← u / (u ∘ K v + ε),   from u = v = 1,
// then M = diag(u) K diag(v). Unrolled by autograd this is ~10 tensor ops per round over every
// token's matrix, forward and backward; here each matrix stays in registers (the loops are
// unrolled per n). The forward pass keeps u and v of every round ((iters + 1)·2n floats per
// matrix) and the backward pass runs reverse mode through the rounds by hand, so it equals the
// gradient of the unrolled iterations (tested against autograd over the tensor-op form in
// models/src/mhc.rs).
//
// Every function is `extern "C"` and never throws; failures follow build/shim.h.
#include <torch/csrc/autograd/custom_function.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/mul.h>
#include <shim.h>

#include <algorithm>
#include <type_traits>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The largest stream count with a fused kernel (the kernels are unrolled per n).
constexpr int64_t kMaxStreams = 8;

// The rounds for one N×N matrix `k` (row-major) from u = v = 1. With `hist` non-null, stores
// u and v before every round and after the last: (iters + 1)·2N values, [u | v] per round.
template <int N>
inline void rounds(const float* k, int64_t iters, float eps, float* u, float* v, float* hist) {
  for (int i = 0; i < N; ++i) u[i] = v[i] = 1.0f;
  for (int64_t t = 0; t < iters; ++t) {
    if (hist) {
      std::copy(u, u + N, hist + t * 2 * N);
      std::copy(v, v + N, hist + t * 2 * N + N);
    }
    for (int j = 0; j < N; ++j) {  // columns: a = Kᵀu
      float a = 0.0f;
      for (int i = 0; i < N; ++i) a += k[i * N + j] * u[i];
      v[j] = v[j] / (v[j] * a + eps);
    }
    for (int i = 0; i < N; ++i) {  // rows: b = K v
      float b = 0.0f;
      for (int j = 0; j < N; ++j) b += k[i * N + j] * v[j];
      u[i] = u[i] / (u[i] * b + eps);
    }
  }
  if (hist) {
    std::copy(u, u + N, hist + iters * 2 * N);
    std::copy(v, v + N, hist + iters * 2 * N + N);
  }
}

// Forward over `count` matrices: out = diag(u) K diag(v); the per-round u, v go to `hist`.
template <int N>
void forward_all(const float* kp, float* op, float* hp, int64_t count, int64_t iters, float eps) {
  at::parallel_for(0, count, 512, [&](int64_t lo, int64_t hi) {
    float u[N], v[N];
    for (int64_t m = lo; m < hi; ++m) {
      const float* km = kp + m * N * N;
      rounds<N>(km, iters, eps, u, v, hp + m * (iters + 1) * 2 * N);
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) op[m * N * N + i * N + j] = u[i] * km[i * N + j] * v[j];
    }
  });
}

// Reverse mode through the rounds of every matrix: dK from the output gradient `gp`.
template <int N>
void backward_all(const float* kp, const float* gp, const float* hp, float* dkp, int64_t count,
                  int64_t iters, float eps) {
  at::parallel_for(0, count, 512, [&](int64_t lo, int64_t hi) {
    float du[N], dv[N], db[N], da[N];
    for (int64_t m = lo; m < hi; ++m) {
      const float* km = kp + m * N * N;
      const float* gm = gp + m * N * N;
      const float* h = hp + m * (iters + 1) * 2 * N;
      float* dkm = dkp + m * N * N;
      const float* u = h + iters * 2 * N;  // final u, v
      const float* v = u + N;
      // M = diag(u) K diag(v)
      for (int i = 0; i < N; ++i) du[i] = dv[i] = 0.0f;
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
          const float gk = gm[i * N + j] * km[i * N + j];
          dkm[i * N + j] = gm[i * N + j] * u[i] * v[j];
          du[i] += gk * v[j];
          dv[j] += gk * u[i];
        }
      for (int64_t t = iters; t >= 1; --t) {
        const float* u0 = h + (t - 1) * 2 * N;  // u before round t
        const float* v0 = u0 + N;               // v before round t
        const float* v1 = h + t * 2 * N + N;    // v after round t
        // rows: u1 = u0 / (u0 ∘ b + ε), b = K v1
        for (int i = 0; i < N; ++i) {
          float b = 0.0f;
          for (int j = 0; j < N; ++j) b += km[i * N + j] * v1[j];
          const float r = 1.0f / (u0[i] * b + eps);
          db[i] = -du[i] * u0[i] * u0[i] * r * r;
          du[i] = du[i] * eps * r * r;
        }
        for (int i = 0; i < N; ++i)
          for (int j = 0; j < N; ++j) {
            dkm[i * N + j] += db[i] * v1[j];
            dv[j] += km[i * N + j] * db[i];
          }
        // columns: v1 = v0 / (v0 ∘ a + ε), a = Kᵀ u0
        for (int j = 0; j < N; ++j) {
          float a = 0.0f;
          for (int i = 0; i < N; ++i) a += km[i * N + j] * u0[i];
          const float r = 1.0f / (v0[j] * a + eps);
          da[j] = -dv[j] * v0[j] * v0[j] * r * r;
          dv[j] = dv[j] * eps * r * r;
        }
        for (int i = 0; i < N; ++i)
          for (int j = 0; j < N; ++j) {
            dkm[i * N + j] += u0[i] * da[j];
            du[i] += km[i * N + j] * da[j];
          }
      }
    }
  });
}

// Calls `f.template operator()<N>()` for the runtime stream count n (1..=kMaxStreams).
template <typename F>
void with_streams(int64_t n, F&& f) {
  switch (n) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    case 8: return f(std::integral_constant<int, 8>{});
    default: TORCH_CHECK(false, "the fused Sinkhorn handles 1..=", kMaxStreams, " streams, not ", n);
  }
}

struct Sinkhorn : public torch::autograd::Function<Sinkhorn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& shifted, int64_t iters,
                            double eps) {
    TORCH_CHECK(shifted.device().is_cpu(), "the fused Sinkhorn runs on the CPU");
    TORCH_CHECK(shifted.scalar_type() == at::kFloat, "the fused Sinkhorn needs fp32 logits");
    TORCH_CHECK(shifted.dim() >= 2 && shifted.size(-1) == shifted.size(-2),
                "Sinkhorn logits must be (…, n, n)");
    const int64_t n = shifted.size(-1);
    at::Tensor k = at::exp(shifted).contiguous();
    at::Tensor out = at::empty_like(k);
    const int64_t count = k.numel() / (n * n);
    at::Tensor hist = at::empty({count, iters + 1, 2, n}, k.options());
    with_streams(n, [&](auto c) {
      forward_all<decltype(c)::value>(k.const_data_ptr<float>(), out.mutable_data_ptr<float>(),
                                      hist.mutable_data_ptr<float>(), count, iters,
                                      static_cast<float>(eps));
    });
    ctx->save_for_backward({k, hist});
    ctx->saved_data["iters"] = iters;
    ctx->saved_data["eps"] = eps;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& k = saved[0];
    const at::Tensor& hist = saved[1];
    const int64_t iters = ctx->saved_data["iters"].toInt();
    const float eps = static_cast<float>(ctx->saved_data["eps"].toDouble());
    const int64_t n = k.size(-1);
    at::Tensor g = grads[0].contiguous();
    at::Tensor dk = at::empty_like(k);
    const int64_t count = k.numel() / (n * n);
    with_streams(n, [&](auto c) {
      backward_all<decltype(c)::value>(k.const_data_ptr<float>(), g.const_data_ptr<float>(),
                                       hist.const_data_ptr<float>(), dk.mutable_data_ptr<float>(),
                                       count, iters, eps);
    });
    // K = exp(S): dS = dK ∘ K
    return {at::mul(dk, k), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// `*out` = a new tensor holding Sinkhorn(exp(*shifted)) with an autograd node back to
// `*shifted` (fp32, CPU, (…, n, n)). Returns 0, or -1 with the message in
// sasrec_sinkhorn_last_error.
int sasrec_sinkhorn(at::Tensor* shifted, int64_t iters, double eps, at::Tensor** out) {
  return sasrec_shim::guarded(
      [&] { *out = new at::Tensor(Sinkhorn::apply(*shifted, iters, eps)); });
}

// The message of this thread's last failed call.
const char* sasrec_sinkhorn_last_error() { return sasrec_shim::last_error().c_str(); }

}  // extern "C"
