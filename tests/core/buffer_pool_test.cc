// BufferPool driven directly (capacity, reuse by type and size, eviction, refusal) and through
// the API: a copying put of a large vector lands in the buffer a freed object left behind; the
// pool empties when the last runtime shuts down.

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "prism/internal/buffer_pool.h"
#include "prism/internal/remote_call.h"
#include "prism/prism.h"
#include "test_util.h"

namespace prism::internal {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

// Gives the pool `bytes` of capacity for one test and takes it back (emptying what it added).
class Capacity {
 public:
  explicit Capacity(int64_t bytes) : bytes_(bytes) { BufferPool::add_capacity(bytes); }
  ~Capacity() { BufferPool::add_capacity(-bytes_); }

 private:
  int64_t bytes_;
};

std::vector<float> filled(size_t bytes, float v) {
  return std::vector<float>(bytes / sizeof(float), v);
}

TEST(BufferPoolTest, ACopyLandsInTheBufferOfferedBefore) {
  Capacity cap(64 * kMiB);
  std::vector<float> old = filled(4 * kMiB, 1.0f);
  const float* buffer = old.data();
  BufferPool::offer(old);
  EXPECT_TRUE(old.empty());  // taken
  const auto before = BufferPool::stats();
  const std::vector<float> src = filled(4 * kMiB, 2.5f);
  std::vector<float> copy = BufferPool::copy(src);
  EXPECT_EQ(copy.data(), buffer);
  EXPECT_EQ(copy, src);
  EXPECT_EQ(BufferPool::stats().reused, before.reused + 1);
}

TEST(BufferPoolTest, OnlyTheSameElementTypeAndASizeWithinAQuarterAreReused) {
  Capacity cap(64 * kMiB);
  std::vector<float> floats = filled(4 * kMiB, 1.0f);
  const void* float_buffer = floats.data();
  BufferPool::offer(floats);
  // Another element type of the same size: a fresh buffer.
  const std::vector<int32_t> ints(kMiB, 7);
  EXPECT_NE(static_cast<const void*>(BufferPool::copy(ints).data()), float_buffer);
  // Less than 4/5 of the pooled size: too wasteful, a fresh buffer.
  const std::vector<float> small = filled(3 * kMiB, 1.0f);
  EXPECT_NE(static_cast<const void*>(BufferPool::copy(small).data()), float_buffer);
  // Larger than the pooled buffer: cannot hold it.
  const std::vector<float> big = filled(5 * kMiB, 1.0f);
  EXPECT_NE(static_cast<const void*>(BufferPool::copy(big).data()), float_buffer);
  // The same type and size still finds it.
  const std::vector<float> same = filled(4 * kMiB, 3.0f);
  EXPECT_EQ(static_cast<const void*>(BufferPool::copy(same).data()), float_buffer);
}

// A call on a node: its decoded argument vectors and its result's vector go back to the pool
// after use (remote_call.h), so the next call of that kind decodes into the same memory.
TEST(BufferPoolTest, ARemoteCallsArgumentsAndResultGoBackToThePool) {
  Capacity cap(64 * kMiB);
  std::tuple<std::vector<uint8_t>, int, std::vector<float>, std::vector<uint8_t>> params{
      std::vector<uint8_t>(2 * kMiB, 3), 7, filled(2 * kMiB, 1.5f), std::vector<uint8_t>(10, 1)};
  const void* bytes_buffer = std::get<0>(params).data();
  const auto before = BufferPool::stats();
  recycle_params(params);
  EXPECT_EQ(BufferPool::stats().buffers, before.buffers + 2);  // (not the 10-byte one)
  EXPECT_TRUE(std::get<0>(params).empty());
  EXPECT_TRUE(std::get<2>(params).empty());
  EXPECT_EQ(std::get<3>(params).size(), 10u);
  EXPECT_EQ(std::get<1>(params), 7);
  // The next decode of that type and size lands in the buffer the call left.
  EXPECT_EQ(static_cast<const void*>(BufferPool::sized<uint8_t>(2 * kMiB).data()), bytes_buffer);

  // The result is encoded as a Writer writes it, then its buffer is pooled.
  std::vector<uint8_t> result(3 * kMiB);
  for (size_t i = 0; i < result.size(); ++i) result[i] = static_cast<uint8_t>(i * 7);
  std::string want;
  Writer w(&want);
  w.put(result);
  std::string out = "stale";
  const auto before_result = BufferPool::stats();
  encode_result(result, &out);
  EXPECT_EQ(out, want);
  EXPECT_GE(out.capacity(), 3 * kMiB);
  EXPECT_TRUE(result.empty());
  EXPECT_EQ(BufferPool::stats().buffers, before_result.buffers + 1);
  // A small result: encoded, nothing pooled.
  int small = 42;
  encode_result(small, &out);
  EXPECT_EQ(out, std::string(reinterpret_cast<const char*>(&small), sizeof small));
  // A result whose estimate (sizeof per element) is far above its wire bytes keeps no more
  // than a quarter of room beyond what was written.
  std::vector<std::string> strings(1u << 20, "ab");
  std::string written;
  Writer ws(&written);
  ws.put(strings);
  std::string encoded;
  encode_result(strings, &encoded);
  EXPECT_EQ(encoded, written);
  EXPECT_LE(encoded.capacity(), encoded.size() + encoded.size() / 4);
  EXPECT_EQ(strings.size(), 1u << 20);  // (not a pooled kind: left alone)
  static_assert(!PoolableVector<std::vector<bool>>::value, "bits are not a pooled buffer");
  static_assert(PoolableVector<std::vector<uint8_t>>::value);
}

// The serialized form of a large value: a string's buffer offered back is what the next value
// of about its size is written into (emptied first); other sizes, and small strings, are not.
TEST(BufferPoolTest, ALargeValueIsSerializedIntoTheStringBufferOfferedBefore) {
  Capacity cap(64 * kMiB);
  std::string old(4 * kMiB, 'x');
  const char* buffer = old.data();
  BufferPool::offer_string(old);
  EXPECT_TRUE(old.empty());  // taken
  const auto before = BufferPool::stats();
  std::string out;
  ASSERT_TRUE(BufferPool::reserve_large(&out, 4 * kMiB - 100));
  EXPECT_EQ(out.data(), buffer);
  EXPECT_TRUE(out.empty());
  EXPECT_GE(out.capacity(), 4 * kMiB - 100 + 64);
  EXPECT_EQ(BufferPool::stats().reused, before.reused + 1);
  out.append(4 * kMiB - 100, 'y');  // (within its capacity: no reallocation)
  EXPECT_EQ(out.data(), buffer);
  BufferPool::fit_reserved(&out);
  EXPECT_EQ(out, std::string(4 * kMiB - 100, 'y'));
  // Back again; a value of less than 4/5 of it gets a fresh buffer, as a vector would.
  BufferPool::offer_string(out);
  std::string small_value;
  ASSERT_TRUE(BufferPool::reserve_large(&small_value, 2 * kMiB));
  EXPECT_NE(small_value.data(), buffer);
  // A string that is not empty keeps its contents (it is only given room).
  std::string started = "head";
  ASSERT_TRUE(BufferPool::reserve_large(&started, 4 * kMiB - 100));
  EXPECT_EQ(started, "head");
  EXPECT_NE(started.data(), buffer);
  // Small values and small strings are left alone.
  std::string tiny;
  EXPECT_FALSE(BufferPool::reserve_large(&tiny, 1000));
  std::string short_one(100, 'z');
  BufferPool::offer_string(short_one);
  EXPECT_EQ(short_one, std::string(100, 'z'));
}

TEST(BufferPoolTest, ReleaseHeldFreesEverythingThePoolHolds) {
  Capacity cap(64 * kMiB);
  std::vector<float> v = filled(4 * kMiB, 1.0f);
  std::string s(2 * kMiB, 's');
  BufferPool::offer(v);
  BufferPool::offer_string(s);
  EXPECT_GE(BufferPool::stats().buffers, 2);
  BufferPool::release_held();
  EXPECT_EQ(BufferPool::stats().buffers, 0);
  EXPECT_EQ(BufferPool::stats().bytes, 0);
}

TEST(BufferPoolTest, SmallBuffersAreNotKept) {
  Capacity cap(64 * kMiB);
  std::vector<float> small(16, 1.0f);
  BufferPool::offer(small);
  EXPECT_EQ(small.size(), 16u);  // left alone
}

TEST(BufferPoolTest, TheOldestBuffersGoFirstWhenTheCapacityIsReached) {
  const auto base = BufferPool::stats();
  Capacity cap(10 * kMiB);
  std::vector<float> a = filled(4 * kMiB, 1.0f), b = filled(4 * kMiB, 2.0f),
                     c = filled(4 * kMiB, 3.0f);
  const float* b_buffer = b.data();
  const float* c_buffer = c.data();
  BufferPool::offer(a);
  BufferPool::offer(b);
  BufferPool::offer(c);  // a is freed to make room
  EXPECT_LE(BufferPool::stats().bytes, base.bytes + static_cast<int64_t>(10 * kMiB));
  const std::vector<float> src = filled(4 * kMiB, 0.0f);
  std::vector<float> first = BufferPool::copy(src);
  std::vector<float> second = BufferPool::copy(src);
  EXPECT_EQ(first.data(), c_buffer);  // newest first
  EXPECT_EQ(second.data(), b_buffer);
}

TEST(BufferPoolTest, WithoutCapacityNothingIsKept) {
  const auto base = BufferPool::stats();
  if (base.capacity > 0) GTEST_SKIP() << "a runtime of another test holds capacity";
  std::vector<float> v = filled(4 * kMiB, 1.0f);
  BufferPool::offer(v);
  EXPECT_EQ(v.size(), 4 * kMiB / sizeof(float));  // refused: still the caller's
  EXPECT_EQ(BufferPool::stats().bytes, base.bytes);
}

TEST(BufferPoolTest, ACopyingPutReusesTheBufferOfAFreedObjectAndShutdownEmptiesThePool) {
  {
    prism::Runtime rt({.num_cpus = 1, .object_store_bytes = int64_t{256} << 20});
    const std::vector<float> src = filled(8 * kMiB, 1.5f);
    const float* first_buffer = nullptr;
    {
      auto ref = rt.put(src);
      auto stored = prism::get_shared(ref, prism_test::kTimeout);  // the stored value itself
      EXPECT_EQ(*stored, src);
      EXPECT_NE(stored->data(), src.data());  // a copy
      first_buffer = stored->data();
    }  // the object is freed: its buffer goes to the pool
    auto again = rt.put(src);
    EXPECT_EQ(prism::get_shared(again, prism_test::kTimeout)->data(), first_buffer);
    EXPECT_EQ(*prism::get_shared(again, prism_test::kTimeout), src);
    // A task's large vector result is kept too when freed.
    auto made = rt.task([] { return std::vector<float>(8 * kMiB / sizeof(float), 4.0f); }).remote();
    const float* result_buffer = prism::get_shared(made, prism_test::kTimeout)->data();
    made = prism::ObjectRef<std::vector<float>>();
    again = prism::ObjectRef<std::vector<float>>();
    auto third = rt.put(src);
    const float* third_buffer = prism::get_shared(third, prism_test::kTimeout)->data();
    EXPECT_TRUE(third_buffer == result_buffer || third_buffer == first_buffer);
    rt.shutdown();
  }
  if (BufferPool::stats().capacity == 0) {
    EXPECT_EQ(BufferPool::stats().bytes, 0);
  }
}

}  // namespace
}  // namespace prism::internal
