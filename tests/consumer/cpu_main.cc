// Built by tests/consumer/run.cmake against an installed Prism, as a CPU-only program:
// find_package(Prism) and Prism::prism, no CUDA toolkit visible, no CUDA library linked. GPUs are
// then logical resources (num_gpus declares them) and tasks may still ask for them.
#include <prism/prism.h>

#include <chrono>
#include <cstdio>

int main() {
  prism::init({.num_cpus = 2, .num_gpus = 1, .log_level = prism::LogLevel::kError});
  auto r = prism::task([](int a, int b) { return a + b; }).remote(1, 2);
  const int v = prism::get(r, std::chrono::seconds(60));
  auto g = prism::task([] { return static_cast<int>(prism::gpu_ids().size()); })
               .num_gpus(0.5)
               .remote();
  const int gpus = prism::get(g, std::chrono::seconds(60));
  prism::shutdown();
  std::printf("consumer (CPU only): 1 + 2 = %d; a task asking for half a logical GPU got %d\n", v,
              gpus);
  return v == 3 && gpus == 1 ? 0 : 1;
}
