#include "scheduler/scheduler.h"

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <string_view>
#include <utility>

#include "common/event.h"
#include "common/log.h"
#include "common/spin.h"
#include "prism/internal/device_support.h"

namespace prism::internal {

// Cache-line aligned, and its per-task fields (written by the thread at every task) on a line of
// their own: neither another thread's accesses to a worker's other fields (its signal, its
// flags under mu_) nor a neighbouring worker share a line with them (only stats() reads
// handed_runs there, rarely).
struct alignas(64) Scheduler::Worker final : Waker {
  Scheduler* sched = nullptr;
  std::thread thread;
  // Futex word: set to 1 (then woken) when the thread should look at its state again.
  std::atomic<uint32_t> signal{0};
  // Guarded by the scheduler's lock (the analysis is told, by sched->mu_.assert_held(), where
  // the code reaches a worker of `this` scheduler while holding this->mu_):
  bool parked PRISM_GUARDED_BY(sched->mu_) = false;
  bool woken_for_ready PRISM_GUARDED_BY(sched->mu_) = false;  // counted in waking_for_ready_
  bool woken_for_job PRISM_GUARDED_BY(sched->mu_) = false;    // counted in waking_for_jobs_
  bool ran_job PRISM_GUARDED_BY(sched->mu_) = false;          // spin once before parking
  // Blocked, asked to help (counted like a woken thread), and in which count.
  bool help_asked PRISM_GUARDED_BY(sched->mu_) = false;
  bool help_for_ready PRISM_GUARDED_BY(sched->mu_) = false;
  // In resumers_: waiting to take this lease's CPU back.
  CpuLease* resuming PRISM_GUARDED_BY(sched->mu_) = nullptr;
  // Owned by the thread:
  CpuLease* lease = nullptr;  // what the work running on this thread holds (innermost)
  // The shape whose lease this thread holds and runs (innermost), counted in its `running`
  // while `running_shape` (cleared while blocked).
  ResourceShape* shape = nullptr;
  bool running_shape = false;
  // The hand-off (Scheduler::hand_off): the task the innermost slot or lease loop of this
  // thread runs (null while none, or in a loop that runs one task), that loop's shape (null: a
  // slot loop), the ready task its results handed this thread (marked queued, so a blocked
  // parent may still claim it; of `loop_shape`), and how many hand-offs ran in a row. `handed`
  // is empty whenever the loop is not between a task's run and the next pop.
  alignas(64) const TaskRecord* slot_task = nullptr;
  ResourceShape* loop_shape = nullptr;
  TaskRecord* handed = nullptr;
  int hand_offs = 0;
  int64_t last_hand_off_look = 0;  // coarse_now_ns() at the previous hand_off or loop start
  std::atomic<uint64_t> handed_runs{0};  // written by the thread only, read by stats

  void wake() noexcept override {
    signal.store(1, std::memory_order_release);
    futex_wake_all(&signal);
  }
  // Sleeps until signalled (or the deadline). The caller clears `signal` under the scheduler's
  // lock before it re-checks its state and sleeps.
  void sleep(Deadline deadline = kNoDeadline) noexcept {
    while (signal.load(std::memory_order_acquire) == 0) {
      if (deadline != kNoDeadline && Clock::now() >= deadline) return;
      futex_wait(&signal, 0, deadline);
    }
  }
};

namespace {

// Worker threads run under SCHED_BATCH (Linux; PRISM_WORKER_SCHED=normal keeps the default
// policy): a woken worker does not preempt the thread running where it wakes, which the kernel
// does for a normal thread that slept; it takes a free core, or runs when the running thread
// sleeps or at the next tick. The running thread is often the caller submitting that very work:
// on 2 cores a caller submitting round robin to 4 actors was preempted about 47,000 times in 10
// runs of bench/microbench's 1:n row and got a third of the machine (perf sched_switch). Only
// from SCHED_OTHER: a policy the user chose (real-time, idle, batch) is kept. Threads and
// processes a task starts inherit it; the runtime's own service threads go back to SCHED_OTHER
// (prism/internal/thread_policy.h).
bool batch_workers_wanted() noexcept {
  // (Read once, first by a Scheduler's constructor, before any worker starts.)
  static const bool wanted = [] {
    const char* env = std::getenv("PRISM_WORKER_SCHED");
    return env == nullptr || std::string_view(env) != "normal";
  }();
  return wanted;
}

void enter_batch_policy() noexcept {
#ifdef SCHED_BATCH
  if (!batch_workers_wanted() || sched_getscheduler(0) != SCHED_OTHER) return;
  sched_param none{};
  if (sched_setscheduler(0, SCHED_BATCH, &none) != 0) {
    const int error = errno;
    PRISM_LOG(kDebug) << "worker thread: SCHED_BATCH refused (errno " << error << ")";
  }
#endif
}

thread_local Scheduler::Worker* tls_worker = nullptr;
constexpr std::chrono::microseconds kSpinBeforePark{20};
// CPU slots held in this process, across runtimes, and how many of their holders spin on an
// empty queue (see has_idle_core).
std::atomic<int64_t> g_slot_holders{0};
std::atomic<int64_t> g_slot_spinners{0};
std::atomic<uint64_t> g_next_scheduler_id{1};

bool same_request(const ResourceRequest& a, const ResourceRequest& b) {
  return a.cpu == b.cpu && a.gpu == b.gpu && a.memory == b.memory &&
         a.gpu_memory == b.gpu_memory && a.custom == b.custom;
}

class StdThreadStarter final : public ThreadStarter {
 public:
  std::thread start(std::function<void()> body) override { return std::thread(std::move(body)); }
};

}  // namespace

ThreadStarter& default_thread_starter() noexcept {
  static StdThreadStarter starter;
  return starter;
}

Scheduler::Scheduler(JobRunner* runner, const NodeResources& totals, int max_threads,
                     ThreadStarter* starter, int starvation_bound)
    : runner_(runner),
      starter_(starter != nullptr ? starter : &default_thread_starter()),
      max_threads_(std::max(1, max_threads)),
      pool_(totals),
      waiting_(starvation_bound),
      id_(g_next_scheduler_id.fetch_add(1, std::memory_order_relaxed)) {
  (void)batch_workers_wanted();  // (the environment read here, not by a worker thread)
  cpu_slots_ = totals.cpu / kUnitsPerResource;
  gpu_devices_ = totals.num_gpus + (totals.gpu_fraction > 0 ? 1 : 0);
}

Scheduler::~Scheduler() {
  std::vector<TaskRecord*> tasks;
  std::vector<Job> jobs;
  stop(&tasks, &jobs);
  join();
  if (!tasks.empty() || !jobs.empty()) {
    // The runner normally collects these first (RuntimeCore::shutdown); nothing can fail them
    // any more, so say so rather than hide it.
    PRISM_LOG(kError) << tasks.size() + jobs.size() << " queued tasks dropped at destruction";
  }
}

bool Scheduler::fits_now(const ResourceRequest& request) const {
  // A default task is also taken at once by a ready-loop thread idling on an empty queue: a
  // spinner still holds its CPU slot until its spin ends, so the pool alone would say "full".
  if (request.cpu == kUnitsPerResource && request.gpu == 0 && request.memory == 0 &&
      request.gpu_memory == 0 && request.custom.empty() &&
      spinners_.load(std::memory_order_seq_cst) > ready_.size()) {
    return true;
  }
  MutexLock lock(mu_);
  if (!pool_.fits(request, /*long_lived=*/false)) return false;
  // Default tasks queued but not yet picked up will take the free slots first.
  const int64_t queued = ready_.size() + waking_for_ready_.load(std::memory_order_relaxed);
  return queued == 0 || (queued + 1) * kUnitsPerResource <= pool_.cpu_free();
}

std::string Scheduler::infeasible_reason(const ResourceRequest& request) const {
  MutexLock lock(mu_);
  return pool_.infeasible_reason(request);
}

int Scheduler::thread_count() const {
  MutexLock lock(mu_);
  return static_cast<int>(workers_.size());
}

uint64_t Scheduler::handed_off_runs() const {
  MutexLock lock(mu_);
  uint64_t n = 0;
  for (const auto& w : workers_) n += w->handed_runs.load(std::memory_order_relaxed);
  return n;
}

std::map<std::string, double> Scheduler::totals() const {
  MutexLock lock(mu_);
  return pool_.totals();
}

std::map<std::string, double> Scheduler::available() const {
  MutexLock lock(mu_);
  return pool_.available();
}

Scheduler* Scheduler::current() noexcept {
  return tls_worker != nullptr ? tls_worker->sched : nullptr;
}

bool Scheduler::has_idle_core() noexcept {
  static const int64_t hardware = std::max(1u, std::thread::hardware_concurrency());
  // A holder spinning on an empty queue runs nothing: its core is as good as idle.
  return g_slot_holders.load(std::memory_order_relaxed) -
             g_slot_spinners.load(std::memory_order_relaxed) <
         hardware;
}

void Scheduler::holders_add(int64_t n) noexcept {
  holders_.fetch_add(n, std::memory_order_seq_cst);
  g_slot_holders.fetch_add(n, std::memory_order_relaxed);
}

// ---- submission ----

void Scheduler::enqueue_ready(TaskRecord* task) noexcept {
  task->mark_queued();
  push_ready(task);
}

namespace {
// The kernel's coarse monotonic clock (no TSC read: a few ns; resolution a tick, 1-4 ms).
int64_t coarse_now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
}  // namespace

bool Scheduler::hand_off(TaskRecord* task, const TaskRecord* finished,
                         ResourceShape* shape) noexcept {
  Worker* w = tls_worker;
  if (w == nullptr || w->sched != this || w->slot_task != finished || finished == nullptr ||
      w->loop_shape != shape || w->handed != nullptr || w->hand_offs >= kMaxHandOffs ||
      stopping_.load()) {
    return false;
  }
  const int64_t now = coarse_now_ns();
  const int64_t since = now - std::exchange(w->last_hand_off_look, now);
  if (since >= std::chrono::nanoseconds(kHandOffLongRun).count()) return false;
  task->mark_queued();
  w->handed = task;
  return true;
}

void Scheduler::requeue_handed_off(Worker* w) noexcept {
  TaskRecord* t = std::exchange(w->handed, nullptr);
  if (t == nullptr) return;
  if (w->loop_shape != nullptr) {  // (still kQueued)
    push_shaped(t, w->loop_shape);
  } else {
    push_ready(t);
  }
}

void Scheduler::push_ready(TaskRecord* task) noexcept {
  ready_.push(task);  // seq_cst on the queue's size: pairs with the holder's re-check
  // Every slot is busy or has a thread on its way to it, or an idle holder is spinning and will
  // take the task: no wake-up needed. (A holder that stops spinning or gives its slot back, and a
  // woken thread once it stops counting as on its way, re-check the queue afterwards.)
  if (holders_.load(std::memory_order_seq_cst) +
          waking_for_ready_.load(std::memory_order_seq_cst) >=
      cpu_slots_) {
    return;
  }
  if (spinners_.load(std::memory_order_seq_cst) > 0) return;
  {
    MutexLock lock(mu_);
    wake_for_ready_locked();
    if (no_thread_reason_.empty()) return;
  }
  reject_if_no_threads();
}

ResourceShape* Scheduler::shape_for(const ResourceRequest& request) {
  // The calling thread's last answer: a submitter usually repeats one request many times.
  struct Cached {
    uint64_t scheduler = 0;
    ResourceRequest request;
    ResourceShape* shape = nullptr;
  };
  thread_local Cached cached;
  if (cached.scheduler == id_ && same_request(cached.request, request)) return cached.shape;
  ResourceShape* found = nullptr;
  {
    MutexLock lock(shapes_mu_);
    for (const auto& shape : shapes_) {
      if (same_request(shape->request, request)) {
        found = shape.get();
        break;
      }
    }
    if (found == nullptr) {
      if (shapes_.size() >= kMaxShapes) return nullptr;
      auto shape = std::make_unique<ResourceShape>(request);
      shape->infeasible = infeasible_unlocked(request);
      found = shape.get();
      shapes_.push_back(std::move(shape));
    }
  }
  cached.scheduler = id_;
  cached.request = request;
  cached.shape = found;
  return found;
}

void Scheduler::enqueue_shaped(TaskRecord* task, ResourceShape* shape) noexcept {
  task->mark_queued();
  push_shaped(task, shape);
}

void Scheduler::push_shaped(TaskRecord* task, ResourceShape* shape) noexcept {
  shape->ready.push(task);  // seq_cst on the queue's size: pairs with the holders' re-checks
  // A spinner pops once more after its spin; an asked-for lease pops after it begins.
  if (shape->spinners.load(std::memory_order_seq_cst) > 0) return;
  if (shape->requested.load(std::memory_order_seq_cst) > 0) return;
  // A holder of this shape completing its task's result (this is a dependent becoming ready):
  // it pops the task next, and a lease for it would find the queue empty. A task submitted in
  // the middle of a task's body may wait behind the rest of that body: it gets a lease.
  Worker* w = tls_worker;
  if (w != nullptr && w->sched == this && w->shape == shape && w->running_shape &&
      ObjectEntry::notifying_dependents()) {
    return;
  }
  {
    MutexLock lock(mu_);
    request_lease_locked(shape);
    if (no_thread_reason_.empty()) return;
  }
  reject_if_no_threads();
}

void Scheduler::request_lease_locked(ResourceShape* shape) {
  if (shape->requested.load(std::memory_order_relaxed) > 0) return;
  shape->requested.store(1, std::memory_order_seq_cst);
  Job job;
  job.kind = Job::Kind::kLease;
  job.shape = shape;
  waiting_.push(std::move(job), shape->request);
  distribute_locked();
}

void Scheduler::update_yields_locked() {
  if (leased_.empty()) return;
  const bool resumers = !resumers_.empty();
  const bool waiting = !waiting_.empty();
  for (ResourceShape* shape : leased_) {
    bool y = resumers && (shape->kinds & kKindCpu) != 0;
    if (!y && waiting) y = (waiting_.lacking_except(shape) & shape->kinds) != 0;
    if (shape->yield.load(std::memory_order_relaxed) != y) {
      shape->yield.store(y, std::memory_order_relaxed);
    }
  }
}

void Scheduler::take_shaped_locked(std::vector<TaskRecord*>* tasks) {
  MutexLock lock(shapes_mu_);
  for (const auto& shape : shapes_) {
    while (TaskRecord* t = shape->ready.pop()) {
      if (t->take_from_queue()) tasks->push_back(t);
    }
  }
}

void Scheduler::enqueue_with_resources(Job job, const ResourceRequest& request) noexcept {
  if (job.kind == Job::Kind::kTask && job.task != nullptr) job.task->mark_queued();
  {
    MutexLock lock(mu_);
    waiting_.push(std::move(job), request);
    distribute_locked();
    if (no_thread_reason_.empty()) return;
  }
  reject_if_no_threads();
}

void Scheduler::enqueue_job(Job job) noexcept {
  {
    MutexLock lock(mu_);
    jobs_.push_back(std::move(job));
    wake_for_jobs_locked();
    if (no_thread_reason_.empty()) return;
  }
  reject_if_no_threads();
}

void Scheduler::release(const Allocation& allocation) noexcept {
  if (allocation.empty()) return;
  MutexLock lock(mu_);
  pool_.release(allocation);
  distribute_locked();
}

// ---- handing out resources and threads ----

void Scheduler::distribute_locked(bool wake_for_ready) {
  serve_resumers_locked();
  waiting_.grant(pool_, &jobs_, /*may_reserve=*/blocked_tasks_ == 0);
  cpu_wanted_.store(!resumers_.empty() || waiting_.wants_cpu(), std::memory_order_relaxed);
  update_yields_locked();
  wake_for_jobs_locked();
  if (wake_for_ready) wake_for_ready_locked();
}

void Scheduler::serve_resumers_locked() {
  while (!resumers_.empty()) {
    Worker* r = resumers_.front();
    r->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
    CpuLease* lease = r->resuming;
    lease->lent -= pool_.take_back(lease->lent);
    if (lease->lent > 0) return;  // first come, first served: the rest waits behind it
    resumers_.pop_front();
    r->resuming = nullptr;
    r->wake();
  }
}

void Scheduler::wake_for_ready_locked() {
  if (!ready_.maybe_nonempty() || !resumers_.empty()) return;
  const int64_t free_slots = pool_.cpu_free() / kUnitsPerResource;
  if (free_slots <= waking_for_ready_.load(std::memory_order_relaxed)) return;  // enough threads are already on their way
  provide_thread_locked(/*for_ready=*/true);
}

void Scheduler::wake_for_jobs_locked() {
  jobs_count_.store(static_cast<int64_t>(jobs_.size()), std::memory_order_relaxed);
  while (static_cast<int64_t>(jobs_.size()) > waking_for_jobs_ + job_spinners_) {
    if (!provide_thread_locked(/*for_ready=*/false)) return;
  }
}

bool Scheduler::provide_thread_locked(bool for_ready) {
  if (!parked_.empty()) {
    Worker* w = parked_.back();
    w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
    parked_.pop_back();
    w->parked = false;
    (for_ready ? w->woken_for_ready : w->woken_for_job) = true;
    count_waking_locked(for_ready, 1);
    w->wake();
    return true;
  }
  if (spawn_locked(for_ready)) return true;
  // No thread can be had: a thread whose task is blocked runs the work on its own stack.
  for (Worker* b : blocked_) {
    b->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
    if (!b->help_asked && b->resuming == nullptr) {
      b->help_asked = true;
      b->help_for_ready = for_ready;
      count_waking_locked(for_ready, 1);
      b->wake();
      return true;
    }
  }
  return false;
}

bool Scheduler::spawn_locked(bool for_ready) {
  // Once stopping, the threads that exist finish what is in flight; join() must see them all.
  if (stopping_.load()) return false;
  if (static_cast<int>(workers_.size()) >= max_threads_) {
    if (!warned_thread_cap_) {
      warned_thread_cap_ = true;
      PRISM_LOG(kInfo) << "worker thread cap (" << max_threads_
                       << ") reached; blocked tasks help with the work instead";
    }
    return false;
  }
  auto w = std::make_unique<Worker>();
  w->sched = this;
  Worker* raw = w.get();
  try {
    // The new thread waits for mu_ (held here) before it looks at anything.
    raw->thread = starter_->start([this, raw] { thread_main(raw); });
  } catch (const std::exception& e) {
    PRISM_LOG(kWarning) << "could not start a worker thread (" << e.what() << "); "
                        << workers_.size() << " threads serve the work";
    if (workers_.empty()) {
      no_thread_reason_ = std::string("no worker thread could be started: ") + e.what();
    }
    return false;
  }
  raw->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
  (for_ready ? raw->woken_for_ready : raw->woken_for_job) = true;
  count_waking_locked(for_ready, 1);
  workers_.push_back(std::move(w));
  return true;
}

void Scheduler::reject_if_no_threads() noexcept {
  std::vector<TaskRecord*> tasks;
  std::string why;
  {
    MutexLock lock(mu_);
    if (no_thread_reason_.empty() || !workers_.empty()) return;
    why = no_thread_reason_;
    no_thread_reason_.clear();  // a later submission tries to start a thread again
    while (TaskRecord* t = ready_.pop()) {
      if (t->take_from_queue()) tasks.push_back(t);
    }
    take_shaped_locked(&tasks);
    std::deque<Job> keep;
    for (Job& j : jobs_) {
      if (j.kind == Job::Kind::kLease) {  // its shape's tasks are failed above
        pool_.release(j.alloc);
        j.shape->requested.store(0, std::memory_order_relaxed);
        continue;
      }
      if (j.task == nullptr) {
        keep.push_back(std::move(j));  // actor drains run once a thread exists
        continue;
      }
      pool_.release(j.alloc);
      if (j.kind == Job::Kind::kTask && !j.task->take_from_queue()) continue;
      tasks.push_back(j.task);
    }
    jobs_ = std::move(keep);
    distribute_locked();
  }
  for (TaskRecord* t : tasks) runner_->reject(t, why);
}

void Scheduler::count_waking_locked(bool for_ready, int64_t n) {
  if (!for_ready) {
    waking_for_jobs_ += n;
    return;
  }
  waking_for_ready_.fetch_add(n, std::memory_order_seq_cst);
}

void Scheduler::clear_woken_locked(Worker* w) {
  w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
  if (w->woken_for_job) {
    w->woken_for_job = false;
    count_waking_locked(/*for_ready=*/false, -1);
  }
  if (w->woken_for_ready) {
    w->woken_for_ready = false;
    count_waking_locked(/*for_ready=*/true, -1);
  }
}

// ---- leases ----

void Scheduler::lend_locked(CpuLease* lease) {
  if (lease->active > 0 || lease->cpu == 0 || lease->lent > 0) return;
  pool_.lend(lease->cpu);
  lease->lent = lease->cpu;
  if (lease->slot) holders_add(-1);
}

void Scheduler::take_back_locked(Worker* w, CpuLease* lease) {
  w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
  // Resumers are served in order: take it at once only if nobody waits before us.
  if (resumers_.empty()) lease->lent -= pool_.take_back(lease->lent);
  if (lease->lent > 0) {
    w->resuming = lease;
    resumers_.push_back(w);
    cpu_wanted_.store(true, std::memory_order_relaxed);
    update_yields_locked();
    while (w->resuming != nullptr) {
      w->signal.store(0, std::memory_order_relaxed);
      mu_.unlock();
      w->sleep();
      mu_.lock();
    }
  }
  if (lease->slot) holders_add(1);
}

void Scheduler::enter_lease_locked(Worker* w, CpuLease* lease) {
  if (lease->lent > 0) take_back_locked(w, lease);
  ++lease->active;
}

bool Scheduler::leave_lease_locked(CpuLease* lease) {
  --lease->active;
  // Calls of the same actor still blocked: the actor's CPU is idle now, lend it.
  if (lease->blocked == 0 || lease->lent > 0) return false;
  lend_locked(lease);
  return lease->lent > 0;
}

// ---- worker threads ----

bool Scheduler::can_take_slot_locked() const {
  return resumers_.empty() && pool_.slot_free();
}

bool Scheduler::run_one_job_locked(Worker* w, bool one_task) {
  w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
  if (jobs_.empty()) return false;
  Job job = std::move(jobs_.front());
  jobs_.pop_front();
  jobs_count_.store(static_cast<int64_t>(jobs_.size()), std::memory_order_relaxed);
  if (job.kind == Job::Kind::kLease) {
    run_lease_locked(w, job, one_task);
    return true;
  }
  if (job.kind == Job::Kind::kTask && job.task != nullptr && !job.task->take_from_queue()) {
    pool_.release(job.alloc);  // a parent claimed and runs it
    distribute_locked();
    return true;
  }
  // A GPU task granted one device runs on the one holding most of its arguments when the same
  // share is free there (as a lease holder moves its lease: run_lease_loop).
  if (job.kind == Job::Kind::kTask && job.task != nullptr && job.alloc.gpus.size() == 1 &&
      gpu_devices_ > 1) {
    mu_.unlock();  // (preferred_gpu reads the arguments: not under the scheduler's lock)
    const int want = job.task->preferred_gpu();
    mu_.lock();
    if (want >= 0 && want != job.alloc.gpus.front().first && pool_.move_gpu(&job.alloc, want)) {
      distribute_locked();
    }
  }
  CpuLease own;
  own.cpu = job.alloc.cpu;
  CpuLease* lease = job.lease != nullptr ? job.lease : &own;
  enter_lease_locked(w, lease);
  CpuLease* outer = std::exchange(w->lease, lease);
  w->ran_job = true;
  mu_.unlock();
  runner_->run_job(job);
  mu_.lock();
  w->lease = outer;
  const bool lent = leave_lease_locked(lease);
  if (lent || !job.alloc.empty()) {  // resources came free: hand them out
    pool_.release(job.alloc);
    distribute_locked();
  }
  return true;
}

void Scheduler::run_lease_locked(Worker* w, Job& job, bool one_task) {
  w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
  ResourceShape* shape = job.shape;
  shape->requested.store(0, std::memory_order_seq_cst);  // before the first pop
  leases_started_.fetch_add(1, std::memory_order_relaxed);
  if (shape->leases++ == 0) leased_.push_back(shape);
  shape->running.fetch_add(1, std::memory_order_seq_cst);
  update_yields_locked();
  CpuLease own;
  own.cpu = job.alloc.cpu;
  enter_lease_locked(w, &own);
  CpuLease* outer = std::exchange(w->lease, &own);
  ResourceShape* outer_shape = std::exchange(w->shape, shape);
  const bool outer_running = std::exchange(w->running_shape, true);
  job.kind = Job::Kind::kTask;  // the runner sees one task job per task, with the lease's grant
  for (;;) {
    // A device of the grant failed: give the lease back if healthy devices could run the shape
    // (the next lease gets one); if only these devices could, go on (the tasks fail fast).
    const bool avoid_failed = pool_.uses_avoidable_failed_gpu(job.alloc);
    mu_.unlock();
    const bool watch_failures = !uses_failed_gpu(job.alloc);
    if (!avoid_failed) run_lease_loop(shape, job, one_task, watch_failures);
    mu_.lock();
    shape->running.fetch_sub(1, std::memory_order_seq_cst);
    // Re-check under the lock after leaving (no lost wake-up: see resource_shape.h).
    if (one_task || stopping_.load() || shape->yield.load(std::memory_order_relaxed) ||
        !shape->ready.maybe_nonempty() || pool_.uses_avoidable_failed_gpu(job.alloc)) {
      break;
    }
    shape->running.fetch_add(1, std::memory_order_seq_cst);
  }
  // Tasks left (it yields, or helps with one task only): a new lease runs them, in turn.
  if (shape->ready.maybe_nonempty() && !stopping_.load()) request_lease_locked(shape);
  w->lease = outer;
  w->shape = outer_shape;
  w->running_shape = outer_running;
  leave_lease_locked(&own);
  if (--shape->leases == 0) leased_.erase(std::find(leased_.begin(), leased_.end(), shape));
  pool_.release(job.alloc);
  distribute_locked();
}

void Scheduler::run_lease_loop(ResourceShape* shape, Job& job, bool one_task,
                               bool watch_failures) noexcept {
  // The hand-off, as in run_slot_loop: this loop runs what its tasks' results hand it (of its
  // shape), and queues it again on every way out. (A helper's loop, inside a blocked task,
  // keeps the outer loop's task and shape aside; it is handed nothing.)
  Worker* const w = tls_worker;
  const TaskRecord* const outer_task = w->slot_task;
  ResourceShape* const outer_shape = std::exchange(w->loop_shape, shape);
  if (!one_task) w->last_hand_off_look = coarse_now_ns();
  // The grant's devices entered once for the loop's tasks (not for one task: it enters them),
  // at the first (run_lease_tasks).
  JobRunner::LeaseFrame devices;
  run_lease_tasks(w, shape, job, one_task, watch_failures, one_task ? nullptr : &devices);
  if (devices.begun) runner_->lease_end(&devices);
  requeue_handed_off(w);
  w->slot_task = outer_task;
  w->loop_shape = outer_shape;
}

void Scheduler::run_lease_tasks(Worker* w, ResourceShape* shape, Job& job, bool one_task,
                                bool watch_failures, JobRunner::LeaseFrame* devices) noexcept {
  // Pushes may have skipped asking for a lease while this one was asked for and not yet begun, or
  // while this holder spun: the first check after either reads the pushes' count (seq_cst, which
  // any such push updated before it looked); the others, while pushes ask for themselves, only
  // the next cell (off the submitter's line).
  bool check_pushes = true;
  for (;;) {
    // A device of the grant failed meanwhile: run_lease_locked decides, under the lock, whether
    // the lease goes on there (reads only the failure mask here).
    if (watch_failures && uses_failed_gpu(job.alloc)) return;
    TaskRecord* t = std::exchange(w->handed, nullptr);
    if (t != nullptr) {
      ++w->hand_offs;
    } else {
      w->hand_offs = 0;
      t = shape->ready.pop();
    }
    if (t == nullptr) {
      if (one_task) return;
      // As a slot holder does: stay awake a few microseconds for the next task (one spinner).
      if (shape->spinners.fetch_add(1, std::memory_order_seq_cst) == 0) {
        spin_for(kSpinBeforePark, [shape] {
          return shape->ready.next_is_filled() || shape->yield.load(std::memory_order_relaxed);
        });
      }
      shape->spinners.fetch_sub(1, std::memory_order_seq_cst);
      t = shape->ready.pop();
      if (t == nullptr) return;
      check_pushes = true;
    }
    // More tasks than this holder takes: ask for another lease (once at a time) so that a burst
    // runs on as many leases as the node grants.
    const bool more = std::exchange(check_pushes, false) ? shape->ready.maybe_nonempty()
                                                         : shape->ready.next_is_filled();
    if (!one_task && more && shape->requested.load(std::memory_order_relaxed) == 0 &&
        shape->spinners.load(std::memory_order_relaxed) == 0) {
      MutexLock lock(mu_);
      if (!stopping_.load()) request_lease_locked(shape);
    }
    if (!t->take_from_queue()) continue;  // claimed by a blocked parent, which runs it
    // A GPU task runs where its arguments are when that device has room now: the lease moves
    // there (its old device's share goes to whoever waits for it), and stays for the next tasks.
    if (job.alloc.gpus.size() == 1 && gpu_devices_ > 1) {
      const int want = t->preferred_gpu();
      if (want >= 0 && want != job.alloc.gpus.front().first) {
        bool moved = false;
        {
          MutexLock lock(mu_);
          if (pool_.move_gpu(&job.alloc, want)) {
            moved = true;
            watch_failures = true;  // (a healthy device now: watch it)
            distribute_locked();
          }
        }
        if (moved && devices != nullptr && devices->begun) {  // (begun again there, below)
          runner_->lease_end(devices);
          devices->begun = false;
        }
      }
    }
    if (w->hand_offs > 0) {
      w->handed_runs.store(w->handed_runs.load(std::memory_order_relaxed) + 1,
                           std::memory_order_relaxed);
    }
    if (devices != nullptr && !devices->begun) {  // (a lease that runs nothing enters nothing)
      runner_->lease_begin(job.alloc, devices);
      devices->begun = true;
    }
    job.task = t;
    w->slot_task = one_task ? nullptr : t;
    runner_->run_job(job);
    w->slot_task = nullptr;
    job.task = nullptr;
    if (one_task || shape->yield.load(std::memory_order_relaxed)) return;
  }
}

void Scheduler::run_slot_locked(Worker* w, bool one_task) {
  CpuLease slot;
  slot.slot = true;
  slot.active = 1;
  // When stopping, leftovers are drained (the runner fails them) even without a free CPU.
  const bool counted = can_take_slot_locked();
  if (counted) {
    pool_.take_slot();
    slot.cpu = kUnitsPerResource;
    if (!waiting_.empty()) {
      waiting_.note_bypass(pool_, /*may_reserve=*/blocked_tasks_ == 0);
      cpu_wanted_.store(!resumers_.empty() || waiting_.wants_cpu(), std::memory_order_relaxed);
    }
  }
  holders_add(1);
  CpuLease* outer = std::exchange(w->lease, &slot);
  mu_.unlock();
  run_slot_loop(w, one_task);
  mu_.lock();
  w->lease = outer;
  holders_add(-1);
  if (counted) pool_.return_slot();
  // A thread of the ready loop looks at the queue again itself; a helper does not.
  distribute_locked(/*wake_for_ready=*/one_task);
}

void Scheduler::run_slot_loop(Worker* w, bool one_task) noexcept {
  // (A helper's loop runs inside a blocked task's: it keeps the outer loop's task and shape
  // aside.)
  const TaskRecord* const outer_task = w->slot_task;
  ResourceShape* const outer_shape = std::exchange(w->loop_shape, nullptr);
  if (!one_task) w->last_hand_off_look = coarse_now_ns();
  run_slot_tasks(w, one_task);
  requeue_handed_off(w);
  w->slot_task = outer_task;
  w->loop_shape = outer_shape;
}

void Scheduler::run_slot_tasks(Worker* w, bool one_task) noexcept {
  for (;;) {
    TaskRecord* t = std::exchange(w->handed, nullptr);
    if (t != nullptr) {
      ++w->hand_offs;
    } else {
      w->hand_offs = 0;
      t = ready_.pop();
    }
    if (t == nullptr) {
      if (one_task) return;
      // Stay awake a few microseconds before giving the slot back: a submitter that waits for
      // each result (a synchronous round trip) then finds this thread awake instead of paying
      // for a wake-up. One spinner is enough to catch the next task; more would only take CPU
      // from the threads producing it.
      if (spinners_.fetch_add(1, std::memory_order_seq_cst) == 0) {
        g_slot_spinners.fetch_add(1, std::memory_order_relaxed);
        spin_for(kSpinBeforePark, [this] {
          return ready_.next_is_filled() || cpu_wanted_.load(std::memory_order_relaxed);
        });
        g_slot_spinners.fetch_sub(1, std::memory_order_relaxed);
      }
      spinners_.fetch_sub(1, std::memory_order_seq_cst);
      t = ready_.pop();
      if (t == nullptr) return;
      // Submitters skipped waking anyone while this thread spun: if more work came in than it
      // can take, pass the wake-up on so that a burst still runs on every free slot.
      if (ready_.maybe_nonempty() && holders_.load(std::memory_order_seq_cst) < cpu_slots_) {
        MutexLock lock(mu_);
        wake_for_ready_locked();
      }
    }
    if (!t->take_from_queue()) continue;  // claimed by a blocked parent, which runs it
    if (w->hand_offs > 0) {
      w->handed_runs.store(w->handed_runs.load(std::memory_order_relaxed) + 1,
                           std::memory_order_relaxed);
    }
    // (A loop that runs one task gives back what it would be handed: it takes none.)
    w->slot_task = one_task ? nullptr : t;
    runner_->run_task(t);
    w->slot_task = nullptr;
    // Someone waits for CPU that this slot holds (a resumer, a job): give it back, and what its
    // task handed this thread with it (run_slot_loop queues it).
    if (one_task || cpu_wanted_.load(std::memory_order_relaxed)) return;
  }
}

void Scheduler::thread_main(Worker* w) noexcept {
  tls_worker = w;
  enter_batch_policy();
  MutexLock lock(mu_);
  bool left_slot = false;  // just gave a slot back
  for (;;) {
    w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
    clear_woken_locked(w);
    if (run_one_job_locked(w)) {
      left_slot = false;
      continue;
    }
    // Re-check the queue under the lock after giving a slot back: no lost wake-ups. Unless another
    // slot holder is spinning on the queue: it takes what is there (it pops once more after its
    // spin), and this thread would only compete with it for each task.
    if (ready_.maybe_nonempty() && (can_take_slot_locked() || stopping_.load()) &&
        !(left_slot && spinners_.load(std::memory_order_seq_cst) > 0)) {
      run_slot_locked(w, /*one_task=*/false);
      left_slot = true;
      continue;
    }
    left_slot = false;
    if (stopping_.load()) break;
    if (w->ran_job && job_spinners_ == 0) {
      // Like the CPU workers: stay awake a few microseconds after a job (an actor's caller that
      // waits for each result then finds this thread awake). Submitters count this thread as on
      // its way while it spins; it re-checks everything under the lock afterwards.
      w->ran_job = false;
      ++job_spinners_;
      lock.unlock();
      spin_for(kSpinBeforePark, [this] {
        return jobs_count_.load(std::memory_order_relaxed) > 0 || ready_.next_is_filled();
      });
      lock.lock();
      --job_spinners_;
      continue;
    }
    w->ran_job = false;
    w->parked = true;
    parked_.push_back(w);
    while (w->parked) {
      w->signal.store(0, std::memory_order_relaxed);
      lock.unlock();
      w->sleep();
      lock.lock();
    }
  }
  tls_worker = nullptr;
}

// ---- blocking inside a task ----

bool Scheduler::block(BlockedWait& wait, Deadline deadline) noexcept {
  Worker* w = tls_worker;
  if (w == nullptr || w->sched != this || w->lease == nullptr) {
    PRISM_LOG(kError) << "Scheduler::block called outside one of its tasks";
    std::terminate();
  }
  requeue_handed_off(w);  // (none normally: a task is handed one only after its body returned)
  // 1. Run what the wait needs on this thread, while it fits in what the thread holds.
  for (;;) {
    if (wait.ready()) return true;
    TaskRecord* t = wait.claim(w->lease->cpu);
    if (t == nullptr) break;
    runner_->run_inline(t, w->lease->cpu);
  }
  w->signal.store(0, std::memory_order_relaxed);
  if (!wait.arm(w)) {
    wait.disarm();  // arm() may have registered part of the wait before it found it over
    return true;
  }
  CpuLease* lease = w->lease;
  bool timed_out = false;
  {
    MutexLock lock(mu_);
    w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
    // 2. Lend the CPU (if every thread of the lease is blocked now) and find it work.
    --lease->active;
    ++lease->blocked;
    lend_locked(lease);
    // A blocked lease holder runs nothing of its shape meanwhile: others must.
    ResourceShape* shape = w->running_shape ? w->shape : nullptr;
    if (shape != nullptr) {
      w->running_shape = false;
      shape->running.fetch_sub(1, std::memory_order_seq_cst);
      if (shape->ready.maybe_nonempty()) request_lease_locked(shape);
    }
    ++blocked_tasks_;
    blocked_.push_back(w);
    distribute_locked();
    for (;;) {
      if (wait.ready()) break;
      if (w->help_asked) {
        // 3. No thread could be had for some work: do it here, then look again.
        help_locked(w);
        continue;
      }
      if (deadline != kNoDeadline && Clock::now() >= deadline) {
        timed_out = true;
        break;
      }
      w->signal.store(0, std::memory_order_relaxed);
      lock.unlock();
      if (!wait.ready()) w->sleep(deadline);
      lock.lock();
    }
    blocked_.erase(std::find(blocked_.begin(), blocked_.end(), w));
    --blocked_tasks_;
    if (w->help_asked) {
      // Going on instead: the work it was asked for needs another thread.
      w->help_asked = false;
      count_waking_locked(w->help_for_ready, -1);
      wake_for_jobs_locked();
      wake_for_ready_locked();
    }
    // Take the CPU back before going on: never more CPU in use than the node has.
    --lease->blocked;
    enter_lease_locked(w, lease);
    if (shape != nullptr) {
      w->running_shape = true;
      shape->running.fetch_add(1, std::memory_order_seq_cst);
    }
  }
  wait.disarm();
  return !timed_out || wait.ready();
}

void Scheduler::help_locked(Worker* w) {
  w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
  w->help_asked = false;
  count_waking_locked(w->help_for_ready, -1);
  // While it works it is no candidate for another help request: a sleeping one is.
  blocked_.erase(std::find(blocked_.begin(), blocked_.end(), w));
  if (!run_one_job_locked(w, /*one_task=*/true) && ready_.maybe_nonempty() &&
      can_take_slot_locked()) {
    run_slot_locked(w, /*one_task=*/true);
  }
  blocked_.push_back(w);
  // Work that came meanwhile found no helper (this one was busy): ask again, maybe this one.
  wake_for_jobs_locked();
  wake_for_ready_locked();
}

// ---- stopping ----

void Scheduler::stop(std::vector<TaskRecord*>* tasks, std::vector<Job>* jobs) {
  MutexLock lock(mu_);
  stopping_.store(true);
  while (TaskRecord* t = ready_.pop()) {
    if (t->take_from_queue()) tasks->push_back(t);
  }
  take_shaped_locked(tasks);
  std::vector<Job> drained;
  waiting_.drain(pool_, &drained);
  for (Job& j : drained) {
    if (j.kind == Job::Kind::kLease) {
      j.shape->requested.store(0, std::memory_order_relaxed);  // its tasks are in `tasks`
      continue;
    }
    jobs->push_back(std::move(j));
  }
  std::deque<Job> keep;
  for (auto& j : jobs_) {
    if (j.kind == Job::Kind::kActorDrain) {
      keep.push_back(std::move(j));  // drains of dead actors only finalize them
      continue;
    }
    if (j.kind == Job::Kind::kLease) {
      pool_.release(j.alloc);
      j.shape->requested.store(0, std::memory_order_relaxed);
      continue;
    }
    pool_.release(j.alloc);
    j.alloc = Allocation{};
    if (j.kind == Job::Kind::kTask && j.task != nullptr && !j.task->take_from_queue()) continue;
    jobs->push_back(std::move(j));
  }
  jobs_ = std::move(keep);
  jobs_count_.store(static_cast<int64_t>(jobs_.size()), std::memory_order_relaxed);
  for (Worker* w : parked_) {
    w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
    w->parked = false;
    w->wake();
  }
  parked_.clear();
}

void Scheduler::join() {
  std::vector<std::unique_ptr<Worker>> workers;
  {
    MutexLock lock(mu_);
    stopping_.store(true);
    for (Worker* w : parked_) {
      w->sched->mu_.assert_held();  // a worker of this scheduler: its lock is mu_
      w->parked = false;
      w->wake();
    }
    parked_.clear();
    workers.swap(workers_);
  }
  for (auto& w : workers) {
    if (w->thread.joinable()) w->thread.join();
  }
}

}  // namespace prism::internal
