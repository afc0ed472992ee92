// matmul_tree — a task graph of matrix products, and a long stream of them.
//
// 1. The tutorial's tree: four 1000 x 1000 random matrices made by tasks, two products in
//    parallel, then their sum (see the drawing in workloads/matmul.h).
// 2. The bigger variant: 400 iterations of (make x, make y, multiply x*y), every product
//    gathered, with at most a few iterations in flight so that memory stays bounded.
//
// Task arguments that are refs reach the task as const Matrix&: the 8 MB matrices are never
// copied between tasks. Both workloads are checked against a serial computation with the same
// seeds (max abs difference below 1e-9, relative to the largest entry).
//
// --gpu runs both once more as GPU tasks on float64 tensors (workloads/matmul_gpu.h): on the
// CUDA devices when there are any, else on --gpus logical GPUs of the host backend. Tensors stay
// on their GPU between tasks; the copy counters show the uploads, the handovers without a copy
// and the host copies the driver reads.
//
//   ./matmul_tree                            # n = 1000, 400 iterations
//   ./matmul_tree --n=200 --iterations=20 --cpus=2
//   ./matmul_tree --n=200 --iterations=20 --gpu

#include <prism/prism.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "common/check.h"
#include "common/cluster_report.h"
#include "common/flags.h"
#include "common/gpu_flags.h"
#include "common/table.h"
#include "common/timer.h"
#include "workloads/matmul.h"
#include "workloads/matmul_gpu.h"

namespace matmul = examples::matmul;
namespace matmul_gpu = examples::matmul_gpu;

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const int n = static_cast<int>(flags.get_int("n", 1000, "matrix size n x n"));
  const int iterations = static_cast<int>(flags.get_int("iterations", 400, "bigger variant"));
  const int cpus = flags.cpus();
  const examples::GpuFlags gpu = examples::gpu_flags(flags);
  if (!flags.ok()) return 2;
  const uint64_t kSeed = 1;
  const double kTolerance = 1e-9;
  examples::Checker check("matmul_tree");

  double tree_critical = 0, many_critical = 0;
  matmul::Matrix tree_serial;
  const double tree_serial_s =
      examples::time_seconds([&] { tree_serial = matmul::tree_serial(n, kSeed, &tree_critical); });
  matmul::Gathered many_serial;
  const double many_serial_s = examples::time_seconds(
      [&] { many_serial = matmul::many_serial(n, iterations, kSeed, &many_critical); });

  prism::init({.num_cpus = static_cast<double>(cpus), .num_gpus = gpu.init_num_gpus()});
  matmul::Matrix tree;
  const double tree_s = examples::time_seconds([&] { tree = matmul::tree_prism(n, kSeed); });
  matmul::Gathered many;
  const double many_s = examples::time_seconds(
      [&] { many = matmul::many_prism(n, iterations, kSeed, /*window=*/2 * cpus); });

  // The same two workloads as GPU tasks, with the copies each one made.
  matmul::Matrix tree_gpu;
  matmul::Gathered many_gpu;
  double tree_gpu_s = 0, many_gpu_s = 0;
  prism::gpu::CopyStats tree_copies, many_copies;
  if (gpu.enabled) {
    examples::print_gpu_backend(gpu);
    prism::gpu::CopyStats before = prism::gpu::copy_stats();
    tree_gpu_s = examples::time_seconds([&] { tree_gpu = matmul_gpu::tree_gpu(n, kSeed); });
    tree_copies = examples::copies_since(before);
    before = prism::gpu::copy_stats();
    many_gpu_s = examples::time_seconds(
        [&] { many_gpu = matmul_gpu::many_gpu(n, iterations, kSeed, /*window=*/2 * cpus); });
    many_copies = examples::copies_since(before);
  }
  const std::string moved = examples::cluster_traffic();  // empty on one node
  // On a cluster, tasks run on every node: this process's copies are only its share.
  const bool one_process = prism::node_count() <= 1;
  prism::shutdown();
  if (!moved.empty()) std::printf("%s\n", moved.c_str());

  // Ideal: no schedule beats the critical path, nor the total work spread over the CPUs.
  auto ideal = [&](double serial_s, double critical_s) {
    return serial_s / std::max(serial_s / cpus, critical_s);
  };
  const double tree_diff = matmul::max_rel_diff(tree, tree_serial);
  const double many_diff = matmul::max_rel_diff(many.sum, many_serial.sum);
  double trace_diff = 0;
  for (int i = 0; i < iterations; ++i) {
    trace_diff = std::max(trace_diff, std::abs(many.traces[i] - many_serial.traces[i]) /
                                          std::max(1.0, std::abs(many_serial.traces[i])));
  }

  examples::Table table({"workload (" + std::to_string(cpus) + " CPUs)", "serial s", "prism s",
                         "speed-up", "ideal", "max rel diff"});
  table.add({"tree: 4 x create, 2 x multiply, sum", examples::fixed(tree_serial_s),
             examples::fixed(tree_s), examples::times(tree_serial_s / tree_s),
             examples::times(ideal(tree_serial_s, tree_critical)), examples::fixed(tree_diff, 12)});
  table.add({std::to_string(iterations) + " x (create x, create y, x*y)",
             examples::fixed(many_serial_s), examples::fixed(many_s),
             examples::times(many_serial_s / many_s),
             examples::times(ideal(many_serial_s, many_critical)),
             examples::fixed(std::max(many_diff, trace_diff), 12)});
  double tree_gpu_diff = 0, many_gpu_diff = 0;
  if (gpu.enabled) {
    tree_gpu_diff = matmul::max_rel_diff(tree_gpu, tree_serial);
    many_gpu_diff = matmul::max_rel_diff(many_gpu.sum, many_serial.sum);
    for (int i = 0; i < iterations; ++i) {
      many_gpu_diff =
          std::max(many_gpu_diff, std::abs(many_gpu.traces[i] - many_serial.traces[i]) /
                                      std::max(1.0, std::abs(many_serial.traces[i])));
    }
    const std::string on = " on GPU tasks (" +
                           std::string(prism::gpu::backend_name(prism::gpu::backend())) + ")";
    table.add({"tree" + on, examples::fixed(tree_serial_s), examples::fixed(tree_gpu_s),
               examples::times(tree_serial_s / tree_gpu_s),
               examples::times(ideal(tree_serial_s, tree_critical)),
               examples::fixed(tree_gpu_diff, 12)});
    table.add({std::to_string(iterations) + " products" + on, examples::fixed(many_serial_s),
               examples::fixed(many_gpu_s), examples::times(many_serial_s / many_gpu_s),
               examples::times(ideal(many_serial_s, many_critical)),
               examples::fixed(many_gpu_diff, 12)});
  }
  table.print();
  std::printf("products: %s\n", examples::gemm::backend().c_str());
  examples::print_speedup("matmul_tree (tree)", tree_serial_s, tree_s);
  examples::print_speedup("matmul_tree (" + std::to_string(iterations) + " products)",
                          many_serial_s, many_s);
  if (gpu.enabled) {
    examples::print_speedup("matmul_tree (tree, GPU tasks)", tree_serial_s, tree_gpu_s);
    examples::print_speedup("matmul_tree (" + std::to_string(iterations) + " products, GPU tasks)",
                            many_serial_s, many_gpu_s);
    std::printf("GPU tree: max rel diff %.3g; copies%s: %s\n", tree_gpu_diff,
                one_process ? "" : " made by the driver",
                examples::describe(tree_copies).c_str());
    std::printf("  (one GPU: 4 uploads, no copy for the handovers create -> multiply -> sum, "
                "1 download)\n");
    std::printf("GPU products: max rel diff %.3g; copies%s: %s\n", many_gpu_diff,
                one_process ? "" : " made by the driver",
                examples::describe(many_copies).c_str());
    std::printf("  (one GPU: %d uploads, no copy for the handovers, %d downloads)\n",
                2 * iterations, iterations);
  }

  check.expect(tree_diff < kTolerance, "the tree's sum differs from the serial one");
  check.expect(many_diff < kTolerance, "the sum of the products differs from the serial one");
  check.expect(trace_diff < kTolerance, "a product's trace differs from the serial one");
  if (gpu.enabled) {
    check.expect(tree_gpu_diff <= kTolerance, "the GPU tree's sum differs from the serial one");
    check.expect(many_gpu_diff <= kTolerance,
                 "the GPU products (sum or a trace) differ from the serial ones");
    // With one GPU every handover stays on it: only the uploads and the driver's reads copy.
    if (gpu.gpus_in_use() == 1 && one_process) {
      check.expect(tree_copies.host_to_device == 4 && tree_copies.device_to_host == 1 &&
                       tree_copies.device_to_device == 0,
                   "the GPU tree made other copies than 4 uploads and 1 download");
      check.expect(many_copies.host_to_device == static_cast<uint64_t>(2 * iterations) &&
                       many_copies.device_to_host == static_cast<uint64_t>(iterations) &&
                       many_copies.device_to_device == 0,
                   "the GPU products made other copies than 2 uploads and 1 download each");
    }
  }
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("matmul_tree", e);
}
