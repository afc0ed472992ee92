// examples/workloads/gemm.h — the matrix product the examples and the bench use: OpenBLAS's dgemm
// when the build found it (PRISM_HAVE_OPENBLAS, Debian's libopenblas-dev), Eigen's own GEMM
// otherwise.
//
//   Eigen::MatrixXd c = examples::gemm::multiply(a, b);   // a * b
//
// One BLAS thread per product: Prism runs products side by side as tasks, one per CPU, as Ray's
// tutorial runs numpy in each worker; OpenBLAS's own threads would fight them for the CPUs. The
// first product sets OpenBLAS to one thread for the whole process (OPENBLAS_NUM_THREADS then has
// no say).
//
// Thread-safe: OpenBLAS's pthread and serial builds take concurrent calls.
#pragma once

#include <Eigen/Dense>
#include <climits>
#include <mutex>
#include <stdexcept>
#include <string>

#if PRISM_HAVE_OPENBLAS
// The reference BLAS's Fortran interface (every BLAS exports it) and OpenBLAS's thread setting.
// Declared here rather than taken from cblas.h, which Debian switches between BLAS builds.
extern "C" {
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc);
void openblas_set_num_threads(int threads);
char* openblas_get_corename(void);
}
#endif

namespace examples::gemm {

// What computes the products, for the programs' headers ("OpenBLAS 0.3 (Haswell kernels), one
// thread per product").
inline std::string backend() {
#if PRISM_HAVE_OPENBLAS
  return std::string("OpenBLAS (") + openblas_get_corename() + " kernels), one thread per product";
#else
  return "Eigen's built-in GEMM (built without OpenBLAS)";
#endif
}

// a * b. Throws std::invalid_argument when the shapes do not agree.
inline Eigen::MatrixXd multiply(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  if (a.cols() != b.rows()) {
    throw std::invalid_argument("gemm: " + std::to_string(a.rows()) + "x" +
                                std::to_string(a.cols()) + " times " + std::to_string(b.rows()) +
                                "x" + std::to_string(b.cols()));
  }
#if PRISM_HAVE_OPENBLAS
  const bool fits_int = a.rows() <= INT_MAX && a.cols() <= INT_MAX && b.cols() <= INT_MAX;
  if (fits_int && a.size() > 0 && b.size() > 0) {
    static std::once_flag one_thread;
    std::call_once(one_thread, [] { openblas_set_num_threads(1); });
    Eigen::MatrixXd c(a.rows(), b.cols());
    const int m = static_cast<int>(a.rows()), n = static_cast<int>(b.cols());
    const int k = static_cast<int>(a.cols());
    const double one = 1.0, zero = 0.0;
    // Column-major, as Eigen stores a MatrixXd: leading dimensions are the row counts.
    dgemm_("N", "N", &m, &n, &k, &one, a.data(), &m, b.data(), &k, &zero, c.data(), &m);
    return c;
  }
#endif
  return a * b;  // (an empty operand, a size past int, or no OpenBLAS)
}

}  // namespace examples::gemm
