// nested_tasks — tasks that submit tasks: a hyper-parameter search.
//
// The driver submits one task per configuration (a learning rate); each of those submits one
// task per trial (a training run with its own random seed), gets their losses and returns the
// mean. While an outer task waits in prism::get it lends its CPU slot back, so the inner tasks
// can run even with a single CPU: nested graphs never deadlock.
//
// A trial fits y = w x + b to noisy samples of the line y = 3x + 2 by stochastic gradient
// descent and returns the squared distance of (w, b) from (3, 2). Seeds are fixed, so the
// serial search and the Prism search must find exactly the same losses and the same winner.
//
//   ./nested_tasks
//   ./nested_tasks --steps=20000 --trials=3 --cpus=1

#include <prism/prism.h>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/flags.h"
#include "common/table.h"
#include "common/timer.h"

// Inner task: one training run.
double train_trial(double lr, int steps, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::normal_distribution<double> noise(0.0, 0.1);
  double w = 0, b = 0;
  for (int i = 0; i < steps; ++i) {
    const double x = uniform(gen), y = 3 * x + 2 + noise(gen);
    const double err = w * x + b - y;  // gradient of err^2 / 2: (err x, err)
    w -= lr * err * x;
    b -= lr * err;
  }
  return (w - 3) * (w - 3) + (b - 2) * (b - 2);
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

// Outer task: one configuration, its trials submitted as tasks from inside this task.
double evaluate_config(double lr, int trials, int steps) {
  std::vector<prism::ObjectRef<double>> refs;
  for (int t = 0; t < trials; ++t) refs.push_back(prism::task(train_trial).remote(lr, steps, t));
  return mean(prism::get(refs));  // blocks here, lending this task's CPU slot to the trials
}
PRISM_REMOTE(train_trial, evaluate_config);

int main(int argc, char** argv) try {
  examples::Flags flags(argc, argv);
  const int steps = static_cast<int>(flags.get_int("steps", 2'000'000, "SGD steps per trial"));
  const int trials = static_cast<int>(flags.get_int("trials", 4, "trials per configuration"));
  const int cpus = flags.cpus();
  if (!flags.ok()) return 2;
  const std::vector<double> rates = {0.0003, 0.001, 0.003, 0.01, 0.03, 0.1};
  examples::Checker check("nested_tasks");

  std::vector<double> serial;
  const double serial_s = examples::time_seconds([&] {
    for (double lr : rates) {
      std::vector<double> losses;
      for (int t = 0; t < trials; ++t) losses.push_back(train_trial(lr, steps, t));
      serial.push_back(mean(losses));
    }
  });

  prism::init({.num_cpus = static_cast<double>(cpus)});
  std::vector<double> parallel;
  const double prism_s = examples::time_seconds([&] {
    std::vector<prism::ObjectRef<double>> configs;
    for (double lr : rates) {
      configs.push_back(prism::task(evaluate_config).remote(lr, trials, steps));
    }
    parallel = prism::get(configs);
  });
  prism::shutdown();

  auto best = [&](const std::vector<double>& loss) {
    size_t k = 0;
    for (size_t i = 1; i < loss.size(); ++i) k = loss[i] < loss[k] ? i : k;
    return k;
  };
  examples::Table table({"learning rate", "mean loss (serial)", "mean loss (prism)"});
  for (size_t i = 0; i < rates.size(); ++i) {
    table.add({examples::fixed(rates[i], 4), examples::fixed(serial[i], 8),
               i < parallel.size() ? examples::fixed(parallel[i], 8) : "missing"});
  }
  table.print();
  const int tasks = static_cast<int>(rates.size()) * (trials + 1);
  std::printf("%d tasks (%zu outer, %zu inner) on %d CPUs; best learning rate %.4f\n", tasks,
              rates.size(), rates.size() * trials, cpus, rates[best(serial)]);
  examples::print_speedup("nested_tasks", serial_s, prism_s);

  check.expect(parallel == serial, "the nested search found other losses than the serial one");
  check.expect(!parallel.empty() && best(parallel) == best(serial), "a different winner");
  check.expect(serial[best(serial)] < 0.05, "even the best configuration did not learn the line");
  return check.finish();
} catch (const std::exception& e) {
  return examples::report_error("nested_tasks", e);
}
