#include "api/runtime_registry.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>

#include "api/runtime_core.h"
#include "prism/errors.h"
#include "prism/internal/thread_annotations.h"
#include "worker/exec_context.h"

namespace prism::internal {

namespace {
Mutex g_slots_mu;  // guards the slot lists below and every slot's links
}  // namespace

struct RuntimeSlot {
  std::atomic<uint64_t> generation{0};  // nonzero while its runtime is alive
  RuntimeCore* core = nullptr;          // valid while `generation` is nonzero
  RuntimeSlot* next_free PRISM_GUARDED_BY(g_slots_mu) = nullptr;
  RuntimeSlot* next_all PRISM_GUARDED_BY(g_slots_mu) = nullptr;  // every slot (kept reachable)
};

namespace {

constexpr int kCells = 8;  // pins one thread may hold at once (nested API calls)

// One per thread that ever pinned a runtime; never freed, reused after the thread exits.
struct HazardRecord {
  std::atomic<RuntimeSlot*> cells[kCells] = {};
  std::atomic<bool> in_use{true};
  HazardRecord* next = nullptr;  // immutable once published
};

std::atomic<HazardRecord*> g_records{nullptr};
RuntimeSlot* g_free_slots PRISM_GUARDED_BY(g_slots_mu) = nullptr;
RuntimeSlot* g_all_slots PRISM_GUARDED_BY(g_slots_mu) = nullptr;
std::atomic<RuntimeSlot*> g_global{nullptr};
std::atomic<bool> g_global_was_started{false};

// Asymmetric fences: a pin (every API call from a user thread) pays only a compiler barrier
// between its store and its load; the rare side (retiring a runtime, shutdown's wait for calls
// under way) pays a process-wide barrier (membarrier), which together act as two seq_cst fences.
// Decided once, by the first runtime's registration, before any pin can exist; without
// membarrier (old kernels, some sandboxes) both sides use a full fence.
std::atomic<bool> g_asymmetric{false};

void decide_fences() {
  static const bool asymmetric = [] {
    const long q = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (q < 0 || (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return false;
    return syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  }();
  g_asymmetric.store(asymmetric, std::memory_order_relaxed);
}

inline void light_fence() noexcept {
  if (g_asymmetric.load(std::memory_order_relaxed)) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

void heavy_fence() noexcept {
  if (!g_asymmetric.load(std::memory_order_relaxed) ||
      syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

HazardRecord* acquire_record() {
  for (HazardRecord* r = g_records.load(std::memory_order_acquire); r != nullptr; r = r->next) {
    bool used = false;
    if (!r->in_use.load(std::memory_order_relaxed) &&
        r->in_use.compare_exchange_strong(used, true, std::memory_order_acquire)) {
      return r;
    }
  }
  auto* r = new HazardRecord;
  HazardRecord* head = g_records.load(std::memory_order_relaxed);
  do {
    r->next = head;
  } while (!g_records.compare_exchange_weak(head, r, std::memory_order_release,
                                            std::memory_order_relaxed));
  return r;
}

struct RecordHolder {
  HazardRecord* record = nullptr;
  ~RecordHolder() {
    if (record != nullptr) record->in_use.store(false, std::memory_order_release);
  }
};

std::atomic<RuntimeSlot*>* free_cell() {
  thread_local RecordHolder holder;
  if (holder.record == nullptr) holder.record = acquire_record();
  for (auto& cell : holder.record->cells) {
    if (cell.load(std::memory_order_relaxed) == nullptr) return &cell;
  }
  throw Error(ErrorCode::kInternal, "Prism API calls nested more than 8 deep on one thread");
}

[[noreturn]] void throw_gone() {
  throw Error(ErrorCode::kUnavailable,
              "the Prism runtime has been shut down (its prism::Runtime or prism::init() runtime "
              "is gone)");
}

// Pins `slot` if it holds `generation` (0: whatever runtime it holds). Null core on failure.
RuntimePin pin_slot(RuntimeSlot* slot, uint64_t generation) {
  std::atomic<RuntimeSlot*>* cell = free_cell();
  cell->store(slot, std::memory_order_relaxed);
  light_fence();  // pairs with heavy_fence() in wait_unpinned()
  const uint64_t now = slot->generation.load(std::memory_order_acquire);
  if (now == 0 || (generation != 0 && now != generation)) {
    cell->store(nullptr, std::memory_order_release);
    return RuntimePin();
  }
  return RuntimePin(slot->core, cell);
}

}  // namespace

uint64_t new_generation() noexcept {
  static const uint64_t seed = [] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }();
  static std::atomic<uint64_t> counter{0};
  for (;;) {
    // splitmix64's finalizer is a bijection: distinct inputs give distinct generations.
    uint64_t z = seed + counter.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    if (z != 0) return z;
  }
}

RuntimeRef register_runtime(RuntimeCore* core, uint64_t generation) {
  decide_fences();
  MutexLock lock(g_slots_mu);
  RuntimeSlot* slot = g_free_slots;
  if (slot != nullptr) {
    g_free_slots = slot->next_free;
  } else {
    slot = new RuntimeSlot;
    slot->next_all = g_all_slots;
    g_all_slots = slot;
  }
  slot->core = core;
  slot->generation.store(generation, std::memory_order_seq_cst);
  return RuntimeRef{slot, generation};
}

void wait_unpinned(RuntimeRef ref) noexcept {
  // The caller's store (generation 0, or the runtime's stopping flag) before this fence, every
  // pinner's store of its cell before its light fence: one of the two sides sees the other's.
  heavy_fence();
  for (HazardRecord* r = g_records.load(std::memory_order_acquire); r != nullptr; r = r->next) {
    for (auto& cell : r->cells) {
      // Pins are held for the length of one API call: yield until it is over. The acquire pairs
      // with the pin's release in ~RuntimePin: what the call did happens before what follows.
      while (cell.load(std::memory_order_acquire) == ref.slot) std::this_thread::yield();
    }
  }
}

void retire_runtime(RuntimeRef ref) noexcept {
  if (ref.empty()) return;
  ref.slot->generation.store(0, std::memory_order_seq_cst);
  wait_unpinned(ref);
  MutexLock lock(g_slots_mu);
  ref.slot->core = nullptr;
  ref.slot->next_free = g_free_slots;
  g_free_slots = ref.slot;
}

void set_global_runtime(RuntimeRef ref) noexcept {
  if (!ref.empty()) g_global_was_started.store(true, std::memory_order_relaxed);
  g_global.store(ref.slot, std::memory_order_seq_cst);
}

RuntimeRef runtime_ref(RuntimeCore* rt) noexcept { return rt->ref(); }

RuntimePin pin_runtime(RuntimeRef ref) {
  if (ref.empty()) throw_gone();
  RuntimePin pin = pin_slot(ref.slot, ref.generation);
  if (!pin) throw_gone();
  return pin;
}

RuntimePin try_pin_runtime(RuntimeRef ref) noexcept {
  if (ref.empty()) return RuntimePin();
  try {
    return pin_slot(ref.slot, ref.generation);
  } catch (...) {
    return RuntimePin();  // nested too deep
  }
}

RuntimePin try_pin_owner(uint64_t owner) noexcept {
  RuntimeSlot* slot = nullptr;
  {
    MutexLock lock(g_slots_mu);
    for (RuntimeSlot* s = g_all_slots; s != nullptr; s = s->next_all) {
      if (s->generation.load(std::memory_order_relaxed) == owner) {
        slot = s;
        break;
      }
    }
  }
  if (slot == nullptr || owner == 0) return RuntimePin();
  return try_pin_runtime(RuntimeRef{slot, owner});
}

RuntimePin pin_current_runtime() {
  // A task's own runtime lives at least as long as the task: no pin needed.
  if (RuntimeCore* rt = exec_context().runtime) return RuntimePin(rt, nullptr);
  RuntimeSlot* slot = g_global.load(std::memory_order_seq_cst);
  if (slot != nullptr) {
    RuntimePin pin = pin_slot(slot, 0);
    // The slot may have been reused by a runtime that prism::init() did not start.
    if (pin && pin.get()->is_global()) return pin;
  }
  if (g_global_was_started.load(std::memory_order_relaxed)) {
    throw Error(ErrorCode::kUnavailable,
                "the Prism runtime has been shut down (prism::shutdown() was called); call "
                "prism::init() to start a new one");
  }
  throw Error(ErrorCode::kInvalidArgument,
              "Prism is not initialized: call prism::init() (or use a prism::Runtime) first");
}

}  // namespace prism::internal
