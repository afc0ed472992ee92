// Error texts and edge cases of the API: infeasible requests name the task and count resources
// in words, exceptions not derived from std::exception keep their text, fractional GPU counts
// at init, wait() on nothing, and object store availability with results beyond capacity.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace {

using prism_test::kTimeout;

int error_text_gpu_fn() { return 1; }
int error_text_plain_fn() { return 2; }
int error_text_cpu_fn() { return 3; }
PRISM_REMOTE(error_text_gpu_fn, error_text_plain_fn, error_text_cpu_fn);

// A thrown type that is not a std::exception.
struct ErrorTextOddThrow {
  int code;
};

// Stops the global runtime at the end of a test even when it fails early. The tests here never
// start it successfully (tests of other files check API use before the first prism::init).
struct GlobalShutdownGuard {
  ~GlobalShutdownGuard() { prism::shutdown(); }
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The text between the first pair of single quotes of `what` (the task's name in an infeasible
// error), or "<no quotes>".
std::string quoted_name(const std::string& what) {
  const size_t open = what.find('\'');
  if (open == std::string::npos) return "<no quotes>";
  const size_t close = what.find('\'', open + 1);
  if (close == std::string::npos) return "<no quotes>";
  return what.substr(open + 1, close - open - 1);
}

// Runs `submit` and returns the InfeasibleError's what(); fails the test (and returns "") if it
// does not throw one.
template <typename F>
std::string infeasible_text(F&& submit) {
  try {
    submit();
    ADD_FAILURE() << "an infeasible request was accepted";
  } catch (const prism::InfeasibleError& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInfeasible);
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected InfeasibleError, got: " << e.what();
  }
  return "";
}

// ---- B1: infeasible requests name the task ----

TEST(ErrorTextTest, InfeasibleGpuRequestNamesTheRegisteredFunction) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  const std::string what =
      infeasible_text([&] { rt.task(error_text_gpu_fn).num_gpus(2).remote(); });
  EXPECT_TRUE(contains(what, "'error_text_gpu_fn'")) << what;
  EXPECT_FALSE(contains(what, "''")) << what;
  EXPECT_TRUE(contains(what, "2 GPUs")) << what;
  EXPECT_TRUE(contains(what, "1 GPU")) << what;
  EXPECT_FALSE(contains(what, "1 GPUs")) << what;
  // The runtime still works.
  EXPECT_EQ(prism::get(rt.task(error_text_gpu_fn).num_gpus(1).remote(), kTimeout), 1);
}

TEST(ErrorTextTest, InfeasibleRequestUsesTheNameOption) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  const std::string what = infeasible_text(
      [&] { rt.task(error_text_gpu_fn).num_gpus(2).name("error_text_custom").remote(); });
  EXPECT_EQ(quoted_name(what), "error_text_custom") << what;
  EXPECT_FALSE(contains(what, "''")) << what;
}

TEST(ErrorTextTest, InfeasibleLambdaHasANonEmptyName) {
  prism::Runtime rt({.num_cpus = 2, .num_gpus = 1});
  const std::string what = infeasible_text([&] { rt.task([] { return 1; }).num_gpus(2).remote(); });
  const std::string name = quoted_name(what);
  EXPECT_NE(name, "<no quotes>") << what;
  EXPECT_FALSE(name.empty()) << what;
  EXPECT_FALSE(contains(what, "''")) << what;
}

TEST(ErrorTextTest, PlainTaskOnANodeWithoutCpusNamesTheFunction) {
  prism::Runtime rt({.num_cpus = 0});
  const std::string what = infeasible_text([&] { rt.task(error_text_plain_fn).remote(); });
  EXPECT_TRUE(contains(what, "'error_text_plain_fn'")) << what;
  EXPECT_FALSE(contains(what, "''")) << what;
  const std::string lambda_what = infeasible_text([&] { rt.task([] { return 1; }).remote(); });
  EXPECT_FALSE(quoted_name(lambda_what).empty()) << lambda_what;
  EXPECT_NE(quoted_name(lambda_what), "<no quotes>") << lambda_what;
  // A task that asks for no CPU runs there.
  EXPECT_EQ(prism::get(rt.task(error_text_plain_fn).num_cpus(0).remote(), kTimeout), 2);
}

TEST(ErrorTextTest, CpuCountsAreWordedCorrectly) {
  {
    prism::Runtime rt({.num_cpus = 2});
    const std::string what =
        infeasible_text([&] { rt.task(error_text_cpu_fn).num_cpus(3).remote(); });
    EXPECT_TRUE(contains(what, "'error_text_cpu_fn'")) << what;
    EXPECT_TRUE(contains(what, "3 CPUs")) << what;
    EXPECT_TRUE(contains(what, "2 CPUs")) << what;
  }
  {
    prism::Runtime rt({.num_cpus = 1});
    const std::string what =
        infeasible_text([&] { rt.task(error_text_cpu_fn).num_cpus(2).remote(); });
    EXPECT_TRUE(contains(what, "'error_text_cpu_fn'")) << what;
    EXPECT_TRUE(contains(what, "2 CPUs")) << what;
    EXPECT_TRUE(contains(what, "1 CPU")) << what;
    EXPECT_FALSE(contains(what, "1 CPUs")) << what;
  }
}

// ---- B2: exceptions not derived from std::exception ----

// The TaskError of a task that throws what `thrower` throws.
template <typename F>
void expect_task_error(prism::Runtime& rt, F thrower, const std::string& expected_message,
                       const std::string& type_part) {
  auto r = rt.task(thrower).remote();
  try {
    prism::get(r, kTimeout);
    ADD_FAILURE() << "a throwing task returned a value";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kTaskFailed);
    if (!expected_message.empty()) {
      EXPECT_EQ(e.message(), expected_message);
    }
    EXPECT_FALSE(e.message().empty());
    EXPECT_TRUE(contains(e.type_name(), type_part)) << e.type_name();
    EXPECT_TRUE(contains(e.what(), e.message())) << e.what();
    EXPECT_TRUE(e.cause()) << "embedded mode keeps the original exception";
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected TaskError, got: " << e.what();
  }
}

TEST(ErrorTextTest, ThrownCStringKeepsItsText) {
  prism::Runtime rt({.num_cpus = 1});
  expect_task_error(rt, []() -> int { throw "boom text"; }, "boom text", "char");
  // The original is kept as it was thrown.
  auto r = rt.task([]() -> int { throw "boom text"; }).remote();
  try {
    prism::get(r, kTimeout);
    ADD_FAILURE() << "a throwing task returned a value";
  } catch (const prism::TaskError& e) {
    ASSERT_TRUE(e.cause());
    try {
      std::rethrow_exception(e.cause());
    } catch (const char* s) {
      EXPECT_STREQ(s, "boom text");
    } catch (...) {
      ADD_FAILURE() << "the cause is not the thrown const char*";
    }
  }
}

TEST(ErrorTextTest, ThrownIntKeepsItsValue) {
  prism::Runtime rt({.num_cpus = 1});
  expect_task_error(rt, []() -> int { throw 42; }, "42", "int");
}

TEST(ErrorTextTest, ThrownStdStringKeepsItsText) {
  prism::Runtime rt({.num_cpus = 1});
  expect_task_error(rt, []() -> int { throw std::string("s"); }, "s", "string");
}

TEST(ErrorTextTest, ThrownCustomStructIsNamed) {
  prism::Runtime rt({.num_cpus = 1});
  expect_task_error(rt, []() -> int { throw ErrorTextOddThrow{7}; }, "", "ErrorTextOddThrow");
}

// ---- B3: fractional GPU counts at init ----

TEST(ErrorTextTest, FractionalGpuCountAboveOneIsRejected) {
  try {
    prism::Runtime rt({.num_cpus = 1, .num_gpus = 1.5});
    ADD_FAILURE() << "a Runtime with num_gpus = 1.5 was started";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << e.what();
  }
  {
    GlobalShutdownGuard guard;
    try {
      prism::init({.num_cpus = 1, .num_gpus = 1.5});
      ADD_FAILURE() << "prism::init with num_gpus = 1.5 succeeded";
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << e.what();
    }
    EXPECT_FALSE(prism::is_initialized());
  }
  // As a task's request is.
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 1});
  try {
    rt.task(error_text_gpu_fn).num_gpus(1.5).remote();
    ADD_FAILURE() << "a task with num_gpus(1.5) was accepted";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << e.what();
  }
}

TEST(ErrorTextTest, FractionalGpuCountBelowOneIsAccepted) {
  // (A Runtime, not prism::init: a successful init here would change what later tests in this
  // process see before their own init, e.g. ErrorsNoRuntimeTest.)
  prism::Runtime rt({.num_cpus = 1, .num_gpus = 0.5});
  EXPECT_DOUBLE_EQ(rt.cluster_resources().at("GPU"), 0.5);
  EXPECT_EQ(prism::get(rt.task(error_text_gpu_fn).num_gpus(0.5).remote(), kTimeout), 1);
}

// ---- B4: wait() on nothing ----

TEST(ErrorTextTest, WaitOnAnEmptyVectorReturnsTwoEmptyVectors) {
  prism::Runtime rt({.num_cpus = 1});
  const std::vector<prism::ObjectRef<int>> none;
  {
    auto [ready, pending] = prism::wait(none);
    EXPECT_TRUE(ready.empty());
    EXPECT_TRUE(pending.empty());
  }
  {
    auto [ready, pending] = prism::wait(none, 0);
    EXPECT_TRUE(ready.empty());
    EXPECT_TRUE(pending.empty());
  }
  {
    auto [ready, pending] = prism::wait(none, 0, std::chrono::milliseconds(10));
    EXPECT_TRUE(ready.empty());
    EXPECT_TRUE(pending.empty());
  }
  {
    auto [ready, pending] = prism::wait(none, 1, kTimeout);
    EXPECT_TRUE(ready.empty());
    EXPECT_TRUE(pending.empty());
  }
  // A non-empty vector still checks num_returns.
  const std::vector<prism::ObjectRef<int>> one{rt.put(1)};
  try {
    prism::wait(one, 2, kTimeout);
    ADD_FAILURE() << "wait accepted num_returns larger than the refs";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << e.what();
  }
}

// ---- B5: results beyond the store's capacity ----

TEST(ErrorTextTest, ResultsBeyondStoreCapacityNeverMakeAvailabilityNegative) {
  constexpr int64_t kCapacity = int64_t{1} << 20;
  constexpr size_t kResultBytes = size_t{4} << 20;
  prism::Runtime rt({.num_cpus = 1, .object_store_bytes = kCapacity});
  ASSERT_DOUBLE_EQ(rt.available_resources().at("object_store_memory"),
                   static_cast<double>(kCapacity));
  auto big = rt.task([] { return std::vector<char>(kResultBytes, 'x'); }).remote();
  const std::vector<char> value = prism::get(big, kTimeout);
  ASSERT_EQ(value.size(), kResultBytes);
  EXPECT_EQ(value.back(), 'x');

  const double available = rt.available_resources().at("object_store_memory");
  EXPECT_GE(available, 0.0);
  // The result is accepted and counted: nothing is left while it lives.
  EXPECT_DOUBLE_EQ(available, 0.0);
  EXPECT_DOUBLE_EQ(rt.cluster_resources().at("object_store_memory"),
                   static_cast<double>(kCapacity));

  // Freeing it gives the space back.
  big = {};
  EXPECT_TRUE(prism_test::eventually([&] {
    return rt.available_resources().at("object_store_memory") == static_cast<double>(kCapacity);
  })) << rt.available_resources().at("object_store_memory");
}

}  // namespace
