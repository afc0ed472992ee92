#include "observability/task_counters.h"

#include <atomic>
#include <mutex>
#include <vector>

namespace prism::internal {
namespace {

// Shard indices free for threads to take. A thread's index is the same for every runtime: its
// shard in each runtime's TaskCounters is written by it alone.
class ShardIndices {
 public:
  size_t take() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      const size_t i = free_.back();
      free_.pop_back();
      return i;
    }
    if (next_ >= TaskCounters::kShards) return TaskCounters::kShards;
    const size_t i = next_++;
    handed_out_.store(next_, std::memory_order_release);
    return i;
  }
  // Indices below this were handed out (they may be free again: their shards keep their counts).
  // A thread's shard is written only after its index was taken, so a sum that reads this first
  // misses no count made before it began.
  size_t handed_out() const noexcept { return handed_out_.load(std::memory_order_acquire); }
  void give_back(size_t i) noexcept {
    if (i >= TaskCounters::kShards) return;
    std::lock_guard<std::mutex> lock(mu_);
    try {
      free_.push_back(i);
    } catch (...) {
      // Out of memory: the index is lost (its shard keeps its counts; later threads overflow).
    }
  }

 private:
  std::mutex mu_;
  std::vector<size_t> free_;
  size_t next_ = 0;
  std::atomic<size_t> handed_out_{0};
};

ShardIndices& indices() {
  static ShardIndices* const s = new ShardIndices;  // threads may exit during static destruction
  return *s;
}

struct ThreadShard {
  size_t index = indices().take();
  ~ThreadShard() { indices().give_back(index); }
};

}  // namespace

size_t TaskCounters::thread_shard() noexcept {
  thread_local ThreadShard s;
  return s.index;
}

std::array<uint64_t, TaskCounters::kKinds> TaskCounters::sum() const noexcept {
  std::array<uint64_t, kKinds> out{};
  const size_t used = indices().handed_out();
  for (size_t i = 0; i < used && i < kShards; ++i) {
    const Shard& s = shards_[i];
    for (size_t k = 0; k < kKinds; ++k) out[k] += s.v[k].load(std::memory_order_relaxed);
  }
  for (size_t k = 0; k < kKinds; ++k) out[k] += overflow_.v[k].load(std::memory_order_relaxed);
  return out;
}

}  // namespace prism::internal
