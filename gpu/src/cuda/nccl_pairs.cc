// Device channels over NCCL (CUDA backend): a communicator of two ranks per ordered pair of GPUs,
// created non-blocking (ncclCommInitRankConfig with blocking = 0) so that a join or a transfer
// that does not complete can be given up (ncclCommAbort) instead of hanging; each transfer is
// one ncclSend/ncclRecv of the tensor's bytes on the channel thread's own stream, after the
// tensor's ready event, and complete when an event recorded after it is.
//
// Known risk (from NCCL's documentation, "Using multiple NCCL communicators concurrently"): the
// communicators of one GPU (one per peer GPU and direction) run their kernels on streams of their
// own, unordered with each other; NCCL may deadlock if such kernels cannot all be resident at
// once. Serializing them per GPU here would deadlock for certain across two processes sending
// each other values at the same time, so they are not; a stall ends at the transfer's deadline
// (the communicator is aborted and its values go staged).
//
// libnccl.so.2 is loaded with dlopen when the first channel is made (PRISM_NCCL_LIBRARY, else
// the system's, else the CUDA toolkit's this was built with): a program on a machine without
// NCCL runs as before, its GPU values staged through host memory.
//
// NEVER EXECUTED here: this project's CI has no GPU. Its loading and ncclGetUniqueId are tested
// (NcclPairsTest); joins and transfers run only on a machine with GPUs (see docs/semantics.md,
// "GPU values across nodes", for the commands).
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "backend.h"
#include "device_channels.h"
#include "prism/errors.h"

#ifndef PRISM_NCCL_TOOLKIT_LIBRARY
#define PRISM_NCCL_TOOLKIT_LIBRARY ""
#endif

namespace prism::gpu::internal {
namespace {

struct NcclApi {
  decltype(&ncclGetVersion) get_version = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRankConfig) init_rank_config = nullptr;
  decltype(&ncclCommGetAsyncError) get_async_error = nullptr;
  decltype(&ncclCommAbort) abort = nullptr;
  decltype(&ncclSend) send = nullptr;
  decltype(&ncclRecv) recv = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  int version = 0;
};

[[noreturn]] void fail(const std::string& what) {
  throw Error(ErrorCode::kUnavailable, "device channel (NCCL): " + what);
}

// Waits until `done()` (which throws on an error), checking `stop`: yields at first, then
// polls every 50 µs (NCCL progresses on its own threads and the GPU; nothing here to wake on).
template <typename Done>
void poll_until(const char* what, const Stop& stop, Done done) {
  for (int spins = 0; !done(); ++spins) {
    stop.check(what);
    if (spins < 200) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

class NcclComm final : public PairComm {
 public:
  NcclComm(const NcclApi& api, ncclComm_t comm, cudaEvent_t event, int rank)
      : api_(api), comm_(comm), event_(event), peer_(1 - rank) {}
  ~NcclComm() override {
    // Abort rather than destroy: it needs nothing from the peer, which may be gone.
    (void)api_.abort(comm_);
    (void)cudaEventDestroy(event_);
  }

  void send(const void* data, size_t bytes, int device, void* stream, const Stop& stop) override {
    transfer(const_cast<void*>(data), bytes, device, stream, stop, /*sending=*/true);
  }
  void recv(void* data, size_t bytes, int device, void* stream, const Stop& stop) override {
    transfer(data, bytes, device, stream, stop, /*sending=*/false);
  }

 private:
  void check(ncclResult_t r, const char* what) const {
    if (r != ncclSuccess && r != ncclInProgress) {
      fail(std::string(what) + ": " + api_.error_string(r));
    }
  }
  // Whether the communicator's last call finished enqueueing (non-blocking communicators).
  bool settled(const char* what) const {
    ncclResult_t state = ncclSuccess;
    check(api_.get_async_error(comm_, &state), what);
    check(state, what);
    return state != ncclInProgress;
  }

  void transfer(void* data, size_t bytes, int device, void* stream, const Stop& stop,
                bool sending) {
    if (bytes == 0) return;
    backend_instance().set_device(device);
    const auto s = static_cast<cudaStream_t>(stream);
    const char* what = sending ? "ncclSend" : "ncclRecv";
    check(sending ? api_.send(data, bytes, ncclUint8, peer_, comm_, s)
                  : api_.recv(data, bytes, ncclUint8, peer_, comm_, s),
          what);
    poll_until(what, stop, [&] { return settled(what); });
    cudaError_t e = cudaEventRecord(event_, s);
    if (e != cudaSuccess) fail(std::string("cudaEventRecord: ") + cudaGetErrorString(e));
    poll_until(what, stop, [&] {
      const cudaError_t q = cudaEventQuery(event_);
      if (q == cudaSuccess) return true;
      if (q != cudaErrorNotReady) fail(std::string(what) + ": " + cudaGetErrorString(q));
      (void)settled(what);  // (throws when NCCL reports an error)
      return false;
    });
  }

  const NcclApi& api_;
  const ncclComm_t comm_;
  const cudaEvent_t event_;
  const int peer_;
};

class NcclTransport final : public PairTransport {
 public:
  // (The library stays loaded for good: communicators aborted late may still run its code.)
  explicit NcclTransport(NcclApi api) : api_(api) {}

  uint8_t kind() const noexcept override { return 1; }
  bool usable(int device) const noexcept override {
    return device >= 0 && device < backend_instance().device_count();
  }

  std::string new_id() override {
    ncclUniqueId id;
    const ncclResult_t r = api_.get_unique_id(&id);
    if (r != ncclSuccess) fail(std::string("ncclGetUniqueId: ") + api_.error_string(r));
    return std::string(id.internal, sizeof id.internal);
  }

  std::unique_ptr<PairComm> join(const std::string& id, int rank, int device,
                                 const Stop& stop) override {
    ncclUniqueId unique;
    if (id.size() != sizeof unique.internal) fail("a communicator id of the wrong size");
    std::memcpy(unique.internal, id.data(), sizeof unique.internal);
    backend_instance().set_device(device);
    cudaEvent_t event = nullptr;
    cudaError_t e = cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
    if (e != cudaSuccess) fail(std::string("cudaEventCreate: ") + cudaGetErrorString(e));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = nullptr;
    const ncclResult_t r = api_.init_rank_config(&comm, 2, unique, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      if (comm != nullptr) (void)api_.abort(comm);
      (void)cudaEventDestroy(event);
      fail(std::string("ncclCommInitRankConfig: ") + api_.error_string(r));
    }
    // (From here the communicator aborts with `joined` if the join does not complete.)
    auto joined = std::make_unique<NcclComm>(api_, comm, event, rank);
    poll_until("joining a communicator", stop, [&] {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t q = api_.get_async_error(comm, &state);
      if (q != ncclSuccess) fail(std::string("ncclCommGetAsyncError: ") + api_.error_string(q));
      if (state != ncclSuccess && state != ncclInProgress) {
        fail(std::string("ncclCommInitRankConfig: ") + api_.error_string(state));
      }
      return state == ncclSuccess;
    });
    return joined;
  }

  int version() const noexcept { return api_.version; }

 private:
  const NcclApi api_;
};

template <typename F>
bool bind(void* library, const char* name, F* out) {
  *out = reinterpret_cast<F>(::dlsym(library, name));
  return *out != nullptr;
}

}  // namespace

std::unique_ptr<PairTransport> make_nccl_transport(std::string* why) {
  const char* chosen = std::getenv("PRISM_NCCL_LIBRARY");
  void* library = nullptr;
  std::string tried;
  for (const char* name : {chosen, "libnccl.so.2", PRISM_NCCL_TOOLKIT_LIBRARY}) {
    if (name == nullptr || *name == '\0') continue;
    library = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (library != nullptr) break;
    const char* error = ::dlerror();
    tried += std::string(tried.empty() ? "" : "; ") + (error != nullptr ? error : name);
  }
  if (library == nullptr) {
    *why = "libnccl.so.2 could not be loaded (" + tried + ")";
    return nullptr;
  }
  NcclApi api;
  if (!bind(library, "ncclGetVersion", &api.get_version) ||
      !bind(library, "ncclGetUniqueId", &api.get_unique_id) ||
      !bind(library, "ncclCommInitRankConfig", &api.init_rank_config) ||
      !bind(library, "ncclCommGetAsyncError", &api.get_async_error) ||
      !bind(library, "ncclCommAbort", &api.abort) || !bind(library, "ncclSend", &api.send) ||
      !bind(library, "ncclRecv", &api.recv) ||
      !bind(library, "ncclGetErrorString", &api.error_string)) {
    *why = "the NCCL library lacks a function Prism needs (NCCL 2.14 or later is needed)";
    ::dlclose(library);
    return nullptr;
  }
  if (api.get_version(&api.version) != ncclSuccess || api.version < 21400) {
    *why = "NCCL " + std::to_string(api.version) + " is older than 2.14";
    ::dlclose(library);
    return nullptr;
  }
  return std::make_unique<NcclTransport>(api);
}

}  // namespace prism::gpu::internal
