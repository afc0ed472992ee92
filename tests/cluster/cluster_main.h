// cluster_main.h — the main of a cluster test binary. The same executable is the driver (the
// tests), a node (started with PRISM_ADDRESS: it serves and exits, never running the tests) and,
// with PRISM_TEST_DRIVER=1, a driver in a process of its own that a test may kill or stop
// (run_test_driver).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include <gtest/gtest.h>
#include <prism/prism.h>

namespace prism_test {

// A driver in its own process: waits for one node, writes "<job dir>/ready", and waits to be
// killed (bounded: SIGALRM ends it after two minutes if the test did not).
inline int run_test_driver() {
  prism::init({.num_cpus = 1, .listen = "127.0.0.1:0"});
  prism::wait_for_nodes(1, std::chrono::seconds(60));
  const char* dir = std::getenv("PRISM_JOB_DIR");
  if (FILE* f = std::fopen((std::string(dir) + "/ready").c_str(), "w")) std::fclose(f);
  alarm(120);
  for (;;) pause();
}

inline int cluster_test_main(int argc, char** argv) {
  // Loopback only; UCX's memory hooks off (ThreadSanitizer, PLATFORM.md). Children inherit both.
  setenv("UCX_NET_DEVICES", "lo", 0);
  setenv("UCX_MEM_EVENTS", "no", 0);
  if (std::getenv("PRISM_TEST_DRIVER") != nullptr) return run_test_driver();
  try {
    prism::serve();  // a node: joins, serves, exits; the test process goes on
  } catch (const std::exception& e) {
    std::fprintf(stderr, "node: %s\n", e.what());  // refused (the tests check the status)
    return 3;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

}  // namespace prism_test
