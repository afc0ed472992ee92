// prism::timeline(path): Chrome trace JSON of the tasks a runtime ran.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unistd.h>
#include <utility>

#include "api/runtime_core.h"
#include "observability/timeline.h"
#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::kTimeout;

int timeline_square(int x) { return x * x; }
PRISM_REMOTE(timeline_square);

struct TimelineCounter {
  int n = 0;
  int bump() { return ++n; }
};
PRISM_ACTOR(TimelineCounter, &TimelineCounter::bump);

std::string temp_path(const char* name) {
  return "/tmp/prism_timeline_test_" + std::to_string(getpid()) + "_" + name + ".json";
}

using prism_test::read_file;
size_t count(const std::string& s, const std::string& what) { return prism_test::count_of(s, what); }

TEST(Timeline, RecordsEveryTaskRunWithItsNameAndDevice) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1, .timeline = true});
  std::vector<prism::ObjectRef<int>> refs;
  for (int i = 0; i < 5; ++i) refs.push_back(rt.task(timeline_square).remote(i));
  refs.push_back(rt.task([] { return 7; }).name("gpu \"step\"").num_gpus(0.5).remote());
  auto counter = rt.actor<TimelineCounter>().remote();
  refs.push_back(counter.task(&TimelineCounter::bump).remote());
  for (auto& r : refs) prism::get(r, kTimeout);

  const std::string path = temp_path("on");
  rt.timeline(path);
  const std::string json = read_file(path);
  std::remove(path.c_str());
  ASSERT_FALSE(json.empty());
  EXPECT_EQ(json.rfind("{\"displayTimeUnit\"", 0), 0u);
  // 5 + 1 tasks + the actor's constructor + 1 method call.
  EXPECT_EQ(count(json, "\"ph\":\"X\""), 8u);
  EXPECT_EQ(count(json, "\"name\":\"timeline_square\""), 5u);
  EXPECT_EQ(count(json, "\"name\":\"gpu \\\"step\\\"\""), 1u);  // quotes are escaped
  EXPECT_EQ(count(json, "\"name\":\"TimelineCounter::bump\""), 1u);
  EXPECT_EQ(count(json, "\"device\":\"gpu\",\"gpus\":[0]"), 1u);
  EXPECT_EQ(json.substr(json.size() - 3), "]}\n");
}

TEST(Timeline, IsAnErrorWhenRecordingIsOffOrTheFileCannotBeWritten) {
  {
    prism::Runtime off({.num_cpus = 1});
    try {
      off.timeline(temp_path("off"));
      FAIL() << "timeline() wrote a file although recording was off";
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
    }
  }
  prism::Runtime on({.num_cpus = 1, .timeline = true});
  EXPECT_THROW(on.timeline("/nonexistent-dir/prism/timeline.json"), prism::Error);
}

// A run's span is recorded before its result is published (run_returned()), so the worker is
// done with it when the caller wakes: whoever sees the result sees the span, with nothing to wait
// for. Checked on runs of tasks, num_returns tasks and actor calls, mostly on the runtime's
// threads (the driver could run a queued task itself; then it holds trivially).
TEST(Timeline, ASpanIsRecordedBeforeItsResultIsVisible) {
  prism::Runtime rt({.num_cpus = 2, .timeline = true});
  const auto since = prism::internal::Timeline::Clock::time_point::min();
  auto spans = [&] { return rt.core()->recent_spans(since, 1'000'000).size(); };
  auto counter = rt.actor<TimelineCounter>().remote();
  EXPECT_EQ(prism::get(counter.task(&TimelineCounter::bump).remote(), kTimeout), 1);
  size_t expected = spans();
  EXPECT_EQ(expected, 2u) << "the constructor and the call";
  for (int i = 0; i < 1500; ++i) {
    switch (i % 3) {
      case 0:
        EXPECT_EQ(prism::get(rt.task(timeline_square).remote(i), kTimeout), i * i);
        break;
      case 1: {
        auto [a, b] = rt.task([](int x) { return std::pair<int, int>(x, -x); })
                          .num_returns<2>()
                          .remote(i);
        EXPECT_EQ(prism::get(b, kTimeout), -i);
        break;
      }
      default:
        EXPECT_EQ(prism::get(counter.task(&TimelineCounter::bump).remote(), kTimeout), i / 3 + 2);
    }
    ASSERT_EQ(spans(), ++expected) << "run " << i << ": its span was not there with its result";
  }
  // A run that throws publishes its error first; its span still arrives (timeline() settles).
  auto failed = rt.task([]() -> int { throw std::runtime_error("no"); }).remote();
  EXPECT_THROW(prism::get(failed, kTimeout), prism::TaskError);
  const std::string path = temp_path("before");
  rt.timeline(path);
  const std::string json = read_file(path);
  std::remove(path.c_str());
  EXPECT_EQ(count(json, "\"ph\":\"X\""), expected + 1);
}

TEST(Timeline, ABoundedTimelineKeepsTheNewestSpansInOrder) {
  using prism::internal::Timeline;
  Timeline ring(3);
  EXPECT_FALSE(ring.keeps_everything());
  const auto t0 = Timeline::Clock::now();
  for (int i = 0; i < 5; ++i) {
    Timeline::Span s;
    s.name = "s" + std::to_string(i);
    s.start = t0 + std::chrono::milliseconds(10 * i);
    s.end = s.start + std::chrono::milliseconds(5);
    ring.record(s);
    EXPECT_EQ(ring.size(), static_cast<size_t>(std::min(i + 1, 3)));
  }
  auto all = ring.recent(t0, 100);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].name, "s2");
  EXPECT_EQ(all[1].name, "s3");
  EXPECT_EQ(all[2].name, "s4");
  // Only the spans that ended at or after `since`, and at most `max` (the newest).
  auto late = ring.recent(t0 + std::chrono::milliseconds(36), 100);  // s3 ended at 35
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].name, "s4");
  auto two = ring.recent(t0, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].name, "s3");
  Timeline everything;
  EXPECT_TRUE(everything.keeps_everything());
}

TEST(Timeline, ADashboardWithoutItsComponentIsAClearError) {
  // prism_core_tests does not link Prism::dashboard.
  try {
    prism::Runtime rt({.num_cpus = 1, .dashboard = "127.0.0.1:0"});
    FAIL() << "a dashboard was promised without the component that serves it";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("Prism::dashboard"), std::string::npos) << e.what();
  }
}

}  // namespace
