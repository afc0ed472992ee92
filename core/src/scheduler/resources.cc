#include "scheduler/resources.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "prism/errors.h"

namespace prism::internal {

namespace {
double to_amount(int64_t units) { return static_cast<double>(units) / kUnitsPerResource; }

int64_t to_units(const char* what, const std::string& name, double amount) {
  if (std::isnan(amount) || std::isinf(amount) || amount < 0) {
    throw Error(ErrorCode::kInvalidArgument,
                std::string("invalid amount for ") + what + name + ": must be finite and >= 0");
  }
  const double units = std::round(amount * kUnitsPerResource);
  if (units > static_cast<double>(std::numeric_limits<int64_t>::max() / 4)) {
    throw Error(ErrorCode::kInvalidArgument, std::string("amount too large for ") + what + name);
  }
  return static_cast<int64_t>(units);
}
}  // namespace

ResourceRequest make_request(double cpus, double gpus, int64_t memory, int64_t gpu_memory,
                             const std::vector<std::pair<std::string, double>>& custom) {
  ResourceRequest r;
  r.cpu = to_units("", "num_cpus", cpus);
  r.gpu = to_units("", "num_gpus", gpus);
  if (r.gpu > kUnitsPerResource && r.gpu % kUnitsPerResource != 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "num_gpus above 1 must be a whole number (fractions share one device)");
  }
  if (memory < 0) throw Error(ErrorCode::kInvalidArgument, "memory must be >= 0 bytes");
  r.memory = memory;
  if (gpu_memory < 0) throw Error(ErrorCode::kInvalidArgument, "gpu_memory must be >= 0 bytes");
  if (gpu_memory > 0 && r.gpu == 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "gpu_memory is reserved on the granted GPUs: ask for num_gpus > 0 as well");
  }
  r.gpu_memory = gpu_memory;
  for (const auto& [name, amount] : custom) {
    if (name.empty()) throw Error(ErrorCode::kInvalidArgument, "custom resource with empty name");
    const int64_t u = to_units("resource ", name, amount);
    if (u == 0) continue;
    auto it = std::find_if(r.custom.begin(), r.custom.end(),
                           [&](const auto& p) { return p.first == name; });
    if (it != r.custom.end()) {
      it->second += u;
    } else {
      r.custom.emplace_back(name, u);
    }
  }
  return r;
}

std::vector<int> Allocation::gpu_ids() const {
  std::vector<int> ids;
  ids.reserve(gpus.size());
  for (const auto& g : gpus) ids.push_back(g.first);
  return ids;
}

ResourcePool::ResourcePool(const NodeResources& t)
    : cpu_total_(t.cpu),
      cpu_available_(t.cpu),
      memory_total_(t.memory),
      memory_available_(t.memory) {
  for (int i = 0; i < t.num_gpus; ++i) gpu_total_.push_back(kUnitsPerResource);
  if (t.gpu_fraction > 0) gpu_total_.push_back(t.gpu_fraction);
  gpu_available_ = gpu_total_;
  gpu_memory_total_.assign(gpu_total_.size(), t.gpu_memory);
  gpu_memory_available_ = gpu_memory_total_;
  for (const auto& [name, units] : t.custom) {
    custom_names_.push_back(name);
    custom_total_.push_back(units);
  }
  custom_available_ = custom_total_;
}

int ResourcePool::custom_index(const std::string& name) const {
  for (size_t i = 0; i < custom_names_.size(); ++i) {
    if (custom_names_[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::string ResourcePool::infeasible_reason(const ResourceRequest& r) const {
  auto fmt = [](double v) {
    std::string s = std::to_string(v);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
  };
  if (r.cpu > cpu_total_) {
    return "the task asks for " + fmt(to_amount(r.cpu)) + " CPUs but the node has " +
           fmt(to_amount(cpu_total_));
  }
  if (r.memory > memory_total_) {
    return "the task asks for " + std::to_string(r.memory) + " bytes of memory but the node has " +
           std::to_string(memory_total_);
  }
  if (r.gpu > 0) {
    int64_t most_memory = 0;
    for (int64_t m : gpu_memory_total_) most_memory = std::max(most_memory, m);
    if (r.gpu_memory > most_memory && !gpu_total_.empty()) {
      return "the task asks for " + std::to_string(r.gpu_memory) +
             " bytes of gpu_memory per GPU but the node's GPUs have at most " +
             std::to_string(most_memory);
    }
    int64_t whole = 0;
    int64_t best = 0;
    for (size_t i = 0; i < gpu_total_.size(); ++i) {
      if (gpu_memory_total_[i] < r.gpu_memory) continue;
      if (gpu_total_[i] == kUnitsPerResource) ++whole;
      best = std::max(best, gpu_total_[i]);
    }
    const bool ok = r.gpu <= kUnitsPerResource ? best >= r.gpu
                                                : whole * kUnitsPerResource >= r.gpu;
    if (!ok) {
      double total = 0;
      for (int64_t g : gpu_total_) total += to_amount(g);
      return "the task asks for " + fmt(to_amount(r.gpu)) + " GPUs but the node has " +
             fmt(total);
    }
  }
  for (const auto& [name, units] : r.custom) {
    const int i = custom_index(name);
    if (i < 0) return "the task asks for resource '" + name + "' which the node does not have";
    if (units > custom_total_[i]) {
      return "the task asks for " + fmt(to_amount(units)) + " of resource '" + name +
             "' but the node has " + fmt(to_amount(custom_total_[i]));
    }
  }
  return {};
}

bool ResourcePool::pick_gpus(int64_t units, int64_t gpu_memory,
                             std::vector<std::pair<int, int64_t>>* out) const {
  if (units <= 0) return true;
  if (units <= kUnitsPerResource) {
    int best = -1;
    for (size_t i = 0; i < gpu_available_.size(); ++i) {
      if (gpu_memory_available_[i] < gpu_memory) continue;
      if (gpu_available_[i] >= units && (best < 0 || gpu_available_[i] < gpu_available_[best])) {
        best = static_cast<int>(i);
      }
    }
    if (best < 0) return false;
    out->emplace_back(best, units);
    return true;
  }
  int64_t need = units / kUnitsPerResource;
  for (size_t i = 0; i < gpu_available_.size() && need > 0; ++i) {
    if (gpu_available_[i] == kUnitsPerResource && gpu_total_[i] == kUnitsPerResource &&
        gpu_memory_available_[i] >= gpu_memory) {
      out->emplace_back(static_cast<int>(i), kUnitsPerResource);
      --need;
    }
  }
  if (need > 0) {
    out->clear();
    return false;
  }
  return true;
}

bool ResourcePool::fits_except_cpu(const ResourceRequest& r) const {
  if (r.memory > memory_available_) return false;
  std::vector<std::pair<int, int64_t>> gpus;
  if (!pick_gpus(r.gpu, r.gpu_memory, &gpus)) return false;
  for (const auto& [name, units] : r.custom) {
    const int i = custom_index(name);
    if (i < 0 || custom_available_[i] < units) return false;
  }
  return true;
}

bool ResourcePool::try_acquire(const ResourceRequest& r, Allocation* out) {
  if (r.cpu > 0 && cpu_available_ < r.cpu) return false;
  if (!fits_except_cpu(r)) return false;
  Allocation a;
  a.cpu = r.cpu;
  a.memory = r.memory;
  a.gpu_memory = r.gpu_memory;
  pick_gpus(r.gpu, r.gpu_memory, &a.gpus);
  for (const auto& [name, units] : r.custom) a.custom.emplace_back(custom_index(name), units);
  cpu_available_ -= a.cpu;
  memory_available_ -= a.memory;
  for (const auto& [dev, units] : a.gpus) {
    gpu_available_[dev] -= units;
    gpu_memory_available_[dev] -= a.gpu_memory;
  }
  for (const auto& [i, units] : a.custom) custom_available_[i] -= units;
  *out = std::move(a);
  return true;
}

void ResourcePool::release(const Allocation& a) {
  cpu_available_ += a.cpu;
  memory_available_ += a.memory;
  for (const auto& [dev, units] : a.gpus) {
    gpu_available_[dev] += units;
    gpu_memory_available_[dev] += a.gpu_memory;
  }
  for (const auto& [i, units] : a.custom) custom_available_[i] += units;
}

std::map<std::string, double> ResourcePool::totals() const {
  std::map<std::string, double> m;
  m["CPU"] = to_amount(cpu_total_);
  double g = 0;
  for (int64_t u : gpu_total_) g += to_amount(u);
  m["GPU"] = g;
  if (!gpu_total_.empty()) {
    double gm = 0;
    for (int64_t b : gpu_memory_total_) gm += static_cast<double>(b);
    m["gpu_memory"] = gm;
  }
  m["memory"] = static_cast<double>(memory_total_);
  for (size_t i = 0; i < custom_names_.size(); ++i) m[custom_names_[i]] = to_amount(custom_total_[i]);
  return m;
}

std::map<std::string, double> ResourcePool::available() const {
  std::map<std::string, double> m;
  m["CPU"] = to_amount(std::max<int64_t>(0, cpu_available_));
  double g = 0;
  for (int64_t u : gpu_available_) g += to_amount(u);
  m["GPU"] = g;
  if (!gpu_total_.empty()) {
    double gm = 0;
    for (int64_t b : gpu_memory_available_) gm += static_cast<double>(b);
    m["gpu_memory"] = gm;
  }
  m["memory"] = static_cast<double>(memory_available_);
  for (size_t i = 0; i < custom_names_.size(); ++i) {
    m[custom_names_[i]] = to_amount(custom_available_[i]);
  }
  return m;
}

}  // namespace prism::internal
