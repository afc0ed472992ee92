// The host backend's kernels: kernels_impl.inl compiled by the host compiler with Thrust's CPP
// system, so the code the CUDA backend runs is also run (and tested) on machines without a GPU.
// Work runs on the calling thread; the stream argument (null) is ignored.
//
// Without the CCCL headers (no PRISM_GPU_THRUST) the functions throw prism::Error(kUnavailable);
// gemm (gemm_host.cc) does not need Thrust.

#ifdef PRISM_GPU_THRUST

// Thrust's device system must be chosen before any Thrust header is included.
#define THRUST_DEVICE_SYSTEM THRUST_DEVICE_SYSTEM_CPP
#include <thrust/system/cpp/execution_policy.h>

namespace prism::gpu::kernels::host::detail {

// Thread-safe: stateless.
struct Policies {
  static auto launch(void* /*stream*/) { return thrust::cpp::par; }
  static auto value(void* /*stream*/) { return thrust::cpp::par; }
  static void after_launch(const char* /*kernel*/) {}
};

}  // namespace prism::gpu::kernels::host::detail

#define PRISM_GPU_KERNELS_NS host
#include "kernels/kernels_impl.inl"
#undef PRISM_GPU_KERNELS_NS

#else  // !PRISM_GPU_THRUST

#include <string>

#include "kernels/kernels.h"
#include "prism/errors.h"

namespace prism::gpu::kernels::host {
namespace {

[[noreturn]] void no_thrust(const char* kernel) {
  throw Error(ErrorCode::kUnavailable,
              std::string("prism::gpu::") + kernel +
                  ": Prism was built without Thrust (the CUDA toolkit's CCCL headers were not "
                  "found), so the host backend has no kernels");
}

}  // namespace

void add(const float*, const float*, float*, size_t, void*) { no_thrust("add"); }
void add(const double*, const double*, double*, size_t, void*) { no_thrust("add"); }
void axpy(double, const float*, const float*, float*, size_t, void*) { no_thrust("axpy"); }
void axpy(double, const double*, const double*, double*, size_t, void*) { no_thrust("axpy"); }
double sum(const float*, size_t, void*) { no_thrust("sum"); }
double sum(const double*, size_t, void*) { no_thrust("sum"); }
double sum_exp_sinh(const float*, size_t, void*) { no_thrust("sum_exp_sinh"); }
double sum_exp_sinh(const double*, size_t, void*) { no_thrust("sum_exp_sinh"); }
double trace(const float*, size_t, void*) { no_thrust("trace"); }
double trace(const double*, size_t, void*) { no_thrust("trace"); }
double max_abs_diff(const float*, const float*, size_t, void*) { no_thrust("max_abs_diff"); }
double max_abs_diff(const double*, const double*, size_t, void*) { no_thrust("max_abs_diff"); }
void flip_crop_normalize(const uint8_t*, const CropParams*, const ImageBatch&, const NormParams&,
                         float*, void*) {
  no_thrust("flip_crop_normalize");
}

}  // namespace prism::gpu::kernels::host

#endif  // PRISM_GPU_THRUST
