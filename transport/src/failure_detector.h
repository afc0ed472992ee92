// failure_detector.h — which peers have been silent for too long (DESIGN §8).
//
// A peer that dies is usually seen at once: UCX reports an error on its endpoint (a killed
// process closes its sockets). A peer that stops without closing anything (SIGSTOP, a hung
// machine, a cable pulled) is not: only silence shows it. Every message from a peer counts as a
// sign of life (heard()); a process with nothing else to say sends a heartbeat each
// interval() (a fifth of the timeout). A peer silent for `timeout` is reported by check() once,
// and is no longer watched.
//
// Long messages. A peer's heartbeats queue behind what it sent before them: while a message of
// hundreds of MiB is still arriving, nothing else from that peer does. So heard() takes the
// bytes of the peer's messages that have begun to arrive and not finished (`arriving`), and a
// peer with bytes arriving may be silent for timeout + (the bytes arriving from all peers) /
// min_rate: the transfers share this process's bandwidth, so each may take as long as all of
// them. A peer stopped in the middle of a transfer is still found, later by that time.
//
// A process that was stopped itself (a debugger, SIGSTOP, a VM paused, a checker thread
// starved of CPU) hears nothing meanwhile; on waking every peer would look silent. So check()
// notices its own gap: when more than half the timeout passed since its previous call, or the
// caller says its network thread was busy elsewhere for that long (`own_stall`: messages were
// not read meanwhile), every peer gets a fresh timeout from now instead of a verdict.
//
// Invariants:
//   - a peer is in peers_ from watch() until check() reports it or forget() drops it;
//   - check() reports a peer at most once per watch();
//   - a peer's allowed silence is the timeout, plus (every watched peer's arriving bytes) /
//     min_rate if its own arriving bytes are not 0, counted from its last heard() (or watch(),
//     or own gap).
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

  // The slowest rate at which a message still arriving is assumed to progress (bytes/s): 32 MiB/s,
  // far below any network's and below a sanitizer build's loopback.
  static constexpr double kDefaultMinRate = 32.0 * 1024 * 1024;

  // `timeout` > 0; `min_rate` > 0 (else the default). `now` defaults to the steady clock.
  explicit FailureDetector(Clock::duration timeout, Now now = {},
                           double min_rate = kDefaultMinRate);

  Clock::duration timeout() const noexcept { return timeout_; }
  // How often the owner should send heartbeats and call check().
  Clock::duration interval() const noexcept { return timeout_ / 5; }

  // Starts watching `peer` (its timeout starts now); again: restarts it.
  void watch(uint64_t peer);
  // Something from `peer` arrived; `arriving` is the bytes of its messages that have begun to
  // arrive and are not complete yet (ignored for a peer not watched).
  void heard(uint64_t peer, uint64_t arriving = 0);
  // Stops watching `peer` (it left, or its death was seen otherwise).
  void forget(uint64_t peer);
  bool watching(uint64_t peer) const { return peers_.count(peer) != 0; }

  // The peers silent for longer than they may be, each reported once (and no longer watched);
  // none if this process itself was not running for a while, or `own_stall` (the longest time
  // its network thread spent away from reading messages since the previous check) is more
  // than half the timeout (see the file comment).
  std::vector<uint64_t> check(Clock::duration own_stall = Clock::duration::zero());
  // How many times check() found that this process had not been running (for tests and logs).
  uint64_t own_gaps() const noexcept { return own_gaps_; }

 private:
  struct Watched {
    Clock::time_point last;
    uint64_t arriving = 0;
  };
  Clock::time_point now() const { return now_ ? now_() : Clock::now(); }
  Clock::duration allowed(const Watched& w, uint64_t all_arriving) const;

  Clock::duration timeout_;
  Now now_;
  double min_rate_;
  std::unordered_map<uint64_t, Watched> peers_;
  Clock::time_point last_check_{};
  bool checked_ = false;
  uint64_t own_gaps_ = 0;
};

}  // namespace prism::cluster
