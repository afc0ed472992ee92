// A long, seeded random mix of ordinary operations from several client threads at once: chains,
// fan-in, fractional / zero / two-CPU requests, shallow nesting, actors (plain calls and methods
// that submit and get a nested task), cancel, wait, put. Every result is checked against its
// expected value, and every blocking call has a deadline: a deadline that passes fails the test
// with the operation that hung (a hang is a failure, never a stuck test).
//
// The seed is printed with every failure; PRISM_RANDOM_MIX_SEED=<n> replays a run (the
// interleaving of the client threads still differs from run to run).

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using namespace std::chrono_literals;

#if defined(__SANITIZE_THREAD__)
#define PRISM_RANDOM_MIX_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PRISM_RANDOM_MIX_TSAN 1
#endif
#endif

// Operations per client thread: a passing run takes a few seconds in a release build and stays
// well under 20 s under ThreadSanitizer.
#if defined(PRISM_RANDOM_MIX_TSAN)
constexpr int kOpsPerClient = 3000;
#else
constexpr int kOpsPerClient = 20000;
#endif
constexpr int kClients = 4;

// Deadlines. A task's nested get gives up first, so that a hang inside a task is reported as
// such (by the task's error) before the client's own get gives up.
constexpr std::chrono::seconds kClientDeadline{10};
constexpr std::chrono::seconds kNestedDeadline{5};

// Thrown inside a task whose nested get/wait passed its deadline; the client sees a TaskError
// whose message starts with this marker.
constexpr const char* kNestedHang = "NESTED HANG: ";

// ---- tasks ----

// How a child task asks for CPU (chosen by the caller): 0 = default (1 CPU), 1 = 0.5, 2 = 0.
int mix_kind(int mode) { return ((mode % 3) + 3) % 3; }

template <typename Caller>
auto with_cpus(Caller&& c, int mode) {
  switch (mix_kind(mode)) {
    case 1:
      return std::forward<Caller>(c).num_cpus(0.5);
    case 2:
      return std::forward<Caller>(c).num_cpus(0);
    default:
      return std::forward<Caller>(c).num_cpus(1);
  }
}

template <typename T>
T nested_get(const prism::ObjectRef<T>& ref, const std::string& what) {
  try {
    return prism::get(ref, kNestedDeadline);
  } catch (const prism::TimeoutError&) {
    throw std::runtime_error(kNestedHang + what + ": nested prism::get timed out after " +
                             std::to_string(kNestedDeadline.count()) + " s");
  }
}

int mix_inc(int x) { return x + 1; }
int mix_square(int x) { return x * x; }
int mix_triple(int x) { return 3 * x + 1; }
int mix_add(int a, int b) { return a + b; }
int64_t mix_sum(const std::vector<int>& xs) {
  return std::accumulate(xs.begin(), xs.end(), int64_t{0});
}
int64_t mix_vec_sum(const std::vector<int64_t>& xs) {
  return std::accumulate(xs.begin(), xs.end(), int64_t{0});
}

// Submits n children mix_triple(x + i), each with its own request, and gets them. With
// use_wait, first waits for all of them with prism::wait.
int mix_parent(int n, int x, int mode, bool use_wait) {
  std::vector<prism::ObjectRef<int>> kids;
  for (int i = 0; i < n; ++i) {
    kids.push_back(with_cpus(prism::task(mix_triple), mode + i).remote(x + i));
  }
  if (use_wait) {
    auto [ready, not_ready] = prism::wait(kids, kids.size(), kNestedDeadline);
    if (!not_ready.empty()) {
      throw std::runtime_error(std::string(kNestedHang) + "mix_parent: prism::wait saw " +
                               std::to_string(not_ready.size()) + " of " +
                               std::to_string(kids.size()) + " children not ready after " +
                               std::to_string(kNestedDeadline.count()) + " s");
    }
  }
  int sum = 0;
  for (int i = 0; i < n; ++i) {
    sum += nested_get(kids[i], "mix_parent child " + std::to_string(i) + " of " +
                                   std::to_string(n) + " (cpu mode " +
                                   std::to_string(mix_kind(mode + i)) + ")");
  }
  return sum;
}

PRISM_REMOTE(mix_inc, mix_square, mix_triple, mix_add, mix_sum, mix_vec_sum, mix_parent);

int expected_parent(int n, int x) {
  int sum = 0;
  for (int i = 0; i < n; ++i) sum += 3 * (x + i) + 1;
  return sum;
}

// ---- actor ----

struct MixCounter {
  explicit MixCounter(int64_t start) : n(start) {}
  int64_t add(int64_t k) { return n += k; }
  // Submits mix_triple(k) with the given CPU mode and gets it: adds 3k+1.
  int64_t add_nested(int k, int mode) {
    auto r = with_cpus(prism::task(mix_triple), mode).remote(k);
    return n += nested_get(r, "MixCounter::add_nested (child cpu mode " +
                                  std::to_string(mix_kind(mode)) + ")");
  }
  int64_t read() const { return n; }
  int64_t n;
};
PRISM_ACTOR(MixCounter, &MixCounter::add, &MixCounter::add_nested, &MixCounter::read);

// ---- the clients ----

// A blocking call whose deadline passed (the client's own get/wait).
struct Hang : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A result that is not the expected one, or an error where a value was expected.
struct Wrong : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Failures {
 public:
  void add(std::string f) {
    std::lock_guard<std::mutex> lock(mu_);
    list_.push_back(std::move(f));
    stop_.store(true);
  }
  bool stop() const { return stop_.load(std::memory_order_relaxed); }
  std::vector<std::string> list() const {
    std::lock_guard<std::mutex> lock(mu_);
    return list_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> list_;
  std::atomic<bool> stop_{false};
};

enum class Op {
  kChain,
  kFanIn,
  kFractional,
  kZeroCpu,
  kTwoCpu,
  kNested,
  kOwnActor,
  kSharedActor,
  kShortActor,
  kCancel,
  kWait,
  kPut,
  kCount
};

const char* op_name(Op op) {
  switch (op) {
    case Op::kChain: return "chain";
    case Op::kFanIn: return "fan-in";
    case Op::kFractional: return "fractional";
    case Op::kZeroCpu: return "zero-cpu";
    case Op::kTwoCpu: return "two-cpu";
    case Op::kNested: return "nested";
    case Op::kOwnActor: return "own-actor";
    case Op::kSharedActor: return "shared-actor";
    case Op::kShortActor: return "short-lived-actor";
    case Op::kCancel: return "cancel";
    case Op::kWait: return "wait";
    case Op::kPut: return "put";
    default: return "?";
  }
}

class Client {
 public:
  Client(int id, uint64_t seed, int cpus, prism::ActorHandle<MixCounter> shared,
         std::atomic<int64_t>* shared_added, Failures* failures)
      : id_(id),
        rng_(seed),
        cpus_(cpus),
        shared_(std::move(shared)),
        shared_added_(shared_added),
        failures_(failures) {}

  void run() {
    // Weights of the operations (a 2-CPU task only on a node that has 2 CPUs).
    std::vector<double> weights(static_cast<size_t>(Op::kCount), 0);
    auto w = [&](Op op, double x) { weights[static_cast<size_t>(op)] = x; };
    w(Op::kChain, 12);
    w(Op::kFanIn, 8);
    w(Op::kFractional, 10);
    w(Op::kZeroCpu, 5);
    w(Op::kTwoCpu, cpus_ >= 2 ? 3 : 0);
    w(Op::kNested, 14);
    w(Op::kOwnActor, 10);
    w(Op::kSharedActor, 6);
    w(Op::kShortActor, 8);
    w(Op::kCancel, 8);
    w(Op::kWait, 6);
    w(Op::kPut, 5);
    std::discrete_distribution<int> pick(weights.begin(), weights.end());

    try {
      own_ = prism::actor<MixCounter>(int64_t{1000} * id_).remote();
      own_value_ = int64_t{1000} * id_;
    } catch (const std::exception& e) {
      failures_->add(where("creating the client's actor") + ": " + e.what());
      return;
    }

    for (op_index_ = 0; op_index_ < kOpsPerClient && !failures_->stop(); ++op_index_) {
      const Op op = static_cast<Op>(pick(rng_));
      op_ = op_name(op);
      step_ = "submitting";
      try {
        run_op(op);
      } catch (const Hang& e) {
        failures_->add(where(step_) + ": HANG: " + e.what());
      } catch (const Wrong& e) {
        failures_->add(where(step_) + ": WRONG RESULT: " + e.what());
      } catch (const prism::TaskError& e) {
        const bool hang = e.message().rfind(kNestedHang, 0) == 0;
        failures_->add(where(step_) + (hang ? ": HANG inside a task: " : ": unexpected error: ") +
                       e.what());
      } catch (const std::exception& e) {
        failures_->add(where(step_) + ": unexpected error: " + e.what());
      }
    }
  }

  int ops_done() const { return op_index_; }

 private:
  std::string where(const std::string& step) const {
    std::ostringstream s;
    s << "client " << id_ << ", op #" << op_index_ << " (" << op_ << "), " << step;
    return s.str();
  }

  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool coin(double p = 0.5) { return std::bernoulli_distribution(p)(rng_); }

  // Every blocking call of the client goes through these: the step names what it waits for.
  template <typename T>
  T get(const prism::ObjectRef<T>& ref, const std::string& what) {
    step_ = "prism::get of " + what;
    try {
      return prism::get(ref, kClientDeadline);
    } catch (const prism::TimeoutError&) {
      throw Hang(what + ": prism::get timed out after " +
                 std::to_string(kClientDeadline.count()) + " s");
    }
  }
  template <typename T>
  std::vector<T> get_all(const std::vector<prism::ObjectRef<T>>& refs, const std::string& what) {
    step_ = "prism::get of " + what;
    try {
      return prism::get(refs, kClientDeadline);
    } catch (const prism::TimeoutError&) {
      throw Hang(what + ": prism::get(refs) timed out after " +
                 std::to_string(kClientDeadline.count()) + " s");
    }
  }
  template <typename T>
  void expect_eq(const T& actual, const T& expected, const std::string& what) {
    if (!(actual == expected)) {
      std::ostringstream s;
      s << what << ": got " << actual << ", expected " << expected;
      throw Wrong(s.str());
    }
  }

  void run_op(Op op) {
    switch (op) {
      case Op::kChain: return chain();
      case Op::kFanIn: return fan_in();
      case Op::kFractional: return fractional();
      case Op::kZeroCpu: return zero_cpu();
      case Op::kTwoCpu: return two_cpu();
      case Op::kNested: return nested();
      case Op::kOwnActor: return own_actor();
      case Op::kSharedActor: return shared_actor();
      case Op::kShortActor: return short_actor();
      case Op::kCancel: return cancel();
      case Op::kWait: return wait();
      case Op::kPut: return put();
      default: return;
    }
  }

  // x -> x+1 -> ... (each link a task taking the previous ref), some links fractional.
  void chain() {
    const int len = uniform(2, 8);
    const int x = uniform(0, 1000);
    auto ref = prism::task(mix_inc).remote(x);
    for (int i = 1; i < len; ++i) {
      ref = coin(0.25) ? with_cpus(prism::task(mix_inc), uniform(0, 2)).remote(ref)
                       : prism::task(mix_inc).remote(ref);
    }
    expect_eq(get(ref, "the end of a chain of " + std::to_string(len)), x + len, "chain");
  }

  // Several squares into one sum (a vector of refs), and two refs into one add.
  void fan_in() {
    const int n = uniform(2, 8);
    std::vector<prism::ObjectRef<int>> parts;
    int64_t expected = 0;
    for (int i = 0; i < n; ++i) {
      const int v = uniform(0, 100);
      expected += v * v;
      parts.push_back(coin(0.2) ? with_cpus(prism::task(mix_square), uniform(0, 2)).remote(v)
                                : prism::task(mix_square).remote(v));
    }
    auto sum = prism::task(mix_sum).remote(parts);
    auto pair = prism::task(mix_add).remote(parts.front(), parts.back());
    expect_eq(get(sum, "a fan-in of " + std::to_string(n) + " refs"), expected, "fan-in sum");
    const int f = get_all(std::vector{parts.front()}, "the first fan-in part")[0];
    const int b = get(parts.back(), "the last fan-in part");
    expect_eq(get(pair, "an add of two refs"), f + b, "fan-in add");
  }

  // 0.5-CPU tasks, some depending on each other.
  void fractional() {
    const int n = uniform(1, 6);
    std::vector<prism::ObjectRef<int>> refs;
    std::vector<int> expected;
    for (int i = 0; i < n; ++i) {
      const int v = uniform(0, 1000);
      if (!refs.empty() && coin(0.4)) {
        refs.push_back(prism::task(mix_inc).num_cpus(0.5).remote(refs.back()));
        expected.push_back(expected.back() + 1);
      } else {
        refs.push_back(prism::task(mix_triple).num_cpus(0.5).remote(v));
        expected.push_back(3 * v + 1);
      }
    }
    for (int i = 0; i < n; ++i) {
      expect_eq(get(refs[i], "0.5-CPU task " + std::to_string(i) + " of " + std::to_string(n)),
                expected[i], "fractional task");
    }
  }

  // Tasks that ask for no CPU, mixed with default ones.
  void zero_cpu() {
    const int x = uniform(0, 1000);
    auto a = prism::task(mix_triple).num_cpus(0).remote(x);
    auto b = prism::task(mix_inc).remote(a);
    auto c = prism::task(mix_add).num_cpus(0).remote(a, b);
    expect_eq(get(c, "a zero-CPU add of (zero-CPU task, default task)"), (3 * x + 1) * 2 + 1,
              "zero-cpu");
  }

  // A task that takes the whole 2-CPU node, between default ones.
  void two_cpu() {
    const int x = uniform(0, 1000);
    auto a = prism::task(mix_inc).remote(x);
    auto b = prism::task(mix_triple).num_cpus(2).remote(a);
    auto c = prism::task(mix_inc).remote(b);
    expect_eq(get(c, "a default task after a 2-CPU task"), 3 * (x + 1) + 2, "two-cpu");
  }

  // A parent (default, 0.5 or 0 CPU) that submits 1-3 children and gets them.
  void nested() {
    const int n = uniform(1, 3);
    const int x = uniform(0, 1000);
    const int mode = uniform(0, 2);
    const bool use_wait = coin(0.3);
    const int parent_mode = uniform(0, 2);
    auto p = with_cpus(prism::task(mix_parent), parent_mode).remote(n, x, mode, use_wait);
    std::string what = "a parent task (cpu mode " + std::to_string(mix_kind(parent_mode)) +
                       ") with " + std::to_string(n) + " nested children";
    if (coin(0.3)) {
      auto q = prism::task(mix_inc).remote(p);  // a dependent of the parent
      expect_eq(get(q, "the dependent of " + what), expected_parent(n, x) + 1, "nested+1");
    } else {
      expect_eq(get(p, what), expected_parent(n, x), "nested");
    }
  }

  // The client's own long-lived actor (default resources): plain and nested calls, sometimes
  // several in flight; calls run in order, so each result is known.
  void own_actor() {
    const int calls = uniform(1, 4);
    std::vector<prism::ObjectRef<int64_t>> refs;
    std::vector<int64_t> expected;
    std::vector<std::string> names;
    for (int i = 0; i < calls; ++i) {
      if (coin(0.5)) {
        const int k = uniform(1, 50);
        const int mode = uniform(0, 2);
        refs.push_back(own_.task(&MixCounter::add_nested).remote(k, mode));
        own_value_ += 3 * k + 1;
        names.push_back("own actor's add_nested (child cpu mode " + std::to_string(mode) + ")");
      } else {
        const int k = uniform(1, 50);
        refs.push_back(own_.task(&MixCounter::add).remote(int64_t{k}));
        own_value_ += k;
        names.push_back("own actor's add");
      }
      expected.push_back(own_value_);
    }
    for (int i = 0; i < calls; ++i) expect_eq(get(refs[i], names[i]), expected[i], names[i]);
  }

  // One actor shared by all clients: results grow in each client's submission order.
  void shared_actor() {
    const int k = uniform(1, 20);
    prism::ObjectRef<int64_t> r;
    int64_t added;
    std::string what;
    if (coin(0.5)) {
      const int mode = uniform(0, 2);
      r = shared_.task(&MixCounter::add_nested).remote(k, mode);
      added = 3 * k + 1;
      what = "shared actor's add_nested (child cpu mode " + std::to_string(mode) + ")";
    } else {
      r = shared_.task(&MixCounter::add).remote(int64_t{k});
      added = k;
      what = "shared actor's add";
    }
    shared_added_->fetch_add(added);
    const int64_t v = get(r, what);
    if (v < last_shared_ + added) {
      throw Wrong(what + ": got " + std::to_string(v) + ", but this client's previous call saw " +
                  std::to_string(last_shared_) + " and this one added " + std::to_string(added));
    }
    last_shared_ = v;
  }

  // An actor created for a few calls, default or 0.5 CPU, then dropped.
  void short_actor() {
    const bool half = coin(0.5);
    const int64_t start = uniform(0, 1000);
    auto creator = prism::actor<MixCounter>(start);
    auto a = half ? creator.num_cpus(0.5).remote() : creator.remote();
    const std::string kind = half ? "0.5-CPU actor" : "default actor";
    const int calls = uniform(1, 4);
    int64_t value = start;
    std::vector<prism::ObjectRef<int64_t>> refs;
    std::vector<int64_t> expected;
    std::vector<std::string> names;
    for (int i = 0; i < calls; ++i) {
      const int k = uniform(1, 50);
      if (coin(0.5)) {
        const int mode = uniform(0, 2);
        refs.push_back(a.task(&MixCounter::add_nested).remote(k, mode));
        value += 3 * k + 1;
        names.push_back("short-lived " + kind + "'s add_nested (child cpu mode " +
                        std::to_string(mode) + ")");
      } else {
        refs.push_back(a.task(&MixCounter::add).remote(int64_t{k}));
        value += k;
        names.push_back("short-lived " + kind + "'s add");
      }
      expected.push_back(value);
    }
    if (coin(0.3)) {
      refs.push_back(a.task(&MixCounter::read).remote());
      expected.push_back(value);
      names.push_back("short-lived " + kind + "'s read");
    }
    for (size_t i = 0; i < refs.size(); ++i) {
      expect_eq(get(refs[i], names[i]), expected[i], names[i]);
    }
  }

  // Cancels a task just submitted (sometimes behind a dependency, sometimes with a fractional
  // request), with a dependent. Each get must return the right value or throw
  // TaskCancelledError; after cancel() returned true, a value is wrong; the dependent ends as
  // its argument did (cancelled with it, or the value + 1).
  void cancel() {
    const int x = uniform(0, 1000);
    const int mode = uniform(0, 2);
    prism::ObjectRef<int> target;
    int expected;
    if (coin(0.5)) {
      auto dep = prism::task(mix_inc).remote(x);
      target = with_cpus(prism::task(mix_triple), mode).remote(dep);
      expected = 3 * (x + 1) + 1;
    } else {
      target = with_cpus(prism::task(mix_triple), mode).remote(x);
      expected = 3 * x + 1;
    }
    auto dependent = prism::task(mix_inc).remote(target);
    const bool cancelled = prism::cancel(target);
    const std::string what = "a task (cpu mode " + std::to_string(mix_kind(mode)) +
                             ") whose cancel() returned " + (cancelled ? "true" : "false");
    bool target_cancelled = false;
    try {
      const int v = get(target, what);
      if (cancelled) throw Wrong(what + ": returned " + std::to_string(v));
      expect_eq(v, expected, what);
    } catch (const prism::TaskCancelledError&) {
      target_cancelled = true;
    }
    const std::string dep_what = "the dependent of " + what;
    try {
      const int v = get(dependent, dep_what);
      if (target_cancelled) {
        throw Wrong(dep_what + ": returned " + std::to_string(v) + " after its argument was "
                    "cancelled");
      }
      expect_eq(v, expected + 1, dep_what);
    } catch (const prism::TaskCancelledError& e) {
      if (!target_cancelled) {
        throw Wrong(dep_what + ": threw TaskCancelledError though its argument has a value: " +
                    e.what());
      }
    }
  }

  // prism::wait on a few refs (one first, then all), then their values.
  void wait() {
    const int n = uniform(2, 5);
    std::vector<prism::ObjectRef<int>> refs;
    std::vector<int> expected;
    for (int i = 0; i < n; ++i) {
      const int v = uniform(0, 1000);
      refs.push_back(coin(0.3) ? with_cpus(prism::task(mix_triple), uniform(0, 2)).remote(v)
                               : prism::task(mix_triple).remote(v));
      expected.push_back(3 * v + 1);
    }
    const std::string what = "prism::wait on " + std::to_string(n) + " refs";
    step_ = what + " (num_returns 1)";
    auto [one, rest] = prism::wait(refs, 1, kClientDeadline);
    if (one.size() != 1) {
      throw Hang(what + " (num_returns 1): nothing ready after " +
                 std::to_string(kClientDeadline.count()) + " s");
    }
    if (one.size() + rest.size() != refs.size()) throw Wrong(what + ": refs lost");
    step_ = what + " (all)";
    auto [ready, not_ready] = prism::wait(refs, refs.size(), kClientDeadline);
    if (!not_ready.empty()) {
      throw Hang(what + " (all): " + std::to_string(not_ready.size()) + " not ready after " +
                 std::to_string(kClientDeadline.count()) + " s");
    }
    const std::vector<int> values = get_all(ready, "the refs just waited on");
    expect_eq(values.size(), expected.size(), what + ": count");
    for (int i = 0; i < n; ++i) expect_eq(values[i], expected[i], what + ": value");
  }

  // put a value, read it back, pass it to a task.
  void put() {
    const int n = uniform(1, 64);
    std::vector<int64_t> v(n);
    for (auto& e : v) e = uniform(-1000, 1000);
    const int64_t sum = std::accumulate(v.begin(), v.end(), int64_t{0});
    auto ref = prism::put(v);
    auto s = prism::task(mix_vec_sum).remote(ref);
    const auto back = get(ref, "a put value");
    if (back != v) throw Wrong("put: the value read back differs");
    expect_eq(get(s, "a task reading a put value"), sum, "put sum");
  }

  const int id_;
  std::mt19937_64 rng_;
  const int cpus_;
  prism::ActorHandle<MixCounter> shared_;
  std::atomic<int64_t>* shared_added_;
  Failures* failures_;
  prism::ActorHandle<MixCounter> own_;
  int64_t own_value_ = 0;
  int64_t last_shared_ = 0;
  int op_index_ = 0;
  std::string op_ = "-";
  std::string step_ = "-";
};

uint64_t mix_seed() {
  if (const char* s = std::getenv("PRISM_RANDOM_MIX_SEED"); s != nullptr && *s != '\0') {
    return std::strtoull(s, nullptr, 10);
  }
  return std::random_device{}() ^
         static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
}

class RandomMixTest : public prism_test::CpuSweepTest {};

TEST_P(RandomMixTest, FourClientsOrdinaryOperations) {
  const uint64_t seed = mix_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (replay with PRISM_RANDOM_MIX_SEED=" +
               std::to_string(seed) + "), num_cpus " + std::to_string(cpus()));

  Failures failures;
  std::atomic<int64_t> shared_added{0};
  const int64_t shared_start = 7;
  auto shared = prism::actor<MixCounter>(shared_start).remote();

  std::vector<std::unique_ptr<Client>> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.push_back(std::make_unique<Client>(t, seed + 0x9E3779B97F4A7C15ull * (t + 1), cpus(),
                                               shared, &shared_added, &failures));
  }
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (auto& c : clients) threads.emplace_back([&c] { c->run(); });
  for (auto& th : threads) th.join();  // always joined: failures are only collected in there
  const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start);

  const std::vector<std::string> list = failures.list();
  std::ostringstream report;
  for (const auto& f : list) report << "\n  " << f;
  ASSERT_TRUE(list.empty()) << list.size() << " failure(s) after " << elapsed.count()
                            << " s (in the order seen: later ones may only wait behind the first):"
                            << report.str();
  for (int t = 0; t < kClients; ++t) EXPECT_EQ(clients[t]->ops_done(), kOpsPerClient);

  // Every add on the shared actor from every client is in its total.
  try {
    EXPECT_EQ(prism::get(shared.task(&MixCounter::read).remote(), kClientDeadline),
              shared_start + shared_added.load());
  } catch (const prism::TimeoutError&) {
    FAIL() << "HANG: the final read of the shared actor timed out";
  }
  std::cout << "[ random mix ] " << kClients << " clients x " << kOpsPerClient << " ops in "
            << elapsed.count() << " s\n";
}

INSTANTIATE_TEST_SUITE_P(RandomMix, RandomMixTest, ::testing::Values(2, 1),
                         ::prism_test::CpuParamName);

}  // namespace
