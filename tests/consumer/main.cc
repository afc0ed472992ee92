// Built by tests/consumer/run.cmake against an installed Prism: find_package(Prism) and
// Prism::prism must be all an application needs.
#include <prism/prism.h>

#include <cstdio>

int main() {
  prism::init({.num_cpus = 2});
  auto r = prism::task([](int a, int b) { return a + b; }).remote(1, 2);
  int v = prism::get(r);
  prism::shutdown();
  std::printf("consumer: 1 + 2 = %d\n", v);
  return v == 3 ? 0 : 1;
}
