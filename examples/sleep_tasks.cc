// sleep_tasks — the first lesson: a function call becomes a task with .remote().
//
// Sixteen tasks sleep for 0.1 .. 1.5 s (9.9 s in all). Serially that takes 9.9 s; as Prism
// tasks they share the CPU slots, so the time falls towards the best possible schedule for
// the number of slots: we print the longest-processing-time-first (LPT) schedule's length
// beside the measured time. (Sleeping stands in for work: each task holds one CPU slot.)
//
//   ./sleep_tasks                      # full size: 9.9 s serial
//   ./sleep_tasks --scale=0.05 --cpus=4

#include <prism/prism.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <numeric>
#include <vector>

#include "common/check.h"
#include "common/flags.h"
#include "common/table.h"
#include "common/timer.h"

// The remote function: sleeps and returns its index, so that main can check every task ran.
int sleep_task(int index, double seconds) {
  examples::sleep_seconds(seconds);
  return index;
}
PRISM_REMOTE(sleep_task);

// The length of a schedule that gives each task, in the order given, to the slot that frees
// up first (what a FIFO queue of ready tasks achieves).
double list_schedule(const std::vector<double>& tasks, int slots) {
  std::vector<double> load(static_cast<size_t>(slots), 0.0);
  for (double t : tasks) *std::min_element(load.begin(), load.end()) += t;
  return *std::max_element(load.begin(), load.end());
}

// LPT: the same, longest task first; within 4/3 of the best schedule, often equal to it.
double lpt_schedule(std::vector<double> tasks, int slots) {
  std::sort(tasks.begin(), tasks.end(), std::greater<>());
  return list_schedule(tasks, slots);
}

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const double scale = flags.get_double("scale", 1.0, "multiplies every sleep");
  const int cpus = flags.cpus();
  if (!flags.ok()) return 2;

  std::vector<double> seconds = {0.1, 0.2, 0.1, 0.5, 0.7, 0.9, 0.5, 0.4,
                                 1.5, 1.3, 1.0, 0.3, 0.7, 0.6, 0.3, 0.8};
  for (double& s : seconds) s *= scale;
  const int n = static_cast<int>(seconds.size());
  examples::Checker check("sleep_tasks");

  // Serial: plain function calls, one after another.
  std::vector<int> serial_results;
  const double serial_s = examples::time_seconds([&] {
    for (int i = 0; i < n; ++i) serial_results.push_back(sleep_task(i, seconds[i]));
  });

  // Prism: submit every task (each .remote() returns a ref at once), then get them all.
  prism::init({.num_cpus = static_cast<double>(cpus)});
  std::vector<int> results;
  const double prism_s = examples::time_seconds([&] {
    std::vector<prism::ObjectRef<int>> refs;
    for (int i = 0; i < n; ++i) refs.push_back(prism::task(sleep_task).remote(i, seconds[i]));
    results = prism::get(refs);  // blocks until all are done; values in submission order
  });
  prism::shutdown();

  const double total = std::accumulate(seconds.begin(), seconds.end(), 0.0);
  examples::Table table({"run", "seconds", "ideal s", "speed-up"});
  table.add({"serial", examples::fixed(serial_s), examples::fixed(total), "1.00x"});
  table.add({"prism, " + std::to_string(cpus) + " CPU slots", examples::fixed(prism_s),
             examples::fixed(lpt_schedule(seconds, cpus)), examples::times(serial_s / prism_s)});
  table.print();
  std::printf("ideal = LPT schedule; submission order on a FIFO queue gives %.2f s\n",
              list_schedule(seconds, cpus));
  examples::print_speedup("sleep_tasks", serial_s, prism_s);

  std::vector<int> expected(static_cast<size_t>(n));
  std::iota(expected.begin(), expected.end(), 0);
  check.expect(serial_results == expected, "serial calls returned the wrong indices");
  check.expect(results == expected, "prism::get returned the wrong values or order");
  // Physics, not performance: no schedule beats the longest task or total / slots.
  check.expect(
      prism_s >= 0.95 * std::max(*std::max_element(seconds.begin(), seconds.end()), total / cpus),
      "the tasks finished faster than possible: they did not all sleep");
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("sleep_tasks", e);
}
