#include "scheduler/variant_planner.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace prism::internal {

namespace {

double standard_error(const PerfModel::Estimate& e) {
  if (e.samples <= 0) return 0;
  const double n = static_cast<double>(std::min(e.samples, PerfModel::kWindow));
  return e.stddev / std::sqrt(n);
}

std::string key_name(const VariantPlanner::Option& o) {
  return VariantPlanner::model_name(o.name, o.place);
}

}  // namespace

VariantPlanner::Choice VariantPlanner::choose(const std::string& function, int bucket,
                                              const std::vector<Option>& options, int forced) {
  const size_t n = options.size();
  // The model is read under mu_, as finished() writes it: a run is counted either as in flight
  // or as a sample, never as neither (which would calibrate one variant twice) nor both.
  MutexLock lock(mu_);
  std::vector<PerfModel::Estimate> est(n);
  double known_sum = 0;
  int known = 0;
  for (size_t i = 0; i < n; ++i) {
    est[i] = model_->estimate(function, key_name(options[i]), bucket);
    if (est[i].samples > 0) {
      known_sum += est[i].mean;
      ++known;
    }
  }
  // A variant never measured in this bucket is assumed to take what the measured ones take on
  // average (0 if none was): its calibration run then still counts in the backlog.
  const double assumed = known > 0 ? known_sum / known : 0;
  auto predicted = [&](size_t i) { return est[i].samples > 0 ? est[i].mean : assumed; };

  std::vector<double> finish(n, std::numeric_limits<double>::infinity());
  for (size_t i = 0; i < n; ++i) {
    if (!options[i].allowed) continue;
    const double lanes = options[i].lanes > 0 ? options[i].lanes : 1;
    const auto q = queues_.find(ProcessorKey(options[i].place, static_cast<int>(options[i].processor)));
    finish[i] = (q == queues_.end() ? 0.0 : q->second.backlog) / lanes +
                options[i].transfer_seconds + predicted(i);
  }
  int pick = -1;
  bool calibrating = false;
  if (forced >= 0 && static_cast<size_t>(forced) < n && options[forced].allowed) {
    pick = forced;
  } else {
    // Calibration: the least-run allowed variant while any has fewer than kCalibrationRuns.
    int64_t fewest = std::numeric_limits<int64_t>::max();
    for (size_t i = 0; i < n; ++i) {
      if (!options[i].allowed) continue;
      const RunKey key(function, key_name(options[i]), bucket);
      const auto it = inflight_.find(key);
      const auto f = failures_.find(key);
      const int64_t runs = est[i].samples + (it == inflight_.end() ? 0 : it->second) +
                           (f == failures_.end() ? 0 : f->second);
      if (runs < fewest || (runs == fewest && pick >= 0 && finish[i] < finish[pick])) {
        fewest = runs;
        pick = static_cast<int>(i);
      }
    }
    if (pick >= 0 && fewest < PerfModel::kCalibrationRuns) {
      calibrating = true;
    } else if (pick >= 0) {
      // Earliest expected finish, with hysteresis towards the last choice.
      // A variant that only ever failed is a last resort.
      std::vector<bool> only_failed(n, false);
      for (size_t i = 0; i < n; ++i) {
        only_failed[i] =
            est[i].samples == 0 && failures_.count(RunKey(function, key_name(options[i]), bucket)) > 0;
      }
      pick = -1;
      for (int pass = 0; pass < 2 && pick < 0; ++pass) {
        for (size_t i = 0; i < n; ++i) {
          if (!options[i].allowed || (pass == 0 && only_failed[i])) continue;
          if (pick < 0 || finish[i] < finish[pick]) pick = static_cast<int>(i);
        }
      }
      const auto last = last_.find(ChoiceKey(function, bucket));
      if (last != last_.end() && last->second != key_name(options[pick])) {
        for (size_t i = 0; i < n; ++i) {
          if (!options[i].allowed || key_name(options[i]) != last->second) continue;
          if (only_failed[i] && !only_failed[static_cast<size_t>(pick)]) break;  // (no loyalty)
          const double se_best = standard_error(est[pick]);
          const double se_last = standard_error(est[i]);
          const double margin =
              0.05 * finish[i] + 2 * std::sqrt(se_best * se_best + se_last * se_last);
          if (finish[pick] >= finish[i] - margin) pick = static_cast<int>(i);
          break;
        }
      }
    }
  }
  Choice c;
  if (pick < 0) return c;
  c.option = pick;
  c.predicted = predicted(pick);
  c.expected_finish = finish[pick];
  c.calibrating = calibrating;
  // The maps first: if one throws (out of memory) nothing was counted.
  const std::string name = key_name(options[pick]);
  Queue& q = queues_[ProcessorKey(options[pick].place, static_cast<int>(options[pick].processor))];
  ++inflight_[RunKey(function, name, bucket)];
  if (forced < 0) last_[ChoiceKey(function, bucket)] = name;
  q.backlog += c.predicted;
  ++q.pending;
  return c;
}

void VariantPlanner::finished(const std::string& function, int bucket, const Option& option,
                              const Choice& choice, double seconds, bool failed) {
  const std::string name = key_name(option);
  MutexLock lock(mu_);
  if (seconds >= 0) model_->record(function, name, bucket, seconds);
  if (failed) {
    try {
      ++failures_[RunKey(function, name, bucket)];
    } catch (...) {
      // Out of memory: the failure is not remembered; the books below still balance.
    }
  }
  // (choose() made this queue; finished() without a matching choose() finds none.)
  const auto q = queues_.find(ProcessorKey(option.place, static_cast<int>(option.processor)));
  if (q != queues_.end()) {
    Queue& queue = q->second;
    queue.backlog =
        --queue.pending <= 0 ? 0.0 : std::max(0.0, queue.backlog - choice.predicted);
    if (queue.pending < 0) queue.pending = 0;
  }
  const auto it = inflight_.find(RunKey(function, name, bucket));
  if (it != inflight_.end() && --it->second <= 0) inflight_.erase(it);
}

double VariantPlanner::backlog(Processor p, const std::string& place) const {
  MutexLock lock(mu_);
  const auto q = queues_.find(ProcessorKey(place, static_cast<int>(p)));
  return q == queues_.end() ? 0.0 : q->second.backlog;
}

VariantPlanner::Usage& VariantPlanner::usage_locked(const std::string& function,
                                                    const std::string& variant, Processor p,
                                                    const std::string& place) {
  Usage& u = usage_[RunKey(function, model_name(variant, place), -1)];
  if (u.function.empty()) {
    u.function = function;
    u.variant = variant;
    u.place = place;
    u.processor = p;
  }
  return u;
}

void VariantPlanner::count_run(const std::string& function, const std::string& variant,
                               Processor p, double seconds, const std::string& place) {
  MutexLock lock(mu_);
  Usage& u = usage_locked(function, variant, p, place);
  ++u.runs;
  if (seconds > 0) u.seconds += seconds;
}

void VariantPlanner::count_fallback(const std::string& function, const std::string& variant,
                                    Processor p, const std::string& place) {
  MutexLock lock(mu_);
  ++usage_locked(function, variant, p, place).fallbacks;
}

std::vector<VariantPlanner::Usage> VariantPlanner::usage() const {
  MutexLock lock(mu_);
  std::vector<Usage> out;
  out.reserve(usage_.size());
  for (const auto& [key, u] : usage_) out.push_back(u);
  return out;
}

void VariantPlanner::remember(uint64_t object, std::string variant) {
  MutexLock lock(mu_);
  if (variant_of_.insert_or_assign(object, std::move(variant)).second) {
    remembered_.push_back(object);
  }
  while (remembered_.size() > kRemembered) {
    variant_of_.erase(remembered_.front());
    remembered_.pop_front();
  }
}

std::string VariantPlanner::variant_of(uint64_t object) const {
  MutexLock lock(mu_);
  const auto it = variant_of_.find(object);
  return it == variant_of_.end() ? std::string() : it->second;
}

}  // namespace prism::internal
