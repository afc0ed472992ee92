// prism::timeline(path): Chrome trace JSON of the tasks a runtime ran.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

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

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) ++n;
  return n;
}

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

}  // namespace
