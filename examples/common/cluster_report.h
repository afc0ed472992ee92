// examples/common/cluster_report.h — what a cluster run moved, from prism::stats().
//
//   const std::string moved = examples::cluster_traffic();   // before prism::shutdown()
//   if (!moved.empty()) std::printf("%s\n", moved.c_str());
//
// Empty when the job runs on one node. A node that needs a value another process holds pulls
// it from there: from the driver, or straight from the node that has it (the driver names it).
// Each node's line says what it pulled and what it served (its last report: nodes report about
// once a second, so this waits up to 3 s for the reports to agree); the first line, the
// driver's own.
//
// Thread-compatible.
#pragma once

#include <prism/prism.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

namespace examples {

inline std::string cluster_traffic() {
  if (prism::node_count() <= 1) return "";
  // Each node reports its counts about once a second: wait (3 s at most) until every pull made
  // anywhere has been served somewhere, as the reports say.
  prism::Stats s = prism::stats();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  for (;;) {
    uint64_t pulls = 0, served = 0;
    for (const prism::NodeStats& n : s.nodes) {
      pulls += n.pulls;
      served += n.served;
    }
    if (served >= pulls || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // (the next report)
    s = prism::stats();
  }
  char buf[320];
  std::snprintf(buf, sizeof buf, "cluster: %zu nodes; tasks: %llu done (%llu failed); objects moved:",
                s.nodes.size(), static_cast<unsigned long long>(s.tasks.done),
                static_cast<unsigned long long>(s.tasks.failed));
  std::string out = buf;
  constexpr double kMiB = 1 << 20;
  for (const prism::NodeStats& n : s.nodes) {
    const auto cpu = n.total.find("CPU");
    std::snprintf(buf, sizeof buf,
                  "\n  %s: %g CPU; pulled %llu (%.1f MiB), served %llu (%.1f MiB)%s",
                  n.node.c_str(), cpu == n.total.end() ? 0.0 : cpu->second,
                  static_cast<unsigned long long>(n.pulls), n.pulled_bytes / kMiB,
                  static_cast<unsigned long long>(n.served), n.served_bytes / kMiB,
                  n.reported ? "" : " (not reported yet)");
    out += buf;
  }
  return out;
}

}  // namespace examples
