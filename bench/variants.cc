// bench/variants.cc — heterogeneous tasks (prism/variants.h): a mixed workload on a machine of
// two processors, one CPU slot and one GPU, each call placed by the learned cost model, beside
// all-CPU, all-GPU and the optimum schedule computed offline from the same run's measured
// per-variant times.
//
//   build/bench/bench/variants [--runs=5] [--json=PATH] [--quick] [--cluster]
//
// --cluster: the same two processors in two processes of a loopback cluster: this process is the
// driver with the CPU slot (and no GPU), a node it starts has the GPU (and no CPU). The sets are
// registered (PRISM_VARIANTS), so the driver's planner places each call on its CPU or on the
// node's GPU; the inputs are put on the driver and pulled by the node once (cached there).
//
// The workload: `pairs` calls of two functions, each with a CPU and a GPU variant that are
// genuinely cheaper on one processor:
//   gemm      C = A·B of two n x n float64 matrices: a plain i-k-j loop on the CPU, against
//             prism::gpu::matmul on the GPU (cuBLAS; Eigen's blocked GEMM on the host backend);
//   exp_sinh  sum of exp(x)·sinh(x) over m elements: on the CPU through the identity
//             exp(x)·sinh(x) = (exp(2x) - 1) / 2 with Eigen's vectorised exp, against
//             prism::gpu::sum_exp_sinh (Thrust) on the GPU.
// The inputs are tensors already on the GPU and on the host (the GPU variant reads the GPU
// copy, the CPU variant the host one), so no call pays a copy and the measured variant times are
// the whole cost. On the host backend the "GPU" is a logical device whose kernels run on a core:
// one CPU slot and one logical GPU are two processors of one core each on this 2-core machine.
//
// Rows: Prism's makespan after calibration (the first round calibrates and is discarded), the
// same calls forced to the CPU variants and to the GPU variants, and the optimum: the best split
// of the calls between the two processors given each variant's median time measured alone in
// this run (exact, by dynamic programming over the calls at 10 µs resolution). Target: Prism
// within 15% of the optimum.
#include <prism/gpu.h>
#include <prism/prism.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "bench_nodes.h"
#include "bench_util.h"

namespace {

using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;

// ---- the variants ----

Tensor gemm_cpu(const Tensor& a, const Tensor& b) {
  const int64_t n = a.dim(0);
  Tensor c = Tensor::zeros(DType::kFloat64, {n, n}, Device::host());
  const double* pa = a.data<double>();
  const double* pb = b.data<double>();
  double* pc = c.data<double>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < n; ++k) {
      const double x = pa[i * n + k];
      for (int64_t j = 0; j < n; ++j) pc[i * n + j] += x * pb[k * n + j];
    }
  }
  return c;
}
Tensor gemm_gpu(const Tensor& a, const Tensor& b) { return prism::gpu::matmul(a, b); }

double exp_sinh_cpu(const Tensor& x) {
  const Eigen::Map<const Eigen::ArrayXd> a(x.data<double>(), static_cast<Eigen::Index>(x.numel()));
  return 0.5 * ((2.0 * a).exp() - 1.0).sum();
}
double exp_sinh_gpu(const Tensor& x) { return prism::gpu::sum_exp_sinh(x); }

// Registered: in --cluster mode their calls may run on the node.
const auto kGemm = prism::variants(gemm_cpu, gemm_gpu).name("gemm");
PRISM_VARIANTS(kGemm);
const auto kExpSinh = prism::variants(exp_sinh_cpu, exp_sinh_gpu).name("exp_sinh");
PRISM_VARIANTS(kExpSinh);

// The global runtime (cluster mode) with prism::Runtime's calls.
struct Global {
  template <typename S>
  auto task(S set) {
    return prism::task(std::move(set));
  }
  template <typename T>
  auto put(T&& v) {
    return prism::put(std::forward<T>(v));
  }
  prism::Stats stats() { return prism::stats(); }
};


// Results are checked, not only timed.
double trace_of(const Tensor& c) {
  const Tensor h = c.to_host();
  const double* p = h.data<double>();
  double t = 0;
  for (int64_t i = 0; i < c.dim(0); ++i) t += p[i * c.dim(0) + i];
  return t;
}

// ---- the offline optimum ----

// The least makespan of running calls with times (cpu[i], gpu[i]) on one CPU and one GPU, each
// call on either: exact up to `step` seconds (dynamic programming over the CPU's load).
double optimum_makespan(const std::vector<double>& cpu, const std::vector<double>& gpu,
                        double step) {
  double cpu_total = 0;
  for (double c : cpu) cpu_total += c;
  const size_t cells = static_cast<size_t>(cpu_total / step) + cpu.size() + 2;
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> best(cells, inf);  // best[l]: least GPU load with CPU load l * step
  best[0] = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const auto d = static_cast<size_t>(std::lround(cpu[i] / step));
    std::vector<double> next(cells, inf);
    for (size_t l = 0; l < cells; ++l) {
      if (best[l] == inf) continue;
      next[l] = std::min(next[l], best[l] + gpu[i]);                    // on the GPU
      if (l + d < cells) next[l + d] = std::min(next[l + d], best[l]);  // on the CPU
    }
    best.swap(next);
  }
  double m = inf;
  for (size_t l = 0; l < cells; ++l) {
    if (best[l] < inf) m = std::min(m, std::max(static_cast<double>(l) * step, best[l]));
  }
  return m;
}

// The rows, on `rt` (a prism::Runtime, or Global); `where` names the machine in the rows.
template <typename Rt>
int measure(Rt& rt, const bench::Flags& flags, bench::Report& report, const std::string& where) {
  const int pairs = std::stoi(flags.get("--pairs", flags.quick ? "4" : "12"));
  const int64_t n = std::stoll(flags.get("--n", flags.quick ? "96" : "384"));
  const int64_t m = std::stoll(flags.get("--m", flags.quick ? "200000" : "4000000"));
  std::printf("backend: %s; %s; %d gemm (%lld^2) + %d exp_sinh (%lld) calls\n",
              prism::gpu::backend_description().c_str(), where.c_str(), pairs,
              static_cast<long long>(n), pairs, static_cast<long long>(m));
  report.print_header();

  // Inputs on the host and (cached copies) on the GPU: whichever variant runs reads its own.
  std::vector<double> av(static_cast<size_t>(n * n)), bv(static_cast<size_t>(n * n));
  for (size_t i = 0; i < av.size(); ++i) {
    av[i] = static_cast<double>(i % 7) * 0.25;
    bv[i] = static_cast<double>(i % 5) * 0.5;
  }
  const Tensor a = Tensor::from_vector(av, {n, n}, Device::host());
  const Tensor b = Tensor::from_vector(bv, {n, n}, Device::host());
  const Tensor x = Tensor::from_vector(std::vector<double>(static_cast<size_t>(m), 0.5), {m},
                                       Device::host());
  for (const Tensor& t : {a, b, x}) t.to(Device::gpu(0)).synchronize();  // the GPU copies, cached
  const double want_trace = trace_of(gemm_cpu(a, b));
  const double want_sum = static_cast<double>(m) * std::exp(0.5) * std::sinh(0.5);

  const auto& gemm = kGemm;
  const auto& exp_sinh = kExpSinh;
  const auto ra = rt.put(a), rb = rt.put(b), rx = rt.put(x);
  int wrong = 0;
  // One round: every call submitted at once (interleaved), then all results read. "" : the
  // planner decides, else that variant for every call.
  auto round = [&](const char* forced) {
    const double t0 = bench::now_s();
    std::vector<prism::ObjectRef<Tensor>> g;
    std::vector<prism::ObjectRef<double>> e;
    for (int i = 0; i < pairs; ++i) {
      if (*forced != '\0') {
        g.push_back(rt.task(gemm).variant(forced).remote(ra, rb));
        e.push_back(rt.task(exp_sinh).variant(forced).remote(rx));
      } else {
        g.push_back(rt.task(gemm).remote(ra, rb));
        e.push_back(rt.task(exp_sinh).remote(rx));
      }
    }
    for (auto& r : e) {
      if (std::fabs(prism::get(r) - want_sum) > 1e-9 * want_sum) ++wrong;
    }
    std::vector<std::shared_ptr<const Tensor>> cs;
    for (auto& r : g) cs.push_back(prism::get_shared(r));
    const double t = bench::now_s() - t0;
    for (const auto& c : cs) {
      if (std::fabs(trace_of(*c) - want_trace) > 1e-9 * std::fabs(want_trace)) ++wrong;
    }
    return t;
  };

  // Each variant alone, on this thread (the GPU ones on the GPU copies): medians of 5.
  auto alone = [&](auto&& f) {
    std::vector<double> v;
    for (int i = 0; i < 5; ++i) {
      const double t0 = bench::now_s();
      f();
      v.push_back(bench::now_s() - t0);
    }
    return bench::stats_of(v).median;
  };
  const Tensor ga = a.to(Device::gpu(0)), gb = b.to(Device::gpu(0)), gx = x.to(Device::gpu(0));
  const double t_gemm_cpu = alone([&] { bench::keep(gemm_cpu(a, b).raw_data()); });
  // Across nodes a GPU call's cost is the whole call: sent, its arguments decoded there (the
  // node keeps the pulled bytes; each call builds its tensors from them), run, and its result
  // brought back. Measured that way, one call at a time, so the optimum below is one this
  // cluster could reach.
  const bool across = where != "1 CPU slot + 1 GPU";
  const double t_gemm_gpu =
      across ? alone([&] { bench::keep(prism::get_shared(rt.task(gemm).variant("gpu").remote(ra, rb)).get()); })
             : alone([&] { gemm_gpu(ga, gb).synchronize(); });
  const double t_es_cpu = alone([&] { bench::keep(exp_sinh_cpu(x)); });
  const double t_es_gpu =
      across ? alone([&] { bench::keep(prism::get(rt.task(exp_sinh).variant("gpu").remote(rx))); })
             : alone([&] { bench::keep(exp_sinh_gpu(gx)); });
  std::printf("variant times alone%s: gemm cpu %.2f ms, gpu %.2f ms; exp_sinh cpu %.2f ms, gpu "
              "%.2f ms\n",
              across ? " (gpu: a whole call to the node)" : "", 1e3 * t_gemm_cpu, 1e3 * t_gemm_gpu, 1e3 * t_es_cpu, 1e3 * t_es_gpu);
  std::vector<double> cpu_times, gpu_times;
  for (int i = 0; i < pairs; ++i) {
    cpu_times.push_back(t_gemm_cpu);
    gpu_times.push_back(t_gemm_gpu);
    cpu_times.push_back(t_es_cpu);
    gpu_times.push_back(t_es_gpu);
  }
  const double optimum = optimum_makespan(cpu_times, gpu_times, 1e-5);

  // Calibration round (discarded), then the measured rounds, interleaved with the forced ones
  // so that the machine's drift biases none of them.
  (void)round("");
  std::vector<double> auto_s, cpu_s, gpu_s;
  // The planner's split of the measured automatic rounds: runs per function/variant.
  std::map<std::string, int64_t> split_runs;
  auto count_runs = [&](int64_t sign) {
    for (const auto& v : rt.stats().variants) {
      split_runs[v.function + "/" + v.variant] += sign * static_cast<int64_t>(v.runs);
    }
  };
  for (int r = 0; r < flags.runs; ++r) {
    count_runs(-1);
    auto_s.push_back(round(""));
    count_runs(+1);
    cpu_s.push_back(round("cpu"));
    gpu_s.push_back(round("gpu"));
  }
  std::string split;
  for (const auto& [name, n_runs] : split_runs) {
    split += (split.empty() ? "" : ", ") + name + " " + std::to_string(n_runs);
  }

  std::printf("the planner's split over the %d measured automatic rounds: %s\n", flags.runs,
              split.c_str());
  // What each run took where it ran (the planner's measurements: on a node, the served call from
  // its arguments' decoding to its result's encoding), over every round.
  for (const auto& v : rt.stats().variants) {
    if (v.runs == 0) continue;
    std::printf("  %s/%s on %s: %llu runs, mean %.2f ms\n", v.function.c_str(), v.variant.c_str(),
                v.node.c_str(), static_cast<unsigned long long>(v.runs),
                1e3 * v.seconds / static_cast<double>(v.runs));
  }
  const std::string suffix = across ? " (" + where + ")" : "";
  bench::Row row = bench::Row("mixed gemm + exp_sinh makespan, placed by the cost model" + suffix,
                              "s")
                       .with_peer("offline optimum")
                       .lower_is_better()
                       .at_most(1.15 * optimum, "<= 1.15x the optimum")
                       .with_note("the planner's split over the measured rounds: " + split);
  row.prism = bench::stats_of(auto_s);
  row.peer = bench::stats_of({optimum});
  report.add(std::move(row));
  bench::Row all_cpu =
      bench::Row("same calls, all on the CPU variant" + suffix, "s").lower_is_better();
  all_cpu.prism = bench::stats_of(cpu_s);
  report.add(std::move(all_cpu));
  bench::Row all_gpu =
      bench::Row("same calls, all on the GPU variant" + suffix, "s").lower_is_better();
  all_gpu.prism = bench::stats_of(gpu_s);
  report.add(std::move(all_gpu));
  if (wrong > 0) std::fprintf(stderr, "variants: FAILED: %d wrong results\n", wrong);
  return wrong;
}

}  // namespace

int main(int argc, char** argv) {
  prism::serve();  // a node of --cluster: serves the driver, then exits
  bench::Flags flags(argc, argv);
  const bool cluster = flags.get("--cluster", "") == "1" ||
                       std::find(flags.rest.begin(), flags.rest.end(), "--cluster") !=
                           flags.rest.end();
  const bool real_gpu = prism::gpu::cuda_device_count() > 0;
  bench::Report report(cluster ? "variants_cluster" : "variants", flags);
  report.fact("backend", prism::gpu::backend_description());
  int wrong = 0;
  if (!cluster) {
    report.fact("machine", "1 CPU slot + 1 GPU");
    prism::Runtime rt({.num_cpus = 1, .num_gpus = real_gpu ? -1.0 : 1.0,
                       .log_level = prism::LogLevel::kError});
    wrong = measure(rt, flags, report, "1 CPU slot + 1 GPU");
    rt.shutdown();
  } else {
    const std::string where = "driver's CPU slot + a node's GPU";
    report.fact("machine", where + " (two processes, loopback)");
    setenv("UCX_NET_DEVICES", "lo", 0);
    const std::string dir = "/tmp/prism-bench-variants-" + std::to_string(getpid());
    setenv("PRISM_JOB_DIR", dir.c_str(), 1);
    prism::init({.num_cpus = 1, .num_gpus = 0, .listen = "127.0.0.1:0",
                 .log_level = prism::LogLevel::kError});
    // The node: no CPU, one (logical) GPU.
    const pid_t node = bench::spawn_node(dir, {"PRISM_NUM_CPUS=0", "PRISM_NUM_GPUS=1"});
    if (node <= 0) {
      std::fprintf(stderr, "variants: cannot start the node\n");
      wrong = 1;
    } else {
      prism::wait_for_nodes(1, std::chrono::seconds(60));
      Global g;
      wrong = measure(g, flags, report, where);
    }
    prism::shutdown();  // (the node exits when the driver's job ends)
    bench::reap({node});
  }
  report.finish();
  return wrong > 0 ? 1 : 0;
}
