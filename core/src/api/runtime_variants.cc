// Heterogeneous tasks (prism/variants.h): the runtime's side. A call's variants are checked at
// submission (make_variant_extras), one is chosen when its arguments are ready
// (choose_variant, from dispatch), and its run is reported to the planner when it ends
// (end_variant_run, from execute and fail_task). See variant_planner.h for the choice itself.

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "api/runtime_core.h"
#include "api/runtime_registry.h"
#include "common/log.h"
#include "prism/errors.h"
#include "prism/internal/device_support.h"
#include "prism/internal/variant_run.h"
#include "scheduler/resource_shape.h"
#include "worker/exec_context.h"

namespace prism::internal {

namespace {

using Processor = VariantPlanner::Processor;

Processor processor_of(const VariantRun& run, int i) {
  return run.function->variants[static_cast<size_t>(i)].gpu ? Processor::kGpu : Processor::kCpu;
}

bool is_one_cpu(const ResourceRequest& r) {
  const ResourceRequest& one = one_cpu_request();
  return r.cpu == one.cpu && r.gpu == 0 && r.memory == 0 && r.gpu_memory == 0 && r.custom.empty();
}

}  // namespace

ExtrasPtr RuntimeCore::make_variant_extras(std::shared_ptr<VariantRun> run) {
  const VariantFunction& f = *run->function;
  const size_t n = f.variants.size();
  run->requests.resize(n);
  run->shapes.assign(n, nullptr);
  run->runnable.assign(n, false);
  // A driver's call of a registered set may also run on other nodes (placed at dispatch); a
  // node's calls run there (only a driver places variant calls).
  ClusterLink* l = run->remote ? link() : nullptr;
  if (l != nullptr && l->variant_nodes({}).empty()) l = nullptr;
  std::vector<bool> elsewhere(n, false);
  std::string reasons;
  int first = -1, first_elsewhere = -1;
  for (size_t i = 0; i < n; ++i) {
    const VariantSpec& v = f.variants[i];
    if (v.name.find('@') != std::string::npos) {
      throw Error(ErrorCode::kInvalidArgument, "variant '" + v.name + "' of '" + f.name +
                                                   "': a variant's name may not contain '@'");
    }
    const TaskOptions& o = v.options;
    try {
      run->requests[i] = make_request(o.num_cpus, o.num_gpus, o.memory, o.gpu_memory, o.resources);
    } catch (const Error& e) {
      throw Error(e.code(), "variant '" + v.name + "' of '" + f.name + "': " + e.what());
    }
    ResourceShape* shape = scheduler_->shape_for(run->requests[i]);
    const std::string reason =
        shape != nullptr ? shape->infeasible : scheduler_->infeasible_reason(run->requests[i]);
    run->shapes[i] = shape;
    run->runnable[i] = reason.empty();
    if (reason.empty()) {
      if (first < 0) first = static_cast<int>(i);
    } else if (l != nullptr && l->infeasible_elsewhere(run->requests[i], false).empty()) {
      elsewhere[i] = true;
      if (first_elsewhere < 0) first_elsewhere = static_cast<int>(i);
    } else {
      reasons += (reasons.empty() ? "" : "; ") + ("variant '" + v.name + "': " + reason);
    }
  }
  if (run->forced >= 0 && !run->runnable[static_cast<size_t>(run->forced)] &&
      !elsewhere[static_cast<size_t>(run->forced)]) {
    throw InfeasibleError("infeasible task '" + f.name + "': the forced variant '" +
                          f.variants[static_cast<size_t>(run->forced)].name +
                          "' can never run on node " + node_id_ +
                          (l != nullptr ? " nor on any other node" : "") + " (" + reasons + ")");
  }
  if (first < 0) first = first_elsewhere;
  if (first < 0) {
    throw InfeasibleError("infeasible task '" + f.name + "': no variant can ever run on node " +
                          node_id_ + (l != nullptr ? " nor on any other node" : "") + ": " +
                          reasons);
  }
  auto x = std::make_unique<TaskExtras>();
  x->name = f.name;
  x->retries_left = kDefaultMaxRetries;  // (system failures only: its node died)
  // Until the choice (dispatch): the first runnable variant's request, never used to queue.
  x->default_request = false;
  x->request = run->requests[static_cast<size_t>(first)];
  x->variant = std::move(run);
  return ExtrasPtr(std::move(x));
}

RuntimeCore::VariantOptions RuntimeCore::variant_options(const VariantRun& run,
                                                         const ArgFootprint& fp,
                                                         bool cpu_only) const {
  const VariantFunction& f = *run.function;
  const double cpu_units = static_cast<double>(totals_.cpu);
  const double gpu_units =
      static_cast<double>(totals_.num_gpus) * static_cast<double>(kUnitsPerResource) +
      static_cast<double>(totals_.gpu_fraction);
  VariantOptions out;
  auto add = [&](size_t i, uint64_t peer) -> VariantPlanner::Option& {
    VariantPlanner::Option& o = out.options.emplace_back();
    out.variant.push_back(static_cast<int>(i));
    out.peer.push_back(peer);
    o.name = f.variants[i].name;
    o.processor = processor_of(run, static_cast<int>(i));
    o.allowed = !(cpu_only && o.processor == Processor::kGpu) &&
                (run.forced < 0 || run.forced == static_cast<int>(i));
    return o;
  };
  // A driver's call of a registered set: the nodes that may run it, and where its values are.
  ClusterLink* const l = run.remote ? link() : nullptr;
  std::vector<ClusterLink::VariantNode> nodes;
  int64_t elsewhere = 0;  // argument bytes only other nodes hold
  if (l != nullptr) nodes = l->variant_nodes(run.requests, fp.refs, &elsewhere);
  const double network = perf_model_.bandwidth(PerfModel::Link::kNetwork);
  for (size_t i = 0; i < f.variants.size(); ++i) {
    VariantPlanner::Option& o = add(i, 0);
    const ResourceRequest& r = run.requests[i];
    o.allowed = o.allowed && run.runnable[i];
    if (o.processor == Processor::kGpu) {
      o.lanes = r.gpu > 0 ? gpu_units / static_cast<double>(r.gpu) : 1;
      o.transfer_seconds = static_cast<double>(fp.not_on_device) /
                           perf_model_.bandwidth(PerfModel::Link::kHostToDevice);
    } else {
      o.lanes = r.cpu > 0 ? cpu_units / static_cast<double>(r.cpu)
                          : static_cast<double>(scheduler_->cpu_slots());
      o.transfer_seconds = static_cast<double>(fp.not_on_host) /
                           perf_model_.bandwidth(PerfModel::Link::kDeviceToHost);
    }
    if (o.lanes < 1) o.lanes = 1;
    o.transfer_seconds += static_cast<double>(elsewhere) / network;  // pulled here first
  }
  // Another node gets the bytes it lacks over the network (into host memory there: a GPU
  // variant's upload is part of its measured run).
  const int64_t total = fp.bytes + elsewhere;
  for (ClusterLink::VariantNode& node : nodes) {
    const double transfer =
        static_cast<double>(std::max<int64_t>(0, total - node.bytes_held)) / network;
    for (size_t i = 0; i < f.variants.size() && i < node.lanes.size(); ++i) {
      if (node.lanes[i] <= 0) continue;
      VariantPlanner::Option& o = add(i, node.peer);
      o.place = node.name;
      o.lanes = node.lanes[i];
      o.transfer_seconds = transfer;
    }
  }
  return out;
}

void RuntimeCore::apply_choice(TaskRecord* task, const VariantOptions& o, size_t i,
                               const VariantPlanner::Choice& c) noexcept {
  TaskExtras* x = task->extras();
  VariantRun& run = *x->variant;
  const auto v = static_cast<size_t>(o.variant[i]);
  run.chosen = o.variant[i];
  run.peer = o.peer[i];
  run.place = o.options[i].place;
  run.predicted_seconds = c.predicted;
  run.calibrating = c.calibrating;
  run.transfer_predicted = o.options[i].transfer_seconds;
  x->request = run.requests[v];
  x->shape = run.shapes[v];
  x->default_request = run.peer == 0 && is_one_cpu(x->request);
}

bool RuntimeCore::choose_variant(TaskRecord* task, bool here_only) noexcept {
  TaskExtras* x = task->extras();
  VariantRun& run = *x->variant;
  if (run.chosen >= 0) return true;  // dispatched again (it waited for a node): chosen already
  ArgFootprint fp;
  try {
    if (run.describe != nullptr) run.describe(task, &fp);
  } catch (const std::exception& e) {
    PRISM_LOG(kWarning) << "the size function of '" << run.function->name
                        << "' threw (the arguments' bytes are used instead): " << e.what();
    fp.size = -1;
  } catch (...) {
    fp.size = -1;
  }
  run.bucket = PerfModel::bucket_of(fp.size >= 0 ? fp.size : fp.bytes);
  VariantPlanner::Choice c;
  VariantOptions options;
  try {
    options = variant_options(run, fp, /*cpu_only=*/false);
    if (here_only) {
      for (size_t i = 0; i < options.options.size(); ++i) {
        if (options.peer[i] != 0) options.options[i].allowed = false;
      }
    }
    // A forced variant with one place to run: the planner's forced choice (no calibration, and
    // no hysteresis memory); with several (here and other nodes) the planner picks the place.
    int forced = -1, allowed = 0;
    for (size_t i = 0; i < options.options.size(); ++i) {
      if (options.options[i].allowed && allowed++ == 0) forced = static_cast<int>(i);
    }
    if (run.forced < 0 || allowed != 1) forced = -1;
    c = planner_.choose(run.function->name, run.bucket, options.options, forced);
  } catch (...) {
    c = VariantPlanner::Choice{};  // out of memory: the first runnable variant, unplanned
  }
  if (c.option < 0) {
    // Unplanned (nothing to report: the planner did not count it): the first variant that runs
    // here, else the call fails as infeasible here.
    run.finished = true;
    for (size_t i = 0; i < run.runnable.size(); ++i) {
      if (run.runnable[i] && (run.forced < 0 || run.forced == static_cast<int>(i))) {
        run.chosen = static_cast<int>(i);
        x->request = run.requests[i];
        x->shape = run.shapes[i];
        x->default_request = is_one_cpu(x->request);
        break;
      }
    }
    return run.chosen >= 0;
  }
  const auto i = static_cast<size_t>(c.option);
  apply_choice(task, options, i, c);
  const bool gpu = options.options[i].processor == Processor::kGpu;
  run.bytes_to_move = run.peer != 0 ? fp.bytes : gpu ? fp.not_on_device : fp.not_on_host;
  return true;
}

bool RuntimeCore::choose_variant_here(TaskRecord* task) noexcept {
  VariantRun& run = *task->extras()->variant;
  end_variant_run(run, /*ran=*/false);  // (the planner's books for the node it was meant for)
  run.finished = false;
  run.chosen = -1;
  run.peer = 0;
  run.place.clear();
  return choose_variant(task, /*here_only=*/true);
}

std::string RuntimeCore::variant_infeasible(const TaskRecord* task) const {
  const VariantRun& run = *task->extras()->variant;
  const VariantFunction& f = *run.function;
  std::string why = "infeasible task '" + f.name + "': ";
  why += run.forced >= 0 ? "its forced variant '" +
                               f.variants[static_cast<size_t>(run.forced)].name + "' cannot run"
                         : std::string("no variant can run");
  return why + " on node " + node_id_ + ", and no other node that could run it is connected";
}

void RuntimeCore::end_variant_run(VariantRun& run, bool ran, bool failed) noexcept {
  if (run.chosen < 0 || run.finished) return;
  run.finished = true;
  try {
    const VariantSpec& v = run.function->variants[static_cast<size_t>(run.chosen)];
    VariantPlanner::Option o;
    o.name = v.name;
    o.processor = v.gpu ? Processor::kGpu : Processor::kCpu;
    o.place = run.place;
    VariantPlanner::Choice c;
    c.option = run.chosen;
    c.predicted = run.predicted_seconds;
    planner_.finished(run.function->name, run.bucket, o, c, ran ? run.body_seconds : -1,
                      failed);
    if (ran) {
      planner_.count_run(run.function->name, v.name, o.processor, run.body_seconds, run.place);
      planner_.remember(run.result.sequence, v.name);
      if (run.peer == 0 && run.bytes_to_move > 0 && run.resolve_seconds > 0) {
        perf_model_.record_transfer(
            v.gpu ? PerfModel::Link::kHostToDevice : PerfModel::Link::kDeviceToHost,
            run.bytes_to_move, run.resolve_seconds);
      }
    }
  } catch (...) {
    // Out of memory for the bookkeeping: the model misses this run.
  }
}

void remote_variant_failed(TaskRecord* task) noexcept {
  TaskExtras* x = task->extras();
  if (x == nullptr || !x->variant) return;
  if (RuntimeCore* rt = task->runtime()) rt->end_variant_run(*x->variant, false, /*failed=*/true);
}

void remote_variant_ran(TaskRecord* task, double seconds) noexcept {
  TaskExtras* x = task->extras();
  if (x == nullptr || !x->variant) return;
  if (RuntimeCore* rt = task->runtime()) {
    x->variant->body_seconds = seconds;
    rt->end_variant_run(*x->variant, /*ran=*/true);
  }
}

void RuntimeCore::variant_run_starts(TaskRecord* task, VariantRun& run) noexcept {
  run.run_started = Timeline::Clock::now();
  // What the arguments lack where the variant runs now (another reader may have made a copy
  // since the choice): what resolving them copies, the bandwidth measurement's bytes.
  ArgFootprint fp;
  try {
    if (run.describe != nullptr) run.describe(task, &fp);
  } catch (...) {
    // (only the size function could throw, and it is not needed here)
  }
  run.bytes_to_move =
      processor_of(run, run.chosen) == Processor::kGpu ? fp.not_on_device : fp.not_on_host;
}

void variant_body_returned(VariantRun* run) noexcept {
  if (RuntimeCore* rt = exec_context().runtime) rt->end_variant_run(*run, /*ran=*/true);
}

bool RuntimeCore::fall_back_to_cpu(TaskRecord* task, const std::exception_ptr& thrown) noexcept {
  TaskExtras* x = task->extras();
  if (x == nullptr || !x->variant) return false;
  VariantRun& run = *x->variant;
  // A forced variant runs as forced: its error is the call's.
  if (run.chosen < 0 || run.forced >= 0 || run.fallback_from >= 0 ||
      processor_of(run, run.chosen) != Processor::kGpu) {
    return false;
  }
  std::string why;
  try {
    std::rethrow_exception(thrown);
  } catch (const OutOfMemoryError& e) {
    why = e.what();
  } catch (...) {
    return false;
  }
  try {
    // What the arguments look like does not matter any more: a CPU variant runs now, here (the
    // arguments are here).
    VariantOptions options = variant_options(run, ArgFootprint{}, true);
    bool any = false;
    for (size_t i = 0; i < options.options.size(); ++i) {
      if (options.peer[i] != 0) options.options[i].allowed = false;
      any = any || options.options[i].allowed;
    }
    if (!any) return false;
    const std::string gpu_name = run.function->variants[static_cast<size_t>(run.chosen)].name;
    const VariantPlanner::Choice c =
        planner_.choose(run.function->name, run.bucket, options.options);
    if (c.option < 0) return false;
    end_variant_run(run, /*ran=*/false, /*failed=*/true);
    planner_.count_fallback(run.function->name, gpu_name, Processor::kGpu, run.place);
    run.fallback_from = run.chosen;
    run.fallback_reason = std::move(why);
    run.bytes_to_move = 0;
    run.finished = false;
    run.body_seconds = -1;
    apply_choice(task, options, static_cast<size_t>(c.option), c);
    PRISM_LOG(kInfo) << "task " << run.function->name << ": variant '" << gpu_name
                     << "' ran out of device memory; running variant '"
                     << options.options[static_cast<size_t>(c.option)].name << "' instead";
    return true;
  } catch (...) {
    return false;
  }
}

void finish_device_work() noexcept {
  if (DeviceSupport* d = device_support()) d->synchronize_task();
}

ExtrasPtr make_variant_extras(RuntimeCore* rt, std::shared_ptr<VariantRun> run) {
  return rt->make_variant_extras(std::move(run));
}

std::string variant_of(const ObjectId& id) {
  const RuntimePin pin = try_pin_owner(id.owner);
  if (pin.get() == nullptr) return {};
  return pin.get()->planner().variant_of(id.sequence);
}

// PRISM_PERF_MODEL_DIR: the file this runtime's model is read from and written to ("" if unset).
std::string perf_model_file_from_env() {
  const char* dir = std::getenv("PRISM_PERF_MODEL_DIR");
  if (dir == nullptr || *dir == '\0') return {};
  if (::mkdir(dir, 0755) != 0 && errno != EEXIST) {
    PRISM_LOG(kWarning) << "PRISM_PERF_MODEL_DIR=" << dir
                        << " cannot be created: the performance model is not kept";
    return {};
  }
  return PerfModel::file_in(dir);
}

}  // namespace prism::internal
