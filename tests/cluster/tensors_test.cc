// GPU tensors across nodes (cluster mode), on the staged path: a tensor crosses through host
// memory (kept on its node's GPU, downloaded there when another process pulls it, sent by UCX,
// placed where its reader runs on the other node: on the reader's granted GPU, else on the
// host). GPUs here are logical ones (the host
// backend), as in CI. Same driver/node set-up as cluster_test.cc (part of the same binary).
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <prism/gpu.h>
#include <prism/prism.h>

#include "cluster_fixture.h"
#include "cluster_link.h"

namespace {

using namespace std::chrono_literals;
using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;
using prism_test::ClusterTest;

constexpr uint64_t kMiB = uint64_t{1} << 20;

uint64_t fnv(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h ^ n;
}

// "<dtype> [d0,d1,...] <hash of the elements' bytes>", read through a host copy.
std::string contents(const Tensor& t) {
  std::string s = t.defined() ? prism::gpu::dtype_name(t.dtype()) : std::string("undefined");
  s += " [";
  for (size_t i = 0; i < t.shape().size(); ++i) s += (i ? "," : "") + std::to_string(t.dim(i));
  s += "] ";
  if (!t.defined() || t.nbytes() == 0) return s + "-";
  const Tensor h = t.to_host();
  return s + std::to_string(fnv(h.raw_data(), h.nbytes()));
}

// Where a tensor argument arrived and what it holds: "<node> <device> <contents>".
std::string tensor_arrived(const Tensor& t) {
  return prism::node_id() + " " + t.device().to_string() + " " + contents(t);
}

// A host tensor of `dtype` and `shape` whose bytes are a pattern drawn from `seed`.
Tensor patterned(DType dtype, const std::vector<int64_t>& shape, uint32_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<unsigned char> bytes(static_cast<size_t>(n) * prism::gpu::dtype_size(dtype));
  uint64_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < bytes.size(); i += 8) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    const uint64_t word = x ^ (x >> 29);
    std::memcpy(bytes.data() + i, &word, std::min<size_t>(8, bytes.size() - i));
  }
  return Tensor::from_host_bytes(dtype, bytes.data(), bytes.size(), shape, Device::host());
}

// GPU task: n float64 elements 0.5, 1.5, ... made on the task's GPU (one upload).
Tensor counted_on_gpu(int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) + 0.5;
  return Tensor::from_vector(v, {n});
}
// GPU task: t + t on the task's GPU (no copy when t is there already).
Tensor doubled_here(const Tensor& t) {
  if (t.device() != prism::gpu::current_device() || t.device().is_host()) {
    throw std::runtime_error("the argument is on " + t.device().to_string() +
                             ", not on the task's GPU");
  }
  return prism::gpu::add(t, t);
}
std::string node_name() { return prism::node_id(); }
// GPU task: its argument, as it arrived on the task's GPU.
Tensor same_here(const Tensor& t) { return t; }
// GPU task: the sum of t's elements, on the task's GPU.
double summed_here(const Tensor& t) {
  if (t.device() != prism::gpu::current_device() || t.device().is_host()) {
    throw std::runtime_error("the argument is on " + t.device().to_string() +
                             ", not on the task's GPU");
  }
  return prism::gpu::sum(t);
}
// CPU task: the sum of t's elements, read in host memory.
double summed_on_host(const Tensor& t) {
  if (!t.device().is_host()) throw std::runtime_error("a CPU task's tensor is on " + t.device().to_string());
  double sum = 0;
  for (double x : t.to_vector<double>()) sum += x;
  return sum;
}
// This process's copy counters: uploads, downloads, peer copies, tensors sent to other nodes,
// tensors received from them, and the object pulls it sent.
std::vector<uint64_t> copies_here() {
  const prism::gpu::CopyStats c = prism::gpu::copy_stats();
  return {c.host_to_device, c.device_to_host,   c.device_to_device,
          c.network_sends,  c.network_receives, prism::cluster::object_stats().pulls};
}
// n bytes made after `ms` of work: a large value whose producer finishes after its reader was
// submitted (the reader is then placed as the value arrives, on the network thread).
std::vector<uint8_t> bytes_after(int ms, uint64_t n, uint32_t seed) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  std::vector<uint8_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 31 + seed) & 0xff);
  return v;
}
std::vector<uint64_t> hashes_of(const std::vector<std::vector<uint8_t>>& values) {
  std::vector<uint64_t> out;
  for (const auto& v : values) out.push_back(fnv(v.data(), v.size()));
  return out;
}
// GPU task: n float64 elements 0.5, 1.5, ... made on GPU `device` of its node (one upload).
Tensor counted_on(int device, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) + 0.5;
  return Tensor::from_vector(v, {n}, Device::gpu(device));
}
// GPU task: the GPU its argument arrived on, and its own.
std::vector<int> devices_of(const Tensor& t) {
  return {t.device().index, prism::gpu::current_device().index};
}
// How many results this node kept on a GPU became host bytes under memory pressure.
uint64_t live_released() { return prism::cluster::object_stats().released_live; }
// This node's GPU values sent and received on device channels, and its pulls that fell back to
// the driver.
std::vector<uint64_t> channel_counts() {
  const prism::cluster::LinkCounters c = prism::cluster::link_counters();
  return {c.device_sends, c.device_receives, c.direct_fallbacks, c.device_landings};
}
PRISM_REMOTE(tensor_arrived, node_name, same_here, counted_on_gpu, doubled_here, summed_here, copies_here, bytes_after,
             hashes_of, live_released, counted_on, devices_of, channel_counts, summed_on_host);

// Differences of two copies_here() readings.
std::vector<uint64_t> minus(const std::vector<uint64_t>& after, const std::vector<uint64_t>& before) {
  std::vector<uint64_t> d(after.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = after[i] - before[i];
  return d;
}
std::vector<uint64_t> driver_copies() { return copies_here(); }

// A GPU task on the node with resource "a" makes n float64 elements 0.5, 1.5, ..., a GPU task on
// the node with "b" doubles them, and get() here reads the result on the host: every element
// checked.
void chain_from_a_to_b(int64_t n) {
  auto made = prism::task(counted_on_gpu).num_gpus(1).resource("a", 1).remote(n);
  auto doubled = prism::task(doubled_here).num_gpus(1).resource("b", 1).remote(made);
  const Tensor got = prism::get(doubled, 60s);
  ASSERT_TRUE(got.device().is_host());
  const std::vector<double> v = got.to_vector<double>();
  ASSERT_EQ(v.size(), static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], 2 * (static_cast<double>(i) + 0.5)) << i;
}

// Tensors of every dtype and of awkward shapes cross byte for byte, to a GPU task's GPU and to a
// CPU task's host memory.
TEST_F(ClusterTest, TensorsOfEveryDtypeAndShapeCrossToGpuAndCpuReaders) {
  // node1 has the GPUs (logical ones); node2 has none, and its tasks read on the host.
  start(1, {{{"PRISM_NUM_GPUS", "2"}, {"PRISM_RESOURCES", "g:100"}},
            {{"PRISM_RESOURCES", "c:100"}}});
  struct Case {
    DType dtype;
    std::vector<int64_t> shape;
  };
  std::vector<Case> cases = {
      {DType::kFloat32, {0}},          {DType::kFloat64, {1}},
      {DType::kUInt8, {3, 5, 7}},      {DType::kInt32, {2, 0, 3}},
      {DType::kInt64, {1, 1, 1, 13}},  {DType::kFloat32, {7, 11}},
      {DType::kUInt8, {150001}},       // odd, and above the inline limit: by reference
      {DType::kFloat64, {257, 131}},
      // A GPU result kept on its node goes to get() in parts of 16 MiB: two, the last of them
      // three bytes and the header's.
      {DType::kUInt8, {(int64_t{16} << 20) + 3}},
  };
#ifdef PRISM_TEST_SANITIZED
  cases.push_back({DType::kFloat32, {int64_t{16} << 20}});  // 64 MiB (sanitizers are slow)
#else
  cases.push_back({DType::kFloat32, {int64_t{64} << 20}});  // 256 MiB
#endif
  const std::string gpu_node = prism::get(prism::task(node_name).resource("g", 1).remote(), 60s);
  const std::string cpu_node = prism::get(prism::task(node_name).resource("c", 1).remote(), 60s);
  uint32_t seed = 1;
  for (const Case& c : cases) {
    const Tensor t = patterned(c.dtype, c.shape, seed++);
    const std::string expected = contents(t);
    SCOPED_TRACE(expected);
    const auto ref = prism::put(t);
    auto on_gpu = prism::task(tensor_arrived).num_gpus(1).resource("g", 1).remote(ref);
    auto on_cpu = prism::task(tensor_arrived).resource("c", 1).remote(ref);
    EXPECT_EQ(prism::get(on_gpu, 120s), gpu_node + " gpu:0 " + expected);
    EXPECT_EQ(prism::get(on_cpu, 120s), cpu_node + " host " + expected);
    // Passed by value too, inside the call's message: up to 256 MiB in all. Beyond, the call
    // fails saying so (only a node can run it).
    auto by_value = prism::task(tensor_arrived).num_gpus(1).resource("g", 1).remote(t);
    if (t.nbytes() < 256 * kMiB) {
      EXPECT_EQ(prism::get(by_value, 120s), gpu_node + " gpu:0 " + expected);
    } else {
      try {
        (void)prism::get(by_value, 120s);
        ADD_FAILURE() << "a call larger than a message was sent";
      } catch (const prism::Error& e) {
        EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << e.what();
        EXPECT_NE(std::string(e.what()).find("cannot go to another node"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("prism::put"), std::string::npos) << e.what();
      }
    }
    // And back: a GPU task's result (its argument, on its GPU) read by get() here, on the host.
    const Tensor back =
        prism::get(prism::task(same_here).num_gpus(1).resource("g", 1).remote(ref), 120s);
    EXPECT_TRUE(back.device().is_host());
    EXPECT_EQ(contents(back), expected);
  }
  // The four large ones went by reference: each node pulled each once, however many of its
  // tasks read it.
  EXPECT_EQ(prism::get(prism::task(copies_here).resource("g", 1).remote(), 60s)[5], 4u);
  EXPECT_EQ(prism::get(prism::task(copies_here).resource("c", 1).remote(), 60s)[5], 4u);
}

// GPU task on node1 -> GPU task on node2 -> get() on the driver: every copy and transfer counted.
TEST_F(ClusterTest, AGpuChainAcrossNodesMakesExactlyTheExpectedCopies) {
  start(1, {{{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "a:100"}},
            {{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "b:100"}}});
  const int64_t n = int64_t{1} << 17;  // 1 MiB of float64: travels by reference
  auto on_a = [] { return prism::get(prism::task(copies_here).resource("a", 1).remote(), 60s); };
  auto on_b = [] { return prism::get(prism::task(copies_here).resource("b", 1).remote(), 60s); };
  const auto a0 = on_a(), b0 = on_b(), d0 = driver_copies();

  ASSERT_NO_FATAL_FAILURE(chain_from_a_to_b(n));

  // (uploads, downloads, peer copies, tensors sent, tensors received, pulls)
  EXPECT_EQ(minus(on_a(), a0), (std::vector<uint64_t>{1, 1, 0, 1, 0, 0}))
      << "node1: made on its GPU (upload), downloaded once to be sent";
  EXPECT_EQ(minus(on_b(), b0), (std::vector<uint64_t>{1, 1, 0, 1, 1, 1}))
      << "node2: pulled once, uploaded to its GPU, its result downloaded once to be sent";
  const auto d = minus(driver_copies(), d0);
  EXPECT_EQ(d[0] + d[1] + d[2], 0u) << "the driver has no GPU: no device copy";
  EXPECT_EQ(d[4], 1u) << "the driver built one tensor: the result its get() read ";
}

// A GPU chain on one node stays on its GPU: the node keeps its tasks' tensor results there as
// they are, and downloads one only for a reader elsewhere (or its first host reader there).
TEST_F(ClusterTest, AGpuChainOnOneNodeStaysOnItsGpuUntilAReaderElsewhereNeedsIt) {
  start(1, {{{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "a:100"}, {"PRISM_NUM_CPUS", "2"}},
            {{"PRISM_RESOURCES", "b:100"}}});
  const int64_t n = int64_t{1} << 17;  // 1 MiB of float64: kept by reference
  auto on_a = [] { return prism::get(prism::task(copies_here).resource("a", 1).remote(), 60s); };
  auto on_b = [] { return prism::get(prism::task(copies_here).resource("b", 1).remote(), 60s); };
  const auto a0 = on_a(), b0 = on_b(), d0 = driver_copies();
  auto made = prism::task(counted_on_gpu).num_gpus(1).resource("a", 1).remote(n);
  auto doubled = prism::task(doubled_here).num_gpus(1).resource("a", 1).remote(made);
  auto twice = prism::task(doubled_here).num_gpus(1).resource("a", 1).remote(doubled);
  ASSERT_EQ(prism::wait(std::vector{twice}, 1, 60s).first.size(), 1u);
  // (uploads, downloads, peer copies, tensors sent, tensors received, pulls)
  EXPECT_EQ(minus(on_a(), a0), (std::vector<uint64_t>{1, 0, 0, 0, 0, 0}))
      << "node1: made on its GPU and read there twice, nothing serialized";

  const Tensor got = prism::get(twice, 60s);
  ASSERT_TRUE(got.device().is_host());
  const std::vector<double> v = got.to_vector<double>();
  ASSERT_EQ(v.size(), static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], 4 * (static_cast<double>(i) + 0.5)) << i;
  EXPECT_EQ(minus(on_a(), a0), (std::vector<uint64_t>{1, 1, 0, 1, 0, 0}))
      << "node1: the result get() read downloaded once, to be sent";

  // The first tensor, read by a CPU task on node1 (a host copy there: one download), then by
  // get() here (sent from that host copy: no second download), then by a CPU task on node2
  // (pulled from node1 or from the driver's copy).
  std::vector<double> first(static_cast<size_t>(n));
  for (size_t i = 0; i < first.size(); ++i) first[i] = static_cast<double>(i) + 0.5;
  const std::string expected = contents(Tensor::from_vector(first, {n}, Device::host()));
  const std::string node1 = prism::get(prism::task(node_name).resource("a", 1).remote(), 60s);
  const std::string node2 = prism::get(prism::task(node_name).resource("b", 1).remote(), 60s);
  EXPECT_EQ(prism::get(prism::task(tensor_arrived).resource("a", 1).remote(made), 60s),
            node1 + " host " + expected);
  EXPECT_EQ(minus(on_a(), a0), (std::vector<uint64_t>{1, 2, 0, 1, 0, 0}));
  EXPECT_EQ(contents(prism::get(made, 60s)), expected);
  EXPECT_EQ(minus(on_a(), a0), (std::vector<uint64_t>{1, 2, 0, 2, 0, 0}));
  EXPECT_EQ(minus(driver_copies(), d0)[4], 2u) << "the driver built the two tensors it read";
  EXPECT_EQ(prism::get(prism::task(tensor_arrived).resource("b", 1).remote(made), 60s),
            node2 + " host " + expected);
  EXPECT_EQ(minus(on_b(), b0), (std::vector<uint64_t>{0, 0, 0, 0, 1, 1}));
  EXPECT_EQ(minus(on_a(), a0)[1], 2u) << "node1 downloaded the tensor again";
}

// The environment of the `node`-th node (0 or 1) of a test of device channels: loopback sockets
// between logical GPUs with the host backend (they run the channels' protocol, as NCCL would);
// NCCL on CUDA, each node with a GPU of its own (NCCL refuses two ranks on one GPU).
std::map<std::string, std::string> channel_env(int node, std::map<std::string, std::string> env) {
  if (prism::gpu::backend() == prism::gpu::Backend::kHost) {
    env["PRISM_DEVICE_CHANNEL"] = "sockets";
  } else {
    env["PRISM_DEVICE_CHANNEL"] = "nccl";
    env["CUDA_VISIBLE_DEVICES"] = std::to_string(node);
    env["PRISM_NUM_GPUS"] = "1";
  }
  return env;
}

// A long random mix: tensors of random sizes (inline, kept, in parts) made on either node's GPU,
// read by GPU and CPU tasks on both nodes and by get(), several at once, on device channels or
// staged (landing part by part); every reader gets every element.
class GpuMixTest : public ClusterTest {
 protected:
  void mix(bool channels) {
    if (prism::gpu::backend() != prism::gpu::Backend::kHost) {
      GTEST_SKIP() << "logical GPUs only on the host backend: node2 has two";
    }
    std::map<std::string, std::string> a = {{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "a:100"},
                                            {"PRISM_NUM_CPUS", "2"}};
    std::map<std::string, std::string> b = {{"PRISM_NUM_GPUS", "2"}, {"PRISM_RESOURCES", "b:100"},
                                            {"PRISM_NUM_CPUS", "2"}};
    if (channels) {
      a = channel_env(0, a);
      b = channel_env(1, b);
    }
    start(1, {a, b});
    std::mt19937 rng(20261206);
    const std::vector<int64_t> sizes = {1000, 20000, 131072, (int64_t{2} << 20) + 7,
                                        (int64_t{5} << 20) + 3};
    const char* const nodes[] = {"a", "b"};
#ifdef PRISM_TEST_SANITIZED
    constexpr int kRounds = 8;
#else
    constexpr int kRounds = 24;
#endif
    for (int round = 0; round < kRounds; ++round) {
      const int64_t n = sizes[rng() % sizes.size()];
      const char* maker = nodes[rng() % 2];
      SCOPED_TRACE("round " + std::to_string(round) + ": " + std::to_string(n) + " on " + maker);
      auto made = prism::task(counted_on_gpu).num_gpus(1).resource(maker, 1).remote(n);
      const double expected = static_cast<double>(n) * static_cast<double>(n) / 2;
      std::vector<prism::ObjectRef<double>> sums;
      const int readers = 1 + static_cast<int>(rng() % 3);
      for (int r = 0; r < readers; ++r) {
        const char* where = nodes[rng() % 2];
        if (rng() % 3 != 0) {
          sums.push_back(prism::task(summed_here).num_gpus(0.5).resource(where, 1).remote(made));
        } else {
          sums.push_back(prism::task(summed_on_host).resource(where, 1).remote(made));
        }
      }
      for (auto& sum : sums) EXPECT_EQ(prism::get(sum, 60s), expected);
      if (rng() % 4 == 0) {
        EXPECT_EQ(summed_on_host(prism::get(made, 60s)), expected);
      }
    }
    const auto on_a = prism::get(prism::task(channel_counts).resource("a", 1).remote(), 60s);
    const auto on_b = prism::get(prism::task(channel_counts).resource("b", 1).remote(), 60s);
    EXPECT_EQ(on_a[2] + on_b[2], 0u) << "a node fell back to the driver";
    // (device receives on channels; else values landed part by part)
    EXPECT_GE(channels ? on_a[1] + on_b[1] : on_a[3] + on_b[3], 2u);
    if (!channels) {
      EXPECT_EQ(on_a[1] + on_b[1], 0u);
    }
  }
};

TEST_F(GpuMixTest, OnDeviceChannels) { mix(/*channels=*/true); }
TEST_F(GpuMixTest, StagedLandingPartByPart) { mix(/*channels=*/false); }

// Device channels: a GPU task's result kept on node1's GPU, read by a GPU task on node2, goes GPU
// to GPU: no download on node1, no upload on node2.
TEST_F(ClusterTest, AGpuChainAcrossNodesGoesGpuToGpuOnADeviceChannel) {
  if (prism::gpu::backend() != prism::gpu::Backend::kHost && prism::gpu::cuda_device_count() < 2) {
    GTEST_SKIP() << "NCCL between two nodes needs 2 GPUs (one each)";
  }
  start(1, {channel_env(0, {{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "a:100"}}),
            channel_env(1, {{"PRISM_NUM_GPUS", "2"}, {"PRISM_RESOURCES", "b:100"},
                            {"PRISM_NUM_CPUS", "2"}})});
  const int64_t n = int64_t{1} << 17;  // 1 MiB of float64: kept on node1
  auto on_a = [] { return prism::get(prism::task(copies_here).resource("a", 1).remote(), 60s); };
  auto on_b = [] { return prism::get(prism::task(copies_here).resource("b", 1).remote(), 60s); };
  auto channels_b = [] {
    return prism::get(prism::task(channel_counts).resource("b", 1).remote(), 60s);
  };
  const auto a0 = on_a(), b0 = on_b(), d0 = driver_copies();

  ASSERT_NO_FATAL_FAILURE(chain_from_a_to_b(n));
  // (uploads, downloads, peer copies, tensors sent, tensors received, pulls)
  EXPECT_EQ(minus(on_a(), a0), (std::vector<uint64_t>{1, 0, 0, 1, 0, 0}))
      << "node1: made on its GPU (upload), sent from there";
  EXPECT_EQ(minus(on_b(), b0), (std::vector<uint64_t>{0, 1, 0, 1, 1, 1}))
      << "node2: received on its GPU, its result downloaded once to be sent";
  EXPECT_EQ(minus(driver_copies(), d0)[4], 1u);
  EXPECT_EQ(channels_b(), (std::vector<uint64_t>{0, 1, 0, 0}));
  EXPECT_EQ(prism::get(prism::task(channel_counts).resource("a", 1).remote(), 60s),
            (std::vector<uint64_t>{1, 0, 0, 0}));

  // Two GPU readers on node2 share one transfer; the GPU it landed on runs both.
  auto again = prism::task(counted_on_gpu).num_gpus(1).resource("a", 1).remote(n);
  auto s1 = prism::task(summed_here).num_gpus(0.5).resource("b", 1).remote(again);
  auto s2 = prism::task(summed_here).num_gpus(0.5).resource("b", 1).remote(again);
  const double expected = static_cast<double>(n) * static_cast<double>(n) / 2;
  EXPECT_EQ(prism::get(s1, 60s), expected);
  EXPECT_EQ(prism::get(s2, 60s), expected);
  EXPECT_EQ(channels_b(), (std::vector<uint64_t>{0, 2, 0, 0}));

  // Tensors of every dtype and awkward sizes, byte for byte, on one communicator in order (and
  // a CPU reader on node2 still gets host bytes: no channel).
  const std::string node2 = prism::get(prism::task(node_name).resource("b", 1).remote(), 60s);
  struct Case {
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Case> cases = {{DType::kUInt8, {150001}},
                                   {DType::kFloat64, {257, 131}},
                                   {DType::kInt32, {3, 0, 5}},  // (empty: inline, no channel)
                                   {DType::kInt64, {1, 1, 40013}},
                                   {DType::kFloat32, {(int64_t{4} << 20) + 1}}};
  uint64_t channelled = 2;
  uint32_t seed = 7;
  for (const Case& c : cases) {
    const Tensor t = patterned(c.dtype, c.shape, seed++);
    const std::string expected_contents = contents(t);
    SCOPED_TRACE(expected_contents);
    // (Made on node1's GPU by a task, so that node1 keeps it there.)
    auto kept = prism::task(same_here).num_gpus(1).resource("a", 1).remote(prism::put(t));
    ASSERT_EQ(prism::wait(std::vector{kept}, 1, 60s).first.size(), 1u);
    const std::string arrived =
        prism::get(prism::task(tensor_arrived).num_gpus(1).resource("b", 1).remote(kept), 60s);
    const std::string on_a_gpu = node2 + " gpu:";  // ("<node> gpu:<k> <contents>")
    ASSERT_EQ(arrived.substr(0, on_a_gpu.size()), on_a_gpu) << arrived;
    EXPECT_EQ(arrived.substr(arrived.find(' ', on_a_gpu.size()) + 1), expected_contents);
    EXPECT_EQ(prism::get(prism::task(tensor_arrived).resource("b", 1).remote(kept), 60s),
              node2 + " host " + expected_contents);
    if (t.nbytes() > 0) ++channelled;
    EXPECT_EQ(channels_b()[1], channelled);
  }
  EXPECT_EQ(channels_b()[2], 0u) << "a transfer fell back to the driver";
}

// A device channel that cannot be joined (NCCL failing to initialise on one side): the reader
// pulls the value as bytes instead, and every later one crosses staged; nothing is lost.
TEST_F(ClusterTest, ADeviceChannelThatCannotBeJoinedFallsBackToHostBytes) {
  if (prism::gpu::backend() != prism::gpu::Backend::kHost) {
    GTEST_SKIP() << "logical GPUs only on the host backend: the failing join is arranged with "
                    "the sockets channel (PRISM_DEVICE_CHANNEL_FAIL)";
  }
  start(1, {{{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "a:100"},
             {"PRISM_DEVICE_CHANNEL", "sockets"}},
            {{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "b:100"},
             {"PRISM_DEVICE_CHANNEL", "sockets"}, {"PRISM_DEVICE_CHANNEL_FAIL", "join"}}});
  const int64_t n = int64_t{1} << 17;
  const double expected = static_cast<double>(n) * static_cast<double>(n) / 2;
  for (int round = 0; round < 4; ++round) {
    auto made = prism::task(counted_on_gpu).num_gpus(1).resource("a", 1).remote(n);
    EXPECT_EQ(prism::get(prism::task(summed_here).num_gpus(1).resource("b", 1).remote(made), 60s),
              expected)
        << round;
  }
  const auto counts = prism::get(prism::task(channel_counts).resource("b", 1).remote(), 60s);
  EXPECT_EQ(counts[1], 0u) << "node2 received on a channel it could not join";
  EXPECT_GE(counts[2], 1u) << "node2 never fell back to the driver";
}

// A node's GPU full of the results it keeps there: the least recently used become host bytes
// (device memory pressure) and the next allocation succeeds; every result reads back whole, on
// the host and in a GPU task.
TEST_F(ClusterTest, AGpuFullOfKeptResultsTurnsTheOldestIntoHostBytes) {
  if (prism::gpu::backend() != prism::gpu::Backend::kHost) {
    GTEST_SKIP() << "a full GPU is arranged with the host backend's logical memory limit "
                    "(PRISM_LOGICAL_GPU_MEMORY)";
  }
  start(1, {{{"PRISM_NUM_GPUS", "1"},
             {"PRISM_RESOURCES", "a:100"},
             {"PRISM_LOGICAL_GPU_MEMORY", std::to_string(40 * kMiB)}}});
  const int64_t n = int64_t{12} << 17;  // 12 MiB of float64: three fit on the GPU, not four
  std::vector<prism::ObjectRef<Tensor>> made;
  for (int i = 0; i < 6; ++i) {
    made.push_back(prism::task(counted_on_gpu).num_gpus(1).resource("a", 1).remote(n));
    ASSERT_EQ(prism::wait(std::vector{made.back()}, 1, 60s).first.size(), 1u) << i;
  }
  const uint64_t released =
      prism::get(prism::task(live_released).resource("a", 1).remote(), 60s);
  EXPECT_GE(released, 3u) << "six results of 12 MiB on a GPU of 40 MiB";
  EXPECT_LE(released, 5u);
  const double expected = static_cast<double>(n) * static_cast<double>(n) / 2;
  for (size_t i = 0; i < made.size(); ++i) {
    // (The first ones were made host bytes: read on the GPU, they are uploaded again.)
    EXPECT_EQ(prism::get(prism::task(summed_here).num_gpus(1).resource("a", 1).remote(made[i]),
                         60s),
              expected)
        << i;
    const std::vector<double> v = prism::get(made[i], 60s).to_vector<double>();
    ASSERT_EQ(v.size(), static_cast<size_t>(n)) << i;
    EXPECT_EQ(v.front(), 0.5) << i;
    EXPECT_EQ(v.back(), static_cast<double>(n) - 0.5) << i;
  }
}

// Two pulls of a result kept on a node's GPU at about the same time (a task's on another node,
// get() here), each served by the node's stager in parts: each reader gets every byte.
TEST_F(ClusterTest, TwoPullsOfAKeptGpuResultEachGetTheWholeValue) {
  start(1, {{{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "a:100"}},
            {{"PRISM_RESOURCES", "b:100"}}});
  const int64_t n = (int64_t{5} << 20) + 3;  // 40 MiB + 24 bytes of float64: three parts
  std::vector<double> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) + 0.5;
  const std::string expected = contents(Tensor::from_vector(v, {n}, Device::host()));
  const std::string node2 = prism::get(prism::task(node_name).resource("b", 1).remote(), 60s);
  for (int round = 0; round < 3; ++round) {
    auto made = prism::task(counted_on_gpu).num_gpus(1).resource("a", 1).remote(n);
    ASSERT_EQ(prism::wait(std::vector{made}, 1, 60s).first.size(), 1u);
    auto on_b = prism::task(tensor_arrived).resource("b", 1).remote(made);
    EXPECT_EQ(contents(prism::get(made, 60s)), expected) << round;
    EXPECT_EQ(prism::get(on_b, 60s), node2 + " host " + expected) << round;
  }
}

// Without a device channel, a GPU task on another node reads a kept GPU result as bytes, in the
// stager's parts; each part is uploaded to the GPU it lands on as it arrives (the upload of one
// overlaps the transfer of the next), and the node keeps the tensor there: its next GPU readers
// use it in place, its CPU readers get a host copy.
TEST_F(ClusterTest, AKeptGpuResultPulledAsBytesLandsOnTheReadersGpuPartByPart) {
  if (prism::gpu::backend() != prism::gpu::Backend::kHost && prism::gpu::cuda_device_count() < 2) {
    GTEST_SKIP() << "needs 2 GPUs (node2 has two)";
  }
  start(1, {{{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "a:100"},
             {"PRISM_DEVICE_CHANNEL", "none"}},
            {{"PRISM_NUM_GPUS", "2"}, {"PRISM_RESOURCES", "b:100"},
             {"PRISM_DEVICE_CHANNEL", "none"}}});
  auto on_b = [] { return prism::get(prism::task(copies_here).resource("b", 1).remote(), 60s); };
  const int64_t n = (int64_t{5} << 20) + 3;  // 40 MiB + 24 bytes of float64: three parts
  std::vector<double> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) + 0.5;
  const std::string expected = contents(Tensor::from_vector(v, {n}, Device::host()));
  const double sum = static_cast<double>(n) * static_cast<double>(n) / 2;
  const std::string node2 = prism::get(prism::task(node_name).resource("b", 1).remote(), 60s);
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round);
    const auto b0 = on_b();
    const auto c0 = prism::get(prism::task(channel_counts).resource("b", 1).remote(), 60s);
    auto made = prism::task(counted_on_gpu).num_gpus(1).resource("a", 1).remote(n);
    EXPECT_EQ(prism::get(prism::task(summed_here).num_gpus(1).resource("b", 1).remote(made), 60s),
              sum);
    const auto c1 = prism::get(prism::task(channel_counts).resource("b", 1).remote(), 60s);
    EXPECT_EQ(c1[3] - c0[3], 1u) << "node2 did not land the tensor on its GPU";
    EXPECT_EQ(c1[1], c0[1]) << "no device channel here";
    // (uploads, downloads, peer copies, tensors sent, tensors received, pulls)
    EXPECT_EQ(minus(on_b(), b0), (std::vector<uint64_t>{1, 0, 0, 0, 1, 1}));
    // A second GPU reader uses it where it landed; a CPU reader gets a host copy of it.
    const std::string arrived =
        prism::get(prism::task(tensor_arrived).num_gpus(1).resource("b", 1).remote(made), 60s);
    EXPECT_EQ(arrived.substr(arrived.find(' ', node2.size() + 1) + 1), expected);
    EXPECT_EQ(minus(on_b(), b0), (std::vector<uint64_t>{1, 1, 0, 0, 1, 1}))
        << "(the one download: tensor_arrived's host copy for its contents)";
    EXPECT_EQ(prism::get(prism::task(tensor_arrived).resource("b", 1).remote(made), 60s),
              node2 + " host " + expected);
  }
}

// A GPU task reading a result its node keeps on one of its GPUs runs on that GPU: no peer copy.
TEST_F(ClusterTest, AGpuTaskRunsOnTheGpuItsNodeKeepsItsArgumentOn) {
  start(1, {{{"PRISM_NUM_GPUS", "2"}, {"PRISM_RESOURCES", "a:100"}}});
  auto on_a = [] { return prism::get(prism::task(copies_here).resource("a", 1).remote(), 60s); };
  const int64_t n = int64_t{1} << 17;  // 1 MiB of float64: kept on the node
  for (const int device : {1, 0, 1, 1, 0}) {
    auto made = prism::task(counted_on).num_gpus(1).resource("a", 1).remote(device, n);
    ASSERT_EQ(prism::wait(std::vector{made}, 1, 60s).first.size(), 1u);
    const auto before = on_a();
    EXPECT_EQ(prism::get(prism::task(devices_of).num_gpus(1).resource("a", 1).remote(made), 60s),
              (std::vector<int>{device, device}));
    EXPECT_EQ(minus(on_a(), before), (std::vector<uint64_t>{0, 0, 0, 0, 0, 0}))
        << "made on gpu:" << device << ", read with a copy";
  }
}

// Two GPU readers of one tensor on the same node share its one transfer.
TEST_F(ClusterTest, TwoGpuReadersOnANodeShareOneTransfer) {
  start(1, {{{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "a:100"}},
            {{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "b:100"}, {"PRISM_NUM_CPUS", "2"}}});
  const int64_t n = int64_t{1} << 18;  // 2 MiB of float64
  auto made = prism::task(counted_on_gpu).num_gpus(1).resource("a", 1).remote(n);
  ASSERT_EQ(prism::wait(std::vector{made}, 1, 60s).first.size(), 1u);
  const auto b0 = prism::get(prism::task(copies_here).resource("b", 1).remote(), 60s);
  auto s1 = prism::task(summed_here).num_gpus(0.5).resource("b", 1).remote(made);
  auto s2 = prism::task(summed_here).num_gpus(0.5).resource("b", 1).remote(made);
  const double expected = static_cast<double>(n) * static_cast<double>(n) / 2;
  EXPECT_EQ(prism::get(s1, 60s), expected);
  EXPECT_EQ(prism::get(s2, 60s), expected);
  const auto b = minus(prism::get(prism::task(copies_here).resource("b", 1).remote(), 60s), b0);
  EXPECT_EQ(b[5], 1u) << "node2 pulled the tensor more than once";
  EXPECT_EQ(b[4], 1u) << "node2 built the tensor from its bytes more than once";
  EXPECT_EQ(b[0], 1u) << "node2 uploaded the tensor to its GPU more than once";
}

// A task whose argument is a vector of refs to large values made on other nodes, placed on a
// third node as the last of them arrives (on the driver's network thread): each element goes by
// reference (the driver cannot fetch values there), and the task reads them all.
TEST_F(ClusterTest, AVectorOfRefsToValuesOnOtherNodesReachesATaskElsewhere) {
  start(1, {{{"PRISM_RESOURCES", "a:100"}, {"PRISM_NUM_CPUS", "2"}},
            {{"PRISM_RESOURCES", "b:100"}}});
  std::vector<prism::ObjectRef<std::vector<uint8_t>>> parts;
  std::vector<uint64_t> expected;
  for (uint32_t i = 0; i < 3; ++i) {
    const uint64_t n = 200'000 + i;  // above the inline limit: they stay on node1
    parts.push_back(prism::task(bytes_after).resource("a", 1).remote(300, n, i));
    const std::vector<uint8_t> v = bytes_after(0, n, i);
    expected.push_back(fnv(v.data(), v.size()));
  }
  // A small value of the driver's own, inline among them.
  // The same ref twice, a small value of the driver's own (inline among them) and a large one
  // (kept here and pulled by reference).
  parts.push_back(parts[0]);
  expected.push_back(expected[0]);
  const std::vector<uint8_t> small{1, 2, 3};
  parts.push_back(prism::put(small));
  expected.push_back(fnv(small.data(), small.size()));
  const std::vector<uint8_t> large = bytes_after(0, 300'000, 9);
  parts.push_back(prism::put(large));
  expected.push_back(fnv(large.data(), large.size()));
  auto hashes = prism::task(hashes_of).resource("b", 1).remote(parts);
  EXPECT_EQ(prism::get(hashes, 60s), expected);
}

}  // namespace

namespace {

// The node holding a large GPU tensor dies as a GPU task on another node starts reading it: the
// reader gets the value (computed again) or an error that says what was lost, never a hang. On
// the staged path (killed as the reader starts) and on a device channel (it dies halfway through
// sending the tensor: PRISM_DEVICE_CHANNEL_FAIL=die-mid-send).
class DyingHolderTest : public ClusterTest {
 protected:
  void reader_of_a_dying_holder(bool channels) {
    if (channels && prism::gpu::backend() != prism::gpu::Backend::kHost) {
      GTEST_SKIP() << "logical GPUs only on the host backend: the death mid-transfer is arranged "
                      "with the sockets channel";
    }
    // (A lost object is computed again where it can run; only node1 can, so it waits for such a
    // node to join: 2 s here, then fails.)
    setenv("PRISM_INFEASIBLE_TIMEOUT", "2", 1);
    std::map<std::string, std::string> a = {{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "a:100"}};
    std::map<std::string, std::string> b = {{"PRISM_NUM_GPUS", "1"}, {"PRISM_RESOURCES", "b:100"}};
    if (channels) {
      a = channel_env(0, a);
      a["PRISM_DEVICE_CHANNEL_FAIL"] = "die-mid-send";
      b = channel_env(1, b);
    }
    start(1, {a, b});
    unsetenv("PRISM_INFEASIBLE_TIMEOUT");
    expect_clean_exit_ = false;
#ifdef PRISM_TEST_SANITIZED
    const int64_t n = int64_t{8} << 20;  // 64 MiB of float64
#else
    const int64_t n = int64_t{32} << 20;  // 256 MiB of float64
#endif
    auto made = prism::task(counted_on_gpu).num_gpus(1).resource("a", 1).remote(n);
    ASSERT_EQ(prism::wait(std::vector{made}, 1, 120s).first.size(), 1u);
    auto sum = prism::task(summed_here).num_gpus(1).resource("b", 1).remote(made);
    // node1, the holder (on a channel it kills itself as it sends)
    if (!channels) {
      ASSERT_EQ(kill(children_.front().pid(), SIGKILL), 0);
    }
    const double expected = static_cast<double>(n) * static_cast<double>(n) / 2;
    try {
      const double got = prism::get(sum, 60s);
      EXPECT_FALSE(channels) << "the value came from a node that died sending it";
      EXPECT_EQ(got, expected);  // it had arrived before the kill
    } catch (const prism::TimeoutError& e) {
      ADD_FAILURE() << "the reader hung: " << e.what();
    } catch (const prism::Error& e) {
      const std::string what = e.what();
      EXPECT_FALSE(what.empty());
      EXPECT_NE(what.find("summed_here"), std::string::npos) << what;
    }
    // The cluster keeps serving: node2 still runs GPU tasks.
    EXPECT_EQ(prism::get(prism::task(summed_here).num_gpus(1).resource("b", 1).remote(
                             prism::put(Tensor::from_vector(std::vector<double>{1, 2}, {2},
                                                            Device::host()))),
                         60s),
              3.0);
    if (channels) {
      const auto counts = prism::get(prism::task(channel_counts).resource("b", 1).remote(), 60s);
      EXPECT_EQ(counts[1], 0u);
      EXPECT_GE(counts[2], 1u) << "node2's pull never fell back to the driver";
    }
  }
};

TEST_F(DyingHolderTest, AReaderOfATensorWhoseNodeDiesGetsAnErrorOrTheValueNeverAHang) {
  reader_of_a_dying_holder(/*channels=*/false);
}

TEST_F(DyingHolderTest, AReaderOnADeviceChannelWhoseSenderDiesGetsAnErrorOrTheValueNeverAHang) {
  reader_of_a_dying_holder(/*channels=*/true);
}

}  // namespace
