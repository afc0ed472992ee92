#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <unordered_map>

#include "common/json.h"

namespace prism::dashboard {

namespace {

using internal::append_json_string;

void append_number(std::string* out, double v) {
  char buf[32];
  if (!std::isfinite(v)) {  // (JSON has no NaN or infinity)
    *out += "null";
    return;
  }
  // Integers exactly, fractions to 3 decimals (ms and resource amounts need no more).
  if (v < 9e15 && v > -9e15 && v == static_cast<double>(static_cast<long long>(v))) {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  } else {
    std::snprintf(buf, sizeof buf, "%.3f", v);
  }
  *out += buf;
}

void append_uint(std::string* out, uint64_t v) { *out += std::to_string(v); }

void append_key(std::string* out, const char* key) {
  out->push_back('"');
  *out += key;
  *out += "\":";
}

void append_resources(std::string* out, const std::map<std::string, double>& m) {
  out->push_back('{');
  bool first = true;
  for (const auto& [name, amount] : m) {
    if (!first) out->push_back(',');
    first = false;
    append_json_string(out, name);
    out->push_back(':');
    append_number(out, amount);
  }
  out->push_back('}');
}

// "name":value,... for each pair (no braces).
using Field = std::pair<const char*, uint64_t>;
template <size_t N>
void append_fields(std::string* out, const Field (&fields)[N]) {
  for (size_t i = 0; i < N; ++i) {
    if (i) out->push_back(',');
    append_key(out, fields[i].first);
    append_uint(out, fields[i].second);
  }
}

// The states drawn over time, in the order of each sample's counts.
const char* const kStates[] = {"waiting_for_arguments", "waiting_for_resources", "running",
                               "on_other_nodes",        "done",                  "failed"};

void append_counts_array(std::string* out, const TaskCounts& t) {
  const uint64_t v[] = {t.waiting_for_arguments, t.waiting_for_resources, t.running,
                        t.on_other_nodes,        t.done,                  t.failed};
  for (uint64_t x : v) {
    out->push_back(',');
    append_uint(out, x);
  }
}

}  // namespace

std::string summary_json(const SummaryInput& in) {
  std::string o;
  o.reserve(4096);
  const Stats& s = in.stats;
  o += '{';
  append_key(&o, "node");
  append_json_string(&o, in.node);
  o += ',';
  append_key(&o, "role");
  append_json_string(&o, in.role);
  o += ',';
  append_key(&o, "uptime_s");
  append_number(&o, in.uptime_s);

  o += ",\"tasks\":{";
  append_fields(&o, {{"submitted", s.tasks.submitted},
                     {"waiting_for_arguments", s.tasks.waiting_for_arguments},
                     {"waiting_for_resources", s.tasks.waiting_for_resources},
                     {"running", s.tasks.running},
                     {"on_other_nodes", s.tasks.on_other_nodes},
                     {"done", s.tasks.done},
                     {"failed", s.tasks.failed}});
  o += "},\"nodes\":[";
  for (size_t i = 0; i < s.nodes.size(); ++i) {
    if (i) o += ',';
    o += '{';
    append_key(&o, "node");
    append_json_string(&o, s.nodes[i].node);
    o += ",\"total\":";
    append_resources(&o, s.nodes[i].total);
    o += ",\"available\":";
    append_resources(&o, s.nodes[i].available);
    const NodeStats& n = s.nodes[i];
    o += ",\"reported\":";
    o += n.reported ? "true" : "false";
    if (n.reported) {  // what the node itself counts (another node's: its last report)
      o += ',';
      append_fields(&o, {{"tasks_waiting_for_arguments", n.tasks_waiting_for_arguments},
                         {"tasks_queued", n.tasks_queued},
                         {"tasks_running", n.tasks_running},
                         {"tasks_done", n.tasks_done},
                         {"tasks_failed", n.tasks_failed},
                         {"objects", n.objects},
                         {"primary_bytes", n.primary_bytes},
                         {"secondary_bytes", n.secondary_bytes},
                         {"threads", static_cast<uint64_t>(std::max(0, n.threads))}});
    }
    o += '}';
  }
  o += "],\"objects\":{";
  append_fields(&o, {{"objects", s.objects.objects},
                     {"primary_bytes", s.objects.primary_bytes},
                     {"capacity_bytes", s.objects.capacity_bytes},
                     {"secondary_bytes", s.objects.secondary_bytes},
                     {"spilled_bytes", s.objects.spilled_bytes},
                     {"restored_bytes", s.objects.restored_bytes}});
  o += "},\"transfers\":{";
  append_fields(&o, {{"device_copies", s.transfers.device_copies},
                     {"device_copy_bytes", s.transfers.device_copy_bytes},
                     {"node_pulls", s.transfers.node_pulls},
                     {"node_pulled_bytes", s.transfers.node_pulled_bytes},
                     {"node_served", s.transfers.node_served},
                     {"node_served_bytes", s.transfers.node_served_bytes}});
  o += "},";
  append_key(&o, "threads");
  append_number(&o, s.threads);

  o += ",\"history\":{";
  append_key(&o, "interval_ms");
  append_number(&o, in.history_interval_ms);
  o += ",\"states\":[";
  for (size_t i = 0; i < std::size(kStates); ++i) {
    if (i) o += ',';
    append_json_string(&o, kStates[i]);
  }
  o += "],\"samples\":[";
  for (size_t i = 0; i < in.history.size(); ++i) {
    if (i) o += ',';
    o += '[';
    append_number(&o, in.history[i].t_ms);
    append_counts_array(&o, in.history[i].tasks);
    o += ']';
  }
  o += "]},";
  append_key(&o, "errors_total");
  append_uint(&o, in.errors.size());
  o += ",\"errors\":[";
  const size_t first = in.errors.size() > kMaxErrorsShown ? in.errors.size() - kMaxErrorsShown : 0;
  for (size_t i = first; i < in.errors.size(); ++i) {
    const TaskFailure& f = in.errors[i];
    if (i != first) o += ',';
    o += '{';
    append_key(&o, "task");
    append_json_string(&o, f.task.to_string());
    o += ',';
    append_key(&o, "function");
    append_json_string(&o, f.function);
    o += ',';
    append_key(&o, "node");
    append_json_string(&o, f.node);
    o += ',';
    append_key(&o, "type");
    append_json_string(&o, f.type);
    o += ',';
    append_key(&o, "message");
    append_json_string(&o, f.message);
    o += ',';
    append_key(&o, "time_ms");  // Unix time, for the browser's Date
    append_number(&o, static_cast<double>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                               f.time.time_since_epoch())
                                               .count()));
    o += '}';
  }
  o += "]}";
  return o;
}

std::string timeline_json(const TimelineInput& in) {
  using Ms = std::chrono::duration<double, std::milli>;
  bool truncated = in.truncated;
  size_t total = 0;
  for (const internal::Timeline::Lane& lane : in.lanes) {
    total += lane.spans.size();
    if (in.max_spans != 0 && lane.spans.size() >= in.max_spans) truncated = true;
  }
  std::string o;
  o.reserve(128 + total * 44);
  o += '{';
  append_key(&o, "node");
  append_json_string(&o, in.node);
  o += ',';
  append_key(&o, "now_ms");
  append_number(&o, Ms(in.now - in.origin).count());
  o += ',';
  append_key(&o, "window_ms");
  append_number(&o, in.window_ms);
  o += ',';
  append_key(&o, "truncated");
  o += truncated ? "true" : "false";
  o += ",\"lanes\":[";
  for (size_t i = 0; i < in.lanes.size(); ++i) {
    if (i) o += ',';
    append_json_string(&o, in.lanes[i].node);
  }
  o += "],\"missing\":[";
  for (size_t i = 0; i < in.missing.size(); ++i) {
    if (i) o += ',';
    append_json_string(&o, in.missing[i]);
  }
  o += ']';
  // Names once each: spans refer to them by index (a job runs few distinct functions).
  std::unordered_map<std::string, size_t> index;
  std::vector<const std::string*> names;
  std::string spans;
  spans.reserve(total * 44);
  bool first = true;
  for (size_t lane = 0; lane < in.lanes.size(); ++lane) {
    for (const internal::Timeline::Span& s : in.lanes[lane].spans) {
      auto [it, fresh] = index.emplace(s.name, names.size());
      if (fresh) names.push_back(&it->first);
      if (!first) spans += ',';
      first = false;
      spans += '[';
      append_uint(&spans, lane);
      spans += ',';
      append_number(&spans, s.thread);
      spans += ',';
      append_number(&spans, Ms(s.start - in.origin).count());
      spans += ',';
      append_number(&spans, Ms(s.end - s.start).count());
      spans += ',';
      append_uint(&spans, it->second);
      spans += ',';
      append_uint(&spans, s.task_sequence);
      spans += ',';
      append_number(&spans, s.gpus.empty() ? -1 : s.gpus.front());
      spans += ']';
    }
  }
  o += ",\"names\":[";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) o += ',';
    append_json_string(&o, *names[i]);
  }
  o += "],\"spans\":[";
  o += spans;
  o += "]}";
  return o;
}

}  // namespace prism::dashboard
