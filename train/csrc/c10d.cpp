// PyTorch's c10d (Gloo, and NCCL when compiled with USE_C10D_NCCL) behind a small C ABI for
// `train/src/dist.rs`. See docs/TOOLCHAIN.md, "Multi-GPU: PyTorch's own c10d through a
// C++ shim".
//
// Conventions: build/shim.h (0 / -1 and `sasrec_train_last_error()`).

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <shim.h>
#include <torch/headeronly/version.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

using sasrec_shim::guarded;

// One process group: the store it rendezvoused through and the backend. Members are destroyed
// in reverse order, so the backend goes before the store it may still talk to.
struct SasrecPg {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int64_t local_rank = 0;
  bool nccl = false;
  bool shut_down = false;
};

extern "C" {

// The last error message of this thread from any train shim ("" when none).
const char* sasrec_train_last_error() { return sasrec_shim::last_error().c_str(); }

// The libtorch version of the headers this shim was compiled against ("2.11.0").
const char* sasrec_train_torch_version() { return TORCH_VERSION; }

// 1 when this shim was compiled with ProcessGroupNCCL, else 0.
int sasrec_c10d_has_nccl() {
#ifdef USE_C10D_NCCL
  return 1;
#else
  return 0;
#endif
}

// Rendezvous and create a backend (0 = Gloo, 1 = NCCL). `timeout_ms` bounds the store
// connection / wait for the other ranks and every collective.
//
// Store layout (the same keys torch.distributed would use, so both sides agree):
// - plain launch (our launcher, or env vars by hand): rank 0 hosts a TCPStore on
//   master_addr:port and waits for all `world` ranks to connect; the others are clients.
// - torchrun (`agent_store` != 0): the elastic agent already hosts the store on that port, so
//   every rank is a client (hosting it again would fail with EADDRINUSE) and the keys live
//   under "/worker/attempt_<restart_count>" so a restarted attempt never reads stale keys.
// Either way the group's own keys go under "default_pg".
int sasrec_c10d_init(const char* master_addr, uint16_t port, int rank, int world, int local_rank,
                     int agent_store, int restart_count, int backend, int64_t timeout_ms,
                     SasrecPg** out) {
  *out = nullptr;
  return guarded([&] {
    const std::chrono::milliseconds timeout(timeout_ms);
    const std::string addr(master_addr);

    c10d::TCPStoreOptions so;
    so.port = port;
    so.isServer = !agent_store && rank == 0;
    so.timeout = timeout;
    if (!agent_store) {
      // Every rank (host included) checks in under the store's init key; the host's
      // constructor returns once all `world` have, or throws after `timeout`.
      so.numWorkers = world;
      so.waitWorkers = true;
    } else {
      // torchrun's agent did its own rendezvous; the Gloo/NCCL key exchange below is bounded
      // by `timeout` too.
      so.waitWorkers = false;
    }
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(addr, so);
    if (agent_store) {
      store = c10::make_intrusive<c10d::PrefixStore>(
          "/worker/attempt_" + std::to_string(restart_count), store);
    }
    store = c10::make_intrusive<c10d::PrefixStore>("default_pg", store);

    auto pg = new SasrecPg();
    pg->store = store;
    pg->local_rank = local_rank;
    try {
      if (backend == 0) {
        auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
        // The address other ranks reach this one at: loopback for a single-node run, else what
        // this host's name resolves to (GLOO_SOCKET_IFNAME picks an interface, as in torch).
        const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
        if (ifname != nullptr && *ifname != '\0') {
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        } else if (addr == "127.0.0.1" || addr == "localhost") {
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        } else {
          opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        }
        // The constructor connects the full mesh through the store (bounded by the timeout).
        pg->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
      } else if (backend == 1) {
#ifdef USE_C10D_NCCL
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = timeout;
        // Communicators are created lazily, on the device of the first collective's tensors.
        pg->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
        pg->nccl = true;
#else
        TORCH_CHECK(false, "this shim was compiled without NCCL (USE_C10D_NCCL)");
#endif
      } else {
        TORCH_CHECK(false, "unknown backend id ", backend);
      }
    } catch (...) {
      delete pg;
      throw;
    }
    *out = pg;
  });
}

// In-place sum over all ranks.
int sasrec_c10d_all_reduce_sum(SasrecPg* pg, at::Tensor* t) {
  return guarded([&] {
    std::vector<at::Tensor> ts{*t};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    pg->backend->allreduce(ts, opts)->wait();
  });
}

// All-gather: `output` (world · n, …) receives every rank's `input` (n, …) in rank order
// (written through its `world` views along dimension 0).
int sasrec_c10d_all_gather(SasrecPg* pg, at::Tensor* input, at::Tensor* output, int world) {
  return guarded([&] {
    std::vector<at::Tensor> in{*input};
    std::vector<std::vector<at::Tensor>> out{output->chunk(world, 0)};
    pg->backend->allgather(out, in)->wait();
  });
}

// In-place broadcast of `root`'s tensor to every rank.
int sasrec_c10d_broadcast(SasrecPg* pg, at::Tensor* t, int root) {
  return guarded([&] {
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    pg->backend->broadcast(ts, opts)->wait();
  });
}

// Blocks until every rank has reached the barrier.
int sasrec_c10d_barrier(SasrecPg* pg) {
  return guarded([&] {
    c10d::BarrierOptions opts;
    if (pg->nccl) {
      // NCCL's barrier is an all-reduce on a device: name ours instead of letting it guess.
      opts.device_ids = {pg->local_rank};
    }
    pg->backend->barrier(opts)->wait();
  });
}

// Orderly shutdown of the backend (what destroy_process_group() does; NCCL warns at
// destruction otherwise). Idempotent.
int sasrec_c10d_shutdown(SasrecPg* pg) {
  return guarded([&] {
    if (!pg->shut_down) {
      pg->shut_down = true;
      pg->backend->shutdown();
    }
  });
}

// Destroys the group (call sasrec_c10d_shutdown first). Null is ignored.
void sasrec_c10d_free(SasrecPg* pg) {
  guarded([&] { delete pg; });
}

}  // extern "C"
