// The staged path of a tensor crossing nodes (storage.h, "Staged transfers"): a GPU tensor is
// written into its message in chunks through two pinned staging buffers (Storage::read_chunks),
// and a GPU reader's copy is uploaded chunk by chunk as the host tensor is written
// (Storage::fill_and_copy_to). Driven directly with odd chunk sizes (1 byte, a prime, one larger
// than the tensor, 0 for "whole"), and end to end through a tensor's serialization read in a
// GPU task. Runs on logical GPUs here and on real ones where there are.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "copy_cache.h"
#include "prism/gpu.h"
#include "prism/prism.h"
#include "storage.h"

namespace {

using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;
using prism::gpu::internal::set_stage_chunk_bytes;
using prism::gpu::internal::stage_chunk_bytes;
using prism::gpu::internal::storage_of;

constexpr auto kTimeout = std::chrono::seconds(60);

// Bytes 0, 1, 2, ... (mod 251, so that a misplaced chunk shows).
std::vector<uint8_t> pattern(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i % 251);
  return v;
}

class StagingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (prism::gpu::backend() == prism::gpu::Backend::kCuda && prism::gpu::cuda_device_count() < 1) {
      GTEST_SKIP() << "no GPU: " << prism::gpu::backend_description();
    }
    saved_ = stage_chunk_bytes();
  }
  void TearDown() override { set_stage_chunk_bytes(saved_); }
  size_t saved_ = 0;
};

bool placed_on_host(const Tensor& t) {
  bool host = false, device = false;
  storage_of(t)->placed(&host, &device);
  return host;
}

TEST_F(StagingTest, ReadChunksHandsOverEveryByteInOrderWithoutAHostCopy) {
  for (const size_t n : {size_t{1}, size_t{7}, size_t{4096}, size_t{150001}}) {
    const std::vector<uint8_t> want = pattern(n);
    const Tensor gpu = Tensor::from_vector(want, {static_cast<int64_t>(n)}, Device::gpu(0));
    for (const size_t chunk : {size_t{1}, size_t{97}, size_t{4096}, n, n + 1, size_t{0}}) {
      if (chunk == 1 && n > 4096) continue;  // (a byte at a time: small tensors only)
      set_stage_chunk_bytes(chunk);
      const prism::gpu::CopyStats before = prism::gpu::copy_stats();
      std::string got;
      size_t calls = 0, largest = 0;
      storage_of(gpu)->read_chunks([&](const char* p, size_t bytes) {
        got.append(p, bytes);
        ++calls;
        largest = std::max(largest, bytes);
      });
      const prism::gpu::CopyStats made = prism::gpu::copy_stats() - before;
      ASSERT_EQ(got.size(), n) << "chunk " << chunk;
      EXPECT_EQ(std::memcmp(got.data(), want.data(), n), 0) << "n " << n << " chunk " << chunk;
      const size_t step = chunk == 0 ? n : std::min(chunk, n);
      EXPECT_EQ(calls, (n + step - 1) / step) << "n " << n << " chunk " << chunk;
      EXPECT_LE(largest, step);
      EXPECT_EQ(made.device_to_host, 1u) << "one download, counted once";
      EXPECT_EQ(made.bytes, n);
    }
    EXPECT_FALSE(placed_on_host(gpu)) << "no host copy of the whole tensor is made or kept";
  }
}

TEST_F(StagingTest, ReadChunksReadsAHostCopyMadeEarlierInsteadOfDownloading) {
  const std::vector<uint8_t> want = pattern(10000);
  const Tensor gpu = Tensor::from_vector(want, {10000}, Device::gpu(0));
  ASSERT_EQ(gpu.to_host().to_vector<uint8_t>(), want);  // the cached host copy
  set_stage_chunk_bytes(100);
  const prism::gpu::CopyStats before = prism::gpu::copy_stats();
  std::string got;
  storage_of(gpu)->read_chunks([&](const char* p, size_t n) { got.append(p, n); });
  EXPECT_EQ(got, std::string(want.begin(), want.end()));
  EXPECT_EQ((prism::gpu::copy_stats() - before).device_to_host, 0u);
}

TEST_F(StagingTest, ASinkThatThrowsMidwayLeavesTheTensorReadable) {
  const std::vector<uint8_t> want = pattern(5000);
  const Tensor gpu = Tensor::from_vector(want, {5000}, Device::gpu(0));
  set_stage_chunk_bytes(512);
  size_t calls = 0;
  EXPECT_THROW(storage_of(gpu)->read_chunks([&](const char*, size_t) {
    if (++calls == 3) throw std::runtime_error("message full");
  }),
               std::runtime_error);
  EXPECT_EQ(calls, 3u) << "no chunk after the throw";
  std::string got;
  storage_of(gpu)->read_chunks([&](const char* p, size_t n) { got.append(p, n); });
  EXPECT_EQ(got, std::string(want.begin(), want.end()));
}

TEST_F(StagingTest, FillAndCopyMakesTheHostTensorAndItsCachedGpuCopyInOnePass) {
  const Device gpu = Device::gpu(0);
  for (const size_t chunk : {size_t{1}, size_t{333}, size_t{1} << 20, size_t{0}}) {
    set_stage_chunk_bytes(chunk);
    const std::vector<uint8_t> want = pattern(chunk == 1 ? 3000 : 150001);
    const int64_t n = static_cast<int64_t>(want.size());
    const Tensor host = Tensor::empty(DType::kUInt8, {n}, Device::host());
    const size_t listed = prism::gpu::internal::CopyCache::instance().listed_for_testing(0);
    const prism::gpu::CopyStats before = prism::gpu::copy_stats();
    storage_of(host)->fill_and_copy_to(want.data(), gpu);
    EXPECT_EQ(host.to_vector<uint8_t>(), want) << "the host tensor, chunk " << chunk;
    const Tensor there = host.to(gpu);  // the copy just made: no second upload
    const prism::gpu::CopyStats made = prism::gpu::copy_stats() - before;
    EXPECT_EQ(made.host_to_device, 1u) << "chunk " << chunk;
    EXPECT_EQ(made.bytes, want.size());
    EXPECT_EQ(there.device(), gpu);
    EXPECT_EQ(there.to_vector<uint8_t>(), want) << "the GPU copy, chunk " << chunk;
    // A secondary copy like any upload: listed for eviction under memory pressure.
    EXPECT_EQ(prism::gpu::internal::CopyCache::instance().listed_for_testing(0), listed + 1);
  }
  const Tensor gpu_tensor = Tensor::empty(DType::kUInt8, {4}, gpu);
  try {
    storage_of(gpu_tensor)->fill_and_copy_to("abcd", gpu);
    ADD_FAILURE() << "a GPU storage was filled from host bytes";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInternal);
  }
}

// End to end: a GPU tensor's serialization (what a node sends) read in a GPU task (what the
// reading node does) and by get(), with a chunk smaller than the tensor: every byte arrives, the
// sender downloads once and keeps no host copy, the GPU reader uploads once.
TEST_F(StagingTest, SerializedGpuTensorsArriveWholeOnTheReadersGpu) {
  set_stage_chunk_bytes(4096);
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{4095}, int64_t{4097}, int64_t{100003}}) {
    std::vector<int32_t> want(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) want[static_cast<size_t>(i)] = static_cast<int32_t>(i * 7 - 3);
    const Tensor made = Tensor::from_vector(want, {n}, Device::gpu(0));
    const prism::gpu::CopyStats before = prism::gpu::copy_stats();
    const std::string bytes = prism::to_bytes(made);
    const prism::gpu::CopyStats sent = prism::gpu::copy_stats() - before;
    EXPECT_EQ(sent.device_to_host, n == 0 ? 0u : 1u) << n;
    EXPECT_EQ(sent.network_sends, 1u);
    if (n != 0) {
      EXPECT_FALSE(placed_on_host(made)) << n;
    }
    auto read = rt.task([bytes] {
                    const prism::gpu::CopyStats at_start = prism::gpu::copy_stats();
                    const Tensor t = prism::from_bytes<Tensor>(bytes);
                    const prism::gpu::CopyStats done = prism::gpu::copy_stats() - at_start;
                    return std::tuple<int, uint64_t, std::vector<int32_t>>(
                        t.device().index, done.host_to_device, t.to_vector<int32_t>());
                  }).num_gpus(1).remote();
    const auto [device, uploads, got] = prism::get(read, kTimeout);
    EXPECT_EQ(device, 0) << n;
    EXPECT_EQ(uploads, 1u) << n << " (an empty tensor's copy too, of no bytes)";
    EXPECT_EQ(got, want) << n;
    EXPECT_EQ(prism::from_bytes<Tensor>(bytes).to_vector<int32_t>(), want) << "get, " << n;
  }
}

}  // namespace
