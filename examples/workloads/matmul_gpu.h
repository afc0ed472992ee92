// examples/workloads/matmul_gpu.h — matmul.h's workloads as GPU tasks on device tensors.
//
//   prism::init({.num_gpus = 1});                          // no CUDA here: one logical GPU
//   Matrix z = matmul_gpu::tree_gpu(1000, /*seed=*/1);     // x1*x2 + x3*x4, every step on a GPU
//   Gathered g = matmul_gpu::many_gpu(1000, 400, 1, /*window=*/4);
//
// Each matrix is made exactly as matmul::create_matrix makes it (same seed, same random stream,
// Eigen's column-major order), turned row-major and uploaded onto the task's GPU; products are
// gpu::matmul, the sum gpu::add. A tensor stays on its GPU: passed to a task on the same device
// it is handed over without a copy; the driver's get() makes the one host copy. The results
// equal the serial ones up to rounding (a product may add its terms in another order).
//
// Every task asks for kGpuShare of a GPU (four share one device) and reserves the GPU memory of
// the matrix it makes.
//
// Thread-safe: the task functions are pure; the drivers must run where Prism is initialized.
#pragma once

#include <prism/gpu.h>
#include <prism/prism.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cstdint>
#include <vector>

#include "matmul.h"

namespace examples::matmul_gpu {

using matmul::Gathered;
using matmul::Matrix;
using prism::gpu::Tensor;
using RowMajorMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// The GPU share of every task: fractions up to 1 share one device.
inline constexpr double kGpuShare = 0.25;

inline int64_t matrix_bytes(int n) { return static_cast<int64_t>(n) * n * sizeof(double); }

// ---- The remote functions (each runs with a GPU granted: tensors default to that GPU) ----

// matmul::create_matrix(n, seed) as an n x n row-major float64 tensor on the task's GPU.
inline Tensor create_matrix_gpu(int n, uint64_t seed) {
  const RowMajorMatrix m = matmul::create_matrix(n, seed);  // the same values, row by row
  return Tensor::from_host(m.data(), static_cast<size_t>(m.size()), {n, n});
}
// Tensor arguments arrive on the task's GPU: handed over as they are when made on that device.
inline Tensor multiply_matrices_gpu(const Tensor& a, const Tensor& b) {
  return prism::gpu::matmul(a, b);
}
inline Tensor sum_matrices_gpu(const Tensor& a, const Tensor& b) { return prism::gpu::add(a, b); }

PRISM_REMOTE(create_matrix_gpu, multiply_matrices_gpu, sum_matrices_gpu);

// A 2-D float64 tensor (anywhere) as an Eigen matrix on the host.
inline Matrix to_matrix(const Tensor& t) {
  const Tensor h = t.to_host();  // itself when already there
  return Eigen::Map<const RowMajorMatrix>(h.data<double>(), h.dim(0), h.dim(1));
}

// ---- The tutorial's tree (see matmul.h), every step a GPU task ----

inline Matrix tree_gpu(int n, uint64_t seed) {
  const int64_t bytes = matrix_bytes(n);
  auto create = [&](uint64_t s) {
    return prism::task(create_matrix_gpu).num_gpus(kGpuShare).gpu_memory(bytes).remote(n, s);
  };
  auto x1 = create(seed + 1);
  auto x2 = create(seed + 2);
  auto x3 = create(seed + 3);
  auto x4 = create(seed + 4);
  auto p1 = prism::task(multiply_matrices_gpu).num_gpus(kGpuShare).gpu_memory(bytes).remote(x1, x2);
  auto p2 = prism::task(multiply_matrices_gpu).num_gpus(kGpuShare).gpu_memory(bytes).remote(x3, x4);
  auto z = prism::task(sum_matrices_gpu).num_gpus(kGpuShare).gpu_memory(bytes).remote(p1, p2);
  return to_matrix(prism::get(z));  // get() outside tasks: the host copy
}

// ---- The bigger variant (see matmul.h): `iterations` x (create x, create y, multiply) ----
//
// As matmul::many_prism: at most `window` iterations in flight, each product gathered as soon
// as it is ready (its host copy read for the trace and the running sum, then dropped).

inline Gathered many_gpu(int n, int iterations, uint64_t seed, size_t window) {
  const int64_t bytes = matrix_bytes(n);
  Gathered g{Matrix::Zero(n, n), std::vector<double>(static_cast<size_t>(iterations))};
  std::vector<prism::ObjectRef<Tensor>> in_flight;  // products not gathered yet
  std::vector<int> index;                           // their iteration numbers
  int next = 0;
  while (next < iterations || !in_flight.empty()) {
    while (next < iterations && in_flight.size() < window) {
      auto x = prism::task(create_matrix_gpu).num_gpus(kGpuShare).gpu_memory(bytes)
                   .remote(n, seed + 2 * next);
      auto y = prism::task(create_matrix_gpu).num_gpus(kGpuShare).gpu_memory(bytes)
                   .remote(n, seed + 2 * next + 1);
      in_flight.push_back(
          prism::task(multiply_matrices_gpu).num_gpus(kGpuShare).gpu_memory(bytes).remote(x, y));
      index.push_back(next++);
    }
    auto [ready, pending] = prism::wait(in_flight, /*num_returns=*/1);
    std::vector<int> pending_index;
    for (size_t k = 0; k < in_flight.size(); ++k) {
      if (std::find(ready.begin(), ready.end(), in_flight[k]) == ready.end()) {
        pending_index.push_back(index[k]);
        continue;
      }
      const Tensor z = prism::get(in_flight[k]);  // the host copy
      const Eigen::Map<const RowMajorMatrix> m(z.data<double>(), n, n);
      g.traces[index[k]] = m.trace();
      g.sum += m;
    }
    in_flight = std::move(pending);
    index = std::move(pending_index);
  }
  return g;
}

}  // namespace examples::matmul_gpu
