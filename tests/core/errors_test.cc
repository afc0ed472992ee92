// Errors: what a task's exception becomes, wrong API use, registration conflicts, retries.

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "prism/prism.h"
#include "test_util.h"

namespace prism_errors_test {
// A user exception type with a namespace, to check the reported type name.
struct CustomError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace prism_errors_test

namespace {

using prism_test::kTimeout;

int errors_throws_runtime(int) { throw std::runtime_error("boom"); }
int errors_throws_custom(int) { throw prism_errors_test::CustomError("custom trouble"); }
int errors_throws_int(int) { throw 42; }
int errors_ok(int x) { return x; }
std::pair<int, int> errors_throws_pair(int) { throw std::out_of_range("no pair"); }
PRISM_REMOTE(errors_throws_runtime, errors_throws_custom, errors_throws_int, errors_ok,
             errors_throws_pair);

struct ErrorsActor {
  int ping() { return 1; }
};

int errors_dup_a(int x) { return x; }
int errors_dup_b(int x) { return -x; }

class ErrorsTest : public prism_test::CpuSweepTest {};

TEST_P(ErrorsTest, TaskErrorCarriesNameTypeMessageAndNode) {
  auto r = prism::task(errors_throws_runtime).remote(1);
  try {
    prism::get(r, kTimeout);
    FAIL() << "a throwing task returned a value";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kTaskFailed);
    EXPECT_EQ(e.function_name(), "errors_throws_runtime");
    EXPECT_EQ(e.type_name(), "std::runtime_error");
    EXPECT_EQ(e.message(), "boom");
    EXPECT_EQ(e.node_id(), prism::node_id());
    EXPECT_NE(std::string(e.what()).find("boom"), std::string::npos) << e.what();
    // Embedded mode keeps the original exception.
    ASSERT_TRUE(e.cause());
    EXPECT_THROW(std::rethrow_exception(e.cause()), std::runtime_error);
  }
}

TEST_P(ErrorsTest, TaskErrorIsAPrismError) {
  auto r = prism::task(errors_throws_runtime).remote(1);
  EXPECT_THROW(prism::get(r, kTimeout), prism::Error);
  // The error is stored: every get() rethrows it.
  EXPECT_THROW(prism::get(r, kTimeout), prism::TaskError);
  EXPECT_TRUE(r.is_ready());
}

TEST_P(ErrorsTest, UserExceptionTypeName) {
  try {
    prism::get(prism::task(errors_throws_custom).remote(1), kTimeout);
    FAIL() << "a throwing task returned a value";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.function_name(), "errors_throws_custom");
    EXPECT_EQ(e.type_name(), "prism_errors_test::CustomError");
    EXPECT_EQ(e.message(), "custom trouble");
    EXPECT_THROW(std::rethrow_exception(e.cause()), prism_errors_test::CustomError);
  }
}

TEST_P(ErrorsTest, NonStandardExceptionIsCaptured) {
  try {
    prism::get(prism::task(errors_throws_int).remote(1), kTimeout);
    FAIL() << "a throwing task returned a value";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.function_name(), "errors_throws_int");
    EXPECT_EQ(e.type_name(), "int");
  }
}

TEST_P(ErrorsTest, NameOptionOverridesTheFunctionName) {
  auto named = prism::task(errors_throws_runtime).name("x").remote(1);
  auto lambda = prism::task([]() -> int { throw std::runtime_error("from a lambda"); })
                    .name("errors_lambda")
                    .remote();
  try {
    prism::get(named, kTimeout);
    FAIL();
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.function_name(), "x");
  }
  try {
    prism::get(lambda, kTimeout);
    FAIL();
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.function_name(), "errors_lambda");
    EXPECT_EQ(e.message(), "from a lambda");
  }
}

TEST_P(ErrorsTest, EveryResultOfAFailedMultiReturnTaskFails) {
  auto [a, b] = prism::task(errors_throws_pair).num_returns<2>().remote(1);
  EXPECT_THROW(prism::get(a, kTimeout), prism::TaskError);
  EXPECT_THROW(prism::get(b, kTimeout), prism::TaskError);
}

TEST_P(ErrorsTest, EmptyRefIsAnError) {
  prism::ObjectRef<int> empty;
  EXPECT_FALSE(empty.valid());
  EXPECT_FALSE(empty.is_ready());
  EXPECT_TRUE(empty.id().is_nil());
  auto expect_invalid = [](auto&& call, const char* what) {
    try {
      call();
      ADD_FAILURE() << what << " accepted an empty ref";
    } catch (const prism::Error& e) {
      EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << what;
    }
  };
  expect_invalid([&] { prism::get(empty, kTimeout); }, "get");
  expect_invalid([&] { prism::get(empty); }, "get without timeout");
  expect_invalid([&] { prism::get_shared(empty); }, "get_shared");
  expect_invalid([&] { prism::get(std::vector<prism::ObjectRef<int>>{prism::put(1), empty}); },
                 "get of a vector");
  expect_invalid([&] { prism::wait(std::vector<prism::ObjectRef<int>>{empty}, 1, kTimeout); },
                 "wait");
  expect_invalid([&] { prism::cancel(empty); }, "cancel");
  expect_invalid([&] { prism::task(errors_ok).remote(empty); }, "a task argument");
  expect_invalid([&] {
    prism::task([](const std::vector<int>&) { return 0; })
        .remote(std::vector<prism::ObjectRef<int>>{prism::put(1), empty});
  }, "a vector task argument");
}

TEST_P(ErrorsTest, RetryExceptionsRunsTheTaskAgain) {
  auto attempts = std::make_shared<std::atomic<int>>(0);
  auto flaky = [attempts] {
    if (attempts->fetch_add(1) < 2) throw std::runtime_error("not yet");
    return 7;
  };
  auto r = prism::task(flaky).max_retries(2).retry_exceptions().remote();
  EXPECT_EQ(prism::get(r, kTimeout), 7);
  EXPECT_EQ(attempts->load(), 3);
}

TEST_P(ErrorsTest, RetriesRunOutThenTheTaskFails) {
  auto attempts = std::make_shared<std::atomic<int>>(0);
  auto flaky = [attempts]() -> int {
    attempts->fetch_add(1);
    throw std::runtime_error("always");
  };
  auto r = prism::task(flaky).max_retries(1).retry_exceptions().name("errors_flaky").remote();
  try {
    prism::get(r, kTimeout);
    FAIL() << "a task that always throws returned a value";
  } catch (const prism::TaskError& e) {
    EXPECT_EQ(e.function_name(), "errors_flaky");
    EXPECT_EQ(e.message(), "always");
  }
  EXPECT_EQ(attempts->load(), 2);
}

TEST_P(ErrorsTest, NegativeMaxRetriesRetriesWithoutLimit) {
  auto attempts = std::make_shared<std::atomic<int>>(0);
  auto flaky = [attempts] {
    if (attempts->fetch_add(1) < 20) throw std::runtime_error("not yet");
    return 3;
  };
  auto r = prism::task(flaky).max_retries(-1).retry_exceptions().remote();
  EXPECT_EQ(prism::get(r, kTimeout), 3);
  EXPECT_EQ(attempts->load(), 21);
}

TEST_P(ErrorsTest, ExceptionsAreNotRetriedWithoutRetryExceptions) {
  auto attempts = std::make_shared<std::atomic<int>>(0);
  auto flaky = [attempts] {
    if (attempts->fetch_add(1) < 1) throw std::runtime_error("once");
    return 1;
  };
  auto r = prism::task(flaky).max_retries(3).remote();
  EXPECT_THROW(prism::get(r, kTimeout), prism::TaskError);
  EXPECT_EQ(attempts->load(), 1);
}

TEST_P(ErrorsTest, DuplicateRegistrationNameIsAnError) {
  // Registering the same function under its name again is harmless (e.g. --gtest_repeat).
  EXPECT_NO_THROW(prism::register_function("errors_dup_name", &errors_dup_a));
  EXPECT_NO_THROW(prism::register_function("errors_dup_name", &errors_dup_a));
  try {
    prism::register_function("errors_dup_name", &errors_dup_b);
    FAIL() << "two functions registered under one name";
  } catch (const prism::Error& e) {
    EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument);
  }
  // A name taken by PRISM_REMOTE as well.
  EXPECT_THROW(prism::register_function("errors_throws_runtime", &errors_dup_b), prism::Error);
  // Registration names the function in errors.
  EXPECT_EQ(prism::get(prism::task(errors_dup_a).remote(3), kTimeout), 3);
}

TEST_P(ErrorsTest, ErrorCodesHaveNames) {
  EXPECT_STRNE(prism::error_code_name(prism::ErrorCode::kInvalidArgument), "");
  EXPECT_STRNE(prism::error_code_name(prism::ErrorCode::kInvalidArgument),
               prism::error_code_name(prism::ErrorCode::kInfeasible));
}

PRISM_TEST_SWEEP_CPUS(ErrorsTest);

// No runtime running: every call that needs one throws prism::Error.
TEST(ErrorsNoRuntimeTest, ApiUseBeforeInitIsAnError) {
  ASSERT_FALSE(prism::is_initialized());
  auto expect_error = [](auto&& call, const char* what) {
    try {
      call();
      ADD_FAILURE() << what << " worked without a runtime";
    } catch (const prism::Error& e) {
      // Never initialized in this process: wrong use. Initialized and shut down by an earlier
      // test in the same process (a whole-binary run): the runtime is gone.
      const std::string message = e.what();
      if (message.find("shut down") != std::string::npos) {
        EXPECT_EQ(e.code(), prism::ErrorCode::kUnavailable) << what << ": " << message;
      } else {
        EXPECT_EQ(e.code(), prism::ErrorCode::kInvalidArgument) << what << ": " << message;
        EXPECT_NE(message.find("not initialized"), std::string::npos) << what << ": " << message;
      }
    }
  };
  expect_error([] { prism::task(errors_ok).remote(1); }, "task().remote()");
  expect_error([] { prism::put(1); }, "put()");
  expect_error([] { prism::actor<ErrorsActor>().remote(); },
               "actor().remote()");
  expect_error([] { prism::get_actor<ErrorsActor>("errors_no_actor"); }, "get_actor()");
  expect_error([] { prism::global_runtime(); }, "global_runtime()");
  expect_error([] { prism::node_id(); }, "node_id()");
  expect_error([] { prism::cluster_resources(); }, "cluster_resources()");
  expect_error([] { prism::available_resources(); }, "available_resources()");
  // Stopping a runtime that is not running does nothing.
  EXPECT_NO_THROW(prism::shutdown());
  EXPECT_FALSE(prism::is_initialized());
  // Context queries outside tasks work without a runtime.
  EXPECT_FALSE(prism::in_task());
  EXPECT_TRUE(prism::current_task_id().is_nil());
  EXPECT_TRUE(prism::gpu_ids().empty());
}

}  // namespace
