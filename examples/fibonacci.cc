// fibonacci — the same function run as one task per CPU: serial loop versus parallel tasks.
//
// As in the tutorial, each call builds the list of the first 200,000 Fibonacci numbers by
// appending to a growing list, and the driver calls it once per CPU: serially, then as Prism
// tasks that run at the same time.
//
// Variant: the numbers are kept modulo 2^64 (uint64_t wrapping), not as big integers: F(n) has
// about 0.7 n bits, which Python's ints handle slowly and C++ has no built-in type for. The
// last number is checked against F(n-1) mod 2^64 computed independently by fast doubling.
//
// A list of 200,000 numbers takes a C++ program about a millisecond (Python needs far longer),
// too little to measure a speed-up well, so each task builds the list --rounds times.
//
//   ./fibonacci                       # 200,000 numbers, 1000 rounds per task, one task per CPU
//   ./fibonacci --n=20000 --rounds=10 --cpus=2

#include <prism/prism.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "common/check.h"
#include "common/flags.h"
#include "common/table.h"
#include "common/timer.h"

// The tutorial's fibonacci_local, mod 2^64, `rounds` times. Returns F(n-1) mod 2^64.
uint64_t fibonacci_list(int n, int rounds) {
  std::vector<uint64_t> fibonacci;  // appended to, like the tutorial's Python list
  for (int r = 0; r < rounds; ++r) {
    // clear() keeps the memory: later rounds measure the arithmetic, not the allocator (fresh
    // 2 MB blocks from the OS can cost more than the numbers themselves).
    fibonacci.clear();
    for (int i = 0; i < n; ++i) {
      fibonacci.push_back(i < 2 ? static_cast<uint64_t>(i) : fibonacci[i - 1] + fibonacci[i - 2]);
    }
  }
  return fibonacci.back();
}
PRISM_REMOTE(fibonacci_list);

// F(k) mod 2^64 by fast doubling: F(2m) = F(m) (2 F(m+1) - F(m)), F(2m+1) = F(m)^2 + F(m+1)^2.
uint64_t fibonacci_fast(uint64_t k) {
  uint64_t a = 0, b = 1;  // F(m), F(m+1) for m = the bits of k read so far
  for (int bit = 63; bit >= 0; --bit) {
    const uint64_t c = a * (2 * b - a), d = a * a + b * b;  // F(2m), F(2m+1)
    if ((k >> bit) & 1) {
      a = d;
      b = c + d;
    } else {
      a = c;
      b = d;
    }
  }
  return a;
}

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const int n = static_cast<int>(flags.get_int("n", 200000, "Fibonacci numbers per list"));
  const int rounds = static_cast<int>(flags.get_int("rounds", 1000, "lists built per task"));
  const int cpus = flags.cpus();
  if (!flags.ok()) return 2;
  if (n < 2 || rounds < 1) {
    std::fprintf(stderr, "fibonacci: needs --n >= 2 and --rounds >= 1\n");
    return 2;
  }
  const int tasks = cpus;  // one task per CPU, as in the tutorial
  examples::Checker check("fibonacci");

  std::vector<uint64_t> serial;
  const double serial_s = examples::time_seconds([&] {
    for (int t = 0; t < tasks; ++t) serial.push_back(fibonacci_list(n, rounds));
  });

  prism::init({.num_cpus = static_cast<double>(cpus)});
  std::vector<uint64_t> parallel;
  const double prism_s = examples::time_seconds([&] {
    std::vector<prism::ObjectRef<uint64_t>> refs;
    for (int t = 0; t < tasks; ++t) refs.push_back(prism::task(fibonacci_list).remote(n, rounds));
    parallel = prism::get(refs);
  });
  prism::shutdown();

  examples::Table table({"run", "tasks", "lists", "seconds", "speed-up"});
  table.add({"serial", std::to_string(tasks), std::to_string(tasks * rounds),
             examples::fixed(serial_s), "1.00x"});
  table.add({"prism, " + std::to_string(cpus) + " CPU slots", std::to_string(tasks),
             std::to_string(tasks * rounds), examples::fixed(prism_s),
             examples::times(serial_s / prism_s)});
  table.print();
  const uint64_t expected = fibonacci_fast(static_cast<uint64_t>(n - 1));
  std::printf("F(%d) mod 2^64 = %" PRIu64 " (ideal speed-up on %d CPUs: %dx)\n", n - 1, expected,
              cpus, tasks < cpus ? tasks : cpus);
  examples::print_speedup("fibonacci", serial_s, prism_s);

  for (uint64_t v : serial) check.expect(v == expected, "a serial list ended with a wrong number");
  for (uint64_t v : parallel) {
    check.expect(v == expected, "a task's list ended with a wrong number");
  }
  check.expect(parallel.size() == static_cast<size_t>(tasks), "missing task results");
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("fibonacci", e);
}
