#include "scheduler/resources.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "prism/errors.h"
#include "prism/internal/device_support.h"

namespace prism::internal {

namespace {
double to_amount(int64_t units) { return static_cast<double>(units) / kUnitsPerResource; }

std::string format_amount(double v) {
  std::string s = std::to_string(v);
  s.erase(s.find_last_not_of('0') + 1);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

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

std::string describe_amount(int64_t units, const char* singular, const char* plural) {
  return format_amount(to_amount(units)) + " " + (units == kUnitsPerResource ? singular : plural);
}

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
  for (const auto& entry : custom) {
    const std::string& name = entry.first;
    if (name.empty()) throw Error(ErrorCode::kInvalidArgument, "custom resource with empty name");
    const int64_t u = to_units("resource ", name, entry.second);
    if (u == 0) continue;
    auto it = std::find_if(r.custom.begin(), r.custom.end(),
                           [&name](const auto& p) { return p.first == name; });
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

bool PartialAllocation::empty() const {
  if (cpu != 0 || memory != 0) return false;
  for (int64_t u : gpu_units) {
    if (u != 0) return false;
  }
  for (int64_t b : gpu_memory) {
    if (b != 0) return false;
  }
  for (int64_t c : custom) {
    if (c != 0) return false;
  }
  return true;
}

ResourcePool::ResourcePool(const NodeResources& t)
    : cpu_total_(t.cpu), cpu_free_(t.cpu), memory_total_(t.memory), memory_free_(t.memory) {
  for (int i = 0; i < t.num_gpus; ++i) gpu_total_.push_back(kUnitsPerResource);
  if (t.gpu_fraction > 0) gpu_total_.push_back(t.gpu_fraction);
  gpu_free_ = gpu_total_;
  gpu_long_held_.assign(gpu_total_.size(), 0);
  gpu_memory_total_.assign(gpu_total_.size(), t.gpu_memory);
  gpu_memory_free_ = gpu_memory_total_;
  for (const auto& c : t.custom) {
    custom_names_.push_back(c.first);
    custom_total_.push_back(c.second);
  }
  custom_free_ = custom_total_;
}

int ResourcePool::custom_index(const std::string& name) const {
  for (size_t i = 0; i < custom_names_.size(); ++i) {
    if (custom_names_[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::string ResourcePool::infeasible_reason(const ResourceRequest& r) const {
  if (r.cpu > cpu_total_) {
    return "it asks for " + describe_amount(r.cpu, "CPU", "CPUs") + " but the node has " +
           describe_amount(cpu_total_, "CPU", "CPUs");
  }
  if (r.memory > memory_total_) {
    return "it asks for " + std::to_string(r.memory) + " bytes of memory but the node has " +
           std::to_string(memory_total_);
  }
  if (r.gpu > 0) {
    int64_t total = 0;
    for (int64_t g : gpu_total_) total += g;
    int64_t most_memory = 0;
    for (int64_t m : gpu_memory_total_) most_memory = std::max(most_memory, m);
    if (r.gpu_memory > most_memory && !gpu_total_.empty()) {
      return "it asks for " + std::to_string(r.gpu_memory) +
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
      return "it asks for " + describe_amount(r.gpu, "GPU", "GPUs") + " but the node has " +
             (total == 0 ? std::string("no GPU") : describe_amount(total, "GPU", "GPUs"));
    }
  }
  for (const auto& c : r.custom) {
    const int i = custom_index(c.first);
    if (i < 0) return "it asks for resource '" + c.first + "', which the node does not have";
    if (c.second > custom_total_[i]) {
      return "it asks for " + format_amount(to_amount(c.second)) + " of resource '" + c.first +
             "' but the node has " + format_amount(to_amount(custom_total_[i]));
    }
  }
  return {};
}

namespace {
bool failed_in(uint64_t failed, size_t device) {
  return device < 64 && ((failed >> device) & 1) != 0;
}
}  // namespace

bool ResourcePool::healthy_could_serve(int64_t units, int64_t gpu_memory, uint64_t failed) const {
  // Capacity that will come free some day: what long-lived holders (actors) keep does not count.
  int64_t need = units <= kUnitsPerResource ? 1 : units / kUnitsPerResource;
  for (size_t i = 0; i < gpu_total_.size() && need > 0; ++i) {
    if (failed_in(failed, i) || gpu_memory_total_[i] < gpu_memory) continue;
    const int64_t coming = gpu_total_[i] - gpu_long_held_[i];
    if (units <= kUnitsPerResource ? coming >= units
                                   : gpu_total_[i] == kUnitsPerResource && coming == gpu_total_[i]) {
      --need;
    }
  }
  return need == 0;
}

bool uses_failed_gpu(const Allocation& a) noexcept {
  const uint64_t failed = failed_devices();
  if (failed == 0) return false;
  for (const auto& g : a.gpus) {
    if (failed_in(failed, static_cast<size_t>(g.first))) return true;
  }
  return false;
}

bool ResourcePool::uses_avoidable_failed_gpu(const Allocation& a) const {
  const uint64_t failed = failed_devices();
  if (failed == 0 || a.gpus.empty()) return false;
  bool uses = false;
  int64_t units = 0;
  for (const auto& g : a.gpus) {
    uses = uses || failed_in(failed, static_cast<size_t>(g.first));
    units += g.second;
  }
  return uses && healthy_could_serve(units, a.gpu_memory, failed);
}

bool ResourcePool::pick_gpus(int64_t units, int64_t gpu_memory,
                             std::vector<std::pair<int, int64_t>>* out) const {
  if (units <= 0) return true;
  // Failed devices are skipped wherever healthy ones could ever serve the request; a request
  // only they could serve still gets them, and its task fails fast there (DeviceScope) instead
  // of waiting forever.
  const uint64_t all_failed = failed_devices();
  const uint64_t failed =
      all_failed != 0 && healthy_could_serve(units, gpu_memory, all_failed) ? all_failed : 0;
  if (units <= kUnitsPerResource) {
    int best = -1;
    for (size_t i = 0; i < gpu_free_.size(); ++i) {
      if (gpu_memory_free_[i] < gpu_memory || failed_in(failed, i)) continue;
      if (gpu_free_[i] >= units && (best < 0 || gpu_free_[i] < gpu_free_[best])) {
        best = static_cast<int>(i);
      }
    }
    if (best < 0) return false;
    out->emplace_back(best, units);
    return true;
  }
  int64_t need = units / kUnitsPerResource;
  for (size_t i = 0; i < gpu_free_.size() && need > 0; ++i) {
    if (gpu_free_[i] == kUnitsPerResource && gpu_total_[i] == kUnitsPerResource &&
        gpu_memory_free_[i] >= gpu_memory && !failed_in(failed, i)) {
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
  if (r.memory > memory_free_) return false;
  if (r.gpu > 0) {
    std::vector<std::pair<int, int64_t>> gpus;
    if (!pick_gpus(r.gpu, r.gpu_memory, &gpus)) return false;
  }
  for (const auto& c : r.custom) {
    const int i = custom_index(c.first);
    if (i < 0 || custom_free_[i] < c.second) return false;
  }
  return true;
}

uint32_t ResourcePool::lacking(const ResourceRequest& r, bool long_lived) const {
  uint32_t out = 0;
  if (r.cpu > 0 && cpu_usable(long_lived) < r.cpu) out |= kKindCpu;
  if (r.memory > memory_free_) out |= kKindMemory;
  if (r.gpu > 0) {
    std::vector<std::pair<int, int64_t>> gpus;
    if (!pick_gpus(r.gpu, r.gpu_memory, &gpus)) out |= kKindGpu;
  }
  for (const auto& c : r.custom) {
    const int i = custom_index(c.first);
    if (i < 0 || custom_free_[i] < c.second) out |= kKindCustom;
  }
  return out;
}

uint32_t kinds_of(const ResourceRequest& r) noexcept {
  uint32_t out = 0;
  if (r.cpu > 0) out |= kKindCpu;
  if (r.memory > 0) out |= kKindMemory;
  if (r.gpu > 0 || r.gpu_memory > 0) out |= kKindGpu;
  if (!r.custom.empty()) out |= kKindCustom;
  return out;
}

bool ResourcePool::fits(const ResourceRequest& r, bool long_lived) const {
  return (r.cpu == 0 || cpu_usable(long_lived) >= r.cpu) && fits_except_cpu(r);
}

bool ResourcePool::try_acquire(const ResourceRequest& r, bool long_lived, Allocation* out) {
  if (!fits(r, long_lived)) return false;
  Allocation a;
  a.cpu = r.cpu;
  a.memory = r.memory;
  a.gpu_memory = r.gpu_memory;
  pick_gpus(r.gpu, r.gpu_memory, &a.gpus);
  for (const auto& c : r.custom) a.custom.emplace_back(custom_index(c.first), c.second);
  cpu_free_ -= a.cpu;
  memory_free_ -= a.memory;
  for (const auto& g : a.gpus) {
    gpu_free_[g.first] -= g.second;
    gpu_memory_free_[g.first] -= a.gpu_memory;
  }
  for (const auto& c : a.custom) custom_free_[c.first] -= c.second;
  if (long_lived) hold_for_life(&a);
  *out = std::move(a);
  return true;
}

bool ResourcePool::move_gpu(Allocation* a, int device) {
  if (a->gpus.size() != 1 || a->long_lived || device < 0 ||
      static_cast<size_t>(device) >= gpu_free_.size()) {
    return false;
  }
  const auto [from, units] = a->gpus.front();
  if (from == device || gpu_free_[device] < units || gpu_memory_free_[device] < a->gpu_memory) {
    return false;
  }
  if (units == kUnitsPerResource && gpu_total_[device] != kUnitsPerResource) return false;
  // A fraction does not break up a whole free device unless it frees a whole one in exchange
  // (best fit keeps whole devices for whole-GPU requests).
  if (units < kUnitsPerResource && gpu_free_[device] == gpu_total_[device] &&
      gpu_free_[from] + units != gpu_total_[from]) {
    return false;
  }
  if (failed_in(failed_devices(), static_cast<size_t>(device))) return false;
  gpu_free_[from] += units;
  gpu_memory_free_[from] += a->gpu_memory;
  gpu_free_[device] -= units;
  gpu_memory_free_[device] -= a->gpu_memory;
  a->gpus.front().first = device;
  return true;
}

void ResourcePool::hold_for_life(Allocation* a) {
  a->long_lived = true;
  for (const auto& g : a->gpus) gpu_long_held_[g.first] += g.second;
}

void ResourcePool::release(const Allocation& a) {
  if (a.long_lived) {
    for (const auto& g : a.gpus) gpu_long_held_[g.first] -= g.second;
  }
  cpu_free_ += a.cpu;
  memory_free_ += a.memory;
  for (const auto& g : a.gpus) {
    gpu_free_[g.first] += g.second;
    gpu_memory_free_[g.first] += a.gpu_memory;
  }
  for (const auto& c : a.custom) custom_free_[c.first] += c.second;
}

int64_t ResourcePool::take_back(int64_t units) {
  const int64_t n = std::min({units, cpu_free_, cpu_lent_});
  if (n <= 0) return 0;
  cpu_free_ -= n;
  cpu_lent_ -= n;
  return n;
}

// ---- reservations ----

void ResourcePool::choose_reserved_gpus(const ResourceRequest& r, PartialAllocation* p) const {
  // Devices that can ever hold the request, most free first (they fill soonest).
  std::vector<int> candidates;
  const uint64_t all_failed = failed_devices();
  const uint64_t failed =
      all_failed != 0 && healthy_could_serve(r.gpu, r.gpu_memory, all_failed) ? all_failed : 0;
  for (size_t i = 0; i < gpu_total_.size(); ++i) {
    if (gpu_memory_total_[i] < r.gpu_memory || failed_in(failed, i)) continue;
    if (r.gpu <= kUnitsPerResource ? gpu_total_[i] >= r.gpu
                                   : gpu_total_[i] == kUnitsPerResource) {
      candidates.push_back(static_cast<int>(i));
    }
  }
  std::stable_sort(candidates.begin(), candidates.end(), [this](int a, int b) {
    return gpu_free_[a] > gpu_free_[b];
  });
  const size_t n = r.gpu <= kUnitsPerResource ? 1 : static_cast<size_t>(r.gpu / kUnitsPerResource);
  candidates.resize(std::min(n, candidates.size()));
  p->gpu_devices = candidates;
  p->gpu_units.assign(candidates.size(), 0);
  p->gpu_memory.assign(candidates.size(), 0);
}

void ResourcePool::reserve_step(const ResourceRequest& r, bool /*long_lived*/,
                                PartialAllocation* p) {
  // A reservation holds what it takes until its whole request is there: like an actor, it may
  // not take lent CPU, which its lender needs back to go on (it could wait for it forever).
  const int64_t cpu =
      std::clamp<int64_t>(r.cpu - p->cpu, 0, std::max<int64_t>(0, cpu_usable(/*long_lived=*/true)));
  p->cpu += cpu;
  cpu_free_ -= cpu;
  const int64_t mem = std::clamp<int64_t>(r.memory - p->memory, 0, std::max<int64_t>(0, memory_free_));
  p->memory += mem;
  memory_free_ -= mem;
  if (r.gpu > 0) {
    if (p->gpu_devices.empty()) choose_reserved_gpus(r, p);
    const int64_t per_device = std::min<int64_t>(r.gpu, kUnitsPerResource);
    for (size_t k = 0; k < p->gpu_devices.size(); ++k) {
      const int d = p->gpu_devices[k];
      const int64_t u = std::clamp<int64_t>(per_device - p->gpu_units[k], 0, gpu_free_[d]);
      p->gpu_units[k] += u;
      gpu_free_[d] -= u;
      const int64_t b = std::clamp<int64_t>(r.gpu_memory - p->gpu_memory[k], 0, gpu_memory_free_[d]);
      p->gpu_memory[k] += b;
      gpu_memory_free_[d] -= b;
    }
  }
  if (p->custom.size() != r.custom.size()) p->custom.assign(r.custom.size(), 0);
  for (size_t k = 0; k < r.custom.size(); ++k) {
    const int i = custom_index(r.custom[k].first);
    if (i < 0) continue;
    const int64_t u = std::clamp<int64_t>(r.custom[k].second - p->custom[k], 0, custom_free_[i]);
    p->custom[k] += u;
    custom_free_[i] -= u;
  }
}

bool ResourcePool::complete(const ResourceRequest& r, const PartialAllocation& p) const {
  if (p.cpu < r.cpu || p.memory < r.memory) return false;
  if (r.gpu > 0) {
    const size_t n = r.gpu <= kUnitsPerResource ? 1 : static_cast<size_t>(r.gpu / kUnitsPerResource);
    if (p.gpu_devices.size() < n) return false;
    const int64_t per_device = std::min<int64_t>(r.gpu, kUnitsPerResource);
    for (size_t k = 0; k < p.gpu_devices.size(); ++k) {
      if (p.gpu_units[k] < per_device || p.gpu_memory[k] < r.gpu_memory) return false;
    }
  }
  for (size_t k = 0; k < r.custom.size(); ++k) {
    if (k >= p.custom.size() || p.custom[k] < r.custom[k].second) return false;
  }
  return true;
}

Allocation ResourcePool::to_allocation(const ResourceRequest& r, PartialAllocation&& p,
                                       bool long_lived) {
  Allocation a;
  a.cpu = p.cpu;
  a.memory = p.memory;
  a.gpu_memory = r.gpu > 0 ? r.gpu_memory : 0;
  for (size_t k = 0; k < p.gpu_devices.size(); ++k) a.gpus.emplace_back(p.gpu_devices[k], p.gpu_units[k]);
  for (size_t k = 0; k < r.custom.size(); ++k) {
    a.custom.emplace_back(custom_index(r.custom[k].first), p.custom[k]);
  }
  p = PartialAllocation{};
  if (long_lived) hold_for_life(&a);
  return a;
}

void ResourcePool::release(const PartialAllocation& p, const ResourceRequest& r) {
  cpu_free_ += p.cpu;
  memory_free_ += p.memory;
  for (size_t k = 0; k < p.gpu_devices.size(); ++k) {
    gpu_free_[p.gpu_devices[k]] += p.gpu_units[k];
    gpu_memory_free_[p.gpu_devices[k]] += p.gpu_memory[k];
  }
  for (size_t k = 0; k < p.custom.size() && k < r.custom.size(); ++k) {
    const int i = custom_index(r.custom[k].first);
    if (i >= 0) custom_free_[i] += p.custom[k];
  }
}

// ---- inline children ----

bool ResourcePool::carve(const ResourceRequest& r, int64_t parent_cpu, const Allocation* parent,
                         Allocation* child) const {
  if (r.cpu > parent_cpu) return false;
  Allocation c;
  c.cpu = r.cpu;
  if (r.memory > 0) {
    if (parent == nullptr || r.memory > parent->memory) return false;
    c.memory = r.memory;
  }
  if (r.gpu > 0) {
    if (parent == nullptr || r.gpu_memory > parent->gpu_memory) return false;
    c.gpu_memory = r.gpu_memory;
    if (r.gpu <= kUnitsPerResource) {
      for (const auto& g : parent->gpus) {
        if (g.second >= r.gpu) {
          c.gpus.emplace_back(g.first, r.gpu);
          break;
        }
      }
      if (c.gpus.empty()) return false;
    } else {
      int64_t need = r.gpu / kUnitsPerResource;
      for (const auto& g : parent->gpus) {
        if (need > 0 && g.second == kUnitsPerResource) {
          c.gpus.emplace_back(g.first, kUnitsPerResource);
          --need;
        }
      }
      if (need > 0) return false;
    }
  }
  for (const auto& want : r.custom) {
    const int i = custom_index(want.first);
    if (parent == nullptr || i < 0) return false;
    int64_t held = 0;
    for (const auto& h : parent->custom) {
      if (h.first == i) held += h.second;
    }
    if (held < want.second) return false;
    c.custom.emplace_back(i, want.second);
  }
  *child = std::move(c);
  return true;
}

// ---- views ----

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
  m["CPU"] = to_amount(std::max<int64_t>(0, cpu_free_));
  double g = 0;
  for (int64_t u : gpu_free_) g += to_amount(u);
  m["GPU"] = g;
  if (!gpu_total_.empty()) {
    double gm = 0;
    for (int64_t b : gpu_memory_free_) gm += static_cast<double>(b);
    m["gpu_memory"] = gm;
  }
  m["memory"] = static_cast<double>(memory_free_);
  for (size_t i = 0; i < custom_names_.size(); ++i) {
    m[custom_names_[i]] = to_amount(custom_free_[i]);
  }
  return m;
}

}  // namespace prism::internal
