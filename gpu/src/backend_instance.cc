// Chooses the process's backend once: CUDA when built with it and a device is usable (unless
// PRISM_GPU_BACKEND=host), else the host backend, or, with PRISM_REQUIRE_CUDA=1, abort.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "backend.h"

namespace prism::gpu::internal {

namespace {

// PRISM_REQUIRE_CUDA=1: a run that must test real GPUs stops here rather than pass on the host
// backend (where every CUDA test skips).
DeviceBackend* host_or_die(std::string why) {
  const char* require = std::getenv("PRISM_REQUIRE_CUDA");
  if (require != nullptr && std::strcmp(require, "") != 0 && std::strcmp(require, "0") != 0) {
    std::fprintf(stderr, "prism: PRISM_REQUIRE_CUDA=%s but the CUDA backend is not usable: %s\n",
                 require, why.c_str());
    std::fflush(stderr);
    std::abort();
  }
  return make_host_backend(std::move(why));
}

DeviceBackend* choose() {
  // Taken on every path, so that a share set after the devices were enumerated is refused.
  const prism::internal::DeviceShare share = prism::internal::take_device_share();
  const char* forced = std::getenv("PRISM_GPU_BACKEND");
  const bool force_host = forced != nullptr && std::strcmp(forced, "host") == 0;
#ifdef PRISM_GPU_CUDA
  if (force_host) return host_or_die("PRISM_GPU_BACKEND=host");
  std::string why;
  if (DeviceBackend* cuda = make_cuda_backend(share, &why)) return cuda;
  return host_or_die(why);
#else
  (void)force_host;
  (void)share;
  return host_or_die("Prism was built without CUDA");
#endif
}

}  // namespace

DeviceBackend& backend_instance() {
  // Never destroyed: tensors and thread streams may outlive every runtime (static destruction
  // order would otherwise free the backend under them).
  static DeviceBackend* const instance = choose();
  return *instance;
}

bool find_cuda_backend() noexcept {
  const bool cuda = backend_instance().kind() == Backend::kCuda;
  g_backend_kind.store(cuda ? 2 : 1, std::memory_order_relaxed);
  return cuda;
}

}  // namespace prism::gpu::internal
