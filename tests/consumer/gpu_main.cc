// Built by tests/consumer/run.cmake against an installed Prism, as a GPU program:
// find_package(Prism COMPONENTS gpu) and Prism::gpu must be all it needs.
#include <prism/gpu.h>
#include <prism/prism.h>

#include <chrono>
#include <cstdio>
#include <vector>

int main() {
  prism::init({.num_cpus = 2, .num_gpus = 1, .log_level = prism::LogLevel::kError});
  auto r = prism::task([](int a, int b) { return a + b; }).remote(1, 2);
  const int v = prism::get(r, std::chrono::seconds(60));
  // A tensor made by a GPU task (a logical GPU without a device), read back on the host.
  auto t = prism::task([] {
             return prism::gpu::Tensor::from_vector(std::vector<float>{1.f, 2.f, 3.f}, {3});
           })
               .num_gpus(0.5)
               .remote();
  const std::vector<float> back = prism::get(t, std::chrono::seconds(60)).to_vector<float>();
  prism::shutdown();
  std::printf("consumer: 1 + 2 = %d; tensor from %s: %g %g %g\n", v,
              prism::gpu::backend_name(prism::gpu::backend()), back[0], back[1], back[2]);
  return v == 3 && back == std::vector<float>{1.f, 2.f, 3.f} ? 0 : 1;
}
