// failure_detector.cc — see failure_detector.h.
#include "failure_detector.h"

#include <utility>

namespace prism::cluster {

FailureDetector::FailureDetector(Clock::duration timeout, Now now, double min_rate)
    : timeout_(timeout), now_(std::move(now)), min_rate_(min_rate > 0 ? min_rate : kDefaultMinRate) {}

void FailureDetector::watch(uint64_t peer) { peers_[peer] = Watched{now(), 0}; }

void FailureDetector::heard(uint64_t peer, uint64_t arriving) {
  auto it = peers_.find(peer);
  if (it == peers_.end()) return;
  it->second.last = now();
  it->second.arriving = arriving;
}

void FailureDetector::forget(uint64_t peer) { peers_.erase(peer); }

FailureDetector::Clock::duration FailureDetector::allowed(const Watched& w,
                                                          uint64_t all_arriving) const {
  if (w.arriving == 0) return timeout_;
  const std::chrono::duration<double> extra(static_cast<double>(all_arriving) / min_rate_);
  return timeout_ + std::chrono::duration_cast<Clock::duration>(extra);
}

std::vector<uint64_t> FailureDetector::check(Clock::duration own_stall) {
  const Clock::time_point t = now();
  const bool gap = (checked_ && t - last_check_ > timeout_ / 2) || own_stall > timeout_ / 2;
  last_check_ = t;
  checked_ = true;
  std::vector<uint64_t> silent;
  if (gap) {
    // This process (or its network thread) was not running: its peers' silence says nothing
    // about them.
    ++own_gaps_;
    for (auto& [peer, w] : peers_) w.last = t;
    return silent;
  }
  uint64_t all_arriving = 0;
  for (const auto& [peer, w] : peers_) all_arriving += w.arriving;
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (t - it->second.last > allowed(it->second, all_arriving)) {
      silent.push_back(it->first);
      it = peers_.erase(it);
    } else {
      ++it;
    }
  }
  return silent;
}

}  // namespace prism::cluster
