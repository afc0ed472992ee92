// examples/common/cluster_report.h — what a cluster run moved, from prism::stats().
//
//   const std::string moved = examples::cluster_traffic();   // before prism::shutdown()
//   if (!moved.empty()) std::printf("%s\n", moved.c_str());
//
// Empty when the job runs on one node. In cluster mode every object a node reads from another
// node passes through the driver (nodes pull from the driver, which relays), so the driver's
// pulls and serves are the job's whole traffic between nodes.
//
// Thread-compatible.
#pragma once

#include <prism/prism.h>

#include <cstdio>
#include <string>

namespace examples {

inline std::string cluster_traffic() {
  if (prism::node_count() <= 1) return "";
  const prism::Stats s = prism::stats();
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "cluster: %zu nodes; tasks: %llu done (%llu failed); objects moved between nodes: "
                "%llu pulled to the driver (%.1f MiB), %llu sent by it (%.1f MiB)",
                s.nodes.size(), static_cast<unsigned long long>(s.tasks.done),
                static_cast<unsigned long long>(s.tasks.failed),
                static_cast<unsigned long long>(s.transfers.node_pulls),
                static_cast<double>(s.transfers.node_pulled_bytes) / (1 << 20),
                static_cast<unsigned long long>(s.transfers.node_served),
                static_cast<double>(s.transfers.node_served_bytes) / (1 << 20));
  std::string out = buf;
  for (const prism::NodeStats& n : s.nodes) {
    const auto cpu = n.total.find("CPU");
    std::snprintf(buf, sizeof buf, "\n  %s: %g CPU", n.node.c_str(),
                  cpu == n.total.end() ? 0.0 : cpu->second);
    out += buf;
  }
  return out;
}

}  // namespace examples
