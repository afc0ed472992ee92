// counter_actor — actors: stateful workers whose method calls run one at a time, in order.
//
// 1. Two counters, starting at 0 and 100, each incremented three times, the calls alternating
//    between them: the results are [1, 101, 2, 102, 3, 103]. Calls on one actor run in the
//    order they were made; the two actors run at the same time, so the six calls take the
//    time of three.
// 2. The incrementer pattern: a handle is passed to two tasks, which both call the same actor,
//    their calls alternating. The actor runs them one at a time, so every value is handed out
//    exactly once (no lost update) and this part gains nothing from parallelism.
//
// Each increment simulates --work seconds of work (a sleep), so there is a time to compare.
//
//   ./counter_actor
//   ./counter_actor --work=0.01 --cpus=2

#include <prism/prism.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/flags.h"
#include "common/table.h"
#include "common/timer.h"

class Counter {
 public:
  Counter(int start, double work_s) : value_(start), work_s_(work_s) {}
  int increment() {
    examples::sleep_seconds(work_s_);
    return ++value_;
  }
  // The same, remembering who called (to show how the calls of two tasks interleave).
  int increment_from(char caller) {
    callers_ += caller;
    return increment();
  }
  std::string callers() const { return callers_; }

 private:
  int value_;
  double work_s_;
  std::string callers_;
};
PRISM_ACTOR(Counter, &Counter::increment, &Counter::increment_from, &Counter::callers);

// A task holding an actor handle: calls the actor `times` times, each after the previous
// answer, and returns what it saw.
std::vector<int> incrementer(prism::ActorHandle<Counter> counter, char name, int times) {
  std::vector<int> seen;
  for (int i = 0; i < times; ++i) {
    seen.push_back(prism::get(counter.task(&Counter::increment_from).remote(name)));
  }
  return seen;
}
PRISM_REMOTE(incrementer);

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const double work = flags.get_double("work", 0.2, "seconds per increment");
  const int times = static_cast<int>(flags.get_int("times", 3, "calls per incrementer task"));
  const int cpus = flags.cpus();
  if (!flags.ok()) return 2;
  examples::Checker check("counter_actor");

  // Serial: the same objects, called directly.
  std::vector<int> serial;
  const double serial1_s = examples::time_seconds([&] {
    Counter a(0, work), b(100, work);
    for (int i = 0; i < 3; ++i) {
      serial.push_back(a.increment());
      serial.push_back(b.increment());
    }
  });
  const double serial2_s = examples::time_seconds([&] {
    Counter shared(0, work);
    for (int i = 0; i < 2 * times; ++i) shared.increment_from(i % 2 ? 'B' : 'A');
  });

  prism::init({.num_cpus = static_cast<double>(cpus)});
  std::vector<int> results;
  const double prism1_s = examples::time_seconds([&] {
    auto a = prism::actor<Counter>(0, work).remote();  // the constructor runs as a task
    auto b = prism::actor<Counter>(100, work).remote();
    std::vector<prism::ObjectRef<int>> refs;
    for (int i = 0; i < 3; ++i) {
      refs.push_back(a.task(&Counter::increment).remote());
      refs.push_back(b.task(&Counter::increment).remote());
    }
    results = prism::get(refs);
  });

  std::vector<int> seen_a, seen_b;
  std::string callers;
  const double prism2_s = examples::time_seconds([&] {
    auto shared = prism::actor<Counter>(0, work).remote();
    auto ta = prism::task(incrementer).remote(shared, 'A', times);  // handles are copyable
    auto tb = prism::task(incrementer).remote(shared, 'B', times);
    seen_a = prism::get(ta);
    seen_b = prism::get(tb);
    callers = prism::get(shared.task(&Counter::callers).remote());
  });
  prism::shutdown();

  std::printf("two counters: [");
  for (size_t i = 0; i < results.size(); ++i) std::printf(i ? ", %d" : "%d", results[i]);
  std::printf("]\nthe shared counter's calls came from: %s\n", callers.c_str());
  examples::Table table(
      {"part (" + std::to_string(cpus) + " CPUs)", "serial s", "prism s", "speed-up", "ideal"});
  table.add({"two counters, 6 calls", examples::fixed(serial1_s), examples::fixed(prism1_s),
             examples::times(serial1_s / prism1_s), "2.00x"});
  table.add({"one counter, 2 callers", examples::fixed(serial2_s), examples::fixed(prism2_s),
             examples::times(serial2_s / prism2_s), "1.00x"});
  table.print();
  examples::print_speedup("counter_actor (two counters)", serial1_s, prism1_s);

  const std::vector<int> expected = {1, 101, 2, 102, 3, 103};
  check.expect(serial == expected, "the serial counters went wrong");
  check.expect(results == expected, "the actors did not return [1, 101, 2, 102, 3, 103]");
  // Each caller sees increasing values; together they saw 1 .. 2*times, each exactly once.
  std::vector<int> all = seen_a;
  all.insert(all.end(), seen_b.begin(), seen_b.end());
  std::sort(all.begin(), all.end());
  std::vector<int> want(static_cast<size_t>(2 * times));
  for (int i = 0; i < 2 * times; ++i) want[i] = i + 1;
  check.expect(std::is_sorted(seen_a.begin(), seen_a.end()) &&
                   std::is_sorted(seen_b.begin(), seen_b.end()) && all == want,
               "the incrementers lost or duplicated an update");
  check.expect(std::count(callers.begin(), callers.end(), 'A') == times &&
                   std::count(callers.begin(), callers.end(), 'B') == times,
               "the shared counter saw the wrong calls: " + callers);
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("counter_actor", e);
}
