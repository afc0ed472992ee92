// Core's side of cluster mode: the settings, the factory slot, and tasks run for other nodes.
#include <atomic>
#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "api/cluster_link.h"
#include "actor/actor_core.h"
#include "api/runtime_core.h"
#include "prism/errors.h"

namespace prism::internal {

namespace {

std::atomic<const ClusterModule*> g_module{nullptr};

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

// Seconds from environment variable `name` (finite, > 0, or >= 0 with `zero_ok`), else
// `fallback`; throws naming the variable for a malformed value.
double env_seconds(const char* name, double fallback, bool zero_ok) {
  const std::string t = env(name);
  if (t.empty()) return fallback;
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (end == t.c_str() || *end != '\0' || !(zero_ok ? v >= 0 : v > 0) || std::isinf(v)) {
    throw Error(ErrorCode::kInvalidArgument, std::string(name) + " = '" + t +
                                                 "': expected seconds " +
                                                 (zero_ok ? ">= 0" : "> 0"));
  }
  return v;
}

// "host:port" with a numeric port (0 allowed); throws naming `what` otherwise.
void check_host_port(const std::string& value, const char* what) {
  const size_t colon = value.rfind(':');
  bool ok = colon != std::string::npos && colon > 0 && colon + 1 < value.size();
  if (ok) {
    for (size_t i = colon + 1; i < value.size(); ++i) ok = ok && value[i] >= '0' && value[i] <= '9';
    ok = ok && value.size() - colon - 1 <= 5 && std::stol(value.substr(colon + 1)) <= 65535;
  }
  if (!ok) {
    throw Error(ErrorCode::kInvalidArgument,
                std::string(what) + " = '" + value + "': expected host:port, e.g. 127.0.0.1:0");
  }
}

// A task run on this node for another node: no result entries; its outcome goes to callbacks.
class ServedCall final : public TaskRecord {
 public:
  ServedCall(RuntimeCore* rt, ExtrasPtr extras, std::string name, std::function<void()> body,
             std::function<void(const std::exception_ptr&)> on_fail,
             std::function<void()> on_released, int preferred_gpu)
      : TaskRecord(rt, next_task_id(rt), nullptr, std::move(extras)),
        name_(std::move(name)),
        body_(std::move(body)),
        on_fail_(std::move(on_fail)),
        on_released_(std::move(on_released)),
        preferred_gpu_(preferred_gpu) {}
  // The record goes once the call ran or failed (its resources are given back right after).
  ~ServedCall() override {
    if (!on_released_) return;
    try {
      on_released_();
    } catch (...) {
    }
  }

  std::exception_ptr run() noexcept override {
    try {
      body_();
      return nullptr;
    } catch (...) {
      return std::current_exception();
    }
  }
  void fail(const std::exception_ptr& error) noexcept override { on_fail_(error); }
  bool cancel_requested() const noexcept override { return false; }
  std::string function_name() const override { return name_; }
  int preferred_gpu() const noexcept override { return preferred_gpu_; }

 private:
  std::string name_;
  std::function<void()> body_;
  std::function<void(const std::exception_ptr&)> on_fail_;
  std::function<void()> on_released_;
  const int preferred_gpu_;
};

// A one-shot dependent of one entry (when_done).
class Continuation final : public Dependent {
 public:
  Continuation(EntryPtr entry, std::function<void(ObjectEntry*)> fn)
      : entry_(std::move(entry)), fn_(std::move(fn)) {
    node_.owner = this;
  }
  // False if the entry was already done (the caller then runs it itself).
  bool arm() noexcept { return entry_->add_dependent(&node_); }
  void run() noexcept {
    try {
      fn_(entry_.get());
    } catch (...) {
      // fn must not throw; a throwing one loses only its own notification.
    }
  }
  void on_ready(ObjectEntry*) noexcept override {
    run();
    delete this;
  }

 private:
  EntryPtr entry_;
  std::function<void(ObjectEntry*)> fn_;
  DepNode node_;
};

bool is_one_cpu(const ResourceRequest& r) {
  const ResourceRequest& one = one_cpu_request();
  return r.cpu == one.cpu && r.gpu == 0 && r.memory == 0 && r.gpu_memory == 0 && r.custom.empty();
}

}  // namespace

InitOptions with_environment(const InitOptions& options) {
  InitOptions o = options;
  auto number = [](const char* name, const std::string& v) {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end != '\0' || std::isnan(x) || std::isinf(x) || x < 0) {
      throw Error(ErrorCode::kInvalidArgument,
                  std::string(name) + " = '" + v + "': expected a number >= 0");
    }
    return x;
  };
  if (const std::string v = env("PRISM_NUM_CPUS"); !v.empty()) o.num_cpus = number("PRISM_NUM_CPUS", v);
  if (const std::string v = env("PRISM_NUM_GPUS"); !v.empty()) o.num_gpus = number("PRISM_NUM_GPUS", v);
  if (const std::string v = env("PRISM_OBJECT_STORE_BYTES"); !v.empty()) {
    o.object_store_bytes = static_cast<int64_t>(number("PRISM_OBJECT_STORE_BYTES", v));
  }
  if (const std::string v = env("PRISM_RESOURCES"); !v.empty()) {
    // "name:amount,name:amount"
    o.resources.clear();
    size_t start = 0;
    while (start <= v.size()) {
      const size_t end = std::min(v.find(',', start), v.size());
      const std::string item = v.substr(start, end - start);
      const size_t colon = item.rfind(':');
      if (colon == std::string::npos || colon == 0) {
        throw Error(ErrorCode::kInvalidArgument,
                    "PRISM_RESOURCES = '" + v + "': expected name:amount[,name:amount...]");
      }
      o.resources[item.substr(0, colon)] = number("PRISM_RESOURCES", item.substr(colon + 1));
      start = end + 1;
    }
  }
  return o;
}

ClusterConfig cluster_config(const InitOptions& options) {
  ClusterConfig c;
  c.listen = env("PRISM_LISTEN");
  if (c.listen.empty()) c.listen = options.listen;
  c.address = env("PRISM_ADDRESS");
  if (c.address.empty()) c.address = options.address;
  c.token_file = env("PRISM_TOKEN_FILE");
  c.job_dir = env("PRISM_JOB_DIR");
  if (const std::string n = env("PRISM_MIN_NODES"); !n.empty()) {
    char* end = nullptr;
    const long v = std::strtol(n.c_str(), &end, 10);
    if (end == n.c_str() || *end != '\0' || v < 0 || v > 100000) {
      throw Error(ErrorCode::kInvalidArgument, "PRISM_MIN_NODES = '" + n + "': expected a count");
    }
    c.min_nodes = static_cast<int>(v);
  }
  c.join_timeout_s = env_seconds("PRISM_JOIN_TIMEOUT_S", c.join_timeout_s, /*zero_ok=*/false);
  c.infeasible_timeout_s =
      env_seconds("PRISM_INFEASIBLE_TIMEOUT", c.infeasible_timeout_s, /*zero_ok=*/true);
  c.heartbeat_timeout_s =
      env_seconds("PRISM_HEARTBEAT_TIMEOUT", c.heartbeat_timeout_s, /*zero_ok=*/false);
  c.peer_idle_close_s =
      env_seconds("PRISM_PEER_IDLE_CLOSE_S", c.peer_idle_close_s, /*zero_ok=*/true);
  if (!c.address.empty() && !c.listen.empty()) {
    throw Error(ErrorCode::kInvalidArgument,
                "both a driver's address to join (PRISM_ADDRESS / InitOptions.address = '" +
                    c.address + "') and an address to listen on (PRISM_LISTEN / "
                    "InitOptions.listen = '" + c.listen + "') are set: a process is a node or "
                    "the driver, not both");
  }
  if (!c.address.empty()) {
    check_host_port(c.address, "PRISM_ADDRESS");
    c.role = ClusterRole::kNode;
  } else if (!c.listen.empty()) {
    check_host_port(c.listen, "PRISM_LISTEN");
    c.role = ClusterRole::kDriver;
  } else if (!env("PMIX_RANK").empty()) {
    c.role = ClusterRole::kLauncher;  // mpirun / srun: rank 0 drives
  } else if (c.min_nodes > 0) {
    // Asking for nodes makes a driver on the default address.
    c.listen = "127.0.0.1:0";
    c.role = ClusterRole::kDriver;
  }
  return c;
}

void when_done(EntryPtr entry, std::function<void(ObjectEntry*)> fn) {
  auto* c = new Continuation(std::move(entry), std::move(fn));
  if (!c->arm()) {
    c->run();
    delete c;
  }
}

uint64_t export_actor(ActorCore* actor, void* typed_handle, void (*kill)(void*),
                      void (*drop)(void*)) {
  RuntimePin pin = pin_current_runtime();
  ClusterLink* link = pin.get()->link();
  if (link == nullptr) {
    drop(typed_handle);
    throw Error(ErrorCode::kInvalidArgument, "an actor handle travels only in cluster mode");
  }
  return link->export_actor(actor, typed_handle, kill, drop);
}

std::shared_ptr<ActorCore> import_actor(uint64_t key, const std::type_info& type,
                                        const char* type_name) {
  RuntimePin pin = pin_current_runtime();
  ClusterLink* link = pin.get()->link();
  if (link == nullptr) {
    throw Error(ErrorCode::kInvalidArgument, "an actor handle travels only in cluster mode");
  }
  return link->import_actor(key, type, type_name);
}

void set_cluster_module(const ClusterModule* module) noexcept {
  g_module.store(module, std::memory_order_release);
}
const ClusterModule* cluster_module() noexcept { return g_module.load(std::memory_order_acquire); }

void run_served_call(RuntimeCore* rt, const ResourceRequest& request, std::string name,
                     std::function<void()> body,
                     std::function<void(const std::exception_ptr&)> on_fail,
                     std::function<void()> on_released, int preferred_gpu) {
  const std::string reason = rt->scheduler().infeasible_reason(request);
  if (!reason.empty()) {
    on_fail(std::make_exception_ptr(
        InfeasibleError("infeasible task '" + name + "' on node " + rt->node_id() + ": " + reason)));
    if (on_released) on_released();
    return;
  }
  auto extras = std::make_unique<TaskExtras>();
  extras->name = name;
  extras->default_request = is_one_cpu(request);
  if (!extras->default_request) {
    extras->request = request;
    extras->shape = rt->scheduler().shape_for(request);
  }
  auto* task = new ServedCall(rt, ExtrasPtr(std::move(extras)), std::move(name), std::move(body),
                              std::move(on_fail), std::move(on_released), preferred_gpu);
  rt->counters().add(TaskCounters::kSubmitted);
  if (task->release_guard()) rt->dispatch(task);
}

ResourceRequest node_totals(RuntimeCore* rt) {
  const NodeResources& n = rt->totals();
  ResourceRequest r;
  r.cpu = n.cpu;
  r.gpu = int64_t{n.num_gpus} * kUnitsPerResource + n.gpu_fraction;
  r.memory = n.memory;
  r.gpu_memory = n.gpu_memory;
  r.custom = n.custom;
  return r;
}

}  // namespace prism::internal
