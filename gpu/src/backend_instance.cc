// Chooses the process's backend once: CUDA when built with it and a device is usable (unless
// PRISM_GPU_BACKEND=host), else the host backend.
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend.h"

namespace prism::gpu::internal {

namespace {

DeviceBackend* choose() {
  const char* forced = std::getenv("PRISM_GPU_BACKEND");
  const bool force_host = forced != nullptr && std::strcmp(forced, "host") == 0;
#ifdef PRISM_GPU_CUDA
  if (force_host) return make_host_backend("PRISM_GPU_BACKEND=host");
  std::string why;
  if (DeviceBackend* cuda = make_cuda_backend(&why)) return cuda;
  return make_host_backend(why);
#else
  (void)force_host;
  return make_host_backend("Prism was built without CUDA");
#endif
}

}  // namespace

DeviceBackend& backend_instance() {
  // Never destroyed: tensors and thread streams may outlive every runtime (static destruction
  // order would otherwise free the backend under them).
  static DeviceBackend* const instance = choose();
  return *instance;
}

}  // namespace prism::gpu::internal
