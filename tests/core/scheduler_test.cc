// Scheduler, driven directly with a fake JobRunner (tasks are plain functions) and real threads:
// CPU limits under sweeps of CPU and thread counts, what a blocked task does (runs its child,
// lends its CPU, helps when no thread can be had), taking the CPU back without over-subscribing,
// threads that cannot be started, and the starvation bound; tasks with other requests run from
// their shape's queue under leases (resource_shape.h).

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/event.h"
#include "scheduler/scheduler.h"
#include "test_util.h"

namespace prism::internal {
namespace {

using prism_test::ConcurrencyTracker;
using prism_test::kTimeout;
using prism_test::Rendezvous;

constexpr int64_t kCpu = kUnitsPerResource;

class FnTask final : public TaskRecord {
 public:
  explicit FnTask(std::function<void()> body, ExtrasPtr extras = nullptr)
      : TaskRecord(nullptr, TaskId{}, nullptr, std::move(extras)), body_(std::move(body)) {}
  // A body that is given the task's own record.
  FnTask(std::function<void()>, std::function<void(FnTask*)> self_body)
      : TaskRecord(nullptr, TaskId{}, nullptr, nullptr), self_body_(std::move(self_body)) {}
  std::exception_ptr run() noexcept override {
    if (self_body_) {
      self_body_(this);
    } else {
      body_();
    }
    return nullptr;
  }
  void fail(const std::exception_ptr&) noexcept override { failed = true; }
  bool cancel_requested() const noexcept override { return false; }
  std::string function_name() const override { return "fn"; }
  bool failed = false;

 private:
  std::function<void()> body_;
  std::function<void(FnTask*)> self_body_;
};

class FakeRunner final : public JobRunner {
 public:
  void run_task(TaskRecord* t) noexcept override { finish(t); }
  void run_job(Job& job) noexcept override {
    if (!open_frames().empty()) {
      jobs_in_lease.fetch_add(1);
      // (A lease that moved to another GPU began again there before its next task.)
      if (!job.alloc.gpus.empty() && job.alloc.gpus.front().first != frame_gpu()) {
        jobs_off_frame_gpu.fetch_add(1);
      }
    }
    if (job.task != nullptr) finish(job.task);
  }
  void run_inline(TaskRecord* t, int64_t held_cpu) noexcept override {
    inline_runs.fetch_add(1);
    last_inline_cpu.store(held_cpu);
    finish(t);
  }
  void reject(TaskRecord* t, const std::string& why) noexcept override {
    {
      std::lock_guard<std::mutex> lock(mu);
      rejections.push_back(why);
    }
    t->fail(nullptr);
    t->release_run();
    rejected.set();
  }
  // Leases bracket their tasks: every begin is ended, with its frame, on its thread, and the
  // jobs a lease runs run inside its bracket.
  void lease_begin(const Allocation& alloc, LeaseFrame* frame) noexcept override {
    lease_begins.fetch_add(1);
    open_frames().push_back(frame);
    frame_gpu() = alloc.gpus.empty() ? -1 : alloc.gpus.front().first;
  }
  // The first GPU of the grant the innermost open lease began with.
  static int& frame_gpu() {
    thread_local int gpu = -1;
    return gpu;
  }
  void lease_end(LeaseFrame* frame) noexcept override {
    lease_ends.fetch_add(1);
    if (open_frames().empty() || open_frames().back() != frame) {
      unmatched_ends.fetch_add(1);
      return;
    }
    open_frames().pop_back();
  }
  static std::vector<LeaseFrame*>& open_frames() {
    thread_local std::vector<LeaseFrame*> frames;
    return frames;
  }
  std::atomic<int> lease_begins{0}, lease_ends{0}, unmatched_ends{0};
  std::atomic<int> jobs_in_lease{0}, jobs_off_frame_gpu{0};
  std::atomic<int> inline_runs{0};
  std::atomic<int64_t> last_inline_cpu{0};
  std::mutex mu;
  std::vector<std::string> rejections;
  Event rejected;

 private:
  static void finish(TaskRecord* t) {
    t->run();
    t->release_run();
  }
};

// Counts completions; done() is an event with a deadline.
class CountDown {
 public:
  explicit CountDown(int n) : left_(n) {}
  void arrive() {
    if (left_.fetch_sub(1) == 1) event_.set();
  }
  bool wait() { return event_.wait_until(Clock::now() + kTimeout); }

 private:
  std::atomic<int> left_;
  Event event_;
};

// A flag that a task blocked in Scheduler::block waits for; optionally a child it may claim.
class Flag {
 public:
  void set() {
    std::lock_guard<std::mutex> lock(mu_);
    set_ = true;
    if (waker_ != nullptr) waker_->wake();
  }
  bool is_set() {
    std::lock_guard<std::mutex> lock(mu_);
    return set_;
  }

 private:
  friend class FlagWait;
  std::mutex mu_;
  bool set_ = false;
  Waker* waker_ = nullptr;
};

class FlagWait final : public BlockedWait {
 public:
  explicit FlagWait(Flag& f, TaskRecord* claimable = nullptr) : f_(f), claimable_(claimable) {}
  bool ready() const noexcept override { return f_.is_set(); }
  TaskRecord* claim(int64_t) noexcept override {
    TaskRecord* t = std::exchange(claimable_, nullptr);
    return t != nullptr && t->try_claim() ? t : nullptr;
  }
  bool arm(Waker* w) noexcept override {
    std::lock_guard<std::mutex> lock(f_.mu_);
    if (f_.set_) return false;
    f_.waker_ = w;
    return true;
  }
  void disarm() noexcept override {
    std::lock_guard<std::mutex> lock(f_.mu_);
    f_.waker_ = nullptr;
  }

 private:
  Flag& f_;
  TaskRecord* claimable_;
};

NodeResources node(double cpus) {
  NodeResources r;
  r.cpu = static_cast<int64_t>(cpus * kCpu);
  r.memory = int64_t{1} << 30;
  return r;
}

void busy_for(std::chrono::microseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
  }
}

// CPU units held by running tasks, and the most ever held at once.
class CpuUse {
 public:
  void hold(int64_t units, std::chrono::microseconds how_long) {
    const int64_t now = in_use_.fetch_add(units) + units;
    int64_t seen = peak_.load();
    while (seen < now && !peak_.compare_exchange_weak(seen, now)) {
    }
    busy_for(how_long);
    in_use_.fetch_sub(units);
  }
  int64_t peak() const { return peak_.load(); }

 private:
  std::atomic<int64_t> in_use_{0}, peak_{0};
};

std::string sweep_name(int cpus, int threads) {
  return std::to_string(cpus) + " CPUs, " + std::to_string(threads) + " threads";
}

// ---- plain work ----

TEST(SchedulerTest, RunsEveryTaskNeverMoreAtOnceThanCpus) {
  for (int cpus : {1, 2, 4}) {
    for (int threads : {1, 2, 4, 8}) {
      SCOPED_TRACE(sweep_name(cpus, threads));
      FakeRunner runner;
      constexpr int kTasks = 400;
      CountDown done(kTasks);
      ConcurrencyTracker running;
      Scheduler sched(&runner, node(cpus), threads);  // last: destroyed (joined) first
      for (int i = 0; i < kTasks; ++i) {
        sched.enqueue_ready(new FnTask([&] {
          {
            ConcurrencyTracker::Scope s(running);
            busy_for(std::chrono::microseconds(20));
          }
          done.arrive();
        }));
      }
      ASSERT_TRUE(done.wait());
      EXPECT_LE(running.max(), cpus);
      EXPECT_LE(sched.thread_count(), threads);
    }
  }
}

TEST(SchedulerTest, JobsWithResourcesShareTheCpusWithReadyTasks) {
  for (int threads : {1, 2, 8}) {
    SCOPED_TRACE(sweep_name(2, threads));
    FakeRunner runner;
    CpuUse use;
    auto hold = [&](int64_t units) { use.hold(units, std::chrono::microseconds(30)); };
    constexpr int kEach = 100;
    CountDown done(3 * kEach);
    const ResourceRequest two = make_request(2, 0, 0, 0, {});
    const ResourceRequest half = make_request(0.5, 0, 0, 0, {});
    Scheduler sched(&runner, node(2), threads);  // last: destroyed (joined) first
    for (int i = 0; i < kEach; ++i) {
      sched.enqueue_ready(new FnTask([&] {
        hold(kCpu);
        done.arrive();
      }));
      Job big;
      big.task = new FnTask([&] {
        hold(2 * kCpu);
        done.arrive();
      });
      sched.enqueue_with_resources(std::move(big), two);
      Job small;
      small.task = new FnTask([&] {
        hold(kCpu / 2);
        done.arrive();
      });
      sched.enqueue_with_resources(std::move(small), half);
    }
    ASSERT_TRUE(done.wait());
    EXPECT_LE(use.peak(), 2 * kCpu);
  }
}

// ---- blocking ----

TEST(SchedulerTest, BlockedTaskRunsItsQueuedChildItself) {
  for (int threads : {1, 2, 4}) {
    SCOPED_TRACE(sweep_name(1, threads));
    FakeRunner runner;
    Flag child_done;
    std::thread::id parent_thread, child_thread;
    Event parent_done;
    bool ready_after = false;
    Scheduler sched(&runner, node(1), threads);  // last: destroyed (joined) first
    sched.enqueue_ready(new FnTask([&] {
      parent_thread = std::this_thread::get_id();
      auto* child = new FnTask([&] {
        child_thread = std::this_thread::get_id();
        child_done.set();
      });
      sched.enqueue_ready(child);
      FlagWait wait(child_done, child);
      ready_after = sched.block(wait, Clock::now() + kTimeout);
      parent_done.set();
    }));
    ASSERT_TRUE(parent_done.wait_until(Clock::now() + kTimeout));
    EXPECT_TRUE(ready_after);
    EXPECT_EQ(child_thread, parent_thread);
    EXPECT_EQ(runner.inline_runs.load(), 1);
    EXPECT_EQ(runner.last_inline_cpu.load(), kCpu);  // a slot holds one CPU
  }
}

// ---- hand-off: a task made ready by the results of the task a slot runs runs next there ----

// A task that knows its own record (to name itself as the finished task in hand_off).
FnTask* self_aware(std::function<void(FnTask*)> body) {
  return new FnTask(std::function<void()>{}, std::move(body));
}

// A hand-off is refused after 10 ms without one on the thread (Scheduler::kHandOffLongRun): on
// a loaded machine a thread may be descheduled that long. The tests that need one try again.
constexpr int kHandOffAttempts = 5;

TEST(SchedulerTest, AHandedOffTaskRunsNextOnTheSameThread) {
  for (int threads : {1, 2, 4}) {
    SCOPED_TRACE(sweep_name(2, threads));
    FakeRunner runner;
    Scheduler sched(&runner, node(2), threads);  // last: destroyed (joined) first
    // From a thread that is no worker: refused.
    auto* stray = new FnTask([] {});
    EXPECT_FALSE(sched.hand_off(stray, stray));
    delete stray;
    bool handed = false;
    for (int attempt = 0; attempt < kHandOffAttempts && !handed; ++attempt) {
      struct Attempt {  // (shared with the tasks: a failed wait leaves nothing dangling)
        std::thread::id first_thread, next_thread;
        bool handed = false, other_refused = true;
        Event next_done;
      };
      auto at = std::make_shared<Attempt>();
      sched.enqueue_ready(self_aware([at, &sched](FnTask* self) {
        at->first_thread = std::this_thread::get_id();
        // Naming another task than the one this slot runs: refused.
        auto* other = new FnTask([] {});
        at->other_refused = !sched.hand_off(other, other);
        delete other;
        auto* next = new FnTask([at] {
          at->next_thread = std::this_thread::get_id();
          at->next_done.set();
        });
        at->handed = sched.hand_off(next, self);
        if (!at->handed) sched.enqueue_ready(next);
      }));
      ASSERT_TRUE(at->next_done.wait_until(Clock::now() + kTimeout));
      EXPECT_TRUE(at->other_refused);
      handed = at->handed;
      if (handed) {
        EXPECT_EQ(at->next_thread, at->first_thread);
      }
    }
    EXPECT_TRUE(handed) << "refused " << kHandOffAttempts << " times";
  }
}

TEST(SchedulerTest, ALongTaskHandsNothingOff) {
  // After a task that ran longer than kHandOffLongRun, its dependents keep the queue's order.
  FakeRunner runner;
  bool handed = true;
  Event next_done;
  Scheduler sched(&runner, node(1), 1);  // last: destroyed (joined) first
  sched.enqueue_ready(self_aware([&](FnTask* self) {
    // (Measured on a clock of a few ms resolution.)
    busy_for(Scheduler::kHandOffLongRun + std::chrono::milliseconds(20));
    auto* next = new FnTask([&] { next_done.set(); });
    handed = sched.hand_off(next, self);
    if (!handed) sched.enqueue_ready(next);
  }));
  ASSERT_TRUE(next_done.wait_until(Clock::now() + kTimeout));
  EXPECT_FALSE(handed);
}

TEST(SchedulerTest, HandOffsInARowLeaveTheQueueItsTurn) {
  // One CPU, one thread: a chain of tasks, each handing off the next, and an independent task
  // queued behind the chain's head. The independent one runs after at most kMaxHandOffs links.
  constexpr int kLinks = 4 * Scheduler::kMaxHandOffs;
  FakeRunner runner;
  std::atomic<int> links_run{0};
  std::atomic<int> links_before_other{-1};
  CountDown all(kLinks + 1);
  Event head_running, go;
  std::function<FnTask*(int)> link;
  Scheduler sched(&runner, node(1), 1);  // last: destroyed (joined) first
  // (A link that is not handed off, after kMaxHandOffs in a row, is queued.)
  link = [&](int i) {
    return self_aware([&, i](FnTask* self) {
      links_run.fetch_add(1);
      if (i + 1 < kLinks) {
        FnTask* next = link(i + 1);
        if (!sched.hand_off(next, self)) sched.enqueue_ready(next);
      }
      all.arrive();
    });
  };
  sched.enqueue_ready(new FnTask([&] {
    head_running.set();
    (void)go.wait_until(Clock::now() + kTimeout);
  }));
  ASSERT_TRUE(head_running.wait_until(Clock::now() + kTimeout));
  // While the only thread is busy: the chain's head, then the independent task, are queued.
  sched.enqueue_ready(link(0));
  sched.enqueue_ready(new FnTask([&] {
    links_before_other.store(links_run.load());
    all.arrive();
  }));
  go.set();
  ASSERT_TRUE(all.wait());
  EXPECT_EQ(links_run.load(), kLinks);
  EXPECT_GE(links_before_other.load(), 1);
  EXPECT_LE(links_before_other.load(), Scheduler::kMaxHandOffs + 1);
}

TEST(SchedulerTest, ATaskThatBlocksAfterAHandOffLeavesTheHandedTaskToOthers) {
  // The task hands off a task and then waits for it (without claiming it): blocking must queue
  // the handed task, or it would wait on this thread behind the very task that waits for it.
  for (int threads : {1, 2, 4}) {
    SCOPED_TRACE(sweep_name(1, threads));
    FakeRunner runner;
    Scheduler sched(&runner, node(1), threads);  // last: destroyed (joined) first
    bool handed = false;
    for (int attempt = 0; attempt < kHandOffAttempts && !handed; ++attempt) {
      struct Attempt {  // (shared with the tasks: a failed wait leaves nothing dangling)
        Flag handed_ran;
        Event first_done;
        bool handed = false, ready_after = false;
      };
      auto at = std::make_shared<Attempt>();
      sched.enqueue_ready(self_aware([at, &sched](FnTask* self) {
        auto* next = new FnTask([at] { at->handed_ran.set(); });
        at->handed = sched.hand_off(next, self);
        if (!at->handed) sched.enqueue_ready(next);
        FlagWait wait(at->handed_ran);
        at->ready_after = sched.block(wait, Clock::now() + kTimeout);
        at->first_done.set();
      }));
      ASSERT_TRUE(at->first_done.wait_until(Clock::now() + kTimeout));
      EXPECT_TRUE(at->ready_after);
      handed = at->handed;
    }
    EXPECT_TRUE(handed) << "refused " << kHandOffAttempts << " times";
  }
}

TEST(SchedulerTest, WithNoThreadToSpareABlockedTaskHelpsWithOtherWork) {
  // One thread in all: the parent's wait can only end if the parent runs the other task itself.
  for (int cpus : {1, 2}) {
    SCOPED_TRACE(sweep_name(cpus, 1));
    FakeRunner runner;
    Flag flag;
    Event parent_done;
    bool ready_after = false;
    Scheduler sched(&runner, node(cpus), /*max_threads=*/1);  // last: destroyed (joined) first
    sched.enqueue_ready(new FnTask([&] {
      sched.enqueue_ready(new FnTask([&] { flag.set(); }));  // not claimable: not awaited
      FlagWait wait(flag);
      ready_after = sched.block(wait, Clock::now() + kTimeout);
      parent_done.set();
    }));
    ASSERT_TRUE(parent_done.wait_until(Clock::now() + kTimeout));
    EXPECT_TRUE(ready_after);
    EXPECT_EQ(sched.thread_count(), 1);
  }
}

TEST(SchedulerTest, NestedBlockingToAnyDepthWithOneThread) {
  // A chain of 200 tasks, each blocked on the next, which is not claimable: every level helps.
  FakeRunner runner;
  constexpr int kDepth = 200;
  std::vector<std::unique_ptr<Flag>> flags;
  for (int i = 0; i <= kDepth; ++i) flags.push_back(std::make_unique<Flag>());
  std::function<void(int)> level;
  Event done;
  Scheduler sched(&runner, node(1), /*max_threads=*/1);  // last: destroyed (joined) first
  level = [&](int d) {
    if (d == kDepth) {
      flags[d]->set();
      return;
    }
    sched.enqueue_ready(new FnTask([&, d] { level(d + 1); }));
    FlagWait wait(*flags[d + 1]);
    if (sched.block(wait, Clock::now() + kTimeout)) flags[d]->set();
  };
  sched.enqueue_ready(new FnTask([&] {
    level(0);
    done.set();
  }));
  ASSERT_TRUE(done.wait_until(Clock::now() + kTimeout));
  EXPECT_TRUE(flags[0]->is_set());
}

TEST(SchedulerTest, ResumingTaskWaitsForACpuInsteadOfOverSubscribing) {
  for (int threads : {2, 4, 16}) {
    SCOPED_TRACE(sweep_name(1, threads));
    FakeRunner runner;
    ConcurrencyTracker cpu_holders;  // tasks holding the one CPU, the parent included
    Flag flag;
    Event parent_blocked_once, parent_done;
    constexpr int kBusy = 50;
    CountDown busy_done(kBusy);
    Scheduler sched(&runner, node(1), threads);  // last: destroyed (joined) first
    sched.enqueue_ready(new FnTask([&] {
      {
        ConcurrencyTracker::Scope s(cpu_holders);
      }
      FlagWait wait(flag);
      parent_blocked_once.set();
      sched.block(wait, Clock::now() + kTimeout);
      {
        ConcurrencyTracker::Scope s(cpu_holders);  // holds the CPU again
        busy_for(std::chrono::microseconds(200));
      }
      parent_done.set();
    }));
    ASSERT_TRUE(parent_blocked_once.wait_until(Clock::now() + kTimeout));
    for (int i = 0; i < kBusy; ++i) {
      sched.enqueue_ready(new FnTask([&, i] {
        {
          ConcurrencyTracker::Scope s(cpu_holders);
          if (i == 0) flag.set();  // the parent may go on, but must wait for the CPU
          busy_for(std::chrono::microseconds(100));
        }
        busy_done.arrive();
      }));
    }
    ASSERT_TRUE(parent_done.wait_until(Clock::now() + kTimeout));
    ASSERT_TRUE(busy_done.wait());
    EXPECT_EQ(cpu_holders.max(), 1);
  }
}

// ---- threads that cannot be started ----

class FailingStarter final : public ThreadStarter {
 public:
  explicit FailingStarter(int allowed) : allowed_(allowed) {}
  std::thread start(std::function<void()> body) override {
    if (started_.fetch_add(1) >= allowed_) {
      throw std::system_error(EAGAIN, std::generic_category(), "thread creation refused");
    }
    return std::thread(std::move(body));
  }

 private:
  const int allowed_;
  std::atomic<int> started_{0};
};

TEST(SchedulerTest, NoThreadAtAllRejectsTheWorkWithAClearError) {
  FakeRunner runner;
  FailingStarter never(0);
  auto* t = new FnTask([] {});
  Scheduler sched(&runner, node(2), /*max_threads=*/8, &never);  // last: destroyed (joined) first
  sched.enqueue_ready(t);
  ASSERT_TRUE(runner.rejected.wait_until(Clock::now() + kTimeout));
  std::lock_guard<std::mutex> lock(runner.mu);
  ASSERT_EQ(runner.rejections.size(), 1u);
  EXPECT_NE(runner.rejections[0].find("no worker thread could be started"), std::string::npos)
      << runner.rejections[0];
  EXPECT_NE(runner.rejections[0].find("thread creation refused"), std::string::npos);
}

TEST(SchedulerTest, RefusedThreadsMeanBlockedTasksHelpInstead) {
  for (int allowed : {1, 2}) {
    SCOPED_TRACE(std::to_string(allowed) + " threads allowed by the system");
    FakeRunner runner;
    FailingStarter starter(allowed);
    constexpr int kParents = 4;
    std::vector<std::unique_ptr<Flag>> flags;
    for (int i = 0; i < kParents; ++i) flags.push_back(std::make_unique<Flag>());
    CountDown done(kParents);
    Scheduler sched(&runner, node(4), /*max_threads=*/64, &starter);  // last: destroyed (joined) first
    for (int i = 0; i < kParents; ++i) {
      sched.enqueue_ready(new FnTask([&, i] {
        sched.enqueue_ready(new FnTask([&, i] { flags[i]->set(); }));
        FlagWait wait(*flags[i]);
        if (sched.block(wait, Clock::now() + kTimeout)) done.arrive();
      }));
    }
    ASSERT_TRUE(done.wait());
    EXPECT_LE(sched.thread_count(), allowed);
  }
}

// Starts threads that wait at a gate before they run: a thread woken for the ready queue that has
// not yet reached it (as one waiting for a core does).
class GatedStarter final : public ThreadStarter {
 public:
  std::thread start(std::function<void()> body) override {
    started_.fetch_add(1);
    return std::thread([this, body = std::move(body)] {
      (void)gate_.wait_until(Clock::now() + kTimeout);  // (opened at the latest by the dtor)
      body();
    });
  }
  void open() { gate_.set(); }
  int started() const { return started_.load(); }
  ~GatedStarter() { open(); }

 private:
  Event gate_;
  std::atomic<int> started_{0};
};

// Pushes while the threads already woken cover every free slot wake no one more (they skip the
// lock: waking_for_ready_), and lose nothing: each woken thread looks at the queue once it gets there.
TEST(SchedulerTest, PushesWhileWokenThreadsAreOnTheirWayWakeNoMoreAndLoseNothing) {
  for (int cpus : {1, 2}) {
    SCOPED_TRACE(std::to_string(cpus) + " CPUs");
    FakeRunner runner;
    GatedStarter starter;  // (outlives the scheduler's threads, which wait at its gate)
    constexpr int kTasks = 500;
    CountDown done(kTasks);
    Scheduler sched(&runner, node(cpus), /*max_threads=*/8, &starter);  // destroyed first
    struct Opener {  // (opens the gate before the scheduler joins, even after a failed ASSERT)
      GatedStarter& s;
      ~Opener() { s.open(); }
    } opener{starter};
    for (int i = 0; i < kTasks; ++i) sched.enqueue_ready(new FnTask([&] { done.arrive(); }));
    // One thread per free slot was started for the burst, none more, and none has run a task.
    EXPECT_EQ(starter.started(), cpus);
    starter.open();
    ASSERT_TRUE(done.wait());
    EXPECT_EQ(sched.thread_count(), cpus);
    // The count of threads on their way came back down: once the threads have parked (a gap
    // past their spin), a single push wakes one again. (Had they not parked yet, the push finds
    // one awake: the test passes either way then, and never fails falsely.)
    for (int round = 0; round < 50; ++round) {
      busy_for(std::chrono::microseconds(200));
      auto one = std::make_shared<CountDown>(1);  // (shared: a failed wait leaves nothing)
      sched.enqueue_ready(new FnTask([one] { one->arrive(); }));
      ASSERT_TRUE(one->wait()) << "round " << round;
    }
  }
}

// The same, with real timing: bursts of one to three tasks, each after the threads had time to
// give their slots back (or not), so that pushes meet threads in every state: running, spinning,
// parked, woken and not yet at the queue. Every burst must run in full.
TEST(SchedulerTest, BurstsAfterIdleGapsAllRun) {
  FakeRunner runner;
  Scheduler sched(&runner, node(2), /*max_threads=*/4);  // last: destroyed (joined) first
  for (int round = 0; round < 3000; ++round) {
    const int burst = 1 + round % 3;
    auto done = std::make_shared<CountDown>(burst);  // (shared: a failed wait leaves nothing)
    for (int i = 0; i < burst; ++i) sched.enqueue_ready(new FnTask([done] { done->arrive(); }));
    ASSERT_TRUE(done->wait()) << "round " << round;
    if (round % 7 == 0) busy_for(std::chrono::microseconds(round % 50));  // (around the spin)
  }
}

// ---- starvation ----

constexpr int kStreamCap = 200000;  // a stream stops here if the job never runs

// `chains` chains of tasks, each task queueing the next one (through `enqueue`) until the big job
// ran (or kStreamCap tasks did): the queue never runs dry while the big job waits. Declare it
// before the scheduler (declared last: destroyed, i.e. joined, first).
struct Stream {
  explicit Stream(int chains) : over(chains), chains_(chains) {}
  std::function<void(FnTask*)> enqueue;
  std::atomic<bool> big_ran{false};
  std::atomic<int> count{0};
  Event big_done;
  CountDown over;  // every chain ended

  void start() {
    for (int i = 0; i < chains_; ++i) enqueue(new FnTask([this] { step(); }));
  }
  // Queues the big job, asking for `request`; it must run before the streams reach their cap.
  void check_big_job_runs(Scheduler& sched, const ResourceRequest& request) {
    Job big;
    big.task = new FnTask([this] {
      big_ran.store(true);
      big_done.set();
    });
    sched.enqueue_with_resources(std::move(big), request);
    ASSERT_TRUE(big_done.wait_until(Clock::now() + kTimeout))
        << "the big job did not run during " << count.load() << " stream tasks";
    EXPECT_LT(count.load(), kStreamCap);
    ASSERT_TRUE(over.wait());
  }

 private:
  void step() {
    busy_for(std::chrono::microseconds(5));
    if (big_ran.load() || count.fetch_add(1) >= kStreamCap) {
      over.arrive();
      return;
    }
    enqueue(new FnTask([this] { step(); }));
  }
  int chains_;
};

TEST(SchedulerTest, AManyCpuJobIsNotStarvedByAStreamOfOneCpuTasks) {
  Stream stream(4);
  FakeRunner runner;
  Scheduler sched(&runner, node(2), /*max_threads=*/8, nullptr, /*starvation_bound=*/8);
  stream.enqueue = [&sched](FnTask* t) { sched.enqueue_ready(t); };
  stream.start();
  stream.check_big_job_runs(sched, make_request(2, 0, 0, 0, {}));
}

// ---- tasks with other requests: shapes and leases ----

TEST(SchedulerShapeTest, InterningGivesOneShapePerRequestAndItsFeasibility) {
  FakeRunner runner;
  Scheduler sched(&runner, node(2), 2);
  ResourceShape* half = sched.shape_for(make_request(0.5, 0, 0, 0, {}));
  ASSERT_NE(half, nullptr);
  EXPECT_TRUE(half->infeasible.empty());
  EXPECT_EQ(sched.shape_for(make_request(0.5, 0, 0, 0, {})), half);
  // Another thread (its own cache) finds the same shape.
  ResourceShape* seen = nullptr;
  std::thread([&] { seen = sched.shape_for(make_request(0.5, 0, 0, 0, {})); }).join();
  EXPECT_EQ(seen, half);
  ResourceShape* three = sched.shape_for(make_request(3, 0, 0, 0, {}));
  ASSERT_NE(three, nullptr);
  EXPECT_NE(three, half);
  EXPECT_NE(three->infeasible.find("asks for 3 CPUs but the node has 2 CPUs"), std::string::npos)
      << three->infeasible;
  // A bounded number of shapes per node; the rest take the per-task path (null).
  size_t interned = 2;
  for (int64_t bytes = 1; interned < Scheduler::kMaxShapes; ++bytes, ++interned) {
    ASSERT_NE(sched.shape_for(make_request(0.5, 0, bytes, 0, {})), nullptr);
  }
  EXPECT_EQ(sched.shape_for(make_request(0.5, 0, 1 << 20, 0, {})), nullptr);
  EXPECT_EQ(sched.shape_for(make_request(0.5, 0, 0, 0, {})), half);  // still there
}

TEST(SchedulerShapeTest, ShapedTasksShareTheCpusWithReadyTasksAndJobs) {
  for (int cpus : {1, 2}) {
    for (int threads : {1, 2, 8}) {
      SCOPED_TRACE(sweep_name(cpus, threads));
      FakeRunner runner;
      CpuUse use;
      auto hold = [&](int64_t units) { use.hold(units, std::chrono::microseconds(20)); };
      constexpr int kEach = 150;
      CountDown done(4 * kEach);
      Scheduler sched(&runner, node(cpus), threads);  // last: destroyed (joined) first
      ResourceShape* quarter = sched.shape_for(make_request(0.25, 0, 0, 0, {}));
      ResourceShape* whole = sched.shape_for(make_request(cpus, 0, 0, 0, {}));
      for (int i = 0; i < kEach; ++i) {
        sched.enqueue_ready(new FnTask([&] {
          hold(kCpu);
          done.arrive();
        }));
        sched.enqueue_shaped(new FnTask([&] {
          hold(kCpu / 4);
          done.arrive();
        }), quarter);
        sched.enqueue_shaped(new FnTask([&] {
          hold(cpus * kCpu);
          done.arrive();
        }), whole);
        Job half;
        half.task = new FnTask([&] {
          hold(kCpu / 2);
          done.arrive();
        });
        sched.enqueue_with_resources(std::move(half), make_request(0.5, 0, 0, 0, {}));
      }
      ASSERT_TRUE(done.wait());
      EXPECT_LE(use.peak(), cpus * kCpu);
      EXPECT_LE(sched.thread_count(), threads);
    }
  }
}

TEST(SchedulerShapeTest, AsManyFractionalTasksRunAtOnceAsFit) {
  // 0.25 CPU each on 2 CPUs: eight at once, each waiting for all the others.
  FakeRunner runner;
  Rendezvous all(8);
  CountDown done(8);
  std::atomic<int> met{0};
  Scheduler sched(&runner, node(2), 16);  // last: destroyed (joined) first
  ResourceShape* quarter = sched.shape_for(make_request(0.25, 0, 0, 0, {}));
  for (int i = 0; i < 8; ++i) {
    sched.enqueue_shaped(new FnTask([&] {
      if (all.arrive_and_wait()) met.fetch_add(1);
      done.arrive();
    }), quarter);
  }
  ASSERT_TRUE(done.wait());
  EXPECT_EQ(met.load(), 8) << "fewer than 8 quarter-CPU tasks ran at once on 2 CPUs";
}

// Enqueues a job holding `cpus` CPUs until `release` is set, spinning (Scheduler::block would
// lend them); returns once it holds them (false at the deadline).
bool hold_the_node(Scheduler& sched, double cpus, Flag& release) {
  auto holding = std::make_shared<Event>();  // (the job's to set: it may outlive this call)
  Job hog;
  hog.task = new FnTask([holding, &release] {
    holding->set();
    FlagWait wait(release);
    while (!wait.ready()) std::this_thread::yield();
  });
  sched.enqueue_with_resources(std::move(hog), make_request(cpus, 0, 0, 0, {}));
  return holding->wait_until(Clock::now() + kTimeout);
}

TEST(SchedulerShapeTest, ALeaseRunsManyTasksUnderOneGrant) {
  // The tasks queue while a 2-CPU job holds the node; once it ends, at most 8 leases (0.25 CPU
  // on 2 CPUs) run them, each until the queue is dry.
  FakeRunner runner;
  constexpr int kTasks = 20000;
  CountDown done(kTasks);
  Flag release;
  Scheduler sched(&runner, node(2), 16);  // last: destroyed (joined) first
  ResourceShape* quarter = sched.shape_for(make_request(0.25, 0, 0, 0, {}));
  ASSERT_TRUE(hold_the_node(sched, 2, release));
  for (int i = 0; i < kTasks; ++i) {
    sched.enqueue_shaped(new FnTask([&] { done.arrive(); }), quarter);
  }
  const uint64_t before = sched.leases_started();
  release.set();
  ASSERT_TRUE(done.wait());
  EXPECT_LE(before, 1u);  // nothing ran while the node was held
  EXPECT_LE(sched.leases_started(), 64u) << "one lease per few tasks: the lock per task is back";
}

TEST(SchedulerShapeTest, ALeaseBracketsItsTasksWithTheRunnersLeaseHooks) {
  // What a lease's tasks share is set up once around them (JobRunner::lease_begin/lease_end:
  // the runtime enters the grant's GPUs there): each begin ended on its thread, every task the
  // leases ran inside a bracket.
  FakeRunner runner;
  constexpr int kTasks = 2000;
  {
    CountDown done(kTasks);
    Flag release;
    Scheduler sched(&runner, node(2), 16);
    ResourceShape* quarter = sched.shape_for(make_request(0.25, 0, 0, 0, {}));
    ASSERT_TRUE(hold_the_node(sched, 2, release));
    for (int i = 0; i < kTasks; ++i) {
      sched.enqueue_shaped(new FnTask([&] { done.arrive(); }), quarter);
    }
    release.set();
    ASSERT_TRUE(done.wait());
  }  // (the scheduler's threads joined: every lease has ended)
  EXPECT_GE(runner.lease_begins.load(), 1);
  EXPECT_EQ(runner.lease_ends.load(), runner.lease_begins.load());
  EXPECT_EQ(runner.unmatched_ends.load(), 0);
  EXPECT_EQ(runner.jobs_in_lease.load(), kTasks) << "a shaped task ran outside its lease's bracket";
}

// A GPU task that prefers a device (as one whose tensor is there does).
class GpuPreferringTask final : public TaskRecord {
 public:
  GpuPreferringTask(int gpu, CountDown* done)
      : TaskRecord(nullptr, TaskId{}, nullptr, nullptr), gpu_(gpu), done_(done) {}
  std::exception_ptr run() noexcept override {
    done_->arrive();
    return nullptr;
  }
  void fail(const std::exception_ptr&) noexcept override {}
  bool cancel_requested() const noexcept override { return false; }
  std::string function_name() const override { return "prefers"; }
  int preferred_gpu() const noexcept override { return gpu_; }

 private:
  int gpu_;
  CountDown* done_;
};

TEST(SchedulerShapeTest, ALeaseThatMovesToAnotherGpuBracketsItsNextTasksThere) {
  // One CPU: one lease of the shape at a time, so every move finds room. Its tasks prefer the
  // two GPUs in turns of three: the lease moves, and begins again on the new device before the
  // next task runs there.
  FakeRunner runner;
  constexpr int kTasks = 300;
  {
    CountDown done(kTasks);
    Flag release;
    NodeResources two_gpus = node(1);
    two_gpus.num_gpus = 2;
    Scheduler sched(&runner, two_gpus, 16);
    ResourceShape* half_gpu = sched.shape_for(make_request(1, 0.5, 0, 0, {}));
    ASSERT_TRUE(hold_the_node(sched, 1, release));
    for (int i = 0; i < kTasks; ++i) {
      sched.enqueue_shaped(new GpuPreferringTask((i / 3) % 2, &done), half_gpu);
    }
    release.set();
    ASSERT_TRUE(done.wait());
  }
  EXPECT_EQ(runner.jobs_in_lease.load(), kTasks);
  EXPECT_EQ(runner.jobs_off_frame_gpu.load(), 0)
      << "a task ran on a device its lease's bracket did not begin on";
  EXPECT_EQ(runner.lease_ends.load(), runner.lease_begins.load());
  EXPECT_EQ(runner.unmatched_ends.load(), 0);
  // Moves: about one per three tasks, each ended and begun again.
  EXPECT_GE(runner.lease_begins.load(), kTasks / 3 / 2) << "the lease never moved";
}

TEST(SchedulerShapeTest, ALeaseMakesWayForAnOlderRequestOfAnotherShape) {
  // Two streams of half-CPU tasks that never let their queue run dry, and a 1-CPU job: the
  // leases give their CPU back to it (and the starvation bound reserves it).
  Stream stream(2);
  FakeRunner runner;
  Scheduler sched(&runner, node(1), 8, nullptr, /*starvation_bound=*/8);
  ResourceShape* half = sched.shape_for(make_request(0.5, 0, 0, 0, {}));
  stream.enqueue = [&sched, half](FnTask* t) { sched.enqueue_shaped(t, half); };
  stream.start();
  stream.check_big_job_runs(sched, make_request(1, 0, 0, 0, {}));
}

TEST(SchedulerShapeTest, AGpuLeaseMakesWayForAWholeGpuRequest) {
  Stream stream(1);
  FakeRunner runner;
  NodeResources one_gpu = node(2);
  one_gpu.num_gpus = 1;
  one_gpu.gpu_memory = int64_t{1} << 30;
  Scheduler sched(&runner, one_gpu, 8, nullptr, /*starvation_bound=*/8);
  ResourceShape* half_gpu = sched.shape_for(make_request(0, 0.5, 0, 0, {}));
  stream.enqueue = [&sched, half_gpu](FnTask* t) { sched.enqueue_shaped(t, half_gpu); };
  stream.start();
  stream.check_big_job_runs(sched, make_request(0, 1, 0, 0, {}));
}

TEST(SchedulerShapeTest, ABlockedHolderLendsItsCpuToTheTaskItWaitsFor) {
  // Half a CPU in all: one lease of the half-CPU shape at a time. The holder's task waits for
  // a task queued behind it in the same shape, which it cannot claim: the holder stops counting
  // as running its shape, a new lease takes the lent CPU and runs the other task.
  for (int threads : {1, 2, 4}) {
    SCOPED_TRACE(sweep_name(0, threads));
    FakeRunner runner;
    Flag second_ran;
    Event first_done;
    bool ready_after = false;
    Scheduler sched(&runner, node(0.5), threads);  // last: destroyed (joined) first
    ResourceShape* half = sched.shape_for(make_request(0.5, 0, 0, 0, {}));
    sched.enqueue_shaped(new FnTask([&] {
      sched.enqueue_shaped(new FnTask([&] { second_ran.set(); }), half);
      FlagWait wait(second_ran);  // nothing to claim
      ready_after = sched.block(wait, Clock::now() + kTimeout);
      first_done.set();
    }), half);
    ASSERT_TRUE(first_done.wait_until(Clock::now() + kTimeout));
    EXPECT_TRUE(ready_after);
  }
}

// An entry the test completes itself, and a dependent that runs a function when it does.
class TestEntry final : public ObjectEntry {
 public:
  TestEntry() : ObjectEntry(ObjectId{}) {}
  ~TestEntry() override = default;
  void finish() { publish_value(0); }
};
class FnDependent final : public Dependent {
 public:
  explicit FnDependent(std::function<void()> fn) : fn_(std::move(fn)) {}
  void on_ready(ObjectEntry*) noexcept override { fn_(); }

 private:
  std::function<void()> fn_;
};

TEST(SchedulerShapeTest, AHolderThatBlocksAfterCompletingADependentsInputLeavesItToOthers) {
  // A task of the shape becomes ready while the holder completes an entry (a dependent made
  // ready by the holder's own result): no lease is asked for, since the holder normally pops it
  // next. Here the holder blocks instead, on that very task: blocking must hand the shape on.
  for (int threads : {1, 4}) {
    SCOPED_TRACE(sweep_name(0, threads));
    FakeRunner runner;
    Flag dependent_ran;
    Event first_done;
    bool ready_after = false;
    Scheduler sched(&runner, node(0.5), threads);  // last: destroyed (joined) first
    ResourceShape* half = sched.shape_for(make_request(0.5, 0, 0, 0, {}));
    sched.enqueue_shaped(new FnTask([&] {
      TestEntry entry;
      FnDependent dependent([&] {
        sched.enqueue_shaped(new FnTask([&] { dependent_ran.set(); }), half);
      });
      DepNode link;
      link.owner = &dependent;
      ASSERT_TRUE(entry.add_dependent(&link));
      entry.finish();
      EXPECT_EQ(sched.leases_started(), 1u);
      FlagWait wait(dependent_ran);
      ready_after = sched.block(wait, Clock::now() + kTimeout);
      first_done.set();
    }), half);
    ASSERT_TRUE(first_done.wait_until(Clock::now() + kTimeout));
    EXPECT_TRUE(ready_after);
  }
}

TEST(SchedulerShapeTest, StopHandsBackTheShapedTasksThatNeverRan) {
  FakeRunner runner;
  Flag release;
  Event holding;
  std::vector<TaskRecord*> tasks;
  std::vector<Job> jobs;
  {
    Scheduler sched(&runner, node(1), 4);
    ResourceShape* half = sched.shape_for(make_request(0.5, 0, 0, 0, {}));
    Job hog;
    hog.task = new FnTask([&] {
      holding.set();
      FlagWait wait(release);
      while (!wait.ready()) std::this_thread::yield();  // keeps the CPU
    });
    sched.enqueue_with_resources(std::move(hog), make_request(1, 0, 0, 0, {}));
    ASSERT_TRUE(holding.wait_until(Clock::now() + kTimeout));
    for (int i = 0; i < 5; ++i) sched.enqueue_shaped(new FnTask([] {}), half);
    sched.stop(&tasks, &jobs);
    release.set();
    sched.join();
  }
  EXPECT_EQ(tasks.size(), 5u);
  EXPECT_TRUE(jobs.empty()) << "a lease request is no job for the caller to fail";
  for (TaskRecord* t : tasks) {
    t->fail(nullptr);
    t->release_run();
  }
}

}  // namespace
}  // namespace prism::internal
