#include "scheduler/perf_model.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <locale>
#include <system_error>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "prism/errors.h"

namespace prism::internal {

namespace {

// Percent-encodes what would break a line or a field.
std::string encode(const std::string& s) {
  std::string out;
  for (const char c : s) {
    if (c == '%' || c == '\t' || c == '\n' || c == '\r') {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

bool decode(const std::string& s, std::string* out) {
  out->clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      *out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return false;
    if (!std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      return false;
    }
    *out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
    i += 2;
  }
  return true;
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  for (;;) {
    const size_t tab = line.find('\t', start);
    fields.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return fields;
    start = tab + 1;
  }
}

// Numbers are read and written in the classic "C" format whatever the program's locale.
bool parse_double(const std::string& s, double* out) {
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) {
    return false;
  }
  *out = v;
  return true;
}

bool parse_int(const std::string& s, int64_t* out) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return false;
  *out = v;
  return true;
}

}  // namespace

int PerfModel::bucket_of(int64_t size) noexcept {
  if (size <= 0) return 0;
  int b = 0;
  for (uint64_t v = static_cast<uint64_t>(size); v != 0; v >>= 1) ++b;
  return b;  // floor(log2(size)) + 1
}

void PerfModel::History::add(double x) noexcept {
  if (samples < kMaxSamples) ++samples;
  const double w = 1.0 / static_cast<double>(std::min(samples, kWindow));
  const double d = x - mean;
  mean += w * d;
  variance = (1 - w) * (variance + w * d * d);
}

void PerfModel::record(const std::string& function, const std::string& variant, int bucket,
                       double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return;
  MutexLock lock(mu_);
  runs_[Key(function, variant, bucket)].add(seconds);
  changed_ = true;
}

PerfModel::Estimate PerfModel::estimate(const std::string& function, const std::string& variant,
                                        int bucket) const {
  MutexLock lock(mu_);
  const auto it = runs_.find(Key(function, variant, bucket));
  if (it == runs_.end()) return {};
  return Estimate{it->second.samples, it->second.mean, std::sqrt(it->second.variance)};
}

void PerfModel::record_transfer(Link link, int64_t bytes, double seconds) {
  if (bytes < (64 << 10) || !std::isfinite(seconds) || seconds <= 0) return;
  MutexLock lock(mu_);
  links_[static_cast<int>(link)].add(static_cast<double>(bytes) / seconds);
  changed_ = true;
}

double PerfModel::bandwidth(Link link) const {
  MutexLock lock(mu_);
  const History& h = links_[static_cast<int>(link)];
  if (h.samples > 0 && h.mean > 0) return h.mean;
  return link == Link::kNetwork ? kDefaultNetworkBandwidth : kDefaultBandwidth;
}

bool PerfModel::changed() const {
  MutexLock lock(mu_);
  return changed_;
}

std::vector<PerfModel::Entry> PerfModel::entries() const {
  MutexLock lock(mu_);
  std::vector<Entry> out;
  out.reserve(runs_.size());
  for (const auto& [key, h] : runs_) {
    out.push_back(Entry{std::get<0>(key), std::get<1>(key), std::get<2>(key),
                        Estimate{h.samples, h.mean, std::sqrt(h.variance)}});
  }
  return out;
}

std::string PerfModel::file_in(const std::string& dir) {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::strcpy(host, "localhost");
  return dir + "/" + encode(host) + ".prism-perf";
}

int PerfModel::load(const std::string& path, int* skipped) {
  std::ifstream in(path);
  if (skipped != nullptr) *skipped = 0;
  if (!in) return 0;
  int read = 0;
  std::string line;
  MutexLock lock(mu_);
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const std::vector<std::string> f = split_tabs(line);
    bool ok = false;
    if (f[0] == "run" && f.size() == 7) {
      std::string function, variant;
      int64_t bucket = 0, samples = 0;
      double mean = 0, variance = 0;
      ok = decode(f[1], &function) && decode(f[2], &variant) && parse_int(f[3], &bucket) &&
           parse_int(f[4], &samples) && parse_double(f[5], &mean) &&
           parse_double(f[6], &variance) && bucket >= 0 && bucket <= 64 && samples > 0 &&
           samples <= kMaxSamples && mean >= 0 && variance >= 0;
      if (ok) {
        runs_[Key(function, variant, static_cast<int>(bucket))] = History{samples, mean, variance};
      }
    } else if (f[0] == "bandwidth" && f.size() == 4) {
      double bw = 0;
      int64_t samples = 0;
      const int link = f[1] == "host_to_device" ? 0 : f[1] == "device_to_host" ? 1 : -1;
      ok = link >= 0 && parse_double(f[2], &bw) && bw > 0 && parse_int(f[3], &samples) &&
           samples > 0 && samples <= kMaxSamples;
      if (ok) links_[link] = History{samples, bw, 0};
    }
    if (ok) {
      ++read;
    } else if (skipped != nullptr) {
      ++*skipped;
    }
  }
  changed_ = false;
  return read;
}

void PerfModel::save(const std::string& path) const {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out.precision(17);
  {
    MutexLock lock(mu_);
    for (const auto& [key, h] : runs_) {
      // Another node's runs (VariantPlanner::model_name): that machine's, not this one's.
      if (std::get<1>(key).find('@') != std::string::npos) continue;
      out << "run\t" << encode(std::get<0>(key)) << '\t' << encode(std::get<1>(key)) << '\t'
          << std::get<2>(key) << '\t' << h.samples << '\t' << h.mean << '\t' << h.variance
          << '\n';
    }
    const char* names[2] = {"host_to_device", "device_to_host"};
    for (int i = 0; i < 2; ++i) {
      if (links_[i].samples == 0) continue;
      out << "bandwidth\t" << names[i] << '\t' << links_[i].mean << '\t' << links_[i].samples
          << '\n';
    }
  }
  // A name of its own per save: two runtimes of one process may save at once (the last rename
  // wins; each file is whole).
  static std::atomic<uint64_t> saves{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(saves.fetch_add(1, std::memory_order_relaxed));
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << out.str();
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      throw Error(ErrorCode::kUnavailable, "cannot write the performance model file " + tmp);
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error(ErrorCode::kUnavailable,
                "cannot replace the performance model file " + path + ": " + why);
  }
  MutexLock lock(mu_);
  changed_ = false;
}

}  // namespace prism::internal
