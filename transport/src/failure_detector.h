// failure_detector.h — which peers have been silent for too long (DESIGN §8).
//
// A peer that dies is usually seen at once: UCX reports an error on its endpoint (a killed
// process closes its sockets). A peer that stops without closing anything (SIGSTOP, a hung
// machine, a cable pulled) is not: only silence shows it. Every message from a peer counts as a
// sign of life (heard()); a process with nothing else to say sends a heartbeat each
// interval() (a fifth of the timeout). A peer silent for `timeout` is reported by check() once,
// and is no longer watched.
//
// A process that was stopped itself (a debugger, SIGSTOP, a VM paused, a checker thread
// starved of CPU) hears nothing meanwhile; on waking every peer would look silent. So check()
// notices its own gap: when more than half the timeout passed since its previous call, this
// process was not running, and every peer gets a fresh timeout from now instead of a verdict.
//
// Invariants:
//   - a peer is in last_heard_ from watch() until check() reports it or forget() drops it;
//   - check() reports a peer at most once per watch().
//
// The clock is injected (a function returning now), so that tests drive time by hand. Not
// thread-safe: the owner's lock guards it (the cluster link's mu_).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

namespace prism::cluster {

class FailureDetector {
 public:
  using Clock = std::chrono::steady_clock;
  using Now = std::function<Clock::time_point()>;

  // `timeout` > 0. `now` defaults to the steady clock.
  explicit FailureDetector(Clock::duration timeout, Now now = {});

  Clock::duration timeout() const noexcept { return timeout_; }
  // How often the owner should send heartbeats and call check().
  Clock::duration interval() const noexcept { return timeout_ / 5; }

  // Starts watching `peer` (its timeout starts now); again: restarts it.
  void watch(uint64_t peer);
  // A message from `peer` arrived (ignored for a peer not watched).
  void heard(uint64_t peer);
  // Stops watching `peer` (it left, or its death was seen otherwise).
  void forget(uint64_t peer);
  bool watching(uint64_t peer) const { return last_heard_.count(peer) != 0; }

  // The peers silent for longer than the timeout, each reported once (and no longer watched);
  // none if this process itself was not running for a while (see the file comment).
  std::vector<uint64_t> check();
  // How many times check() found that this process had not been running (for tests and logs).
  uint64_t own_gaps() const noexcept { return own_gaps_; }

 private:
  Clock::time_point now() const { return now_ ? now_() : Clock::now(); }

  Clock::duration timeout_;
  Now now_;
  std::unordered_map<uint64_t, Clock::time_point> last_heard_;
  Clock::time_point last_check_{};
  bool checked_ = false;
  uint64_t own_gaps_ = 0;
};

}  // namespace prism::cluster
