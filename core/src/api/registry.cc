#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "api/registry_internal.h"
#include "prism/internal/device_channel.h"
#include "prism/internal/remote_call.h"
#include "prism/internal/variant_run.h"
#include "prism/errors.h"
#include "prism/internal/thread_annotations.h"
#include "prism/registry.h"

namespace prism::internal {

namespace {

struct Registered {
  FunctionKey key;
  RemoteInvoker invoker = nullptr;
  std::string type;
  ActorMethodInvoker method_invoker = nullptr;
};

struct Registry {
  Mutex mu;
  std::map<std::string, Registered> by_name PRISM_GUARDED_BY(mu);
  std::vector<std::string> conflicts PRISM_GUARDED_BY(mu);
  std::map<std::string, ActorCtorInvoker> actor_ctors PRISM_GUARDED_BY(mu);
};

// Bumped (release) after every registration: a thread's cache of name lookups made before it
// is stale.
std::atomic<uint64_t> g_generation{0};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: used from static initializers
  return *r;
}

bool same_key(const FunctionKey& a, const FunctionKey& b) {
  return a.size == b.size && std::memcmp(a.bytes, b.bytes, a.size) == 0;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\n' || s[b] == '&')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\n')) --e;
  return s.substr(b, e - b);
}

}  // namespace

void register_function(const std::string& name, const FunctionKey& key, bool throw_on_conflict,
                       RemoteInvoker invoker, const char* type,
                       ActorMethodInvoker method_invoker) {
  if (name.empty()) throw Error(ErrorCode::kInvalidArgument, "empty function name");
  Registry& r = registry();
  MutexLock lock(r.mu);
  auto it = r.by_name.find(name);
  if (it == r.by_name.end()) {
    r.by_name.emplace(name, Registered{key, invoker, type != nullptr ? type : "", method_invoker});
    g_generation.fetch_add(1, std::memory_order_release);
    return;
  }
  if (same_key(it->second.key, key)) return;  // registering the same callable again is fine
  const std::string msg = "two different functions are registered under the name '" + name + "'";
  if (throw_on_conflict) throw Error(ErrorCode::kInvalidArgument, msg);
  r.conflicts.push_back(msg);
}

std::string registered_name(const FunctionKey& key) {
  if (key.size == 0) return {};
  // The timeline and the dashboard name every run: each thread keeps its recent lookups (a few
  // functions run over and over), dropped when anything registers. A lookup that raced with a
  // registration is cached under the generation read before it, so the next call drops it.
  struct Cached {
    FunctionKey key;
    std::string name;
  };
  thread_local std::vector<Cached> cache;
  thread_local uint64_t cached_generation = ~uint64_t{0};
  const uint64_t generation = g_generation.load(std::memory_order_acquire);
  if (generation != cached_generation) {
    cache.clear();
    cached_generation = generation;
  }
  for (const Cached& c : cache) {
    if (same_key(c.key, key)) return c.name;
  }
  std::string found;
  {
    Registry& r = registry();
    MutexLock lock(r.mu);
    for (const auto& [name, reg] : r.by_name) {
      if (same_key(reg.key, key)) {
        found = name;
        break;
      }
    }
  }
  constexpr size_t kCached = 16;
  if (cache.size() == kCached) cache.erase(cache.begin());
  cache.push_back({key, found});
  return found;
}

bool find_registered(const std::string& name, FunctionKey* key, RemoteInvoker* invoker,
                     ActorMethodInvoker* method_invoker) {
  Registry& r = registry();
  MutexLock lock(r.mu);
  auto it = r.by_name.find(name);
  if (it == r.by_name.end()) return false;
  *key = it->second.key;
  *invoker = it->second.invoker;
  if (method_invoker != nullptr) *method_invoker = it->second.method_invoker;
  return true;
}

bool register_actor_ctor(const char* key, ActorCtorInvoker invoker) noexcept {
  try {
    Registry& r = registry();
    MutexLock lock(r.mu);
    r.actor_ctors.emplace(key, invoker);
    return true;
  } catch (...) {
    return false;
  }
}

ActorCtorInvoker find_actor_ctor(const std::string& key) {
  Registry& r = registry();
  MutexLock lock(r.mu);
  auto it = r.actor_ctors.find(key);
  return it == r.actor_ctors.end() ? nullptr : it->second;
}

std::vector<std::string> registered_signatures() {
  Registry& r = registry();
  MutexLock lock(r.mu);
  std::vector<std::string> out;
  out.reserve(r.by_name.size());
  for (const auto& [name, reg] : r.by_name) out.push_back(name + " " + reg.type);
  return out;  // sorted: by_name is ordered
}

bool register_static(const char* names, const FunctionKey* keys, const RemoteInvoker* invokers,
                     const char* const* types, size_t count,
                     const ActorMethodInvoker* method_invokers) noexcept {
  try {
    std::vector<std::string> parts;
    std::string cur;
    int depth = 0;  // commas inside template arguments or parentheses do not split
    for (const char* p = names; *p != '\0'; ++p) {
      if (*p == '<' || *p == '(') ++depth;
      if (*p == '>' || *p == ')') --depth;
      if (*p == ',' && depth == 0) {
        parts.push_back(trim(cur));
        cur.clear();
      } else {
        cur += *p;
      }
    }
    parts.push_back(trim(cur));
    for (size_t i = 0; i < count && i < parts.size(); ++i) {
      register_function(parts[i], keys[i], /*throw_on_conflict=*/false, invokers[i], types[i],
                        method_invokers != nullptr ? method_invokers[i] : nullptr);
    }
    return true;
  } catch (...) {
    return false;
  }
}

bool register_variants(const std::string& set, const std::vector<std::string>& names,
                       const FunctionKey* keys, const RemoteInvoker* invokers,
                       const char* type) noexcept {
  try {
    if (set.empty()) {
      Registry& r = registry();
      MutexLock lock(r.mu);
      r.conflicts.push_back(
          "PRISM_VARIANTS: the set has no name (give it one with .name(\"...\"))");
      return false;
    }
    for (size_t i = 0; i < names.size(); ++i) {
      register_function(remote_variant_name(set, names[i]), keys[i], /*throw_on_conflict=*/false,
                        invokers[i], type);
    }
    return true;
  } catch (...) {
    return false;
  }
}

bool variants_registered(const std::string& set, const std::vector<std::string>& names) {
  Registry& r = registry();
  MutexLock lock(r.mu);
  for (const std::string& n : names) {
    auto it = r.by_name.find(remote_variant_name(set, n));
    if (it == r.by_name.end() || it->second.invoker == nullptr) return false;
  }
  return !names.empty();
}

void check_registry_conflicts() {
  Registry& r = registry();
  MutexLock lock(r.mu);
  if (r.conflicts.empty()) return;
  std::string msg = "prism::init: ";
  for (size_t i = 0; i < r.conflicts.size(); ++i) msg += (i ? "; " : "") + r.conflicts[i];
  throw Error(ErrorCode::kInvalidArgument, msg);
}

std::vector<std::string>*& result_elements_sink() noexcept {
  thread_local std::vector<std::string>* sink = nullptr;
  return sink;
}

LiveResult*& live_result_sink() noexcept {
  thread_local LiveResult* sink = nullptr;
  return sink;
}

namespace {
std::atomic<LiveResultsReleaser> g_live_releaser{nullptr};
}  // namespace

void set_live_results_releaser(LiveResultsReleaser releaser) noexcept {
  g_live_releaser.store(releaser, std::memory_order_release);
}

size_t release_live_results(int device, size_t bytes) noexcept {
  const LiveResultsReleaser f = g_live_releaser.load(std::memory_order_acquire);
  return f == nullptr ? 0 : f(device, bytes);
}

namespace {
std::atomic<DeviceChannelsFactory> g_channels_factory{nullptr};
}  // namespace

void set_device_channels_factory(DeviceChannelsFactory factory) noexcept {
  g_channels_factory.store(factory, std::memory_order_release);
}

std::unique_ptr<DeviceChannels> make_device_channels() {
  const DeviceChannelsFactory f = g_channels_factory.load(std::memory_order_acquire);
  return f == nullptr ? nullptr : f();
}

}  // namespace prism::internal
