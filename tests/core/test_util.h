// tests/core/test_util.h — hand-off helpers and fixtures shared by the core tests.
//
// Every blocking wait in the tests has a deadline that fails the test instead of hanging:
//   - prism::get(ref, kTimeout) everywhere;
//   - Gate: a one-shot signal that tasks wait on (with a deadline);
//   - Rendezvous: N parties that must all be inside at once (a barrier with a deadline);
//   - eventually(pred): for effects that have no hand-off (a destructor that runs on a worker
//     after the result was published); yields, never sleeps.
//
// Gate and Rendezvous are handles to shared state: tasks capture copies. The object a test
// creates owns the state and releases every waiter when it goes out of scope, so a test that
// fails early never leaves a task blocked until its deadline.
//
// Thread-safe: every helper may be used from any thread.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "prism/prism.h"

namespace prism_test {

using namespace std::chrono_literals;

// The deadline of every blocking wait in the tests: generous, so that only a real hang (or a
// lost wakeup) trips it, even under ThreadSanitizer.
inline constexpr std::chrono::seconds kTimeout{30};

// A one-shot signal. wait() returns true once open() was called, false at the deadline.
class Gate {
 public:
  Gate() : state_(std::make_shared<State>()), owner_(true) {}
  Gate(const Gate& o) : state_(o.state_), owner_(false) {}
  Gate& operator=(const Gate&) = delete;
  ~Gate() {
    if (owner_) open();
  }

  void open() const {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->open = true;
    }
    state_->cv.notify_all();
  }
  [[nodiscard]] bool wait(std::chrono::milliseconds timeout = kTimeout) const {
    std::unique_lock<std::mutex> lock(state_->mu);
    return state_->cv.wait_for(lock, timeout, [&] { return state_->open; });
  }
  bool is_open() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->open;
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;
  };
  std::shared_ptr<State> state_;
  bool owner_;
};

// A barrier for `parties` threads with a deadline: arrive_and_wait() returns true once all
// parties have arrived, false at the deadline (or when the owning test scope ends). Arrivals
// after the barrier tripped return true at once (a one-shot latch, like std::latch).
class Rendezvous {
 public:
  explicit Rendezvous(int parties) : state_(std::make_shared<State>()), owner_(true) {
    state_->remaining = parties;
  }
  Rendezvous(const Rendezvous& o) : state_(o.state_), owner_(false) {}
  Rendezvous& operator=(const Rendezvous&) = delete;
  ~Rendezvous() {
    if (owner_) {
      {
        std::lock_guard<std::mutex> lock(state_->mu);
        state_->broken = true;
      }
      state_->cv.notify_all();
    }
  }

  [[nodiscard]] bool arrive_and_wait(std::chrono::milliseconds timeout = kTimeout) const {
    std::unique_lock<std::mutex> lock(state_->mu);
    if (state_->remaining > 0 && --state_->remaining == 0) state_->cv.notify_all();
    state_->cv.wait_for(lock, timeout, [&] { return state_->remaining == 0 || state_->broken; });
    return state_->remaining == 0;
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    int remaining = 0;
    bool broken = false;
  };
  std::shared_ptr<State> state_;
  bool owner_;
};

// Counts how many callers are inside at once and the most there ever were.
class ConcurrencyTracker {
  struct State {
    std::atomic<int> current{0};
    std::atomic<int> max{0};
  };

 public:
  ConcurrencyTracker() : state_(std::make_shared<State>()) {}

  class Scope {
   public:
    explicit Scope(const ConcurrencyTracker& t) : s_(t.state_.get()) {
      const int now = s_->current.fetch_add(1) + 1;
      int seen = s_->max.load();
      while (seen < now && !s_->max.compare_exchange_weak(seen, now)) {
      }
    }
    ~Scope() { s_->current.fetch_sub(1); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    State* s_;
  };

  int max() const { return state_->max.load(); }
  int current() const { return state_->current.load(); }

 private:
  std::shared_ptr<State> state_;
};

// Polls `pred` until it holds or the deadline passes; returns its last value. For effects that
// have no hand-off of their own (a destructor run by a worker, resources released after the
// result was published). Yields between polls; never sleeps.
inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = kTimeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::yield();
  }
  return true;
}

// A file's whole text ("" if it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// How many times `what` occurs in `s` (overlaps counted).
inline size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

// Starts the global runtime for each test and stops it afterwards.
class GlobalRuntimeTest : public ::testing::Test {
 protected:
  virtual prism::InitOptions options() const { return {.num_cpus = 4}; }
  void SetUp() override {
    ASSERT_FALSE(prism::is_initialized()) << "a previous test left the global runtime running";
    prism::init(options());
  }
  void TearDown() override { prism::shutdown(); }
};

// As GlobalRuntimeTest, with the number of CPU slots as the test parameter (swept 1, 2, 4).
class CpuSweepTest : public ::testing::TestWithParam<int> {
 protected:
  int cpus() const { return GetParam(); }
  void SetUp() override {
    ASSERT_FALSE(prism::is_initialized()) << "a previous test left the global runtime running";
    prism::init({.num_cpus = static_cast<double>(GetParam())});
  }
  void TearDown() override { prism::shutdown(); }
};

inline std::string CpuParamName(const ::testing::TestParamInfo<int>& info) {
  return "cpus" + std::to_string(info.param);
}

}  // namespace prism_test

// Instantiates a CpuSweepTest-derived suite for 1, 2 and 4 CPU slots.
#define PRISM_TEST_SWEEP_CPUS(Suite) \
  INSTANTIATE_TEST_SUITE_P(Cpus, Suite, ::testing::Values(1, 2, 4), ::prism_test::CpuParamName)
