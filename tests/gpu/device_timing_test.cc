// When GPU tasks' work ran on their device (device_timing.h), driven directly and through a
// runtime's timeline. On the host backend a "device" runs its work as it is queued, so the
// device span of a run lies inside the host span of the same run; on CUDA the same holds up to
// the work's queueing (it may end later: the checks allow that there).

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "backend.h"
#include "core/test_util.h"
#include "device_timing.h"
#include "prism/gpu.h"
#include "prism/prism.h"

namespace {

using prism::gpu::Device;
using prism::gpu::DType;
using prism::gpu::Tensor;
using Clock = std::chrono::steady_clock;
namespace gi = prism::gpu::internal;

bool on_host_backend() { return prism::gpu::backend() == prism::gpu::Backend::kHost; }

TEST(DeviceTiming, ARunsWorkBecomesASpanOnceCollectedOnlyByItsOwner) {
  if (!on_host_backend()) GTEST_SKIP() << "drives the host backend's timing events directly";
  gi::DeviceBackend& b = gi::backend_instance();
  void* stream = b.stream_create(0);
  const uint64_t owner = 0xABCDEF01, other = 0xABCDEF02;
  const auto t0 = Clock::now();
  gi::device_timing_begin(owner, "outer", 0, stream);
  gi::device_timing_begin(owner, "untimed", -1, nullptr);  // a CPU child inside: pairs, no span
  gi::device_timing_end();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));  // (work that takes time)
  gi::device_timing_end();
  const auto t1 = Clock::now();
  EXPECT_TRUE(gi::device_timing_collect(other).empty()) << "another runtime's spans are not ours";
  std::vector<gi::DeviceSpan> spans = gi::device_timing_collect(owner);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].name, "outer");
  EXPECT_EQ(spans[0].device, 0);
  // Through the reference event onto the host clock: inside the run, and 2 ms long at least.
  const auto slack = std::chrono::microseconds(200);
  EXPECT_GE(spans[0].start + slack, t0);
  EXPECT_LE(spans[0].end, t1 + slack);
  EXPECT_GE(spans[0].end - spans[0].start, std::chrono::milliseconds(2) - slack);
  EXPECT_TRUE(gi::device_timing_collect(owner).empty()) << "each span is returned once";
  // A timed run inside an untimed one, with untimed runs inside it: each end closes its own.
  gi::device_timing_begin(owner, "untimed outer", -1, nullptr);
  gi::device_timing_begin(owner, "untimed outer 2", -1, nullptr);
  gi::device_timing_begin(owner, "inner", 0, stream);
  gi::device_timing_begin(owner, "untimed inner", -1, nullptr);
  gi::device_timing_end();
  EXPECT_TRUE(gi::device_timing_collect(owner).empty()) << "closed the timed run early";
  gi::device_timing_end();
  gi::device_timing_end();
  gi::device_timing_end();
  gi::device_timing_end();  // (one too many: nothing open, nothing happens)
  spans = gi::device_timing_collect(owner);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].name, "inner");
  // Dropped with its runtime.
  gi::device_timing_begin(owner, "dropped", 0, stream);
  gi::device_timing_end();
  EXPECT_EQ(gi::device_timing_pending(), 1u);
  gi::device_timing_drop(owner);
  EXPECT_EQ(gi::device_timing_pending(), 0u);
  EXPECT_TRUE(gi::device_timing_collect(owner).empty());
}

// {"ts":..,"dur":..} of the first event that contains all of `parts`, or false.
bool find_event(const std::string& json, const std::vector<std::string>& parts, double* ts,
                double* dur) {
  for (size_t at = json.find("{\"name\":"); at != std::string::npos;
       at = json.find("{\"name\":", at + 1)) {
    const std::string event = json.substr(at, json.find('}', at) - at);
    bool all = true;
    for (const std::string& p : parts) all = all && event.find(p) != std::string::npos;
    if (!all) continue;
    *ts = std::stod(event.substr(event.find("\"ts\":") + 5));
    *dur = std::stod(event.substr(event.find("\"dur\":") + 6));
    return true;
  }
  return false;
}

TEST(DeviceTiming, TheTimelineShowsAGpuTasksDeviceWorkOnItsOwnRow) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1, .timeline = true});
  auto ref = rt.task([] {
                 Tensor a = Tensor::from_vector(std::vector<float>(1 << 16, 1.0f), {1 << 16});
                 Tensor sum = a;
                 for (int i = 0; i < 20; ++i) sum = prism::gpu::add(sum, a);
                 return sum.to_vector<float>().at(7);
               })
                 .num_gpus(1)
                 .name("gpu work")
                 .remote();
  EXPECT_EQ(prism::get(ref, prism_test::kTimeout), 21.0f);
  const std::string path = "/tmp/prism_device_timing_" + std::to_string(getpid()) + ".json";
  rt.timeline(path);
  const std::string json = prism_test::read_file(path);
  std::remove(path.c_str());
  EXPECT_NE(json.find("\"tid\":-1,\"args\":{\"name\":\"GPU 0 (device work)\"}"), std::string::npos)
      << json;
  double host_ts = 0, host_dur = 0, dev_ts = 0, dev_dur = 0;
  ASSERT_TRUE(find_event(json, {"\"name\":\"gpu work\"", "\"cat\":\"task\"", "\"tid\":-1,"},
                         &dev_ts, &dev_dur))
      << json;
  // The host span: the same name on a thread's row (tid > 0).
  bool host = false;
  for (int tid = 1; tid < 64 && !host; ++tid) {
    host = find_event(json, {"\"name\":\"gpu work\"", "\"tid\":" + std::to_string(tid) + ","},
                      &host_ts, &host_dur);
  }
  ASSERT_TRUE(host) << json;
  EXPECT_NE(json.find("\"device\":\"gpu\",\"gpus\":[0]"), std::string::npos);
  const double slack_us = 500;
  EXPECT_GE(dev_ts + slack_us, host_ts) << "device work starts after the run began";
  if (on_host_backend()) {
    EXPECT_LE(dev_ts + dev_dur, host_ts + host_dur + slack_us) << "and, here, ends within it";
  }
  EXPECT_GT(dev_dur, 0);
}

}  // namespace
