// The CUDA backend's GEMM: row-major c = a * b with cuBLAS (built only with CUDA).
//
// cuBLAS is column-major; a row-major m x n matrix is the column-major n x m matrix of its
// transpose, so c = a * b is computed as c^T (n x m) = b^T (n x k) * a^T (k x m) with no
// transposition flags and leading dimensions n, k, n.
//
// Each thread keeps one cuBLAS handle per device, created on first use (with that device current:
// ops.cc holds a DeviceGuard), with a workspace per stream (stream_workspace), and destroyed when
// the thread exits (left to the driver once the
// process is exiting). Math mode is set explicitly to CUBLAS_DEFAULT_MATH: no TF32. Failures that
// lack of memory explains (creating the handle, the GEMM's workspace) are retried once after the
// device pool's cached memory is given back. The handle is bound to the
// caller's stream before each call, so the GEMM is ordered with the rest of the stream's work.
//
// Thread-safe: handles are thread-local.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/kernels.h"
#include "prism/errors.h"

namespace prism::gpu::kernels::cuda {
namespace {

// Throws prism::Error naming the cuBLAS call and its status.
void check_cublas(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const std::string message = std::string(call) + " failed: " + cublasGetStatusName(status) +
                              " (" + cublasGetStatusString(status) + ")";
  if (status == CUBLAS_STATUS_ALLOC_FAILED) throw OutOfMemoryError(message);
  throw Error(ErrorCode::kInternal, message);
}

// One cuBLAS handle, bound to the device current at creation. Thread contract: used by the
// thread that owns it only.
class CublasHandle {
 public:
  CublasHandle() {
    if (cudaGetDevice(&device_) != cudaSuccess) {
      cudaGetLastError();
      device_ = -1;
    }
    cublasStatus_t status = cublasCreate(&handle_);
    if (status != CUBLAS_STATUS_SUCCESS) {
      // After a peak the device pool may hold the memory cuBLAS needs: give it back, once more.
      release_cached_memory();
      status = cublasCreate(&handle_);
    }
    check_cublas(status, "cublasCreate");
    // Explicit: no TF32 or other reduced-precision tensor-op math behind the caller's back
    // (CUBLAS_DEFAULT_MATH keeps float GEMMs in float; cublasSetMathMode).
    status = cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH);
    if (status != CUBLAS_STATUS_SUCCESS) {
      cublasDestroy(handle_);
      check_cublas(status, "cublasSetMathMode");
    }
  }
  ~CublasHandle() {
    // Runs at thread exit; after the process began exiting the CUDA runtime may be gone: the
    // handle is left to the driver then. Other errors are ignored.
    if (process_exiting()) return;
    int current = -1;
    if (device_ >= 0 && cudaGetDevice(&current) == cudaSuccess && current != device_) {
      cudaSetDevice(device_);
    }
    cublasSetStream(handle_, nullptr);  // the last stream may be destroyed already
    cublasDestroy(handle_);
    cudaGetLastError();
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;

  cublasHandle_t get() const noexcept { return handle_; }

 private:
  int device_ = -1;  // the CUDA ordinal current at creation
  cublasHandle_t handle_ = nullptr;
};

// A workspace per stream. cuBLAS's default workspace belongs to the handle, and a thread's handle
// moves between streams (its own, then an actor's): a GEMM still running on one stream would share
// it with the next GEMM on another. Each stream gets its own (set after cublasSetStream, which
// resets it), kept for the process's life as the streams are; work on one stream runs in order,
// so its GEMMs may share it. Size: cuBLAS's recommendation (32 MiB on Hopper and later, 4 MiB
// before). Without memory for it, null: cuBLAS then picks algorithms that need none.
void* stream_workspace(void* stream, size_t* bytes) {
  static std::mutex mu;
  static auto* const table = new std::unordered_map<void*, std::pair<void*, size_t>>;  // never freed
  std::lock_guard<std::mutex> lock(mu);
  auto it = table->find(stream);
  if (it == table->end()) {
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      cudaGetLastError();
    }
    size_t size = major >= 9 ? (size_t{32} << 20) : (size_t{4} << 20);
    void* p = nullptr;
    if (cudaMalloc(&p, size) != cudaSuccess) {
      cudaGetLastError();
      p = nullptr;
      size = 0;
    }
    it = table->emplace(stream, std::make_pair(p, size)).first;
  }
  *bytes = it->second.second;
  return it->second.first;
}

// The calling thread's handle for Prism device `device` (which must be current), bound to
// `stream` and that stream's workspace.
cublasHandle_t thread_handle(int device, void* stream) {
  thread_local std::vector<std::unique_ptr<CublasHandle>> handles;
  if (device < 0) throw Error(ErrorCode::kInternal, "cuBLAS GEMM on the host device");
  if (static_cast<size_t>(device) >= handles.size()) handles.resize(device + 1);
  if (!handles[device]) handles[device] = std::make_unique<CublasHandle>();
  cublasHandle_t h = handles[device]->get();
  check_cublas(cublasSetStream(h, static_cast<cudaStream_t>(stream)), "cublasSetStream");
  size_t bytes = 0;
  void* workspace = stream_workspace(stream, &bytes);
  check_cublas(cublasSetWorkspace(h, workspace, bytes), "cublasSetWorkspace");
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

// Whether lack of device memory may explain `status`. ALLOC_FAILED says so. INTERNAL_ERROR and
// EXECUTION_FAILED may come from a workspace or temporary allocation failing inside cuBLAS, or
// from anything else: memory is blamed only when the runtime's last error is an allocation
// failure, or, with no error pending, when the device is nearly full (memory the pool caches
// counts as used there, so that is when giving it back can help). Another pending error (a
// sticky one among them) is left for the caller's next check: a retry cannot help then, and
// evicting the cached copies would only cost their next readers a copy. (Never run here: it
// needs a real device; see the issue-13 note's list.)
bool memory_may_explain(cublasStatus_t status) {
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return true;
  if (status != CUBLAS_STATUS_INTERNAL_ERROR && status != CUBLAS_STATUS_EXECUTION_FAILED) {
    return false;
  }
  const cudaError_t last = cudaPeekAtLastError();
  if (last == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // (not sticky: cleared, so that the next check does not see it again)
    return true;
  }
  if (last != cudaSuccess) return false;
  size_t free = 0;
  size_t total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  constexpr size_t kNearlyFull = size_t{256} << 20;
  return free < std::min(total / 16, kNearlyFull);
}

// Runs a cuBLAS call; when it fails in a way lack of memory may explain (memory_may_explain),
// gives the device pool's cached memory back and runs it once more.
template <typename Call>
void with_memory_retry(const char* name, Call call) {
  cublasStatus_t status = call();
  if (status != CUBLAS_STATUS_SUCCESS && memory_may_explain(status)) {
    release_cached_memory();
    status = call();
  }
  check_cublas(status, name);
}

}  // namespace

void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int device,
          void* stream) {
  cublasHandle_t h = thread_handle(device, stream);
  const float alpha = 1.0f, beta = 0.0f;
#if CUBLAS_VER_MAJOR >= 12
  with_memory_retry("cublasSgemm_64", [&] {
    return cublasSgemm_64(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &alpha, b, n, a, k, &beta, c, n);
  });
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
  with_memory_retry("cublasDgemm_64", [&] {
    return cublasDgemm_64(h, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &alpha, b, n, a, k, &beta, c, n);
  });
#else
  check_int_dims(m, n, k);
  check_cublas(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                           static_cast<int>(k), &alpha, b, static_cast<int>(n), a,
                           static_cast<int>(k), &beta, c, static_cast<int>(n)),
               "cublasDgemm");
#endif
}

}  // namespace prism::gpu::kernels::cuda
