// tree_add — passing refs to tasks builds a task graph; its shape sets the running time.
//
// add(x, y) takes one second. Summing 8 values as a chain, add(add(add(1, 2), 3), 4)...,
// needs 7 adds one after another: 7 s. As a tree, the 4 adds of the first level run at once,
// then 2, then 1: 3 s with 4 or more CPU slots (4 s on 2 slots). A ref passed to .remote()
// is a dependency: the task starts when the value exists and receives it as a plain int.
//
// The tree is written twice: by hand, and as the tutorial's loop that takes two refs from the
// front of a list and appends their sum at the back, which builds the same tree for any n.
//
//   ./tree_add                       # full size: 7 s serial
//   ./tree_add --scale=0.1 --cpus=4

#include <prism/prism.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/flags.h"
#include "common/table.h"
#include "common/timer.h"

// The remote function. The delay is an argument (not a global) so that it also reaches the
// worker processes of a cluster.
int add(int x, int y, double seconds) {
  examples::sleep_seconds(seconds);
  return x + y;
}
PRISM_REMOTE(add);

int chain(double unit) {  // 1+2, +3, +4, ... +8: each add waits for the previous one
  prism::ObjectRef<int> sum = prism::task(add).remote(1, 2, unit);
  for (int v = 3; v <= 8; ++v) sum = prism::task(add).remote(sum, v, unit);
  return prism::get(sum);
}

int tree_by_hand(double unit) {
  auto a = prism::task(add).remote(1, 2, unit);  // level 1: four adds at once
  auto b = prism::task(add).remote(3, 4, unit);
  auto c = prism::task(add).remote(5, 6, unit);
  auto d = prism::task(add).remote(7, 8, unit);
  auto ab = prism::task(add).remote(a, b, unit);  // level 2: two adds
  auto cd = prism::task(add).remote(c, d, unit);
  return prism::get(prism::task(add).remote(ab, cd, unit));  // level 3
}

int tree_by_loop(double unit) {
  std::vector<prism::ObjectRef<int>> values;
  for (int v = 1; v <= 8; ++v) values.push_back(prism::put(v));  // plain values as refs
  while (values.size() > 1) {  // values = values[2:] + [add.remote(values[0], values[1])]
    auto sum = prism::task(add).remote(values[0], values[1], unit);
    values.erase(values.begin(), values.begin() + 2);
    values.push_back(sum);
  }
  return prism::get(values[0]);
}

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const double unit = flags.get_double("scale", 1.0, "seconds per add");
  const int cpus = flags.cpus();
  if (!flags.ok()) return 2;
  examples::Checker check("tree_add");

  // Ideal times in adds: the chain is sequential; each tree level needs ceil(adds / slots).
  auto rounds = [&](int adds) { return (adds + cpus - 1) / cpus; };
  const double chain_ideal = 7 * unit;
  const double tree_ideal = (rounds(4) + rounds(2) + rounds(1)) * unit;

  int serial_sum = 0;
  const double serial_s = examples::time_seconds([&] {
    serial_sum =
        add(add(add(add(add(add(add(1, 2, unit), 3, unit), 4, unit), 5, unit), 6, unit), 7, unit),
            8, unit);
  });

  prism::init({.num_cpus = static_cast<double>(cpus)});
  int chain_sum = 0, hand_sum = 0, loop_sum = 0;
  const double chain_s = examples::time_seconds([&] { chain_sum = chain(unit); });
  const double hand_s = examples::time_seconds([&] { hand_sum = tree_by_hand(unit); });
  const double loop_s = examples::time_seconds([&] { loop_sum = tree_by_loop(unit); });
  prism::shutdown();

  examples::Table table(
      {"run (" + std::to_string(cpus) + " CPU slots)", "sum", "seconds", "ideal s", "speed-up"});
  auto row = [&](const char* name, int sum, double s, double ideal) {
    table.add({name, std::to_string(sum), examples::fixed(s), examples::fixed(ideal),
               examples::times(serial_s / s)});
  };
  row("serial calls", serial_sum, serial_s, chain_ideal);
  row("prism chain", chain_sum, chain_s, chain_ideal);
  row("prism tree, by hand", hand_sum, hand_s, tree_ideal);
  row("prism tree, loop", loop_sum, loop_s, tree_ideal);
  table.print();
  examples::print_speedup("tree_add (tree by hand)", serial_s, hand_s);

  for (int s : {serial_sum, chain_sum, hand_sum, loop_sum}) {
    check.expect(s == 36, "a sum of 1..8 came out as " + std::to_string(s) + ", not 36");
  }
  // The tree must really run in parallel. A wide margin: half of the ideal gain is enough.
  const double ideal_gain = chain_ideal / tree_ideal;
  const double want = 1 + (ideal_gain - 1) / 2;
  check.expect(chain_s / hand_s >= want && chain_s / loop_s >= want,
               "the trees were not faster than the chain by " + examples::times(want) + " (chain " +
                   examples::fixed(chain_s) + " s, trees " + examples::fixed(hand_s) + " s and " +
                   examples::fixed(loop_s) + " s)");
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("tree_add", e);
}
