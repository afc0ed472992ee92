// ClockOffset — how far another process's steady clock is from ours, from ping round trips
// (NTP's rule): a ping leaves at t0 (our clock), the peer reads its clock t1 when it arrives,
// the answer is back at t2; then offset ~ t1 - (t0 + t2) / 2, wrong by at most half the round
// trip t2 - t0. The sample with the shortest round trip is kept.
//
// Thread-compatible: a plain value (the link keeps one per peer under its lock).
#pragma once

#include <cstdint>

namespace prism::cluster {

class ClockOffset {
 public:
  // Returns true if this sample was kept (the shortest round trip so far).
  bool add(int64_t t0, int64_t t1, int64_t t2) {
    ++samples_;
    const int64_t rtt = t2 - t0;
    if (rtt < 0 || rtt >= rtt_) return false;
    rtt_ = rtt;
    offset_ = t1 - (t0 + rtt / 2);
    return true;
  }
  int64_t offset_ns() const { return offset_; }  // the peer's clock minus ours
  int64_t error_bound_ns() const { return rtt_ == INT64_MAX ? INT64_MAX : rtt_ / 2; }
  int samples() const { return samples_; }

 private:
  int64_t offset_ = 0;
  int64_t rtt_ = INT64_MAX;
  int samples_ = 0;
};

}  // namespace prism::cluster
