// complex_operation — one task, three implementations, the runtime picking per call.
//
// A tutorial workload evaluates exp(x)·sinh(x) for x = 1, ten million times: first in a plain
// loop, then "vectorised" over an array of ones. Here it is one heterogeneous task
// (prism/variants.h) with three variants over the same input tensor of ones:
//   scalar  a plain C++ loop on a CPU;
//   eigen   Eigen's vectorised array expression on a CPU;
//   thrust  prism::gpu::sum_exp_sinh, Thrust on the task's GPU (a CUDA device, or here a logical
//           GPU whose "device" work runs on the CPU through Thrust's host system).
// Each call goes to the variant expected to finish first (measured run times per input size,
// the work already queued on each processor, and copying the input where the variant runs). The
// first round calibrates (each variant runs 3 times) unless PRISM_PERF_MODEL_DIR holds a model
// from an earlier run; later rounds use what was learned. Every result is checked against
// n·exp(1)·sinh(1).
//
//   ./complex_operation                          # 10 tasks of 10^7 evaluations, 2 rounds
//   PRISM_PERF_MODEL_DIR=/tmp/prism-perf ./complex_operation --rounds=1   # twice: calibrated
//   ./complex_operation --n=200000 --cpus=1 --gpus=1

#include <prism/gpu.h>
#include <prism/prism.h>

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"
#include "common/flags.h"
#include "common/table.h"
#include "common/timer.h"

using prism::gpu::Tensor;

// ---- the three variants: the same arguments, the same result ----

// A plain loop, one element after another.
double scalar_loop(const Tensor& xs) {
  const double* x = xs.data<double>();
  double s = 0;
  for (int64_t i = 0; i < xs.numel(); ++i) s += std::exp(x[i]) * std::sinh(x[i]);
  return s;
}

// Eigen's array expressions (SIMD exp), over the tensor's host memory without a copy.
double eigen_vectorised(const Tensor& xs) {
  const Eigen::Map<const Eigen::ArrayXd> a(xs.data<double>(), static_cast<Eigen::Index>(xs.numel()));
  return (a.exp() * a.sinh()).sum();
}

// Thrust on the task's GPU (the tensor arrives on it).
double thrust_on_gpu(const Tensor& xs) { return prism::gpu::sum_exp_sinh(xs); }

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const int64_t n = flags.get_int("n", 10'000'000, "evaluations per task (elements of the input)");
  const int tasks = static_cast<int>(flags.get_int("tasks", 10, "tasks per round"));
  const int rounds = static_cast<int>(flags.get_int("rounds", 2, "rounds of `tasks` calls"));
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const bool real_gpu = prism::gpu::cuda_device_count() > 0;
  // A logical GPU's work runs on a core of its own: leave it one.
  const int cpus = static_cast<int>(flags.get_int(
      "cpus", real_gpu ? hw : std::max(1, hw - 1), "CPU slots (default: the cores a GPU leaves)"));
  const int gpus = static_cast<int>(
      flags.get_int("gpus", 1, "logical GPUs to declare when no CUDA device is found"));
  if (!flags.ok()) return 2;
  if (n < 1 || tasks < 1 || rounds < 1 || cpus < 1 || gpus < 0) {
    std::fprintf(stderr, "complex_operation: --n, --tasks, --rounds and --cpus must be >= 1\n");
    return 2;
  }
  examples::Checker check("complex_operation");
  const double want = static_cast<double>(n) * std::exp(1.0) * std::sinh(1.0);
  auto close = [&](double got) { return std::fabs(got - want) <= 1e-9 * want; };

  const std::vector<double> ones(static_cast<size_t>(n), 1.0);
  const Tensor input = Tensor::from_vector(ones, {n}, prism::gpu::Device::host());

  // The tutorial's baselines: each implementation alone, serially, for every task.
  const double scalar_s = examples::time_seconds([&] {
    for (int t = 0; t < tasks; ++t) check.expect(close(scalar_loop(input)), "scalar loop result");
  });
  const double eigen_s = examples::time_seconds([&] {
    for (int t = 0; t < tasks; ++t) check.expect(close(eigen_vectorised(input)), "eigen result");
  });

  prism::init({.num_cpus = static_cast<double>(cpus), .num_gpus = real_gpu ? -1.0 : gpus});
  auto op = prism::variants(prism::cpu_variant("scalar", scalar_loop),
                            prism::cpu_variant("eigen", eigen_vectorised),
                            prism::gpu_variant("thrust", thrust_on_gpu))
                .name("complex_operation");
  const prism::ObjectRef<Tensor> xs = prism::put(input);

  examples::Table table({"run", "tasks", "seconds", "vs serial loop", "variants that ran"});
  table.add({"serial, scalar loop", std::to_string(tasks), examples::fixed(scalar_s), "1.00x", ""});
  table.add({"serial, eigen", std::to_string(tasks), examples::fixed(eigen_s),
             examples::times(scalar_s / eigen_s), ""});
  std::vector<std::map<std::string, int>> ran(static_cast<size_t>(rounds));
  for (int r = 0; r < rounds; ++r) {
    std::vector<prism::ObjectRef<double>> refs;
    std::vector<double> results;
    const double s = examples::time_seconds([&] {
      for (int t = 0; t < tasks; ++t) refs.push_back(prism::task(op).remote(xs));
      results = prism::get(refs);
    });
    std::string which;
    for (size_t t = 0; t < refs.size(); ++t) {
      const std::string v = prism::variant_of(refs[t]);
      ++ran[static_cast<size_t>(r)][v];
      check.expect(close(results[t]), "round " + std::to_string(r + 1) + ", task " +
                                          std::to_string(t) + " (" + v + "): " +
                                          std::to_string(results[t]) + " instead of " +
                                          std::to_string(want));
    }
    for (const auto& [v, count] : ran[static_cast<size_t>(r)]) {
      which += (which.empty() ? "" : ", ") + std::to_string(count) + " " + v;
    }
    table.add({"prism round " + std::to_string(r + 1) + " (auto)", std::to_string(tasks),
               examples::fixed(s), examples::times(scalar_s / s), which});
  }
  // Every variant computes the same thing: force each once and compare.
  for (const char* v : {"scalar", "eigen", "thrust"}) {
    const double got = prism::get(prism::task(op).variant(v).remote(xs));
    check.expect(close(got), std::string("forced variant ") + v + ": " + std::to_string(got));
  }
  const prism::Stats stats = prism::stats();
  prism::shutdown();

  std::printf("complex_operation: %lld evaluations of exp(x)*sinh(x) per task, %d CPU slot(s), "
              "%s\n",
              static_cast<long long>(n), cpus,
              real_gpu ? "CUDA GPUs" : (std::to_string(gpus) + " logical GPU(s)").c_str());
  table.print();
  std::printf("%-10s %-6s %6s %12s %10s\n", "variant", "where", "runs", "mean ms", "fallbacks");
  for (const prism::VariantStats& v : stats.variants) {
    std::printf("%-10s %-6s %6llu %12.2f %10llu\n", v.variant.c_str(), v.processor.c_str(),
                static_cast<unsigned long long>(v.runs),
                v.runs > 0 ? 1e3 * v.seconds / static_cast<double>(v.runs) : 0.0,
                static_cast<unsigned long long>(v.fallbacks));
  }
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("complex_operation", e);
}
