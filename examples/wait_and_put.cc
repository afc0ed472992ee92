// wait_and_put — waiting for the first results, and sharing one big object with many tasks.
//
// 1. prism::wait(refs, num_returns = 2) over tasks that sleep 3, 5 and 2 s returns as soon as
//    two are done: after 3 s, with the refs of the 3 s and the 2 s task, in the order given.
//    A sleeping task needs no CPU, so these ask for none (.num_cpus(0)) and all three run at
//    once on any machine.
// 2. prism::put stores a 256 MB array once; every task that takes the ref receives a const
//    reference to that same array. Each task reports the address it read: all equal the
//    address of the array before put(), which moved it in: no copy anywhere.
//
//   ./wait_and_put
//   ./wait_and_put --scale=0.1 --put-mb=16 --readers=4

#include <prism/prism.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/flags.h"
#include "common/table.h"
#include "common/timer.h"

int sleep_for(int seconds, double scale) {
  examples::sleep_seconds(seconds * scale);
  return seconds;
}

struct SliceSum {
  double sum;
  uintptr_t address;  // where the task found the array
};

// Sums part `part` of `parts` of the array. `data` is the stored object itself.
SliceSum sum_slice(const std::vector<float>& data, int part, int parts) {
  const size_t begin = data.size() * part / parts, end = data.size() * (part + 1) / parts;
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += data[i];
  return {sum, reinterpret_cast<uintptr_t>(data.data())};
}
PRISM_REMOTE(sleep_for, sum_slice);

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const double scale = flags.get_double("scale", 1.0, "seconds per unit of sleep");
  const int64_t mb = flags.get_int("put-mb", 256, "size of the shared array in MB");
  const int readers = static_cast<int>(flags.get_int("readers", 8, "tasks reading the array"));
  const int cpus = flags.cpus();
  if (!flags.ok()) return 2;
  examples::Checker check("wait_and_put");

  // ---- 1. wait ----
  // Serially the calls finish one after another: the first two results take 3 + 5 s.
  const double wait_serial_s = (3 + 5) * scale;
  prism::init({.num_cpus = static_cast<double>(cpus)});
  examples::Timer timer;
  std::vector<prism::ObjectRef<int>> refs;
  for (int s : {3, 5, 2}) refs.push_back(prism::task(sleep_for).num_cpus(0).remote(s, scale));
  auto [ready, not_ready] = prism::wait(refs, /*num_returns=*/2);
  const double wait_s = timer.seconds();
  const std::vector<int> first = prism::get(ready);
  const std::vector<int> rest = prism::get(not_ready);
  std::printf("wait returned [%d, %d] after %.2f s; then [%d]\n", first.at(0), first.at(1), wait_s,
              rest.at(0));

  // ---- 2. put once, read by many ----
  std::vector<float> data(static_cast<size_t>(mb) * (1 << 20) / sizeof(float));
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i % 1000) * 0.001f;
  const uintptr_t original = reinterpret_cast<uintptr_t>(data.data());

  std::vector<SliceSum> serial;
  const double put_serial_s = examples::time_seconds([&] {
    for (int p = 0; p < readers; ++p) serial.push_back(sum_slice(data, p, readers));
  });
  std::vector<SliceSum> parallel;
  const double put_s = examples::time_seconds([&] {
    auto big = prism::put(std::move(data));  // moved into the store: stored once, not copied
    std::vector<prism::ObjectRef<SliceSum>> sums;
    for (int p = 0; p < readers; ++p) {
      sums.push_back(prism::task(sum_slice).remote(big, p, readers));
    }
    parallel = prism::get(sums);
  });
  prism::shutdown();

  std::printf("the array was at %#zx before put(); the tasks read it at:", size_t{original});
  for (const auto& s : parallel) std::printf(" %#zx", size_t{s.address});
  std::printf("\n");
  examples::Table table(
      {"part (" + std::to_string(cpus) + " CPUs)", "serial s", "prism s", "speed-up"});
  table.add({"first 2 of sleeps [3, 5, 2] x " + examples::fixed(scale),
             examples::fixed(wait_serial_s), examples::fixed(wait_s),
             examples::times(wait_serial_s / wait_s)});
  table.add({std::to_string(readers) + " tasks reading one " + std::to_string(mb) + " MB put",
             examples::fixed(put_serial_s), examples::fixed(put_s),
             examples::times(put_serial_s / put_s)});
  table.print();
  examples::print_speedup("wait_and_put (wait)", wait_serial_s, wait_s);

  check.expect(first == std::vector<int>{3, 2}, "wait did not return the 3 s and 2 s tasks");
  check.expect(rest == std::vector<int>{5}, "the 5 s task was not left pending");
  check.expect(parallel.size() == serial.size(), "missing task results");
  for (size_t p = 0; p < std::min(parallel.size(), serial.size()); ++p) {
    check.expect(parallel[p].sum == serial[p].sum, "slice " + std::to_string(p) + ": wrong sum");
    check.expect(parallel[p].address == original,
                 "slice " + std::to_string(p) + ": the task read a copy of the array");
  }
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("wait_and_put", e);
}
