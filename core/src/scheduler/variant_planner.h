// VariantPlanner — picks, per call of a heterogeneous task (prism/variants.h), the variant with
// the earliest expected finish (StarPU's dmda), and keeps what each choice promised until the
// run ends.
//
// For each variant the node can run (an Option), with E = the PerfModel's mean run time for the
// call's size bucket:
//   finish = backlog(processor) / lanes + transfer + E
// where backlog(p) is the predicted run time of every call already sent to processor p and not
// finished (its queue and what runs there now), lanes is how many calls of that variant p runs
// at once (its resources divided by the variant's request), and transfer is what moving the
// arguments there costs (bytes not there / the measured bandwidth; the caller computes it).
//
// Places: an option may run on another node of a cluster (Option::place, that node's name; ""
// is this node). A processor is then a (place, kind) pair: each has its own backlog, and the
// model keeps another node's runs under "<variant>@<place>" (model_name), measured there and
// reported back; such entries live as long as the runtime (PerfModel::save leaves them out:
// the file describes this machine).
//
// Calibration: until every allowed variant has PerfModel::kCalibrationRuns runs in the bucket
// (measured, failed or in flight), the call goes to the least-run variant (ties: earliest finish), so a
// new function or size is measured on every processor before the model is trusted.
//
// Hysteresis: the planner remembers its last choice per (function, bucket) and moves to another
// variant only if that one is expected to finish earlier by more than 5% plus twice the
// combined standard error of the two means, so a variant whose times are noisy does not make
// the choice flap while the queues are alike. Queues still move work: a long queue makes a
// difference far beyond that margin.
//
// Invariants (under mu_): queues_[p].backlog is the sum of `predicted` over choices for
// processor p not yet finished (exactly 0 whenever queues_[p].pending, the number of those
// choices, is 0: rounding never leaves a phantom queue); inflight_ counts the same choices per
// (function, variant at its place, bucket). Each choose() is matched by exactly one finished() (the runtime calls it
// when the run ends, fails or is never run). A finished run moves from inflight_ to the model's
// samples under mu_, and choose() reads both under mu_ (lock order: mu_, then the model's).
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "prism/internal/thread_annotations.h"
#include "scheduler/perf_model.h"

namespace prism::internal {

class VariantPlanner {
 public:
  enum class Processor { kCpu = 0, kGpu = 1 };
  static const char* processor_name(Processor p) noexcept {
    return p == Processor::kGpu ? "gpu" : "cpu";
  }

  struct Option {
    std::string name;  // the variant's
    Processor processor = Processor::kCpu;
    double lanes = 1;             // calls of this variant the processor runs at once (> 0)
    double transfer_seconds = 0;  // moving the arguments where this variant runs
    bool allowed = true;          // false: the node cannot run it (or a forced call excludes it)
    std::string place;            // "" this node, else the cluster node it would run on
  };
  // The model's key for `variant` run at `place`.
  static std::string model_name(const std::string& variant, const std::string& place) {
    return place.empty() ? variant : variant + "@" + place;
  }
  struct Choice {
    int option = -1;               // index into the options; -1: none is allowed
    double predicted = 0;          // expected run time of the variant's body (seconds)
    double expected_finish = 0;    // seconds from now, queue and transfer included
    bool calibrating = false;      // chosen to measure it, not because it was best
  };

  explicit VariantPlanner(PerfModel* model) : model_(model) {}

  // `forced` >= 0: that option (it must be allowed), counted like any other choice.
  Choice choose(const std::string& function, int bucket, const std::vector<Option>& options,
                int forced = -1);
  // The run of `choice` ended or will never happen. `seconds` >= 0: the body's measured time,
  // recorded in the model (negative: not measured). `failed`: the variant ran and threw (out of
  // device memory, or any error): counted as a calibration run without a time, so a variant that
  // keeps failing is not chosen again and again to be measured; once calibration is over, a
  // variant with failures and no measured run is chosen only when nothing else is allowed.
  void finished(const std::string& function, int bucket, const Option& option,
                const Choice& choice, double seconds, bool failed = false);

  // Predicted seconds of work sent to `p` (at `place`) and not finished.
  double backlog(Processor p, const std::string& place = {}) const;

  // ---- what ran (prism::stats(), prism::variant_of) ----
  struct Usage {
    std::string function;
    std::string variant;
    std::string place;  // "" this node, else the node it ran on
    Processor processor = Processor::kCpu;
    uint64_t runs = 0;          // runs that completed (returned or threw)
    double seconds = 0;         // their measured time in total
    uint64_t fallbacks = 0;     // GPU runs out of device memory, run again as a CPU variant
  };
  void count_run(const std::string& function, const std::string& variant, Processor p,
                 double seconds, const std::string& place = {});
  void count_fallback(const std::string& function, const std::string& variant, Processor p,
                      const std::string& place = {});
  std::vector<Usage> usage() const;
  // Remembers which variant computed the object numbered `object` (the newest kRemembered).
  void remember(uint64_t object, std::string variant);
  std::string variant_of(uint64_t object) const;
  static constexpr size_t kRemembered = 1 << 16;

 private:
  // function, model_name(variant, place), bucket
  using RunKey = std::tuple<std::string, std::string, int>;
  using ChoiceKey = std::pair<std::string, int>;              // function, bucket
  using ProcessorKey = std::pair<std::string, int>;           // place, processor
  struct Queue {
    double backlog = 0;
    int64_t pending = 0;  // choices not finished
  };

  // The usage record of (function, variant, place), made on first use.
  Usage& usage_locked(const std::string& function, const std::string& variant, Processor p,
                      const std::string& place) PRISM_REQUIRES(mu_);

  PerfModel* const model_;
  mutable Mutex mu_;
  std::map<ProcessorKey, Queue> queues_ PRISM_GUARDED_BY(mu_);  // per (place, processor)
  std::map<RunKey, int64_t> inflight_ PRISM_GUARDED_BY(mu_);
  std::map<RunKey, int64_t> failures_ PRISM_GUARDED_BY(mu_);
  std::map<ChoiceKey, std::string> last_ PRISM_GUARDED_BY(mu_);
  std::map<RunKey, Usage> usage_ PRISM_GUARDED_BY(mu_);  // bucket -1: every bucket
  std::unordered_map<uint64_t, std::string> variant_of_ PRISM_GUARDED_BY(mu_);
  std::deque<uint64_t> remembered_ PRISM_GUARDED_BY(mu_);  // oldest first
};

}  // namespace prism::internal
