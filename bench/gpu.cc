// bench/gpu.cc — the GPU module's hot paths: GPU task dispatch, tensor handover between GPU
// tasks, host<->device copies, and GEMM, each beside a peer measured in the same process.
//
//   build/bench/bench/gpu [--runs=5] [--json=PATH] [--quick] [--gpus=N] [--no_peer]
//
// On a machine without a CUDA device the GPUs are logical (host backend): the rows then measure
// Prism's own overhead on the GPU path (resources, device hooks, events, placement) and memcpy
// copies; the same program on a CUDA machine measures the device. The backend is printed and
// recorded in the JSON.
#include <prism/prism.h>
#include <prism/gpu.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "bench_util.h"

#ifdef PRISM_HAVE_EIGEN3
#include <Eigen/Dense>
#endif

namespace {

using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;

int gpu_noop() { return 1; }
Tensor pass_on(const Tensor& t) { return t; }
std::shared_ptr<const std::vector<float>> pass_on_cpu(const std::shared_ptr<const std::vector<float>>& v) {
  return v;
}
Tensor make_tensor(int64_t elements) { return Tensor::zeros(DType::kFloat32, {elements}); }

// --no_peer: Prism's runs only (e.g. under perf).
bool no_peer(const bench::Flags& flags) {
  return std::find(flags.rest.begin(), flags.rest.end(), "--no_peer") != flags.rest.end();
}

void task_rows(const bench::Flags& flags, bench::Report& report) {
  const int n = flags.quick ? 2'000 : 20'000;
  auto gpu_task = prism::task(gpu_noop).num_gpus(0.25).num_cpus(0);
  auto cpu_task = prism::task(gpu_noop).num_cpus(0.25);
  bench::Row row = bench::Row("gpu tasks async (0.25 GPU each)", "ops/s")
                       .with_peer("same tasks with 0.25 CPU")
                       .with_note(
      std::to_string(n) + " tasks then get all; the peer takes the same resource path without "
                          "a GPU (the difference is the device hook)");
  auto run = [&](auto& caller) {
    return bench::repeat(flags.runs, [&] {
      std::vector<prism::ObjectRef<int>> refs;
      refs.reserve(n);
      const double t0 = bench::now_s();
      for (int i = 0; i < n; ++i) refs.push_back(caller.remote());
      bench::keep(prism::get(refs).size());
      return n / (bench::now_s() - t0);
    });
  };
  if (flags.wants(row.name)) {
    row.prism = run(gpu_task);
    row.peer = run(cpu_task);
    report.add(std::move(row));
  }

  // A run is a few milliseconds (20,000 links): so that a wake-up or a page fault does not
  // decide the row, it takes the median of at least 25 runs of each, interleaved. (Longer
  // chains would measure something else: the submitter runs ahead of the chain, and with
  // hundreds of thousands of links their records leave the caches, which both chains then wait
  // for.)
  const int chain = flags.quick ? 2'000 : 20'000;
  const int chain_runs = flags.quick ? flags.runs : std::max(flags.runs, 25);
  bench::Row hand = bench::Row("gpu tensor handover chain (1 MiB, same GPU)", "tasks/s")
             .with_peer("CPU tasks passing a shared_ptr")
             .goal(0.8)
             .with_note(std::to_string(chain) +
                        " GPU tasks each taking the previous tensor and returning it; " +
                        std::to_string(chain_runs) + " runs interleaved with the peer's");
  if (flags.wants(hand.name)) {
    uint64_t copies = 0;
    double gpu_handed = 0, cpu_handed = 0;  // share of the last run's links run by hand-off
    auto handed_off = [] { return static_cast<double>(prism::stats().tasks.handed_off); };
    auto gpu_chain = [&] {
      const auto before = prism::gpu::copy_stats();
      const double handed_before = handed_off();
      const double t0 = bench::now_s();
      auto ref = prism::task(make_tensor).num_gpus(0.25).num_cpus(0).remote(int64_t{1} << 18);
      for (int i = 0; i < chain; ++i) ref = prism::task(pass_on).num_gpus(0.25).num_cpus(0).remote(ref);
      prism::wait(std::vector<prism::ObjectRef<Tensor>>{ref}, 1);
      const double rate = chain / (bench::now_s() - t0);
      copies = prism::gpu::copy_stats().total() - before.total();
      gpu_handed = (handed_off() - handed_before) / chain;
      return rate;
    };
    auto cpu_chain = [&] {
      const double handed_before = handed_off();
      const double t0 = bench::now_s();
      auto ref = prism::put(std::make_shared<const std::vector<float>>(size_t{1} << 18));
      for (int i = 0; i < chain; ++i) ref = prism::task(pass_on_cpu).remote(ref);
      prism::wait(std::vector<prism::ObjectRef<std::shared_ptr<const std::vector<float>>>>{ref}, 1);
      const double rate = chain / (bench::now_s() - t0);
      cpu_handed = (handed_off() - handed_before) / chain;
      return rate;
    };
    if (no_peer(flags)) {
      hand.prism = bench::repeat(chain_runs, gpu_chain);
    } else {
      std::tie(hand.prism, hand.peer) = bench::repeat_interleaved(chain_runs, gpu_chain, cpu_chain);
    }
    hand.extras.emplace_back("copies in the last run", static_cast<double>(copies));
    // A link whose input was still being made when it was submitted runs next on the thread that
    // makes it (hand-off); one submitted after runs from a queue: the share tells which race
    // the submitting thread and the chain's thread ran.
    hand.extras.emplace_back("links handed off in the last run (%)", 100 * gpu_handed);
    if (!no_peer(flags)) {
      hand.extras.emplace_back("peer's links handed off in its last run (%)", 100 * cpu_handed);
    }
    report.add(std::move(hand));
  }
}

void copy_rows(const bench::Flags& flags, bench::Report& report) {
  const size_t bytes = flags.quick ? (size_t{16} << 20) : (size_t{256} << 20);
  const double gb = static_cast<double>(bytes) / 1e9;
  bench::Row up = bench::Row("tensor upload (Tensor::from_host)", "GB/s").with_peer("memcpy").with_note(std::to_string(bytes >> 20) +
                                                   " MiB from pageable host memory to gpu:0");
  bench::Row down = bench::Row("device tensor read on the host (first get)", "GB/s").with_peer("memcpy").with_note(
      "get of a GPU task's " + std::to_string(bytes >> 20) +
      " MiB result: the host copy (made once, then cached)");
  if (!flags.wants(up.name) && !flags.wants(down.name)) return;  // (no buffers to fault in)
  std::vector<float> host(bytes / sizeof(float), 1.0f);
  std::vector<float> dst(bytes / sizeof(float));
  auto memcpy_rate = [&] {
    return bench::repeat(flags.runs, [&] {
      const double t0 = bench::now_s();
      std::memcpy(dst.data(), host.data(), bytes);
      bench::keep(dst.data());
      return gb / (bench::now_s() - t0);
    });
  };

  if (flags.wants(up.name)) {
    up.prism = bench::repeat(flags.runs, [&] {
      const double t0 = bench::now_s();
      Tensor t = Tensor::from_host(host.data(), host.size(), {static_cast<int64_t>(host.size())},
                                   Device::gpu(0));
      const double s = bench::now_s() - t0;
      bench::keep(t.raw_data());
      return gb / s;
    });
    up.peer = memcpy_rate();
    report.add(std::move(up));
  }

  if (flags.wants(down.name)) {
    down.prism = bench::repeat(flags.runs, [&] {
      auto ref = prism::task(make_tensor)
                     .num_gpus(1)
                     .num_cpus(0)
                     .remote(static_cast<int64_t>(bytes / sizeof(float)));
      prism::wait(std::vector<prism::ObjectRef<Tensor>>{ref}, 1);
      const double t0 = bench::now_s();
      Tensor h = prism::get(ref);
      const double s = bench::now_s() - t0;
      bench::keep(h.raw_data());
      return gb / s;
    });
    down.peer = memcpy_rate();
    report.add(std::move(down));
  }
}

void gemm_rows(const bench::Flags& flags, bench::Report& report) {
  const int n = flags.quick ? 256 : 1024;
  const double flop = 2.0 * n * n * n;
  bench::Row row = bench::Row("gpu::matmul float32 " + std::to_string(n) + "^3", "GFLOP/s")
                       .with_note("inputs already on gpu:0; includes waiting for the result");
#ifdef PRISM_HAVE_EIGEN3
  row.peer_name = "Eigen on one CPU thread";
#endif
  if (!flags.wants(row.name)) return;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(static_cast<size_t>(n) * n, 0.25f);
  const Tensor ta = Tensor::from_host(a.data(), a.size(), {n, n}, Device::gpu(0));
  const Tensor tb = Tensor::from_host(b.data(), b.size(), {n, n}, Device::gpu(0));
  row.prism = bench::repeat(flags.runs, [&] {
    const double t0 = bench::now_s();
    Tensor c = prism::gpu::matmul(ta, tb);
    c.synchronize();
    return flop / (bench::now_s() - t0) / 1e9;
  });
#ifdef PRISM_HAVE_EIGEN3
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const M ea = Eigen::Map<const M>(a.data(), n, n);
  const M eb = Eigen::Map<const M>(b.data(), n, n);
  row.peer = bench::repeat(flags.runs, [&] {
    const double t0 = bench::now_s();
    M c = ea * eb;
    bench::keep(c.data());
    return flop / (bench::now_s() - t0) / 1e9;
  });
#endif
  report.add(std::move(row));
}

}  // namespace

int main(int argc, char** argv) {
  bench::Flags flags(argc, argv);
  const int cpus = static_cast<int>(std::thread::hardware_concurrency());
  const double gpus = prism::gpu::cuda_device_count() > 0 ? -1 : std::stod(flags.get("--gpus", "1"));
  prism::init({.num_cpus = static_cast<double>(cpus), .num_gpus = gpus,
               .log_level = prism::LogLevel::kError});
  bench::Report report("gpu", flags);
  report.fact("backend", prism::gpu::backend_description());
  std::printf("backend: %s\n", prism::gpu::backend_description().c_str());
  report.print_header();
  task_rows(flags, report);
  copy_rows(flags, report);
  gemm_rows(flags, report);
  report.finish();
  prism::shutdown();
  return 0;
}
