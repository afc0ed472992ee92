// examples/workloads/matmul.h — the Ray tutorial's matrix workloads, serial and with Prism.
//
//   Matrix z = matmul::tree_prism(1000, /*seed=*/1);   // x1*x2 + x3*x4 as a task graph
//   Gathered g = matmul::many_prism(1000, 400, 1, /*window=*/4);
//
// Used by matmul_tree.cc and demo.cc. Matrices are Eigen's, products OpenBLAS's (gemm.h: one CPU
// thread per product, Eigen's own GEMM in a build without OpenBLAS); each
// serial function computes exactly what its Prism twin computes, with the same seeds, so the
// results can be compared.
//
// Thread-safe: the task functions are pure; the drivers must run where Prism is initialized.
#pragma once

#include <prism/prism.h>

#include <Eigen/Dense>
#include <prism/eigen.h>  // matrices travel between nodes in cluster mode
#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "../common/timer.h"
#include "gemm.h"

namespace examples::matmul {

using Matrix = Eigen::MatrixXd;

// ---- The remote functions ----

// An n x n matrix of standard normal values; the same seed gives the same matrix.
inline Matrix create_matrix(int n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  Matrix m(n, n);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(gen);
  return m;
}
// Arguments arrive as const Matrix&: a ref passed to a task is read in place, never copied.
inline Matrix multiply_matrices(const Matrix& a, const Matrix& b) { return gemm::multiply(a, b); }
inline Matrix sum_matrices(const Matrix& a, const Matrix& b) { return a + b; }

PRISM_REMOTE(create_matrix, multiply_matrices, sum_matrices);

// max |a - b| relative to the largest entry of b (at least 1).
inline double max_rel_diff(const Matrix& a, const Matrix& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return 1e300;
  return (a - b).cwiseAbs().maxCoeff() / std::max(1.0, b.cwiseAbs().maxCoeff());
}

// ---- The tutorial's tree ----
//
//   x1   x2   x3   x4      create_matrix: four tasks at once
//     \  /      \  /
//      p1        p2        multiply_matrices: two at once, each as soon as its inputs exist
//        \      /
//          sum             sum_matrices

// The serial run also measures the critical path (one create + one product + the sum), the
// bound on any parallel schedule.
inline Matrix tree_serial(int n, uint64_t seed, double* critical_path_s = nullptr) {
  Timer t;
  Matrix x1 = create_matrix(n, seed + 1);
  const double create_s = t.seconds();
  Matrix x2 = create_matrix(n, seed + 2);
  Matrix x3 = create_matrix(n, seed + 3);
  Matrix x4 = create_matrix(n, seed + 4);
  t.reset();
  Matrix p1 = multiply_matrices(x1, x2);
  const double multiply_s = t.seconds();
  Matrix p2 = multiply_matrices(x3, x4);
  t.reset();
  Matrix z = sum_matrices(p1, p2);
  if (critical_path_s) *critical_path_s = create_s + multiply_s + t.seconds();
  return z;
}

inline Matrix tree_prism(int n, uint64_t seed) {
  // .remote() returns at once with a ref; passing refs on builds the graph.
  auto x1 = prism::task(create_matrix).remote(n, seed + 1);
  auto x2 = prism::task(create_matrix).remote(n, seed + 2);
  auto x3 = prism::task(create_matrix).remote(n, seed + 3);
  auto x4 = prism::task(create_matrix).remote(n, seed + 4);
  auto p1 = prism::task(multiply_matrices).remote(x1, x2);
  auto p2 = prism::task(multiply_matrices).remote(x3, x4);
  return prism::get(prism::task(sum_matrices).remote(p1, p2));
}

// ---- The bigger variant: `iterations` x (create x, create y, multiply) ----
//
// The tutorial keeps all results and calls ray.get(results) at the end: 400 products of
// 1000 x 1000 doubles are 3.2 GB. Here each product is gathered as soon as it is ready (its
// trace recorded, the matrix added to a running sum) and its ref dropped, and at most `window`
// iterations are in flight, so memory stays bounded: the pattern of "ray.wait to limit pending
// tasks".

struct Gathered {
  Matrix sum;                  // the sum of every product
  std::vector<double> traces;  // the trace of product i, by iteration
};

inline Gathered many_serial(int n, int iterations, uint64_t seed,
                            double* critical_path_s = nullptr) {
  Gathered g{Matrix::Zero(n, n), std::vector<double>(static_cast<size_t>(iterations))};
  double longest = 0;
  for (int i = 0; i < iterations; ++i) {
    Timer t;
    Matrix x = create_matrix(n, seed + 2 * i);
    const double create_s = t.seconds();  // x and y could be created at the same time
    Matrix y = create_matrix(n, seed + 2 * i + 1);
    t.reset();
    Matrix z = multiply_matrices(x, y);
    longest = std::max(longest, create_s + t.seconds());
    g.traces[i] = z.trace();
    g.sum += z;
  }
  if (critical_path_s) *critical_path_s = longest;
  return g;
}

inline Gathered many_prism(int n, int iterations, uint64_t seed, size_t window) {
  Gathered g{Matrix::Zero(n, n), std::vector<double>(static_cast<size_t>(iterations))};
  std::vector<prism::ObjectRef<Matrix>> in_flight;  // products not gathered yet
  std::vector<int> index;                           // their iteration numbers
  int next = 0;
  while (next < iterations || !in_flight.empty()) {
    while (next < iterations && in_flight.size() < window) {
      auto x = prism::task(create_matrix).remote(n, seed + 2 * next);
      auto y = prism::task(create_matrix).remote(n, seed + 2 * next + 1);
      in_flight.push_back(prism::task(multiply_matrices).remote(x, y));
      index.push_back(next++);
    }  // x and y go out of scope: each is freed as soon as its product has read it
    auto [ready, pending] = prism::wait(in_flight, /*num_returns=*/1);
    std::vector<int> pending_index;
    for (size_t k = 0; k < in_flight.size(); ++k) {
      if (std::find(ready.begin(), ready.end(), in_flight[k]) == ready.end()) {
        pending_index.push_back(index[k]);
        continue;
      }
      std::shared_ptr<const Matrix> z = prism::get_shared(in_flight[k]);  // no copy
      g.traces[index[k]] = z->trace();
      g.sum += *z;
    }
    in_flight = std::move(pending);  // the gathered products' last refs go here
    index = std::move(pending_index);
  }
  return g;
}

}  // namespace examples::matmul
