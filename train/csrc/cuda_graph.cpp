// CUDA graphs of the training step: at::cuda::CUDAGraph (ATen/cuda/CUDAGraph.h) driven as
// torch.cuda.graph does (torch/cuda/graphs.py): warm-up and capture on a side stream that first
// waits for the work queued on the current stream, a device synchronisation before capture, the
// graph's own private memory pool, global capture mode; replay on the current stream. The step
// itself is a callback into Rust (`body`), so that the C++ side owns the stream guards and ends
// a capture that failed. Built with the CUDA code only when this torch has CUDA and the CUDA
// headers exist (SASREC_CUDA_GRAPHS, set by build.rs); otherwise every graph function fails with
// "built without CUDA graphs". Also the in-place asynchronous copy tch leaves out.
// Conventions: build/shim.h (errors through sasrec_train_last_error(), defined in c10d.cpp).
#include <stdexcept>

#include <ATen/core/Tensor.h>
#include <shim.h>

#ifdef SASREC_CUDA_GRAPHS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif

using sasrec_shim::guarded;

// The Rust step run on the side stream: 0 on success (its error stays on the Rust side).
typedef int (*sasrec_step_fn)(void* ctx);

namespace {

[[noreturn]] void step_failed() { throw std::runtime_error("the training step failed"); }

#ifdef SASREC_CUDA_GRAPHS
// A graph and the side stream its warm-up and capture run on.
struct Graph {
  explicit Graph(c10::DeviceIndex device)
      : side(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device)) {}
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream side;
};

// `waiter` waits (on the device) for the work queued on `stream` so far.
void wait_for(const c10::Stream& waiter, const c10::Stream& stream) {
  c10::Event queued(c10::DeviceType::CUDA);
  queued.record(stream);
  queued.block(waiter);
}

// Runs `f` with the side stream current: the side stream waits for the work already queued on
// the current stream, and the current stream for the side stream's work afterwards
// (torch.cuda.graph / make_graphed_callables: `s.wait_stream(torch.cuda.current_stream())`).
// The device-generic guard and event (c10/core) reach CUDA through the registered CUDA guard
// implementation in libc10_cuda, so this file needs no CUDA runtime symbols of its own.
template <typename F>
void on_side_stream(Graph& g, F&& f) {
  c10::Stream ambient = c10::cuda::getCurrentCUDAStream(g.side.device_index());
  c10::Stream side = g.side;
  wait_for(side, ambient);
  {
    c10::StreamGuard guard(side);
    f();
  }
  wait_for(ambient, side);
}
#else
[[noreturn]] void no_graphs() {
  throw std::runtime_error(
      "built without CUDA graphs (this torch has no CUDA or the CUDA headers were missing at "
      "build time)");
}
#endif

}  // namespace

extern "C" {

// A new graph for CUDA device `device` in *out.
int sasrec_cuda_graph_new([[maybe_unused]] int device, [[maybe_unused]] void** out) {
  return guarded([&] {
#ifdef SASREC_CUDA_GRAPHS
    *out = new Graph(static_cast<c10::DeviceIndex>(device));
#else
    no_graphs();
#endif
  });
}

// Frees a graph from sasrec_cuda_graph_new (its private memory pool goes back to the caching
// allocator).
void sasrec_cuda_graph_free([[maybe_unused]] void* graph) {
#ifdef SASREC_CUDA_GRAPHS
  delete static_cast<Graph*>(graph);
#endif
}

// One eager step on the graph's side stream (the warm-up iterations before capture).
int sasrec_cuda_graph_warm_up([[maybe_unused]] void* graph, [[maybe_unused]] sasrec_step_fn body,
                              [[maybe_unused]] void* ctx) {
  return guarded([&] {
#ifdef SASREC_CUDA_GRAPHS
    on_side_stream(*static_cast<Graph*>(graph), [&] {
      if (body(ctx) != 0) step_failed();
    });
#else
    no_graphs();
#endif
  });
}

// Captures `body` into the graph: device synchronisation, then capture_begin (private pool,
// global mode) and capture_end on the side stream. Nothing runs during capture: replay it to
// take the step. A failed body ends the capture and the call fails.
int sasrec_cuda_graph_capture([[maybe_unused]] void* graph, [[maybe_unused]] sasrec_step_fn body,
                              [[maybe_unused]] void* ctx) {
  return guarded([&] {
#ifdef SASREC_CUDA_GRAPHS
    auto& g = *static_cast<Graph*>(graph);
    c10::cuda::device_synchronize();
    on_side_stream(g, [&] {
      g.graph.capture_begin();
      if (body(ctx) != 0) {
        try {
          g.graph.capture_end();
        } catch (...) {
          // An invalidated capture fails to end; the step's own error is the one reported.
        }
        step_failed();
      }
      g.graph.capture_end();
    });
#else
    no_graphs();
#endif
  });
}

// Replays the captured step on the current stream.
int sasrec_cuda_graph_replay([[maybe_unused]] void* graph) {
  return guarded([&] {
#ifdef SASREC_CUDA_GRAPHS
    static_cast<Graph*>(graph)->graph.replay();
#else
    no_graphs();
#endif
  });
}

// dst.copy_(src, non_blocking=true): stream-ordered between pinned host memory and a CUDA
// device, an ordinary copy otherwise.
int sasrec_copy_async(at::Tensor* dst, at::Tensor* src) {
  return guarded([&] { dst->copy_(*src, /*non_blocking=*/true); });
}

}  // extern "C"
