// Raw-pointer kernels behind prism/gpu/kernels.h, declared once per backend:
//
//   kernels::host::add(a, b, out, n, /*stream=*/nullptr);   // kernels_host.cc (Thrust CPP system)
//   kernels::cuda::add(a, b, out, n, cuda_stream);          // kernels_cuda.cu (Thrust CUDA system)
//
// Both namespaces hold the same functions, compiled from the same source (kernels_impl.inl), plus
// gemm (gemm_host.cc with Eigen, cuda/cublas_gemm.cc with cuBLAS). Pointers are device pointers
// of the device that is current on the calling thread; `stream` is a cudaStream_t on CUDA and
// null on the host. Functions that return nothing queue their work on `stream` (the host ones have
// finished when they return); those that return a value wait for it. Inputs are not validated:
// ops.cc does that. Failures throw a std::exception (thrust::system_error, std::runtime_error);
// ops.cc turns them into prism::Error.
//
// Plain C++17 only: nvcc includes this header.
//
// Thread-safe: every function works on its arguments only (cuBLAS handles are per thread).
#pragma once

#include <cstddef>
#include <cstdint>

namespace prism::gpu::kernels {

// One image's flip and crop (prism::gpu::ImageCrop, as a plain struct for the device).
struct CropParams {
  int32_t src_x;
  int32_t src_y;
  int32_t src_width;
  int32_t src_height;
  int32_t full_width;
  int32_t full_height;
  int32_t flip;  // 0 or 1
  int32_t top;
  int32_t left;
};

// Per-channel (x / 255 - mean[c]) / std[c].
struct NormParams {
  float mean[3];
  float std[3];
};

// The geometry of flip_crop_normalize: `images` is [n, height, width, 3] uint8, the output is
// [n, 3, size, size] float32, `crops` (device memory) has n entries.
struct ImageBatch {
  int64_t n;
  int64_t height;
  int64_t width;
  int64_t size;
  int64_t padding;
};

}  // namespace prism::gpu::kernels

// The functions, declared in each backend's namespace below.
#define PRISM_GPU_KERNELS_DECLARE_FUNCTIONS                                                        \
  /* out = a + b */                                                                                \
  void add(const float* a, const float* b, float* out, size_t n, void* stream);                    \
  void add(const double* a, const double* b, double* out, size_t n, void* stream);                 \
  /* out = T(alpha) * x + y */                                                                     \
  void axpy(double alpha, const float* x, const float* y, float* out, size_t n, void* stream);     \
  void axpy(double alpha, const double* x, const double* y, double* out, size_t n, void* stream);  \
  /* sum of a[0..n), accumulated in double */                                                      \
  double sum(const float* a, size_t n, void* stream);                                              \
  double sum(const double* a, size_t n, void* stream);                                             \
  /* sum of exp(a[i]) * sinh(a[i]) over a[0..n), in double */                                       \
  double sum_exp_sinh(const float* a, size_t n, void* stream);                                     \
  double sum_exp_sinh(const double* a, size_t n, void* stream);                                    \
  /* sum of a[i * (rows + 1)] for i < rows, for a rows x rows matrix */                            \
  double trace(const float* a, size_t rows, void* stream);                                         \
  double trace(const double* a, size_t rows, void* stream);                                        \
  /* max |a[i] - b[i]| in double (NaN if any difference is NaN; 0 for n == 0) */                   \
  double max_abs_diff(const float* a, const float* b, size_t n, void* stream);                     \
  double max_abs_diff(const double* a, const double* b, size_t n, void* stream);                   \
  /* c (m x n) = a (m x k) * b (k x n), row-major; m, n, k > 0 */                                  \
  void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int device, \
            void* stream);                                                                         \
  void gemm(const double* a, const double* b, double* c, int64_t m, int64_t n, int64_t k,          \
            int device, void* stream);                                                             \
  /* RandomHorizontalFlip + RandomCrop + ToTensor + Normalize (see prism/gpu/kernels.h) */         \
  void flip_crop_normalize(const uint8_t* images, const CropParams* crops,                         \
                           const ImageBatch& batch, const NormParams& norm, float* out,            \
                           void* stream);

namespace prism::gpu::kernels::host {
PRISM_GPU_KERNELS_DECLARE_FUNCTIONS
}  // namespace prism::gpu::kernels::host

namespace prism::gpu::kernels::cuda {
PRISM_GPU_KERNELS_DECLARE_FUNCTIONS

// 0 (cudaSuccess) if this build has code the current device can run (cudaFuncGetAttributes on a
// kernel of kernels_cuda.cu), else the CUDA error (cudaErrorNoKernelImageForDevice, ...).
int probe_device_code() noexcept;

// Out-of-memory recovery for the kernels' own allocations (Thrust's temporary storage, cuBLAS):
// waits for the current device and gives its pool's cached memory back (cuda_backend.cc).
void release_cached_memory() noexcept;

// True once the process is exiting (atexit ran): CUDA objects are left to the driver instead of
// being destroyed after the CUDA runtime may have unloaded (cuda_backend.cc).
bool process_exiting() noexcept;
}  // namespace prism::gpu::kernels::cuda

#undef PRISM_GPU_KERNELS_DECLARE_FUNCTIONS
