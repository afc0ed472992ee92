// failure_detector_test.cc — the failure detector driven by a fake clock: verdicts at the
// timeout and not before, once per peer, every sign of life counts, and a process that was not
// running itself (a gap between checks, or a network thread busy elsewhere) convicts nobody,
// and a peer whose long message is still arriving gets the time that message may take.
#include "failure_detector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace prism::cluster {
namespace {

using namespace std::chrono_literals;
using Clock = FailureDetector::Clock;

// Time moves only when the test says so.
struct FakeClock {
  Clock::time_point t{Clock::duration(1'000'000'000)};
  FailureDetector::Now now() {
    return [this] { return t; };
  }
};

std::vector<uint64_t> sorted(std::vector<uint64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(FailureDetector, APeerSilentPastTheTimeoutIsReportedOnce) {
  FakeClock clock;
  FailureDetector d(5s, clock.now());
  EXPECT_EQ(d.interval(), 1s);
  d.watch(7);
  // Checked each interval, as the link's watchdog does.
  for (int i = 0; i < 5; ++i) {
    clock.t += 1s;
    EXPECT_TRUE(d.check().empty()) << "reported after " << i + 1 << " s of a 5 s timeout";
  }
  clock.t += 1s;  // 6 s of silence
  EXPECT_EQ(d.check(), std::vector<uint64_t>{7});
  EXPECT_FALSE(d.watching(7));
  clock.t += 1s;
  EXPECT_TRUE(d.check().empty()) << "reported twice";
}

TEST(FailureDetector, EverySignOfLifeRestartsTheTimeout) {
  FakeClock clock;
  FailureDetector d(5s, clock.now());
  d.watch(1);
  d.watch(2);
  for (int i = 0; i < 20; ++i) {
    clock.t += 1s;
    d.heard(1);  // peer 1 speaks each second; peer 2 never
    const std::vector<uint64_t> silent = d.check();
    if (i < 5) {
      EXPECT_TRUE(silent.empty()) << i;
    } else if (i == 5) {
      EXPECT_EQ(silent, std::vector<uint64_t>{2});
    } else {
      EXPECT_TRUE(silent.empty()) << i;
    }
  }
  EXPECT_TRUE(d.watching(1));
  EXPECT_FALSE(d.watching(2));
}

TEST(FailureDetector, ForgottenAndUnwatchedPeersAreNeverReported) {
  FakeClock clock;
  FailureDetector d(2s, clock.now());
  d.watch(1);
  d.watch(2);
  d.forget(1);
  d.heard(3);  // never watched: ignored
  EXPECT_FALSE(d.watching(3));
  std::vector<uint64_t> reported;
  for (int i = 0; i < 10; ++i) {
    clock.t += 400ms;
    for (uint64_t p : d.check()) reported.push_back(p);
  }
  EXPECT_EQ(reported, std::vector<uint64_t>{2});
  // Watched again (it rejoined): a fresh timeout.
  d.watch(2);
  clock.t += 400ms;
  EXPECT_TRUE(d.check().empty());
}

TEST(FailureDetector, AGapInThisProcessConvictsNobody) {
  FakeClock clock;
  FailureDetector d(5s, clock.now());
  d.watch(1);
  d.watch(2);
  clock.t += 1s;
  EXPECT_TRUE(d.check().empty());
  // This process was stopped for a minute: its peers' silence says nothing.
  clock.t += 60s;
  EXPECT_TRUE(d.check().empty());
  EXPECT_EQ(d.own_gaps(), 1u);
  EXPECT_TRUE(d.watching(1));
  EXPECT_TRUE(d.watching(2));
  // Each gets a full timeout from the wake-up; one speaks, the other stays silent.
  for (int i = 0; i < 5; ++i) {
    clock.t += 1s;
    d.heard(1);
    EXPECT_TRUE(d.check().empty()) << i;
  }
  clock.t += 1s;
  d.heard(1);
  EXPECT_EQ(sorted(d.check()), std::vector<uint64_t>{2});
  EXPECT_EQ(d.own_gaps(), 1u);
}

TEST(FailureDetector, ALateCheckWithinHalfTheTimeoutStillJudges) {
  FakeClock clock;
  FailureDetector d(5s, clock.now());
  d.watch(1);
  clock.t += 2s;
  EXPECT_TRUE(d.check().empty());
  clock.t += 2s;  // late (2 s instead of 1 s) but under half the timeout: not a gap
  EXPECT_TRUE(d.check().empty());
  clock.t += 2s;  // 6 s of silence
  EXPECT_EQ(d.check(), std::vector<uint64_t>{1});
  EXPECT_EQ(d.own_gaps(), 0u);
}

TEST(FailureDetector, APeerWhoseLongMessageIsArrivingGetsTheTimeItMayTake) {
  FakeClock clock;
  // 5 s, and messages assumed to progress at 1 MiB/s at least.
  FailureDetector d(5s, clock.now(), 1024.0 * 1024);
  d.watch(1);
  d.watch(2);
  // Both start sending 10 MiB: their heartbeats are queued behind it, so nothing more comes
  // from either until it has arrived, which may take up to 10 s at the slowest rate.
  d.heard(1, 10u << 20);
  d.heard(2, 10u << 20);
  for (int i = 0; i < 14; ++i) {
    clock.t += 1s;
    EXPECT_TRUE(d.check().empty()) << "reported " << i + 1 << " s into a 10 MiB message";
  }
  // Peer 1's message completes (nothing more arriving): the plain timeout from now on.
  d.heard(1, 0);
  clock.t += 1s;  // 15 s: peer 2 has had 5 s + 10 MiB / (1 MiB/s) = 15 s
  EXPECT_TRUE(d.check().empty());
  clock.t += 1s;  // peer 2 stopped in the middle of its message: found, later but found
  EXPECT_EQ(d.check(), std::vector<uint64_t>{2});
  for (int i = 0; i < 3; ++i) {  // 3, 4 and 5 s since peer 1's message completed
    clock.t += 1s;
    EXPECT_TRUE(d.check().empty()) << i;
  }
  clock.t += 1s;  // 6 s since peer 1's message completed
  EXPECT_EQ(d.check(), std::vector<uint64_t>{1});
}

// Transfers from several peers share this process's bandwidth: each may take as long as all of
// them together.
TEST(FailureDetector, MessagesArrivingFromSeveralPeersShareTheRate) {
  FakeClock clock;
  FailureDetector d(5s, clock.now(), 1024.0 * 1024);
  for (uint64_t p = 1; p <= 4; ++p) {
    d.watch(p);
    d.heard(p, 5u << 20);  // 4 x 5 MiB at 1 MiB/s in all: up to 20 s
  }
  d.watch(9);  // nothing arriving from it: the plain timeout
  std::vector<uint64_t> reported;
  for (int i = 0; i < 26; ++i) {
    clock.t += 1s;
    for (uint64_t p : d.check()) reported.push_back(p);
    if (i == 5) EXPECT_EQ(reported, std::vector<uint64_t>{9}) << "at 6 s";
    if (i == 24) EXPECT_EQ(reported, std::vector<uint64_t>{9}) << "at 5 s + 20 s";
  }
  EXPECT_EQ(sorted(reported), (std::vector<uint64_t>{1, 2, 3, 4, 9}));
}

TEST(FailureDetector, ANetworkThreadBusyElsewhereConvictsNobody) {
  FakeClock clock;
  FailureDetector d(5s, clock.now());
  d.watch(1);
  d.watch(2);
  for (int i = 0; i < 4; ++i) {
    clock.t += 1s;
    d.heard(1);
    EXPECT_TRUE(d.check().empty()) << i;
  }
  // The checks came on time, but the thread that reads messages spent 3 s in one callback
  // (more than half the timeout): peer 2's silence in that time says nothing about it.
  clock.t += 1s;
  d.heard(1);
  EXPECT_TRUE(d.check(3s).empty());
  EXPECT_EQ(d.own_gaps(), 1u);
  // A stall under half the timeout is no excuse: peer 2 gets 5 s from the last gap, no more.
  for (int i = 0; i < 5; ++i) {
    clock.t += 1s;
    d.heard(1);
    EXPECT_TRUE(d.check(2s).empty()) << i;
  }
  clock.t += 1s;
  d.heard(1);
  EXPECT_EQ(d.check(2s), std::vector<uint64_t>{2});
  EXPECT_EQ(d.own_gaps(), 1u);
}

}  // namespace
}  // namespace prism::cluster
