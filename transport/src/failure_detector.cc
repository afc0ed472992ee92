// failure_detector.cc — see failure_detector.h.
#include "failure_detector.h"

#include <utility>

namespace prism::cluster {

FailureDetector::FailureDetector(Clock::duration timeout, Now now)
    : timeout_(timeout), now_(std::move(now)) {}

void FailureDetector::watch(uint64_t peer) { last_heard_[peer] = now(); }

void FailureDetector::heard(uint64_t peer) {
  auto it = last_heard_.find(peer);
  if (it != last_heard_.end()) it->second = now();
}

void FailureDetector::forget(uint64_t peer) { last_heard_.erase(peer); }

std::vector<uint64_t> FailureDetector::check() {
  const Clock::time_point t = now();
  const bool gap = checked_ && t - last_check_ > timeout_ / 2;
  last_check_ = t;
  checked_ = true;
  std::vector<uint64_t> silent;
  if (gap) {
    // This process was not running: its peers' silence says nothing about them.
    ++own_gaps_;
    for (auto& [peer, heard] : last_heard_) heard = t;
    return silent;
  }
  for (auto it = last_heard_.begin(); it != last_heard_.end();) {
    if (t - it->second > timeout_) {
      silent.push_back(it->first);
      it = last_heard_.erase(it);
    } else {
      ++it;
    }
  }
  return silent;
}

}  // namespace prism::cluster
