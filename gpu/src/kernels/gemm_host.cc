// The host backend's GEMM: row-major c = a * b with Eigen (a plain loop without Eigen). Runs on
// the calling thread; `device` and `stream` are ignored (host "device" memory is host memory).
//
// Thread-safe: works on its arguments only.

#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

#ifdef PRISM_GPU_EIGEN
#include <Eigen/Core>
#endif

namespace prism::gpu::kernels::host {
namespace {

template <typename T>
void gemm_impl(const T* a, const T* b, T* c, int64_t m, int64_t n, int64_t k) {
#ifdef PRISM_GPU_EIGEN
  using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMajor> ma(a, m, k);
  const Eigen::Map<const RowMajor> mb(b, k, n);
  Eigen::Map<RowMajor> mc(c, m, n);
  mc.noalias() = ma * mb;
#else
  // i-p-j order: the inner loop walks rows of b and c contiguously.
  for (int64_t i = 0; i < m; ++i) {
    T* crow = c + i * n;
    for (int64_t j = 0; j < n; ++j) crow[j] = T(0);
    for (int64_t p = 0; p < k; ++p) {
      const T aip = a[i * k + p];
      const T* brow = b + p * n;
      for (int64_t j = 0; j < n; ++j) crow[j] += aip * brow[j];
    }
  }
#endif
}

}  // namespace

void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int /*device*/,
          void* /*stream*/) {
  gemm_impl(a, b, c, m, n, k);
}

void gemm(const double* a, const double* b, double* c, int64_t m, int64_t n, int64_t k,
          int /*device*/, void* /*stream*/) {
  gemm_impl(a, b, c, m, n, k);
}

}  // namespace prism::gpu::kernels::host
