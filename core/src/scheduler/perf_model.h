// PerfModel — what heterogeneous tasks learned about run times (DESIGN §4 "Heterogeneous tasks",
// StarPU's history-based performance models): per (function, variant, input-size bucket) a
// running mean and variance of the variant's run times, and the measured host<->device copy
// bandwidths. VariantPlanner asks it; the runtime feeds it after each run; it is kept per
// machine in a file (PRISM_PERF_MODEL_DIR) so that later runs start calibrated.
//
// History: each observation updates the mean and variance with weight max(1/n, 1/kWindow), that
// is exactly (Welford) over the first kWindow runs and exponentially forgetting after, so the
// model follows a machine whose speed drifts while one noisy run moves it by at most 1/kWindow.
// A size bucket is floor(log2(size)) + 1 (0 for size 0): sizes within a factor of two share one.
//
// The file: text, one line per entry, tab-separated:
//   "run" <function> <variant> <bucket> <samples> <mean seconds> <variance>
//   "bandwidth" <host_to_device|device_to_host> <bytes per second> <samples>
// Names are percent-encoded (tab, newline, '%'). Unknown or malformed lines are skipped (and
// counted) so that a newer file format or a damaged file never stops a job. save() writes a
// temporary file and renames it over the old one: readers never see half a file.
//
// Thread-safe: every method takes the model's lock.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "prism/internal/thread_annotations.h"

namespace prism::internal {

class PerfModel {
 public:
  // Runs of a variant in one bucket before its mean is trusted (StarPU calibrates likewise).
  static constexpr int64_t kCalibrationRuns = 3;
  // Runs weighted equally before the history starts forgetting.
  static constexpr int64_t kWindow = 50;
  // Bandwidth assumed before any copy was measured: 8 GB/s (a PCIe 3 x16 link, or a host memcpy
  // of cold pages here).
  static constexpr double kDefaultBandwidth = 8e9;
  // Sample counts stop growing here (and larger counts in a file are refused).
  static constexpr int64_t kMaxSamples = int64_t{1} << 40;

  struct Estimate {
    int64_t samples = 0;  // observations so far (not capped)
    double mean = 0;      // seconds
    double stddev = 0;    // seconds
  };
  // kNetwork: between this node and another of its cluster (objects pulled across nodes); it is
  // the cluster's, not the machine's: not written to the file.
  enum class Link { kHostToDevice = 0, kDeviceToHost = 1, kNetwork = 2 };
  // Network bandwidth assumed before a transfer was measured: 1 GB/s (10 GbE, roughly).
  static constexpr double kDefaultNetworkBandwidth = 1e9;

  static int bucket_of(int64_t size) noexcept;

  // One run of `variant` of `function` on input of size bucket `bucket` took `seconds`.
  // Negative or non-finite times are ignored.
  void record(const std::string& function, const std::string& variant, int bucket,
              double seconds);
  Estimate estimate(const std::string& function, const std::string& variant, int bucket) const;

  // A copy of `bytes` over `link` took `seconds` (ignored below 64 KiB: latency, not bandwidth).
  void record_transfer(Link link, int64_t bytes, double seconds);
  // Bytes per second: the running mean of measured copies, else kDefaultBandwidth
  // (kDefaultNetworkBandwidth for kNetwork).
  double bandwidth(Link link) const;

  // Adds the file's entries (a missing file adds nothing). Returns the entries read; malformed
  // lines are skipped and counted in *skipped when given.
  int load(const std::string& path, int* skipped = nullptr);
  // Writes every entry of this machine (not runs on other nodes, "<variant>@<node>", nor the
  // network's bandwidth). Throws prism::Error (kUnavailable) if the file cannot be written.
  void save(const std::string& path) const;
  // Whether anything was recorded since the last load() or save().
  bool changed() const;
  // <dir>/<host name>.prism-perf: one file per machine.
  static std::string file_in(const std::string& dir);

  struct Entry {
    std::string function;
    std::string variant;
    int bucket = 0;
    Estimate estimate;
  };
  std::vector<Entry> entries() const;

 private:
  struct History {
    int64_t samples = 0;
    double mean = 0;
    double variance = 0;
    void add(double x) noexcept;
  };
  using Key = std::tuple<std::string, std::string, int>;

  mutable Mutex mu_;
  std::map<Key, History> runs_ PRISM_GUARDED_BY(mu_);
  History links_[3] PRISM_GUARDED_BY(mu_);  // bytes per second, per Link
  mutable bool changed_ PRISM_GUARDED_BY(mu_) = false;
};

}  // namespace prism::internal
