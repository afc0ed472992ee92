// The CUDA backend's GEMM: row-major c = a * b with cuBLAS (built only with CUDA).
//
// cuBLAS is column-major; a row-major m x n matrix is the column-major n x m matrix of its
// transpose, so c = a * b is computed as c^T (n x m) = b^T (n x k) * a^T (k x m) with no
// transposition flags and leading dimensions n, k, n.
//
// Each thread keeps one cuBLAS handle per device, created on first use (with that device current:
// ops.cc holds a DeviceGuard) and destroyed when the thread exits. The handle is bound to the
// caller's stream before each call, so the GEMM is ordered with the rest of the stream's work.
//
// Thread-safe: handles are thread-local.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "prism/errors.h"

namespace prism::gpu::kernels::cuda {
namespace {

// Throws prism::Error naming the cuBLAS call and its status.
void check_cublas(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const ErrorCode code =
      status == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::kResourceExhausted : ErrorCode::kInternal;
  throw Error(code, std::string(call) + " failed: " + cublasGetStatusName(status) + " (" +
                        cublasGetStatusString(status) + ")");
}

// One cuBLAS handle, bound to the device current at creation. Thread contract: used by the
// thread that owns it only.
class CublasHandle {
 public:
  explicit CublasHandle(int device) : device_(device) {
    check_cublas(cublasCreate(&handle_), "cublasCreate");
  }
  ~CublasHandle() {
    // Runs at thread exit: errors (e.g. the runtime already torn down) are ignored.
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current != device_) cudaSetDevice(device_);
    cublasSetStream(handle_, nullptr);  // the last stream may be destroyed already
    cublasDestroy(handle_);
    cudaGetLastError();
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;

  cublasHandle_t get() const noexcept { return handle_; }

 private:
  int device_;
  cublasHandle_t handle_ = nullptr;
};

// The calling thread's handle for `device` (which must be current), bound to `stream`.
cublasHandle_t thread_handle(int device, void* stream) {
  thread_local std::vector<std::unique_ptr<CublasHandle>> handles;
  if (device < 0) throw Error(ErrorCode::kInternal, "cuBLAS GEMM on the host device");
  if (static_cast<size_t>(device) >= handles.size()) handles.resize(device + 1);
  if (!handles[device]) handles[device] = std::make_unique<CublasHandle>(device);
  cublasHandle_t h = handles[device]->get();
  check_cublas(cublasSetStream(h, static_cast<cudaStream_t>(stream)), "cublasSetStream");
  return h;
}

#if CUBLAS_VER_MAJOR < 12
void check_int_dims(int64_t m, int64_t n, int64_t k) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (m > kMax || n > kMax || k > kMax) {
    throw Error(ErrorCode::kInvalidArgument,
                "matmul: dimensions above 2^31-1 need cuBLAS 12 or later");
  }
}
#endif

}  // namespace

void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int device,
          void* stream) {
  cublasHandle_t h = thread_handle(device, stream);
  const float alpha = 1.0f, beta = 0.0f;
#if CUBLAS_VER_MAJOR >= 12
  check_cublas(
      cublasSgemm_64(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &alpha, b, n, a, k, &beta, c, n),
      "cublasSgemm_64");
#else
  check_int_dims(m, n, k);
  check_cublas(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                           static_cast<int>(k), &alpha, b, static_cast<int>(n), a,
                           static_cast<int>(k), &beta, c, static_cast<int>(n)),
               "cublasSgemm");
#endif
}

void gemm(const double* a, const double* b, double* c, int64_t m, int64_t n, int64_t k, int device,
          void* stream) {
  cublasHandle_t h = thread_handle(device, stream);
  const double alpha = 1.0, beta = 0.0;
#if CUBLAS_VER_MAJOR >= 12
  check_cublas(
      cublasDgemm_64(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &alpha, b, n, a, k, &beta, c, n),
      "cublasDgemm_64");
#else
  check_int_dims(m, n, k);
  check_cublas(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                           static_cast<int>(k), &alpha, b, static_cast<int>(n), a,
                           static_cast<int>(k), &beta, c, static_cast<int>(n)),
               "cublasDgemm");
#endif
}

}  // namespace prism::gpu::kernels::cuda
