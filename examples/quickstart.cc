// quickstart — a tour of Prism in thirty lines: tasks, refs as arguments, put, an actor.
#include <prism/prism.h>

#include <cstdio>
#include <vector>

#include "common/flags.h"

int add(int a, int b) { return a + b; }
int sum(const std::vector<int>& v) {
  int s = 0;
  for (int x : v) s += x;
  return s;
}
PRISM_REMOTE(add, sum);  // registered by name (needed in cluster mode)

struct Counter {
  int n = 0;
  int increment() { return ++n; }
};
PRISM_ACTOR(Counter, &Counter::increment);

int main(int argc, char** argv) {
  examples::Flags flags(argc, argv);
  const int cpus = flags.cpus();
  if (!flags.ok()) return 2;

  prism::init({.num_cpus = static_cast<double>(cpus)});  // this process is the whole cluster
  auto a = prism::task(add).remote(1, 2);             // a task: its ref comes back at once
  auto b = prism::task(add).remote(a, 3);             // a ref as argument: runs after a
  auto ones = prism::put(std::vector<int>(1000, 1));  // stored once, read without copies
  auto s = prism::task(sum).remote(ones);
  auto counter = prism::actor<Counter>().remote();    // a stateful worker
  counter.task(&Counter::increment).remote();         // calls on one actor run in order
  auto second = counter.task(&Counter::increment).remote();
  const int vb = prism::get(b), vs = prism::get(s), vc = prism::get(second);  // wait and read
  prism::shutdown();

  std::printf("add(add(1, 2), 3) = %d, sum of the put vector = %d, counter = %d\n", vb, vs, vc);
  const bool ok = vb == 6 && vs == 1000 && vc == 2;
  std::printf("quickstart: %s\n", ok ? "result check OK" : "WRONG RESULT (expected 6, 1000, 2)");
  return ok ? 0 : 1;
}
