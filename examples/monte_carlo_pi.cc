// monte_carlo_pi — embarrassingly parallel sampling, one task per CPU.
//
// Each task draws random points in the unit square and counts those inside the quarter disc
// x^2 + y^2 <= 1; pi ~ 4 * inside / samples. Every task has its own generator, seeded with
// its index, so tasks share no state and the serial run (the same calls, one after another)
// gets exactly the same counts: the parallel result is checked against it, and the estimate
// against pi.
//
//   ./monte_carlo_pi                        # 10,000,000 samples per task, one task per CPU
//   ./monte_carlo_pi --samples=1000000 --cpus=2

#include <prism/prism.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numbers>
#include <random>
#include <vector>

#include "common/check.h"
#include "common/flags.h"
#include "common/table.h"
#include "common/timer.h"

// The remote function: how many of `samples` points from generator `seed` fall in the disc.
int64_t count_inside(int64_t samples, uint64_t seed) {
  std::mt19937_64 gen(seed);
  auto uniform = [&gen] { return static_cast<double>(gen() >> 11) * 0x1.0p-53; };  // [0, 1)
  int64_t inside = 0;
  for (int64_t i = 0; i < samples; ++i) {
    const double x = uniform(), y = uniform();
    inside += x * x + y * y <= 1.0;
  }
  return inside;
}
PRISM_REMOTE(count_inside);

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const int64_t samples = flags.get_int("samples", 10'000'000, "samples per task");
  const int cpus = flags.cpus();
  const int tasks = static_cast<int>(flags.get_int("tasks", cpus, "tasks (default: one per CPU)"));
  if (!flags.ok()) return 2;
  const uint64_t kSeed = 2024;
  examples::Checker check("monte_carlo_pi");

  std::vector<int64_t> serial;
  const double serial_s = examples::time_seconds([&] {
    for (int t = 0; t < tasks; ++t) serial.push_back(count_inside(samples, kSeed + t));
  });

  prism::init({.num_cpus = static_cast<double>(cpus)});
  std::vector<int64_t> parallel;
  const double prism_s = examples::time_seconds([&] {
    std::vector<prism::ObjectRef<int64_t>> refs;
    for (int t = 0; t < tasks; ++t) {
      refs.push_back(prism::task(count_inside).remote(samples, kSeed + t));
    }
    parallel = prism::get(refs);
  });
  prism::shutdown();

  int64_t inside = 0;
  for (int64_t c : parallel) inside += c;
  const double pi = 4.0 * static_cast<double>(inside) / static_cast<double>(samples * tasks);

  examples::Table table({"run", "samples", "seconds", "speed-up"});
  table.add({"serial", std::to_string(samples * tasks), examples::fixed(serial_s), "1.00x"});
  table.add({"prism, " + std::to_string(tasks) + " tasks on " + std::to_string(cpus) + " CPUs",
             std::to_string(samples * tasks), examples::fixed(prism_s),
             examples::times(serial_s / prism_s)});
  table.print();
  std::printf("pi ~ %.6f (error %.2e)\n", pi, std::abs(pi - std::numbers::pi));
  examples::print_speedup("monte_carlo_pi", serial_s, prism_s);

  check.expect(parallel == serial, "the tasks' counts differ from the serial counts");
  check.expect(std::abs(pi - std::numbers::pi) < 0.01,
               "the estimate " + std::to_string(pi) + " is not within 0.01 of pi");
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("monte_carlo_pi", e);
}
