// The dashboard's data, as the JSON its page reads: aggregated (counts, resources, the newest
// errors and spans), never one entry per task in flight, so a request costs the same with 10
// tasks or 10^6.
//
// Thread-safe: pure functions of their arguments.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "history.h"
#include "observability/timeline.h"
#include "prism/stats.h"

namespace prism::dashboard {

struct SummaryInput {
  std::string node;        // this node's id ("node0" in a cluster)
  std::string role;        // "embedded" or "driver"
  double uptime_s = 0;
  Stats stats;
  std::vector<TaskFailure> errors;  // oldest first; the newest kMaxErrorsShown are sent
  std::vector<Sample> history;      // oldest first
  double history_interval_ms = 0;
};
inline constexpr size_t kMaxErrorsShown = 50;

// {"node", "role", "uptime_s", "tasks": {...}, "nodes": [...], "objects", "transfers",
//  "threads", "history": {"interval_ms", "states", "samples": [[t_ms, counts...], ...]},
//  "errors_total", "errors": [{task, function, node, type, message, time_ms}, ...]}
std::string summary_json(const SummaryInput& in);

struct TimelineInput {
  std::string node;  // this node
  internal::Timeline::Clock::time_point origin;  // the runtime's start: times are ms since it
  internal::Timeline::Clock::time_point now;
  double window_ms = 0;
  // This node's spans first, then each other node's (cluster driver), each in recording order,
  // on this node's clock.
  std::vector<internal::Timeline::Lane> lanes;
  size_t max_spans = 0;      // per lane: a lane that holds this many: "truncated"
  bool truncated = false;    // some spans were left out anyway (a node sent only its newest)
  std::vector<std::string> missing;  // nodes that did not answer in time
};
inline constexpr size_t kMaxSpansShown = 5000;

// {"node", "now_ms", "window_ms", "truncated", "lanes": [node, ...], "missing": [node, ...],
//  "names": [...], "spans": [[lane, thread, start_ms, duration_ms, name_index, task, gpu], ...]}
std::string timeline_json(const TimelineInput& in);

}  // namespace prism::dashboard
