// bench/cluster — cluster mode on one machine (loopback): a driver and node processes of this
// same executable (started here by address, as the tests do), UCX pinned to loopback.
//
//   build/bench/bench/cluster [--runs=5] [--json=PATH] [--quick] [--nodes=2]
//                             [--perftest_lat_us=A,B,..] [--perftest_bw_1m=A,..]
//                             [--perftest_bw_64m=A,..]
//
// Rows (the driver has no CPU, so every task and actor runs on a node):
//   - remote empty tasks async (driver + 2 nodes), beside the same tasks embedded (one
//     process, 1 CPU) and Ray's published multi-client figure;
//   - the sync round trip of one remote task, p50 (p99 as an extra), on one node;
//   - remote actor calls async (sync p50 as an extra);
//   - transfers: get here of a 1 MiB and a 64 MiB result that stayed on a node, a 64 MiB put
//     here read by a task on a node, and a 64 MiB result of one node read by a task on the
//     other (pulled node to node; PRISM_DIRECT_PULLS=0 here relays it through this driver), in
//     GB/s;
//   - GPU tensors (the nodes have one logical GPU each: the host backend, so device copies are
//     memcpy): get here of a 64 MiB tensor made on a node's GPU, and the same tensor read by a
//     GPU task on the other node, in GB/s. Staged through host memory: the node keeps the
//     tensor on its GPU and downloads it for each pull, in parts sent as they are written; the
//     reader's upload follows the transfer. And a chain of 8 GPU tasks on one node (ms).
//   - the tutorial's matmul tree as GPU tasks (examples/workloads/matmul_gpu.h, n = 1000 on
//     logical GPUs: Eigen's products on the CPU) on the two nodes, beside the same tree in one
//     process with one logical GPU, same run (s).
// The peers of the latency and transfer rows are ucx_perftest's figures on the same machine,
// transports (tcp on lo: what Prism's endpoints, connected by address with peer error handling,
// get from UCX 1.13), error handling and wait mode (sleeping: Prism's progress thread sleeps in
// epoll when idle), which bench/run_all.sh measures just before and passes in (--perftest_*: one
// value per run; the latency is ucp_am_lat's one-way p50, doubled here into a round trip).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <prism/gpu.h>
#include <prism/prism.h>

#include "bench_nodes.h"
#include "bench_util.h"
#ifdef PRISM_HAVE_EIGEN3
#include "../examples/workloads/matmul_gpu.h"
#endif

namespace {

using namespace std::chrono_literals;

int noop(int x) { return x; }
std::vector<uint8_t> make_bytes(uint64_t n) { return std::vector<uint8_t>(n, 7); }
uint64_t size_of(const std::vector<uint8_t>& v) { return v.size(); }
PRISM_REMOTE(noop, make_bytes, size_of);

// GPU tasks: a tensor of n float32 ones made on the task's GPU, and the sum of a tensor read on
// the task's GPU.
prism::gpu::Tensor make_tensor(int64_t n) {
  const prism::gpu::Tensor t = prism::gpu::Tensor::zeros(prism::gpu::DType::kFloat32, {n});
  return t;
}
int64_t tensor_elements(const prism::gpu::Tensor& t) {
  if (t.device().is_host()) std::fprintf(stderr, "cluster: the tensor arrived on the host\n");
  return t.numel();
}
// GPU task: t + t on the task's GPU (a link of a chain).
prism::gpu::Tensor doubled(const prism::gpu::Tensor& t) { return prism::gpu::add(t, t); }
PRISM_REMOTE(make_tensor, tensor_elements, doubled);

struct Echo {
  int echo(int x) { return x; }
};
PRISM_ACTOR(Echo, &Echo::echo);

constexpr uint64_t kMiB = 1 << 20;

double p50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double p99(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, v.size() * 99 / 100)];
}

// "1.5,2,3" -> {1.5, 2, 3}, each times `scale`.
std::vector<double> values(const std::string& list, double scale) {
  std::vector<double> out;
  size_t pos = 0;
  while (pos < list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    const std::string item = list.substr(pos, end - pos);
    if (!item.empty()) out.push_back(std::atof(item.c_str()) * scale);
    pos = end + 1;
  }
  return out;
}

double async_tasks(int n, bool remote) {
  auto t = prism::task(noop);
  if (remote) t.resource("node", 0.0001);
  std::vector<prism::ObjectRef<int>> refs;
  refs.reserve(static_cast<size_t>(n));
  const double t0 = bench::now_s();
  for (int i = 0; i < n; ++i) refs.push_back(t.remote(i));
  for (auto& r : refs) prism::get(r, 120s);
  return n / (bench::now_s() - t0);
}

std::vector<double> round_trips(int n) {
  auto t = prism::task(noop).resource("first", 0.0001);
  std::vector<double> rt;
  rt.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const double t0 = bench::now_s();
    prism::get(t.remote(i), 60s);
    rt.push_back(bench::now_s() - t0);
  }
  return rt;
}

// GB/s of get here of an `n`-byte result that stayed on a node (the task is done first).
double get_rate(uint64_t n) {
  auto ref = prism::task(make_bytes).resource("first", 0.0001).remote(n);
  prism::wait(std::vector{ref}, 1, 60s);
  const double t0 = bench::now_s();
  const auto& v = *prism::get_shared(ref, 60s);
  const double s = bench::now_s() - t0;
  bench::keep(v.data());
  return static_cast<double>(n) / s / 1e9;
}

// GB/s of a task on a node reading an `n`-byte value put here (its pull, the task, the answer).
double put_read_rate(uint64_t n) {
  auto ref = prism::put(std::vector<uint8_t>(n, 3));
  const double t0 = bench::now_s();
  const uint64_t got = prism::get(prism::task(size_of).resource("first", 0.0001).remote(ref), 60s);
  const double s = bench::now_s() - t0;
  if (got != n) std::fprintf(stderr, "cluster: read %llu bytes of %llu\n",
                             static_cast<unsigned long long>(got), static_cast<unsigned long long>(n));
  return static_cast<double>(n) / s / 1e9;
}

// GB/s of a task on the second node reading an `n`-byte result made on the first (done first):
// pulled from the first node directly (the driver names it), the task, the answer.
double node_to_node_rate(uint64_t n) {
  auto ref = prism::task(make_bytes).resource("first", 0.0001).remote(n);
  prism::wait(std::vector{ref}, 1, 60s);
  const double t0 = bench::now_s();
  const uint64_t got =
      prism::get(prism::task(size_of).resource("second", 0.0001).remote(ref), 60s);
  const double s = bench::now_s() - t0;
  if (got != n) std::fprintf(stderr, "cluster: read %llu bytes of %llu\n",
                             static_cast<unsigned long long>(got), static_cast<unsigned long long>(n));
  return static_cast<double>(n) / s / 1e9;
}

// GB/s of get here of an `n`-byte GPU tensor made on the first node's GPU (done first).
double tensor_get_rate(uint64_t n) {
  auto ref = prism::task(make_tensor).num_gpus(1).resource("first", 0.0001).remote(
      static_cast<int64_t>(n / 4));
  prism::wait(std::vector{ref}, 1, 60s);
  const double t0 = bench::now_s();
  const prism::gpu::Tensor t = prism::get(ref, 60s);
  const double s = bench::now_s() - t0;
  bench::keep(t.raw_data());
  return static_cast<double>(n) / s / 1e9;
}

// Milliseconds of a chain of GPU tasks on the first node: an `n`-byte tensor made there, then
// `links` tasks each reading the one before, the last one's result got here.
double gpu_chain_ms(uint64_t n, int links) {
  const double t0 = bench::now_s();
  auto ref = prism::task(make_tensor).num_gpus(1).resource("first", 0.0001).remote(
      static_cast<int64_t>(n / 4));
  for (int i = 0; i < links; ++i) {
    ref = prism::task(doubled).num_gpus(1).resource("first", 0.0001).remote(ref);
  }
  const prism::gpu::Tensor t = prism::get(ref, 60s);
  const double s = bench::now_s() - t0;
  if (t.numel() != static_cast<int64_t>(n / 4)) std::fprintf(stderr, "cluster: wrong chain\n");
  return s * 1e3;
}

// GB/s of a GPU task on the second node reading an `n`-byte tensor made on the first node's GPU
// (its pull from the first node, the upload, the task, the answer).
#ifdef PRISM_HAVE_EIGEN3
// Seconds for the tutorial's tree as GPU tasks (4 matrices made, 2 products, the sum, get).
double matmul_tree_s(int n) {
  const double t0 = bench::now_s();
  const examples::matmul::Matrix z = examples::matmul_gpu::tree_gpu(n, /*seed=*/1);
  const double s = bench::now_s() - t0;
  if (z.rows() != n) std::fprintf(stderr, "cluster: wrong matmul tree result\n");
  return s;
}
#endif

double tensor_gpu_to_gpu_rate(uint64_t n) {
  auto ref = prism::task(make_tensor).num_gpus(1).resource("first", 0.0001).remote(
      static_cast<int64_t>(n / 4));
  prism::wait(std::vector{ref}, 1, 60s);
  const double t0 = bench::now_s();
  const int64_t got = prism::get(
      prism::task(tensor_elements).num_gpus(1).resource("second", 0.0001).remote(ref), 60s);
  const double s = bench::now_s() - t0;
  if (got != static_cast<int64_t>(n / 4)) std::fprintf(stderr, "cluster: wrong tensor size\n");
  return static_cast<double>(n) / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  setenv("UCX_NET_DEVICES", "lo", 0);
  prism::serve();  // a node: serves the driver below, then exits
  bench::Flags flags(argc, argv);
  bench::Report report("cluster", flags);
  const int nodes = std::max(1, std::atoi(flags.get("--nodes", "2").c_str()));
  const int tasks = flags.quick ? 5'000 : 50'000;
  const int trips = flags.quick ? 500 : 2'000;

  // The embedded figure, same run, for reference.
  prism::init({.num_cpus = 1});
  const bench::Stats embedded = bench::repeat(flags.runs, [&] { return async_tasks(tasks, false); });
  prism::shutdown();
#ifdef PRISM_HAVE_EIGEN3
  // The matmul tree in one process with one logical GPU (its GPU tasks hold the CPU each).
  const int matmul_n = flags.quick ? 300 : 1000;
  const std::string tree_name = "GPU matmul tree, n=" + std::to_string(matmul_n) +
                                " (logical GPUs): 2 nodes";
  bench::Stats tree_here;
  if (flags.wants(tree_name)) {
    prism::init({.num_cpus = 1, .num_gpus = 1});
    tree_here = bench::repeat(flags.runs, [&] { return matmul_tree_s(matmul_n); });
    prism::shutdown();
  }
#endif

  const std::string dir = "/tmp/prism-bench-cluster-" + std::to_string(getpid());
  setenv("PRISM_JOB_DIR", dir.c_str(), 1);
  prism::init({.num_cpus = 0, .listen = "127.0.0.1:0"});
  std::vector<pid_t> children;
  for (int i = 0; i < nodes; ++i) {
    children.push_back(bench::spawn_node(
        dir, {"PRISM_NUM_CPUS=1", "PRISM_NUM_GPUS=1",
              std::string("PRISM_RESOURCES=node:1") +
                  (i == 0 ? ",first:1" : i == 1 ? ",second:1" : "")}));
  }
  prism::wait_for_nodes(nodes, 60s);
  for (int i = 0; i < 2000; ++i) prism::get(prism::task(noop).remote(i), 60s);  // warm-up

  bench::Row tasks_row = bench::Row("remote empty tasks async (driver + " +
                                        std::to_string(nodes) + " nodes)",
                                    "ops/s")
                             .at_least(500'000, ">= 500,000 tasks/s")
                             .with_note(std::to_string(tasks) +
                                        " tasks submitted, then all got; the driver has no CPU");
  tasks_row.published = 21'230;  // Ray 2.48 "multi client tasks async" (64 vCPU)
  if (flags.wants(tasks_row.name)) {
    tasks_row.prism = bench::repeat(flags.runs, [&] { return async_tasks(tasks, true); });
    tasks_row.extras.emplace_back("embedded, 1 CPU, same run (ops/s)", embedded.median);
    report.add(std::move(tasks_row));
  }

  bench::Row rt_row = bench::Row("remote task round trip p50 (driver + 1 node)", "us")
                          .at_most(20, "<= 20 us")
                          .with_note(std::to_string(trips) + " sync get of one remote task each");
  const std::vector<double> lat = values(flags.get("--perftest_lat_us", ""), 2.0);
  if (!lat.empty()) rt_row.peer_name = "ucx_perftest ucp_am_lat x2 (tcp, -e, sleep)";
  if (flags.wants(rt_row.name)) {
    double last_p99 = 0;
    rt_row.prism = bench::repeat(flags.runs, [&] {
      const auto rt = round_trips(trips);
      last_p99 = p99(rt) * 1e6;
      return p50(rt) * 1e6;
    });
    rt_row.extras.emplace_back("p99 of the last run (us)", last_p99);
    if (!lat.empty()) rt_row.peer = bench::stats_of(lat);
    report.add(std::move(rt_row));
  }

  bench::Row actor_row = bench::Row("remote actor calls async", "ops/s")
                             .with_note(std::to_string(tasks) + " calls of one actor on a node");
  actor_row.published = 8'664;  // Ray 2.48 "1:1 actor calls async"
  if (flags.wants(actor_row.name)) {
    auto echo = prism::actor<Echo>().resource("first", 0.0001).remote();
    for (int i = 0; i < 1000; ++i) prism::get(echo.task(&Echo::echo).remote(i), 60s);
    std::vector<double> sync;
    for (int i = 0; i < trips; ++i) {
      const double t0 = bench::now_s();
      prism::get(echo.task(&Echo::echo).remote(i), 60s);
      sync.push_back(bench::now_s() - t0);
    }
    actor_row.prism = bench::repeat(flags.runs, [&] {
      std::vector<prism::ObjectRef<int>> calls;
      calls.reserve(static_cast<size_t>(tasks));
      const double t0 = bench::now_s();
      for (int i = 0; i < tasks; ++i) calls.push_back(echo.task(&Echo::echo).remote(i));
      for (auto& c : calls) prism::get(c, 120s);
      return tasks / (bench::now_s() - t0);
    });
    actor_row.extras.emplace_back("sync call p50 (us)", p50(sync) * 1e6);
    report.add(std::move(actor_row));
  }

  // Transfers. ucx_perftest reports MB/s with MB = 2^20 bytes.
  enum class Kind { kGet, kPutRead, kNodeToNode };
  struct Transfer {
    const char* name;
    uint64_t bytes;
    const char* peer_flag;
    Kind kind;
  };
  const Transfer transfers[] = {
      {"get of a node's 1 MiB result", 1 * kMiB, "--perftest_bw_1m", Kind::kGet},
      {"get of a node's 64 MiB result", 64 * kMiB, "--perftest_bw_64m", Kind::kGet},
      {"64 MiB put here, read by a task on a node", 64 * kMiB, "--perftest_bw_64m",
       Kind::kPutRead},
      {"64 MiB result of a node, read by a task on the other node", 64 * kMiB,
       "--perftest_bw_64m", Kind::kNodeToNode},
  };
  for (const Transfer& t : transfers) {
    if (t.kind == Kind::kNodeToNode && nodes < 2) continue;
    bench::Row row = bench::Row(t.name, "GB/s").goal(0.8).with_note(
        t.kind == Kind::kGet ? "time of the get of a result already done on a node (pull and "
                               "deserialize)"
                             : "time from submitting the reading task to its answer (pull, "
                               "task, answer)");
    if (!flags.wants(row.name)) continue;
    const std::vector<double> bw = values(flags.get(t.peer_flag, ""), double(kMiB) / 1e9);
    if (!bw.empty()) row.peer_name = "ucx_perftest ucp_am_bw (tcp, -e, sleep)";
    row.prism = bench::repeat(flags.runs, [&] {
      switch (t.kind) {
        case Kind::kGet: return get_rate(t.bytes);
        case Kind::kPutRead: return put_read_rate(t.bytes);
        case Kind::kNodeToNode: return node_to_node_rate(t.bytes);
      }
      return 0.0;
    });
    if (!bw.empty()) row.peer = bench::stats_of(bw);
    report.add(std::move(row));
  }

  // GPU tensors across nodes (logical GPUs), beside the same ucx_perftest figure. The staged
  // path's chunk is PRISM_STAGE_CHUNK_BYTES of every process (inherited by the nodes): default
  // 4 MiB (the device copies overlap the host copies), 0 for one whole copy each (run_all.sh
  // runs these rows both ways).
  // With PRISM_DEVICE_CHANNEL=sockets (inherited by the nodes) the GPU-to-GPU row goes on a
  // device channel: loopback TCP between the logical GPUs, standing in for NCCL (no download,
  // no upload, no host tensor).
  const char* chunk_env = std::getenv("PRISM_STAGE_CHUNK_BYTES");
  const char* channel_env = std::getenv("PRISM_DEVICE_CHANNEL");
  const bool whole = chunk_env != nullptr && std::string(chunk_env) == "0";
  const bool channel = channel_env != nullptr && std::string(channel_env) == "sockets";
  const std::string staged = whole ? " (staged, whole)" : " (staged, 4 MiB chunks)";
  for (const bool to_gpu : {false, true}) {
    if (to_gpu && nodes < 2) break;
    bench::Row row =
        bench::Row(to_gpu ? "64 MiB tensor, node GPU -> other node's GPU task" +
                                (channel ? std::string(" (device channel, loopback sockets)")
                                         : staged)
                          : "get of a node's 64 MiB GPU tensor" + staged,
                   "GB/s")
            .goal(0.8)
            .with_note(to_gpu ? channel ? "logical GPUs; offered node to node, sent GPU to GPU "
                                          "over TCP as NCCL would send it"
                                        : "logical GPUs; download on the node, pulled node to "
                                          "node, upload as the host tensor is written"
                              : "logical GPUs; the download on the node, the pull, the tensor "
                                "built here");
    if (!flags.wants(row.name)) continue;
    const std::vector<double> bw = values(flags.get("--perftest_bw_64m", ""), double(kMiB) / 1e9);
    if (!bw.empty()) row.peer_name = "ucx_perftest ucp_am_bw (tcp, -e, sleep)";
    row.prism = bench::repeat(flags.runs, [&] {
      return to_gpu ? tensor_gpu_to_gpu_rate(64 * kMiB) : tensor_get_rate(64 * kMiB);
    });
    if (!bw.empty()) row.peer = bench::stats_of(bw);
    report.add(std::move(row));
  }

  // A chain of GPU tasks on one node: its tensors stay on the node's GPU (only the last one is
  // downloaded, for get() here).
  {
    bench::Row row = bench::Row("GPU chain on a node: 8 links of a 16 MiB tensor, then get", "ms")
                         .with_note("logical GPUs; each link reads the tensor before it on the "
                                    "node's GPU");
    if (flags.wants(row.name)) {
      row.prism = bench::repeat(flags.runs, [&] { return gpu_chain_ms(16 * kMiB, 8); });
      report.add(std::move(row));
    }
  }

#ifdef PRISM_HAVE_EIGEN3
  if (nodes >= 2) {
    bench::Row row = bench::Row(tree_name, "s")
                         .with_note("matmul_gpu.h's tree: 4 matrices made, 2 products, the sum, "
                                    "get; each node 1 CPU and 1 logical GPU");
    if (flags.wants(row.name)) {
      row.prism = bench::repeat(flags.runs, [&] { return matmul_tree_s(matmul_n); });
      row.extras.emplace_back("one process, 1 CPU, 1 logical GPU, same run (s)",
                              tree_here.median);
      report.add(std::move(row));
    }
  }
#endif

  prism::shutdown();  // the nodes exit
  bench::reap(children);
  report.finish();
  return 0;
}
