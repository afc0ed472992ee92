// bench/bench_util.h — what every Prism benchmark program shares: timing, repeated runs with
// median and spread, resident memory, command-line flags, the human table and the JSON file.
//
//   bench::Flags flags(argc, argv);                 // --json=PATH --runs=N --trial_s=S --filter=X
//   bench::Report report("microbench", flags);
//   bench::Stats s = bench::repeat(flags.runs, [] { return ops_per_second_of_one_run(); });
//   bench::Row row("single client tasks sync", "ops/s");
//   row.prism = s;
//   report.add(std::move(row));
//   report.finish();                                 // prints the table, writes the JSON
//
// A row holds Prism's figure, optionally the same work done by a native peer in the same
// process run (oneTBB, memcpy, ...), a published reference figure, a target, and for scaling
// rows the value at each size. bench/report reads the JSON back.
//
// Thread-safe: no; used from a benchmark's main thread.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace bench {

// ---- time ----

inline double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Lets another runtime's threads go idle before a measurement starts: libgomp's and oneTBB's
// workers spin for a while after their work ends (libgomp's GOMP_SPINCOUNT, some hundred
// microseconds and more), and a run of a few milliseconds started meanwhile shares the cores
// with them.
inline void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }

// Keeps the compiler from discarding a value computed only for timing.
template <typename T>
inline void keep(const T& v) {
  asm volatile("" : : "r,m"(v) : "memory");
}

// ---- statistics over runs ----

struct Stats {
  std::vector<double> runs;  // one figure per run, in run order
  double median = 0, min = 0, max = 0;
  bool valid() const { return !runs.empty(); }
  // (max - min) / median, in percent: how far apart the runs were.
  double spread_pct() const { return median > 0 ? 100.0 * (max - min) / median : 0; }
};

inline Stats stats_of(std::vector<double> runs) {
  Stats s;
  s.runs = runs;
  if (runs.empty()) return s;
  std::sort(runs.begin(), runs.end());
  const size_t n = runs.size();
  s.median = n % 2 ? runs[n / 2] : 0.5 * (runs[n / 2 - 1] + runs[n / 2]);
  s.min = runs.front();
  s.max = runs.back();
  return s;
}

// A CPU-bound kernel of adjustable length: about `iters` dependent integer steps (xorshift).
inline uint64_t spin_kernel(uint64_t iters, uint64_t seed) {
  uint64_t x = seed | 1;
  for (uint64_t i = 0; i < iters; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

// spin_kernel iterations per microsecond here: the median of 3 timings of at least ~5 ms.
inline double spin_kernel_iters_per_us() {
  uint64_t iters = 1'000'000;
  double t = 0;
  for (int k = 0; k < 4; ++k) {
    std::vector<double> v;
    for (int j = 0; j < 3; ++j) {
      const double t0 = now_s();
      keep(spin_kernel(iters, static_cast<uint64_t>(j)));
      v.push_back(now_s() - t0);
    }
    t = stats_of(v).median;
    if (t > 0.005) break;
    iters *= 4;
  }
  return static_cast<double>(iters) / (t * 1e6);
}

// Runs `one_run` (which returns its figure, e.g. ops/s) once to warm up, then `runs` times.
template <typename F>
Stats repeat(int runs, F&& one_run) {
  (void)one_run();
  std::vector<double> v;
  v.reserve(static_cast<size_t>(runs));
  for (int i = 0; i < runs; ++i) v.push_back(one_run());
  return stats_of(std::move(v));
}

// Runs `a` and `b` (each returns its figure) once each to warm up, then `runs` rounds of both,
// the order alternating from round to round, so that drifting load and warm-up bias neither.
template <typename A, typename B>
std::pair<Stats, Stats> repeat_interleaved(int runs, A&& a, B&& b) {
  (void)a();
  (void)b();
  std::vector<double> va, vb;
  va.reserve(static_cast<size_t>(runs));
  vb.reserve(static_cast<size_t>(runs));
  for (int i = 0; i < runs; ++i) {
    if (i % 2 == 0) {
      va.push_back(a());
      vb.push_back(b());
    } else {
      vb.push_back(b());
      va.push_back(a());
    }
  }
  return {stats_of(std::move(va)), stats_of(std::move(vb))};
}

// Ray's timeit: calls `op` (which does `multiplier` operations) until at least `trial_s` has
// passed and returns operations per second. The clock is read between batches of calls, not
// after each: a read costs 20-40 ns on a VM, as much as the cheapest ops measured here (a put,
// make_shared), and would be counted in both theirs and their peers' times. A batch doubles
// while it takes under 20 µs (at most 4096 calls), so slow ops still read it after each call.
template <typename F>
double ops_per_s(double trial_s, double multiplier, F&& op) {
  int64_t calls = 0;
  int64_t batch = 1;
  const double t0 = now_s();
  double t = t0;
  do {
    const double before = t;
    for (int64_t i = 0; i < batch; ++i) op();
    calls += batch;
    t = now_s();
    if (t - before < 20e-6 && batch < 4096) batch *= 2;
  } while (t - t0 < trial_s);
  return multiplier * static_cast<double>(calls) / (t - t0);
}

// ---- memory ----

// Resident set size of this process in bytes (from /proc/self/statm).
inline int64_t rss_bytes() {
  long pages_total = 0, pages_resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
    std::fclose(f);
  }
  return static_cast<int64_t>(pages_resident) * sysconf(_SC_PAGESIZE);
}

// ---- flags ----

struct Flags {
  std::string json;      // --json=PATH: where the JSON goes (none if empty)
  int runs = 5;          // --runs=N: measured runs per row (plus one warm-up)
  double trial_s = 0.2;  // --trial_s=S: minimum length of one run of a rate row
  std::string filter;    // --filter=X: only rows whose name contains X; --filter==X: named X
  bool quick = false;    // --quick: smaller sizes, for smoke tests
  int64_t max_n = 0;     // --max_n=N: largest size of scaling rows (0: the program's default)
  std::vector<std::string> rest;  // other --key=value flags, for the program

  Flags(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto val = [&](const char* key) -> std::optional<std::string> {
        const size_t n = std::strlen(key);
        if (a.compare(0, n, key) == 0 && a.size() > n && a[n] == '=') return a.substr(n + 1);
        return std::nullopt;
      };
      if (auto v = val("--json"))
        json = *v;
      else if (auto v2 = val("--runs"))
        runs = std::max(1, std::atoi(v2->c_str()));
      else if (auto v3 = val("--trial_s"))
        trial_s = std::atof(v3->c_str());
      else if (auto v4 = val("--filter"))
        filter = *v4;
      else if (auto v5 = val("--max_n"))
        max_n = std::atoll(v5->c_str());
      else if (a == "--quick")
        quick = true;
      else if (a == "--help" || a == "-h") {
        std::printf("flags: --json=PATH --runs=N --trial_s=S --filter=SUBSTR|=NAME --max_n=N --quick\n");
        std::exit(0);
      } else {
        rest.push_back(a);
      }
    }
  }
  bool wants(const std::string& row) const {
    if (!filter.empty() && filter[0] == '=') return row == filter.substr(1);
    return filter.empty() || row.find(filter) != std::string::npos;
  }
  // The value of a program-specific --key=value flag, or `fallback`.
  std::string get(const std::string& key, const std::string& fallback) const {
    for (const auto& a : rest)
      if (a.compare(0, key.size() + 1, key + "=") == 0) return a.substr(key.size() + 1);
    return fallback;
  }
};

// ---- rows, table, JSON ----

struct Target {
  std::string text;  // as the issue states it, e.g. ">= 2,000,000 tasks/s"
  double value = 0;
  bool at_least = true;  // true: prism median >= value; false: <=
  bool met(double v) const { return at_least ? v >= value : v <= value; }
};

struct Point {
  double n = 0;      // size (tasks, actors, ...)
  double value = 0;  // the row's figure at that size
};

struct Row {
  std::string name;
  std::string unit;  // "ops/s", "GB/s", "B/task", "s" ...
  Stats prism;
  std::string peer_name;  // e.g. "tbb::task_group"; empty: no peer
  Stats peer;
  std::optional<double> published;  // Ray 2.48 microbenchmark (other hardware)
  std::optional<Target> target;
  double goal_ratio = 0;  // > 0: the goal is prism / peer >= goal_ratio
  bool higher_is_better = true;
  std::vector<Point> series;                           // scaling rows: the figure at each size
  std::vector<std::pair<std::string, double>> extras;  // other named figures (speed-up, ...)
  std::string note;

  Row(std::string n, std::string u) : name(std::move(n)), unit(std::move(u)) {}
  Row&& with_peer(std::string p) && { return peer_name = std::move(p), std::move(*this); }
  Row&& at_least(double v, std::string text) && {
    return target = Target{std::move(text), v, true}, std::move(*this);
  }
  Row&& at_most(double v, std::string text) && {
    return target = Target{std::move(text), v, false}, higher_is_better = false, std::move(*this);
  }
  Row&& goal(double ratio) && { return goal_ratio = ratio, std::move(*this); }
  Row&& lower_is_better() && { return higher_is_better = false, std::move(*this); }
  Row&& with_note(std::string t) && { return note = std::move(t), std::move(*this); }
  Row&& with_extra(std::string name, double v) && {
    return extras.emplace_back(std::move(name), v), std::move(*this);
  }

  // Prism's performance relative to the peer's (> 1: Prism is better): prism / peer for
  // rates, peer / prism for costs such as seconds.
  std::optional<double> ratio() const {
    if (!prism.valid() || !peer.valid() || prism.median <= 0 || peer.median <= 0) return {};
    return higher_is_better ? prism.median / peer.median : peer.median / prism.median;
  }

  // How the per-item cost grows from the smallest to the largest size (1.0: flat). For a rate
  // the cost is its inverse.
  std::optional<double> growth() const {
    if (series.size() < 2 || series.front().value <= 0 || series.back().value <= 0) return {};
    const double first = series.front().value, last = series.back().value;
    return higher_is_better ? first / last : last / first;
  }
};

inline std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '"':
        o += "\\\"";
        break;
      case '\\':
        o += "\\\\";
        break;
      case '\n':
        o += "\\n";
        break;
      case '\t':
        o += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += c;
        }
    }
  }
  return o;
}

inline std::string json_num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// Human-readable number with thousands separators / 3 significant digits for small values.
inline std::string fmt_num(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  const double a = std::fabs(v);
  if (a >= 100) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    std::string s = buf, out;
    const size_t start = (s[0] == '-') ? 1 : 0;
    for (size_t i = 0; i < s.size(); ++i) {
      out += s[i];
      const size_t left = s.size() - 1 - i;
      if (i >= start && left > 0 && left % 3 == 0) out += ',';
    }
    return out;
  }
  if (a >= 10)
    std::snprintf(buf, sizeof buf, "%.1f", v);
  else if (a >= 1)
    std::snprintf(buf, sizeof buf, "%.2f", v);
  else
    std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

inline std::string machine_description() {
  std::string model;
  if (std::ifstream f("/proc/cpuinfo"); f) {
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("model name", 0) == 0) {
        model = line.substr(line.find(':') + 2);
        break;
      }
    }
  }
  return std::to_string(std::thread::hardware_concurrency()) + " hardware threads, " + model;
}

// The 1-, 5- and 15-minute load averages: how busy the machine was (other processes compete
// for the same cores, so figures taken at a high load are low).
inline std::string load_average() {
  std::string s;
  if (std::ifstream f("/proc/loadavg"); f) {
    std::string a, b, c;
    f >> a >> b >> c;
    s = a + " " + b + " " + c;
  }
  return s;
}

class Report {
 public:
  Report(std::string program, const Flags& flags)
      : program_(std::move(program)), flags_(flags), load_start_(load_average()) {
    std::printf("%s — %s, load average %s, %d runs per row (median, spread = (max-min)/median)\n",
                program_.c_str(), machine_description().c_str(), load_start_.c_str(), flags.runs);
    std::fflush(stdout);
  }

  // Records the row and prints its line at once (so a long run shows progress).
  void add(Row row) {
    print_row(row);
    rows_.push_back(std::move(row));
  }

  // Extra top-level facts for the JSON (e.g. "prism_threads": "2").
  void fact(const std::string& key, const std::string& value) { facts_.emplace_back(key, value); }

  void print_header() const {
    std::printf("%-54s %14s %7s %14s %7s %7s %10s  %s\n", "row", "prism", "spread", "peer",
                "spread", "ratio", "Ray 2.48*", "target");
  }

  // Writes the JSON file (if --json was given) and prints the target summary.
  void finish() const {
    std::printf("* Ray 2.48: published figures from a 64-vCPU machine (other hardware).\n");
    std::printf("load average: %s at the start, %s at the end\n", load_start_.c_str(),
                load_average().c_str());
    if (!flags_.json.empty()) write_json(flags_.json);
  }

 private:
  static std::string cell(const Stats& s) { return s.valid() ? fmt_num(s.median) : "-"; }
  static std::string spread(const Stats& s) {
    if (!s.valid()) return "";
    char buf[32];
    std::snprintf(buf, sizeof buf, "±%.0f%%", s.spread_pct() / 2);
    return buf;
  }

  void print_row(const Row& r) const {
    std::string ratio = "-";
    if (auto q = r.ratio()) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2fx", *q);
      ratio = buf;
    }
    std::string tgt;
    if (r.target && r.prism.valid())
      tgt = std::string(r.target->met(r.prism.median) ? "met " : "MISSED ") + r.target->text;
    if (r.goal_ratio > 0 && r.ratio()) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s%sratio >= %.2fx", tgt.empty() ? "" : "; ",
                    *r.ratio() >= r.goal_ratio ? "met " : "MISSED ", r.goal_ratio);
      tgt += buf;
    }
    std::string name = r.name + " [" + r.unit + "]";
    std::printf("%-54s %14s %7s %14s %7s %7s %10s  %s\n", name.c_str(), cell(r.prism).c_str(),
                spread(r.prism).c_str(), cell(r.peer).c_str(), spread(r.peer).c_str(),
                ratio.c_str(), r.published ? fmt_num(*r.published).c_str() : "-", tgt.c_str());
    if (!r.series.empty()) {
      std::printf("    by size:");
      for (const auto& p : r.series)
        std::printf("  n=%s: %s", fmt_num(p.n).c_str(), fmt_num(p.value).c_str());
      if (auto g = r.growth())
        std::printf("   per-item cost x%.2f from n=%s to n=%s", *g,
                    fmt_num(r.series.front().n).c_str(), fmt_num(r.series.back().n).c_str());
      std::printf("\n");
    }
    if (!r.extras.empty()) {
      std::printf("   ");
      for (const auto& [k, v] : r.extras) std::printf("  %s: %s", k.c_str(), fmt_num(v).c_str());
      std::printf("\n");
    }
    std::fflush(stdout);
  }

  static void write_stats(std::ostream& o, const Stats& s) {
    o << "{\"median\": " << json_num(s.median) << ", \"min\": " << json_num(s.min)
      << ", \"max\": " << json_num(s.max) << ", \"spread_pct\": " << json_num(s.spread_pct())
      << ", \"runs\": [";
    for (size_t i = 0; i < s.runs.size(); ++i) o << (i ? ", " : "") << json_num(s.runs[i]);
    o << "]}";
  }

  void write_json(const std::string& path) const {
    std::ofstream o(path);
    if (!o) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return;
    }
    char date[64];
    const std::time_t t = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S%z", std::localtime(&t));
    o << "{\n  \"program\": \"" << json_escape(program_) << "\",\n  \"date\": \"" << date
      << "\",\n  \"machine\": \"" << json_escape(machine_description())
      << "\",\n  \"runs\": " << flags_.runs << ",\n  \"trial_s\": " << json_num(flags_.trial_s)
      << ",\n  \"load_average_start\": \"" << load_start_ << "\",\n  \"load_average_end\": \""
      << load_average() << "\"";
    for (const auto& [k, v] : facts_)
      o << ",\n  \"" << json_escape(k) << "\": \"" << json_escape(v) << "\"";
    o << ",\n  \"published_source\": \"Ray 2.48 release microbenchmark, one 64-vCPU machine "
         "(other hardware)\",\n  \"rows\": [";
    for (size_t i = 0; i < rows_.size(); ++i) {
      const Row& r = rows_[i];
      o << (i ? ",\n" : "\n") << "    {\"name\": \"" << json_escape(r.name) << "\", \"unit\": \""
        << json_escape(r.unit)
        << "\", \"higher_is_better\": " << (r.higher_is_better ? "true" : "false")
        << ",\n     \"prism\": ";
      write_stats(o, r.prism);
      if (r.peer.valid()) {
        o << ",\n     \"peer_name\": \"" << json_escape(r.peer_name) << "\", \"peer\": ";
        write_stats(o, r.peer);
        if (auto q = r.ratio()) o << ", \"ratio\": " << json_num(*q);
      }
      if (r.published) o << ",\n     \"published\": " << json_num(*r.published);
      if (r.target) {
        o << ",\n     \"target\": {\"text\": \"" << json_escape(r.target->text)
          << "\", \"value\": " << json_num(r.target->value)
          << ", \"at_least\": " << (r.target->at_least ? "true" : "false")
          << ", \"met\": " << (r.target->met(r.prism.median) ? "true" : "false") << "}";
      }
      if (r.goal_ratio > 0) {
        o << ",\n     \"goal_ratio\": " << json_num(r.goal_ratio);
        if (auto q = r.ratio())
          o << ", \"goal_ratio_met\": " << (*q >= r.goal_ratio ? "true" : "false");
      }
      if (!r.series.empty()) {
        o << ",\n     \"series\": [";
        for (size_t j = 0; j < r.series.size(); ++j)
          o << (j ? ", " : "") << "{\"n\": " << json_num(r.series[j].n)
            << ", \"value\": " << json_num(r.series[j].value) << "}";
        o << "]";
        if (auto g = r.growth()) o << ", \"growth\": " << json_num(*g);
      }
      if (!r.extras.empty()) {
        o << ",\n     \"extra\": {";
        for (size_t j = 0; j < r.extras.size(); ++j)
          o << (j ? ", " : "") << "\"" << json_escape(r.extras[j].first)
            << "\": " << json_num(r.extras[j].second);
        o << "}";
      }
      if (!r.note.empty()) o << ",\n     \"note\": \"" << json_escape(r.note) << "\"";
      o << "}";
    }
    o << "\n  ]\n}\n";
    std::printf("wrote %s\n", path.c_str());
  }

  std::string program_;
  const Flags& flags_;
  std::string load_start_;
  std::vector<Row> rows_;
  std::vector<std::pair<std::string, std::string>> facts_;
};

}  // namespace bench
