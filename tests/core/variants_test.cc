// Heterogeneous tasks (prism/variants.h): the performance model and the planner driven directly
// (no wall clock: observations are fed by the test), then variant calls end to end on runtimes
// with logical GPUs.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "api/runtime_core.h"
#include "prism/prism.h"
#include "scheduler/perf_model.h"
#include "scheduler/variant_planner.h"
#include "test_util.h"

namespace {

using prism::internal::PerfModel;
using prism::internal::VariantPlanner;
using prism_test::kTimeout;
using Processor = VariantPlanner::Processor;

std::string temp_dir(const char* name) {
  return "/tmp/prism_variants_test_" + std::to_string(getpid()) + "_" + name;
}

void remove_dir(const std::string& dir) {
  const std::string file = PerfModel::file_in(dir);
  std::remove(file.c_str());
  std::remove(dir.c_str());
}

// ---- PerfModel ----

TEST(PerfModel, BucketsSizesByPowersOfTwo) {
  EXPECT_EQ(PerfModel::bucket_of(0), 0);
  EXPECT_EQ(PerfModel::bucket_of(1), 1);
  EXPECT_EQ(PerfModel::bucket_of(2), 2);
  EXPECT_EQ(PerfModel::bucket_of(3), 2);
  EXPECT_EQ(PerfModel::bucket_of(4), 3);
  EXPECT_EQ(PerfModel::bucket_of(1 << 20), 21);
  EXPECT_EQ(PerfModel::bucket_of((1 << 20) + 1), 21);
  EXPECT_EQ(PerfModel::bucket_of(INT64_MAX), 63);
  EXPECT_EQ(PerfModel::bucket_of(-5), 0);
}

TEST(PerfModel, KeepsMeanAndSpreadPerFunctionVariantAndBucket) {
  PerfModel m;
  EXPECT_EQ(m.estimate("f", "cpu", 3).samples, 0);
  m.record("f", "cpu", 3, 1.0);
  m.record("f", "cpu", 3, 3.0);
  m.record("f", "gpu", 3, 0.5);
  m.record("f", "cpu", 4, 10.0);
  m.record("f", "cpu", 3, -1.0);      // ignored
  m.record("f", "cpu", 3, std::nan(""));  // ignored
  const PerfModel::Estimate e = m.estimate("f", "cpu", 3);
  EXPECT_EQ(e.samples, 2);
  EXPECT_DOUBLE_EQ(e.mean, 2.0);
  EXPECT_DOUBLE_EQ(e.stddev, 1.0);  // population spread of {1, 3}
  EXPECT_DOUBLE_EQ(m.estimate("f", "gpu", 3).mean, 0.5);
  EXPECT_DOUBLE_EQ(m.estimate("f", "cpu", 4).mean, 10.0);
  EXPECT_EQ(m.estimate("g", "cpu", 3).samples, 0);
}

TEST(PerfModel, ForgetsOldRunsPastItsWindow) {
  PerfModel m;
  for (int i = 0; i < 1000; ++i) m.record("f", "cpu", 1, 1.0);
  for (int i = 0; i < 200; ++i) m.record("f", "cpu", 1, 2.0);
  // Exactly weighted, the mean would be 1.17; the window follows the machine's new speed.
  EXPECT_GT(m.estimate("f", "cpu", 1).mean, 1.9);
  EXPECT_EQ(m.estimate("f", "cpu", 1).samples, 1200);
}

TEST(PerfModel, MeasuresBandwidthsAndIgnoresTinyCopies) {
  PerfModel m;
  EXPECT_EQ(m.bandwidth(PerfModel::Link::kHostToDevice), PerfModel::kDefaultBandwidth);
  m.record_transfer(PerfModel::Link::kHostToDevice, 1000, 1e-6);  // latency, not bandwidth
  EXPECT_EQ(m.bandwidth(PerfModel::Link::kHostToDevice), PerfModel::kDefaultBandwidth);
  m.record_transfer(PerfModel::Link::kHostToDevice, 1 << 30, 0.5);
  EXPECT_DOUBLE_EQ(m.bandwidth(PerfModel::Link::kHostToDevice), 2.0 * (1 << 30));
  EXPECT_EQ(m.bandwidth(PerfModel::Link::kDeviceToHost), PerfModel::kDefaultBandwidth);
}

TEST(PerfModel, TheFileIsWrittenAndReadBack) {
  const std::string dir = temp_dir("file");
  ASSERT_EQ(::system(("mkdir -p " + dir).c_str()), 0);
  const std::string path = PerfModel::file_in(dir);
  {
    PerfModel m;
    m.record("f", "cpu", 3, 1.0);
    m.record("f", "cpu", 3, 3.0);
    m.record("odd\tname%", "gpu\nvariant", 0, 0.25);  // encoded, not breaking the format
    m.record_transfer(PerfModel::Link::kDeviceToHost, 1 << 20, 1e-3);
    EXPECT_TRUE(m.changed());
    m.save(path);
    EXPECT_FALSE(m.changed());
  }
  PerfModel back;
  int skipped = -1;
  EXPECT_EQ(back.load(path, &skipped), 3);
  EXPECT_EQ(skipped, 0);
  EXPECT_EQ(back.estimate("f", "cpu", 3).samples, 2);
  EXPECT_DOUBLE_EQ(back.estimate("f", "cpu", 3).mean, 2.0);
  EXPECT_DOUBLE_EQ(back.estimate("f", "cpu", 3).stddev, 1.0);
  EXPECT_DOUBLE_EQ(back.estimate("odd\tname%", "gpu\nvariant", 0).mean, 0.25);
  EXPECT_NEAR(back.bandwidth(PerfModel::Link::kDeviceToHost), (1 << 20) / 1e-3, 1);

  // A damaged file: good lines are kept, the others skipped and counted.
  {
    std::ofstream f(path, std::ios::app);
    f << "run\tf\tcpu\tnot-a-number\t1\t1\t0\n"
      << "run\tf\tcpu\t5\t0\t1\t0\n"  // no samples
      << "bandwidth\tsideways\t1\t1\n"
      << "something from a newer version\n"
      << "run\tg\tcpu\t2\t4\t0.5\t0.01\n";
  }
  PerfModel damaged;
  EXPECT_EQ(damaged.load(path, &skipped), 4);
  EXPECT_EQ(skipped, 4);
  EXPECT_DOUBLE_EQ(damaged.estimate("g", "cpu", 2).mean, 0.5);
  // A missing file is an empty model.
  PerfModel none;
  EXPECT_EQ(none.load(dir + "/missing"), 0);
  // An unwritable place is a clear error.
  EXPECT_THROW(none.save("/nonexistent-dir/x.prism-perf"), prism::Error);
  remove_dir(dir);
}

// ---- VariantPlanner ----

std::vector<VariantPlanner::Option> cpu_and_gpu(double cpu_lanes = 1, double gpu_lanes = 1) {
  std::vector<VariantPlanner::Option> o(2);
  o[0].name = "cpu";
  o[0].processor = Processor::kCpu;
  o[0].lanes = cpu_lanes;
  o[1].name = "gpu";
  o[1].processor = Processor::kGpu;
  o[1].lanes = gpu_lanes;
  return o;
}

void calibrate(PerfModel* m, const char* fn, int bucket, double cpu, double gpu) {
  for (int i = 0; i < PerfModel::kCalibrationRuns; ++i) {
    m->record(fn, "cpu", bucket, cpu);
    m->record(fn, "gpu", bucket, gpu);
  }
}

TEST(VariantPlanner, CalibratesEveryVariantFirstCountingCallsInFlight) {
  PerfModel m;
  VariantPlanner p(&m);
  const auto options = cpu_and_gpu();
  // Six calls at once, none finished: three to each variant, alternating by runs so far.
  int per[2] = {0, 0};
  std::vector<VariantPlanner::Choice> choices;
  for (int i = 0; i < 2 * PerfModel::kCalibrationRuns; ++i) {
    const auto c = p.choose("f", 1, options);
    ASSERT_GE(c.option, 0);
    EXPECT_TRUE(c.calibrating);
    ++per[c.option];
    choices.push_back(c);
  }
  EXPECT_EQ(per[0], PerfModel::kCalibrationRuns);
  EXPECT_EQ(per[1], PerfModel::kCalibrationRuns);
  // They finish: their times are the model's, and the next call is planned.
  for (const auto& c : choices) {
    p.finished("f", 1, options[static_cast<size_t>(c.option)], c, c.option == 0 ? 4.0 : 1.0);
  }
  EXPECT_EQ(m.estimate("f", "cpu", 1).samples, PerfModel::kCalibrationRuns);
  const auto next = p.choose("f", 1, options);
  EXPECT_FALSE(next.calibrating);
  EXPECT_EQ(next.option, 1);
  EXPECT_DOUBLE_EQ(next.predicted, 1.0);
  // Another bucket of the same function calibrates on its own.
  EXPECT_TRUE(p.choose("f", 9, options).calibrating);
}

TEST(VariantPlanner, AFourTimesFasterGpuTakesMostCallsYetALongQueueSendsSomeToTheCpu) {
  PerfModel m;
  VariantPlanner p(&m);
  calibrate(&m, "f", 5, /*cpu=*/4.0, /*gpu=*/1.0);
  const auto options = cpu_and_gpu();
  // Ten calls queued at once on one CPU lane and one GPU lane: the GPU's queue grows by 1 per
  // call, the CPU's by 4, and each call goes where it is expected to finish first.
  int per[2] = {0, 0};
  std::vector<VariantPlanner::Choice> choices;
  for (int i = 0; i < 10; ++i) {
    const auto c = p.choose("f", 5, options);
    ASSERT_GE(c.option, 0);
    EXPECT_FALSE(c.calibrating);
    ++per[c.option];
    choices.push_back(c);
  }
  EXPECT_EQ(per[1], 8) << "GPU calls";
  EXPECT_EQ(per[0], 2) << "CPU calls";
  EXPECT_DOUBLE_EQ(p.backlog(Processor::kGpu), 8.0);
  EXPECT_DOUBLE_EQ(p.backlog(Processor::kCpu), 8.0);
  for (const auto& c : choices) {
    p.finished("f", 5, options[static_cast<size_t>(c.option)], c, -1);  // (not measured)
  }
  EXPECT_DOUBLE_EQ(p.backlog(Processor::kGpu), 0.0);
  EXPECT_DOUBLE_EQ(p.backlog(Processor::kCpu), 0.0);
  // One call at a time, each finished before the next: all go to the GPU.
  for (int i = 0; i < 20; ++i) {
    const auto c = p.choose("f", 5, options);
    EXPECT_EQ(c.option, 1);
    p.finished("f", 5, options[1], c, 1.0);
  }
  // Four GPU lanes (a quarter GPU per call) take a longer queue before the CPU gets work.
  per[0] = per[1] = 0;
  const auto quarter = cpu_and_gpu(1, 4);
  for (int i = 0; i < 10; ++i) ++per[p.choose("f", 5, quarter).option];
  EXPECT_EQ(per[0], 0);
  EXPECT_EQ(per[1], 10);
}

TEST(VariantPlanner, OtherNodesAreProcessorsOfTheirOwnWithTheirOwnHistory) {
  PerfModel m;
  VariantPlanner p(&m);
  // Here: a CPU only. node1: a CPU and a GPU whose variant is 4x faster; its runs are kept under
  // "<variant>@node1", apart from this node's.
  auto options = cpu_and_gpu();
  options.pop_back();
  VariantPlanner::Option cpu1 = options[0], gpu1 = cpu_and_gpu()[1];
  cpu1.place = gpu1.place = "node1";
  cpu1.transfer_seconds = gpu1.transfer_seconds = 0.25;  // the arguments cross the network
  options.push_back(cpu1);
  options.push_back(gpu1);
  // Calibration measures every (variant, place), this node's CPU too.
  int per[3] = {0, 0, 0};
  std::vector<VariantPlanner::Choice> choices;
  for (int i = 0; i < 3 * PerfModel::kCalibrationRuns; ++i) {
    const auto c = p.choose("f", 5, options);
    ASSERT_GE(c.option, 0);
    EXPECT_TRUE(c.calibrating);
    ++per[c.option];
    choices.push_back(c);
  }
  for (int n : per) EXPECT_EQ(n, PerfModel::kCalibrationRuns);
  EXPECT_DOUBLE_EQ(p.backlog(Processor::kGpu), 0.0);  // node1's GPU has a queue of its own
  for (const auto& c : choices) {
    const double t = c.option == 2 ? 1.0 : 4.0;
    p.finished("f", 5, options[static_cast<size_t>(c.option)], c, t);
  }
  EXPECT_EQ(m.estimate("f", "gpu@node1", 5).samples, PerfModel::kCalibrationRuns);
  EXPECT_EQ(m.estimate("f", "cpu@node1", 5).samples, PerfModel::kCalibrationRuns);
  EXPECT_EQ(m.estimate("f", "cpu", 5).samples, PerfModel::kCalibrationRuns);
  EXPECT_DOUBLE_EQ(p.backlog(Processor::kGpu, "node1"), 0.0);
  // Twelve calls at once: node1's GPU (1.25 s each with the transfer) takes most; the CPUs here
  // (4 s) and on node1 (4.25 s) take some once its queue is long.
  per[0] = per[1] = per[2] = 0;
  for (int i = 0; i < 12; ++i) ++per[p.choose("f", 5, options).option];
  EXPECT_GE(per[2], 8) << "node1 GPU";
  EXPECT_GE(per[0], 1) << "CPU here";
  EXPECT_GE(per[1], 1) << "node1 CPU";
  EXPECT_EQ(per[0] + per[1] + per[2], 12);
  // The model file keeps only this machine's runs.
  const std::string dir = temp_dir("places");
  ASSERT_EQ(::system(("mkdir -p " + dir).c_str()), 0);
  m.save(PerfModel::file_in(dir));
  PerfModel back;
  back.load(PerfModel::file_in(dir));
  EXPECT_EQ(back.estimate("f", "cpu", 5).samples, PerfModel::kCalibrationRuns);
  EXPECT_EQ(back.estimate("f", "gpu@node1", 5).samples, 0);
  remove_dir(dir);
}

TEST(VariantPlanner, HysteresisKeepsNoLoyaltyToAVariantThatOnlyFailed) {
  PerfModel m;
  VariantPlanner p(&m);
  for (int i = 0; i < PerfModel::kCalibrationRuns; ++i) m.record("f", "cpu", 2, 1.0);
  const auto options = cpu_and_gpu();
  // The GPU variant is calibrated (the last choices) and fails every time.
  for (int i = 0; i < PerfModel::kCalibrationRuns; ++i) {
    const auto c = p.choose("f", 2, options);
    ASSERT_EQ(c.option, 1);
    p.finished("f", 2, options[1], c, -1, /*failed=*/true);
  }
  // Its assumed time equals the CPU's, within the hysteresis margin: the CPU runs anyway.
  for (int i = 0; i < 5; ++i) {
    const auto c = p.choose("f", 2, options);
    EXPECT_EQ(c.option, 0);
    p.finished("f", 2, options[0], c, 1.0);
  }
}

TEST(VariantPlanner, TransferCostsCount) {
  PerfModel m;
  VariantPlanner p(&m);
  calibrate(&m, "f", 5, /*cpu=*/2.0, /*gpu=*/1.0);
  auto options = cpu_and_gpu();
  options[1].transfer_seconds = 1.5;  // the arguments are on the host; uploading them costs
  const auto c = p.choose("f", 5, options);
  EXPECT_EQ(c.option, 0);
  EXPECT_DOUBLE_EQ(c.expected_finish, 2.0);
  p.finished("f", 5, options[0], c, -1);
  options[1].transfer_seconds = 0;  // already on the device
  options[0].transfer_seconds = 0.5;
  EXPECT_EQ(p.choose("f", 5, options).option, 1);
}

TEST(VariantPlanner, ANoisyVariantDoesNotMakeTheChoiceFlap) {
  PerfModel m;
  VariantPlanner p(&m);
  const auto options = cpu_and_gpu();
  // The CPU variant's times swing between 1 and 9 (mean 5); the GPU's are a steady 4.8. With
  // no hysteresis the CPU's running mean crosses 4.8 at almost every other run.
  for (int i = 0; i < PerfModel::kCalibrationRuns; ++i) m.record("f", "gpu", 2, 4.8);
  m.record("f", "cpu", 2, 1.0);
  m.record("f", "cpu", 2, 9.0);
  m.record("f", "cpu", 2, 1.0);
  int switches = 0;
  int last = -1;
  int crossings = 0;
  bool cpu_was_better = m.estimate("f", "cpu", 2).mean < 4.8;
  for (int i = 0; i < 200; ++i) {
    const auto c = p.choose("f", 2, options);
    ASSERT_GE(c.option, 0);
    if (last >= 0 && c.option != last) ++switches;
    last = c.option;
    p.finished("f", 2, options[static_cast<size_t>(c.option)], c, -1);
    m.record("f", "cpu", 2, i % 2 == 0 ? 9.0 : 1.0);
    const bool better = m.estimate("f", "cpu", 2).mean < 4.8;
    if (better != cpu_was_better) ++crossings;
    cpu_was_better = better;
  }
  EXPECT_GE(crossings, 10) << "the test's premise: the means cross often";
  EXPECT_LE(switches, 1);
}

TEST(VariantPlanner, AForcedVariantIsHonouredAndCounted) {
  PerfModel m;
  VariantPlanner p(&m);
  calibrate(&m, "f", 5, /*cpu=*/4.0, /*gpu=*/1.0);
  const auto options = cpu_and_gpu();
  const auto c = p.choose("f", 5, options, /*forced=*/0);
  EXPECT_EQ(c.option, 0);
  EXPECT_DOUBLE_EQ(p.backlog(Processor::kCpu), 4.0);
  // A variant the node cannot run is never chosen, forced or not.
  auto no_gpu = options;
  no_gpu[1].allowed = false;
  EXPECT_EQ(p.choose("f", 5, no_gpu).option, 0);
  EXPECT_EQ(p.choose("f", 5, no_gpu, /*forced=*/1).option, 0);
  no_gpu[0].allowed = false;
  EXPECT_EQ(p.choose("f", 5, no_gpu).option, -1);
}

TEST(VariantPlanner, RemembersTheNewestResultsVariants) {
  PerfModel m;
  VariantPlanner p(&m);
  for (uint64_t i = 0; i < VariantPlanner::kRemembered + 10; ++i) {
    p.remember(i, i % 2 ? "gpu" : "cpu");
  }
  EXPECT_EQ(p.variant_of(5), "");  // forgotten
  EXPECT_EQ(p.variant_of(VariantPlanner::kRemembered + 9), "gpu");
  EXPECT_EQ(p.variant_of(VariantPlanner::kRemembered + 8), "cpu");
}

// ---- end to end ----

std::atomic<int> g_cpu_runs{0};
std::atomic<int> g_gpu_runs{0};

int64_t sum_cpu(const std::vector<int64_t>& v) {
  ++g_cpu_runs;
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}
int64_t sum_gpu(const std::vector<int64_t>& v) {
  ++g_gpu_runs;
  EXPECT_EQ(prism::gpu_ids().size(), 1u);  // runs with its GPU granted
  int64_t s = 0;
  for (size_t i = v.size(); i-- > 0;) s += v[i];
  return s;
}

TEST(Variants, EitherVariantGivesTheSameResultAndTheCallerSeesWhichRan) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  g_cpu_runs = g_gpu_runs = 0;
  auto sum = prism::variants(sum_cpu, sum_gpu).name("sum");
  std::vector<int64_t> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int64_t>(i * i);
  const int64_t want = sum_cpu(v);
  g_cpu_runs = 0;
  std::vector<prism::ObjectRef<int64_t>> refs;
  for (int i = 0; i < 12; ++i) refs.push_back(rt.task(sum).remote(v));
  int seen_cpu = 0, seen_gpu = 0;
  for (auto& r : refs) {
    EXPECT_EQ(prism::get(r, kTimeout), want);
    const std::string which = prism::variant_of(r);
    ASSERT_TRUE(which == "cpu" || which == "gpu") << which;
    (which == "cpu" ? seen_cpu : seen_gpu)++;
  }
  EXPECT_EQ(seen_cpu, g_cpu_runs.load());
  EXPECT_EQ(seen_gpu, g_gpu_runs.load());
  // Calibration ran each variant at least kCalibrationRuns times.
  EXPECT_GE(seen_cpu, PerfModel::kCalibrationRuns);
  EXPECT_GE(seen_gpu, PerfModel::kCalibrationRuns);
  // stats() says the same, per variant.
  uint64_t runs[2] = {0, 0};
  for (const prism::VariantStats& s : rt.stats().variants) {
    EXPECT_EQ(s.function, "sum");
    if (s.variant == "cpu") {
      EXPECT_EQ(s.processor, "cpu");
      runs[0] = s.runs;
    } else {
      EXPECT_EQ(s.variant, "gpu");
      EXPECT_EQ(s.processor, "gpu");
      runs[1] = s.runs;
    }
  }
  EXPECT_EQ(runs[0], static_cast<uint64_t>(seen_cpu));
  EXPECT_EQ(runs[1], static_cast<uint64_t>(seen_gpu));
  // The model learned both, and the planner's queues are empty again.
  const int bucket = rt.core()->planner().backlog(Processor::kCpu) == 0 ? 0 : -1;
  EXPECT_EQ(bucket, 0);
  EXPECT_DOUBLE_EQ(rt.core()->planner().backlog(Processor::kGpu), 0.0);
  // A plain value is not a variant call's result.
  EXPECT_EQ(prism::variant_of(rt.put(3)), "");
}

TEST(Variants, AForcedVariantRunsAndWrongNamesAreClearErrors) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  auto sum = prism::variants(sum_cpu, sum_gpu).name("sum");
  const std::vector<int64_t> v{1, 2, 3};
  for (int i = 0; i < 5; ++i) {
    auto r = rt.task(sum).variant("gpu").remote(v);
    EXPECT_EQ(prism::get(r, kTimeout), 6);
    EXPECT_EQ(prism::variant_of(r), "gpu");
  }
  auto c = rt.task(sum).variant("cpu").remote(v);
  EXPECT_EQ(prism::get(c, kTimeout), 6);
  EXPECT_EQ(prism::variant_of(c), "cpu");
  try {
    rt.task(sum).variant("tpu").remote(v);
    FAIL() << "an unknown variant name was accepted";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("tpu"), std::string::npos) << e.what();
  }
}

TEST(Variants, WithoutGpusTheGpuVariantIsLeftOutAndAForcedOneIsInfeasible) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 0});
  g_gpu_runs = 0;
  auto sum = prism::variants(sum_cpu, sum_gpu).name("sum");
  const std::vector<int64_t> v{4, 5};
  for (int i = 0; i < 10; ++i) {
    auto r = rt.task(sum).remote(v);
    EXPECT_EQ(prism::get(r, kTimeout), 9);
    EXPECT_EQ(prism::variant_of(r), "cpu");
  }
  EXPECT_EQ(g_gpu_runs.load(), 0);
  try {
    rt.task(sum).variant("gpu").remote(v);
    FAIL() << "a forced GPU variant was accepted on a node without GPUs";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_NE(std::string(e.what()).find("'gpu'"), std::string::npos) << e.what();
  }
  // No variant can run: the error names each one's reason.
  prism::Runtime none({.num_cpus = 0, .num_gpus = 0});
  try {
    none.task(sum).remote(v);
    FAIL() << "a call no variant can run was accepted";
  } catch (const prism::InfeasibleError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("variant 'cpu'"), std::string::npos) << what;
    EXPECT_NE(what.find("variant 'gpu'"), std::string::npos) << what;
  }
}

int64_t gpu_out_of_memory(const std::vector<int64_t>&) {
  throw prism::OutOfMemoryError("device 0: 1 GiB requested, 0 B free: no room");
}
int64_t cpu_throws(const std::vector<int64_t>&) { throw std::runtime_error("the CPU broke too"); }

TEST(Variants, AGpuVariantOutOfDeviceMemoryRunsAgainAsTheCpuVariant) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  // The GPU variant first: the first call calibrates it (ties go to the first variant).
  auto sum = prism::variants(prism::gpu_variant("gpu", gpu_out_of_memory),
                             prism::cpu_variant("cpu", sum_cpu))
                 .name("sum_oom");
  const std::vector<int64_t> v{1, 2, 3, 4};
  auto r = rt.task(sum).remote(v);
  EXPECT_EQ(prism::get(r, kTimeout), 10);
  EXPECT_EQ(prism::variant_of(r), "cpu");
  uint64_t fallbacks = 0;
  for (const auto& s : rt.stats().variants) {
    if (s.variant == "gpu") fallbacks += s.fallbacks;
  }
  EXPECT_EQ(fallbacks, 1u);
  EXPECT_DOUBLE_EQ(rt.core()->planner().backlog(Processor::kGpu), 0.0);
  EXPECT_DOUBLE_EQ(rt.core()->planner().backlog(Processor::kCpu), 0.0);
  // The attempt given back is not counted twice.
  const prism::Stats st = rt.stats();
  EXPECT_EQ(st.tasks.running, 0u);
  EXPECT_EQ(st.tasks.waiting_for_resources, 0u);
  EXPECT_EQ(st.tasks.done, 1u);
  // The failures count as calibration runs: more calls do not keep trying the GPU variant.
  std::vector<prism::ObjectRef<int64_t>> more;
  for (int i = 0; i < 12; ++i) more.push_back(rt.task(sum).remote(v));
  for (auto& m : more) EXPECT_EQ(prism::get(m, kTimeout), 10);
  fallbacks = 0;
  for (const auto& s : rt.stats().variants) {
    if (s.variant == "gpu") fallbacks += s.fallbacks;
  }
  EXPECT_LE(fallbacks, static_cast<uint64_t>(PerfModel::kCalibrationRuns));
  // A forced GPU variant does not fall back: its error is the call's.
  auto forced = rt.task(sum).variant("gpu").remote(v);
  try {
    prism::get(forced, kTimeout);
    FAIL() << "a forced variant fell back";
  } catch (const prism::Error& e) {  // (the device's error, as Prism's own errors pass through)
    EXPECT_EQ(e.code(), prism::ErrorCode::kResourceExhausted);
    EXPECT_NE(std::string(e.what()).find("no room"), std::string::npos) << e.what();
  }

  // Both fail: the error says the CPU variant ran after the GPU one ran out of memory.
  auto both = prism::variants(prism::gpu_variant("gpu", gpu_out_of_memory),
                              prism::cpu_variant("cpu", cpu_throws))
                  .name("both_fail");
  auto f = rt.task(both).remote(v);
  try {
    prism::get(f, kTimeout);
    FAIL() << "the failure was lost";
  } catch (const prism::TaskError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("the CPU broke too"), std::string::npos) << what;
    EXPECT_NE(what.find("ran out of device memory"), std::string::npos) << what;
    EXPECT_NE(what.find("1 GiB requested"), std::string::npos) << what;
  }
  // Another exception of a GPU variant is the task's error, with no second run.
  auto plain = prism::variants(sum_cpu, cpu_throws).name("gpu_throws");
  g_cpu_runs = 0;
  auto g = rt.task(plain).variant("gpu").remote(v);
  EXPECT_THROW(prism::get(g, kTimeout), prism::TaskError);
  EXPECT_EQ(g_cpu_runs.load(), 0);
}

TEST(Variants, NamedVariantsASizeFunctionAndManyCallersKeepTheBooksBalanced) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  auto scalar = [](int n) {
    int64_t s = 0;
    for (int i = 0; i < n; ++i) s += i;
    return s;
  };
  auto closed = [](int n) { return int64_t{n} * (n - 1) / 2; };
  auto op = prism::variants(prism::cpu_variant("scalar", scalar),
                            prism::cpu_variant("closed_form", closed),
                            prism::gpu_variant("gpu", closed).num_gpus(0.5))
                .name("triangle")
                .size([](int n) { return n; });
  // Four threads, each a chain of calls whose inputs come from the previous call's result.
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const int n = 10 + ((i * 37 + t) % 5) * 1000;
        auto r = rt.task(op).remote(n);
        auto chained = rt.task([](int64_t x) { return static_cast<int>(x % 1000); }).remote(r);
        auto again = rt.task(op).remote(chained);
        const int64_t first = prism::get(r, kTimeout);
        const int m = prism::get(chained, kTimeout);
        if (first != closed(n) || prism::get(again, kTimeout) != closed(m)) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  // Sizes decide the buckets: several were calibrated.
  int buckets = 0;
  for (const auto& e : rt.core()->perf_model().entries()) {
    if (e.function == "triangle" && e.variant == "scalar") ++buckets;
  }
  EXPECT_GE(buckets, 3);
  // Every choice was matched by the end of its run.
  EXPECT_DOUBLE_EQ(rt.core()->planner().backlog(Processor::kCpu), 0.0);
  EXPECT_DOUBLE_EQ(rt.core()->planner().backlog(Processor::kGpu), 0.0);
  uint64_t runs = 0;
  for (const auto& s : rt.stats().variants) runs += s.runs;
  EXPECT_EQ(runs, 200u);
}

void unnamed_cpu(int) {}
void unnamed_gpu(int) {}

TEST(Variants, UnregisteredFunctionsMustBeNamed) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  try {
    rt.task(prism::variants(unnamed_cpu, unnamed_gpu)).remote(1);
    FAIL() << "an unnamed set of unregistered functions was accepted";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find(".name("), std::string::npos) << e.what();
  }
  prism::get(rt.task(prism::variants(unnamed_cpu, unnamed_gpu).name("named")).remote(1), kTimeout);
}

TEST(Variants, VoidResultsAndLambdasWork) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  std::atomic<int> hits{0};
  auto touch = prism::variants([&hits](int k) { hits += k; }, [&hits](int k) { hits += k; });
  std::vector<prism::ObjectRef<void>> refs;
  for (int i = 0; i < 8; ++i) refs.push_back(rt.task(touch).remote(2));
  for (auto& r : refs) prism::get(r, kTimeout);
  EXPECT_EQ(hits.load(), 16);
  for (auto& r : refs) EXPECT_FALSE(prism::variant_of(r).empty());
}

TEST(Variants, AFailedArgumentOrACancelledCallNeverRunsAndLeavesNoBacklog) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  auto sum = prism::variants(sum_cpu, sum_gpu).name("sum");
  auto bad = rt.task([]() -> std::vector<int64_t> { throw std::runtime_error("no input"); }).remote();
  auto r = rt.task(sum).remote(bad);
  EXPECT_THROW(prism::get(r, kTimeout), prism::TaskError);
  EXPECT_EQ(prism::variant_of(r), "");
  EXPECT_DOUBLE_EQ(rt.core()->planner().backlog(Processor::kCpu), 0.0);
  EXPECT_DOUBLE_EQ(rt.core()->planner().backlog(Processor::kGpu), 0.0);
}

TEST(Variants, TheTimelineShowsTheVariantWithItsPredictedAndActualTime) {
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1, .timeline = true});
  auto sum = prism::variants(sum_cpu, sum_gpu).name("sum");
  const std::vector<int64_t> v(100, 1);
  std::vector<prism::ObjectRef<int64_t>> refs;
  for (int i = 0; i < 8; ++i) refs.push_back(rt.task(sum).remote(v));
  for (auto& r : refs) EXPECT_EQ(prism::get(r, kTimeout), 100);
  const std::string path = temp_dir("timeline") + ".json";
  rt.timeline(path);
  const std::string json = prism_test::read_file(path);
  std::remove(path.c_str());
  EXPECT_EQ(prism_test::count_of(json, "\"name\":\"sum\""), 8u);
  EXPECT_EQ(prism_test::count_of(json, "\"variant\":\"cpu\"") +
                prism_test::count_of(json, "\"variant\":\"gpu\""),
            8u);
  EXPECT_EQ(prism_test::count_of(json, "\"predicted_us\":"), 8u);
  EXPECT_EQ(prism_test::count_of(json, "\"actual_us\":"), 8u);
}

TEST(Variants, TheModelFileMakesTheNextRunStartCalibrated) {
  const std::string dir = temp_dir("env");
  ::setenv("PRISM_PERF_MODEL_DIR", dir.c_str(), 1);
  auto sum = prism::variants(sum_cpu, sum_gpu).name("sum_kept");
  const std::vector<int64_t> v(64, 2);
  {
    prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
    std::vector<prism::ObjectRef<int64_t>> refs;
    for (int i = 0; i < 2 * PerfModel::kCalibrationRuns; ++i) refs.push_back(rt.task(sum).remote(v));
    for (auto& r : refs) EXPECT_EQ(prism::get(r, kTimeout), 128);
  }  // shut down: written
  {
    std::ifstream f(PerfModel::file_in(dir));
    EXPECT_TRUE(f.good()) << PerfModel::file_in(dir);
  }
  {
    prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
    const int bucket = PerfModel::bucket_of(static_cast<int64_t>(prism::ObjectSize<std::vector<int64_t>>::bytes(v)));
    EXPECT_GE(rt.core()->perf_model().estimate("sum_kept", "cpu", bucket).samples,
              PerfModel::kCalibrationRuns);
    EXPECT_GE(rt.core()->perf_model().estimate("sum_kept", "gpu", bucket).samples,
              PerfModel::kCalibrationRuns);
    // So the first call is planned, not a calibration run.
    VariantPlanner::Option cpu, gpu;
    cpu.name = "cpu";
    gpu.name = "gpu";
    gpu.processor = Processor::kGpu;
    EXPECT_FALSE(rt.core()->planner().choose("sum_kept", bucket, {cpu, gpu}).calibrating);
  }
  ::unsetenv("PRISM_PERF_MODEL_DIR");
  remove_dir(dir);
}

}  // namespace

// A ref argument whose value is not here (spilled to disk here; on another node in cluster mode,
// the same kind of entry) counts its serialized bytes toward the call's size, as it will once
// read; before, it counted as nothing and a large call fell into the smallest size bucket.
TEST(VariantFootprintTest, ARefWhoseValueIsElsewhereCountsItsBytes) {
  const std::string dir = std::string("/tmp/prism-footprint-test-") + std::to_string(getpid());
  setenv("PRISM_SPILL_DIR", dir.c_str(), 1);
  {
    prism::Runtime rt({.num_cpus = 1, .object_store_bytes = 1 << 20});
    const std::vector<char> big(2 << 20, 'x');
    auto spilled = rt.put(big);  // does not fit: on disk, read back by its first reader
    ASSERT_GE(rt.stats().objects.spilled_bytes, big.size());
    prism::internal::ArgFootprint fp;
    prism::internal::add_arg_footprint(spilled, &fp);
    EXPECT_GE(fp.bytes, static_cast<int64_t>(big.size())) << "sized by its bytes on disk";
    EXPECT_EQ(fp.not_on_device, fp.bytes) << "read back into host memory: a GPU variant uploads it";
    EXPECT_EQ(fp.not_on_host, 0);
    EXPECT_EQ(fp.refs.size(), 1u);
    EXPECT_EQ(prism::get(spilled, kTimeout).size(), big.size());  // read back: here now
    prism::internal::ArgFootprint here;
    prism::internal::add_arg_footprint(spilled, &here);
    EXPECT_GE(here.bytes, static_cast<int64_t>(big.size()));
  }
  unsetenv("PRISM_SPILL_DIR");
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
